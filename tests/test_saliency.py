"""Sanity-check machinery (twin network, rank correlation, SSIM, deletion curves, cascading
randomisation) and the saliency analysis on digits-cnn against the acceptance numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from talkgen.analyses import sanity
from talkgen.analyses.base import Context, get_analysis


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


@pytest.mark.parametrize("make,shape", [(_cnn, (3, 2, 6, 6)),
                                        (lambda: nn.Sequential(nn.Linear(7, 4), nn.Tanh(), nn.Linear(4, 3)), (3, 7))])
def test_the_input_shift_twin_gives_identical_logits(make, shape):
    model = make()
    x = torch.rand(shape)
    twin = sanity.shifted_twin(model, x, -1.5)
    assert not isinstance(twin, str), twin
    with torch.no_grad():
        torch.testing.assert_close(twin(x - 1.5), model(x), rtol=1e-5, atol=1e-5)
        other = torch.rand(shape)  # not only on the inputs it was built from
        torch.testing.assert_close(twin(other - 1.5), model(other), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x - 1.5), model(x))  # the shift does matter to the original
    assert isinstance(sanity.shifted_twin(nn.Sequential(nn.Embedding(5, 3)), torch.zeros(2, 1, dtype=torch.long), 1.0),
                      str)


def test_spearman_rows_matches_scipy_and_handles_ties_and_constants():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 30))
    b = a + rng.normal(size=(5, 30))
    a[0, :10] = 0  # ties
    ours = sanity.spearman_rows(a, b)
    ref = [spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert sanity.spearman_rows(np.zeros((1, 4)), np.arange(4.0)[None])[0] == 0.0


def test_ssim_is_one_for_identical_maps_and_low_for_unrelated_ones():
    rng = np.random.default_rng(0)
    m = rng.random((3, 8, 8))
    np.testing.assert_allclose(sanity.ssim(m, m * 5), 1.0)  # each map is scaled to its own maximum
    assert sanity.ssim(m, rng.random((3, 8, 8))).mean() < 0.5


class OnePixel(nn.Module):
    """Class 0's logit is 10 x pixel (0, 0); class 1's is constant."""

    def forward(self, x):
        v = 10 * x[:, 0, 0, 0]
        return torch.stack([v, torch.full_like(v, 5.0)], 1)


def test_deletion_and_insertion_follow_the_order():
    x = torch.ones(2, 1, 4, 4)
    target = torch.zeros(2, dtype=torch.long)
    best_first = torch.arange(16).expand(2, 16)          # pixel 0 first
    worst_first = torch.arange(15, -1, -1).expand(2, 16)  # pixel 0 last
    d_good, i_good = sanity.order_curves(OnePixel(), x, target, best_first, steps=16)
    d_bad, i_bad = sanity.order_curves(OnePixel(), x, target, worst_first, steps=16)
    p_on, p_off = torch.softmax(torch.tensor([10.0, 5.0]), 0)[0].item(), torch.softmax(torch.tensor([0.0, 5.0]), 0)[0].item()
    assert d_good[0, 0] == pytest.approx(p_on) and d_good[0, 1] == pytest.approx(p_off)
    assert i_good[0, 0] == pytest.approx(p_off) and i_good[0, 1] == pytest.approx(p_on)
    assert sanity.auc(d_good) < sanity.auc(d_bad) and sanity.auc(i_good) > sanity.auc(i_bad)


def test_cascading_randomisation_goes_top_down_and_leaves_the_model_alone():
    model = _cnn()
    x = torch.rand(2, 2, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = sanity.cascading_models(model, x, seed=0)
    assert [n for n, _ in steps] == ["5", "2", "0"]
    for k, (_, m) in enumerate(steps):
        for j, name in enumerate(["5", "2", "0"]):
            same = torch.equal(m.get_submodule(name).weight, model.get_submodule(name).weight)
            assert same == (j > k), (k, name)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_saliency_on_digits_cnn_meets_its_acceptance_numbers():
    from talkgen.models.samples import load_sample

    s = load_sample("digits-cnn")
    a = get_analysis("saliency")
    r = a.run(Context(subject=s, params=a.resolve_params("quick"), seed=0, device=torch.device("cpu"),
                      profile="quick"))
    assert r.summaries["ig_completeness_gap"].value < 0.01
    assert r.summaries["randomisation_rho.gradient"].value < 0.3
    assert r.data["cascade_pass"]["gradient"] and r.data["cascade_pass"]["grad_cam"]
    # the known failure: multiplying by the input keeps the digit's outline whatever the weights
    assert not r.data["cascade_pass"]["grad_x_input"]
    assert not r.data["invariance_pass"]["grad_x_input"] and r.data["invariance_pass"]["gradient"]
    for k in ("integrated_gradients", "occlusion"):
        assert r.summaries[f"deletion_auc.{k}"].value < r.summaries["deletion_auc_random"].value
        assert r.summaries[f"insertion_auc.{k}"].value > r.summaries["insertion_auc_random"].value
    cascade = [f for f in r.findings if "randomisation" in f.title]
    assert len(cascade) == 1 and cascade[0].severity == "medium" and "gradient × input" in cascade[0].detail
    assert cascade[0].value >= 0.3 and cascade[0].threshold == 0.3
