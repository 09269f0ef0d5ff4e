"""The shipped samples reproduce their cards; training is deterministic."""

from __future__ import annotations

import json

import pytest

from talkgen.hashing import hash_module, sha256_file
from talkgen.models.samples import SAMPLES, accuracy, load_sample, read_card, train_sample
from talkgen.resources import sample_models_dir


@pytest.mark.parametrize("name", list(SAMPLES))
def test_shipped_weights_reproduce_the_card(name):
    card = read_card(name)
    subject = load_sample(name)
    assert sha256_file(str(sample_models_dir() / card["weights_file"])) == card["weights_sha256"]
    assert hash_module(subject.model) == card["tensor_hash"]
    assert subject.data.hash == card["data"]["data_hash"]
    measured = accuracy(subject.model, subject.data.x_test, subject.data.y_test)
    assert measured == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-4)
    for metric, floor in card["acceptance"].items():
        assert card["metrics"][metric] >= floor
    assert not card["recipe"]["quick"]


def test_digits_cnn_meets_its_bar():
    assert read_card("digits-cnn")["metrics"]["test_accuracy"] >= 0.97


@pytest.mark.parametrize("name", list(SAMPLES))
def test_quick_training_is_deterministic(name, tmp_path):
    a = train_sample(name, tmp_path / "a", quick=True)
    b = train_sample(name, tmp_path / "b", quick=True)
    assert a["weights_sha256"] == b["weights_sha256"]
    assert (tmp_path / "a" / f"{name}.safetensors").read_bytes() == (tmp_path / "b" / f"{name}.safetensors").read_bytes()
    card = json.loads((tmp_path / "a" / f"{name}.json").read_text())
    for key in ("data", "recipe", "metrics", "weights_sha256", "training_seconds"):
        assert key in card
    assert card["recipe"]["quick"] is True


def test_samples_cli_train_quick(tmp_path):
    from conftest import run_cli

    proc = run_cli("samples", "train", "digits-cnn", "--quick", "--out", str(tmp_path), check=True)
    assert "trained digits-cnn" in proc.stdout and (tmp_path / "digits-cnn.safetensors").is_file()
    assert "digits-cnn" in run_cli("samples", "list", check=True).stdout
