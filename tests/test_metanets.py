"""Meta-networks: features, scores, DeepSets invariance, MNTD, and the zoo analyses on digits-cnn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from talkgen.meta import metanets as mn
from talkgen.meta import zoo as Z


@pytest.fixture(scope="module")
def source():
    return Z.zoo_source("digits-cnn")


@pytest.fixture(scope="module")
def stacked(source):
    gen = torch.Generator().manual_seed(0)
    template = source.factory()
    return {k: torch.randn((5, *v.shape), generator=gen) * 0.2 for k, v in template.named_parameters()}


def test_weight_statistics_are_mean_std_and_quantiles(stacked):
    X, names = mn.weight_statistics(stacked)
    assert X.shape == (5, 7 * len(stacked)) and len(names) == X.shape[1]
    w = stacked["fc1.weight"][2].reshape(-1).double().numpy()
    col = names.index("fc1.weight:mean")
    np.testing.assert_allclose(X[2, col:col + 7], [w.mean(), w.std(), *np.quantile(w, [0, .25, .5, .75, 1])],
                               rtol=1e-5, atol=1e-6)


def test_permuting_hidden_neurons_keeps_the_function_and_the_deepsets_output(source, stacked):
    perm = mn.permute_hidden(stacked, torch.Generator().manual_seed(3))
    assert not torch.equal(perm["conv1.weight"], stacked["conv1.weight"])
    template = source.factory()
    x = source.x_test[:16]
    for m in range(5):
        a = functional_call(template, {k: v[m] for k, v in stacked.items()}, (x,))
        b = functional_call(template, {k: v[m] for k, v in perm.items()}, (x,))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # the same network
    torch.manual_seed(0)
    net = mn.DeepSetsMetaNet({k: tuple(v.shape[1:]) for k, v in stacked.items()}, 1)
    net.fit_scales(stacked)
    with torch.no_grad():
        out, out_perm = net(stacked), net(perm)
    assert (out - out_perm).abs().max() < 1e-5
    # and it is not a constant: different networks, different outputs
    assert out.std() > 1e-4


def test_layer_plans_read_a_conv_then_linear_chain(stacked):
    plans = mn.layer_plans({k: tuple(v.shape[1:]) for k, v in stacked.items()})
    assert [(p.weight, p.in_groups, p.per_group, p.hidden) for p in plans] == [
        ("conv1.weight", 1, 9, True), ("conv2.weight", 16, 9, True), ("fc1.weight", 32, 16, True),
        ("fc2.weight", 64, 1, False)]


def test_scores_on_known_answers():
    y = np.array([0.1, 0.5, 0.9, 0.3])
    assert mn.r2(y, y) == 1.0 and abs(mn.r2(y, np.full(4, y.mean()))) < 1e-12
    assert mn.kendall_tau(y, y) == pytest.approx(1.0) and mn.kendall_tau(y, -y) == pytest.approx(-1.0)
    assert mn.kendall_tau(y, np.zeros(4)) == 0.0
    labels = np.array([0, 0, 1, 1])
    assert mn.auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert mn.auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert mn.auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    t = mn.youden_threshold(labels, np.array([0.1, 0.2, 0.8, 0.9]))
    assert 0.2 < t < 0.8


def test_roc_points_run_from_corner_to_corner():
    from talkgen.meta.metanets import roc_points

    fpr, tpr = roc_points(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1.0] and tpr.tolist() == [0, 0.5, 0.5, 1.0, 1.0]


def test_mntd_score_ignores_which_class_is_which():
    torch.manual_seed(0)
    det = mn.MNTD(4, (1, 8, 8), 10)
    answers = torch.randn(3, 4, 10)
    relabel = torch.randperm(10)
    torch.testing.assert_close(det.score(answers), det.score(answers[:, :, relabel]))


def test_mntd_learns_to_spot_a_planted_backdoor(source):
    """Members backdoored with a bright corner patch vs clean ones, trained briefly together:
    the tuned queries separate held-out members far better than chance."""
    spec = Z.ZooSpec(n=40, chunk=40, steps=(120, 120), trojan_share=0.5)
    members = [Z.sample_member(spec, i, source.image_shape, 10) for i in range(40)]
    for m in members:
        m |= {"optimizer": "adam", "lr": 3e-3, "label_noise": 0.0, "train_fraction": 1.0, "init_scale": 1.0,
              "weight_decay": 0.0, "steps": 120}
        if m["trojan"]:
            m |= {"trigger": "patch", "trigger_size": 3, "trigger_row": 5, "trigger_col": 5,
                  "poison_rate": 0.2, "trigger_alpha": 1.0}
    trainer = Z.Trainer(source, members, 32)
    st = trainer.initial()
    for s in range(120):
        trainer.step(st, torch.Generator().manual_seed(s))
    labels = np.array([m["trojan"] for m in members]).astype(int)
    fit, test = np.arange(28), np.arange(28, 40)
    sub = lambda idx: {k: v[torch.as_tensor(idx)] for k, v in st.params.items()}  # noqa: E731
    det = mn.train_mntd(trainer.forward, sub(fit), labels[fit], input_shape=(1, 8, 8), n_classes=10,
                        init_queries=torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                        epochs=40, seed=0, n_queries=8, batch=16)
    assert mn.auc(labels[test], mn.mntd_scores(det, trainer.forward, sub(test))) > 0.8


def test_deepsets_regression_beats_the_mean_on_a_weight_norm_target(stacked):
    """A target that is a property of the raw weights (the norm of fc2) is learnable."""
    gen = torch.Generator().manual_seed(1)
    params = {k: v[:1].repeat(120, *([1] * (v.ndim - 1))) * torch.exp(torch.randn(120, *([1] * (v.ndim - 1)),
                                                                                    generator=gen) * 0.3)
              for k, v in stacked.items()}
    y = params["fc2.weight"].flatten(1).norm(dim=1).numpy()
    tr, te = np.arange(90), np.arange(90, 120)
    net, info = mn.train_deepsets({k: v[:90] for k, v in params.items()}, y[tr], kind="regression", epochs=100,
                                  seed=0, width=8)
    pred = mn.deepsets_predict(net, {k: v[90:] for k, v in params.items()})
    assert mn.r2(y[te], pred) > 0.5


def test_zoo_analyses_on_digits_cnn_and_its_trojan_twin(tmp_path):
    """The four analyses through their public run(): a small zoo built once into the store, reused
    by the second subject and by each analysis; numbers in range, figures drawable."""
    from talkgen.analyses.base import Context, get_analysis
    from talkgen.models.samples import load_sample
    from talkgen.render.figures import draw

    small = {"zoo_members": 40, "zoo_steps": [30, 120], "deepsets_epochs": 20, "mntd_epochs": 5}
    results = {}
    for name in ("digits-cnn", "digits-cnn-trojan"):
        s = load_sample(name)
        for a_name in ("model-zoo", "meta-accuracy", "meta-hyperparameters", "meta-trojan"):
            a = get_analysis(a_name)
            assert a.applies_to(s) is True
            params = a.resolve_params("quick", {k: v for k, v in small.items() if k in a.params})
            r = a.run(Context(subject=s, params=params, seed=0, device=torch.device("cpu"), profile="quick",
                              store=tmp_path))
            results[(name, a_name)] = r
            for spec in r.figures:
                draw(spec, r.arrays)
    zoos = list((tmp_path / "zoo").iterdir())
    assert len(zoos) == 1 and len(list(zoos[0].glob("chunk-*.safetensors"))) == 2  # one zoo, shared
    # DeepSets and the quick profile's 2 MNTD detectors, each fitted once for both subjects
    assert len(list((zoos[0] / "meta").glob("deepsets-*.safetensors"))) == 1
    assert len(list((zoos[0] / "meta").glob("mntd-*.safetensors"))) == 2
    zoo = results[("digits-cnn", "model-zoo")]
    assert zoo.summaries["members"].value == 40
    acc = results[("digits-cnn", "meta-accuracy")]
    for k in ("weights", "deepsets", "recipe", "mean"):
        assert -10 < acc.data["metrics"][k]["r2"] <= 1
    assert acc.data["metrics"]["mean"]["tau"] == 0.0
    assert abs(acc.summaries["measured_accuracy"].value - 0.98) < 0.02
    assert 0 <= acc.summaries["predicted_accuracy"].value <= 1
    hyper = results[("digits-cnn", "meta-hyperparameters")]
    assert set(hyper.data["targets"]) == {"optimizer", "label noise", "training fraction"}
    assert hyper.data["targets"]["optimizer"]["truth"] == "Adam"
    troj = results[("digits-cnn-trojan", "meta-trojan")]
    assert 0 <= troj.summaries["mntd_auc"].value <= 1
    assert troj.data["ensemble"] == 2 and len(troj.data["single_aucs"]) == 2
    assert troj.arrays["queries"].shape == (32, 8, 8)


def test_zoo_analyses_do_not_apply_to_other_architectures():
    from talkgen.analyses.base import get_analysis
    from talkgen.models.samples import load_sample

    reason = get_analysis("meta-accuracy").applies_to(load_sample("ib-tanh"))
    assert isinstance(reason, str) and "architecture" in reason
