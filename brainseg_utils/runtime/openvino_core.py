"""One OpenVINO ``Core`` per process, never destroyed.

OpenVINO's CPU plugin gives the thread that creates a ``Core`` an alternate signal stack
(``sigaltstack``) and unmaps it when that ``Core`` is destroyed, restoring the stack it replaced.
With two ``Core`` objects destroyed in creation order, the second restores the first's stack,
which is already unmapped. The next signal delivered on the alternate stack then kills the
process with SIGSEGV: torch's DataLoader installs a SIGCHLD handler with ``SA_ONSTACK``, so any
subprocess exiting afterwards (``git``, ``pip``) crashes the Python process or notebook kernel.
Re-running a notebook cell that builds an encoder is enough to get there. Sharing one ``Core``
that lives as long as the process keeps the stack mapped; tests/test_openvino_core.py runs the
sequence that crashed in a fresh interpreter.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_CORE = None


def shared_core():
    """The process's ``openvino.Core`` (created on first use; import errors propagate)."""
    global _CORE
    with _LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE
