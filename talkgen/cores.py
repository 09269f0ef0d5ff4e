"""How many CPU threads a build may use, read without importing torch.

The default is what the caller allows: ``OMP_NUM_THREADS`` when it is set (the usual way to share a
machine), else the cores this process may run on (its CPU affinity), capped by a container's CPU quota
(cgroup v2 ``cpu.max``) where there is one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cores() -> int:
    """The cores this process may use: its affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else :func:`available_cores`."""
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2" (nested levels): the first
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return available_cores()


def tune_allocator() -> None:
    """Let glibc keep large freed blocks for reuse instead of returning each to the kernel (Linux only): an
    analysis that allocates and frees big arrays in a loop (pairwise distances, activations) otherwise
    spends as much time zeroing fresh pages as computing. Worker processes inherit the setting."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 2**20)  # M_MMAP_THRESHOLD: blocks under 256 MB come from the reusable heap
        libc.mallopt(-1, 512 * 2**20)  # M_TRIM_THRESHOLD: keep up to 512 MB of freed heap for reuse
    except (OSError, AttributeError):
        pass


_CAP: int | None = None  # set in worker processes, which must stay at one torch thread


def cap_threads(n: int) -> None:
    """From now on this process never runs torch with more than ``n`` threads (a forked worker: GNU OpenMP
    cannot start a thread team in a child of a process that already used one)."""
    global _CAP
    _CAP = n
    set_torch_threads(n)


def set_torch_threads(n: int) -> None:
    """``torch.set_num_threads(n)``, within this process's cap."""
    import torch

    torch.set_num_threads(max(1, min(n, _CAP) if _CAP else n))
