"""Attribution methods: which parts of an input a model's output depends on.

Every function has the signature ``f(model, inputs, target=None, **params) -> Tensor`` and
returns a tensor shaped like ``inputs``. ``model`` maps a batch ``(B, ...)`` to scores
``(B, C)``; ``target`` picks the score to explain: ``None`` (the predicted class at ``inputs``),
an ``int`` (the same class for every row) or a ``(B,)`` tensor of classes. The model's weights,
gradients, mode and hooks are left as they were; the functions only differentiate with respect
to the inputs.

=====================  =====================================================================
``saliency``           the gradient of the target score (Simonyan et al. 2014), ``abs`` by default
``input_x_gradient``   gradient times input (Shrikumar et al. 2016)
``integrated_gradients``  the path integral of the gradient from a baseline (Sundararajan et al.
                       2017), by Gauss-Legendre quadrature or a Riemann rule; completeness gap
``smoothgrad``         gradients averaged over noisy copies (Smilkov et al. 2017), also the
                       squared (SmoothGrad-squared) and variance (VarGrad) forms
``occlusion``          the drop of the target score when a window of the input is replaced by a
                       baseline, averaged over the windows covering each element (Zeiler &
                       Fergus 2014)
``grad_cam``           gradient-weighted class activation map of a convolutional layer, upsampled
                       to the input's size (Selvaraju et al. 2017)
=====================  =====================================================================

For token models, ``token_attributions(model, tokens, position, target, method=...)`` applies
the gradient, gradient x input, Integrated Gradients or occlusion to the token embeddings and
returns one score per token (B, T).

``internal_batch_size`` (where accepted) bounds how many expanded inputs (scaled, noisy or
occluded copies) go through the model at once, so peak memory does not grow with ``n_steps``;
it is rounded down to whole copies of the batch (at least one), and row r of every expanded
batch is a copy of input r % B.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn

Target = Union[int, Sequence[int], torch.Tensor, None]

__all__ = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "grad_cam",
           "token_attributions", "resolve_target", "quadrature", "last_conv_layer", "input_embedding"]


def resolve_target(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """The class index to explain for every row, as a (B,) long tensor."""
    b = inputs.shape[0]
    if target is None:
        with torch.no_grad():
            return _scores(model, inputs).argmax(1)
    t = torch.as_tensor(target, dtype=torch.long)
    if t.ndim == 0:
        return t.expand(b).clone()
    if t.shape != (b,):
        raise ValueError(f"target must be an int or have shape ({b},), got {tuple(t.shape)}")
    return t


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """Images in the channels-last layout: oneDNN's CPU convolutions (and their backward) run
    markedly faster on it, and the model itself is left untouched."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _scores(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.ndim != 2:
        raise ValueError(f"the model must return scores shaped (batch, classes), got {tuple(out.shape)}")
    return out


def _selected(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _scores(model, x).gather(1, target[:, None]).squeeze(1)


def _gradients(model, x: torch.Tensor, target: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """d score[target] / d x for every row, ``batch`` rows at a time."""
    batch = batch or len(x)
    out = torch.empty_like(x)
    with torch.enable_grad():
        for i in range(0, len(x), batch):
            xi = _fast_layout(x[i:i + batch].detach()).requires_grad_(True)
            (g,) = torch.autograd.grad(_selected(model, xi, target[i:i + batch]).sum(), xi)
            out[i:i + batch] = g
    return out


def saliency(model, inputs: torch.Tensor, target: Target = None, *, abs: bool = True,
             internal_batch_size: int | None = None) -> torch.Tensor:
    """The gradient of the target score with respect to the input (its absolute value by default),
    ``internal_batch_size`` rows per backward pass (all of them by default)."""
    t = resolve_target(model, inputs, target)
    g = _gradients(model, inputs, t, internal_batch_size)
    return g.abs() if abs else g


def input_x_gradient(model, inputs: torch.Tensor, target: Target = None, *,
                     internal_batch_size: int | None = None) -> torch.Tensor:
    """The input times the gradient of the target score."""
    t = resolve_target(model, inputs, target)
    return inputs.detach() * _gradients(model, inputs, t, internal_batch_size)


def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights (summing to 1) of an integration rule with ``n_steps`` nodes.

    ``gausslegendre`` (exact for polynomials of degree 2n-1), ``riemann_left``, ``riemann_right``,
    ``riemann_middle``, ``riemann_trapezoid``.
    """
    if n_steps < 1 or (method == "riemann_trapezoid" and n_steps < 2):
        raise ValueError(f"n_steps too small for {method}: {n_steps}")
    k = np.arange(n_steps, dtype=np.float64)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, w / 2
    if method == "riemann_left":
        return k / n_steps, np.full(n_steps, 1 / n_steps)
    if method == "riemann_right":
        return (k + 1) / n_steps, np.full(n_steps, 1 / n_steps)
    if method == "riemann_middle":
        return (k + 0.5) / n_steps, np.full(n_steps, 1 / n_steps)
    if method == "riemann_trapezoid":
        w = np.full(n_steps, 1 / (n_steps - 1))
        w[[0, -1]] /= 2
        return k / (n_steps - 1), w
    raise ValueError(f"unknown integration method {method!r}; use gausslegendre or riemann_"
                     f"{{left,right,middle,trapezoid}}")


def _baseline_like(inputs: torch.Tensor, baselines) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    base = torch.as_tensor(baselines, dtype=inputs.dtype)
    return torch.broadcast_to(base, inputs.shape).detach()


def integrated_gradients(model, inputs: torch.Tensor, target: Target = None, *, baselines=None, n_steps: int = 50,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         return_convergence_delta: bool = False):
    """(x - x') times the integral over a in [0, 1] of the gradient at x' + a (x - x').

    ``baselines``: x' (a number, or a tensor broadcastable to ``inputs``; zeros by default).
    With ``return_convergence_delta``, also returns the completeness gap per row:
    sum(attribution) - (f(x) - f(x')), which is 0 for the exact integral.
    """
    t = resolve_target(model, inputs, target)
    x = inputs.detach()
    base = _baseline_like(x, baselines)
    diff = x - base
    alphas, weights = quadrature(method, n_steps)
    b = len(x)
    total_rows = b * n_steps
    chunk = max(b, (internal_batch_size or total_rows) // b * b)  # whole copies of the batch
    acc = torch.zeros_like(x)
    alphas_t = torch.as_tensor(alphas, dtype=x.dtype)
    weights_t = torch.as_tensor(weights, dtype=x.dtype)
    shape = (-1,) + (1,) * (x.ndim - 1)
    with torch.enable_grad():
        for start in range(0, total_rows, chunk):
            rows = torch.arange(start, min(start + chunk, total_rows))
            step, ex = rows // b, rows % b
            scaled = _fast_layout(base[ex] + alphas_t[step].view(shape) * diff[ex]).requires_grad_(True)
            (g,) = torch.autograd.grad(_selected(model, scaled, t[ex]).sum(), scaled)
            acc.index_add_(0, ex, g * weights_t[step].view(shape))
    attr = diff * acc
    if not return_convergence_delta:
        return attr
    with torch.no_grad():
        gap = attr.flatten(1).sum(1) - (_selected(model, x, t) - _selected(model, base, t))
    return attr, gap


def smoothgrad(model, inputs: torch.Tensor, target: Target = None, *, n_samples: int = 50, stdev: float = 0.15,
               variant: str = "smoothgrad", internal_batch_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradients at ``n_samples`` copies of each input with Gaussian noise of standard deviation
    ``stdev`` (in input units), reduced by ``variant``: ``smoothgrad`` (mean), ``smoothgrad_sq``
    (mean of squares) or ``vargrad`` (variance)."""
    if variant not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        raise ValueError(f"unknown SmoothGrad variant {variant!r}; use smoothgrad, smoothgrad_sq or vargrad")
    t = resolve_target(model, inputs, target)
    x = inputs.detach()
    b = len(x)
    chunk = internal_batch_size or b * n_samples
    rounds_per_chunk = max(1, chunk // b)
    s1 = torch.zeros_like(x)
    s2 = torch.zeros_like(x)
    for first in range(0, n_samples, rounds_per_chunk):
        rounds = min(rounds_per_chunk, n_samples - first)
        # one noisy copy of every input per round, drawn in the same shape whatever the chunking
        noisy = torch.cat([x + torch.randn(x.shape, generator=generator, dtype=x.dtype) * stdev
                           for _ in range(rounds)])
        ex = torch.arange(len(noisy)) % b
        g = _gradients(model, noisy, t[ex])
        s1.index_add_(0, ex, g)
        s2.index_add_(0, ex, g * g)
    mean, mean_sq = s1 / n_samples, s2 / n_samples
    if variant == "smoothgrad":
        return mean
    if variant == "smoothgrad_sq":
        return mean_sq
    return mean_sq - mean * mean


def occlusion(model, inputs: torch.Tensor, target: Target = None, *, window: Sequence[int] | None = None,
              strides: Sequence[int] | int = 1, baseline: float | torch.Tensor = 0.0,
              internal_batch_size: int | None = None) -> torch.Tensor:
    """f(x) - f(x with a window set to ``baseline``), averaged over every window covering each element.

    ``baseline`` is a number or a tensor broadcastable to ``inputs`` (the values a window takes).

    ``window`` has one size per feature dimension (all of ``inputs.shape[1:]``); by default the
    whole channel depth and 3 along each further dimension for images ``(C, H, W)``, 3 for
    sequences of vectors ``(T, D)`` along T, and 1 for flat features.
    """
    t = resolve_target(model, inputs, target)
    x = inputs.detach()
    dims = x.shape[1:]
    if window is None:
        if len(dims) == 3:
            window = (dims[0], min(3, dims[1]), min(3, dims[2]))
        elif len(dims) == 2:
            window = (min(3, dims[0]), dims[1])
        else:
            window = (1,) * len(dims)
    window = tuple(int(w) for w in window)
    strides = (int(strides),) * len(dims) if isinstance(strides, int) else tuple(int(s) for s in strides)
    if len(window) != len(dims) or len(strides) != len(dims) or any(w < 1 or w > d for w, d in zip(window, dims)):
        raise ValueError(f"window {window} and strides {strides} must give one size per feature dimension "
                         f"of {tuple(dims)}, each between 1 and that dimension")
    starts = [list(range(0, d - w + 1, s)) for d, w, s in zip(dims, window, strides)]
    masks = torch.zeros((math.prod(len(s) for s in starts),) + tuple(dims), dtype=torch.bool)
    for i, corner in enumerate(itertools.product(*starts)):
        masks[(i,) + tuple(slice(c, c + w) for c, w in zip(corner, window))] = True
    n_win, b = len(masks), len(x)
    base = torch.broadcast_to(torch.as_tensor(baseline, dtype=x.dtype), x.shape)
    with torch.no_grad():
        ref = _selected(model, x, t)
        drops = torch.empty(n_win, b, dtype=x.dtype)
        chunk = max(1, (internal_batch_size or n_win * b) // b)
        for start in range(0, n_win, chunk):
            m = masks[start:start + chunk]
            occluded = torch.where(m[:, None], base[None], x[None])  # (w, B, ...)
            scores = _selected(model, _fast_layout(occluded.flatten(0, 1)), t.repeat(len(m)))
            drops[start:start + len(m)] = ref[None] - scores.view(len(m), b)
    m = masks.to(x.dtype).flatten(1)  # (W, F)
    attr = drops.T @ m  # (B, F)
    count = m.sum(0).clamp_min(1.0)
    return (attr / count).view_as(x)


def last_conv_layer(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """The last ``nn.Conv2d`` to run in a forward pass of ``inputs`` (Grad-CAM's default layer)."""
    from talkgen.models.introspect import modules_called

    ran = modules_called(model, inputs[:1], lambda m: isinstance(m, nn.Conv2d))
    if not ran:
        raise ValueError("Grad-CAM needs a convolutional layer (nn.Conv2d); the model has none that runs")
    return ran[-1][1]


def grad_cam(model: nn.Module, inputs: torch.Tensor, target: Target = None, *,
             layer: nn.Module | str | None = None, relu: bool = True) -> torch.Tensor:
    """ReLU(sum_k a_k A_k) for the layer's activations A (B, K, h, w), with a_k the spatial mean of
    d score / d A_k; bilinearly upsampled to the input's height and width and repeated over its
    channels. ``layer``: a module or its name; the last convolution that runs by default."""
    t = resolve_target(model, inputs, target)
    if layer is None:
        layer = last_conv_layer(model, inputs)
    elif isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            raise ValueError(f"no module named {layer!r} in the model")
        layer = named[layer]
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda mod, a, o: captured.append(o))
    try:
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)  # keeps the graph alive even for frozen weights
            score = _selected(model, x, t).sum()
            acts = captured[-1]
            if acts.ndim != 4:
                raise ValueError(f"Grad-CAM needs a layer with (B, K, h, w) outputs, got {tuple(acts.shape)}")
            (g,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
    cam = (g.mean((2, 3), keepdim=True) * acts.detach()).sum(1, keepdim=True).cpu()  # the layer's device -> CPU
    if relu:
        cam = cam.clamp_min(0)
    cam = nn.functional.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    return cam.expand_as(inputs).clone()


def input_embedding(model: nn.Module, tokens: torch.Tensor) -> nn.Module:
    """The ``nn.Embedding`` that reads the token ids (the first one to run with them as input)."""
    from talkgen.models.introspect import modules_called

    for _, mod, args in modules_called(model, tokens, lambda m: isinstance(m, nn.Embedding)):
        # the ids themselves, or a view of them (GPT-2 reshapes its input_ids before its token embedding), or on
        # a GPU their copy there
        if args and isinstance(args[0], torch.Tensor) and (args[0] is tokens or (
                args[0].shape == tokens.shape and (args[0].data_ptr() == tokens.data_ptr() if args[0].device ==
                                                   tokens.device else torch.equal(args[0].cpu(), tokens)))):
            return mod
    raise ValueError("no nn.Embedding reads the token ids directly; token attributions need one")


def at_position(model: nn.Module, embedding: nn.Module, position: int | None,
                tokens: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function of embedded sequences (N, T, D) -> the model's scores (N, V) at ``position``
    (``None``: a classifier's (N, classes) output): the model runs on ``tokens`` with ``embedding``'s
    output replaced by the argument. Row r of the argument is an expanded copy of row r % B of
    ``tokens`` (the order every method here uses), so padding masks and positions stay right."""

    def f(e: torch.Tensor) -> torch.Tensor:
        rows = tokens[torch.arange(len(e)) % len(tokens)]
        handle = embedding.register_forward_hook(lambda m, a, o: e.to(o.device))  # where the model computes
        try:
            out = model(rows)
        finally:
            handle.remove()
        return out if position is None else out[:, position]

    return f


TOKEN_METHODS = ("gradient", "grad_x_input", "integrated_gradients", "occlusion")


class Similarity(nn.Module):
    """A sentence encoder's output read as one score: the cosine similarity of each sentence's embedding to a
    reference embedding, (B, 1). Row r is compared with ``references[r % len(references)]``, the order every
    method here expands a batch in (see :func:`at_position`), so attributions explain "what makes sentence r
    close to its reference sentence"."""

    def __init__(self, encoder: nn.Module, references: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("references", references.detach())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.encoder(tokens)
        ref = self.references[torch.arange(len(e), device=e.device) % len(self.references)]
        return torch.nn.functional.cosine_similarity(e, ref, dim=-1)[:, None]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Inside the block no parameter of ``model`` asks for a gradient (the input's gradient is the same), so a
    forward pass saves only what the backward pass to the input needs, not each layer's input for its weights'
    gradient; every parameter's flag is put back afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def token_attributions(model: nn.Module, tokens: torch.Tensor, position: int | None, target: Target = None, *,
                       method: str = "grad_x_input", embedding: nn.Module | None = None,
                       baseline_token: int | None = None, rows: int | None = None, **params) -> torch.Tensor:
    """How much each token of ``tokens`` (B, T) matters to the model's output at ``position``, (B, T).

    Methods act on the token embeddings: ``gradient`` is the L2 norm of the gradient per token;
    ``grad_x_input`` and ``integrated_gradients`` are summed over the embedding dimension;
    ``occlusion`` is the drop of the score when one token's embedding is replaced by the baseline.
    The baseline (for IG and occlusion) is the embedding of ``baseline_token`` at every position
    (e.g. a space or a padding token: an in-distribution "blank"), or zeros when it is None.
    ``target`` defaults to the model's predicted token at ``position`` (``position=None`` for a
    sequence classifier whose output is (B, classes)). With ``integrated_gradients`` and
    ``return_convergence_delta=True``, returns (scores, completeness gap per row). ``rows``: at most this many
    rows per pass of Integrated Gradients and occlusion (``internal_batch_size``; never fewer than one copy of
    ``tokens``, and the gradient methods take ``tokens`` in one pass), e.g. what a large language model's logits
    allow. The model's parameters ask for no gradient meanwhile (:func:`frozen`).
    """
    if method not in TOKEN_METHODS:
        raise ValueError(f"unknown token attribution method {method!r}; use one of {', '.join(TOKEN_METHODS)}")
    if rows is not None:
        params["internal_batch_size"] = min(rows, params.get("internal_batch_size") or rows)
    with frozen(model):
        return _token_attributions(model, tokens, position, target, method, embedding, baseline_token, params)


def _token_attributions(model: nn.Module, tokens: torch.Tensor, position: int | None, target: Target,
                        method: str, embedding: nn.Module | None, baseline_token: int | None,
                        params: dict) -> torch.Tensor:
    embedding = embedding or input_embedding(model, tokens)
    f = at_position(model, embedding, position, tokens)
    with torch.no_grad():
        e = embedding(tokens)
        base = torch.zeros_like(e) if baseline_token is None else embedding(torch.full_like(tokens, baseline_token))
    # the gradient methods take every row in one pass: ``f`` reads row r as a copy of sequence r % B, which a
    # smaller batch would misalign (another sequence's padding mask, a reference for another sentence)
    if method == "gradient":
        return saliency(f, e, target, abs=False).norm(dim=-1)
    if method == "grad_x_input":
        return input_x_gradient(f, e, target).sum(-1)
    if method == "integrated_gradients":
        if params.get("return_convergence_delta"):
            attr, gap = integrated_gradients(f, e, target, baselines=base, **params)
            return attr.sum(-1), gap
        return integrated_gradients(f, e, target, baselines=base, **params).sum(-1)
    return occlusion(f, e, target, window=(1, e.shape[-1]), baseline=base, **params).sum(-1) / e.shape[-1]
