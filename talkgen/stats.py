"""Rank and correlation statistics shared by the analyses (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np


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
