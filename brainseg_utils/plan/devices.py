"""Published facts the planner compares against (vendor datasheets; platform documentation, December 2026).

Peaks are dense fp16/bf16 tensor throughput (TFLOPS) and memory bandwidth (GB/s). A device that is not
present is estimated from a measured reference device by the geometric mean of the two ratios (small
convolutional networks are partly bandwidth-bound, large transformers mostly compute-bound); such plans say
``"estimate": true``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str
    tflops: float  # dense fp16/bf16 tensor TFLOPS (P100: fp16 without tensor cores)
    bandwidth_gbs: float
    memory_gb: float
    supported: bool = True  # kernels in the CUDA 12.8 torch wheels the platforms ship
    note: str = ""


DEVICES = {
    "t4": Device("NVIDIA T4", 65.0, 320.0, 16.0),
    "p100": Device("NVIDIA P100", 18.7, 732.0, 16.0, False, "compute capability 6.0: no kernels in CUDA 12.8 torch"),
    "l4": Device("NVIDIA L4", 121.0, 300.0, 24.0),
    "a100": Device("NVIDIA A100 40GB", 312.0, 1555.0, 40.0),
    "h100": Device("NVIDIA H100 SXM", 989.0, 3350.0, 80.0),
    "h200": Device("NVIDIA H200", 989.0, 4800.0, 141.0),
}
GPU_NAMES = {"T4": "t4", "P100": "p100", "L4": "l4", "A100": "a100", "H100": "h100", "H200": "h200"}


def key_for_gpu(name: str) -> str | None:
    """ "NVIDIA H200" -> "h200" (None for a GPU the table does not know)."""
    for token, key in GPU_NAMES.items():
        if token in name.upper():
            return key
    return None


def speed_ratio(target: str, reference: str) -> float:
    """How many times slower ``target`` is than ``reference`` (> 1: slower), from the published peaks."""
    t, r = DEVICES[target], DEVICES[reference]
    return ((r.tflops / t.tflops) * (r.bandwidth_gbs / t.bandwidth_gbs)) ** 0.5


@dataclass(frozen=True)
class Limits:
    session_s: float | None  # one session / VM lifetime
    kept_output_bytes: float | None  # what is kept after the session
    disk_bytes: float | None  # the VM's disk


GB = 1e9
PLATFORMS = {
    # Kaggle: 12-h sessions, /kaggle/working kept up to 20 GB, ~73 GB of VM disk (shared notes, section 2b)
    "kaggle": Limits(12 * 3600, 20 * GB, 73 * GB),
    # free Colab: a VM lasts at most ~12 h (idle disconnects earlier); outputs on Drive (15 GB free tier)
    "colab": Limits(12 * 3600, 15 * GB, 100 * GB),
    "local": Limits(None, None, None),
}
