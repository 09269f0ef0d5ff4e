"""Probes: linear vs MLP on separable and XOR data, control tasks, and the analysis on digits-cnn."""

from __future__ import annotations

import numpy as np
import torch

from talkgen.analyses.base import Context, get_analysis
from talkgen.meta.probes import control_labels, fit_probe


def test_linear_probe_reads_a_linear_concept_and_only_the_mlp_reads_xor():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 2))
    linear = (x[:, 0] + x[:, 1] > 0).astype(int)
    xor = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    tr, te = slice(0, 600), slice(600, 800)
    assert fit_probe(x[tr], linear[tr], x[te], linear[te], kind="linear") > 0.95
    assert fit_probe(x[tr], xor[tr], x[te], xor[te], kind="linear") < 0.7
    assert fit_probe(x[tr], xor[tr], x[te], xor[te], kind="mlp", steps=600) > 0.9


def test_control_labels_are_consistent_per_type_and_follow_the_label_distribution():
    rng = np.random.default_rng(1)
    types = rng.integers(0, 50, size=5000)
    labels = (rng.random(5000) < 0.2).astype(int)
    ctrl = control_labels(types, labels, seed=0)
    for t in np.unique(types):
        assert len(np.unique(ctrl[types == t])) == 1
    per_type = np.array([ctrl[types == t][0] for t in np.unique(types)])
    assert 0.05 < per_type.mean() < 0.4  # about 20% of the types are labelled 1
    rows = rng.integers(0, 3, size=(30, 4))  # types may be whole input rows
    ctrl_rows = control_labels(rows, np.arange(30) % 2, seed=0)
    for r in np.unique(rows, axis=0):
        same = (rows == r).all(1)
        assert len(np.unique(ctrl_rows[same])) == 1


def test_probes_on_digits_cnn():
    from talkgen.models.samples import load_sample

    s = load_sample("digits-cnn")
    a = get_analysis("probes")
    r = a.run(Context(subject=s, params=a.resolve_params("quick"), seed=0, device=torch.device("cpu"),
                      profile="quick"))
    assert r.data["layers"] == ["input", "conv1", "conv2", "fc1", "fc2"]
    best = r.data["best"]["class"]
    assert best["accuracy"] > 0.9
    # exact inputs as types: a control probe can only memorise, so held-out control accuracy is near chance
    control = r.arrays["acc_linear_control"][0]
    assert control.max() < 0.3
    assert (r.arrays["sel_linear"][0] > 0.5).all()
    # the trained network makes the class more decodable at its last layer than the untrained one
    assert r.arrays["acc_linear"][0, -1] > r.arrays["acc_linear_init"][0, -1] + 0.1


def test_linear_probe_is_trained_to_the_optimum_on_data_without_margin():
    """Overlapping classes (no margin): the probe reaches the same optimum as scikit-learn's
    LogisticRegression with the equivalent penalty (objective and held-out predictions agree); a fixed
    300 Adam steps, the old training, stops short of it."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from talkgen.meta.probes import linear_probe

    rng = np.random.default_rng(0)
    n, d, k = 1500, 40, 4
    centres = rng.normal(size=(k, d)) * 0.35
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(size=(n, d))
    x = (x - x.mean(0)) / x.std(0)
    tr = np.arange(n) < 1000
    wd = 1e-3
    xt, yt = torch.as_tensor(x[tr]), torch.as_tensor(y[tr])
    probe = linear_probe(xt, yt, k, weight_decay=wd)
    sk = LogisticRegression(C=1 / (wd * tr.sum()), tol=1e-10, max_iter=10000).fit(x[tr], y[tr])

    def objective(w, b):
        logits = torch.as_tensor(x[tr]) @ torch.as_tensor(w).T + torch.as_tensor(b)
        return float(torch.nn.functional.cross_entropy(logits, yt) + 0.5 * wd * (torch.as_tensor(w) ** 2).sum())

    ours = objective(probe.weight.detach().numpy(), probe.bias.detach().numpy())
    ref = objective(sk.coef_, sk.intercept_)
    assert abs(ours - ref) < 1e-5, (ours, ref)  # the same optimum to five digits
    with torch.no_grad():
        pred = probe(torch.as_tensor(x[~tr])).argmax(1).numpy()
    assert (pred == sk.predict(x[~tr])).mean() > 0.99
    adam = torch.nn.Linear(d, k).double()
    opt = torch.optim.Adam(adam.parameters(), lr=1e-2, weight_decay=wd)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(adam(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert objective(adam.weight.detach().numpy(), adam.bias.detach().numpy()) > ref + 1e-3
