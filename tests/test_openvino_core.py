"""Two OpenVINO encoders freed, then a DataLoader and subprocesses: the process must survive.

Before runtime/openvino_core.py each OpenVinoRuntime made its own ``ov.Core()``; freeing two of
them left the main thread's alternate signal stack unmapped, and the SIGCHLD of the next
subprocess (torch's DataLoader handler runs on that stack) killed the interpreter with SIGSEGV
(exit -11): the crash of the single-process test suite and of re-run notebook-05 cells.
The sequence runs in a fresh interpreter so that a crash fails this test, not the suite.
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")

SCRIPT = textwrap.dedent(
    """
    import gc, subprocess, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from brainseg_utils.runtime.encoder_runtime import OpenVinoRuntime
    from brainseg_utils.runtime.openvino_core import shared_core

    def make(label):
        module = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)).eval()
        return OpenVinoRuntime(module, (1, 8, 8), {"checkpoint_sha256": "random-init"}, label=label)

    a, b = make("a"), make("b")
    x = torch.randn(2, 1, 8, 8)
    assert a(x).shape == (2, 2, 8, 8) and b(x).shape == (2, 2, 8, 8)
    assert shared_core() is shared_core()
    del a; gc.collect()
    del b; gc.collect()
    for _ in DataLoader(TensorDataset(torch.zeros(4, 1)), num_workers=1):
        pass
    for _ in range(20):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    print("survived")
    """
)


def test_freed_encoders_then_subprocesses_do_not_crash(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, f"exit {done.returncode} (-11 is SIGSEGV)\n{done.stderr[-3000:]}"
    assert done.stdout.strip().endswith("survived")
