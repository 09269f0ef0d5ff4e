"""Seeded blocks that leave the caller's random state as it was."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded with ``seed`` inside the block; the caller's state restored after
    it (a library never reseeds its user's generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
