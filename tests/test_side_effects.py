"""No side effects: after every registered analysis, also one forced to fail midway, the model
keeps no hooks and its mode, requires_grad flags and weights are unchanged. Table-driven over
the registry, so a new analysis is covered by adding it to the registry."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from talkgen.analyses.base import Context, registry
from talkgen.analyses.hooks import capture_outputs
from talkgen.hashing import hash_module
from talkgen.pipeline.runner import model_state


class FailAfter(TorchFunctionMode):
    """Raise on the n-th torch function call: a failure in the middle of any analysis."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # grad-mode switches are context-manager plumbing (no_grad's exit), not the analysis's work
        if "grad_enabled" not in getattr(func, "__name__", ""):
            self.n -= 1
            if self.n == 0:
                raise RuntimeError("forced failure")
        return func(*args, **(kwargs or {}))


def _subjects(tiny):
    import dataclasses

    from conftest import TinyCNN, tiny_char_subject
    from talkgen.models.samples import load_sample

    torch.manual_seed(5)
    early = TinyCNN().state_dict()
    late = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    with_checkpoints = dataclasses.replace(tiny, name="tiny-ckpt", checkpoints=(0, 1),
                                           load_checkpoints=lambda: [(0, early), (1, late)])
    return [tiny, load_sample("digits-cnn"), tiny_char_subject(), with_checkpoints, _tiny_transformer()]


def _tiny_transformer():
    from talkgen.models.architectures import AttentionOnlyTransformer
    from talkgen.models.recipes import induction_batch
    from talkgen.subject import Subject, SubjectData

    torch.manual_seed(0)
    model = AttentionOnlyTransformer(vocab=8, d_model=16, heads=2, layers=2, max_len=16)
    x, y = induction_batch(12, torch.Generator().manual_seed(0), length=16, periods=(3, 6), vocab=8)
    return Subject(name="tiny-attn", model=model, task="sequence-model",
                   data=SubjectData(x, y, x, y, tuple(f"t{i}" for i in range(8)), "probe"), source="test")


def test_every_analysis_is_exercised_by_the_table(tiny_subject):
    for name, cls in registry().items():
        assert any(cls().applies_to(s) is True for s in _subjects(tiny_subject)), name


def _snapshot(model):
    return model_state(model), hash_module(model)


# Smaller settings where an analysis has them: this test is about state, not numbers.
FAST = {"tsne_points": 40, "n_inputs": 80, "n_chars": 2000, "max_sequences": 20, "tsne_iterations": 250,
        "zoo_members": 24, "zoo_steps": [30, 60], "deepsets_epochs": 10, "mntd_epochs": 3,
        "n_examples": 150, "steps": 20, "n_train": 4096, "n_eval": 1024, "min_steps": 20, "batch": 32,
        "lanczos_iterations": 6, "lanczos_max_iterations": 10, "probes": 3}


FAST_FOR = {"saliency": {"n_inputs": 4, "deletion_inputs": 8, "smooth_samples": 4, "ig_steps": 8, "ig_max_steps": 16,
                         "random_orders": 2, "curve_steps": 8}}


def _params(analysis):
    fast = FAST | FAST_FOR.get(analysis.name, {})
    return analysis.resolve_params("quick", {k: v for k, v in fast.items() if k in analysis.params})


CASES = [(name, fail) for name in registry() for fail in (None, 2, 25)]


@pytest.mark.parametrize("name,fail_after", CASES, ids=[f"{n}-fail{f}" for n, f in CASES])
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_analysis_leaves_model_as_found(name, fail_after, train_mode, tiny_subject):
    for subject in _subjects(tiny_subject):
        analysis = registry()[name]()
        if analysis.applies_to(subject) is not True:
            continue
        model = subject.model
        model.train(train_mode)
        first = next(model.parameters())
        first.requires_grad_(False)  # a mixed state must also survive
        before = _snapshot(model)
        ctx = Context(subject=subject, params=_params(analysis), seed=0,
                      device=torch.device("cpu"), profile="quick")
        if fail_after is None:
            analysis.run(ctx)
        else:
            try:
                with FailAfter(fail_after):
                    analysis.run(ctx)
            except RuntimeError:
                pass
        assert _snapshot(model) == before, f"{name} changed {subject.name}"
        assert torch.is_grad_enabled(), f"{name} left autograd switched off"
        first.requires_grad_(True)
        model.eval()


def test_capture_outputs_removes_hooks_on_error(tiny_subject):
    model = tiny_subject.model
    before = _snapshot(model)
    with pytest.raises(ZeroDivisionError):
        with capture_outputs(model, ["conv", "fc"]) as outs:
            model(tiny_subject.data.x_test)
            assert outs["conv"][0].shape == (8, 3, 4, 4)
            1 / 0
    assert _snapshot(model) == before


def test_runner_rejects_an_analysis_that_leaves_a_hook(tiny_subject, tmp_path):
    from talkgen.analyses.base import Analysis, Result, _REGISTRY, register
    from talkgen.pipeline import Cache, make_plan, run_plan

    @register
    class Leaky(Analysis):
        name = "test-leaky"
        title = "leaks a hook"
        section = "looking-in"

        def run(self, ctx):
            ctx.subject.model.register_forward_hook(lambda *a: None)
            return Result(analysis=self.name, subject=ctx.subject.name)

    try:
        plan = make_plan([tiny_subject], ["test-leaky"], "quick")
        (outcome,) = run_plan(plan, Cache(tmp_path))
        assert outcome.status == "failed" and "left the model changed" in outcome.message
    finally:
        _REGISTRY.pop("test-leaky")
        tiny_subject.model._forward_hooks.clear()
