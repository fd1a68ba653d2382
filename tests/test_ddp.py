"""Multi-process training (DDP over gloo on the CPU, launched through Accelerate) against one process.

Each run happens in a fresh interpreter (``_SCRIPT``) so that the forking launcher starts from a clean
process, not from pytest's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from brainseg_utils.config import TrainConfig
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime.checkpoints import load_model_state, unwrap_state_dict
from brainseg_utils.training import distributed
from brainseg_utils.training import engine as train

pytest.importorskip("accelerate")

ROOT = Path(train.__file__).parents[2]

_SCRIPT = r"""
import json, os, sys
import torch
import torch.nn as nn
from brainseg_utils.training import distributed
from brainseg_utils.training import engine as train
from brainseg_utils.models.unet import UNet

base = sys.argv[1] if len(sys.argv) > 1 else ""

class TinyConv(nn.Module):  # no BatchNorm, no dropout: DDP must reproduce one process up to rounding
    config = {"arch": "tinyconv"}
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 1)
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

save, write_json = train.save_checkpoint, train.atomic_write_json
def _log(path):
    with open(os.path.join(os.path.dirname(str(path)), "writers.log"), "a") as fh:
        fh.write(f"{os.environ.get('RANK', '-')} {os.path.basename(str(path))}\n")
def _save(path, payload):
    _log(path); return save(path, payload)
def _write_json(path, obj, *a, **k):
    _log(path); return write_json(path, obj, *a, **k)
train.save_checkpoint, train.atomic_write_json = _save, _write_json

g = torch.Generator().manual_seed(0)
x = torch.rand(32, 1, 16, 16, generator=g)
x[::3, :, 4:10, 4:10] += 0.6  # a bright "tumour" in a third of the images
ds = torch.utils.data.TensorDataset(x, (x > 0.8).float())
va = torch.utils.data.TensorDataset(x[:13], (x[:13] > 0.8).float())  # 13: uneven shards

def main():
  for job in sys.argv[2:]:  # name:kind:processes:batch:epochs:stop[:spawn]
    name, kind, procs, batch, epochs, stop, *how = job.split(":")
    out = os.path.join(base, name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = TinyConv() if kind == "tiny" else UNet(base_channels=4, dropout=0.0)
    cfg = train.TrainConfig(epochs=int(epochs), batch_size=int(batch), lr=1e-2, seed=0, progress=False,
                            num_workers=0, device="cpu", num_gpus=int(procs),
                            stop_after_epoch=None if stop == "-" else int(stop))
    print(f"=== {name}", flush=True)
    if how:  # the launcher's spawn path (what a notebook that already initialised CUDA gets)
        distributed.launch(train.fit, (model, ds, va, out, cfg), int(procs), cpu=True, start_method=how[0])
        continue
    hist = train.fit_processes(model, ds, va, out, cfg)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, os.path.join(out, "final.pt"))
    json.dump(hist, open(os.path.join(out, "returned.json"), "w"))

if __name__ == "__main__":  # spawned processes import this file: only the parent runs the jobs
    main()
"""

TIMING = {"epoch_seconds", "train_images_per_s", "val_images_per_s"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All multi-process runs in one fresh interpreter (imports once; ~30 s of contended CPU):
    tiny/unet with the same global batch (8) and seed as 1 x 8 and 2 x 4; a 2-process run stopped
    after epoch 1 and finished in one process."""
    base = tmp_path_factory.mktemp("ddp")
    script = base / "ddp_runs.py"
    script.write_text(_SCRIPT)
    jobs = [
        "tiny1:tiny:1:8:3:-",
        "tiny2:tiny:2:4:3:-",
        "unet1:unet:1:8:2:-",
        "unet2:unet:2:4:2:-",
        "resume:tiny:2:4:3:1",
        "resume:tiny:1:4:3:-",
        "spawn:tiny:2:4:3:-:spawn",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(base), *jobs], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = {}
    for chunk in done.stdout.split("=== ")[1:]:
        name, _, text = chunk.partition("\n")
        logs.setdefault(name, []).append(text)
    return base, logs


def _hist(out):
    rows = json.loads((out / "history.json").read_text())["history"]
    return [{k: v for k, v in h.items() if k not in TIMING} for h in rows]


def _final(out):
    return torch.load(out / "final.pt", weights_only=True)


def test_two_processes_match_one_at_the_same_global_batch(runs):
    """Without BatchNorm/dropout, DDP with the DistributedSampler sees the same slices per global step
    and averages the same gradients: weights, losses and Dice agree to float32 rounding (tolerance 1e-5)."""
    base, logs = runs
    one, two = base / "tiny1", base / "tiny2"
    assert "training on 2 processes (DDP): global batch 2 x 4 = 8 slices" in logs["tiny2"][0]
    h1, h2 = _hist(one), _hist(two)
    assert [h["epoch"] for h in h2] == [1, 2, 3]
    for a, b in zip(h1, h2, strict=True):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), (a["epoch"], k, a[k], b[k])
    w1, w2 = _final(one), _final(two)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-5, msg=k)
    assert h1[-1]["train_loss"] < h1[0]["train_loss"], "it trained"
    meta = json.loads((two / "history.json").read_text())
    assert meta["processes"] == 2 and meta["global_batch_size"] == 8
    assert json.loads((one / "history.json").read_text())["processes"] == 1
    # fit_processes hands back history.json's rows and leaves last.pt's weights in the caller's model
    assert [r["epoch"] for r in json.loads((two / "returned.json").read_text())] == [1, 2, 3]
    last = torch.load(two / "last.pt", weights_only=True)["model"]
    for k in last:
        assert torch.equal(last[k], w2[k]), k


def test_spawned_processes_compute_what_forked_ones_do(runs):
    """The spawn path (arguments pickled to fresh interpreters) trains exactly like the forked one."""
    base, _ = runs
    for a, b in zip(_hist(base / "tiny2"), _hist(base / "spawn"), strict=True):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["epoch"], k)
    w = torch.load(base / "spawn" / "last.pt", weights_only=True)["model"]
    for k, v in _final(base / "tiny2").items():
        torch.testing.assert_close(w[k], v, rtol=1e-6, atol=1e-7, msg=k)


def test_only_the_main_process_writes(runs):
    base, _ = runs
    lines = (base / "tiny2" / "writers.log").read_text().split()
    ranks, names = lines[0::2], lines[1::2]
    assert set(ranks) == {"0"}, ranks
    assert names.count("last.pt") == 3 and names.count("history.json") == 3 and "best.pt" in names
    ckpt = torch.load(base / "tiny2" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"]), "the unwrapped model's state is saved"
    assert set((base / "tiny1" / "writers.log").read_text().split()[0::2]) == {"-"}, "one process, no launcher"


def test_unet_loss_curves_agree_across_process_counts(runs):
    """U-Net (BatchNorm): per-process BatchNorm statistics over 4 instead of 8 slices make DDP differ
    from one process; the loss curves still agree within 2 % (measured: 0.12 % at most)."""
    base, _ = runs
    for a, b in zip(_hist(base / "unet1"), _hist(base / "unet2"), strict=True):
        for k in ("train_loss", "val_loss"):
            assert b[k] == pytest.approx(a[k], rel=0.02), (a["epoch"], k, a[k], b[k])


def test_two_process_checkpoint_resumes_in_one_process(runs):
    """A 2-process run stopped after epoch 1 is finished by one process (same per-process batch)."""
    base, logs = runs
    first, second = logs["resume"]
    assert "stopping after epoch 1" in first
    assert "written by 2 process(es), this run has 1: the global batch changes from 8 to 4" in second
    assert "resumed from" in second and "after epoch 1" in second
    out = base / "resume"
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1, 2, 3] and hist["processes"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    ranks = (out / "writers.log").read_text().split()[0::2]
    # epoch 1: best.pt, history.json, last.pt by rank 0; epochs 2-3 by the single process (no launcher)
    assert ranks[:3] == ["0", "0", "0"] and set(ranks[3:]) == {"-"} and len(ranks) >= 7, ranks


# ----------------------------------------------------------------------------- in-process helpers
def test_distributed_sampler_with_one_replica_draws_the_random_sampler_order():
    """Why one process and N processes see the same global batches (fit's docstring)."""
    from torch.utils.data import DistributedSampler, RandomSampler

    ds = list(range(23))
    for epoch in (0, 3):
        rs = RandomSampler(ds, generator=torch.Generator().manual_seed(5 * 7919 + epoch))
        one = DistributedSampler(ds, 1, 0, shuffle=True, seed=5 * 7919)
        one.set_epoch(epoch)
        assert list(rs) == list(one)
        parts = []
        for rank in (0, 1):
            s = DistributedSampler(ds, 2, rank, shuffle=True, seed=5 * 7919)
            s.set_epoch(epoch)
            parts.append(list(s))
        order = list(one)
        # global step k with 2 x 4 holds the same slices as one-process step k with batch 8
        for k in range(2):
            assert sorted(parts[0][4 * k : 4 * k + 4] + parts[1][4 * k : 4 * k + 4]) == sorted(order[8 * k : 8 * k + 8])


def test_resolve_num_processes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_num_processes("auto") == 1
    assert distributed.resolve_num_processes(2) == 2  # CPU processes (gloo)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.resolve_num_processes("auto") == 2
    with pytest.raises(ValueError, match="NUM_GPUS=3 but only 2 GPU"):
        distributed.resolve_num_processes(3)
    with pytest.raises(ValueError, match="NUM_GPUS must be 'auto' or an integer >= 1, got 0"):
        distributed.resolve_num_processes(0)
    with pytest.raises(ValueError, match="num_gpus"):
        TrainConfig(num_gpus=0)
    assert TrainConfig.from_params("unet", NUM_GPUS=2).num_gpus == 2


def test_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = distributed.current()
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
    assert distributed.all_true(True) and not distributed.all_true(False)


def test_checkpoints_from_wrapped_models_load_into_the_bare_model():
    """DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes are dropped on load; a bare
    model's own key that merely starts with 'module' is left alone."""
    torch.manual_seed(0)
    src = UNet(base_channels=4)
    bare = src.state_dict()
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        dst = UNet(base_channels=4)
        load_model_state(dst, {prefix + k: v for k, v in bare.items()}, "ddp.pt")
        for k, v in dst.state_dict().items():
            assert torch.equal(v, bare[k]), (prefix, k)
    mixed = {"module.a": 1, "b": 2}
    assert unwrap_state_dict(mixed) == mixed
    # a DataParallel-wrapped target takes a bare state too
    wrapped = nn.DataParallel(UNet(base_channels=4))
    load_model_state(wrapped, bare, "bare.pt")
    assert torch.equal(wrapped.module.head.weight, bare["head.weight"])
    with pytest.raises(ValueError, match="does not match this model architecture"):
        load_model_state(UNet(base_channels=8), {"module." + k: v for k, v in bare.items()}, "ddp.pt")


def test_memmap_pickles_as_a_reference(tmp_path):
    """Spawned processes reopen memory-mapped caches instead of receiving a copy."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    arr = np.memmap(tmp_path / "a.f16", np.float16, "w+", shape=(64, 8))
    arr[:] = np.arange(64 * 8).reshape(64, 8)
    arr.flush()
    ro = np.memmap(tmp_path / "a.f16", np.float16, "r", shape=(64, 8))
    distributed._register_memmap_pickling()
    blob = bytes(ForkingPickler.dumps(ro))
    assert len(blob) < 600, "pickled as a file reference, not 1 KiB of data"
    back = pickle.loads(blob)
    assert isinstance(back, np.memmap) and back.filename == ro.filename
    np.testing.assert_array_equal(back, ro)


# ----------------------------------------------------------------------------- sharded embedding cache
_EMB_SCRIPT = r"""
import os, sys
import numpy as np
import torch
import torch.nn as nn
from brainseg_utils.training import distributed
from brainseg_utils.training.embeddings import build_embedding_cache
from brainseg_utils.models.sam.backends import SamBackend
from brainseg_utils.data.slices import SliceCache

slices, base = SliceCache.open(sys.argv[1]), sys.argv[2]
rows = np.arange(14)  # batches of 4: [0-3] [4-7] [8-11] [12-13]

class Encoder(nn.Module):  # cheap, deterministic, per-slice (B, 3, 64, 64) -> (B, 256, 64, 64)
    fail_rank = None
    def __init__(self):
        super().__init__()
        self.calls = 0
    def forward(self, x):
        self.calls += 1
        if Encoder.fail_rank is not None and os.environ.get("RANK") == Encoder.fail_rank and self.calls > 1:
            raise RuntimeError("simulated crash of one process")
        w = torch.linspace(0.5, 1.5, 256).view(1, 256, 1, 1)
        return torch.sin(x[:, :1] * 7.0) * w

class Fake(SamBackend):
    def __init__(self):
        model = nn.Module()
        model.image_encoder, model.prompt_encoder, model.mask_decoder = Encoder(), nn.Identity(), nn.Identity()
        super().__init__("fake", model, 64, "fake: sin at 64", "0" * 64, runtime="pytorch")
    def preprocess(self, images):
        return self.three_channels(images.float())

def build(root, procs):
    args = (Fake(), slices, rows, root, 1.0, 0, 4, "cpu", False)
    distributed.launch(build_embedding_cache, args, procs, cpu=True)  # gloo on CPUs, even where GPUs are

build(os.path.join(base, "one"), 1)
build(os.path.join(base, "two"), 2)
Encoder.fail_rank = "1"
try:
    build(os.path.join(base, "crash"), 2)
    print("NO CRASH")
except Exception as exc:
    print("crashed:", type(exc).__name__)
folder = next(p for p in os.scandir(os.path.join(base, "crash")))
flags = np.fromfile(os.path.join(folder.path, "done.u8"), np.uint8)
print("flags after crash:", "".join(map(str, flags)))
Encoder.fail_rank = None
build(os.path.join(base, "crash"), 1)  # resume in one process
"""


def test_sharded_embedding_cache_is_byte_identical_and_resumes(tiny_cache, tmp_path):
    """2 processes each encode a disjoint half of the batches into one memmap: the files are
    byte-identical to one process's; a 2-process build where one process crashed resumes in one process."""
    cache, _ = tiny_cache
    script = tmp_path / "emb_runs.py"
    script.write_text(_EMB_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(cache.root), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "crashed: " in done.stdout, done.stdout
    flags = done.stdout.split("flags after crash: ")[1].split()[0]
    assert len(flags) == 14 and "1" in flags and "0" in flags, flags  # part done, part not
    folders = {name: next((tmp_path / name).iterdir()) for name in ("one", "two", "crash")}
    assert len({f.name for f in folders.values()}) == 1, "same cache key whatever the process count"
    ref = (folders["one"] / "emb.f16").read_bytes()
    assert len(ref) == 14 * 256 * 64 * 64 * 2 and np.frombuffer(ref, np.float16).any()
    for name in ("two", "crash"):
        assert (folders[name] / "emb.f16").read_bytes() == ref, name
        assert (folders[name] / "rows.npy").read_bytes() == (folders["one"] / "rows.npy").read_bytes()
        assert sorted(p.name for p in folders[name].iterdir()) == ["emb.f16", "manifest.json", "rows.npy"]
    two = json.loads((folders["two"] / "manifest.json").read_text())
    crash = json.loads((folders["crash"] / "manifest.json").read_text())
    assert two["processes"] == 2 and two["n"] == 14 and two["resumed_from"] == 0
    assert crash["resumed_from"] == flags.count("1") > 0


def test_training_embeddings_shards_over_gpus_only_on_cuda(monkeypatch, tmp_path):
    """Notebook 03's NUM_GPUS reaches the embedding build: several GPUs -> one launch of
    build_embedding_cache on that many processes, then the finished cache is opened here; CPU -> no launch."""
    from types import SimpleNamespace

    from brainseg_utils.training import finetune

    calls, launches = [], []
    manifest = {"n": 3, "requested": 3}
    monkeypatch.setattr(
        finetune, "build_embedding_cache", lambda *a: calls.append(a) or SimpleNamespace(manifest=manifest)
    )
    monkeypatch.setattr(finetune.distributed, "launch", lambda fn, args, n: launches.append((fn, args, n)))
    monkeypatch.setattr(finetune.distributed, "resolve_num_processes", lambda num_gpus: 2 if num_gpus == "auto" else 1)
    cache = SimpleNamespace(rows_for=lambda ids: [len(i) for i in ids])
    run = SimpleNamespace(sam_embeddings=tmp_path)
    split = {"train": ["a", "bb"], "val": ["ccc"]}

    finetune.training_embeddings(run, "backend", cache, split, 1.0, device="cpu", num_gpus="auto")
    assert launches == [] and len(calls) == 1  # CPU: this process encodes (OpenVINO), no DDP

    monkeypatch.setattr(finetune, "resolve_device", lambda d: torch.device("cuda"))
    calls.clear()
    out = finetune.training_embeddings(run, "backend", cache, split, 1.0, device="cuda", num_gpus="auto")
    assert len(launches) == 1 and launches[0][0] is finetune.build_embedding_cache and launches[0][2] == 2
    assert launches[0][1] == calls[0] == ("backend", cache, [1, 2, 3], tmp_path, 1.0, 0, 8, "cuda", True)
    assert out.cache.manifest is manifest and out.policy == ""
    launches.clear()
    finetune.training_embeddings(run, "backend", cache, split, 1.0, device="cuda", num_gpus=1)
    assert launches == []  # one GPU: encoded in this process
