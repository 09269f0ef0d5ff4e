"""The costs of de-opaquing (section 4): what each look cost, how it grows, and what it bought.

What it measures (gathers every earlier result of the build and its cost-ledger entry):

* compute: every analysis's wall time, peak extra memory, forward and backward passes on this
  subject, and its overhead in units of one training epoch of the subject. The epoch is timed
  here: a copy of the model takes ``epoch_batches`` SGD steps on training batches of
  ``batch`` examples (windows for sequence models) after a warm-up, and the mean step time is
  multiplied by the number of batches in the training set.
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

import copy
import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Analysis, Context, Result, Scalar, get_analysis, register
from talkgen.analyses.specs import Bars, Curves, Table

SCALING_ANALYSES = ("weights", "activations", "saliency", "curvature", "loss-landscape")


def epoch_seconds(subject, batch: int, steps: int, seed: int) -> tuple[float, int]:
    """(seconds for one epoch, batches per epoch), extrapolated from ``steps`` timed SGD steps."""
    from talkgen.analyses.loss import cross_entropy

    model = copy.deepcopy(subject.model).train()
    x, y = subject.data.x_train, subject.data.y_train
    rows = batch if subject.task.endswith("classifier") else max(1, batch // 4)
    n_batches = max(1, math.ceil(len(x) / rows))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    times = []
    with torch.enable_grad():
        for i in range(steps + 2):
            idx = torch.randint(0, len(x), (rows,), generator=gen)
            t0 = time.perf_counter()
            loss = cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:  # the first steps warm up allocators and kernels
                times.append(time.perf_counter() - t0)
    return float(np.mean(times)) * n_batches, n_batches


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


def scaling_run(subject, widths: list[int], seed: int) -> dict[str, Any]:
    """Wall time and peak memory of the main analyses on the digits CNN at each width (untrained)."""
    from talkgen.models.architectures import DigitsCNN
    from talkgen.pipeline.costs import CostMeter

    out: dict[str, Any] = {"widths": widths, "params": [], "wall": {}, "mem": {}}
    for i, w in enumerate([widths[0]] + widths):
        warm_up = i == 0  # the first pass warms up kernels, allocators and imports, and is not kept
        torch.manual_seed(seed)
        model = DigitsCNN(width=w, n_classes=len(subject.data.classes)).eval()
        twin = dataclasses.replace(subject, name=f"{subject.name}-width{w}", model=model, checkpoints=(),
                                   load_checkpoints=None, initial_state=None)
        if not warm_up:
            out["params"].append(sum(p.numel() for p in model.parameters()))
        for a in SCALING_ANALYSES:
            analysis = get_analysis(a)
            if analysis.applies_to(twin) is not True:
                continue
            ctx = Context(subject=twin, params=analysis.resolve_params("quick"), seed=seed,
                          device=torch.device("cpu"), profile="quick")
            with torch.random.fork_rng(devices=[]), CostMeter(model) as meter:
                torch.manual_seed(seed)
                analysis.run(ctx)
            if not warm_up:
                out["wall"].setdefault(a, []).append(meter.cost.wall_s)
                out["mem"].setdefault(a, []).append(meter.cost.peak_mem_mb)
    return out


def _scalable(subject) -> bool:
    from talkgen.models.architectures import DigitsCNN

    return type(subject.model) is DigitsCNN and subject.data.labelled


def _get(r, key: str) -> float | None:
    s = r.summaries.get(key) if r is not None else None
    return None if s is None or s.value is None or not math.isfinite(s.value) else float(s.value)


def _shift_verdict(passed: bool | None) -> str:
    return "not testable on this model" if passed is None else "ignored" if passed else "changes it"


def fidelity_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(tool, check, measured, verdict) from whatever ran on this subject."""
    rows: list[tuple[str, str, str, str]] = []
    sal = results.get("saliency")
    if sal is not None and "pass" in sal.data:
        d = sal.data
        rnd_del, rnd_ins = _get(sal, "deletion_auc_random"), _get(sal, "insertion_auc_random")
        for m in d["methods"]:
            rho = _get(sal, f"randomisation_rho.{m}")
            dele, ins = _get(sal, f"deletion_auc.{m}"), _get(sal, f"insertion_auc.{m}")
            measured = (f"randomisation rho {rho:.2f} (passes below {d['threshold']}); "
                        f"input shift {_shift_verdict(d['invariance_pass'].get(m))}; "
                        f"deletion / insertion AUC {dele:.2f} / {ins:.2f} (random {rnd_del:.2f} / {rnd_ins:.2f})"
                        if None not in (rho, dele, ins, rnd_del, rnd_ins) else "")
            rows.append((f"saliency: {d['labels'][m]}", "sanity checks (Adebayo et al.; Kindermans et al.)",
                         measured, "trust" if d["pass"][m] else "fails a check"))
    elif sal is not None:
        chance = _get(sal, "evidence_top3_chance")
        for m in ("occlusion", "integrated_gradients", "grad_x_input", "gradient"):
            top3, pct = _get(sal, f"evidence_top3.{m}"), _get(sal, f"evidence_percentile.{m}")
            if top3 is None or chance is None or pct is None:
                continue
            rows.append((f"token saliency: {m.replace('_', ' ')}", "ranks the known evidence",
                         f"evidence percentile {pct:.2f}; in top 3 {top3:.2f} (chance {chance:.2f})",
                         "trust" if top3 > 3 * chance else "weak"))
    if sal is not None and _get(sal, "ig_completeness_gap") is not None:
        gap = _get(sal, "ig_completeness_gap")
        rows.append(("Integrated Gradients", "completeness (attributions sum to the output change)",
                     f"gap {gap:.2%}", "trust" if gap < 0.05 else "not converged"))
    pr = results.get("probes")
    if pr is not None and _get(pr, "mean_selectivity_linear") is not None:
        lin, mlp = _get(pr, "mean_selectivity_linear"), _get(pr, "mean_selectivity_mlp")
        rows.append(("probes", "selectivity over a control task (Hewitt & Liang)",
                     f"mean selectivity linear {lin:+.2f}, MLP {mlp:+.2f}",
                     "trust" if lin > 0.05 else "probe may be memorising"))
    at = results.get("attention")
    if at is not None and _get(at, "rho.raw.grad_x_input") is not None:
        raw, roll = _get(at, "rho.raw.grad_x_input"), _get(at, "rho.rollout.grad_x_input")
        rows.append(("attention as explanation", "rank agreement with gradient x input",
                     f"raw rho {raw:.2f}" + (f", rollout {roll:.2f}" if roll is not None else ""),
                     "trust" if raw > 0.5 else "weak agreement"))
    ma = results.get("meta-accuracy")
    if ma is not None:
        m = ma.data["metrics"]
        rows.append(("accuracy from weights", "against the recipe and the mean (held-out zoo)",
                     f"tau weights {m['weights']['tau']:.2f}, recipe {m['recipe']['tau']:.2f}, "
                     f"DeepSets {m['deepsets']['tau']:.2f}; R^2 {m['weights']['r2']:.2f}",
                     "beats the recipe" if ma.data["weights_beat_recipe"] else "the recipe ranks better"))
    mt = results.get("meta-trojan")
    if mt is not None:
        res = mt.data["results"]
        rows.append(("trojan detector (MNTD)", "held-out AUC against weight statistics",
                     f"AUC {res['mntd']['auc']:.3f} (unseen trigger kind {res['mntd']['auc_unseen']:.3f}); "
                     f"weights {res['weights']['auc']:.3f}; false-positive rate {res['mntd']['fpr']:.2f}",
                     "trust" if res["mntd"]["auc"] >= 0.9 else "useful, not conclusive"))
    sf = results.get("sparse-features")
    if sf is not None:
        d = sf.data
        rows.append(("sparse autoencoder", "reconstruction and loss recovered (held out)",
                     f"explained variance {d['explained_variance']:.3f} at L0 {d['l0']:.1f}; loss recovered "
                     f"{_get(sf, 'loss_recovered'):.3f}; a feature beats every neuron on {len(d['wins'])} of "
                     f"{len(d['scores'])} labels",
                     "trust" if d["explained_variance"] >= 0.85 and _get(sf, "loss_recovered") >= 0.9 else "lossy"))
    ak = results.get("attacks")
    if ak is not None:
        i = ak.data["eps"].index(ak.data["reference_eps"])
        f = ak.data["flips"]
        rows.append(("explanations, seen by an attacker", f"predictions flipped at eps {ak.data['reference_eps']}",
                     f"along the gradient {f['fgsm'][i]:.1%}, PGD {f['pgd'][i]:.1%}, random {f['random'][i]:.1%}",
                     "explanations are attack maps" if f["fgsm"][i] > 3 * max(f["random"][i], 0.01) else "no gain"))
    return rows


@register
class Costs(Analysis):
    name = "costs"
    title = "What looking inside cost"
    section = "costs"
    version = 1
    gathers = True
    applies_text = "any model (gathers the cost ledger of the analyses that ran before it)"
    params = {"widths": [4, 8, 16, 32, 64], "epoch_batches": 20, "batch": 64}
    quick = {"widths": [8, 16, 32], "epoch_batches": 8}

    def run(self, ctx: Context) -> Result:
        s, p = ctx.subject, ctx.params
        mine = {key.partition("/")[2]: r for key, r in ctx.deps.items() if key.partition("/")[0] == s.name}
        costs = {key.partition("/")[2]: c for key, c in ctx.costs.items() if key.partition("/")[0] == s.name}
        names = [a for a in mine if a != self.name and costs.get(a)]
        epoch_s, n_batches = epoch_seconds(s, int(p["batch"]), int(p["epoch_batches"]), ctx.seed)
        wall = np.array([float(costs[a].get("wall_s", 0.0)) for a in names])
        mem = np.array([float(costs[a].get("peak_mem_mb", 0.0)) for a in names])
        fwd = [int(costs[a].get("forward_passes", 0)) for a in names]
        bwd = [int(costs[a].get("backward_passes", 0)) for a in names]
        order = np.argsort(-wall)
        names = [names[i] for i in order]
        wall, mem = wall[order], mem[order]
        fwd, bwd = [fwd[i] for i in order], [bwd[i] for i in order]
        arrays: dict[str, np.ndarray] = {"wall": wall, "epochs": wall / max(epoch_s, 1e-12), "mem": mem}
        figures: list = []
        tables: list = []
        if names:
            figures.append(Bars(
                id="compute", title="What each analysis cost, in epochs of training",
                caption=f"Wall time of every analysis on {s.name} in this build (from the cost ledger, 2 threads) "
                        f"divided by one training epoch ({epoch_s:.2f} s: {n_batches} SGD steps at batch "
                        f"{p['batch']}, timed over {p['epoch_batches']} steps). Log scale.",
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
        if _scalable(s):
            scaling = None
            for key, r in ctx.deps.items():  # a subject of the same architecture measured it already
                if key.endswith(f"/{self.name}") and r.data.get("scaling", {}).get("widths") == list(p["widths"]):
                    scaling = r.data["scaling"]
                    data["scaling_from"] = r.subject
                    break
            if scaling is None:
                scaling = scaling_run(s, [int(w) for w in p["widths"]], ctx.seed)
            self._scaling(scaling, arrays, figures, tables, summaries, data)
        rows = fidelity_rows(mine)
        if rows:
            tables.append(Table(id="fidelity", title="Which tools can we trust here?",
                                columns=("tool", "check", "measured", "verdict"), rows=tuple(rows),
                                caption="Each row is what the named analysis measured on this model in this build."))
            data["fidelity"] = [list(r) for r in rows]
            summaries["tools_trusted"] = Scalar(float(sum(r[3] == "trust" for r in rows)), "count",
                                                f"tools whose checks passed, of {len(rows)} checked")
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
                      figures=tuple(figures), tables=tuple(tables), data=data)

    @staticmethod
    def _scaling(sc: dict[str, Any], arrays, figures, tables, summaries, data) -> None:
        n = np.array(sc["params"], dtype=float)
        arrays["scale_params"] = n
        xs, ys, labels, styles, rows, fits = [], [], [], [], [], {}
        for a, walls in sc["wall"].items():
            w = np.array(walls, dtype=float)
            b, r2 = fit_exponent(n, w)
            fits[a] = {"wall": b, "wall_r2": r2, "peak_mem_mb": float(sc["mem"][a][-1])}
            key = a.replace("-", "_")
            arrays[f"scale_wall_{key}"] = w
            xs.append("scale_params")
            ys.append(f"scale_wall_{key}")
            labels.append(f"{a} (b = {b:.2f})")
            styles.append("-")
            summaries[f"scaling_exponent.{a}"] = Scalar(b, "", f"{a}: wall time grows as parameters^b")
            rows.append((a, f"{b:.2f}", f"{r2:.2f}", " / ".join(f"{v:.2f}" for v in w), f"{sc['mem'][a][-1]:.0f}"))
        figures.append(Curves(
            id="scaling", title="How each look's cost grows with the model",
            caption=f"Wall time of the main analyses (quick-profile settings) on untrained digits CNNs of widths "
                    f"{', '.join(map(str, sc['widths']))} ({int(n[0]):,} to {int(n[-1]):,} parameters), log-log; "
                    "b is the fitted exponent of time = a * parameters^b.",
            alt="Log-log curves of analysis wall time against parameter count, one per analysis, with fitted exponents.",
            x=tuple(xs), y=tuple(ys), labels=tuple(labels), xlabel="parameters", ylabel="wall time (s)",
            logx=True, logy=True, markers=True, styles=tuple(styles)))
        tables.append(Table(
            id="scaling", title="Fitted scaling exponents",
            columns=("analysis", "b (time)", "fit R^2", f"seconds at widths {', '.join(map(str, sc['widths']))}",
                     "peak extra memory at the widest (MB)"),
            rows=tuple(rows), caption="time = a * parameters^b; b = 1 is linear in the parameter count. A low fit R^2 "
                                      "means a fixed cost (e.g. t-SNE, data handling) hides the model's size."))
        data["scaling"] = sc
        data["exponents"] = fits
