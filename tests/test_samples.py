"""The shipped samples reproduce their cards; training is deterministic; checkpoints are kept."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from talkgen.hashing import hash_module, sha256_file
from talkgen.models.samples import SAMPLES, load_checkpoints, load_sample, read_card, train_sample
from talkgen.resources import sample_models_dir

TOLERANCE = {"test_bits_per_char": 0.05}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_shipped_weights_reproduce_the_card(name):
    card = read_card(name)
    spec = SAMPLES[name]
    subject = load_sample(name)
    assert sha256_file(str(sample_models_dir() / card["weights_file"])) == card["weights_sha256"]
    assert hash_module(subject.model) == card["tensor_hash"]
    if name != "python-charlstm":  # its text is this interpreter's Lib/, which differs between versions
        assert subject.data.hash == card["data"]["data_hash"]
    measured = spec.evaluate(subject.model, subject.data)
    for metric, value in card["metrics"].items():
        assert measured[metric] == pytest.approx(value, abs=TOLERANCE.get(metric, 2e-3)), metric
    assert all(spec.meets(measured).values()), measured
    assert all(card["meets_acceptance"].values()) and not card["recipe"]["quick"]
    assert card["training_seconds"] > 0


def test_sample_models_stay_small():
    total = sum(p.stat().st_size for p in sample_models_dir().iterdir() if p.is_file())
    assert total < 20 * 2**20, total


@pytest.mark.parametrize("name,at_least", [("ib-tanh", 50), ("ib-relu", 50), ("python-charlstm", 5)])
def test_checkpoints_are_kept_and_end_at_the_final_weights(name, at_least):
    subject = load_sample(name)
    ckpts = load_checkpoints(name)
    assert len(ckpts) >= at_least and [s for s, _ in ckpts] == list(subject.checkpoints)
    assert ckpts[0][0] == 0
    final = ckpts[-1][1]
    for key, value in subject.model.state_dict().items():
        torch.testing.assert_close(final[key], value.float(), atol=2e-3, rtol=2e-3)
    model = SAMPLES[name].factory()
    model.load_state_dict(ckpts[0][1])  # every checkpoint loads into the architecture


def test_ib_subjects_share_seed_and_recipe():
    tanh, relu = read_card("ib-tanh"), read_card("ib-relu")
    assert tanh["recipe"] == relu["recipe"] and tanh["data"]["data_hash"] == relu["data"]["data_hash"]


def test_trojan_card_records_the_backdoor():
    card = read_card("digits-cnn-trojan")
    assert card["metrics"]["attack_success_rate"] >= 0.95
    assert card["metrics"]["clean_accuracy_drop"] <= 0.02
    assert "trigger" in card["recipe"] and card["recipe"]["target_class"] == 0


@pytest.mark.parametrize("name", list(SAMPLES))
def test_quick_training_is_deterministic(name, tmp_path):
    """Training twice gives the same bytes (the second time without the card's evaluation, which reads the
    weights and cannot change them)."""
    from safetensors.torch import save

    from talkgen.models.samples import train_sample_model

    a = train_sample(name, tmp_path / "a", quick=True)
    again, _, _ = train_sample_model(name, quick=True)
    weights = (tmp_path / "a" / f"{name}.safetensors").read_bytes()
    assert save({k: v.contiguous() for k, v in again.state_dict().items()}) == weights
    assert a["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    card = json.loads((tmp_path / "a" / f"{name}.json").read_text())
    for key in ("data", "recipe", "metrics", "weights_sha256", "training_seconds", "layers"):
        assert key in card
    assert card["recipe"]["quick"] is True


def test_samples_cli_train_quick(tmp_path):
    from conftest import run_cli

    proc = run_cli("samples", "train", "induction-transformer", "--quick", "--out", str(tmp_path), check=True)
    assert "trained induction-transformer" in proc.stdout
    assert (tmp_path / "induction-transformer.safetensors").is_file()
    listing = run_cli("samples", "list", check=True).stdout
    for name in SAMPLES:
        assert name in listing


@pytest.mark.parametrize("threads", [1, 2])
def test_initial_weights_are_those_training_started_from(threads):
    """initial_state() draws the factory's weights under the training seed without switching on
    deterministic mode (which imports torch's compiler stack): the same bytes as training's own start."""
    from talkgen.models.samples import deterministic, initial_state

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for name, spec in SAMPLES.items():
            with deterministic(0, spec.threads):
                expected = {k: v.detach().clone() for k, v in spec.factory().state_dict().items()}
            got = initial_state(name)
            assert got.keys() == expected.keys(), name
            assert all(torch.equal(got[k], expected[k]) for k in got), name
    finally:
        torch.set_num_threads(old)
