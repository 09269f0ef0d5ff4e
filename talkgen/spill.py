"""Tensors kept in a temporary file on disk instead of in memory, read back one at a time.

For a large model an analysis that needs several copies of its weights (the loss landscape's trained point
and directions) writes them here as it makes them and reads each tensor back when it uses it: the process
holds one tensor of each at a time, not the copies. The reads come from the kernel's page cache while there
is memory to spare (a 512 MB copy reads back in about 0.05 s) and from disk when there is not, so the
results are exact either way; only the time changes.

The file is anonymous (unlinked as it is made): nothing is left behind, however the process ends.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch


PIECE_BYTES = 2**25  # tensors are written and read back in pieces of at most 32 MB


def row_ranges(shape: tuple[int, ...] | torch.Size, nbytes: int, most: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) ranges of the first dimension of a tensor of ``shape`` and ``nbytes`` bytes, in order, of at
    most ``most`` bytes each (default ``PIECE_BYTES``): the whole tensor in one range when it is small or has no
    dimension. Every range but the last holds a multiple of 16 values, and the last one at least 16 (a range may
    pass ``most`` to do so), so that Gaussian draws made range by range are the draws made at once
    (``torch.randn`` on the CPU fills 16 values at a time and redraws the last 16 of an uneven tensor)."""
    most = PIECE_BYTES if most is None else most
    if not len(shape) or nbytes <= most or shape[0] <= 1:
        return [(0, shape[0] if len(shape) else 1)]
    n, values = shape[0], math.prod(shape[1:])
    per_row = max(1, nbytes // n)
    unit = 16 // math.gcd(values, 16) if values else 1  # rows that make a multiple of 16 values
    step = max(unit, most // per_row // unit * unit)
    bounds = list(range(0, n, step)) + [n]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    if len(ranges) > 1 and (ranges[-1][1] - ranges[-1][0]) * values < 16:
        ranges[-2:] = [(ranges[-2][0], n)]
    return ranges


class Spilled:
    """One tensor in a :class:`Spill`: its shape and type, read back on demand (always on the CPU)."""

    __slots__ = ("spill", "offset", "shape", "dtype", "nbytes")

    def __init__(self, spill: "Spill", offset: int, shape: torch.Size, dtype: torch.dtype, nbytes: int) -> None:
        self.spill, self.offset, self.shape, self.dtype, self.nbytes = spill, offset, shape, dtype, nbytes

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read_into(self, out: torch.Tensor) -> torch.Tensor:
        """The tensor's values written into ``out`` (a contiguous CPU tensor of its shape and type); ``out``."""
        if out.shape != self.shape or out.dtype != self.dtype or out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError(f"cannot read a {tuple(self.shape)} {self.dtype} tensor into a {tuple(out.shape)} "
                             f"{out.dtype} tensor on {out.device}")
        if self.nbytes:
            view = memoryview(out.view(torch.uint8).numpy() if out.dtype == torch.bfloat16
                              else out.numpy()).cast("B")
            got = os.preadv(self.spill.fd, [view], self.offset)
            if got != self.nbytes:
                raise OSError(f"read {got} of {self.nbytes} bytes from the spill file")
        return out

    def read(self) -> torch.Tensor:
        """A new CPU tensor holding the values."""
        return self.read_into(torch.empty(self.shape, dtype=self.dtype))

    def rows(self, start: int, stop: int) -> "Spilled":
        """Rows ``start:stop`` (along the first dimension) of this tensor, as a tensor of the same file (a 0-d
        tensor, whose one range is (0, 1): itself)."""
        if not self.shape:
            return self
        n = self.shape[0]
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        stop = max(start, stop)
        per = self.nbytes // n if n else 0
        return Spilled(self.spill, self.offset + start * per, torch.Size((stop - start,) + tuple(self.shape[1:])),
                       self.dtype, (stop - start) * per)

    def pieces(self, most: int | None = None) -> Iterator[tuple[int, int, "Spilled"]]:
        """(start, stop, rows start:stop) in order, each of about ``most`` bytes at most (:func:`row_ranges`): a
        tensor read back piece by piece, never whole (a vocabulary's embedding)."""
        yield from ((a, b, self.rows(a, b)) for a, b in row_ranges(self.shape, self.nbytes, most))

    def copy_to(self, t: torch.Tensor) -> None:
        """The values written into ``t`` (its shape; any device or layout): straight into a contiguous CPU
        tensor of its type, else a piece at a time."""
        if t.device.type == "cpu" and t.is_contiguous() and t.dtype == self.dtype:
            self.read_into(t)
            return
        for a, b, piece in self.pieces():
            (t[a:b] if self.shape else t).copy_(piece.read())


class Spill:
    """An anonymous temporary file of tensors, appended with :meth:`put`; a context manager that closes it."""

    def __init__(self, folder: str | Path | None = None) -> None:
        where = Path(folder) if folder is not None else None
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=where)  # unlinked at once where the system allows
        self.fd = self._file.fileno()
        self.size = 0

    def put(self, tensor: torch.Tensor) -> Spilled:
        """Write ``tensor`` (any device; detached) at the end of the file; its handle."""
        return self.put_parts([tensor])

    def put_parts(self, parts: Iterable[torch.Tensor]) -> Spilled:
        """Write ``parts`` (tensors of one type whose shapes differ only in the first dimension: the rows of one
        tensor, in order, made one piece at a time) one after another at the end of the file: the handle of the
        tensor they make together."""
        offset, rows, shape, dtype = self.size, 0, None, None
        for part in parts:
            t = part.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            if shape is None:
                shape, dtype = tuple(t.shape), t.dtype
            elif t.dtype != dtype or tuple(t.shape[1:]) != shape[1:] or not t.ndim:
                raise ValueError(f"a part shaped {tuple(t.shape)} ({t.dtype}) does not continue {shape} ({dtype})")
            rows += t.shape[0] if t.ndim else 1
            raw = t.view(torch.uint8) if t.dtype == torch.bfloat16 else t
            data = memoryview(np.ascontiguousarray(raw.numpy())).cast("B")
            done = 0
            while done < len(data):
                done += os.pwrite(self.fd, data[done:], self.size + done)
            self.size += len(data)
        if shape is None:
            raise ValueError("nothing to write: no parts")
        full = torch.Size(shape if len(shape) == 0 else (rows,) + shape[1:])
        return Spilled(self, offset, full, dtype, self.size - offset)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
