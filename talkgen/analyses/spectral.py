"""Spectral statistics of weight matrices: the empirical spectral density and its power-law tail.

Heavy-tailed self-regularisation (Martin & Mahoney 2021, JMLR 22(165)): the eigenvalues of
X = W^T W / N of a well-trained layer have a power-law tail p(lambda) ~ lambda^-alpha; alpha in
[2, 6] is typical of well-trained layers, alpha > 6 of layers that look random (under-trained),
alpha < 2 of very heavy, over-correlated layers.

The tail is fitted as Clauset, Shalizi & Newman (2009) and their reference code do (``plfit``; the
``powerlaw`` package 1.5, which WeightWatcher uses, gives the same xmin, alpha and D): every
distinct eigenvalue but the largest is a candidate xmin; for each, the continuous MLE
alpha = 1 + n / sum(ln(lambda_i / xmin)) over the n eigenvalues >= xmin, and the Kolmogorov-Smirnov
distance D = max_i |F(lambda_i) - i/n| between the fitted CDF and the empirical CDF just below
each sorted point (one-sided); the xmin with the smallest D wins. The MLE is biased upwards on
short tails, so the reported alpha carries Clauset's finite-size correction
alpha* = 1 + (n - 1)(alpha - 1) / n (the unbiased estimate of alpha - 1); the uncorrected MLE is
kept as ``alpha_mle``. A tail of fewer than ``MIN_TAIL`` eigenvalues is fitted but not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_TAIL = 5            # a shorter fitted tail gets alpha and its error, but no verdict
MIN_EIGENVALUES = 3     # the reference needs two candidate xmins: three distinct non-zero eigenvalues


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float         # finite-size corrected
    xmin: float
    ks_distance: float
    n_tail: int
    alpha_stderr: float  # (alpha - 1) / sqrt(n_tail), the MLE's asymptotic standard error
    alpha_mle: float = math.nan  # the plain MLE at the chosen xmin, as the reference code reports it
    reason: str = ""     # why there is no fit (alpha is NaN then)


GRAM_ABOVE = 256  # a matrix with both sides above this: eigenvalues of its Gram matrix instead of an SVD
WIDEN_BYTES = 2**25  # a matrix is widened to float64 at most this much at a time


def squared_singular_values(matrix: np.ndarray) -> np.ndarray:
    """The squared singular values of ``matrix`` (float64 or float32), descending. Small matrices: an SVD.
    Larger ones: the eigenvalues of the Gram matrix of the shorter side (W^T W or W W^T, float64): the same
    numbers, several times faster on a 4096 x 4096 matrix; the eigenvalues below about 1e-16 of the largest lose
    their digits, and the fits drop those below 1e-12 anyway. A matrix over ``WIDEN_BYTES`` in float64 is
    widened that much at a time, never whole (a vocabulary's embedding)."""
    m = np.asarray(matrix)
    if m.dtype.kind != "f":
        m = m.astype(np.float64)
    if min(m.shape) <= GRAM_ABOVE and m.size * 8 <= WIDEN_BYTES:
        return np.linalg.svd(np.asarray(m, dtype=np.float64), compute_uv=False) ** 2
    gram = gram_matrix(m if m.shape[0] >= m.shape[1] else m.T)
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def gram_matrix(a: np.ndarray) -> np.ndarray:
    """a^T a in float64, ``WIDEN_BYTES`` of a's rows widened at a time (one product for a small matrix)."""
    step = max(1, WIDEN_BYTES // (8 * max(1, a.shape[1])))
    if a.shape[0] <= step:
        a = np.asarray(a, dtype=np.float64)
        return a.T @ a
    gram = np.zeros((a.shape[1], a.shape[1]))
    for i in range(0, a.shape[0], step):
        c = np.asarray(a[i:i + step], dtype=np.float64)
        gram += c.T @ c
    return gram


def esd(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W / N (N = rows), ascending; the squared singular values over N."""
    return np.sort(squared_singular_values(matrix) / matrix.shape[0])


def fit_power_law(eigenvalues: np.ndarray) -> PowerLawFit:
    """Fit the tail of ``eigenvalues`` (see the module docstring)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > lam.max() * 1e-12] if lam.size else lam
    nan = math.nan
    candidates = np.unique(lam)[:-1]  # the largest value cannot start a tail
    if candidates.size < MIN_EIGENVALUES - 1:
        return PowerLawFit(nan, nan, nan, int(lam.size), nan,
                           reason=f"only {np.unique(lam).size} distinct non-zero eigenvalues (need {MIN_EIGENVALUES})")
    best: tuple[float, float, float, int] | None = None  # (D, xmin, alpha_mle, n)
    for xmin in candidates:
        tail = lam[lam >= xmin]
        n = tail.size
        total = np.log(tail / xmin).sum()
        if total <= 0:
            continue
        alpha = 1.0 + n / total
        model = 1.0 - (tail / xmin) ** (1.0 - alpha)  # fitted CDF at each sorted tail point
        d = float(np.max(np.abs(model - np.arange(n) / n)))
        if best is None or d < best[0]:
            best = (d, float(xmin), alpha, n)
    if best is None:
        return PowerLawFit(nan, nan, nan, 0, nan, reason="eigenvalues are all equal")
    d, xmin, alpha_mle, n = best
    alpha = 1.0 + (n - 1) * (alpha_mle - 1.0) / n
    return PowerLawFit(alpha, xmin, d, n, (alpha - 1.0) / math.sqrt(n), alpha_mle=alpha_mle)


def ccdf(eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted eigenvalues, P(lambda >= x)): the log-log view in which a power law is a line."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    return lam, 1.0 - np.arange(lam.size) / lam.size


def fitted_ccdf(fit: PowerLawFit, x: np.ndarray, tail_fraction: float) -> np.ndarray:
    """The fitted tail's CCDF at ``x`` (>= xmin), scaled to join the empirical CCDF at xmin."""
    return tail_fraction * (x / fit.xmin) ** (1.0 - fit.alpha)


def verdict(alpha: float, n_tail: int = MIN_TAIL) -> str:
    if not math.isfinite(alpha):
        return "no fit"
    if n_tail < MIN_TAIL:
        return f"tail of {n_tail} eigenvalues: too short to judge"
    if alpha < 2:
        return "very heavy tail (over-correlated)"
    if alpha <= 6:
        return "heavy tail (typical of a trained layer)"
    return "light tail (looks random, under-trained)"
