"""Result: frozen, plain data, round-trips through npz + json; Context is read-only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from talkgen.analyses.base import Context, Finding, Result, Scalar
from talkgen.specs import Curves, Table


def _result():
    return Result(
        analysis="a", subject="s", arrays={"x": np.arange(3.0), "y": np.ones(3)},
        summaries={"n": Scalar(1.5, "bits", "a number")}, notes=("note",),
        figures=(Curves(id="c", title="t", caption="c", alt="alt", x=("x",), y=("y",), labels=("l",),
                        xlabel="x (units)", ylabel="y (units)"),),
        tables=(Table(id="t", title="T", columns=("a",), rows=(("1",),)),),
        findings=(Finding("low", "f", "d", 1.0, 2.0),), data={"k": [1, 2]})


def test_roundtrip(tmp_path):
    r = _result()
    r.save(str(tmp_path))
    back = Result.load(str(tmp_path))
    assert back.to_json() == r.to_json()
    np.testing.assert_array_equal(back.arrays["x"], r.arrays["x"])
    assert back.figures[0] == r.figures[0]


def test_roundtrip_keeps_the_order_of_summaries_and_data(tmp_path):
    """Commentary iterates these dicts, so a cached result must read back in the order it was written."""
    r = dataclasses.replace(_result(), summaries={"zeta": Scalar(1.0, "", "z"), "alpha": Scalar(2.0, "", "a")},
                            data={"z": 1, "a": {"y": 2, "b": 3}})
    r.save(str(tmp_path))
    back = Result.load(str(tmp_path))
    assert list(back.summaries) == ["zeta", "alpha"]
    assert list(back.data) == ["z", "a"] and list(back.data["a"]) == ["y", "b"]


def test_frozen():
    r = _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.analysis = "b"  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.arrays["x"][0] = 9
    with pytest.raises(TypeError):
        r.summaries["m"] = Scalar(1, "", "")  # type: ignore[index]


def test_figure_must_name_existing_arrays():
    with pytest.raises(ValueError, match="lacks"):
        Result(analysis="a", subject="s", figures=(Curves(id="c", title="t", caption="", alt="", x=("x",),
                                                          y=("nope",), labels=("l",), xlabel="", ylabel=""),),
               arrays={"x": np.zeros(1)})


def test_context_is_read_only(tiny_subject):
    ctx = Context(subject=tiny_subject, params={"a": 1}, seed=0, device=torch.device("cpu"), profile="quick")
    with pytest.raises(TypeError):
        ctx.params["a"] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 1  # type: ignore[misc]


def test_same_seed_same_bytes(tiny_subject, tmp_path):
    from talkgen.pipeline import Cache, make_plan, run_plan

    plan = make_plan([tiny_subject], ["weights", "model-card"], "quick")
    a = run_plan(plan, Cache(tmp_path / "a"))
    b = run_plan(plan, Cache(tmp_path / "b"))
    for x, y in zip(a, b):
        assert x.key == y.key
        for k in x.result.arrays:
            assert x.result.arrays[k].tobytes() == y.result.arrays[k].tobytes()


def test_cost_meter_counts_forward_and_backward_and_survives_deepcopy(tiny_subject):
    import copy

    from talkgen.metering import CostMeter

    model = tiny_subject.model
    x = tiny_subject.data.x_test
    with CostMeter(model) as meter:
        model(x).sum().backward()
        twin = copy.deepcopy(model)  # analyses may copy the model while it is metered
        with torch.no_grad():
            twin(x)
    assert meter.cost.forward_passes == 2 and meter.cost.backward_passes == 1
    assert meter.cost.examples_forward == 2 * len(x)
    assert len(model._forward_hooks) == 0
    model.zero_grad(set_to_none=True)
