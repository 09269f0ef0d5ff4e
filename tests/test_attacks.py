"""The attacker's view (talkgen.analyses.attacks): explanation-guided perturbations and the trigger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from talkgen.analyses.attacks import loss_gradient, pgd, trigger_share


def test_gradient_sign_is_the_best_linf_direction_for_a_linear_model():
    """For logits W x, moving along sign of the loss gradient lowers the true class's margin at least as
    much as any random sign vector of the same size."""
    torch.manual_seed(0)
    model = nn.Linear(20, 2, bias=False)
    x = torch.randn(64, 20)
    y = model(x).argmax(1)
    w = model.weight.detach()
    margin = lambda z: (z @ w.T).gather(1, y[:, None])[:, 0] - (z @ w.T).gather(1, 1 - y[:, None])[:, 0]  # noqa: E731
    eps = 0.1
    guided = margin(x + eps * loss_gradient(model, x, y).sign())
    for _ in range(20):
        rand = margin(x + eps * (torch.randint(0, 2, x.shape).float() * 2 - 1))
        assert (guided <= rand + 1e-5).all()


def test_pgd_stays_in_the_ball_and_beats_one_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(50, 10)
    y = model(x).argmax(1)
    adv = pgd(model, x, y, 0.3, 10)
    assert float((adv - x).abs().max()) <= 0.3 + 1e-6
    ce = lambda z: float(nn.functional.cross_entropy(model(z), y))  # noqa: E731
    assert ce(adv) >= ce(x + 0.3 * loss_gradient(model, x, y).sign()) - 1e-4
    assert torch.equal(pgd(model, x, y, 0.0, 10), x)


def test_trigger_share_known_answer():
    maps = torch.zeros(2, 8, 8)
    maps[0, 6:8, 6:8] = 1.0            # everything on the patch
    maps[1] = -1.0                     # uniform: the patch's area share
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[6:8, 6:8] = True
    assert trigger_share(maps, region) == pytest.approx([1.0, 4 / 64])


@pytest.fixture(scope="module")
def attack_results():
    from talkgen.analyses.base import Context, get_analysis
    from talkgen.models.samples import load_sample

    a = get_analysis("attacks")
    out = {}
    for name in ("digits-cnn", "digits-cnn-trojan"):
        s = load_sample(name)
        assert a.applies_to(s) is True
        params = a.resolve_params("quick", {"n_inputs": 100, "epsilons": [0.0, 0.05, 0.1, 0.2]})
        out[name] = a.run(Context(subject=s, params=params, seed=0, device=torch.device("cpu"), profile="quick"))
    return out


def test_explanation_guided_perturbations_flip_more_than_random(attack_results):
    for r in attack_results.values():
        f = r.data["flips"]
        assert f["fgsm"][0] == f["random"][0] == 0.0          # eps 0 changes nothing
        i = r.data["eps"].index(0.1)
        assert f["fgsm"][i] > f["random"][i] + 0.2
        assert f["pgd"][i] >= f["fgsm"][i] - 0.02
        assert np.all(np.diff(f["pgd"]) >= -0.02)                # bigger budgets flip more


def test_explanations_find_the_trojans_trigger(attack_results):
    clean, trojan = (attack_results[n].data["trigger"] for n in ("digits-cnn", "digits-cnn-trojan"))
    assert trojan["to_target"] > 0.9 and clean["to_target"] < 0.2
    for method in ("gradient", "Integrated Gradients"):
        assert trojan["shares"][method] > 3 * trojan["area"]
        assert trojan["shares"][method] > 2 * clean["shares"][method]
    assert any(f.severity == "medium" for f in attack_results["digits-cnn-trojan"].findings)
    assert not any(f.severity == "high" for r in attack_results.values() for f in r.findings)
