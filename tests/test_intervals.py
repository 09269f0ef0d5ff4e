"""Intervals on the statistics the talk quotes: their closed forms, their edge cases and their coverage."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from talkgen.meta.metanets import auc
from talkgen.stats import auc_interval, wilson_interval


def test_wilson_matches_its_closed_form_and_stays_in_0_1():
    lo, hi = wilson_interval(12, 13)
    z = norm.ppf(0.975)
    p, n = 12 / 13, 13
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert math.isclose(lo, centre - half) and math.isclose(hi, centre + half)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.31  # none of ten is still compatible with about a quarter


def test_auc_interval_at_chance_matches_the_mann_whitney_standard_error():
    """At AUC 0.5 the Mann-Whitney statistic has SE sqrt((m+n+1)/(12mn)); the interval is +- z of it."""
    m = n = 200
    lo, hi = auc_interval(0.5, m, n)
    se = math.sqrt((m + n + 1) / (12 * m * n))
    assert math.isclose(hi - 0.5, norm.ppf(0.975) * se, rel_tol=0.03)
    assert math.isclose(0.5 - lo, hi - 0.5, rel_tol=1e-6)


def test_a_perfect_auc_on_few_models_is_not_certain():
    lo, hi = auc_interval(1.0, 5, 5)
    assert hi == 1.0 and 0.5 < lo < 0.8
    lo_big, _ = auc_interval(1.0, 100, 100)
    assert lo < lo_big < 1.0  # more models, a tighter interval


def test_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    shift, k = 1.2, 15
    true = norm.cdf(shift / math.sqrt(2))
    hits = 0
    for _ in range(400):
        y = np.r_[np.ones(k), np.zeros(k)]
        s = np.r_[rng.normal(shift, 1, k), rng.normal(0, 1, k)]
        lo, hi = auc_interval(auc(y, s), k, k)
        hits += lo <= true <= hi
    assert 0.92 <= hits / 400 <= 0.995, hits / 400


def test_bootstrap_interval_covers_a_mean_and_drops_undefined_resamples():
    from talkgen.meta.metanets import r2
    from talkgen.stats import bootstrap_interval

    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        x = rng.normal(0.3, 1.0, 30)
        lo, hi = bootstrap_interval(np.mean, x, n_boot=400, seed=i)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 200 <= 0.99, hits / 200
    # a good predictor on 13 points: R² high, its interval below 1 and around the estimate
    y = np.linspace(0.1, 0.9, 13)
    pred = y + rng.normal(0, 0.05, 13)
    lo, hi = bootstrap_interval(r2, y, pred)
    assert lo < r2(y, pred) < hi <= 1.0
    # a constant target has no R²: every resample is dropped, and the interval says so
    assert all(np.isnan(bootstrap_interval(r2, np.ones(13), pred)))
