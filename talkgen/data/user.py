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


# Labels are class indices; without a ``classes`` array their names are 0..max, so an absurd label
# (10^9) would build a billion names. Data sets with more classes name them in ``classes``.
MAX_UNNAMED_CLASSES = 100_000


def _features(raw: object, path: str) -> torch.Tensor:
    """``x`` as float32, or a one-line reason why it cannot be."""
    arr = np.asarray(raw)
    if arr.dtype.kind == "c":
        raise TalkgenError(f"{path}: 'x' is complex ({arr.dtype}); talkgen reads real-valued inputs")
    if arr.dtype.kind not in "biuf":
        raise TalkgenError(f"{path}: 'x' must be numeric, got {arr.dtype} values")
    if arr.ndim < 2:
        raise TalkgenError(f"{path}: 'x' must have a batch dimension and features, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise TalkgenError(f"{path}: 'x' is empty (shape {tuple(arr.shape)})")
    x = torch.as_tensor(arr, dtype=torch.float32)
    bad = x.numel() - int(torch.count_nonzero(torch.isfinite(x)))
    if bad:
        raise TalkgenError(f"{path}: 'x' holds {bad} NaN or infinite values; remove or impute them first")
    return x


def _labels(raw: object, n: int, path: str) -> torch.Tensor:
    """``y`` as int64 class indices >= 0, one per row of ``x``, or a one-line reason why not."""
    arr = np.asarray(raw)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise TalkgenError(f"{path}: 'y' must be 1-D with one label per row of 'x' ({n}), got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise TalkgenError(f"{path}: 'y' holds non-integer labels (e.g. {arr[~(arr == np.round(arr))][0]:g}); "
                               "labels are class indices 0, 1, 2, ...")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TalkgenError(f"{path}: 'y' must hold integer class indices, got {arr.dtype} values")
    if arr.size and int(arr.min()) < 0:
        raise TalkgenError(f"{path}: 'y' holds the negative label {int(arr.min())}; labels are class indices 0, 1, 2, ...")
    return torch.as_tensor(arr.astype(np.int64))


def _class_names(raw_classes: object, y: torch.Tensor, path: str) -> tuple[str, ...]:
    top = int(y.max()) if y.numel() else -1
    if raw_classes is not None:
        classes = tuple(str(c) for c in np.asarray(raw_classes).reshape(-1).tolist())
        if top >= len(classes):
            raise TalkgenError(f"{path}: label {top} has no entry in 'classes' ({len(classes)} names)")
        return classes
    if top >= MAX_UNNAMED_CLASSES:
        raise TalkgenError(f"{path}: label {top} would mean {top + 1:,} classes; labels are class indices "
                           f"0, 1, 2, ... (give a 'classes' array to name more than {MAX_UNNAMED_CLASSES:,})")
    return tuple(str(i) for i in range(top + 1))


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
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            why = " ".join(str(exc).split()) or ("the file is empty" if os.path.getsize(path) == 0 else type(exc).__name__)
            raise TalkgenError(f"{path}: not a readable .npz without pickles ({why})") from None
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
    x = _features(arrays["x"], path)
    y = _labels(arrays["y"], x.shape[0], path)
    classes = _class_names(raw_classes, y, path)
    return _split(x, y, classes, source=os.path.abspath(path))
