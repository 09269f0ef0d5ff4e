"""Work spread over worker processes: the same results as one process, failures isolated, shared work
done once, no worker outliving its build; and a build that needs no model loads no torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from talkgen.analyses.base import Analysis, Result, Scalar, _REGISTRY, register
from talkgen.config import SubjectConfig, TalkConfig
from talkgen.pipeline import Cache, make_plan, run_plan

ROOT = Path(__file__).resolve().parent.parent


def _summaries(outcomes) -> dict:
    return {(o.subject, o.analysis): {k: v.value for k, v in o.result.summaries.items()}
            for o in outcomes if o.status == "ok"}


def test_workers_give_the_results_of_one_process(tiny_subject, tmp_path):
    other = replace(tiny_subject, name="other")
    names = ["model-card", "weights", "activations", "saliency", "fingerprint"]
    plan = make_plan([tiny_subject, other], names, "quick")
    serial = run_plan(plan, Cache(tmp_path / "serial"))
    spread = run_plan(plan, Cache(tmp_path / "spread"), threads=2)
    assert [(o.subject, o.analysis, o.status) for o in spread] == [(o.subject, o.analysis, o.status) for o in serial]
    a, b = _summaries(serial), _summaries(spread)
    assert a.keys() == b.keys() and len(a) >= 8
    for k in a:
        for name, value in a[k].items():
            assert np.isclose(value, b[k][name], rtol=1e-4, atol=1e-6, equal_nan=True), (k, name)
    # the two subjects are the same model under two names: each distinct result is computed once, then read
    ok = [o for o in spread if o.status == "ok"]
    assert sum(not o.cached for o in ok) == len({(o.analysis, o.key) for o in ok}) < len(ok)
    assert all(o.cost.get("threads") == 1 for o in spread if o.status == "ok" and not o.cached)


@pytest.fixture
def broken_analyses():
    @register
    class Raises(Analysis):
        name = "test-raises"
        title = "raises"
        section = "looking-in"

        def run(self, ctx):
            raise ValueError("broken on purpose")

    @register
    class Dies(Analysis):
        name = "test-dies"
        title = "dies"
        section = "looking-in"

        def run(self, ctx):
            os._exit(3)  # a crash that takes its process with it (a segfault, the OOM killer)

    @register
    class Fine(Analysis):
        name = "test-fine"
        title = "fine"
        section = "looking-in"

        def run(self, ctx):
            return Result(analysis=self.name, subject=ctx.subject.name,
                          summaries={"n": Scalar(float(len(ctx.subject.data.x_test)), "inputs", "n")})
    yield
    for n in ("test-raises", "test-dies", "test-fine"):
        _REGISTRY.pop(n)


def test_a_failing_or_dying_worker_fails_its_item_only(tiny_subject, tmp_path, broken_analyses):
    other = replace(tiny_subject, name="other")
    plan = make_plan([tiny_subject, other], ["test-raises", "test-dies", "test-fine"], "quick")
    outcomes = {(o.subject, o.analysis): o for o in run_plan(plan, Cache(tmp_path), threads=2)}
    for s in ("tiny", "other"):
        assert outcomes[(s, "test-raises")].status == "failed"
        assert "broken on purpose" in outcomes[(s, "test-raises")].message
        assert outcomes[(s, "test-dies")].status == "failed"
        assert "worker process" in outcomes[(s, "test-dies")].message  # tried alone a second time: its own fault
        assert outcomes[(s, "test-fine")].status == "ok"  # whatever ran beside a dying worker is tried again


def test_strict_stops_the_workers_at_the_first_failure(tiny_subject, tmp_path, broken_analyses):
    from talkgen.pipeline.runner import AnalysisFailed

    plan = make_plan([tiny_subject, replace(tiny_subject, name="other")], ["test-raises", "test-fine"], "quick")
    with pytest.raises(AnalysisFailed, match="test-raises failed"):
        run_plan(plan, Cache(tmp_path), threads=2, strict=True)


def test_workers_die_with_their_build(tmp_path):
    """SIGKILL the build: its worker processes go with it instead of computing on for nobody."""
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen([sys.executable, "-m", "talkgen", "build", "--out", str(tmp_path / "b"), "--quiet",
                             "--threads", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers: list = []
        deadline = time.monotonic() + 300
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2, "the build never started its two workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their build: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in psutil.Process().children(recursive=True):
            p.kill()


def _config(d: Path, **kw) -> TalkConfig:
    subject = SubjectConfig(name="net", model=f"{d}/models.py:make_model", weights=f"{d}/weights.safetensors",
                            data=f"{d}/data.npz")
    return TalkConfig(subjects=(subject,), formats=("slides", "report", "notebook"),
                      only=("model-card", "weights"), **kw)


BUILD = """
import json, sys
from pathlib import Path
from talkgen.build import build
from talkgen.config import TalkConfig
config = TalkConfig.from_json(json.loads(sys.argv[1]))
report = build(config, Path(sys.argv[2]))
print(json.dumps({"torch": "torch" in sys.modules, "exit": report.exit_code,
                  "cached": [o.cached for o in report.outcomes if o.status == "ok"]}))
"""


def _build_in_a_fresh_process(config: TalkConfig, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", BUILD, json.dumps(config.to_json()), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_unchanged_build_and_a_render_only_change_load_no_torch(user_model_dir, tmp_path):
    out = tmp_path / "b"
    first = _build_in_a_fresh_process(_config(user_model_dir), out)
    assert first["torch"] and first["exit"] == 0 and not any(first["cached"])
    slides = (out / "slides.html").stat().st_mtime_ns
    again = _build_in_a_fresh_process(_config(user_model_dir), out)
    assert not again["torch"] and again["exit"] == 0 and all(again["cached"])
    assert (out / "slides.html").stat().st_mtime_ns == slides  # nothing rewritten
    # a new title changes what is rendered, not what is measured: re-rendered from the cache
    retitled = _build_in_a_fresh_process(_config(user_model_dir, title="Retitled without a model"), out)
    assert not retitled["torch"] and all(retitled["cached"])
    assert "Retitled without a model" in (out / "slides.html").read_text()
    assert "Retitled without a model" in json.dumps(json.loads((out / "talk.ipynb").read_text()))


def test_a_changed_input_file_takes_the_full_path(user_model_dir, tmp_path):
    out = tmp_path / "b"
    _build_in_a_fresh_process(_config(user_model_dir), out)
    data = np.load(user_model_dir / "data.npz")
    arrays = {k: data[k] for k in data.files}
    arrays["x"] = arrays["x"] + 0.5
    np.savez(user_model_dir / "data.npz", **arrays)
    again = _build_in_a_fresh_process(_config(user_model_dir), out)
    assert again["torch"] and not all(again["cached"])  # new data: the analyses ran again


CLI_BUILD = """
import json, sys
from talkgen.cli import cli
try:
    cli(["build", "--config", sys.argv[1], "--out", sys.argv[2], "--quiet", "--threads", "1"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"torch": "torch" in sys.modules, "exit": code}))
"""


def _cli_in_a_fresh_process(toml: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CLI_BUILD, str(toml), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_same_talk_toml_again_is_not_checked_again(user_model_dir, tmp_path):
    """A rebuild of an unchanged talk.toml takes its checked config from the build folder's record, so it
    loads no torch; an edit of [talk] alone is checked against the recorded catalogue (no torch either);
    any other edit is checked in full, and a bad edit is still refused."""
    d = user_model_dir
    toml = d / "talk.toml"
    toml.write_text(f'[[subjects]]\nname = "net"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
                    f'data = "data.npz"\n[analyses]\nonly = ["model-card", "weights"]\n', encoding="utf-8")
    out = tmp_path / "b"
    assert _cli_in_a_fresh_process(toml, out) == {"torch": True, "exit": 0}
    record = json.loads((out / ".render-key.json").read_text())
    assert record["config_file"]["config"]["only"] == ["model-card", "weights"]
    assert _cli_in_a_fresh_process(toml, out) == {"torch": False, "exit": 0}
    toml.write_text(toml.read_text() + '[talk.slides.title]\ntitle = "Renamed"\n', encoding="utf-8")
    again = _cli_in_a_fresh_process(toml, out)  # only [talk] changed: checked against the recorded catalogue
    assert again == {"torch": False, "exit": 0} and "Renamed" in (out / "slides.html").read_text()
    toml.write_text(toml.read_text().replace('only = ["model-card", "weights"]', 'only = ["weights"]'), encoding="utf-8")
    assert _cli_in_a_fresh_process(toml, out)["torch"]  # the rest changed: the whole file is checked again
    toml.write_text(toml.read_text() + '[talk.slides.nowhere]\ntitle = "x"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "talkgen", "build", "--config", str(toml), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "talk.slides.nowhere" in proc.stderr
