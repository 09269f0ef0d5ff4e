"""Content hashes for cache keys: tensor bytes + dtype + shape, canonical JSON; never pickles."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch


def canonical_json(obj: Any) -> str:
    """Sorted-key, whitespace-free JSON: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    raise TypeError(f"not JSON-serialisable in a cache key: {type(obj).__name__}")


def _update_tensor(h: "hashlib._Hash", name: str, t: "torch.Tensor") -> None:
    import torch

    t = t.detach().cpu().contiguous()
    h.update(name.encode())
    h.update(str(t.dtype).encode())
    h.update(repr(tuple(t.shape)).encode())
    if t.numel():
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # the tensor's own bytes, not a copy


def hash_tensors(named: Iterable[tuple[str, torch.Tensor]], salt: str = "") -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, in the order given."""
    import torch

    h = hashlib.sha256(salt.encode())
    for name, t in named:
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(t))
        _update_tensor(h, name, t)
    return h.hexdigest()


def hash_module(model: torch.nn.Module) -> str:
    """Hash of a model's architecture text and every tensor in its state dict (sorted by name)."""
    state = model.state_dict(keep_vars=False)
    return hash_tensors(sorted(state.items()), salt=type(model).__qualname__ + repr(model))


USER_MODULE_PREFIX = "_talkgen_user_"  # the module name a user's model file is imported under


def model_identity(tensor_hash: str, model: torch.nn.Module) -> str:
    """What a model's results depend on: its tensors (``tensor_hash``, from :func:`hash_module`) and its
    code (:func:`code_digest`): a changed ``forward()`` with the same weights is a different model."""
    return hashlib.sha256(f"{tensor_hash}:{code_digest(model)}".encode()).hexdigest()


def code_digest(model: torch.nn.Module) -> str:
    """sha256 of the code that computes ``model``: for every module class outside torch, the whole source
    file that defines it (helpers in that file included); for TorchScript and FX graph modules (a
    torch.export program), their code. Torch's own modules are named by class; torch's version is in
    the build's provenance."""
    import inspect

    import torch

    h = hashlib.sha256()
    seen_files: set[str] = set()
    seen_types: set[type] = set()
    for m in model.modules():
        if isinstance(m, torch.jit.ScriptModule):
            h.update(_script_code(m).encode())
            continue
        if isinstance(m, torch.fx.GraphModule):
            h.update(m.code.encode())
            continue
        cls = type(m)
        if cls in seen_types:
            continue
        seen_types.add(cls)
        # a user's model file is imported under a name made from its path (talkgen.models.loading): the file's
        # content, hashed below, is its identity, so the same project in another folder hits the same cache
        module = "<user file>" if cls.__module__.startswith(USER_MODULE_PREFIX) else cls.__module__
        h.update(f"{module}.{cls.__qualname__}".encode())
        if cls.__module__.split(".")[0] == "torch":
            continue
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:
            path = None
        if path and path not in seen_files:
            seen_files.add(path)
            try:
                with open(path, "rb") as f:
                    h.update(f.read())
            except OSError:
                pass
    return h.hexdigest()


def _script_code(m: torch.jit.ScriptModule) -> str:
    try:
        return m.code
    except (RuntimeError, AttributeError):  # a scripted module without a forward of its own
        return type(m).__qualname__


def hash_json(obj: Mapping[str, Any] | list | str) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
