"""Layer introspection: the weight matrices a model holds, each once (tied parameters deduped), and
the modules a forward pass calls, in order."""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def modules_called(model: nn.Module, inputs: torch.Tensor,
                   select: Callable[[nn.Module], bool] = lambda m: True) -> list[tuple[str, nn.Module, tuple]]:
    """(name, module, positional inputs) of every selected module, in the order one forward pass of
    ``inputs`` calls them (a module called twice appears twice). The hooks are removed afterwards."""
    calls: list[tuple[str, nn.Module, tuple]] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: calls.append((name, mod, args)))
               for name, m in model.named_modules() if select(m)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def has_own_parameters(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters, a tied one once."""
    return list({id(p): p for p in model.parameters()}.values())


def nonfinite_count(t: torch.Tensor, piece: int = 2**22) -> int:
    """NaN and infinite entries of ``t``, ``piece`` values at a time: ``isfinite`` makes a copy of what it reads
    (its absolute value) and a mask, so a whole vocabulary's embedding at once would take as much again."""
    flat = t.detach().reshape(-1)
    return sum(min(piece, len(flat) - i) - int(torch.count_nonzero(torch.isfinite(flat[i:i + piece])))
               for i in range(0, len(flat), piece))


def parameter_count(model: nn.Module) -> int:
    """Trainable and frozen parameters, a tied one counted once."""
    return sum(p.numel() for p in unique_parameters(model))


@dataclass(frozen=True)
class WeightMatrix:
    """One parameter seen as a matrix.

    Convention: a conv kernel (out, in, *k) is unfolded to (out, in * prod(k)), i.e. each
    output channel's whole receptive field is one row (the im2col view of the layer).
    """

    name: str          # parameter name, e.g. "conv1.weight"
    layer: str         # owning module's name, e.g. "conv1"
    kind: str          # module class name, e.g. "Conv2d"
    shape: tuple[int, ...]
    param: torch.Tensor  # the parameter itself, detached (not a copy)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return self.shape[0], int(math.prod(self.shape[1:]))

    @property
    def matrix(self) -> torch.Tensor:
        """(rows, cols) as a float64 copy on the CPU, made when asked for: one matrix at a time, never the whole
        model in float64 at once."""
        m = self.param.to("cpu", torch.float64).reshape(self.matrix_shape)
        return m.clone() if m.data_ptr() == self.param.data_ptr() else m  # a copy, made once


def weight_matrices(model: nn.Module) -> list[WeightMatrix]:
    """Every parameter with >= 2 dims, in module order; a tied parameter appears once."""
    seen: set[int] = set()
    out: list[WeightMatrix] = []
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p.ndim < 2 or id(p) in seen:
                continue
            seen.add(id(p))
            out.append(WeightMatrix(
                name=f"{mod_name}.{p_name}" if mod_name else p_name,
                layer=mod_name or p_name,
                kind=type(module).__name__,
                shape=tuple(p.shape),
                param=p.detach(),
            ))
    return out


def blocks(m: WeightMatrix, matrix: torch.Tensor | None = None) -> list[tuple[str, torch.Tensor]]:
    """The meaningful sub-matrices of a weight: LSTM/GRU gate blocks and packed q/k/v projections.

    PyTorch stacks an LSTM's gates as rows (i, f, g, o), a GRU's as (r, z, n), and
    ``nn.MultiheadAttention.in_proj_weight`` as (q, k, v). Anything else is one block.
    """
    leaf = m.name.rsplit(".", 1)[-1]
    if m.kind == "LSTM" and leaf.startswith(("weight_ih", "weight_hh")):
        names = ("input gate", "forget gate", "cell candidate", "output gate")
    elif m.kind == "GRU" and leaf.startswith(("weight_ih", "weight_hh")):
        names = ("reset gate", "update gate", "new gate")
    elif m.kind == "MultiheadAttention" and leaf == "in_proj_weight":
        names = ("query", "key", "value")
    else:
        return [("", m.matrix if matrix is None else matrix)]
    parts = (m.matrix if matrix is None else matrix).chunk(len(names), dim=0)
    return [(n, p) for n, p in zip(names, parts)]


def first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return name, module
    return None


LOOKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention)


def default_layers(model: nn.Module, named: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Layers worth looking at: the ones named (checked to exist), else every conv, linear,
    recurrent and attention module in definition order."""
    modules = dict(model.named_modules())
    if named:
        missing = [n for n in named if n not in modules]
        if missing:
            raise KeyError(f"no such layer(s) in the model: {', '.join(missing)}")
        return tuple(named)
    return tuple(n for n, m in model.named_modules() if n and isinstance(m, LOOKABLE))
