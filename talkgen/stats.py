"""Rank and correlation statistics shared by the analyses (numpy in, numpy out), and the estimates the talk
and the report quote with their interval and n (``proportion``, ``auc_estimate``, ``bootstrap_estimate``:
``talkgen.results.Scalar`` with ``n``, ``lo`` and ``hi``)."""

from __future__ import annotations

import numpy as np

from talkgen.results import Scalar

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
                       seed: int = 0, batched: bool = False) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*columns)``, resampling the rows of the columns
    together (paired); resamples on which the statistic is not finite (an R² of a constant) are dropped.
    ``batched``: ``statistic`` takes (B, n) resampled columns and returns (B,) values (``r2_rows``,
    ``kendall_tau_rows``), a few hundred resamples per call instead of one."""
    n = len(columns[0])
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))  # the same draws, row by row, whichever way it is computed
    if batched:
        chunk = max(1, 2_000_000 // (n * n))  # a (chunk, n, n) pair matrix stays small
        values = np.concatenate([statistic(*(np.asarray(c)[idx[i:i + chunk]] for c in columns))
                                 for i in range(0, n_boot, chunk)])
    else:
        values = np.array([statistic(*(np.asarray(c)[row] for c in columns)) for row in idx], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def r2_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² = 1 - SS_res / SS_tot of each row of ``pred`` (B, n) against the same row of ``y`` (NaN where y is
    constant)."""
    ss_tot = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    ss_res = ((y - pred) ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def kendall_tau_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``pred`` (B, n) with the same row of ``y`` (what scipy.stats.kendalltau
    computes: concordant minus discordant pairs over the square root of the pairs untied in each), NaN where
    either row is constant."""
    sy = np.sign(y[:, :, None] - y[:, None, :])  # (B, n, n): each ordered pair, both halves (the ratio is the same)
    sp = np.sign(pred[:, :, None] - pred[:, None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sy * sp).sum((1, 2)) / np.sqrt(np.abs(sy).sum((1, 2)) * np.abs(sp).sum((1, 2)))


def proportion(successes: float, n: int, meaning: str, unit: str = "fraction") -> Scalar:
    """``successes / n`` with its Wilson interval and n (a rate, an accuracy)."""
    lo, hi = wilson_interval(successes, n)
    return Scalar(float(successes / n) if n else float("nan"), unit, meaning, n=int(n), lo=lo, hi=hi)


def auc_estimate(auc: float, n_pos: int, n_neg: int, meaning: str) -> Scalar:
    """An AUC measured on ``n_pos`` positives and ``n_neg`` negatives with its interval (``auc_interval``);
    its n is every item scored."""
    lo, hi = auc_interval(auc, n_pos, n_neg)
    return Scalar(float(auc), "AUC", meaning, n=int(n_pos + n_neg), lo=lo, hi=hi)


def bootstrap_estimate(statistic, *columns: np.ndarray, meaning: str, unit: str = "", seed: int = 0,
                       value: float | None = None, batched=None) -> Scalar:
    """``statistic(*columns)`` (or ``value``, when the quoted number is computed another way) with its paired
    percentile bootstrap interval over the rows (an R², a Kendall tau, a mean); its n is the number of rows.
    ``batched``: the same statistic on (B, n) resamples (``r2_rows``, ``kendall_tau_rows``), for speed."""
    if batched is not None and len(columns[0]) <= 100:  # its pair matrices grow as n²: beyond, one at a time
        lo, hi = bootstrap_interval(batched, *columns, seed=seed, batched=True)
    else:
        lo, hi = bootstrap_interval(statistic, *columns, seed=seed)
    v = float(statistic(*columns)) if value is None else float(value)
    return Scalar(v, unit, meaning, n=len(columns[0]), lo=lo, hi=hi)


def with_interval(estimate: Scalar, spec: str = ".2f") -> str:
    """An estimate and its interval in a line of plain text: '0.23 (95% interval 0.20 to 0.26)'."""
    if estimate.lo is None or estimate.hi is None or not np.isfinite([estimate.lo, estimate.hi]).all():
        return f"{estimate.value:{spec}} (interval undefined)"
    return f"{estimate.value:{spec}} ({CI_LEVEL:.0%} interval {estimate.lo:{spec}} to {estimate.hi:{spec}})"
