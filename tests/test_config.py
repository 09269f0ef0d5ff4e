"""talk.toml parsing and validation."""

from __future__ import annotations

import pytest

from talkgen.config import default_config, load_config
from talkgen.errors import TalkgenError


def test_full_config(tmp_path):
    (tmp_path / "talk.toml").write_text(
        'title = "T"\nspeaker = "S"\nprofile = "full"\nseed = 3\nformats = ["slides"]\n'
        '[[subjects]]\nname = "mine"\nmodel = "models.py:make"\nweights = "w.safetensors"\ndata = "digits"\n'
        '[analyses]\nskip = ["model-card"]\n[analyses.params.weights]\nmax_side = 9\n')
    c = load_config(tmp_path / "talk.toml")
    assert (c.title, c.speaker, c.profile, c.seed, c.formats) == ("T", "S", "full", 3, ("slides",))
    s = c.subjects[0]
    assert s.model == f"{tmp_path}/models.py:make" and s.weights == f"{tmp_path}/w.safetensors"
    assert s.data == "digits"
    assert c.skip == ("model-card",) and c.params == {"weights": {"max_side": 9}}


def test_default_talk_uses_every_sample():
    from talkgen.models.samples import SAMPLES

    assert [s.sample for s in default_config().subjects] == list(SAMPLES)


@pytest.mark.parametrize("text,match", [
    ("[[subjects]]\nname = 'a'\n", "exactly one of 'sample'"),
    ("[[subjects]]\nname = 'a'\nsample = 'x'\n", "unknown sample 'x'"),
    ("[[subjects]]\nname = 'a'\nmodel = 'm.py:f'\n", r"subjects\[0\].data: is required"),
    ("[[subjects]]\nname = 'a'\nsample = 'digits-cnn'\n[[subjects]]\nname = 'a'\nsample = 'digits-cnn'\n", "duplicate"),
    ("formats = ['docx']\n", "formats: unknown value 'docx'"),
    ("subjects = 3\n", "subjects: must be an array"),
])
def test_errors_name_the_key(tmp_path, text, match):
    (tmp_path / "talk.toml").write_text(text)
    with pytest.raises(TalkgenError, match=match):
        load_config(tmp_path / "talk.toml")


def test_missing_config_file(tmp_path):
    with pytest.raises(TalkgenError, match="config file not found"):
        load_config(tmp_path / "none.toml")


def test_layers_key_reaches_the_subject_and_is_checked(user_model_dir):
    from talkgen.build import load_subject

    (user_model_dir / "talk.toml").write_text(
        '[[subjects]]\nname = "n"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
        'data = "data.npz"\nlayers = ["fc"]\n')
    config = load_config(user_model_dir / "talk.toml")
    assert load_subject(config.subjects[0]).layers == ("fc",)
    (user_model_dir / "talk.toml").write_text(
        '[[subjects]]\nname = "n"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
        'data = "data.npz"\nlayers = ["fc9"]\n')
    with pytest.raises(TalkgenError, match="no layer 'fc9'.*conv, fc"):
        load_subject(load_config(user_model_dir / "talk.toml").subjects[0])
