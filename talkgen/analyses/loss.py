"""The training loss of a subject as a pure function of a parameter dict, for the curvature,
landscape and gradient-flow analyses. Parameters are copies, so the subject's own tensors,
flags and gradients are never touched."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def loss_problem(subject) -> str | None:
    """Why a loss cannot be measured on ``subject`` (None when it can): analyses of the loss surface ask this."""
    if subject.task == "text-encoder":
        return "needs a model with a loss (a sentence encoder's embedding has no target to measure one against)"
    if not subject.data.labelled:
        return "needs labelled data (the loss is measured against the labels)"
    return None


def batch_count(subject, batch: int) -> int:
    """How many rows a loss batch of size ``batch`` takes: ``batch`` examples for a classifier,
    ``batch // 128`` sequences (at least one) for a sequence model, whose rows are whole sequences."""
    return batch if subject.task.endswith("classifier") else max(1, batch // 128)


def loss_batch_size(subject, batch: int, seq_len: int) -> int:
    """What one loss on a batch of size ``batch`` costs, in examples (tokens for a sequence model, whose rows are
    cut to ``seq_len`` steps): the unit ``Analysis.passes`` counts in (``talkgen.analyses.budget``)."""
    from talkgen.analyses.budget import example_size

    rows = min(batch_count(subject, batch), len(subject.data.x_train))
    return rows * (min(example_size(subject), seq_len) if example_size(subject) > 1 else 1)


def loss_batch(subject, n: int, seed: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded batch of up to ``n`` training examples (sequences for sequence models,
    cut to their first ``seq_len`` steps when given)."""
    x, y = subject.data.x_train, subject.data.y_train
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[: min(n, len(x))]
    x, y = x[idx], y[idx]
    if seq_len is not None and x.ndim == 2 and y.ndim == 2:
        x, y = x[:, :seq_len], y[:, :seq_len]
    return x, y


def predicted_classes(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The classifier's argmax class for every row of ``x``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 3:  # (B, T, V) next-token logits
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    return nn.functional.cross_entropy(logits, y)


def make_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[Params], torch.Tensor]:
    """loss(params) = mean cross-entropy of ``model`` with ``params`` on (x, y). Buffers are the model's."""
    buffers = {k: v for k, v in model.named_buffers()}

    def loss(params: Params) -> torch.Tensor:
        return cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    return loss


def parameter_copy(model: nn.Module, dtype: torch.dtype | None = None) -> Params:
    """Detached copies of every parameter (tied ones once), requiring grad."""
    seen: dict[int, str] = {}
    out: Params = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen[id(p)] = name
        t = p.detach().clone()
        out[name] = (t.to(dtype) if dtype is not None else t).requires_grad_(True)
    return out


def hvp(loss: Callable[[Params], torch.Tensor], params: Params, v: Params) -> Params:
    """Hessian-vector product by double backward. Attention runs on scaled_dot_product_attention's math kernel
    (its fused CPU and GPU kernels have no second derivative: a transformers model's curvature failed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        grads = torch.autograd.grad(loss(params), list(params.values()), create_graph=True)
        dot = sum((g * v[k]).sum() for g, k in zip(grads, params))
        hv = torch.autograd.grad(dot, list(params.values()))
    return {k: h.detach() for k, h in zip(params, hv)}
