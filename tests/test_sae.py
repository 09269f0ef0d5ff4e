"""The TopK sparse autoencoder (talkgen.meta.sae) and the sparse-features analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkgen.meta.sae import (SAEConfig, TopKSAE, _aux_loss, evaluate_sae, load_sae, sae_state, sparse_auroc,
                              sparse_codes, sparse_pearson, top_contexts, train_sae)


def planted_dictionary(d=32, atoms=64, n=24_000, active=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(atoms, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    idx = torch.rand(n, atoms, generator=g).argsort(1)[:, :active]
    coef = torch.rand(n, active, generator=g) * 2 + 0.5
    return torch.zeros(n, atoms).scatter_(1, idx, coef) @ D, D


def test_recovers_a_planted_sparse_dictionary():
    x, D = planted_dictionary()
    sae, log = train_sae(x[:20_000], SAEConfig(n_features=128, k=4, epochs=6, batch_size=512, dead_after=20_000))
    cos = (D @ sae.W_dec.detach().T).max(1).values       # each true atom's best match among the features
    assert float(cos.mean()) >= 0.9, float(cos.mean())
    met = evaluate_sae(sae, x[20_000:])
    assert met.explained_variance > 0.8
    assert met.l0 <= 4
    assert log.steps == 6 * (20_000 // 512)
    # decoder rows stay unit norm
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)


def test_a_random_dictionary_is_far_from_the_planted_one():
    """The recovery bar is not met by chance: untrained features do not match the atoms."""
    _, D = planted_dictionary()
    torch.manual_seed(1)
    sae = TopKSAE(32, 128, 4)
    assert float((D @ sae.W_dec.detach().T).max(1).values.mean()) < 0.7


def test_sparse_decode_equals_dense_and_codes_are_topk():
    torch.manual_seed(0)
    sae = TopKSAE(12, 40, 5)
    sae.scale.fill_(2.5)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(30, 12)
    dense = sae.dense_codes(x)
    assert ((dense > 0).sum(1) <= 5).all()
    ref = (dense @ sae.W_dec + sae.b_dec) * sae.scale
    assert torch.allclose(sae(x), ref, atol=1e-5)
    pre = sae.pre_activations(x)
    kth = pre.topk(5, dim=1).values[:, -1:]
    assert ((dense > 0) <= (pre >= kth)).all()           # only top-k pre-activations are ever active


def test_decoder_gradient_projection_keeps_norms():
    torch.manual_seed(0)
    sae = TopKSAE(8, 16, 2)
    sae.W_dec.grad = torch.randn(16, 8)
    sae.project_decoder_grad()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(16), atol=1e-6)


def test_aux_loss_reaches_only_dead_features():
    torch.manual_seed(0)
    sae = TopKSAE(8, 16, 2)
    x = torch.randn(64, 8)
    pre = sae.pre_activations(x)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:4] = True
    residual = torch.randn(64, 8)
    _aux_loss(sae, pre, residual, dead, k_aux=2).backward()
    grad = sae.W_enc.grad.abs().sum(1)
    assert (grad[:4] > 0).any() and (grad[4:] == 0).all()
    assert float(_aux_loss(sae, pre, residual, torch.zeros(16, dtype=torch.bool), 2)) == 0.0


def test_sparse_scores_match_dense_ones():
    from sklearn.metrics import roc_auc_score

    from talkgen.stats import pearson

    torch.manual_seed(0)
    sae = TopKSAE(10, 24, 3)
    x = torch.randn(400, 10)
    v, i = (t.numpy() for t in sparse_codes(sae, x))
    dense = sae.dense_codes(x).detach().numpy()
    pos = x[:, 0].numpy() > 0.3
    graded = x[:, 1].numpy() * 3 + np.arange(400) % 5
    auc = sparse_auroc(v, i, pos, 24)
    r = sparse_pearson(v, i, graded, 24)
    for f in range(24):
        expected = roc_auc_score(pos, dense[:, f]) if dense[:, f].any() else 0.5
        assert auc[f] == pytest.approx(expected, abs=1e-9)
    assert np.allclose(r, np.nan_to_num(pearson(dense, graded)), atol=1e-9)


def test_top_contexts_are_the_strongest_and_apart():
    values = np.array([[0.1, 0.0], [0.9, 0.0], [0.8, 0.0], [0.0, 0.0], [0.5, 0.0]], dtype=np.float32)
    indices = np.array([[3, 1], [3, 1], [3, 1], [0, 1], [3, 1]])
    assert top_contexts(values, indices, 3, 2, min_gap=2) == [(1, pytest.approx(0.9)), (4, pytest.approx(0.5))]
    assert top_contexts(values, indices, 7, 2, min_gap=1) == []


def test_bad_activations_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        train_sae(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), SAEConfig(n_features=4, k=1))
    with pytest.raises(ValueError, match="shaped"):
        train_sae(torch.zeros(5), SAEConfig())
    with pytest.raises(ValueError, match="k must be"):
        TopKSAE(4, 3, 5)


def test_saved_autoencoder_loads_back(tmp_path):
    from safetensors.torch import save_file

    x, _ = planted_dictionary(n=2000)
    sae, _ = train_sae(x, SAEConfig(n_features=32, k=3, epochs=1, batch_size=256))
    tensors, meta = sae_state(sae, SAEConfig(n_features=32, k=3))
    save_file(tensors, str(tmp_path / "sae.safetensors"), metadata=meta)
    again = load_sae(str(tmp_path / "sae.safetensors"))
    assert torch.equal(again(x[:50]), sae(x[:50]))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a talkgen sparse autoencoder"):
        load_sae(str(tmp_path / "other.safetensors"))


# --------------------------------------------------------------------------- the analysis


def _char_subject():
    from talkgen.models.architectures import CharLSTM
    from conftest import tiny_char_subject

    torch.manual_seed(0)
    return tiny_char_subject(CharLSTM(hidden=16), window=32)


def test_recurrent_replay_matches_the_model():
    from talkgen.analyses.sparse_features import Site, _lstm_feeding, recurrent_splice_loss

    s = _char_subject()
    site = Site(s.model, "")
    assert site.name == "decoder" and site.where == "input"
    name, lstm = _lstm_feeding(s.model, site)
    x, y = s.data.x_test, s.data.y_test
    clean = site.loss(s.model, x, y, 8)
    assert recurrent_splice_loss(s.model, name, lstm, site, x, y, None, 8) == pytest.approx(clean, rel=1e-5)
    identity = recurrent_splice_loss(s.model, name, lstm, site, x, y, lambda h: h.clone(), 8)
    assert identity == pytest.approx(clean, rel=1e-5)
    zero = recurrent_splice_loss(s.model, name, lstm, site, x, y, torch.zeros_like, 8)
    bias_only = torch.nn.functional.cross_entropy(s.model.decoder.bias.detach().expand(y.numel(), -1), y.flatten())
    assert zero == pytest.approx(float(bias_only), rel=1e-5)             # a zeroed h leaves the decoder's bias


def test_sparse_features_on_a_char_model():
    from talkgen.analyses.base import Context
    from talkgen.analyses.sparse_features import SparseFeatures

    s = _char_subject()
    a = SparseFeatures()
    assert a.applies_to(s) is True
    params = a.resolve_params("quick", {"n_train": 2000, "n_eval": 1000, "min_steps": 40, "batch_size": 256})
    r = a.run(Context(subject=s, params=params, seed=0, device=torch.device("cpu"), profile="quick"))
    for key in ("explained_variance", "l0", "dead_fraction", "loss_recovered", "labels_feature_wins"):
        assert np.isfinite(r.summaries[key].value), key
    assert r.summaries["l0"].value <= r.data["k"]
    assert set(r.data["splice"]) == {"output", "recurrent"} and r.data["headline"] == "recurrent"
    for part in r.data["splice"].values():
        assert part["recovered"] == pytest.approx((part["zero"] - part["splice"]) / (part["zero"] - part["clean"]))
    assert r.summaries["loss_recovered"].value == r.data["splice"]["recurrent"]["recovered"]
    assert set(r.data["scores"]) >= {"in_string", "bracket_depth"}
    texts = [f for f in r.figures if f.kind == "coloured_text"]
    assert texts, "no feature dashboard"
    for f in texts:
        assert len(r.arrays[f.values]) == len(f.text)
    assert any(t.id == "labels" for t in r.tables)
    exported = [k for k in r.arrays if k.startswith(r.data["export"]["prefix"])]
    assert {"sae.W_enc", "sae.W_dec", "sae.b_enc", "sae.b_dec", "sae.scale"} <= set(exported)


def test_sparse_features_reads_a_named_layer(tiny_subject):
    from talkgen.analyses.base import Context
    from talkgen.analyses.sparse_features import Site, SparseFeatures

    a = SparseFeatures()
    params = a.resolve_params("quick", {"layer": "conv", "min_steps": 20})
    r = a.run(Context(subject=tiny_subject, params=params, seed=0, device=torch.device("cpu"), profile="quick"))
    assert r.data["site"] == "the output of conv" and r.data["d"] == 3     # one vector per pixel of 3 channels
    with pytest.raises(ValueError, match="no module named"):
        Site(tiny_subject.model, "nope")


def test_narrow_layers_do_not_apply():
    from talkgen.analyses.sparse_features import SparseFeatures
    from conftest import tiny_char_subject

    assert "at least" in SparseFeatures().applies_to(tiny_char_subject())
