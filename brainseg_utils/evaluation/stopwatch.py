"""Time and peak memory of named stages of real work (evaluation's first test case): ``Stages`` and ``PeakMemory``.

Per-volume cost of each model is assembled from the stages of the prediction evaluation makes anyway (no extra
run): the U-Net pass, the 3-D clean-up, each SAM backend's encoder pass (shared by its variants, apportioned by the
slices each variant needs) and each decoder job (``latency.volume_costs``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class PeakMemory:
    """Peak memory a block adds: on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before; on a
    CPU the process's resident set (``/proc/self/statm``) sampled every 2 ms by a thread, peak minus start (None
    where /proc is missing). ``mb`` after the block."""

    def __init__(self, device: torch.device):
        self.device, self.mb, self._peak, self._stop = device, None, 0, False

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while not self._stop:
            self._peak = max(self._peak, self._rss() or 0)
            time.sleep(0.002)

    def __enter__(self):
        import threading

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start = self._rss()
            self._peak = self._start or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        else:
            self._stop = True
            self._thread.join()
            self._peak = max(self._peak, self._rss() or 0)
            self.mb = None if self._start is None else max(self._peak - self._start, 0) / 2**20
        return False


class Stages:
    """``with stages("unet", device): ...`` records ``{"seconds", "peak_mb"}`` under that name (CUDA-synchronised)."""

    def __init__(self):
        self.record: dict[str, dict] = {}

    @contextmanager
    def __call__(self, name: str, device, **extra):
        device = torch.device(device)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            yield
        # PeakMemory's exit synchronises CUDA, so the clock includes the queued GPU work
        self.record[name] = {"seconds": time.perf_counter() - t0, "peak_mb": mem.mb, **extra}
