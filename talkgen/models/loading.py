"""Safe model loading: factories + weights, TorchScript, torch.export; never arbitrary pickles.

Accepted MODEL forms:
- ``path/to/file.py:factory`` or ``package.module:factory`` (a callable returning an
  ``nn.Module``), with weights from ``.safetensors`` or a state dict that
  ``torch.load(weights_only=True)`` can read;
- a TorchScript archive (``.pt``/``.pth`` made by ``torch.jit.save``);
- a ``torch.export`` program (``.pt2`` made by ``torch.export.save``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from typing import Callable

import torch
from torch import nn

from talkgen.errors import TalkgenError

REFUSE_HINT = ("talkgen never runs pickled code; save the weights with safetensors "
               "(safetensors.torch.save_file(model.state_dict(), 'w.safetensors')) or as a plain "
               "state dict, and pass the architecture as MODEL=file.py:factory")


class ScriptedModel(nn.Module):
    """Wraps a TorchScript module so that ordinary forward hooks can be attached to it."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, *args, **kwargs):  # noqa: D401 - thin wrapper
        return self.scripted(*args, **kwargs)


class ExportedModel(nn.Module):
    """Wraps a ``torch.export`` program's module: its mode is fixed at export, so ``train()`` and
    ``eval()`` set only this wrapper's flag instead of raising inside the graph module."""

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.exported = graph_module

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def forward(self, *args, **kwargs):  # noqa: D401 - thin wrapper
        return self.exported(*args, **kwargs)


def _load_factory(spec: str) -> Callable[[], nn.Module]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TalkgenError(f"model {spec!r}: expected file.py:factory or package.module:factory")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise TalkgenError(f"model file not found: {target}")
        from talkgen.hashing import USER_MODULE_PREFIX

        mod_name = USER_MODULE_PREFIX + hashlib.sha256(os.path.abspath(target).encode()).hexdigest()[:16]
        mod_spec = importlib.util.spec_from_file_location(mod_name, target)
        module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
        sys.modules[mod_name] = module
        try:
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the user's file failed; say so in one line
            sys.modules.pop(mod_name, None)
            raise TalkgenError(f"{target}: failed to import ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001
            raise TalkgenError(f"model module {target!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise TalkgenError(f"{target}: no callable {attr!r} (callables there: {', '.join(found) or 'none'})")
    return factory


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors`` or a plain state dict (``weights_only=True``)."""
    if not os.path.isfile(path):
        raise TalkgenError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise TalkgenError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported pickle"
        raise TalkgenError(f"{path}: refused, it needs arbitrary pickle code to load ({first[:160]}); {REFUSE_HINT}") from None
    except Exception as exc:  # noqa: BLE001
        raise TalkgenError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TalkgenError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def load_safetensors_into(model: nn.Module, path: str) -> None:
    """Load a ``.safetensors`` file into ``model`` strictly (as :func:`load_weights_into`), one tensor at a
    time: the file is read in place of the model's initial weights, never held beside them whole (a large
    model loads in its own size, not twice it)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise TalkgenError(f"weights file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            own = model.state_dict(keep_vars=True)
            _check_fit(own, shapes, path)
            with torch.no_grad():
                for k, t in own.items():
                    t.copy_(f.get_tensor(k))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TalkgenError(f"{path}: not a valid safetensors file ({exc})") from None


def _check_fit(own: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path: str) -> None:
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    mismatched = [f"{k} file {shapes[k]} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(shapes)) if shapes[k] != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched))
    if problems:
        raise TalkgenError(f"{path}: weights do not fit the model ({' | '.join(problems)})")


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load ``state`` strictly; an error lists every missing, unexpected and mis-shaped key."""
    _check_fit(model.state_dict(), {k: tuple(v.shape) for k, v in state.items()}, path)
    model.load_state_dict(state)


def _zip_names(path: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except zipfile.BadZipFile:
        return None


def _load_archive(path: str) -> nn.Module:
    if not os.path.isfile(path):
        raise TalkgenError(f"model file not found: {path}")
    if path.endswith(".pt2"):
        from talkgen.models.export_archive import load_exported_program

        program = load_exported_program(path)  # checked for anything that would run code first
        try:
            module = program.module()
        except Exception as exc:  # noqa: BLE001
            raise TalkgenError(f"{path}: not a usable torch.export program ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]})") from None
        return ExportedModel(module)
    names = _zip_names(path)
    if names is not None and any("/code/" in n or n.endswith("constants.pkl") for n in names):
        try:
            return ScriptedModel(torch.jit.load(path, map_location="cpu"))
        except Exception as exc:  # noqa: BLE001
            raise TalkgenError(f"{path}: not a loadable TorchScript archive ({type(exc).__name__}: {exc})") from None
    # A torch.save file (zip or legacy pickle): only plain tensors may be read from it.
    load_state_dict(path)
    raise TalkgenError(f"{path}: holds a state dict, not a model; pass the architecture as "
                       f"MODEL=file.py:factory and this file as --weights")


def load_model(spec: str, weights: str | None = None) -> tuple[nn.Module, str]:
    """Build the model named by ``spec`` and load ``weights``; returns (model in eval mode, source)."""
    if spec.endswith((".pt", ".pth", ".pt2", ".ts")) and ":" not in spec:
        if weights:
            raise TalkgenError(f"{spec}: a TorchScript or torch.export file carries its weights; drop --weights")
        model = _load_archive(spec)
        source = os.path.abspath(spec)
    else:
        factory = _load_factory(spec)
        try:
            with torch.random.fork_rng(devices=[]):  # the factory's initialisation leaves the caller's generator alone
                model = factory()
        except Exception as exc:  # noqa: BLE001
            raise TalkgenError(f"{spec}: factory raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise TalkgenError(f"{spec}: factory returned {type(model).__name__}, not a torch.nn.Module")
        source = spec
        if weights and weights.endswith(".safetensors"):
            load_safetensors_into(model, weights)
            source = f"{spec} + {os.path.abspath(weights)}"
        elif weights:
            load_weights_into(model, load_state_dict(weights), weights)
            source = f"{spec} + {os.path.abspath(weights)}"
    model.eval()
    return model, source
