"""Rank and correlation statistics shared by the analyses (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np

CI_LEVEL = 0.95  # the confidence level of every interval the talk and the report quote


def pearson(acts: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``acts`` (N, U) with ``label`` (N,)."""
    a = acts - acts.mean(0)
    l = label - label.mean()
    denom = np.sqrt((a**2).sum(0) * (l**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * l[:, None]).sum(0) / denom, 0.0)


def auroc(acts: np.ndarray, positive: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """AUROC of each column of ``acts`` (N, U) as a score for the boolean ``positive`` (N,)
    (Mann-Whitney U over the ranks; pass ``ranks`` of ``acts`` to reuse them across labels)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(acts.shape[1], np.nan)
    if ranks is None:
        ranks = rankdata(acts, axis=0)
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _invert(estimate: float, variance, z: float) -> tuple[float, float]:
    """Score-type interval: the values t in [0, 1] with (estimate - t)^2 <= z^2 variance(t), found by
    bisection on each side of the estimate (the variance is taken at t, not at the estimate, so an
    estimate of 0 or 1 still gets an interval of positive width)."""
    def outside(t: float) -> bool:
        return (estimate - t) ** 2 > z * z * variance(t)

    def edge(inside: float, out: float) -> float:
        if not outside(out):
            return out
        for _ in range(60):
            mid = (inside + out) / 2
            inside, out = (inside, mid) if outside(mid) else (mid, out)
        return (inside + out) / 2

    return edge(estimate, 0.0), edge(estimate, 1.0)


def auc_interval(auc: float, n_pos: int, n_neg: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Confidence interval of an AUC measured on ``n_pos`` positives and ``n_neg`` negatives: Hanley and
    McNeil's (1982) variance of the Mann-Whitney AUC, inverted as a score interval (Newcombe's approach),
    so that a perfect AUC on ten models reads as "1, but could be as low as ..." rather than "1 ± 0"."""
    if not (n_pos and n_neg) or not np.isfinite(auc):
        return float("nan"), float("nan")

    def variance(t: float) -> float:
        q1, q2 = t / (2 - t), 2 * t * t / (1 + t)
        return max(0.0, t * (1 - t) + (n_pos - 1) * (q1 - t * t) + (n_neg - 1) * (q2 - t * t)) / (n_pos * n_neg)

    return _invert(float(auc), variance, _z(level))


def wilson_interval(successes: float, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / n``."""
    if n <= 0:
        return float("nan"), float("nan")
    p, z = successes / n, _z(level)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_interval(statistic, *columns: np.ndarray, level: float = CI_LEVEL, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*columns)``, resampling the rows of the columns
    together (paired); resamples on which the statistic is not finite (an R² of a constant) are dropped."""
    n = len(columns[0])
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = statistic(*(np.asarray(c)[idx] for c in columns))
        if np.isfinite(v):
            values.append(v)
    if len(values) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
