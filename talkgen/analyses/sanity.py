"""Sanity checks for attribution maps: the measurements behind "can we trust this saliency map?".

* **Cascading model-parameter randomisation** (Adebayo et al. 2018): re-initialise the layers from
  the top down, one more at a time, and compare each method's |map| with the original by Spearman
  rank correlation and SSIM. A map that still looks the same after the weights that produced the
  decision are gone is not explaining the model.
* **Input invariance** (Kindermans et al. 2019): a twin network reads ``x + c`` and subtracts the
  shift in its first layer's bias, so it computes exactly the same function of ``x``. A method
  whose map changes between the two is reacting to something other than the model.
* **Deletion and insertion** (Petsiuk et al. 2018): remove (or add back) pixels in the order the
  map ranks them and follow the probability of the explained class; the area under the curve,
  against the same curves for random orders.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from talkgen import devices
from talkgen.models.introspect import has_own_parameters, modules_called

LINEAR_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between matching rows of (N, F) arrays; 0 where either row is constant
    (a constant map carries no ranking)."""
    ra, rb = rank_rows(a), rank_rows(b)
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / den
    return np.where(den > 0, rho, 0.0)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Mean structural similarity (Wang et al. 2004; Gaussian window, sigma 1.5) of matching
    (N, H, W) maps, each scaled to [0, 1] by its own maximum first."""
    from scipy.ndimage import gaussian_filter

    def unit(m: np.ndarray) -> np.ndarray:
        top = m.reshape(len(m), -1).max(1).reshape(-1, 1, 1)
        return np.where(top > 0, m / np.where(top > 0, top, 1), 0.0)

    x, y = unit(a.astype(np.float64)), unit(b.astype(np.float64))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    f = lambda m: gaussian_filter(m, sigma=(0, sigma, sigma), mode="reflect", truncate=2.0)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.reshape(len(s), -1).mean(1)


def parametrised_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules with parameters of their own, in the order a forward pass runs them."""
    return list(dict.fromkeys(name for name, _, _ in modules_called(model, x[:1], has_own_parameters)))


def reinitialise(module: nn.Module, seed: int) -> None:
    """Draw the module's own parameters afresh, from its default initialisation where it has one. The draw is
    made on the CPU (the same numbers wherever the model computes) and the module goes back where it was."""
    with devices.on_cpu(module), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.02)


def cascading_models(model: nn.Module, x: torch.Tensor, seed: int) -> list[tuple[str, nn.Module]]:
    """[(name of the last layer randomised, model)] with 1, 2, ... layers re-initialised, top first."""
    layers = parametrised_layers(model, x)[::-1]
    current = copy.deepcopy(model).eval()
    out = []
    for k, name in enumerate(layers):
        current = copy.deepcopy(current)
        reinitialise(current.get_submodule(name), seed + 1 + k)
        out.append((name, current))
    return out


def shifted_twin(model: nn.Module, x: torch.Tensor, shift: float) -> nn.Module | str:
    """A copy that computes ``model(x)`` from ``x + shift``: the first layer subtracts the shift's
    image under its weights (with zero padding that is a position-dependent bias at the borders).
    A reason (str) when the first layer is not a linear or convolutional layer reading the input."""
    twin = copy.deepcopy(model).eval()
    first = parametrised_layers(twin, x)
    if not first:
        return "the model has no parameters"
    mod = twin.get_submodule(first[0])
    if not isinstance(mod, LINEAR_FIRST):
        where = f"{first[0]}, {type(mod).__name__}" if first[0] else f"the model itself, {type(mod).__name__}"
        return f"its first layer ({where}) is not linear or convolutional"
    base = devices.like(torch.full_like(x[:1], shift), mod.weight)
    with torch.no_grad():
        if isinstance(mod, nn.Linear):
            correction = nn.functional.linear(base, mod.weight)
        else:
            correction = mod._conv_forward(base, mod.weight, None)
    plain = mod.forward
    mod.forward = lambda inp: plain(inp) - correction  # this copy only
    with torch.no_grad():
        reference = model(x)
        gap = float((twin(x + shift) - reference).abs().max())
        scale = float(reference.abs().max())
    if gap > 1e-4 * max(1.0, scale):
        return f"the shifted twin does not reproduce the model (max logit difference {gap:.2g})"
    return twin


def order_curves(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                 order: torch.Tensor, steps: int, baseline: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves, (N, steps + 1) each: the probability of ``target`` as the first
    k pixels of ``order`` (N, P) are removed (set to ``baseline``) or inserted into a baseline image.
    Pixels are positions of the last two dimensions; all channels move together."""
    n, p = order.shape
    h, w = x.shape[-2:]
    ks = np.linspace(0, p, steps + 1).round().astype(int)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(p).expand(n, p))  # rank[i, pixel] = position in the order
    deletion, insertion = np.empty((n, len(ks))), np.empty((n, len(ks)))
    with torch.no_grad():
        for j, k in enumerate(ks):
            top = (rank < int(k)).view(n, 1, h, w).expand_as(x)
            removed = torch.where(top, torch.as_tensor(baseline, dtype=x.dtype), x)
            inserted = torch.where(top, x, torch.as_tensor(baseline, dtype=x.dtype))
            probs = torch.softmax(model(torch.cat([removed, inserted])), dim=1)
            picked = probs.gather(1, target.repeat(2)[:, None]).squeeze(1).numpy()
            deletion[:, j], insertion[:, j] = picked[:n], picked[n:]
    return deletion, insertion


def auc(curves: np.ndarray) -> float:
    """Mean area under (N, K) curves over fractions 0..1."""
    return float(areas(curves).mean())


def areas(curves: np.ndarray) -> np.ndarray:
    """The area under each of (N, K) curves over fractions 0..1, (N,)."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2).mean(1)  # trapezoids on an even grid


def auc_estimate(curves: np.ndarray, meaning: str, seed: int = 0):
    """``auc(curves)`` as an estimate: its n is the N inputs, its interval a bootstrap over them."""
    from talkgen.stats import bootstrap_estimate

    return bootstrap_estimate(np.mean, areas(curves), batched=lambda rows: rows.mean(1), meaning=meaning, seed=seed)
