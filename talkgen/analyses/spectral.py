"""Spectral statistics of weight matrices: the empirical spectral density and its power-law tail.

Heavy-tailed self-regularisation (Martin & Mahoney 2021, JMLR 22(165)): the eigenvalues of
X = W^T W / N of a well-trained layer have a power-law tail p(lambda) ~ lambda^-alpha; alpha in
[2, 6] is typical of well-trained layers, alpha > 6 of layers that look random (under-trained),
alpha < 2 of very heavy, over-correlated layers. The tail is fitted as in Clauset, Shalizi &
Newman (2009): the continuous power-law MLE alpha = 1 + n / sum(ln(lambda_i / xmin)) for each
candidate xmin, keeping the xmin whose fit has the smallest Kolmogorov-Smirnov distance D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_TAIL = 5         # fewer tail eigenvalues than this: no fit
MIN_EIGENVALUES = 10  # a matrix with fewer eigenvalues gets no fit at all


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    alpha_stderr: float  # (alpha - 1) / sqrt(n_tail), the MLE's asymptotic standard error
    reason: str = ""     # why there is no fit (alpha is NaN then)


def esd(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W / N (N = rows), ascending; the squared singular values over N."""
    sv = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return np.sort(sv**2 / matrix.shape[0])


def fit_power_law(eigenvalues: np.ndarray) -> PowerLawFit:
    """Fit the tail of ``eigenvalues`` (see the module docstring)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > lam.max() * 1e-12] if lam.size else lam
    nan = math.nan
    if lam.size < MIN_EIGENVALUES:
        return PowerLawFit(nan, nan, nan, int(lam.size), nan,
                           reason=f"only {lam.size} non-zero eigenvalues (need {MIN_EIGENVALUES})")
    best: PowerLawFit | None = None
    for i in range(0, lam.size - MIN_TAIL + 1):
        xmin = lam[i]
        tail = lam[i:]
        logs = np.log(tail / xmin)
        total = logs.sum()
        if total <= 0:
            continue
        n = tail.size
        alpha = 1.0 + n / total
        empirical = np.arange(n) / n                      # CDF just below each sorted point
        model = 1.0 - (tail / xmin) ** (1.0 - alpha)      # fitted CDF
        d = float(np.max(np.maximum(np.abs(model - empirical), np.abs(model - (np.arange(1, n + 1) / n)))))
        if best is None or d < best.ks_distance:
            best = PowerLawFit(alpha, float(xmin), d, n, (alpha - 1.0) / math.sqrt(n))
    if best is None:
        return PowerLawFit(nan, nan, nan, 0, nan, reason="eigenvalues are all equal")
    return best


def ccdf(eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted eigenvalues, P(lambda >= x)): the log-log view in which a power law is a line."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    return lam, 1.0 - np.arange(lam.size) / lam.size


def fitted_ccdf(fit: PowerLawFit, x: np.ndarray, tail_fraction: float) -> np.ndarray:
    """The fitted tail's CCDF at ``x`` (>= xmin), scaled to join the empirical CCDF at xmin."""
    return tail_fraction * (x / fit.xmin) ** (1.0 - fit.alpha)


def verdict(alpha: float) -> str:
    if not math.isfinite(alpha):
        return "no fit"
    if alpha < 2:
        return "very heavy tail (over-correlated)"
    if alpha <= 6:
        return "heavy tail (typical of a trained layer)"
    return "light tail (looks random, under-trained)"
