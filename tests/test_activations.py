"""activations: separability and dead units against known answers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkgen.analyses.activations import Activations, knn_separability
from talkgen.analyses.base import Context
from talkgen.subject import Subject, SubjectData


def test_perfectly_separated_clusters_score_one_and_noise_scores_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    centres = np.eye(4) * 100
    clusters = centres[labels] + rng.normal(size=(200, 4))
    assert knn_separability(clusters, labels) == 1.0
    noise = rng.normal(size=(200, 4))
    assert abs(knn_separability(noise, labels) - 0.25) < 0.15


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 3)
        self.fc2 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))  # unit 2 is always -1: dead

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_dead_units_and_rising_separability():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 2
    x = torch.randn(120, 2, generator=g) * 0.3 + torch.stack([y * 3.0, -y * 3.0], 1)
    data = SubjectData(x, y, x, y, ("a", "b"), "test")
    subject = Subject(name="two", model=TwoLayer(), task="tabular-classifier", data=data, source="test")
    a = Activations()
    r = a.run(Context(subject=subject, params=a.resolve_params("quick"), seed=0,
                      device=torch.device("cpu"), profile="quick"))
    layers = {l["name"]: l for l in r.data["layers"]}
    assert layers["fc1"]["dead"] == 1 and layers["fc1"]["units"] == 3
    assert r.summaries["fc1.dead_fraction"].value == 1 / 3
    assert r.data["layer_names"] == ["input", "fc1", "fc2"]
    assert r.summaries["input.knn_separability"].value == 1.0
    assert {f.id for f in r.figures} >= {"dead", "separability", "pca", "tsne"}


def test_a_deep_wide_model_is_looked_at_on_evenly_spaced_layers_and_hashed_features(tiny_subject):
    """More layers than max_layers: evenly spaced ones, the first and last kept; outputs wider than max_features
    hashed (distances kept in expectation); both said in the result. A model within both runs as before."""
    import dataclasses

    import numpy as np
    import torch
    from torch import nn

    from talkgen.analyses.activations import evenly_spaced, hashed
    from talkgen.analyses.base import Context, get_analysis

    assert evenly_spaced(tuple("abcdefghij"), 4) == ("a", "d", "g", "j")
    assert evenly_spaced(("a", "b"), 4) == ("a", "b")
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 20000, generator=g)
    h = hashed(f, 2048, 0)
    assert h.shape == (40, 2048)
    assert torch.equal(hashed(f[:, :100], 2048, 0), f[:, :100])  # narrow enough: as it is
    d, dh = torch.cdist(f, f), torch.cdist(h, h)
    off = ~torch.eye(40, dtype=torch.bool)
    ratio = (dh[off] / d[off])
    assert abs(float(ratio.mean()) - 1) < 0.02 and float(ratio.std()) < 0.05  # distances kept within a few %

    torch.manual_seed(0)
    deep = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(),
                         *[m for _ in range(5) for m in (nn.Linear(24, 24), nn.ReLU())], nn.Linear(24, 3))
    subject = dataclasses.replace(tiny_subject, model=deep)
    a = get_analysis("activations")
    params = a.resolve_params("quick", {"max_layers": 3, "max_features": 16, "tsne_layers": 0})
    r = a.run(Context(subject=subject, params=params, seed=0, device=torch.device("cpu"), profile="quick"))
    assert [l["name"] for l in r.data["layers"]] == ["1", "7", "13"]
    # the two hidden layers are 24 wide (over 16); the input is 16, the logits 3
    assert r.data["sampled"].startswith("3 of 7 layers, evenly spaced; 2 of 4 representations (the input and each "
                                        "layer's output) hashed to 16 features")
    whole = a.run(Context(subject=tiny_subject, params=a.resolve_params("quick", {"tsne_layers": 0}), seed=0,
                          device=torch.device("cpu"), profile="quick"))
    assert "sampled" not in whole.data and np.isfinite(whole.data["separability"]).all()
