"""Tensors kept in a temporary file on disk instead of in memory, read back one at a time.

For a large model an analysis that needs several copies of its weights (the loss landscape's trained point
and directions) writes them here as it makes them and reads each tensor back when it uses it: the process
holds one tensor of each at a time, not the copies. The reads come from the kernel's page cache while there
is memory to spare (a 512 MB copy reads back in about 0.05 s) and from disk when there is not, so the
results are exact either way; only the time changes.

The file is anonymous (unlinked as it is made): nothing is left behind, however the process ends.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


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
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        raw = t.view(torch.uint8) if t.dtype == torch.bfloat16 else t
        data = memoryview(np.ascontiguousarray(raw.numpy())).cast("B")
        offset, n = self.size, len(data)
        done = 0
        while done < n:
            done += os.pwrite(self.fd, data[done:], offset + done)
        self.size += n
        return Spilled(self, offset, t.shape, t.dtype, n)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
