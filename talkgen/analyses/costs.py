"""The costs of de-opaquing (section 4): what each look cost, how it grows, and what it bought.

What it measures (gathers every earlier result of the build and its cost-ledger entry):

* compute: every analysis's wall time, peak extra memory, forward and backward passes on this
  subject, and its overhead in units of one training epoch of the subject. The epoch is timed
  here: the model takes ``epoch_batches`` SGD steps on training batches of ``batch`` examples
  (windows for sequence models) after a warm-up, each update computed beside the weights, not into
  them (``epoch_seconds``: no copy of the model), and the mean step time is multiplied by the number
  of batches in the training set.
* scaling: for the digits CNN architecture, the main analyses (weights, activations, saliency,
  curvature, loss-landscape, with their quick-profile parameters) run again on untrained copies
  at several widths; wall time and peak memory against parameter count on log-log axes, with the
  fitted exponent b of cost = a * params^b per analysis. A second subject of the same
  architecture reuses the first one's measurements.
* fidelity: what the checks of the other analyses said, in one "which tools can we trust here"
  table: saliency sanity checks and deletion/insertion against a random order, evidence
  percentiles for token models, Integrated Gradients' completeness, probe selectivity,
  meta-networks against their baselines, the sparse autoencoder's reconstruction, and how much
  more an explanation's direction flips predictions than a random one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from talkgen import devices
from talkgen.analyses.base import Analysis, Context, Result, Scalar, TwinRequest, register
from talkgen.models.twins import widens
from talkgen.specs import Bars, Curves, Table


MIN_WIDTHS, MIN_FIT = 4, 0.9  # an exponent is quoted only from this many widths and this good a fit (R²)

SCRATCH_ELEMENTS = 2**23  # the timed step's update is written into a buffer of at most this many values


def batch_rows(subject, batch: int) -> int:
    """Rows of a training batch: ``batch`` examples of a classifier, a quarter as many sequences of a sequence model."""
    return batch if subject.task.endswith("classifier") else max(1, batch // 4)


def step_rows(subject, batch: int) -> int:
    """The rows of a timed training step: :func:`batch_rows`; for a large model (``budget.large``) no more than
    keep the step within half its weights' memory (``budget.pass_budget``) besides its largest parameter's
    gradient, a row costing what ``budget.row_cost`` measures in training mode: the step does not hold a
    language model's vocabulary-wide logits for a whole batch (smaller steps, more of them per epoch)."""
    from talkgen.analyses import budget
    from talkgen.models.introspect import unique_parameters

    rows = batch_rows(subject, batch)
    limit = budget.pass_budget(subject)
    if limit is None:
        return rows
    # the largest parameter's gradient is made while the whole batch's activations are held (the output layer's,
    # the first the backward pass reaches: a language model's vocabulary-wide embedding)
    largest = max((p.numel() * p.element_size() for p in unique_parameters(subject.model) if p.requires_grad),
                  default=0)
    return int(max(1, min(rows, (limit - largest) // budget.row_cost(subject, grad=True, train=True))))


def epoch_seconds(subject, batch: int, steps: int, seed: int, lr: float = 1e-3,
                  rows: int | None = None) -> tuple[float, int]:
    """(seconds for one epoch, batches per epoch), extrapolated from ``steps`` timed SGD steps of ``rows`` rows
    (default: :func:`step_rows` of ``batch``).

    A step is a forward pass in training mode, the backward pass and SGD's update ``p - lr * g`` of every
    trainable parameter, on the subject's own model and without a copy of it: the update of each parameter is
    computed as soon as its gradient is complete (a hook, as an optimiser fused into the backward pass does)
    into a scratch buffer instead of into the weights, and the gradient is let go. The same arithmetic and
    memory traffic as a step, with one parameter's gradient alive at a time; the model's weights are never
    written, and its modes, buffers (batch-norm statistics) and gradients are put back afterwards."""
    from talkgen.analyses.loss import cross_entropy
    from talkgen.models.introspect import unique_parameters

    model = subject.model
    x, y = subject.data.x_train, subject.data.y_train
    rows = rows or step_rows(subject, batch)
    n_batches = max(1, math.ceil(len(x) / rows))
    grads = [(p, p.grad) for p in unique_parameters(model) if p.requires_grad]
    scratch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
    for p, _ in grads:  # one buffer per device and type, as long as the largest parameter up to SCRATCH_ELEMENTS
        key = (p.device, p.dtype)
        size = min(p.numel(), SCRATCH_ELEMENTS)
        if key not in scratch or scratch[key].numel() < size:
            scratch[key] = torch.empty(size, device=p.device, dtype=p.dtype)

    def update(p: torch.Tensor) -> None:
        if p.grad is not None:
            w, g = p.detach().reshape(-1), p.grad.reshape(-1)
            buf = scratch[(p.device, p.dtype)]
            for i in range(0, len(w), len(buf)):  # a slice at a time: a vocabulary's embedding is not copied whole
                n = min(len(buf), len(w) - i)
                torch.add(w[i:i + n], g[i:i + n], alpha=-lr, out=buf[:n])
            p.grad = None

    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    gen = torch.Generator().manual_seed(seed)
    times = []
    handles, untied = [], []
    try:
        untied = _untie(model)
        params = [p for p in unique_parameters(model) if p.requires_grad]
        handles = [p.register_post_accumulate_grad_hook(update) for p in params]
        for p in params:
            p.grad = None
        model.train()
        with torch.enable_grad():
            for i in range(steps + 2):
                idx = torch.randint(0, len(x), (rows,), generator=gen)
                t0 = time.perf_counter()
                cross_entropy(model(x[idx]), y[idx]).backward()
                devices.sync(devices.device_of(model))  # a GPU queues its work: the clock waits for it
                if i >= 2:  # the first steps warm up allocators and kernels
                    times.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
        for module, name, p in untied:
            module._parameters[name] = p
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g
        for m, training in modes.items():
            m.train(training)
    return float(np.mean(times)) * n_batches, n_batches


def _untie(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Parameter]]:
    """Every use but the first of a parameter that several modules share (tied weights: a language model's
    embedding and output layer) given a parameter of its own on the same memory, for the timed steps: each
    use's gradient is then applied as soon as it is complete, instead of the first one waiting through the
    whole backward pass for the last (a GPT-2's 154 MB embedding gradient held twice). (module, name, the
    shared parameter) for each, to put back."""
    seen: set[int] = set()
    untied = []
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) in seen:
                module._parameters[name] = torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
                untied.append((module, name, p))
            seen.add(id(p))
    return untied


def fit_exponent(n: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """(b, r2) of log cost = log a + b log n by least squares (positive costs only)."""
    keep = (cost > 0) & (n > 0)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    lx, ly = np.log(n[keep]), np.log(cost[keep])
    b, a = np.polyfit(lx, ly, 1)
    resid = ly - (a + b * lx)
    ss = float(((ly - ly.mean()) ** 2).sum())
    return float(b), (1 - float((resid ** 2).sum()) / ss) if ss > 0 else float("nan")


def scaling_from_twins(subject_name: str, widths: list[int], deps, costs) -> dict[str, Any]:
    """Wall time and peak memory of every analysis the pipeline ran on the subject's width twins
    (untrained, quick-profile settings), from the cost ledger; parameters from their model cards or weights."""
    out: dict[str, Any] = {"widths": [], "params": [], "wall": {}, "mem": {}}
    per_width = []
    for w in widths:
        twin = TwinRequest("width", w).name(subject_name)
        ran = {key.partition("/")[2]: c for key, c in costs.items() if key.partition("/")[0] == twin and c}
        n_params = _parameters(deps, twin)
        if ran and n_params:
            per_width.append((w, n_params, ran))
    shared = set.intersection(*(set(r) for _, _, r in per_width)) if per_width else set()
    for w, n_params, ran in per_width:
        out["widths"].append(w)
        out["params"].append(n_params)
        for a in sorted(shared):
            out["wall"].setdefault(a, []).append(float(ran[a].get("wall_s", 0.0)))
            out["mem"].setdefault(a, []).append(float(ran[a].get("peak_mem_mb", 0.0)))
    return out


def _parameters(deps, twin: str) -> int:
    """A twin's parameter count, from whichever of its results states it."""
    for key, r in deps.items():
        subject, _, _ = key.partition("/")
        if subject == twin and "n_params" in r.data:
            return int(r.data["n_params"])
    return 0


@register
class Costs(Analysis):
    name = "costs"
    order = 90
    title = "What looking inside cost"
    section = "costs"
    version = 6  # 2: tools checked and widths timed are summaries; 3: a fit's R² carries its n; 4: exponents in the
    # legend only where a power law fits; 5: activations timed without t-SNE; 6: the epoch timed on the model
    # itself, each update computed beside the weights (no copy of the model), a large model's steps sized to memory
    gathers = True
    applies_text = "any model (gathers the cost ledger of the analyses that ran before it)"
    params = {"widths": [4, 8, 16, 32, 64], "epoch_batches": 20, "batch": 64}
    quick = {"widths": [4, 8, 16], "epoch_batches": 8}

    # timing an epoch: epoch_batches SGD steps (and two to warm up), each a forward and a backward pass (about
    # three forward passes' work) over a batch; a large model times fewer, smaller steps (said so)
    sample_order = (("epoch_batches", 1), ("batch", 4))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        return 3 * (params["epoch_batches"] + 2) * batch_rows(subject, params["batch"]) * example_size(subject)

    def twins(self, subject, params) -> tuple[TwinRequest, ...]:
        """Untrained copies at each width, where the architecture has one: the pipeline times the
        analyses that run on width twins (with quick-profile settings, so both profiles fit). The activations
        are timed without their t-SNE pictures: those cost what the number of points costs, whatever the
        model, and would only hide how the rest grows with it."""
        if not widens(subject) or not subject.data.labelled:
            return ()
        return tuple(TwinRequest("width", int(w), profile="quick", params=(("activations", "tsne_layers", 0),))
                     for w in params["widths"])

    def run(self, ctx: Context) -> Result:
        s, p = ctx.subject, ctx.params
        mine = {key.partition("/")[2]: r for key, r in ctx.deps.items() if key.partition("/")[0] == s.name}
        costs = {key.partition("/")[2]: c for key, c in ctx.costs.items() if key.partition("/")[0] == s.name}
        names = [a for a in mine if a != self.name and costs.get(a)]
        rows = step_rows(s, int(p["batch"]))  # measured once for a large model
        epoch_s, n_batches = epoch_seconds(s, int(p["batch"]), int(p["epoch_batches"]), ctx.seed, rows=rows)
        unit = "examples" if s.task.endswith("classifier") else "sequences"
        wall = np.array([float(costs[a].get("wall_s", 0.0)) for a in names])
        mem = np.array([float(costs[a].get("peak_mem_mb", 0.0)) for a in names])
        fwd = [int(costs[a].get("forward_passes", 0)) for a in names]
        bwd = [int(costs[a].get("backward_passes", 0)) for a in names]
        order = np.argsort(-wall)
        names = [names[i] for i in order]
        wall, mem = wall[order], mem[order]
        fwd, bwd = [fwd[i] for i in order], [bwd[i] for i in order]
        threads = sorted({int(costs[a].get("threads", 0)) for a in names} - {0})
        on = "-".join(map(str, sorted({threads[0], threads[-1]}))) if threads else ""
        on = f", {on} thread{'' if on == '1' else 's'}" if on else ""
        arrays: dict[str, np.ndarray] = {"wall": wall, "epochs": wall / max(epoch_s, 1e-12), "mem": mem}
        figures: list = []
        tables: list = []
        if names:
            figures.append(Bars(
                id="compute", title="What each analysis cost, in epochs of training",
                caption=f"Wall time of every analysis on {s.name} in this build (from the cost ledger{on}) "
                        f"divided by one training epoch ({epoch_s:.2f} s: {n_batches} SGD steps of {rows} "
                        f"{unit}, timed over {p['epoch_batches']} steps). Log scale.",
                alt="Bars of each analysis's cost in training epochs, log scale.",
                categories=tuple(names), values=("epochs",), series=("wall time / one epoch",),
                ylabel="cost in training epochs", logy=True))
            tables.append(Table(
                id="ledger", title="The cost ledger",
                columns=("analysis", "wall time (s)", "epochs of training", "peak extra memory (MB)",
                         "forward passes", "backward passes"),
                rows=tuple((a, f"{wall[i]:.2f}", f"{wall[i] / epoch_s:.1f}", f"{mem[i]:.0f}", str(fwd[i]), str(bwd[i]))
                           for i, a in enumerate(names)),
                caption="Cached results show the cost of the run that made them."))
        total = float(wall.sum())
        summaries = {
            "total_wall_s": Scalar(total, "s", "wall time of every analysis on this model"),
            "epoch_s": Scalar(epoch_s, "s", "one training epoch of this model (timed steps, extrapolated)"),
            "total_epochs": Scalar(total / max(epoch_s, 1e-12), "epochs", "all analyses, in training epochs"),
        }
        data: dict[str, Any] = {"names": names, "epoch_s": epoch_s, "n_batches": n_batches, "total": total,
                                "costliest": names[0] if names else None,
                                "costliest_s": float(wall[0]) if names else 0.0}
        scaling = scaling_from_twins(s.name, [int(w) for w in p["widths"]], ctx.deps, ctx.costs)
        if len(scaling["widths"]) >= 2 and scaling["wall"]:
            self._scaling(scaling, arrays, figures, tables, summaries, data)
        checks = [c for r in mine.values() for c in r.checks]  # each analysis states its own trust checks
        if checks:
            tables.append(Table(id="fidelity", title="Which tools can we trust here?",
                                columns=("tool", "check", "measured", "verdict"),
                                rows=tuple((c.tool, c.check, c.measured, c.verdict) for c in checks),
                                caption="Each row is what the named analysis measured on this model in this build."))
            data["fidelity"] = [[c.tool, c.check, c.measured, c.verdict, c.passed] for c in checks]
            summaries["tools_trusted"] = Scalar(float(sum(c.passed for c in checks)), "count",
                                                f"tools whose checks passed, of {len(checks)} checked")
            summaries["tools_checked"] = Scalar(float(len(checks)), "count", "tools whose own checks ran on this model")
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
                      figures=tuple(figures), tables=tuple(tables), data=data)

    @staticmethod
    def _scaling(sc: dict[str, Any], arrays, figures, tables, summaries, data) -> None:
        n = np.array(sc["params"], dtype=float)
        arrays["scale_params"] = n
        xs, ys, labels, styles, rows, fits = [], [], [], [], [], {}
        summaries["scaling_widths"] = Scalar(float(len(n)), "widths", "model widths the scaling study timed")
        for a, walls in sc["wall"].items():
            w = np.array(walls, dtype=float)
            b, r2 = fit_exponent(n, w)
            fits[a] = {"wall": b, "wall_r2": r2, "peak_mem_mb": float(sc["mem"][a][-1])}
            key = a.replace("-", "_")
            arrays[f"scale_wall_{key}"] = w
            xs.append("scale_params")
            ys.append(f"scale_wall_{key}")
            # an exponent is a law only from MIN_WIDTHS sizes and a fit R² of MIN_FIT; else the legend says so
            lawful = len(n) >= MIN_WIDTHS and r2 >= MIN_FIT
            labels.append(f"{a} (b = {b:.2f})" if lawful else f"{a} (no power law fits)" if len(n) >= MIN_WIDTHS
                          else a)
            styles.append("-")
            summaries[f"scaling_exponent.{a}"] = Scalar(b, "", f"{a}: wall time grows as parameters^b")
            summaries[f"scaling_r2.{a}"] = Scalar(r2, "R²", f"{a}: how well the power law fits the timings",
                                                  n=len(n))  # a fit through a handful of widths: no interval
            rows.append((a, f"{b:.2f}", f"{r2:.2f}", " / ".join(f"{v:.2f}" for v in w), f"{sc['mem'][a][-1]:.0f}"))
        figures.append(Curves(
            id="scaling", title="How each look's cost grows with the model",
            caption=f"Wall time of the main analyses (quick-profile settings; activations without its t-SNE "
                    f"pictures, which cost the same at every width) on untrained digits CNNs of widths "
                    f"{', '.join(map(str, sc['widths']))} ({int(n[0]):,} to {int(n[-1]):,} parameters), log-log; "
                    "b is the fitted exponent of time = a * parameters^b.",
            alt="Log-log curves of analysis wall time against parameter count, one per analysis, with fitted exponents.",
            x=tuple(xs), y=tuple(ys), labels=tuple(labels), xlabel="parameters", ylabel="wall time (s)",
            logx=True, logy=True, markers=True, styles=tuple(styles)))
        tables.append(Table(
            id="scaling", title="Fitted scaling exponents",
            columns=("analysis", "b (time)", "fit R²", f"seconds at widths {', '.join(map(str, sc['widths']))}",
                     "peak extra memory at the widest (MB)"),
            rows=tuple(rows), caption=f"time = a * parameters^b; b = 1 is linear in the parameter count. Each fit R² "
                                      f"is over n = {len(n)} widths, too few points for an interval. A low fit R² "
                                      "means a fixed cost (e.g. t-SNE, data handling) hides the model's size."))
        data["scaling"] = sc
        data["exponents"] = fits
        data["min_widths"], data["min_fit"] = MIN_WIDTHS, MIN_FIT
