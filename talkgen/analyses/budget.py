"""How much an analysis may cost at the size of the model it looks at, per profile.

Every analysis declares how its cost grows (``Analysis.passes``: forward-pass equivalents over examples; times
the multiply-adds of one forward pass, counted once per model on one example, its work) and which of its
parameters shrink that work (``Analysis.sample_order``). Before anything runs, the plan compares each item's work with its profile's
budget: within it, the item runs as asked; above it, the item's parameters are halved in that order (never
below each one's least) until it fits, and what was sampled is written on its slides and in summary.json;
when even the least is over twice the budget, the item is skipped up front, saying how large it would be.
No analysis runs unbounded on a large model.

The quick profile allows about a minute of work per analysis, the full profile about ten, at a rate assumed per
kind of device (not measured, so that a talk is sized the same on every machine of a kind): 2e10 multiply-adds a
second on a CPU (2 cores, float32, dense layers), 1e12 on a CUDA GPU, 2e11 on Apple's MPS. A build on a GPU
therefore samples and skips less; its items' parameters, and so their cache keys, say what it ran.
"""

from __future__ import annotations

import weakref
from typing import Any, Mapping

BUDGET_SECONDS = {"quick": 60.0, "full": 600.0}  # of work per analysis
RATES = {"cpu": 2e10, "cuda": 1e12, "mps": 2e11}  # multiply-adds per second assumed on each kind of device
RATE = RATES["cpu"]
MEMORY_FACTOR = 3  # an analysis may hold the weights this many times over (the model's own copy included) ...
MEMORY_FLOOR = 2 * 2**30  # ... or this many bytes, whichever is more (a small model is never held back)


def rate(device: Any = "cpu") -> float:
    """The multiply-adds per second the budgets assume on ``device`` ("cuda:1" is a CUDA device)."""
    return RATES.get(str(device).split(":")[0], RATE)


_MACS: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()


def macs_per_unit(subject: Any) -> float:
    """Multiply-adds of one forward pass per unit that ``Analysis.passes`` counts (an example; a token of a token
    model), counted once per model by torch's FlopCounterMode on one example: a convolution costs its weights
    times the positions it slides over, which the parameter count alone misses. The parameter count when the
    count fails (or finds less: an embedding is a lookup, but its rows still pass through an attribution)."""
    model = subject.model
    if model not in _MACS:
        macs = 0.0
        try:
            import torch
            from torch.utils.flop_counter import FlopCounterMode

            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(subject.data.x_test[:1])
            macs = counter.get_total_flops() / 2
        except Exception:  # noqa: BLE001 - an estimate: the parameter count stands in
            macs = 0.0
        _MACS[model] = max(macs, float(parameters(subject))) / example_size(subject)
    return _MACS[model]


def _macs_bound(subject: Any) -> float:
    """An upper bound of :func:`macs_per_unit` with no forward pass: a weight is used at most once per value of an
    input example (a convolution slides over at most as many positions), and about twice per token of a token
    model (its attention's products over the sequence besides)."""
    x = subject.data.x_test
    per_use = 2 if example_size(subject) > 1 else max(1, int(x[0].numel()) if len(x) else 1)
    return float(parameters(subject)) * per_use


def model_bytes(subject: Any) -> int:
    """The bytes of ``subject``'s weights (tied ones once)."""
    return _model_bytes(subject)


def _model_bytes(subject: Any) -> int:
    from talkgen.models.introspect import unique_parameters

    return sum(t.numel() * t.element_size() for t in unique_parameters(subject.model))


LARGE_MODEL_BYTES = 2**28  # 256 MiB of parameters (64M in float32): a large model, run lean


def large(subject: Any) -> bool:
    """Whether ``subject``'s weights make it a large model: the build runs its analyses one at a time in its
    own process, a twin's weights are held only while an analysis runs on it, and analyses that would copy
    the weights keep the copies on disk (the loss landscape) or avoid them (the costs' training steps)."""
    return _model_bytes(subject) >= LARGE_MODEL_BYTES


PASS_SHARE = 2  # a large model's forward (and backward) pass holds at most half its weights' bytes besides them

_ROW_BYTES: "weakref.WeakKeyDictionary[Any, dict[bool, tuple[int, int, int]]]" = weakref.WeakKeyDictionary()


def row_bytes(subject: Any, train: bool = False) -> tuple[int, int, int]:
    """(saved, largest, output) bytes of one row's forward pass with gradients: what it saves for the backward
    pass (the parameters left out: they are held anyway), the largest of those tensors, and its output (a
    language model's logits: a vocabulary's scores per position). In training mode with ``train`` (dropout's
    masks besides), else in the model's own modes; measured once per model and mode on one training row."""
    import torch

    model = subject.model
    per_model = _ROW_BYTES.setdefault(model, {})
    if train not in per_model:
        own = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: set[int] = set()
        saved = largest = 0

        def pack(t: "torch.Tensor") -> None:
            nonlocal saved, largest
            ptr = t.untyped_storage().data_ptr()
            if ptr not in own and ptr not in seen:
                seen.add(ptr)
                n = t.untyped_storage().nbytes()
                saved, largest = saved + n, max(largest, n)
            # nothing kept: the pass is never run backward, and a node keeping an output of its own (with its
            # grad_fn) is a reference cycle that autograd cannot free: it would hold the graph and the weights
            return None

        modes = {m: m.training for m in model.modules()}
        try:
            if train:
                model.train()
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _never_unpacked):
                out = model(subject.data.x_train[:1])
        finally:
            for m, mode in modes.items():
                m.train(mode)
        per_model[train] = (saved, largest, out.numel() * out.element_size())
        del out
    return per_model[train]


def _never_unpacked(_: None) -> "Any":
    raise RuntimeError("row_bytes keeps nothing for a backward pass")


def pass_budget(subject: Any) -> int | None:
    """The bytes one forward (and backward) pass of a large model may hold besides its weights: 1/``PASS_SHARE``
    of them; None for a model that is not large (its passes are not held back)."""
    return model_bytes(subject) // PASS_SHARE if large(subject) else None


def row_cost(subject: Any, grad: bool = False, train: bool = False) -> int:
    """What one row of a pass costs (:func:`row_bytes`): of a backward pass, what its forward saves and its
    output's gradient besides; of a forward pass without gradients, its output about three times over (the
    logits, a softmax of them, a copy) and the largest tensor the pass makes on the way."""
    saved, largest, out = row_bytes(subject, train)
    return max(1, saved + 2 * out if grad else largest + 3 * out)


def pass_rows(subject: Any, most: int | None, grad: bool = False, train: bool = False) -> int | None:
    """Rows (examples; sequences of a token model) per forward pass, ``grad``: per forward and backward pass:
    ``most`` for a model that is not large (None: as many as there are); for a large one as many as
    :func:`pass_budget` holds at :func:`row_cost` each (and no more than ``most``), at least one."""
    limit = pass_budget(subject)
    if limit is None:
        return most
    rows = max(1, limit // row_cost(subject, grad, train))
    return int(rows if most is None else min(most, rows))


def fits_in_memory(subject: Any, copies: float) -> bool:
    """Whether holding ``copies`` copies of the weights besides the model's own stays within the limit."""
    size = _model_bytes(subject)
    return (1 + copies) * size <= max(MEMORY_FACTOR * size, MEMORY_FLOOR)


def _memory(analysis: Any, subject: Any, params: Mapping[str, Any]) -> tuple[float, int, float] | None:
    """(copies of the weights held at once, the model's own included; bytes of one copy; bytes allowed) when the
    item would hold more than allowed, else None."""
    copies = analysis.copies(subject, params)
    if copies is None or fits_in_memory(subject, copies):
        return None
    size = _model_bytes(subject)
    return 1 + copies, size, max(MEMORY_FACTOR * size, MEMORY_FLOOR)


def work(analysis: Any, subject: Any, params: Mapping[str, Any]) -> float | None:
    """The multiply-adds ``analysis`` would spend on ``subject`` with ``params`` (None: not budgeted)."""
    passes = analysis.passes(subject, params)
    return None if passes is None else passes * macs_per_unit(subject)


def declared_seconds(analysis: Any, subject: Any, params: Mapping[str, Any], device: Any = "cpu") -> float | None:
    """The seconds ``analysis`` declares for ``subject`` at the rate assumed on ``device``, once the model's
    multiply-adds were counted (planning counts them where a model is large enough to matter); None otherwise."""
    macs = _MACS.get(subject.model)
    passes = analysis.passes(subject, params) if macs is not None else None
    return None if passes is None else passes * macs / rate(device)


def parameters(subject: Any) -> int:
    from talkgen.models.introspect import parameter_count

    return parameter_count(subject.model)


def example_size(subject: Any) -> int:
    """What one example costs relative to one input vector: a token model's example is a sequence."""
    x = subject.data.x_test
    return int(x.shape[1]) if x.ndim == 2 and not x.is_floating_point() else 1


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fit(analysis: Any, subject: Any, params: Mapping[str, Any], profile: str,
        device: Any = "cpu") -> tuple[dict[str, Any], str, str | None]:
    """``params`` sized to the profile's budget on ``device``: (params, what was sampled ("" when nothing), a reason
    to skip (None when it runs))."""
    p = dict(params)
    passes = analysis.passes(subject, p)
    if passes is None:
        return p, "", None
    n = parameters(subject)
    speed = rate(device)
    budget = BUDGET_SECONDS.get(profile, BUDGET_SECONDS["full"]) * speed
    if passes * _macs_bound(subject) <= budget and _memory(analysis, subject, p) is None:
        return p, "", None  # within the budget even at the bound: no forward pass to count (cheap planning)
    cost = passes * macs_per_unit(subject)
    changed: dict[str, tuple[Any, Any]] = {}
    least = dict(analysis.sample_order)
    # a parameter that does not drive this subject's work even at its least (a classifier's cap on a sequence
    # model's card, a batch larger than the data) is left as asked, and not reported as sampled
    order = [k for k, _ in analysis.sample_order
             if k in p and (not isinstance(p[k], int) or work(analysis, subject, p | {k: least[k]}) < cost)]
    while cost > budget:
        moved = False
        for k in order:
            if cost <= budget:
                break
            v = p[k]
            if isinstance(v, int) and v > least[k]:
                p[k] = max(least[k], v // 2)
                changed[k] = (changed.get(k, (v, None))[0], p[k])
                moved = True
                cost = work(analysis, subject, p)
        if not moved:
            break
    if cost > 2 * budget:
        return dict(params), "", (f"too large for the {profile} profile at {n:,} parameters: even sampled it would "
                                  f"take about {duration(cost / speed)} here (the profile allows about "
                                  f"{duration(budget / speed)}); give it smaller parameters under "
                                  f"[analyses.params.{analysis.name}]"
                                  + (", or run --profile full" if profile != "full" else ""))
    if over := _memory(analysis, subject, p):
        held, size, allowed = over
        return dict(params), "", (f"too large at {n:,} parameters: it would hold about {held:.0f} copies of the "
                                  f"weights at once ({held * size / 2**30:.1f} GiB; the limit is "
                                  f"{allowed / 2**30:.1f} GiB, {MEMORY_FACTOR} times the model or "
                                  f"{MEMORY_FLOOR / 2**30:.0f} GiB)")
    if not changed:
        return p, "", None
    note = ", ".join(f"{k.replace('_', ' ')} {a:,} → {b:,}" for k, (a, b) in changed.items())
    return p, f"sampled for a model of {n:,} parameters: {note}", None
