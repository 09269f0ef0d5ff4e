"""The weights analysis against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from talkgen.analyses.base import Context
from talkgen.analyses.weights import Weights
from talkgen.subject import Subject
from conftest import tiny_data


def _run(model: nn.Module):
    return _run_params(model, {})


def _run_params(model: nn.Module, params: dict):
    subject = Subject(name="m", model=model, task="image-classifier", data=tiny_data(), source="test")
    a = Weights()
    return a.run(Context(subject=subject, params=a.resolve_params("full", params), seed=0,
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


def test_nan_weights_are_counted_not_a_crash():
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    r = _run(nn.Sequential(lin))
    assert r.summaries["nonfinite_weights"].value == 1
    assert [layer["nonfinite"] for layer in r.data["layers"]] == [1]  # the finding itself is the build's (input)
    assert math.isnan(r.summaries["0.weight.stable_rank"].value)


def test_heatmap_is_subsampled_to_max_side():
    r = _run(nn.Sequential(nn.Linear(300, 200)))
    assert r.arrays["matrix:0.weight"].shape == (128, 128)
    assert r.figures[0].sizes == ((200, 300),)


def test_power_law_fit_recovers_a_known_exponent():
    from talkgen.analyses.spectral import fit_power_law

    rng = np.random.default_rng(0)
    for alpha in (2.5, 4.0):
        samples = (1 - rng.random(4000)) ** (-1 / (alpha - 1))  # Pareto with density ~ x^-alpha
        fit = fit_power_law(samples)
        assert abs(fit.alpha - alpha) < 4 * fit.alpha_stderr + 0.05, (alpha, fit)
        assert fit.ks_distance < 0.05


def test_too_few_eigenvalues_gives_a_reason_not_a_number():
    from talkgen.analyses.spectral import fit_power_law

    fit = fit_power_law(np.array([1.0, 2.0]))
    assert math.isnan(fit.alpha) and "need" in fit.reason
    small = fit_power_law(np.arange(1.0, 6.0))  # five eigenvalues: fitted, its error says how loose
    assert math.isfinite(small.alpha) and small.alpha_stderr > 0


def _real_spectra() -> dict[str, np.ndarray]:
    """Eigenvalues of every weight block of the bundled samples with at least 3 distinct ones."""
    from talkgen.analyses.spectral import esd
    from talkgen.models.introspect import weight_matrices
    from talkgen.models.samples import load_sample

    out = {}
    for sample in ("digits-cnn", "python-charlstm", "induction-transformer", "ib-tanh"):
        for m in weight_matrices(load_sample(sample).model):
            lam = esd(m.matrix.numpy())
            lam = lam[lam > lam.max() * 1e-12]
            if np.unique(lam).size >= 3:
                out[f"{sample}:{m.name}"] = lam
    return out


def test_power_law_fit_matches_the_reference_on_real_weight_matrices():
    """The same xmin, KS distance and MLE alpha as the powerlaw package (1.5, Clauset's method) on the
    sample models' weight blocks, from 3 to 256 eigenvalues; the reported alpha is the MLE with the
    finite-size correction."""
    powerlaw = pytest.importorskip("powerlaw")
    import warnings

    from talkgen.analyses.spectral import fit_power_law

    spectra = _real_spectra()
    assert len(spectra) >= 15
    for name, lam in spectra.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = powerlaw.Fit(lam, verbose=False)
        fit = fit_power_law(lam)
        assert fit.xmin == pytest.approx(ref.xmin, rel=1e-9), name
        assert fit.ks_distance == pytest.approx(ref.D, rel=1e-6), name
        assert fit.alpha_mle == pytest.approx(ref.alpha, rel=1e-6), name
        n = fit.n_tail
        assert n == int(np.sum(lam >= ref.xmin)), name
        assert fit.alpha == pytest.approx(1 + (n - 1) * (fit.alpha_mle - 1) / n), name


def test_finite_size_correction_removes_the_short_tail_bias():
    """On many short Pareto samples (n = 10) the plain MLE overestimates alpha by about alpha/(n-1); the
    corrected estimate is unbiased for alpha - 1."""
    rng = np.random.default_rng(3)
    alpha, n = 3.0, 10
    mle, corrected = [], []
    for _ in range(4000):
        x = (1 - rng.random(n)) ** (-1 / (alpha - 1))
        a_mle = 1 + n / np.log(x).sum()  # xmin = 1 is known here: the MLE's own bias, nothing else
        mle.append(a_mle)
        corrected.append(1 + (n - 1) * (a_mle - 1) / n)
    assert np.mean(mle) - alpha > 0.15
    assert abs(np.mean(corrected) - alpha) < 0.05


def test_planted_heavy_tail_differs_from_its_shuffle():
    rng = np.random.default_rng(1)
    # W = U diag(s) V^T with power-law singular values: a heavy-tailed ESD by construction
    n = 200
    s = (np.arange(1, n + 1) ** -0.8) * 10
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lin = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy((u * s) @ v.T))
    r = _run(nn.Sequential(lin))
    trained, shuffled = r.summaries["0.weight.alpha"].value, r.summaries["0.weight.alpha_shuffled"].value
    assert trained < 3.5 and shuffled > trained + 1.5, (trained, shuffled)
    assert {"esd", "alpha"} <= {f.id for f in r.figures}


def test_lstm_gates_are_split_into_blocks():
    lstm = nn.LSTM(12, 16)
    r = _run(nn.ModuleDict({"lstm": lstm}))
    labels = [f["label"] for f in r.data["fits"]]
    assert "lstm.weight_hh_l0 [forget gate]" in labels and len(labels) == 8


def test_a_large_matrix_is_read_as_it_is_and_widened_piece_by_piece(monkeypatch):
    """A matrix whose float64 copy would pass ``WIDEN_BYTES`` is never copied to float64 whole: its norms, spectrum
    and power-law fits come from float32 pieces widened one at a time, the same numbers to float32's precision;
    its spectral norm by power iteration when its rows are sampled."""
    from talkgen.analyses import spectral, weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 280, bias=False), nn.ReLU(), nn.Linear(280, 260, bias=False))
    whole = _run(model)
    widened = []
    real_asarray = np.asarray

    def watched(a, dtype=None, **kw):
        out = real_asarray(a, dtype=dtype, **kw)
        if dtype is np.float64 and out.ndim == 2:
            widened.append(out.nbytes)
        return out

    monkeypatch.setattr(spectral, "WIDEN_BYTES", 64 * 280 * 8)
    monkeypatch.setattr(weights, "WIDEN_BYTES", 64 * 280 * 8)
    monkeypatch.setattr(spectral.np, "asarray", watched)
    pieces = _run(model)
    monkeypatch.undo()
    assert widened and max(widened) <= 64 * 300 * 8  # pieces of rows, never a whole 280 x 300 matrix
    for name in ("0.weight", "2.weight"):
        np.testing.assert_allclose(pieces.arrays[f"sv:{name}"], whole.arrays[f"sv:{name}"], rtol=1e-6)
        for key in ("frobenius_norm", "spectral_norm", "stable_rank", "alpha", "alpha_shuffled"):
            assert pieces.summaries[f"{name}.{key}"].value == pytest.approx(
                whole.summaries[f"{name}.{key}"].value, rel=1e-5), (name, key)
    # sampled rows: the spectral norm by power iteration on the float32 matrix, to float32's precision
    sampled = _run_params(model, {"max_spectrum_rows": 200})
    assert sampled.summaries["0.weight.spectral_norm"].value == pytest.approx(
        whole.summaries["0.weight.spectral_norm"].value, rel=1e-5)
    monkeypatch.setattr(spectral, "WIDEN_BYTES", 64 * 280 * 8)
    monkeypatch.setattr(weights, "WIDEN_BYTES", 64 * 280 * 8)
    sampled_pieces = _run_params(model, {"max_spectrum_rows": 200})
    assert sampled_pieces.summaries["0.weight.spectral_norm"].value == pytest.approx(
        whole.summaries["0.weight.spectral_norm"].value, rel=1e-5)


def test_the_spectra_figure_of_many_matrices_shows_a_legible_few():
    """A transformer's 76 matrices in one legend did not fit the slide: at most ``max_curves``, evenly spaced from
    the first to the last, the caption says how many of how many, and every matrix's values stay in the result."""
    layers = [nn.Linear(6, 6, bias=False) for _ in range(14)]
    r = _run(nn.Sequential(*layers))
    spectrum = next(f for f in r.figures if f.id == "spectrum")
    assert len(spectrum.labels) == 10 and spectrum.labels[0] == "0.weight" and spectrum.labels[-1] == "13.weight"
    assert "10 of the 14 weight matrices, evenly spaced" in spectrum.caption
    assert all(f"sv:{i}.weight" in r.arrays for i in range(14))
    few = _run(nn.Sequential(*layers[:3]))
    spectrum = next(f for f in few.figures if f.id == "spectrum")
    assert len(spectrum.labels) == 3 and "of each weight matrix" in spectrum.caption
