"""Mutual-information estimators for the information plane, in bits.

Two families, as in the information-bottleneck debate:

- Binning (Shwartz-Ziv & Tishby 2017): every unit's activation is cut into ``bins`` equal bins
  over its range (the range of all units together, as in their code) and each example's tuple of
  bin indices is a symbol; I(A;B) = H(A) + H(B) - H(A,B) over symbols. For a deterministic layer
  T = f(X) of N distinct inputs, I(X;T) = H(T) <= log2(N).
- Kernel density bounds (Kolchinsky & Tracey 2017; Kolchinsky, Tracey & Wolpert 2019), as used
  by Saxe et al. (2018): the layer is read as T = h(X) + N(0, noise_var * I), a mixture of N
  Gaussians; its entropy is bounded above by the pairwise-KL estimator and below by the
  Bhattacharyya estimator. I(X;T) = H(T) - H(T|X), with H(T|X) the Gaussian noise entropy;
  I(T;Y) = H(T) - sum_y p(y) H(T | Y=y).

Public functions take numpy arrays shaped (N, d) (and labels (N,)) and return bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["binned_mi", "binned_entropy", "kde_mi_upper", "kde_mi_lower", "kde_entropy_upper",
           "kde_entropy_lower", "discretise"]

LN2 = math.log(2)


def discretise(values: np.ndarray, bins: int = 30, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Bin index of every entry: ``bins`` equal-width bins over [lo, hi] (default: the array's range)."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(v.shape, dtype=np.int64)
    return np.clip(((v - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)


def _symbols(a: np.ndarray) -> np.ndarray:
    """One integer per row: rows that are equal get the same symbol."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    _, inverse = np.unique(np.ascontiguousarray(a), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def _entropy_of_symbols(s: np.ndarray) -> float:
    counts = np.bincount(s)
    p = counts[counts > 0] / len(s)
    return float(-(p * np.log2(p)).sum())


def binned_entropy(t: np.ndarray, bins: int = 30) -> float:
    """Entropy (bits) of the binned layer ``t`` (N, d)."""
    return _entropy_of_symbols(_symbols(discretise(t, bins)))


def binned_mi(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """I(A;B) in bits. Float arrays are binned (``bins`` bins over their range); integer or bool
    arrays (inputs as symbols, class labels) are used as they are."""
    def sym(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return _symbols(x if x.dtype.kind in "iub" else discretise(x, bins))

    sa, sb = sym(a), sym(b)
    joint = _symbols(np.column_stack([sa, sb]))
    return max(0.0, _entropy_of_symbols(sa) + _entropy_of_symbols(sb) - _entropy_of_symbols(joint))


def _mixture_entropy(t: torch.Tensor, var: float) -> float:
    """Pairwise-KL estimate (nats) of the entropy of (1/N) sum_j N(t_j, var I): an upper bound."""
    n, d = t.shape
    total = 0.0
    for i in range(0, n, 1024):  # bound memory: (1024, N) distances at a time
        dist = torch.cdist(t[i:i + 1024], t).pow(2)  # (b, N) squared distances
        total += float((torch.logsumexp(-dist / (2 * var), dim=1) - math.log(n)).sum())
    normconst = d / 2 * math.log(2 * math.pi * var)
    return -(total / n) + normconst + d / 2


def kde_entropy_upper(t: np.ndarray, noise_var: float) -> float:
    """Upper bound (bits) on the entropy of T + N(0, noise_var I), T given by the rows of ``t``."""
    return _mixture_entropy(torch.as_tensor(np.asarray(t), dtype=torch.float64), noise_var) / LN2


def kde_entropy_lower(t: np.ndarray, noise_var: float) -> float:
    """Lower bound (bits): the Bhattacharyya estimator, the KL one at 4 * noise_var minus d/2 ln 4."""
    d = np.asarray(t).shape[1]
    nats = _mixture_entropy(torch.as_tensor(np.asarray(t), dtype=torch.float64), 4 * noise_var)
    return (nats + d / 2 * math.log(0.25)) / LN2


def _noise_entropy(d: int, noise_var: float) -> float:
    return d / 2 * (math.log(2 * math.pi * noise_var) + 1) / LN2


def _mi(t: np.ndarray, noise_var: float, y: np.ndarray | None, entropy) -> float:
    t = np.asarray(t, dtype=np.float64)
    h = entropy(t, noise_var)
    if y is None:
        return h - _noise_entropy(t.shape[1], noise_var)
    y = np.asarray(y)
    conditional = sum((y == c).mean() * entropy(t[y == c], noise_var) for c in np.unique(y))
    return h - conditional


def kde_mi_upper(t: np.ndarray, noise_var: float, y: np.ndarray | None = None) -> float:
    """Upper bound (bits) on I(X;T) (``y`` None) or estimate of I(T;Y) from the KL estimator."""
    return _mi(t, noise_var, y, kde_entropy_upper)


def kde_mi_lower(t: np.ndarray, noise_var: float, y: np.ndarray | None = None) -> float:
    """Lower bound (bits) on I(X;T) (``y`` None) or the Bhattacharyya-based I(T;Y)."""
    return _mi(t, noise_var, y, kde_entropy_lower)


def kde_plane(t: np.ndarray, y: np.ndarray, noise_var: float) -> dict[str, float]:
    """All four KDE quantities of one layer from a single distance matrix (bits):
    I(X;T) upper and lower bounds, I(T;Y) from the upper (KL) and lower (Bhattacharyya) estimators."""
    order = np.argsort(np.asarray(y), kind="stable")  # classes contiguous: their blocks are slices
    yy = np.asarray(y)[order]
    tt = torch.as_tensor(np.asarray(t)[order], dtype=torch.float32)
    n = len(tt)
    dist = torch.cdist(tt, tt).pow_(2)  # (N, N) squared distances, float32
    bounds = np.flatnonzero(np.diff(yy)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, n]

    def neg_mean_log_mean(kernel: torch.Tensor) -> float:
        # every row holds its own zero distance, so each row sum is >= 1: no max-shift needed
        return -float(kernel.sum(1).log().mean()) + math.log(kernel.shape[1])

    out = {}
    kernel = torch.empty_like(dist)  # one buffer for both kernels: a fresh N x N block costs its page faults
    for name, var in (("upper", noise_var), ("lower", 4 * noise_var)):
        # H(T) - H(T|X) in nats for the mixture, with the KL (var) or Bhattacharyya (4 var) kernel
        # clamp before exp: results below e^-80 are negligible next to the row's own 1, and the
        # denormal numbers that exp would produce for them are many times slower to compute
        torch.mul(dist, -1.0 / (2 * var), out=kernel).clamp_(min=-80.0).exp_()
        h_full = neg_mean_log_mean(kernel)
        h_cond = sum((b - a) / n * neg_mean_log_mean(kernel[a:b, a:b]) for a, b in zip(starts, stops))
        out[f"ixt_{name}"] = h_full / LN2
        out[f"ity_{name}"] = (h_full - h_cond) / LN2
    return out
