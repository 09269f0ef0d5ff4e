"""The cache: proved by counting analysis calls, never by timing."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from talkgen.analyses.base import Analysis, Result, Scalar, _REGISTRY, register
from talkgen.build import build
from talkgen.config import SubjectConfig, TalkConfig, load_config


def _config(d, **kw) -> TalkConfig:
    subject = SubjectConfig(name="net", model=f"{d}/models.py:make_model", weights=f"{d}/weights.safetensors",
                            data=f"{d}/data.npz")
    return TalkConfig(subjects=(subject,), formats=("slides", "report", "notebook"), **kw)


def _applicable(d) -> dict:
    """Every registered analysis that applies to the user's model, run once, plus once on each twin a
    gathering analysis asked for (the fingerprint's initial weights)."""
    from talkgen.analyses.base import registry
    from talkgen.build import load_subject
    from talkgen.models.twins import make_twin

    subject = load_subject(_config(d).subjects[0])
    counts = {n: 1 for n, cls in registry().items() if cls().applies_to(subject) is True}
    requests = {r for n, cls in registry().items() if cls.gathers and n in counts
                for r in cls().twins(subject, cls().resolve_params("quick"))}
    for r in requests:
        twin = make_twin(subject, r.kind, r.width, 0)
        for n, cls in registry().items():
            if r.kind in cls.runs_on_twins and not cls.gathers and cls().applies_to(twin) is True:
                counts[n] += 1
    return counts


def test_second_build_runs_nothing_and_params_rerun_only_their_analysis(user_model_dir, tmp_path, counted):
    out = tmp_path / "b"
    build(_config(user_model_dir), out)
    first = dict(counted)
    assert first == _applicable(user_model_dir) and len(first) >= 3
    counted.clear()
    report = build(_config(user_model_dir), out)
    assert sum(counted.values()) == 0
    assert all(o.cached for o in report.outcomes if o.status == "ok")
    build(_config(user_model_dir, params={"weights": {"max_side": 7}}), out)
    # weights reruns (on the model and on its initial-weights twin, whose params changed with it), and the
    # two analyses that gather results: the fingerprint and the costs. The twin's other analyses are
    # cached: the baselines are ordinary pipeline items, keyed by what they read.
    assert dict(counted) == {"weights": 2, "fingerprint": 1, "costs": 1}
    counted.clear()
    build(_config(user_model_dir, params={"probes": {"steps": 77}}), out)
    assert dict(counted) == {"probes": 1, "fingerprint": 1, "costs": 1}  # no twin reruns for an unrelated change
    counted.clear()
    build(_config(user_model_dir), out, force=True)  # --force: everything again, cache or not
    assert dict(counted) == first


def test_an_unchanged_build_writes_nothing_and_a_title_or_template_change_rerenders_without_rerunning(user_model_dir, tmp_path, counted, monkeypatch):
    from talkgen import build as build_mod
    from talkgen.resources import templates_dir

    out = tmp_path / "b"
    only = ("weights", "model-card", "activations")  # what renders is the point here, not which analyses ran
    build(_config(user_model_dir, only=only), out)
    counted.clear()
    # nothing changed: every output is left as it was (not even rewritten)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    report = build(_config(user_model_dir, only=only), out)
    assert report.exit_code == 0 and set(report.outputs) == {"notebook", "slides", "report", "summary"}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps
    build(_config(user_model_dir, title="A new title", only=only), out)  # a config change renders again
    assert "A new title" in (out / "slides.html").read_text()
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    path = templates / "commentary" / "weights.md.j2"
    path.write_text(path.read_text().replace("weight matrices,", "weight matrices (edited template),"))
    monkeypatch.setattr(build_mod, "templates_dir", lambda: templates)
    build(_config(user_model_dir, only=only), out)
    assert sum(counted.values()) == 0
    assert "edited template" in (out / "slides.html").read_text()
    assert "edited template" in (out / "report.html").read_text()


def test_one_weight_byte_reruns_that_models_analyses(user_model_dir, tmp_path, counted):
    out = tmp_path / "b"
    build(_config(user_model_dir), out)
    counted.clear()
    weights = user_model_dir / "weights.safetensors"
    state = load_file(str(weights))
    raw = state["fc.bias"].view(torch.uint8).clone()
    raw[0] ^= 1  # flip one bit of one byte
    state["fc.bias"] = raw.view(torch.float32)
    save_file(state, str(weights))
    build(_config(user_model_dir), out)
    # every analysis of the model reruns; its initial-weights twin (a seeded fresh initialisation, the
    # same whatever the trained weights) is served from the cache
    from talkgen.analyses.base import registry
    from talkgen.build import load_subject

    subject = load_subject(_config(user_model_dir).subjects[0])
    assert dict(counted) == {n: 1 for n, cls in registry().items() if cls().applies_to(subject) is True}


def test_a_new_analysis_plugs_in_and_caches(user_model_dir, tmp_path):
    calls = []

    @register
    class ParamCount(Analysis):
        name = "test-param-count"
        title = "Parameter count"
        section = "summaries"
        params = {"scale": 1}

        def run(self, ctx):
            calls.append(1)
            n = sum(p.numel() for p in ctx.subject.model.parameters())
            return Result(analysis=self.name, subject=ctx.subject.name,
                          summaries={"n": Scalar(float(n * ctx.params["scale"]), "count", "parameters")})

    try:
        out = tmp_path / "b"
        report = build(_config(user_model_dir, only=("test-param-count",)), out)
        outcome = report.outcomes[0]
        assert outcome.result.summaries["n"].value == 3 * 9 + 3 + 48 * 3 + 3
        build(_config(user_model_dir, only=("test-param-count",)), out)
        assert len(calls) == 1
    finally:
        _REGISTRY.pop("test-param-count")


def test_config_file_params_reach_the_analysis(user_model_dir, tmp_path):
    toml = user_model_dir / "talk.toml"
    toml.write_text('[[subjects]]\nname = "n"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
                    'data = "data.npz"\n[analyses]\nonly = ["weights"]\n[analyses.params.weights]\nmax_side = 2\n')
    report = build(load_config(toml), tmp_path / "b")
    result = report.outcomes[-1].result
    assert result.arrays["matrix:fc.weight"].shape == (2, 2)


def test_a_failing_analysis_becomes_an_error_slide_and_exit_1(user_model_dir, tmp_path):
    from talkgen.pipeline.runner import AnalysisFailed

    @register
    class Broken(Analysis):
        name = "test-broken"
        title = "Always fails"
        section = "looking-in"

        def run(self, ctx):
            raise ValueError("the <b>maths</b> went wrong")

    try:
        out = tmp_path / "b"
        report = build(_config(user_model_dir, only=("test-broken", "weights")), out)
        assert report.exit_code == 1
        statuses = {o.analysis: o.status for o in report.outcomes}
        assert statuses == {"test-broken": "failed", "weights": "ok"}
        slides, html = (out / "slides.html").read_text(), (out / "report.html").read_text()
        assert "test-broken failed on net" in slides and "the &lt;b&gt;maths&lt;/b&gt; went wrong" in slides
        assert "failed: <strong>test-broken</strong>" in html
        import json

        summary = json.loads((out / "summary.json").read_text())
        assert summary["subjects"]["net"]["analyses"]["test-broken"]["message"].startswith("ValueError")
        assert summary["exit_status"] == 1
        with pytest.raises(AnalysisFailed, match="test-broken failed on net"):
            build(_config(user_model_dir, only=("test-broken",)), tmp_path / "strict", strict=True)
    finally:
        _REGISTRY.pop("test-broken")


def test_a_changed_forward_with_the_same_weights_reruns(user_model_dir, tmp_path, counted):
    """The model's code is part of its identity: same weights, new forward() -> new results."""
    import json

    out = tmp_path / "b"
    config = _config(user_model_dir, only=("model-card",))
    build(config, out)
    first = json.loads((out / "summary.json").read_text())["subjects"]["net"]
    counted.clear()
    source = (user_model_dir / "models.py").read_text()
    (user_model_dir / "models.py").write_text(source.replace(
        "return self.fc(torch.relu(self.conv(x)).flatten(1))",
        "return -self.fc(torch.relu(self.conv(x)).flatten(1))"))
    build(config, out)
    second = json.loads((out / "summary.json").read_text())["subjects"]["net"]
    assert counted["model-card"] == 1, "the changed model was served from the cache"
    assert first["model_hash"] != second["model_hash"]
    assert second["analyses"]["model-card"]["cached"] is False


@pytest.mark.parametrize("damage", ["wrong fields", "wrong types", "missing arrays", "truncated json"])
def test_a_damaged_cache_entry_is_recomputed_and_replaced(user_model_dir, tmp_path, counted, damage):
    import json

    out = tmp_path / "b"
    config = _config(user_model_dir, only=("model-card",))
    build(config, out)
    (entry,) = (out / "cache" / "model-card").iterdir()
    result = entry / "result.json"
    if damage == "wrong fields":
        result.write_text(json.dumps({"analysis": "model-card", "subject": "net", "summaries": {"x": {"v": 1}}}))
    elif damage == "wrong types":
        good = json.loads(result.read_text())
        result.write_text(json.dumps(good | {"figures": [{"kind": "no-such-kind"}], "findings": [1, 2]}))
    elif damage == "missing arrays":
        (entry / "arrays.npz").write_bytes(b"")
    else:
        result.write_text(result.read_text()[:50])
    counted.clear()
    # an unchanged rebuild reads no result (its outputs stand); one that renders again (a new title) reads
    # them all, finds the damage and recomputes
    report = build(replace(config, title="Rendered again"), out)
    assert report.exit_code == 0 and counted["model-card"] == 1
    from talkgen.analyses.base import Result

    assert Result.load(str(entry)).analysis == "model-card"  # replaced by a whole entry
