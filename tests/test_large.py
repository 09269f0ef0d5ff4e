"""Large models run lean: one item at a time in the build's process, twins (and subjects loaded from files)
held only while an analysis runs on them, the probes' initial weights made in place. The same results as a
normal run, the models left as they were given (here on a tiny model counted as large)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from talkgen.analyses import budget
from talkgen.hashing import hash_module
from talkgen.models.twins import initial_model, initialised_in_place
from talkgen.pipeline import Cache, make_plan, run_plan
from talkgen.pipeline import runner as runner_module

ANALYSES = ["weights", "probes", "loss-landscape", "fingerprint", "costs"]


def _summaries(outcomes):
    return {(o.subject, o.analysis): {k: v.value for k, v in o.result.summaries.items()}
            for o in outcomes if o.status == "ok" and o.analysis != "costs"}


def _trained(subject):
    """Not its own initialisation any more, so that its twin at initialisation differs from it."""
    with torch.no_grad():
        for p in subject.model.parameters():
            p.mul_(1.5)
    return subject


def test_a_large_plan_runs_lean_with_the_same_results(tiny_subject, tmp_path, monkeypatch):
    _trained(tiny_subject)
    plain = run_plan(make_plan([tiny_subject], ANALYSES, "quick"), Cache(tmp_path / "plain"), threads=2)
    assert all(o.status in ("ok", "skipped") for o in plain), [(o.analysis, o.message) for o in plain]
    before = hash_module(tiny_subject.model)
    saved = copy.deepcopy(tiny_subject.model)
    made, made_subject, forks = [], [], []
    tiny_subject.remake = lambda: made_subject.append(1) or copy.deepcopy(saved)  # as if loaded from its files
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)
    monkeypatch.setattr(runner_module._Pools, "get", lambda self: forks.append(1))
    plan = make_plan([tiny_subject], ANALYSES, "quick")
    twin = next(i.subject for i in plan.items if i.subject.twin_of)
    real_remake = twin.remake

    def counted():
        made.append(1)
        return real_remake()

    twin.remake = counted
    lean = run_plan(plan, Cache(tmp_path / "lean"), threads=2)
    assert not forks  # no worker processes
    assert _summaries(lean) == _summaries(plain)
    assert made and twin.released  # the twin was let go and made again when its analyses ran
    assert made_subject  # so was the subject, while the twin's ran, and it is back as it was
    assert hash_module(tiny_subject.model) == before and not tiny_subject.released


def test_a_subject_that_differs_when_made_again_fails_its_item_not_the_build(tiny_subject, tmp_path, monkeypatch):
    _trained(tiny_subject)
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)
    plan = make_plan([tiny_subject], ["weights", "fingerprint"], "quick")
    twin = next(i.subject for i in plan.items if i.subject.twin_of)
    twin.remake = lambda: initial_model(tiny_subject, 123)[0]  # other weights than the twin first made
    outcomes = {(o.subject, o.analysis): o for o in run_plan(plan, Cache(tmp_path), threads=1)}
    failed = outcomes[(twin.name, "weights")]
    assert failed.status == "failed" and "differs from the one first made" in failed.message
    assert outcomes[(tiny_subject.name, "weights")].status == "ok"


def test_initial_weights_in_place_are_the_copys_and_the_trained_ones_come_back(tiny_subject):
    model = tiny_subject.model
    before = hash_module(model)
    copy, _ = initial_model(tiny_subject, 5)
    with initialised_in_place(tiny_subject, 5) as (inplace, source):
        assert inplace is model and "fresh default initialisation" in source
        assert hash_module(model) == hash_module(copy)
    assert hash_module(model) == before
    with pytest.raises(RuntimeError, match="stop"):
        with initialised_in_place(tiny_subject, 5):
            raise RuntimeError("stop")
    assert hash_module(model) == before


def test_safetensors_load_one_tensor_at_a_time_strictly(tmp_path):
    from torch import nn

    from talkgen.errors import TalkgenError
    from talkgen.models.loading import load_safetensors_into

    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    dst = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    load_safetensors_into(dst, str(tmp_path / "w.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(TalkgenError, match="missing: 2.bias, 2.weight"):
        load_safetensors_into(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)),
                              str(tmp_path / "w.safetensors"))
    with pytest.raises(TalkgenError, match=r"0.weight file \(3, 4\) vs model \(5, 4\)"):
        load_safetensors_into(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(3)), str(tmp_path / "w.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TalkgenError, match="not a valid safetensors file"):
        load_safetensors_into(dst, str(tmp_path / "bad.safetensors"))
    assert np.isfinite(dst[0].weight.detach().numpy()).all()


def test_lean_runs_one_subjects_items_together_so_each_model_is_made_again_once(tiny_subject, tmp_path,
                                                                                 monkeypatch):
    import dataclasses

    other = dataclasses.replace(_trained(copy.deepcopy(tiny_subject)), name="other")
    made = {"tiny": 0, "other": 0}
    for s in (tiny_subject, other):
        saved = copy.deepcopy(s.model)
        s.remake = (lambda saved, name: lambda: made.__setitem__(name, made[name] + 1) or copy.deepcopy(saved))(
            saved, s.name)
    plain = run_plan(make_plan([tiny_subject, other], ["weights", "activations"], "quick"), Cache(tmp_path / "p"))
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)
    lean = run_plan(make_plan([tiny_subject, other], ["weights", "activations"], "quick"), Cache(tmp_path / "l"))
    assert _summaries(lean) == _summaries(plain)
    assert made == {"tiny": 1, "other": 1}  # other's made again for its items, tiny's at the end
    assert not tiny_subject.released and not other.released
