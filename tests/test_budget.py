"""Analyses at the size of the model: each declares how its cost grows; above its profile's budget it is sampled
(and says what was sampled, on its slides and in summary.json) or skipped up front with a reason."""

from __future__ import annotations

import json

import pytest

from talkgen.analyses import budget
from talkgen.analyses.base import get_analysis


def test_work_within_the_budget_runs_as_asked_and_above_it_is_halved_in_order(monkeypatch):
    from types import SimpleNamespace

    import torch

    from conftest import TinyCNN

    tiny_subject = SimpleNamespace(model=TinyCNN(), task="image-classifier", data=SimpleNamespace(
        x_train=torch.zeros(512, 1, 4, 4), x_test=torch.zeros(64, 1, 4, 4)))
    landscape = get_analysis("loss-landscape")
    p = landscape.resolve_params("quick")
    n = budget.parameters(tiny_subject)
    # one forward pass of the tiny CNN: its 3x3 convolution slides over 16 positions (432 multiply-adds), then
    # the linear layer (144): 576, more than its 177 parameters
    assert budget.macs_per_unit(tiny_subject) == 576
    work = budget.work(landscape, tiny_subject, p)
    assert work == (2 * p["line_points"] + p["grid"] ** 2 + 1) * p["batch"] * 576
    assert budget.fit(landscape, tiny_subject, p, "quick") == (p, "", None)

    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 1.5) / budget.RATE)  # just over: the first parameter halved once
    sized, note, skip = budget.fit(landscape, tiny_subject, p, "quick")
    assert skip is None and sized == p | {"batch": 128}
    assert note == f"sampled for a model of {n:,} parameters: batch 256 → 128"

    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 6) / budget.RATE)  # each halved in turn until it fits
    sized, note, skip = budget.fit(landscape, tiny_subject, p, "quick")
    assert skip is None and (sized["batch"], sized["grid"], sized["line_points"]) == (128, 8, 15)
    assert budget.work(landscape, tiny_subject, sized) <= work / 6
    assert note == f"sampled for a model of {n:,} parameters: batch 256 → 128, grid 17 → 8, line points 31 → 15"

    # the same seconds on a GPU are 50 times the work: as asked there (and the reason to skip names a GPU's time)
    assert budget.fit(landscape, tiny_subject, p, "quick", "cuda:0") == (p, "", None)
    assert budget.rate("cuda:1") == budget.RATES["cuda"] == 50 * budget.rate("cpu")

    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 60) / budget.RATE)  # down to the least of each: within twice the budget
    sized, note, skip = budget.fit(landscape, tiny_subject, p, "quick")
    assert skip is None and (sized["batch"], sized["grid"], sized["line_points"]) == (32, 7, 11)
    assert budget.work(landscape, tiny_subject, sized) <= 2 * work / 60

    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 1e6) / budget.RATE)  # even the least is far over: skipped, saying why
    sized, note, skip = budget.fit(landscape, tiny_subject, p, "quick")
    assert sized == p and note == "" and "too large for the quick profile" in skip
    assert "[analyses.params.loss-landscape]" in skip


def test_a_sampled_analysis_says_so_on_its_slides_and_in_summary_json(user_model_dir, tmp_path, monkeypatch):
    from talkgen.build import build
    from talkgen.config import SubjectConfig, TalkConfig

    from talkgen.build import load_subject

    d = user_model_dir
    config = TalkConfig(subjects=(SubjectConfig(name="net", model=f"{d}/models.py:make_model",
                                                weights=f"{d}/weights.safetensors", data=f"{d}/data.npz"),),
                        only=("loss-landscape", "curvature"), formats=("slides", "report"))
    subject = load_subject(config.subjects[0])
    work = min(budget.work(get_analysis(a), subject, get_analysis(a).resolve_params("quick")) for a in config.only)
    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 3) / budget.RATE)  # both too costly for this budget: sampled
    report = build(config, tmp_path / "out", threads=1)
    assert report.exit_code == 0
    analyses = json.loads((tmp_path / "out" / "summary.json").read_text())["subjects"]["net"]["analyses"]
    n = budget.parameters(subject)
    for name in ("loss-landscape", "curvature"):
        assert analyses[name]["status"] == "ok"
        assert analyses[name]["sampled"].startswith(f"sampled for a model of {n:,} parameters: "), analyses[name]
    # the landscape's batch is not named: the data has no more examples than its least batch (32), so halving it
    # would save nothing, and it is left as asked
    assert len(subject.data.x_train) <= 32
    assert analyses["loss-landscape"]["sampled"].endswith("grid 17 → 7, line points 31 → 11")
    for output in ("report.html", "slides.html"):
        assert f"Sampled for a model of {n:,} parameters: grid 17 → " in (tmp_path / "out" / output).read_text()


def test_the_first_estimate_of_a_large_audit_comes_from_the_declared_work(monkeypatch):
    """Before anything has run, the declared work of the counted items makes the estimate (it used to say
    "estimating" until an item finished, and then scale cost hints that do not grow with the model); once
    declared items finish, their measured time per declared second rescales the rest."""
    import io
    from types import SimpleNamespace

    import torch

    from conftest import TinyCNN
    from talkgen.pipeline.progress import PlainProgress, _Clock

    subject = SimpleNamespace(model=TinyCNN(), task="image-classifier", data=SimpleNamespace(
        x_train=torch.zeros(512, 1, 4, 4), x_test=torch.zeros(64, 1, 4, 4)))
    landscape = get_analysis("loss-landscape")
    p = landscape.resolve_params("quick")
    budget._MACS.pop(subject.model, None)
    assert budget.declared_seconds(landscape, subject, p) is None  # not counted: nothing is declared
    budget.macs_per_unit(subject)
    assert budget.declared_seconds(landscape, subject, p) == budget.work(landscape, subject, p) / budget.RATE

    big = {("net", "loss-landscape"): 600.0, ("net", "saliency"): 300.0}
    clock = _Clock()
    clock.start(3, {}, workers=1, hints={("net", "weights"): 1.0, ("net", "loss-landscape"): 4.0,
                                        ("net", "saliency"): 2.0}, declared=big)
    assert clock.remaining() == 900.0 and clock.partial  # the weights' hint has no rate yet: a floor, for now
    clock.start(2, {}, workers=2, hints={}, declared=big)
    assert clock.remaining() == 450.0 and not clock.partial  # 900 s of declared work over two workers
    clock.finish(("net", "saliency"), 150.0, cached=False)  # this machine: half the declared time
    assert clock.remaining() == 150.0

    out = io.StringIO()
    PlainProgress(out).start(2, {}, workers=1, hints={}, declared=big)
    assert "2 analyses to run or read from the cache; about 15:00 of work" in out.getvalue()
    out = io.StringIO()
    PlainProgress(out).start(3, {}, workers=1, hints={("net", "weights"): 1.0}, declared=big)
    assert "3 analyses to run or read from the cache; at least 15:00 of work" in out.getvalue()


@pytest.mark.parametrize("threads", [1, 2], ids=["in-process", "workers"])
def test_a_long_analysis_says_how_far_it_has_come(threads, tiny_subject, tmp_path, monkeypatch):
    """Context.progress reports reach the progress lines, from the build's process and from its workers, with the
    rest estimated at the rate so far; a report before the item has run a while, or too soon after the last, is
    left out (here those times are 0 and 0.05 s)."""
    import copy
    import dataclasses
    import io
    import time

    import torch

    from talkgen.analyses.base import Analysis, Result, _REGISTRY, register
    from talkgen.pipeline import Cache, make_plan, run_plan, runner
    from talkgen.pipeline.progress import PlainProgress

    @register
    class Steps(Analysis):
        name = "test-steps"
        title = "reports its steps"
        section = "looking-in"

        def run(self, ctx):
            for i in range(1, 5):
                time.sleep(0.06)
                ctx.progress(i, 4, "steps")
                ctx.progress(i, 4, "steps")  # at once again: thinned out
            return Result(analysis=self.name, subject=ctx.subject.name)

    monkeypatch.setattr(runner, "STEP_FIRST", 0.0)
    monkeypatch.setattr(runner, "STEP_EVERY", 0.05)
    try:
        other = copy.deepcopy(tiny_subject.model)
        with torch.no_grad():
            next(other.parameters()).add_(1.0)  # another model: not a cache hit of the first
        subjects = [tiny_subject, dataclasses.replace(tiny_subject, name="other", model=other)]
        out = io.StringIO()
        outcomes = run_plan(make_plan(subjects, ["test-steps"], "quick"), Cache(tmp_path / "c"),
                            progress=PlainProgress(out), threads=threads)
        assert [o.status for o in outcomes] == ["ok", "ok"]
        lines = out.getvalue().splitlines()
        for s in ("tiny", "other"):
            steps = [ln for ln in lines if ln.startswith(f"talkgen: test-steps on {s}: ")]
            assert len(steps) == 4, lines  # one per step, the repeat left out
            assert "1 of 4 steps after 0:00, about 0:00 more" in steps[0]
            assert steps[-1].endswith("4 of 4 steps after 0:00")
    finally:
        _REGISTRY.pop("test-steps", None)


def test_the_model_card_declares_its_work_and_reads_a_random_subset_when_over_budget(monkeypatch):
    """The card reads both splits of a classifier; over the budget it reads a seeded random subset of each, and its
    table and data say how many of how many."""
    import torch

    from talkgen.analyses.base import Context
    from talkgen.models.samples import load_sample

    s = load_sample("digits-cnn")
    card = get_analysis("model-card")
    p = card.resolve_params("quick")
    assert card.passes(s, p) == len(s.data.x_test) + len(s.data.x_train)  # 450 + 1,347: as asked
    assert budget.fit(card, s, p, "quick") == (p, "", None)
    work = budget.work(card, s, p)
    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (work / 3) / budget.RATE)
    sized, note, skip = budget.fit(card, s, p, "quick")
    assert skip is None and sized["max_inputs"] < len(s.data.x_train) and "max inputs" in note
    r = card.run(Context(subject=s, params=sized, seed=0, device=torch.device("cpu"), profile="quick"))
    n = sized["max_inputs"]
    assert r.summaries["train_accuracy"].n == n and r.summaries["test_accuracy"].n == min(n, len(s.data.x_test))
    assert f"a random {n:,} of 1,347 examples" in r.data["sampled"]
    again = card.run(Context(subject=s, params=sized, seed=0, device=torch.device("cpu"), profile="quick"))
    assert again.summaries["test_accuracy"].value == r.summaries["test_accuracy"].value  # the same subset


def test_occlusion_windows_grow_with_the_image():
    """Saliency's occlusion keeps to at most occlusion_windows windows along a side: a digit keeps its 2-pixel
    window (4 per side), a 224-pixel image gets 14-pixel windows (16 per side, 256 forward passes, not 12,544)."""
    from talkgen.analyses.saliency import image_methods, occlusion_window

    p = get_analysis("saliency").resolve_params("quick")
    assert (occlusion_window(p, (1, 1, 8, 8)), occlusion_window(p, (1, 3, 224, 224))) == (2, 14)
    assert occlusion_window(p | {"occlusion_windows": 4}, (1, 3, 224, 224)) == 56
    labels = dict((k, label) for k, label, _ in image_methods(p, 1.0, 0, False, (1, 3, 224, 224)))
    assert labels["occlusion"] == "occlusion 14×14"


def test_a_parameter_that_does_not_drive_the_work_is_not_halved(monkeypatch):
    """A sequence model's card reads sequences: over the budget, max_sequences is halved and max_inputs (the
    classifier's cap, first in the order) is left as asked and not reported."""
    from talkgen.models.samples import load_sample

    s = load_sample("python-charlstm")
    card = get_analysis("model-card")
    p = card.resolve_params("quick")
    monkeypatch.setitem(budget.BUDGET_SECONDS, "quick", (budget.work(card, s, p) / 3) / budget.RATE)
    sized, note, skip = budget.fit(card, s, p, "quick")
    assert skip is None and sized["max_inputs"] == p["max_inputs"] and sized["max_sequences"] < p["max_sequences"]
    assert "max inputs" not in note and "max sequences" in note


def test_a_large_models_passes_take_as_many_rows_as_half_its_weights_hold(tiny_subject, monkeypatch):
    """Rows per pass: as asked for a model that is not large; for a large one, what one row's pass costs (measured
    once, on one row: what the forward saves, the largest tensor, the output) within half the weights' bytes."""
    import torch

    saved, largest, out = budget.row_bytes(tiny_subject)
    assert out == tiny_subject.model(tiny_subject.data.x_train[:1]).numel() * 4
    assert saved >= largest > 0
    assert budget.row_bytes(tiny_subject) is budget.row_bytes(tiny_subject)  # measured once
    assert budget.pass_rows(tiny_subject, 500) == budget.pass_rows(tiny_subject, 500, grad=True) == 500
    assert budget.pass_budget(tiny_subject) is None and budget.pass_rows(tiny_subject, None, grad=True) is None
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)
    monkeypatch.setattr(budget, "model_bytes", lambda s: 2 * (7 * (saved + 2 * out)))
    assert budget.pass_budget(tiny_subject) == 7 * (saved + 2 * out)
    assert budget.pass_rows(tiny_subject, 500, grad=True) == 7
    assert budget.pass_rows(tiny_subject, 5, grad=True) == 5  # never more than asked
    assert budget.pass_rows(tiny_subject, None, grad=True) == 7  # as many as the budget holds
    assert budget.pass_rows(tiny_subject, 500) == 7 * (saved + 2 * out) // (largest + 3 * out)
    monkeypatch.setattr(budget, "model_bytes", lambda s: 1)
    assert budget.pass_rows(tiny_subject, 500) == budget.pass_rows(tiny_subject, 500, grad=True) == 1
    assert not tiny_subject.model.training and all(p.grad is None for p in tiny_subject.model.parameters())
    assert torch.is_grad_enabled()


def test_measuring_a_row_keeps_nothing_alive(tiny_subject):
    """The measured pass is never run backward and keeps no saved tensor: a model let go after it is freed (a
    saved output of its own node would be a cycle autograd cannot free, holding the graph and every weight)."""
    import copy
    import dataclasses
    import gc
    import weakref

    model = copy.deepcopy(tiny_subject.model)
    s = dataclasses.replace(tiny_subject, model=model)
    assert budget.row_bytes(s, train=True)[0] > 0
    gone = weakref.ref(model)
    weights = [weakref.ref(p) for p in model.parameters()]
    del model, s
    gc.collect()
    assert gone() is None and all(w() is None for w in weights)
