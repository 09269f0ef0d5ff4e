"""The weights analysis against known answers."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Context
from talkgen.analyses.weights import Weights
from talkgen.subject import Subject
from conftest import tiny_data


def _run(model: nn.Module):
    subject = Subject(name="m", model=model, task="image-classifier", data=tiny_data(), source="test")
    a = Weights()
    return a.run(Context(subject=subject, params=a.resolve_params("full"), seed=0,
                         device=torch.device("cpu"), profile="full"))


def test_planted_spectrum_and_stable_rank():
    rng = np.random.default_rng(0)
    s = np.array([5.0, 3.0, 1.0, 0.5])
    u, _ = np.linalg.qr(rng.normal(size=(6, 4)))
    v, _ = np.linalg.qr(rng.normal(size=(7, 4)))
    w = (u * s) @ v.T  # (6, 7) with singular values s
    lin = nn.Linear(7, 6, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
    r = _run(nn.Sequential(lin))
    np.testing.assert_allclose(r.arrays["sv:0.weight"][:4], s, rtol=1e-5)
    assert r.arrays["sv:0.weight"][4:].max(initial=0) < 1e-5
    assert math.isclose(r.summaries["0.weight.stable_rank"].value, (s**2).sum() / 25, rel_tol=1e-5)
    assert math.isclose(r.summaries["0.weight.spectral_norm"].value, 5.0, rel_tol=1e-5)
    assert math.isclose(r.summaries["0.weight.frobenius_norm"].value, math.sqrt((s**2).sum()), rel_tol=1e-5)


def test_conv_kernels_are_unfolded_and_first_filters_shown():
    conv = nn.Conv2d(1, 4, 3)
    r = _run(nn.Sequential(conv, nn.Flatten(), nn.Linear(4, 2)))
    layers = {l["name"]: l for l in r.data["layers"]}
    assert layers["0.weight"]["matrix_shape"] == [4, 9]
    assert r.arrays["filters"].shape == (4, 3, 3)
    assert {f.id for f in r.figures} == {"matrices", "filters", "spectrum"}


def test_nan_weights_are_a_high_finding_not_a_crash():
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    r = _run(nn.Sequential(lin))
    assert r.summaries["nonfinite_weights"].value == 1
    assert r.findings[0].severity == "high"
    assert math.isnan(r.summaries["0.weight.stable_rank"].value)


def test_heatmap_is_subsampled_to_max_side():
    r = _run(nn.Sequential(nn.Linear(300, 200)))
    assert r.arrays["matrix:0.weight"].shape == (128, 128)
    assert r.figures[0].sizes == ((200, 300),)
