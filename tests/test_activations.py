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
