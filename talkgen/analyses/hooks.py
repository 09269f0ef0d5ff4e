"""Forward hooks that are always removed: capture layer outputs inside a ``with`` block."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the (detached) output of each named module on every forward pass in the block.

    Args:
        model: the model; its hooks are the same after the block as before, even on error.
        layers: module names as in ``model.named_modules()``.
    Returns:
        A dict layer name -> list of outputs, one per forward pass, filled as the block runs
        (for a module returning a tuple, such as an LSTM's (output, state), its first element), on the CPU
        wherever the model computes.
    """
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise KeyError(f"no such layer(s): {', '.join(missing)}")
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    handles = []
    try:
        for name in layers:
            def hook(_m: nn.Module, _inp: object, out: object, name: str = name) -> None:
                if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                    out = out[0]  # recurrent layers return (output, state)
                if isinstance(out, torch.Tensor):
                    captured[name].append(out.detach().cpu())  # analyses read captures on the CPU
            handles.append(modules[name].register_forward_hook(hook))
        yield captured
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_inputs(model: nn.Module, layer: str) -> Iterator[list[tuple]]:
    """Record the positional inputs of module ``layer`` on every forward pass in the block."""
    module = dict(model.named_modules())[layer]
    seen: list[tuple] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(tuple(
        a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in args)))
    try:
        yield seen
    finally:
        handle.remove()
