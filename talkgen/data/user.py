"""The user's own data for ``--data``: an .npz with x and y (optional classes), or a tensor dict."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import torch

from talkgen.errors import TalkgenError
from talkgen.subject import SubjectData


def _split(x: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...], source: str,
           test_fraction: float = 0.25, seed: int = 0) -> SubjectData:
    """The user's data is all used as test data unless it is large: then 25% (seeded) is test."""
    n = x.shape[0]
    if n < 8:
        return SubjectData(x, y, x, y, classes, source)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    te, tr = perm[:n_test], perm[n_test:]
    return SubjectData(x[tr], y[tr], x[te], y[te], classes, source)


def _check(x: torch.Tensor, y: torch.Tensor, path: str) -> None:
    if x.ndim < 2:
        raise TalkgenError(f"{path}: 'x' must have a batch dimension and features, got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise TalkgenError(
            f"{path}: 'y' must be 1-D with one label per row of 'x' ({x.shape[0]}), got shape {tuple(y.shape)}")


def load_user_data(path: str) -> SubjectData:
    """Read ``x`` (N, ...) float and ``y`` (N,) integer labels, plus optional ``classes``.

    ``.npz`` files are read with ``allow_pickle=False``; ``.pt``/``.pth`` tensor dicts with
    ``torch.load(weights_only=True)``. Arbitrary pickles are refused.
    """
    if not os.path.isfile(path):
        raise TalkgenError(f"data file not found: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise TalkgenError(f"{path}: not a readable .npz without pickles ({exc})") from None
        raw_classes = arrays.get("classes")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise TalkgenError(
                f"{path}: needs arbitrary pickle code to load, which talkgen refuses; "
                "save plain tensors instead (torch.save({'x': x, 'y': y}) or numpy.savez)") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
            raise TalkgenError(f"{path}: cannot read as a tensor dict ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, dict):
            raise TalkgenError(f"{path}: expected a dict with 'x' and 'y', got {type(obj).__name__}")
        arrays = obj
        raw_classes = obj.get("classes")
    for key in ("x", "y"):
        if key not in arrays:
            raise TalkgenError(f"{path}: missing array {key!r} (found: {', '.join(map(str, arrays)) or 'nothing'})")
    x = torch.as_tensor(np.asarray(arrays["x"]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(arrays["y"])).long()
    _check(x, y, path)
    if raw_classes is not None:
        classes = tuple(str(c) for c in list(raw_classes))
    else:
        classes = tuple(str(i) for i in range(int(y.max()) + 1 if y.numel() else 0))
    if y.numel() and int(y.max()) >= len(classes):
        raise TalkgenError(f"{path}: label {int(y.max())} has no entry in 'classes' ({len(classes)} names)")
    return _split(x, y, classes, source=os.path.abspath(path))
