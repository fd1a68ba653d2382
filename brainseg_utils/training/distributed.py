"""Several processes, one per device (PyTorch DDP), launched through Hugging Face Accelerate.

``train.fit`` and ``embeddings.build_embedding_cache`` call ``current()``: in a plain Python process it
answers "one process" and nothing changes; in a process started by ``accelerate launch``, ``torchrun``
or ``launch()`` below (Accelerate's ``notebook_launcher``) it joins the process group through
Accelerate's ``PartialState`` (NCCL on GPUs, gloo on CPUs) and answers this process's rank.

``launch(fn, args, num_processes)`` runs ``fn(*args)`` in ``num_processes`` processes:
  * 1: ``fn(*args)`` here, exactly the single-device path;
  * more, while this process has not touched CUDA (or has no GPU): ``accelerate.notebook_launcher``
    (it forks, so the arguments are shared, not copied);
  * more, after this process initialised CUDA (a forked child cannot use CUDA then; e.g. a notebook that
    printed the GPU name first): the same elastic launcher with ``spawn``; the arguments are pickled to
    each child, with memory-mapped arrays (slice and embedding caches) reopened from their files, not copied,
    and each child takes a private copy of the model's weights (pickled tensors share memory).

The return value of ``fn`` in the children is not passed back: results travel through files (``fit``
writes ``history.json`` and ``last.pt``; see ``train.fit_processes``).

In ``engine.fit``:
Several devices (PyTorch DDP; launched by ``accelerate launch``, ``torchrun`` or ``fit_processes`` /
``distributed.launch``, which use Accelerate's ``notebook_launcher``): ``fit`` notices the process group
(``distributed.current()``) and then
  * wraps the model in ``DistributedDataParallel`` (each process on ``cuda:<local rank>``; gloo on CPU);
  * shuffles with a ``DistributedSampler`` (seed ``seed * 7919``, ``set_epoch(epoch)``): with one
    process it draws the very order of the single-device ``RandomSampler``, and with N processes every
    global batch holds the same slices as a one-process batch of N x ``batch_size``;
  * ``batch_size`` is per process: the GLOBAL batch is ``batch_size`` x processes (recorded as
    ``global_batch_size`` in the checkpoints and history.json). Keep the LR or scale it yourself;
  * BatchNorm statistics stay per process (plain DDP), dropout masks differ per process;
  * reduces train loss, validation loss and Dice over all processes (each validates a disjoint shard
    of the validation set, no padding), so every process sees the same history;
  * lets only the main process (rank 0) write checkpoints, history.json and log lines; checkpoints
    hold the unwrapped model's state (no ``module.`` prefix);
  * resumes from a checkpoint written with any number of processes (the process count is free to
    change; the global batch then changes with it, and a line says so).
"""

from __future__ import annotations

import mmap
import os
import socket
from dataclasses import dataclass

import numpy as np
import torch

CPU_ENV = "ACCELERATE_USE_CPU"  # set by launch(cpu=True): the processes train on CPUs (gloo) even with GPUs


@dataclass(frozen=True)
class Dist:
    """This process's place among ``world_size`` training processes (rank 0 is the main process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """The process group this process is part of; joins it (through Accelerate) when a launcher set
    ``WORLD_SIZE`` > 1 and nobody initialised it yet. ``Dist()`` (one process) otherwise."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        rank = td.get_rank()
        return Dist(rank, td.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from accelerate import PartialState

        cpu = not torch.cuda.is_available() or os.environ.get(CPU_ENV, "").lower() in ("1", "true", "yes")
        PartialState(cpu=cpu)  # NCCL with GPUs, gloo on CPUs
        if cpu:  # CPU processes share the cores instead of each starting a thread per core
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if td.is_initialized():
            return current()
    return Dist()


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """Each process its own GPU: ``cuda`` becomes ``cuda:<local rank>`` under DDP; others unchanged."""
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def all_reduce_sum(values, device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of a list of numbers over all processes (float64; unchanged with one process)."""
    import torch.distributed as td

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
        td.all_reduce(t, op=td.ReduceOp.SUM)
    return t.tolist()


def all_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` holds in every process (a collective: every process must call it)."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized() and td.get_world_size() > 1):
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    td.all_reduce(t, op=td.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
        td.barrier()


def resolve_num_processes(num_gpus: int | str = "auto", cpu: bool = False) -> int:
    """``NUM_GPUS`` -> number of training processes: ``"auto"`` = every visible GPU (1 without CUDA);
    an integer >= 1 as given (more than the visible GPUs is an error; on a CPU-only machine, or with
    ``cpu=True``, it means that many CPU processes with gloo: tests, benchmarks). Does not initialise CUDA."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() and not cpu else 0
    if num_gpus in ("auto", "", None):
        return max(visible, 1)
    try:
        n = int(num_gpus)
    except (TypeError, ValueError):
        raise ValueError(f"NUM_GPUS must be 'auto' or an integer >= 1, got {num_gpus!r}") from None
    if n < 1:
        raise ValueError(f"NUM_GPUS must be 'auto' or an integer >= 1, got {num_gpus!r}")
    if visible and n > visible:
        raise ValueError(f"NUM_GPUS={n} but only {visible} GPU(s) are visible; use NUM_GPUS='auto' or <= {visible}")
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reduce_memmap(arr: np.memmap):
    """Pickle a whole read-only/read-write file memmap as (file, dtype, shape, offset): reopened, not copied."""
    return np.memmap, (arr.filename, arr.dtype, "r" if arr.mode == "r" else "r+", arr.offset, arr.shape)


def _register_memmap_pickling() -> None:
    from multiprocessing.reduction import ForkingPickler

    def reducer(arr):
        if isinstance(arr.base, mmap.mmap) and arr.filename and arr.mode in ("r", "r+", "c"):
            return _reduce_memmap(arr)
        return np.ndarray.__reduce__(arr)  # a view into a memmap: pickled as an array (a copy)

    ForkingPickler.register(np.memmap, reducer)


def launch(
    fn, args: tuple = (), num_processes: int = 1, port: int | None = None, cpu: bool = False, start_method=None
) -> None:
    """Run ``fn(*args)`` in ``num_processes`` processes (see the module docstring). Raises when a child fails.
    ``cpu``: the processes use gloo on CPUs even where GPUs are visible. ``start_method``: None chooses
    (``"fork"`` through ``notebook_launcher``, ``"spawn"`` once this process initialised CUDA)."""
    if num_processes <= 1:
        fn(*args)
        return
    if cpu:
        previous = os.environ.get(CPU_ENV)
        os.environ[CPU_ENV] = "yes"
        try:
            return launch(fn, args, num_processes, port, start_method=start_method)
        finally:
            if previous is None:
                os.environ.pop(CPU_ENV, None)
            else:
                os.environ[CPU_ENV] = previous
    port = port or free_port()
    cuda_started = torch.cuda.is_available() and torch.cuda.is_initialized()
    if start_method is None:
        start_method = "spawn" if cuda_started else "fork"
    if start_method not in ("fork", "spawn"):
        raise ValueError(f"start_method must be 'fork', 'spawn' or None, got {start_method!r}")
    if start_method == "fork":
        from accelerate import notebook_launcher

        notebook_launcher(fn, args, num_processes=num_processes, use_port=str(port))
        return
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if cuda_started:
        print(
            f"CUDA is already initialised in this process, so the {num_processes} processes are spawned "
            "(arguments pickled to each; memory-mapped caches reopened from disk)"
        )
    _register_memmap_pickling()
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_processes,
        run_id="brainseg",
        rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_backend="static",
        rdzv_configs={"rank": 0},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    elastic_launch(config=config, entrypoint=_run_private)(fn, *args)


def _run_private(fn, *args):
    """Entry point of spawned processes. Tensors arrive in memory shared with the parent, and so with the
    other processes: without a private copy every optimizer step would land in the same weights N times.
    Parameters and buffers of module arguments are copied in place (``.data``), so a parameter list passed
    beside the model still refers to the model's parameters."""
    for arg in args:
        if isinstance(arg, torch.nn.Module):
            for t in [*arg.parameters(), *arg.buffers()]:
                t.data = t.data.detach().clone()
    return fn(*args)
