"""The output folder: only talkgen's own folders are written or emptied, builds on one folder take
turns, and a build's outputs replace the earlier ones together (or not at all)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import run_cli
from talkgen import outdir
from talkgen.errors import TalkgenError


def _one_line_exit_2(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("talkgen: error:") and needle in lines[0], proc.stderr


def test_clean_and_build_refuse_a_folder_talkgen_did_not_make(tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    (foreign / "figures").mkdir()
    (foreign / "figures" / "01-plot.png").write_bytes(b"mine")
    (foreign / ".draft.tmp").write_text("mine too")
    _one_line_exit_2(run_cli("clean", "--out", str(foreign)), "did not make")
    _one_line_exit_2(run_cli("build", "--only", "model-card", "--out", str(foreign)), "did not make")
    assert (foreign / "chapter1.tex").read_text() == "precious"
    assert (foreign / "figures" / "01-plot.png").read_bytes() == b"mine"
    assert (foreign / ".draft.tmp").read_text() == "mine too"
    assert sorted(p.name for p in foreign.iterdir()) == [".draft.tmp", "chapter1.tex", "figures"]


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """talkgen's own cache folder for these runs (what the analyses declare, talkgen.analyses.index), made once."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.mark.parametrize("where", ["/", ".", "..", "~"])
def test_root_home_and_working_folder_are_refused_outright(where, tmp_path, own_cache):
    work = tmp_path / "work"
    work.mkdir()
    (work / outdir.MARKER).write_text("even with a marker")
    # talkgen's own cache folder is elsewhere, as XDG_CACHE_HOME says: the refused folder is the home folder
    # itself in the "~" case
    env = os.environ | {"XDG_CACHE_HOME": str(own_cache),
                        "HOME": str(work) if where == "~" else str(tmp_path / "home")}
    for command in (["clean", "--out", where], ["build", "--only", "model-card", "--out", where]):
        proc = subprocess.run([sys.executable, "-m", "talkgen", *command], cwd=work, capture_output=True,
                              text=True, timeout=900, env=env)
        _one_line_exit_2(proc, "refused")
    assert sorted(p.name for p in work.iterdir()) == [outdir.MARKER]


def test_an_empty_folder_is_claimed_and_then_cleanable(tmp_path):
    empty = tmp_path / "out"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    assert outdir.check_output_dir(empty) == empty.resolve()
    outdir.claim(empty)
    assert outdir.owned(empty)
    (empty / "slides.html").write_text("old")
    assert outdir.clean(empty, keep_cache=False)
    assert sorted(p.name for p in empty.iterdir()) == [".gitkeep", outdir.MARKER, outdir.LOCK]


def _stage(out: Path, label: str, figures: int) -> Path:
    staging = outdir.new_staging(out)
    for name in ("slides.html", "report.html", "summary.json"):
        (staging / name).write_text(label)
    (staging / "figures").mkdir()
    for i in range(figures):
        (staging / "figures" / f"{i:02d}-{label}.png").write_text(label)
    return staging


def _labels(out: Path) -> set[str]:
    files = [out / n for n in ("slides.html", "report.html", "summary.json")] + sorted((out / "figures").iterdir())
    return {p.read_text() for p in files}


def test_outputs_are_replaced_together_and_stale_figures_go(tmp_path):
    out = tmp_path / "out"
    outdir.claim(out)
    outdir.commit(out, _stage(out, "A", figures=5))
    (out / "talk.ipynb").write_text("A")  # an output that build B does not make
    outdir.commit(out, _stage(out, "B", figures=2))
    assert _labels(out) == {"B"} and len(list((out / "figures").iterdir())) == 2
    assert not (out / "talk.ipynb").exists()


def test_a_kill_before_the_commit_point_keeps_the_earlier_build(tmp_path):
    out = tmp_path / "out"
    outdir.claim(out)
    outdir.commit(out, _stage(out, "A", figures=3))
    _stage(out, "B", figures=1)  # killed while rendering: never committed
    outdir.recover(out)
    assert _labels(out) == {"A"} and not list(out.glob(".staging-*"))


def test_a_kill_during_the_swap_is_finished_by_the_next_command(tmp_path):
    out = tmp_path / "out"
    outdir.claim(out)
    outdir.commit(out, _stage(out, "A", figures=3))
    staging = _stage(out, "B", figures=1)
    (staging / "manifest.json").write_text(json.dumps(["figures", "report.html", "slides.html", "summary.json"]))
    os.replace(staging, out / outdir.COMMIT)
    os.replace(out / outdir.COMMIT / "slides.html", out / "slides.html")  # the swap stopped after one entry
    assert _labels(out) == {"A", "B"}
    with outdir.locked(out):  # what every later build does first
        pass
    assert _labels(out) == {"B"} and not (out / outdir.COMMIT).exists()


def test_a_full_disk_while_rendering_keeps_the_earlier_outputs(quick_build, tmp_path, monkeypatch):
    """ENOSPC in the middle of writing the outputs: the earlier build stays whole, no staging is left."""
    import shutil

    from talkgen import build as build_module
    from talkgen.config import default_config

    out = tmp_path / "b"
    shutil.copytree(quick_build, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data.encode() if isinstance(data, str) else data)

    monkeypatch.setattr(build_module, "write_atomic", full_disk)
    retitled = dataclasses.replace(default_config(), title="A retitled talk")  # cache hits, then a re-render
    with pytest.raises(OSError):
        build_module.build(retitled, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(out.glob(".staging-*")) and not (out / outdir.COMMIT).exists()


def test_a_read_only_output_folder_is_one_line(tmp_path, user_model_dir):
    if os.geteuid() == 0:
        # root writes anywhere: a folder on a path that cannot exist stands in for read-only
        target = tmp_path / "file-not-folder"
        target.write_text("x")
        proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                       f"{user_model_dir}/weights.safetensors", "--data", f"{user_model_dir}/data.npz",
                       "--only", "model-card", "--out", str(target / "out"))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    proc = run_cli("audit", f"{user_model_dir}/models.py:make_model", "--weights",
                   f"{user_model_dir}/weights.safetensors", "--data", f"{user_model_dir}/data.npz",
                   "--only", "model-card", "--out", str(ro / "out"))
    _one_line_exit_2(proc, "cannot write")


def test_six_builds_on_one_folder_take_turns(user_model_dir, tmp_path):
    """Three pairs of builds with different titles started together on one --out: all finish, and the
    final outputs all come from one build."""
    out = tmp_path / "shared"
    configs = []
    for i in range(3):
        cfg = user_model_dir / f"talk{i}.toml"
        cfg.write_text(f'title = "Build number {i}"\n[[subjects]]\nname = "m"\nmodel = "models.py:make_model"\n'
                       'weights = "weights.safetensors"\ndata = "data.npz"\n[analyses]\nonly = ["model-card"]\n')
        configs.append(cfg)
    procs = [subprocess.Popen([sys.executable, "-m", "talkgen", "build", "--config", str(cfg), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cfg in configs for _ in range(2)]
    try:
        results = [p.communicate(timeout=1800) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
        assert "Traceback" not in stderr
    titles = set()
    summary = json.loads((out / "summary.json").read_text())
    nb = nbformat.read(out / "talk.ipynb", as_version=4)
    titles.add(nb.metadata["talkgen"]["title"])
    for name in ("slides.html", "report.html"):
        html = (out / name).read_text()
        titles.update(t for t in (f"Build number {i}" for i in range(3)) if t in html)
    assert len(titles) == 1, titles
    figures = [c for c in nb.cells if c.metadata["talkgen"].get("part") == "figure"]
    assert len(list((out / "figures").iterdir())) == len(figures)
    assert summary["outputs"]["slides"] == "slides.html"
    assert not list(out.glob(".staging-*")) and not (out / outdir.COMMIT).exists()


def test_check_refuses_a_file_as_output_folder(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(TalkgenError, match="not a folder"):
        outdir.check_output_dir(f)
