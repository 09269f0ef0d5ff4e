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
def earlier_build(quick_build, tmp_path):
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
marker, out = sys.argv[1], sys.argv[2]
real = export.render_report
def slow(*a, **k):
    open(marker, "w").close()
    time.sleep(120)
    return real(*a, **k)
export.render_report = slow
from talkgen.cli import main
sys.argv = ["talkgen", "build", "--profile", "quick", "--force", "--out", out]
main()
"""


def test_sigkill_halfway_leaves_previous_outputs_and_next_build_succeeds(earlier_build, tmp_path):
    before = {p: (earlier_build / p).read_bytes() for p in ("report.html", "summary.json")}
    marker = tmp_path / "halfway"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(marker), str(earlier_build)])
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the build never reached the report stage"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # written before the kill: whole new files; not yet written: the previous ones, untouched
    for p, data in before.items():
        assert (earlier_build / p).read_bytes() == data
    import nbformat

    nbformat.validate(nbformat.read(earlier_build / "talk.ipynb", as_version=4))
    assert (earlier_build / "slides.html").read_text().rstrip().endswith("</html>")
    done = run_cli("build", "--profile", "quick", "--out", str(earlier_build))
    assert done.returncode == 0, done.stderr
    assert not list(earlier_build.glob(".*.tmp"))
