"""Bad input: one clear line on stderr, exit status 2, nothing lost (earlier build and cache intact)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TinyCNN, run_cli


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def earlier_build(small_build, tmp_path):
    """A copy of an earlier, complete build (outputs and cache) that the bad input must leave as it was."""
    import shutil

    out = tmp_path / "build"
    shutil.copytree(small_build, out)
    return out


@pytest.fixture
def earlier_talk(quick_build, tmp_path):
    """A copy of the built-in talk's quick build: long enough to render that a kill lands halfway."""
    import shutil

    out = tmp_path / "build"
    shutil.copytree(quick_build, out)
    return out


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("talkgen: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in proc.stderr


def test_missing_model_file(earlier_build, tmp_path):
    digest = _tree_digest(earlier_build)
    proc = run_cli("audit", str(tmp_path / "nope.pt"), "--out", str(earlier_build))
    _assert_one_line_error(proc, "model file not found", "nope.pt")
    assert _tree_digest(earlier_build) == digest


def test_bad_factory(earlier_build, user_model_dir):
    digest = _tree_digest(earlier_build)
    proc = run_cli("audit", f"{user_model_dir}/models.py:no_such", "--data", f"{user_model_dir}/data.npz",
                   "--out", str(earlier_build))
    _assert_one_line_error(proc, "no callable 'no_such'", "make_model")
    proc = run_cli("audit", f"{user_model_dir}/missing.py:f", "--data", f"{user_model_dir}/data.npz",
                   "--out", str(earlier_build))
    _assert_one_line_error(proc, "model file not found")
    assert _tree_digest(earlier_build) == digest


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(earlier_build, user_model_dir, tmp_path):
    digest = _tree_digest(earlier_build)
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"conv.weight": _Evil(str(target))}, evil)
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights", str(evil),
                   "--data", f"{user_model_dir}/data.npz", "--out", str(earlier_build))
    _assert_one_line_error(proc, "evil.pt", "refused", "safetensors")
    assert not target.exists()
    # the same file given as a model (not TorchScript) is refused too
    raw = tmp_path / "evil.pkl.pt"
    raw.write_bytes(pickle.dumps(_Evil(str(target))))
    proc = run_cli("audit", str(raw), "--data", f"{user_model_dir}/data.npz", "--out", str(earlier_build))
    assert proc.returncode == 2 and not target.exists()
    assert _tree_digest(earlier_build) == digest


def test_weight_shapes_that_do_not_match(earlier_build, user_model_dir):
    state = TinyCNN().state_dict()
    state["fc.weight"] = torch.zeros(5, 48)
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(user_model_dir / "bad.safetensors"))
    digest = _tree_digest(earlier_build)
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                   str(user_model_dir / "bad.safetensors"), "--data", f"{user_model_dir}/data.npz",
                   "--out", str(earlier_build))
    _assert_one_line_error(proc, "missing: fc.bias", "unexpected: extra.weight",
                           "fc.weight file (5, 48) vs model (3, 48)")
    assert _tree_digest(earlier_build) == digest


def test_unknown_analysis_name_lists_valid_ones(earlier_build):
    digest = _tree_digest(earlier_build)
    proc = run_cli("build", "--only", "weights,saliensy", "--out", str(earlier_build))
    _assert_one_line_error(proc, "'saliensy'", "valid names:", "weights", "model-card")
    assert _tree_digest(earlier_build) == digest


@pytest.mark.parametrize("text,needles", [
    ('title = "x\n', ["invalid TOML"]),
    ("profile = 'fast'\n", ["profile", "quick, full"]),
    ("[[subjects]]\nname = 'a'\nsample = 'digits-cnn'\ncolour = 1\n", ["subjects[0].colour", "unknown key"]),
    ("[analyses]\nonly = ['nope']\n", ["analyses.only", "'nope'"]),
    ("[analyses.params.weights]\nmax_sidez = 3\n", ["analyses.params.weights.max_sidez"]),
    ("seed = -1\n", ["seed"]),
    ("[talk]\nhide = ['curvatur']\n", ["talk.hide", "'curvatur'", "unknown beat"]),
    ("[talk.slides.no-such-slide]\ntitle = 'x'\n", ["talk.slides.no-such-slide", "no main-line slide"]),
])
def test_malformed_talk_toml(earlier_build, tmp_path, text, needles):
    toml = tmp_path / "talk.toml"
    toml.write_text(text)
    digest = _tree_digest(earlier_build)
    proc = run_cli("build", "--config", str(toml), "--out", str(earlier_build))
    _assert_one_line_error(proc, str(toml), *needles)
    assert _tree_digest(earlier_build) == digest


def test_data_with_wrong_input_shape(earlier_build, user_model_dir, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((10, 3, 9, 9), np.float32), y=np.zeros(10, np.int64))
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                   f"{user_model_dir}/weights.safetensors", "--data", str(tmp_path / "wrong.npz"),
                   "--out", str(earlier_build))
    _assert_one_line_error(proc, "cannot take the data's inputs of shape (2, 3, 9, 9)")


def test_nan_weights_build_completes_and_report_flags_them(user_model_dir, tmp_path):
    state = TinyCNN().state_dict()
    state["fc.weight"][0, :5] = float("nan")
    save_file(state, str(user_model_dir / "nan.safetensors"))
    out = tmp_path / "out"
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                   str(user_model_dir / "nan.safetensors"), "--data", f"{user_model_dir}/data.npz",
                   "--out", str(out))
    assert proc.returncode == 2
    assert "5 NaN/inf weights in fc.weight" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["findings"][0]["severity"] == "high" and "fc.weight" in summary["findings"][0]["title"]
    report = (out / "report.html").read_text()
    assert "non-finite weights in fc.weight" in report


KILL_SCRIPT = r"""
import sys, time
import talkgen.render.export as export
marker, out, config = sys.argv[1], sys.argv[2], sys.argv[3]
real = export.render_report
def slow(*a, **k):
    open(marker, "w").close()
    time.sleep(120)
    return real(*a, **k)
export.render_report = slow
from talkgen.cli import main
sys.argv = ["talkgen", "build", "--config", config, "--out", out]
main()
"""


def test_sigkill_while_rendering_leaves_every_earlier_output_and_next_build_succeeds(earlier_talk, tmp_path):
    """A new title re-renders from the cache; the build is killed while writing its outputs. Every output
    of the earlier build is as it was (they are swapped in together), and the next build completes."""
    before = {p.name: p.read_bytes() for p in earlier_talk.iterdir() if p.is_file() and not p.name.startswith(".")}
    figures = sorted(p.name for p in (earlier_talk / "figures").iterdir())
    config = tmp_path / "talk.toml"
    config.write_text('title = "A retitled talk"\n')
    marker = tmp_path / "halfway"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(marker), str(earlier_talk), str(config)])
    try:
        deadline = time.time() + 600  # generous: a loaded machine; the child is killed whatever happens
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the build never reached the report stage"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    after = {p.name: p.read_bytes() for p in earlier_talk.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    assert sorted(p.name for p in (earlier_talk / "figures").iterdir()) == figures
    done = run_cli("build", "--config", str(config), "--out", str(earlier_talk))
    assert done.returncode == 0, done.stderr
    assert "A retitled talk" in (earlier_talk / "slides.html").read_text()
    assert not list(earlier_talk.glob(".*.tmp")) and not list(earlier_talk.glob(".staging-*"))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("case", ["x of strings", "empty file", "label of 10^9"])
def test_bad_data_is_one_line_and_touches_nothing(earlier_build, user_model_dir, tmp_path, case):
    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    if case == "x of strings":
        data, needle = _npz(tmp_path / "d.npz", x=np.array([["a"] * 16] * 12), y=np.arange(12) % 3), "'x' must be numeric"
    elif case == "empty file":
        (tmp_path / "d.npz").write_bytes(b"")
        data, needle = str(tmp_path / "d.npz"), "not a readable .npz"
    else:
        data, needle = _npz(tmp_path / "d.npz", x=x, y=np.array([0] * 11 + [10**9])), "1,000,000,001 classes"
    digest = _tree_digest(earlier_build)
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                   f"{user_model_dir}/weights.safetensors", "--data", data, "--out", str(earlier_build))
    _assert_one_line_error(proc, needle)
    assert _tree_digest(earlier_build) == digest


@pytest.mark.parametrize("y,x_change,needle", [
    ([-1] + [0] * 11, None, "negative label -1"),
    ([0.5] * 12, None, "non-integer labels"),
    (None, "complex", "complex"),
    (None, "nan", "NaN or infinite"),
    (None, "empty", "empty"),
])
def test_labels_and_inputs_are_validated(tmp_path, y, x_change, needle):
    from talkgen.data import load_user_data
    from talkgen.errors import TalkgenError

    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    y = np.array(y) if y is not None else np.arange(12) % 3
    if x_change == "complex":
        x = x.astype(np.complex64)
    elif x_change == "nan":
        x[3, 0, 1, 1] = np.nan
    elif x_change == "empty":
        x, y = x[:0], y[:0]
    with pytest.raises(TalkgenError, match=needle):
        load_user_data(_npz(tmp_path / "d.npz", x=x, y=y))


def test_integer_valued_float_labels_are_accepted(tmp_path):
    from talkgen.data import load_user_data

    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    d = load_user_data(_npz(tmp_path / "d.npz", x=x, y=(np.arange(12) % 3).astype(np.float64)))
    assert d.classes == ("0", "1", "2") and d.y_test.dtype == torch.int64


@pytest.mark.parametrize("value,needle", [
    ("-1", "at least 1"), ('"x"', "must be an integer"), ("nan", "must be an integer"),
    ("inf", "must be an integer"), ("{ a = 1 }", "must be an integer"), ("0", "at least 1"),
])
def test_analysis_parameters_are_checked_against_their_declared_type_and_range(earlier_build, tmp_path, value, needle):
    toml = tmp_path / "talk.toml"
    toml.write_text(f"[analyses.params.weights]\nmax_panels = {value}\n")
    from talkgen.config import load_config
    from talkgen.errors import TalkgenError

    with pytest.raises(TalkgenError, match=needle):
        load_config(toml)
    if value in ("0", "nan"):  # the CLI path, end to end
        digest = _tree_digest(earlier_build)
        proc = run_cli("build", "--config", str(toml), "--out", str(earlier_build))
        _assert_one_line_error(proc, "analyses.params.weights.max_panels", needle)
        assert _tree_digest(earlier_build) == digest


def test_float_parameters_refuse_nan_and_accept_numbers():
    from talkgen.analyses.base import get_analysis

    saliency = type(get_analysis("saliency"))
    assert "finite" in saliency.param_problem("smooth_noise", float("nan"))
    assert saliency.param_problem("smooth_noise", 0.2) is None
    assert saliency.param_problem("smooth_noise", 1) is None
    assert "at most 1" in saliency.param_problem("cascade_threshold", 1.5)
    assert "[low, high]" in type(get_analysis("model-zoo")).param_problem("zoo_steps", [300, 30])


def test_a_talk_toml_that_is_not_utf8(earlier_build, tmp_path):
    toml = tmp_path / "talk.toml"
    toml.write_bytes(b'title = "caf\xe9"\n')
    digest = _tree_digest(earlier_build)
    proc = run_cli("build", "--config", str(toml), "--out", str(earlier_build))
    _assert_one_line_error(proc, "not UTF-8")
    assert _tree_digest(earlier_build) == digest


def test_an_unknown_device_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "never"
    proc = run_cli("build", "--device", "banana", "--only", "weights", "--out", str(out))
    _assert_one_line_error(proc, "'banana' is not a torch device")
    assert not out.exists()
    proc = run_cli("audit", "digits-cnn", "--device", "cuda:7", "--out", str(out))
    assert proc.returncode == 2 and not out.exists()


def test_a_figure_that_cannot_be_drawn_becomes_an_error_slide(user_model_dir, tmp_path, monkeypatch):
    from talkgen.build import build
    from talkgen.config import SubjectConfig, TalkConfig
    from talkgen.render import figures

    def broken(spec, arrays, theme="light"):
        if spec.kind == "bars":
            raise ValueError("cannot draw this")
        return real(spec, arrays, theme)

    real = figures.draw
    monkeypatch.setattr(figures, "draw", broken)
    d = user_model_dir
    config = TalkConfig(subjects=(SubjectConfig(name="net", model=f"{d}/models.py:make_model",
                                                weights=f"{d}/weights.safetensors", data=f"{d}/data.npz"),),
                        only=("model-card",))
    report = build(config, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("could not be drawn" in f["title"] and "cannot draw this" in f["detail"] for f in summary["findings"])
    assert "cannot draw this" in (tmp_path / "out" / "slides.html").read_text()
    assert report.exit_code == 0
