"""Where a model computes: the devices present, and the boundary that puts a model on one.

An analysis is written against the CPU: it feeds the model CPU tensors and reads its outputs with numpy.
:func:`placed` moves the model's parameters and buffers to the build's device and, for a device other than
the CPU, puts a boundary on its modules: the inputs of a call from outside the model (the model itself, or a
layer an analysis calls by itself) go to the device, its outputs come back to the CPU; calls inside a forward
pass are left alone. Everything inside the network (every layer, every backward pass through it) runs on the
device; only the batch and the answer cross, as they would from a CPU data loader. Autograd follows the
copies, so a gradient with respect to a CPU input arrives on the CPU. Forward hooks that keep what they see
hand it over on the CPU (``talkgen.analyses.hooks``).

What an analysis does with the parameters themselves (reading weights, adding a direction to them, a copy
trained with SGD) it does with tensors made where the parameters live (:func:`like`) and read back with
:func:`host`. Random draws are made on the CPU with the build's seeded generator and then moved, so a CUDA
build draws the same numbers as a CPU one.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Iterator

import torch
from torch import nn

# a placed top module -> its boundary's hook handles (kept outside the module: a deep copy of a placed model
# carries the hooks, and so computes on the device too, but not these handles)
_PLACED: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


# True: the boundary is put on the CPU too (moving nothing), so that its code runs where there is no GPU: the
# device tests set it. Results must not change.
BOUNDARY_ON_CPU = False


def present() -> tuple[str, ...]:
    """The devices torch can compute on here, the CPU first: ("cpu",), ("cpu", "cuda"), ("cpu", "mps")."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return tuple(found)


def move(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor in it (nested in tuples, lists and dicts) on ``device``; the rest as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        moved = [move(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)  # a namedtuple keeps its type
    if isinstance(obj, list):
        return [move(v, device) for v in obj]
    if isinstance(obj, dict):
        out = obj.copy()  # a dict subclass (a transformers ModelOutput) keeps its type
        for k, v in obj.items():
            out[k] = move(v, device)
        return out
    return obj


def host(obj: Any) -> Any:
    """``obj`` with every tensor in it on the CPU (a CPU tensor is returned as it is, not copied)."""
    return move(obj, "cpu")


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or, without any, its buffers) live; the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` on ``ref``'s device (a CPU-drawn direction added to a parameter that lives on a GPU)."""
    return t if t.device == ref.device else t.to(ref.device)


class _Depth(threading.local):
    calls = 0  # module calls open on this thread: 0 outside the model


def _install(model: nn.Module, device: torch.device) -> None:
    """The boundary on every module of ``model``: a call that comes from outside the model (the top module
    from an analysis, or a submodule an analysis calls by itself, such as a replayed LSTM's head) has its
    inputs moved to ``device`` and its outputs brought back; calls nested inside one pass untouched."""
    depth = _Depth()

    def inputs_in(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        depth.calls += 1
        return (move(args, device), move(kwargs, device)) if depth.calls == 1 else None

    def outputs_out(_m: nn.Module, _args: tuple, output: Any) -> Any:
        depth.calls -= 1
        return host(output) if depth.calls == 0 else None

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(inputs_in, with_kwargs=True, prepend=True))
        # first among the forward hooks (the cost meter's sees the CPU output), and called on errors too, so that
        # a failed call leaves the count as it found it
        handles.append(m.register_forward_hook(outputs_out, prepend=True, always_call=True))
    _PLACED[model] = handles


def _remove(model: nn.Module) -> None:
    for h in _PLACED.pop(model, ()):
        h.remove()


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device | str, boundary: bool | None = None) -> Iterator[nn.Module]:
    """``model`` on ``device`` for the block, with the boundary on its modules (:func:`_install`); afterwards
    back where it was and without the boundary, even on error.

    On the CPU nothing is moved and no boundary is put (``boundary=True`` puts one anyway: the tests use
    it to run the boundary's code on a machine without a GPU).
    """
    device = torch.device(device)
    before = device_of(model)
    use = (device.type != "cpu" or BOUNDARY_ON_CPU) if boundary is None else boundary
    if before == device and not use:
        yield model
        return
    model.to(device)
    _remove(model)
    if use:
        _install(model, device)
    try:
        yield model
    finally:
        _remove(model)
        model.to(before)


@contextlib.contextmanager
def on_cpu(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` (a whole model or one of its layers) on the CPU for the block, then back where it was: for a
    seeded re-initialisation that must draw the CPU's numbers. Nothing may call it in the block."""
    where = device_of(module)
    if where.type == "cpu":
        yield module
        return
    module.cpu()
    try:
        yield module
    finally:
        module.to(where)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (before reading a clock)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def peak_memory(device: torch.device | str) -> Iterator[dict[str, float]]:
    """Measure the peak memory the block allocated on ``device`` (MB above what was allocated when it began),
    into the yielded dict's "gpu_peak_mb"; nothing is written for the CPU (RSS covers it)."""
    device = torch.device(device)
    out: dict[str, float] = {}
    if device.type != "cuda":
        yield out
        return
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        torch.cuda.synchronize(device)
        out["gpu_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
