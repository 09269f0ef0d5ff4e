"""What a newcomer meets at the command line: progress in logs, helpful errors, sensible defaults."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import click
import pytest

from conftest import run_cli


def _talk(d, analyses=("model-card", "weights")) -> str:
    cfg = d / "talk.toml"
    cfg.write_text('[[subjects]]\nname = "net"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
                   'data = "data.npz"\n[analyses]\nonly = [' + ", ".join(f'"{a}"' for a in analyses) + "]\n")
    return str(cfg)


def test_progress_lines_reach_a_log_file(user_model_dir, tmp_path):
    """stderr to a file (not a terminal): one line per analysis started and finished, with done/total."""
    log = tmp_path / "build.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "talkgen", "build", "--config", _talk(user_model_dir),
                               "--out", str(tmp_path / "out")], stderr=err, stdout=subprocess.PIPE, text=True,
                              timeout=1800)
    assert proc.returncode == 0, log.read_text()
    text = log.read_text()
    started = re.findall(r"\[(\d+)/(\d+)\] (\S+) on net: started", text)
    finished = re.findall(r"\[(\d+)/(\d+)\] (\S+) on net: ok in [\d.]+ s; elapsed \d+:\d\d, about", text)
    assert [a for _, _, a in started] == ["model-card", "weights"], text
    assert [(d, t) for d, t, _ in finished] == [("1", "2"), ("2", "2")], text
    quiet = run_cli("build", "--config", _talk(user_model_dir), "--out", str(tmp_path / "out"), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_the_end_of_a_build_groups_skipped_analyses_by_reason(user_model_dir, tmp_path):
    proc = run_cli("build", "--config", _talk(user_model_dir, ("model-card", "rnn-cells", "attention")),
                   "--out", str(tmp_path / "out"), check=True)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if "skipped (" in ln]
    assert len(lines) == 2, proc.stdout
    assert all(re.match(r"1 skipped \((rnn-cells|attention)\): .+ \(1 model: net\)$", ln) for ln in lines), lines
    assert "costliest: model-card on net" in proc.stdout


def test_help_is_fast_to_reach_and_every_option_has_help():
    from talkgen.cli import cli

    def walk(command, path):
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])

    walk(cli, ["talkgen"])
    code = ("import sys, talkgen.cli; heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'nbconvert') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing the CLI loads {out.strip()}"


def test_init_writes_the_built_in_talk(tmp_path):
    from talkgen.config import default_config, load_config
    from talkgen.models.samples import SAMPLES

    proc = run_cli("init", cwd=tmp_path, check=True)
    written = load_config(tmp_path / "talk.toml")
    assert [s.sample for s in written.subjects] == [s.sample for s in default_config().subjects] == list(SAMPLES)
    assert all(name in proc.stdout for name in SAMPLES)


def test_a_mistyped_sample_name_suggests_the_closest(tmp_path):
    proc = run_cli("audit", "digits_cnn", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "did you mean digits-cnn" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_audit_writes_beside_the_talk_not_over_it(tmp_path):
    """`talkgen audit NAME` goes to build/audit-NAME by default, so a talk in build/ keeps its slides."""
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / ".talkgen").write_text("")
    (tmp_path / "build" / "slides.html").write_text("the talk")
    proc = run_cli("audit", "digits-cnn", "--only", "model-card", cwd=tmp_path, check=True)
    assert (tmp_path / "build" / "audit-digits-cnn" / "report.html").is_file(), proc.stdout
    assert (tmp_path / "build" / "slides.html").read_text() == "the talk"


@pytest.mark.parametrize("value,text", [(-0.0, "0"), (-1e-9, "0%"), (-0.0004, "-4.00e-04"), (0.25, "25.0%")])
def test_numbers_never_print_as_negative_zero(value, text):
    from talkgen.render.commentary import fmt, pct
    from talkgen.render.text import number

    shown = pct(value) if text.endswith("%") else fmt(value)
    if text == "0%":
        shown = pct(value, 0)
    assert shown == text
    assert number(-1e-12, 3) == "-1e-12" and number(-0.0) == "0"


def test_samples_list_prints_no_negative_zero():
    proc = run_cli("samples", "list", check=True)
    assert not re.search(r"(?<![\d.e])-0(?![.\d]*[1-9])", proc.stdout), proc.stdout


_TORCH_AFTER = """
import json, sys
from talkgen.cli import cli
code = None
try:
    cli(sys.argv[1:], prog_name="talkgen")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def test_what_the_analyses_declare_is_known_without_torch(tmp_path):
    """talkgen.analyses.index: the first process imports the analyses and writes what they declare to the
    cache folder; later ones check a talk.toml's analyses and parameters, --only, and list the analyses and
    the beats without importing torch, with the same answers as the registry."""
    import json
    import os

    from talkgen.analyses.base import registry
    from talkgen.analyses.index import Declared, declared

    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "bad.toml").write_text("[analyses.params.weights]\nmax_side = 0\n")

    def talkgen(*args):
        proc = subprocess.run([sys.executable, "-c", _TORCH_AFTER, *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    first, _ = talkgen("analyses")
    assert first == {"code": 0, "torch": True}  # nothing declared yet: the registry is imported once
    written = list((tmp_path / "cache" / "talkgen").glob("analyses-*.json"))
    assert len(written) == 1
    for args, needle in ((["build", "--only", "weights,saliensy", "--out", "o"], "unknown analysis 'saliensy'"),
                         (["build", "--config", "bad.toml", "--out", "o"], "must be at least 1"),
                         (["audit", "digits-cnn", "--skip", "nope", "--out", "o"], "unknown analysis 'nope'")):
        result, stderr = talkgen(*args)
        assert result == {"code": 2, "torch": False}, (args, result, stderr)
        assert needle in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "o").exists()
    for args in (["analyses"], ["beats"]):
        assert talkgen(*args)[0] == {"code": 0, "torch": False}
    assert declared() == {name: Declared.of(cls) for name, cls in registry().items()}  # this process: the registry
    on_file = json.loads(written[0].read_text())["analyses"]
    assert [Declared(**d) for d in on_file] == list(declared().values())
