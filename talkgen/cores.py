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


_TUNED = False  # whether tune_allocator() ran in this process (the command line's own)


def _mallopt(threshold: int, trim: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD: blocks under this come from the reusable heap
        libc.mallopt(-1, trim)  # M_TRIM_THRESHOLD: freed heap kept for reuse up to this much
    except (OSError, AttributeError):
        pass


def tune_allocator() -> None:
    """Let glibc keep large freed blocks for reuse instead of returning each to the kernel (Linux only): an
    analysis that allocates and frees big arrays in a loop (pairwise distances, activations) otherwise
    spends as much time zeroing fresh pages as computing. Worker processes inherit the setting."""
    global _TUNED
    _TUNED = True
    _mallopt(256 * 2**20, 512 * 2**20)


def lean_allocator() -> None:
    """For a large model: blocks of 32 MB and over (a copy of one of its weight matrices, in float64 or
    not) are mapped and go back to the kernel when freed, and at most 64 MB of freed heap is kept, so one
    analysis's copies are not held on to by the next; smaller blocks (a batch's activations) are still reused
    from the heap. Undone by :func:`restore_allocator`."""
    _mallopt(32 * 2**20, 64 * 2**20)


def restore_allocator() -> None:
    """Back to this process's setting before :func:`lean_allocator`: tuned where the command line tuned it,
    else glibc's defaults (a 128 kB threshold that adapts, 128 kB of trim)."""
    if _TUNED:
        tune_allocator()
    else:
        _mallopt(128 * 2**10, 128 * 2**10)


def release_memory() -> None:
    """Return the heap's free memory to the kernel (glibc's ``malloc_trim``; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
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
