"""The costs analysis (section 4): ledger, epoch timing, scaling exponents, the fidelity table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talkgen.analyses import costs as costs_module
from talkgen.analyses.costs import epoch_seconds, fit_exponent


def test_fit_exponent_recovers_a_power_law():
    n = np.array([1e3, 4e3, 1.6e4, 6.4e4])
    b, r2 = fit_exponent(n, 3.0 * n ** 1.5)
    assert b == pytest.approx(1.5) and r2 == pytest.approx(1.0)
    noisy = 0.2 * n ** 0.5 * np.array([1.1, 0.9, 1.05, 0.95])
    b, r2 = fit_exponent(n, noisy)
    assert 0.4 < b < 0.6 and 0.9 < r2 < 1.0
    assert math.isnan(fit_exponent(n[:1], n[:1])[0])


def test_epoch_time_counts_every_batch(tiny_subject):
    seconds, batches = epoch_seconds(tiny_subject, batch=5, steps=3, seed=0)
    assert batches == math.ceil(len(tiny_subject.data.x_train) / 5) and seconds > 0


def test_epoch_timing_steps_the_model_itself_and_leaves_it_as_it_was(tiny_subject, monkeypatch):
    """No copy of the model: every trainable parameter's update is computed once per step from its gradient
    (which is then let go), and the weights, batch-norm statistics, modes and gradients are as before."""
    import dataclasses

    from torch import nn

    from talkgen.hashing import hash_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).eval()
    model[4].bias.requires_grad_(False)  # frozen: no update
    s = dataclasses.replace(tiny_subject, model=model)
    before, stats = hash_module(model), model[2].running_mean.clone()
    seen = []
    real_add = torch.add

    def counted(a, b, *args, **kwargs):
        if "out" in kwargs:
            seen.append(a.numel())
        return real_add(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "add", counted)
    monkeypatch.setattr(costs_module, "SCRATCH_ELEMENTS", 100)  # the 16x16 weight updated 100 values at a time
    seconds, _ = epoch_seconds(s, batch=8, steps=3, seed=0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert seconds > 0 and sum(seen) == 5 * trainable  # 3 timed steps and 2 to warm up
    assert max(seen) == 100 and seen.count(100) == 5 * 2  # 256 values: 100, 100 and 56
    assert hash_module(model) == before and torch.equal(model[2].running_mean, stats)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_costs_gathers_the_ledger_and_the_checks(tiny_subject, tmp_path):
    from talkgen.pipeline import Cache, make_plan, run_plan

    plan = make_plan([tiny_subject], ["weights", "saliency", "probes", "costs"], "quick")
    outcomes = {o.analysis: o for o in run_plan(plan, Cache(tmp_path))}
    assert all(o.status == "ok" for o in outcomes.values()), {a: o.message for a, o in outcomes.items()}
    r = outcomes["costs"].result
    ledger = next(t for t in r.tables if t.id == "ledger")
    assert {row[0] for row in ledger.rows} == {"weights", "saliency", "probes"}
    by_name = {row[0]: row for row in ledger.rows}
    assert float(by_name["saliency"][1]) == pytest.approx(outcomes["saliency"].cost["wall_s"], abs=0.01)
    assert int(by_name["saliency"][5]) == outcomes["saliency"].cost["backward_passes"] > 0
    assert r.summaries["total_wall_s"].value == pytest.approx(sum(outcomes[a].cost["wall_s"]
                                                                  for a in ("weights", "saliency", "probes")))
    fidelity = next(t for t in r.tables if t.id == "fidelity")
    tools = [row[0] for row in fidelity.rows]
    assert any(t.startswith("saliency: ") for t in tools) and "probes" in tools
    assert "exponents" not in r.data  # the tiny CNN is not the digits architecture


def test_scaling_comes_from_width_twins_run_by_the_pipeline(tmp_path):
    """The costs analysis asks for untrained twins at each width; the pipeline runs the analyses that run on
    width twins (cached, isolated, side-effect checked), and costs fits exponents from their ledger."""
    from talkgen.models.samples import load_sample
    from talkgen.pipeline import Cache, make_plan, run_plan

    s = load_sample("digits-cnn")
    plan = make_plan([s], ["weights", "curvature", "costs"], "quick", {"costs": {"widths": [4, 8, 16]}})
    twins = [i.subject.name for i in plan.items if i.subject.twin_of == "digits-cnn"]
    assert sorted(twins) == sorted(["digits-cnn at width 4", "digits-cnn at width 8", "digits-cnn at width 16"] * 2)
    outcomes = run_plan(plan, Cache(tmp_path))
    assert all(o.status == "ok" for o in outcomes), [(o.subject, o.analysis, o.message) for o in outcomes]
    sc = next(o for o in outcomes if o.analysis == "costs").result.data["scaling"]
    assert sc["widths"] == [4, 8, 16] and sc["params"][0] < sc["params"][1] < sc["params"][2]
    assert set(sc["wall"]) == {"weights", "curvature"}
    assert all(len(v) == 3 and min(v) > 0 for v in sc["wall"].values())
    assert torch.is_grad_enabled()


def test_model_card_limitations_collect_findings_failed_checks_and_gaps():
    from talkgen.render.deck import limitations_table
    from talkgen.results import Check, Finding, Outcome, Result

    saliency = Result(analysis="saliency", subject="m", checks=(
        Check("saliency: occlusion", "sanity checks", "rho 0.64", False, "fails a check"),))
    probes = Result(analysis="probes", subject="m", checks=(Check("probes", "selectivity", "+0.8", True, "trust"),))
    outcomes = [Outcome("m", "saliency", "ok", result=saliency), Outcome("m", "probes", "ok", result=probes),
                Outcome("m", "rnn-cells", "skipped", message="needs an LSTM"),
                Outcome("other", "attention", "skipped", message="not this one")]
    findings = [("m", Finding("high", "Trojan detector flags this model", "", 3.2, -0.3), "x"),
                ("m", Finding("info", "just so", ""), "y"), ("other", Finding("high", "elsewhere", ""), "z")]
    t = limitations_table("m", outcomes, findings)
    assert t.report_only and t.id == "limitations"
    text = [" | ".join(r) for r in t.rows]
    assert text[0] == "finding, high | Trojan detector flags this model (measured 3.2 against -0.3)"
    assert any("saliency: occlusion: fails a check" in r for r in text)
    assert any(r.startswith("not measured | rnn-cells: needs an LSTM") for r in text)
    assert not any("probes" in r or "elsewhere" in r or "just so" in r or "not this one" in r for r in text)


class _OneParameter(torch.nn.Module):
    """One scalar parameter and no Linear or Conv layer: two logits from the input's sum."""

    def __init__(self) -> None:
        super().__init__()
        self.s = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        total = x.flatten(1).sum(1) * self.s
        return torch.stack([total, -total], 1)


def test_costs_runs_on_models_without_a_linear_first_layer(tmp_path):
    """A 1-parameter model: saliency's input-invariance check cannot be made (no linear first layer), and
    the costs analysis says so instead of failing with a KeyError."""
    from talkgen.pipeline import Cache, make_plan, run_plan
    from talkgen.subject import Subject

    from conftest import tiny_data

    data = tiny_data(("a", "b"))
    subject = Subject(name="one", model=_OneParameter(), task="image-classifier", data=data, source="test")
    outcomes = {o.analysis: o for o in run_plan(make_plan([subject], ["saliency", "costs"], "quick"), Cache(tmp_path))}
    assert outcomes["costs"].status == "ok", outcomes["costs"].message
    rows = [r for r in next(t for t in outcomes["costs"].result.tables if t.id == "fidelity").rows
            if r[0].startswith("saliency: ")]
    assert rows and all("input shift not testable on this model" in r[2] for r in rows)


def test_an_unrelated_parameter_reruns_neither_the_scaling_study_nor_the_untrained_twins(tmp_path, monkeypatch):
    """Runner calls counted per (subject, analysis): the width twins (scaling study) and the initial-weights
    twin (the fingerprint's untrained baseline) are cached pipeline items that an unrelated change leaves alone."""
    from collections import Counter

    from talkgen.models.samples import load_sample
    from talkgen.pipeline import Cache, make_plan, run_plan
    from talkgen.pipeline import runner

    calls: Counter = Counter()
    original = runner._run_one

    def counting(item, ctx):
        calls[(item.subject.name, item.analysis.name)] += 1
        return original(item, ctx)

    monkeypatch.setattr(runner, "_run_one", counting)
    s = load_sample("digits-cnn")
    names = ["model-card", "weights", "curvature", "attacks", "fingerprint", "costs"]
    params = {"costs": {"widths": [4, 8]}}
    first = run_plan(make_plan([s], names, "quick", params), Cache(tmp_path))
    assert all(o.status in ("ok", "skipped") for o in first), [(o.subject, o.analysis, o.message) for o in first]
    twins = {k for k in calls if k[0] != "digits-cnn"}
    assert {"digits-cnn at width 4", "digits-cnn at width 8", "digits-cnn at initialisation"} <= {t[0] for t in twins}
    calls.clear()
    run_plan(make_plan([s], names, "quick", params | {"attacks": {"pgd_steps": 3}}), Cache(tmp_path))
    # attacks reruns (its parameter changed) and the two analyses that gather every result; no twin runs
    assert dict(calls) == {("digits-cnn", "attacks"): 1, ("digits-cnn", "fingerprint"): 1, ("digits-cnn", "costs"): 1}


def test_a_tied_weight_is_stepped_use_by_use_and_tied_again_afterwards(tiny_subject):
    """Tied weights (an embedding shared with the output layer): each use gets a parameter of its own on the same
    memory for the timed steps, updated as soon as its gradient is complete; afterwards one parameter again."""
    import dataclasses

    from torch import nn

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(12, 8)
            self.out = nn.Linear(8, 12, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, t):
            return self.out(torch.tanh(self.embed(t)))

    model = Tied().eval()
    tokens = torch.randint(0, 12, (20, 5))
    data = dataclasses.replace(tiny_subject.data, x_train=tokens, y_train=tokens.roll(-1, 1), x_test=tokens,
                               y_test=tokens, classes=tuple(str(i) for i in range(12)))
    s = dataclasses.replace(tiny_subject, model=model, data=data, task="char-lm")
    updates = []
    hook = torch.nn.Parameter.register_post_accumulate_grad_hook

    def watched(p, fn):
        updates.append(p.data_ptr())
        return hook(p, fn)

    before = model.embed.weight.detach().clone()
    real = torch.nn.Parameter.register_post_accumulate_grad_hook
    torch.nn.Parameter.register_post_accumulate_grad_hook = watched
    try:
        epoch_seconds(s, batch=8, steps=1, seed=0)
    finally:
        torch.nn.Parameter.register_post_accumulate_grad_hook = real
    assert updates.count(model.embed.weight.data_ptr()) == 2  # two parameters on the embedding's memory
    assert model.out.weight is model.embed.weight and torch.equal(model.embed.weight, before)
    assert model.embed.weight.grad is None


def test_a_large_models_training_step_holds_half_its_weights_at_most(tiny_subject, monkeypatch):
    """The rows of a large model's timed step: as many as half its weights' memory holds, measured on one row in
    training mode (what the forward saves for the backward, the parameters left out, and the logits and their
    gradient)."""
    from talkgen.analyses import budget
    from talkgen.analyses.costs import batch_rows, step_rows

    saved, largest, out = budget.row_bytes(tiny_subject, train=True)
    assert out == tiny_subject.model(tiny_subject.data.x_train[:1]).numel() * 4
    assert saved > largest > 0 and not tiny_subject.model.training  # its mode put back
    per_row = saved + 2 * out
    biggest = max(p.numel() * 4 for p in tiny_subject.model.parameters())  # its gradient is held with the rows
    assert step_rows(tiny_subject, 64) == batch_rows(tiny_subject, 64) == 64  # not large: as asked
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)
    monkeypatch.setattr(budget, "model_bytes", lambda s: 2 * (3 * per_row + biggest + 1))
    assert step_rows(tiny_subject, 64) == 3
    monkeypatch.setattr(budget, "model_bytes", lambda s: 1)
    assert step_rows(tiny_subject, 64) == 1
