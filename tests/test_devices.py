"""Every analysis, the sample training and the zoo on each device present, against the CPU.

The devices are those torch sees here (``talkgen.devices.present()``: the CPU always, CUDA or MPS where there is
one). On the CPU the model does not move, so the boundary that puts a model on a device is put anyway
(``BOUNDARY_ON_CPU``): its code (inputs in at the outermost call, outputs out, captures and replays brought to
the CPU) runs here, and a result that changes under it is a bug. Where a GPU is present the same tests compare
its results with the CPU's within float tolerance (``benchmarks/gpu_check.sh`` runs them there).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from talkgen import devices
from talkgen.analyses.base import Context, registry

from test_side_effects import _params, _subjects

DEVICES = devices.present()
# results that are clocks (the costs analysis times its own work): compared for their keys, not their values
TIMED = {"costs"}


def _tolerance(device: str) -> dict[str, float]:
    # the CPU with the boundary moves nothing: the same numbers; a GPU's kernels round differently
    return {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 2e-2, "atol": 1e-3}


def _run(analysis, subject, device: str, boundary: bool):
    ctx = Context(subject=subject, params=_params(analysis), seed=0, device=torch.device(device), profile="quick")
    with devices.placed(subject.model, device, boundary=boundary):  # as the runner places it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return analysis.run(ctx)


def _values(result) -> dict[str, float]:
    """The numeric summaries, clocks left out (their keys are still compared)."""
    return {k: float(s.value) if s.unit != "s" else 0.0 for k, s in result.summaries.items()
            if isinstance(s.value, (int, float))}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(registry()))
def test_analysis_on_device_matches_the_cpu(name, device, tiny_subject):
    analysis = registry()[name]()
    subjects = [s for s in _subjects(tiny_subject) if analysis.applies_to(s) is True]
    tiny = [s for s in subjects if s.name != "digits-cnn"]  # the real sample only where no tiny model will do
    ran = 0
    for subject in tiny or subjects:
        ref = _run(analysis, subject, "cpu", boundary=False)
        got = _run(analysis, subject, device, boundary=True)
        assert devices.device_of(subject.model).type == "cpu" and not devices._PLACED, "the model went back"
        a, b = _values(ref), _values(got)
        assert a.keys() == b.keys(), f"{name} on {subject.name}: other summaries on {device}"
        assert set(ref.arrays) == set(got.arrays)
        ran += 1
        if name in TIMED:
            continue
        tol = _tolerance(device)
        for k in a:
            if math.isnan(a[k]):
                assert math.isnan(b[k]), f"{name} on {subject.name}: {k} is {b[k]} on {device}, NaN on the CPU"
            else:
                assert b[k] == pytest.approx(a[k], rel=tol["rtol"], abs=tol["atol"]), \
                    f"{name} on {subject.name}: {k} = {b[k]} on {device}, {a[k]} on the CPU"
        for k, arr in ref.arrays.items():
            other = got.arrays[k]
            assert other.shape == arr.shape, f"{name} on {subject.name}: array {k}"
            if arr.dtype.kind == "f":
                np.testing.assert_allclose(other, arr, equal_nan=True, err_msg=f"{name} on {subject.name}: {k}",
                                           **_tolerance(device))
    assert ran, f"{name} applied to none of the test subjects"


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.head(h) * scale, h


def test_the_boundary_moves_at_the_outermost_call_only(monkeypatch):
    """Inputs go in and outputs come out once per call from outside the model (the top module, or a submodule an
    analysis calls itself), never between layers; a call that fails leaves the count as it was."""
    from torch.utils._pytree import tree_leaves

    crossings: list[str] = []
    real_move = devices.move
    inside = []

    def counting(obj, device):  # one entry per crossing with tensors (move's own recursion not counted)
        if inside:
            return real_move(obj, device)
        inside.append(1)
        try:
            if any(isinstance(t, torch.Tensor) for t in tree_leaves(obj)):
                crossings.append(str(torch.device(device)))
            return real_move(obj, device)
        finally:
            inside.pop()

    monkeypatch.setattr(devices, "move", counting)
    net = _Net()
    x = torch.randn(5, 3, requires_grad=True)
    ref = net(x)[0]
    with devices.placed(net, "cpu", boundary=True):
        out, h = net(x, scale=1.0)
        assert crossings == ["cpu", "cpu"]  # the input tuple once, the (logits, hidden) tuple once
        assert torch.equal(out, ref)
        out.sum().backward()  # autograd follows the copies back to the caller's tensor
        assert x.grad is not None and x.grad.shape == x.shape
        crossings.clear()
        net.head(h)
        assert crossings == ["cpu", "cpu"]
        crossings.clear()
        with pytest.raises(RuntimeError):
            net(torch.randn(5, 7))  # the wrong width: fails inside the body
        crossings.clear()
        net(x)
        assert crossings == ["cpu", "cpu"], "a failed call left the boundary counting it as open"
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
        assert hooks == 2 * len(list(net.modules()))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == 0
    assert not devices._PLACED


def test_the_runner_computes_on_the_build_device_and_gives_the_model_back(tiny_subject, tmp_path, monkeypatch):
    from talkgen.analyses.base import Analysis, Result, _REGISTRY, register
    from talkgen.pipeline import Cache, make_plan, run_plan

    seen = {}

    @register
    class Where(Analysis):
        name = "test-where"
        title = "where it computes"
        section = "looking-in"

        def run(self, ctx):
            seen["placed"] = ctx.subject.model in devices._PLACED
            seen["param"] = str(devices.device_of(ctx.subject.model))
            seen["ctx"] = str(ctx.device)
            seen["out"] = str(ctx.subject.model(ctx.subject.data.x_test).device)
            return Result(analysis=self.name, subject=ctx.subject.name)

    monkeypatch.setattr(devices, "BOUNDARY_ON_CPU", True)
    try:
        for device in DEVICES:
            plan = make_plan([tiny_subject], ["test-where"], "quick")
            (out,) = run_plan(plan, Cache(tmp_path / device), device=device)
            assert out.status == "ok", out.message
            assert seen == {"placed": True, "param": str(torch.device(device)).replace("cuda", "cuda:0"),
                            "ctx": device, "out": "cpu"}
            assert ("gpu_peak_mb" in out.cost) == (device == "cuda")
            assert devices.device_of(tiny_subject.model).type == "cpu"
            assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_subject.model.modules())
    finally:
        _REGISTRY.pop("test-where", None)


@pytest.mark.parametrize("device", DEVICES)
def test_zoo_members_train_on_the_device_as_on_the_cpu(device, tmp_path):
    from talkgen.meta import zoo as Z

    spec = Z.ZooSpec(n=3, chunk=3, steps=(4, 8))
    ref = Z.ZooBuilder(spec, tmp_path / "cpu", threads=1)
    got = Z.ZooBuilder(spec, tmp_path / device, threads=1, device=device)
    assert ref.build() and got.build()
    a, b = ref.load(), got.load()
    for k in a.params:
        assert b.params[k].device.type == "cpu"
        torch.testing.assert_close(b.params[k], a.params[k], **(
            {"rtol": 0, "atol": 0} if device == "cpu" else {"rtol": 1e-3, "atol": 1e-4}))
    assert [r["test_accuracy"] for r in b.records] == pytest.approx([r["test_accuracy"] for r in a.records], abs=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_a_sample_trains_on_the_device_as_on_the_cpu(device, monkeypatch):
    from talkgen.models import samples

    monkeypatch.setattr(devices, "BOUNDARY_ON_CPU", True)  # the boundary's code runs in the training loop here too
    got, info, _ = samples.train_sample_model("digits-cnn", quick=True, device=device)
    monkeypatch.setattr(devices, "BOUNDARY_ON_CPU", False)
    ref, _, _ = samples.train_sample_model("digits-cnn", quick=True)
    assert devices.device_of(got).type == "cpu"
    assert ("device" in info["recipe"]) == (device != "cpu")
    for (k, v), (_, w) in zip(ref.state_dict().items(), got.state_dict().items()):
        torch.testing.assert_close(w, v, **({"rtol": 0, "atol": 0} if device == "cpu" else {"rtol": 1e-2, "atol": 1e-3}),
                                   msg=f"{k} after training on {device}")


def test_the_ledger_shows_gpu_memory_beside_rss_when_there_is_some():
    from talkgen.render.notebook import _provenance_markdown

    row = {"subject": "m", "analysis": "weights", "status": "ok", "wall_s": 1.0, "peak_mem_mb": 12.0,
           "forward_passes": 0, "backward_passes": 0, "cached": False}
    from types import SimpleNamespace

    cpu = _provenance_markdown(SimpleNamespace(provenance={"facts": {}, "ledger": [row]}))
    gpu = _provenance_markdown(SimpleNamespace(provenance={"facts": {}, "ledger": [row | {"gpu_peak_mb": 345.5}]}))
    assert "peak GPU MB" not in cpu
    assert "| peak MB | peak GPU MB |" in gpu and "| 12.0 | 345.5 |" in gpu
