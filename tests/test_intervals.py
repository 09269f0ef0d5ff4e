"""Intervals on the statistics the talk quotes: their closed forms, their edge cases and their coverage."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from talkgen.analyses.base import Scalar
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


# -- estimates: numbers quoted with their n and interval ---------------------------------------------------


def test_batched_tau_and_r2_are_scipys_and_the_bootstrap_draws_are_the_same_either_way():
    from scipy.stats import kendalltau

    from talkgen.meta.metanets import r2
    from talkgen.stats import bootstrap_interval, kendall_tau_rows, r2_rows

    rng = np.random.default_rng(0)
    y = rng.random(17)
    pred = y + rng.normal(0, 0.3, 17)
    pred[:4] = pred[0]  # ties, which tau-b corrects for
    rows = rng.integers(0, 17, (40, 17))
    assert np.allclose(kendall_tau_rows(y[rows], pred[rows]),
                       [kendalltau(y[i], pred[i]).statistic for i in rows], atol=1e-12, equal_nan=True)
    assert np.allclose(r2_rows(y[rows], pred[rows]), [r2(y[i], pred[i]) for i in rows], atol=1e-12)
    one = bootstrap_interval(lambda a, b: kendalltau(a, b).statistic, y, pred, seed=3)
    many = bootstrap_interval(kendall_tau_rows, y, pred, seed=3, batched=True)
    assert np.allclose(one, many, atol=1e-12)


def test_an_estimate_prints_with_its_interval_and_says_when_its_n_is_small():
    from talkgen.render.commentary import ci, stat, stat_pct
    from talkgen.stats import auc_estimate, proportion

    acc = proportion(442, 450, "accuracy")
    assert acc.n == 450 and acc.lo < acc.value < acc.hi
    assert stat_pct(acc) == "98.2% (95% interval 96.5% to 99.1%; n = 450)"
    few = auc_estimate(1.0, 5, 5, "AUC")
    assert stat(few) == f"1 ({ci(few)}; n = 10, under 30)" and few.lo < 0.8
    assert stat(auc_estimate(0.9, 0, 7, "AUC")).startswith("0.9 (interval undefined; n = 7")
    import pytest

    with pytest.raises(ValueError):
        stat(Scalar(0.5, "", "a number without its n"))


def test_the_statistics_scan_finds_a_bare_number_and_passes_one_with_its_interval():
    from statistics_scan import scan

    def slide(*paras, table=""):
        body = "".join(f"<p>{p}</p>" for p in paras)
        return f'<div class="slides"><section id="s">{body}{table}</section></div>'

    assert len(scan(slide("The detector reaches AUC 0.95 on held-out members."), "slides")) == 1
    assert not scan(slide("AUC 0.95 (95% interval 0.8 to 0.99; n = 20)."), "slides")
    # a title may state the number; the slide shows it with its interval and n below
    assert not scan(slide("Probes read class at 99.0% accuracy", "accuracy 99.0% (95% interval 98.1% to 99.5%; "
                          "n = 819)"), "slides")
    assert len(scan(slide("it flips 54% of predictions"), "slides")) == 1
    assert not scan(slide("it flips 54% (95% interval 45% to 63%) of predictions; n = 118"), "slides")
    assert len(scan(slide("fit R² 0.58 over 3 widths"), "slides")) == 1
    assert not scan(slide("fit R² 0.58 (too few points for an interval; n = 3)"), "slides")
    table = "<table><tr><th>predictor</th><th>R²</th></tr><tr><td>weights</td><td>0.924</td></tr></table>"
    assert len(scan(slide("Held-out scores.", table=table), "slides")) == 1
    assert not scan(slide("Each with its 95% bootstrap interval; n = 13 members.", table=table), "slides")
    # names and constants are not statistics: meta-accuracy (an analysis), a rate without a percentage
    assert not scan(slide("meta-accuracy 2.06 s; the detector flagged 0 of them"), "slides")


def test_every_statistic_in_the_slides_and_the_report_has_its_n_and_interval(quick_build):
    """Every AUC, tau, R², accuracy and rate a reader meets in the quick build's slides.html and report.html is
    shown with its interval and its n in the same slide or section (tests/statistics_scan.py)."""
    from statistics_scan import scan

    for name in ("slides.html", "report.html"):
        misses = scan((quick_build / name).read_text(), "slides" if name == "slides.html" else "report")
        assert not misses, f"{name}: " + "\n".join(f"{m.where}: {m.number!r} in …{m.text}…" for m in misses[:10])
