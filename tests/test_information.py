"""The information estimators against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talkgen.information import binned_entropy, binned_mi, kde_mi_lower, kde_mi_upper


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("r", [1.0, 10.0])
def test_kde_bounds_bracket_the_gaussian_channel(d, r):
    """X ~ N(0, s^2 I_d), T = X + N(0, sigma^2 I_d): I(X;T) = d/2 log(1 + r), r = s^2/sigma^2.

    The bounds must bracket it. Their gaps are known too: for Gaussian centres the pairwise
    estimators have closed-form large-N limits, upper = d/2 [ln(1+r) + r/(1+r)] nats and
    lower = d/2 [ln(1+r/4) + (r/4)/(1+r/4)] nats, and the estimates must match them.
    (The upper bound's excess d/2 r/(1+r) nats is over 10% of the truth for every r < ~2e4.)
    """
    sigma2, n = 0.1, 4096
    x = np.random.default_rng(d).normal(scale=math.sqrt(r * sigma2), size=(n, d))
    truth = d / 2 * math.log2(1 + r)
    upper, lower = kde_mi_upper(x, sigma2), kde_mi_lower(x, sigma2)
    assert lower <= truth <= upper, (lower, truth, upper)
    expect_upper = d / 2 * (math.log(1 + r) + r / (1 + r)) / math.log(2)
    expect_lower = d / 2 * (math.log(1 + r / 4) + (r / 4) / (1 + r / 4)) / math.log(2)
    # finite N pulls the estimates towards log2(N) = 12 bits as d grows (4.4% at d=4, r=10)
    assert upper == pytest.approx(expect_upper, rel=0.05)
    assert lower == pytest.approx(expect_lower, rel=0.05)


def test_binning_a_deterministic_map_of_4096_inputs_never_exceeds_12_bits():
    rng = np.random.default_rng(0)
    inputs = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(np.int64)
    w = rng.normal(size=(12, 64))
    t = np.tanh(inputs @ w)  # deterministic, injective-ish, 64 units
    assert binned_entropy(t, 30) <= 12 + 1e-9
    assert binned_mi(inputs, t, 30) <= 12 + 1e-9
    assert binned_mi(inputs, t, 30) == pytest.approx(binned_entropy(t, 30))


def test_binned_mi_known_values():
    y = np.repeat([0, 1], 500)
    assert binned_mi(y, y) == pytest.approx(1.0)
    assert binned_mi(y, np.tile([0, 1], 500)) == pytest.approx(0.0, abs=1e-12)
    t = np.where(y[:, None] == 1, 0.9, 0.1) + np.zeros((1000, 3))
    assert binned_mi(t, y) == pytest.approx(1.0)


def test_kde_label_information_is_at_most_one_bit_for_two_classes():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 300)
    t = rng.normal(size=(600, 2)) + 10 * y[:, None]  # well separated classes
    for f in (kde_mi_upper, kde_mi_lower):
        v = f(t, 0.1, y)
        assert 0.9 < v <= 1.0 + 1e-6, (f.__name__, v)


def test_kde_plane_agrees_with_the_public_estimators():
    from talkgen.information import kde_plane

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    t = rng.normal(size=(400, 3)) + y[:, None]
    plane = kde_plane(t, y, 0.2)
    assert plane["ixt_upper"] == pytest.approx(kde_mi_upper(t, 0.2), rel=1e-4)
    assert plane["ixt_lower"] == pytest.approx(kde_mi_lower(t, 0.2), rel=1e-4)
    assert plane["ity_upper"] == pytest.approx(kde_mi_upper(t, 0.2, y), rel=1e-4)
    assert plane["ity_lower"] == pytest.approx(kde_mi_lower(t, 0.2, y), rel=1e-4)


def test_information_plane_on_the_12_bit_subjects_quick():
    """On the shipped checkpoints: binned I(X;T) never exceeds 12 bits, I(T;Y) at most H(Y)."""
    import torch

    from talkgen.analyses.base import Context
    from talkgen.analyses.information_plane import InformationPlane
    from talkgen.models.samples import load_sample

    a = InformationPlane()
    s = load_sample("ib-tanh")
    assert a.applies_to(s) is True
    r = a.run(Context(subject=s, params=a.resolve_params("quick", {"max_checkpoints": 3}), seed=0,
                      device=torch.device("cpu"), profile="quick"))
    h_y = r.summaries["label_entropy_bits"].value
    for layer in r.data["layers"]:
        assert r.arrays[f"binning:ixt:{layer}"].max() <= 12 + 1e-9
        assert r.arrays[f"binning:ity:{layer}"].max() <= h_y + 1e-9
        assert (r.arrays[f"kde_lower:ixt:{layer}"] <= r.arrays[f"kde_upper:ixt:{layer}"] + 1e-6).all()
    assert r.data["checkpoints"] == 3
