"""Saliency maps and their sanity checks.

What it measures: for a fixed, seeded set of held-out images, the maps of eight attribution
methods from ``talkgen.attribution`` (gradient, gradient x input, SmoothGrad, SmoothGrad-squared,
VarGrad, Integrated Gradients with a zero baseline, occlusion, Grad-CAM on the last convolution),
each explaining the model's predicted class; then the three sanity checks of
``talkgen.analyses.sanity`` on every method: cascading randomisation (Spearman and SSIM of the
|map| against the original as layers are re-initialised from the top), input invariance (a
shifted twin network) and deletion/insertion areas against random orders. Integrated Gradients'
completeness gap, sum(attribution) - (f(x) - f(0)), is reported relative to f(x) - f(0).

Assumptions: an image classifier whose input is (B, C, H, W); SmoothGrad's noise is a fraction
of the data's value range; deletion and insertion replace pixels (all channels) with 0.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from talkgen import attribution as A
from talkgen.analyses import sanity
from talkgen.analyses.base import Analysis, Check, Context, Finding, Result, Scalar, register, value_of
from talkgen.specs import Bars, Curves, ImageGrid, Table

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def image_methods(p: dict, data_range: float, seed: int, has_conv: bool) -> list[tuple[str, str, Method]]:
    """(key, label, fn(model, x, target)) for every method the analysis runs."""
    noise = p["smooth_noise"] * data_range
    ib = p["internal_batch_size"]

    def smooth(variant: str) -> Method:
        return lambda m, x, t: A.smoothgrad(m, x, t, n_samples=p["smooth_samples"], stdev=noise, variant=variant,
                                            internal_batch_size=ib, generator=torch.Generator().manual_seed(seed))

    w = p["occlusion_window"]
    methods: list[tuple[str, str, Method]] = [
        ("gradient", "gradient", lambda m, x, t: A.saliency(m, x, t)),
        ("grad_x_input", "gradient × input", lambda m, x, t: A.input_x_gradient(m, x, t)),
        ("smoothgrad", "SmoothGrad", smooth("smoothgrad")),
        ("smoothgrad_sq", "SmoothGrad²", smooth("smoothgrad_sq")),
        ("vargrad", "VarGrad", smooth("vargrad")),
        ("integrated_gradients", "Integrated Gradients",
         lambda m, x, t: A.integrated_gradients(m, x, t, n_steps=p["ig_steps"], internal_batch_size=ib)),
        ("occlusion", f"occlusion {w}×{w}",
         lambda m, x, t: A.occlusion(m, x, t, window=(x.shape[1], w, w), internal_batch_size=ib)),
    ]
    if has_conv:
        layer = p["grad_cam_layer"] or None
        methods.append(("grad_cam", "Grad-CAM", lambda m, x, t: A.grad_cam(m, x, t, layer=layer)))
    return methods


def as_map(attr: torch.Tensor) -> np.ndarray:
    """|attribution| summed over channels: (N, H, W)."""
    return attr.detach().abs().sum(1).numpy()


def normalise(maps: np.ndarray) -> np.ndarray:
    top = maps.reshape(len(maps), -1).max(1).reshape(-1, 1, 1)
    return np.where(top > 0, maps / np.where(top > 0, top, 1), 0.0)


@register
class Saliency(Analysis):
    param_bounds = {"input_shift": (None, None), "cascade_threshold": (0, 1)}
    name = "saliency"
    order = 40
    runs_on_twins = ("width",)  # the costs analysis times it at several widths
    title = "Saliency maps and their sanity checks"
    section = "looking-in"
    version = 2  # 2: findings' titles agree in number ("1 saliency method does not ...")
    applies_text = ("image classifiers (batch x channels x height x width); token models get per-token saliency "
                    "over their text")
    params = {"n_inputs": 64, "show": 6, "deletion_inputs": 256, "ig_steps": 50, "smooth_samples": 50,
              "smooth_noise": 0.15, "occlusion_window": 2, "random_orders": 8, "curve_steps": 32,
              "input_shift": 1.0, "cascade_threshold": 0.3, "invariance_tolerance": 0.01,
              "internal_batch_size": 2048, "grad_cam_layer": "", "ig_tolerance": 0.01, "ig_max_steps": 800}
    quick = {"n_inputs": 12, "deletion_inputs": 48, "smooth_samples": 16, "ig_steps": 32, "random_orders": 4,
             "curve_steps": 16, "ig_max_steps": 256}

    def applies_to(self, subject) -> bool | str:
        if subject.task == "image-classifier" and subject.data.x_test.ndim == 4:
            return True
        if subject.task in ("char-lm", "sequence-model", "text-classifier") and subject.data.x_test.ndim == 2:
            try:
                A.input_embedding(subject.model, subject.data.x_test[:1])
            except ValueError as e:
                return str(e)
            return True
        return "needs an image classifier (batch x channels x height x width) or a token model with an embedding"

    def checks(self, r: Result) -> tuple[Check, ...]:
        """Each method's sanity checks (image models), or how well each ranks known evidence (token
        models); Integrated Gradients' completeness."""
        out: list[Check] = []
        d = r.data
        if "pass" in d:
            rnd_del, rnd_ins = value_of(r, "deletion_auc_random"), value_of(r, "insertion_auc_random")
            for m in d["methods"]:
                rho = value_of(r, f"randomisation_rho.{m}")
                dele, ins = value_of(r, f"deletion_auc.{m}"), value_of(r, f"insertion_auc.{m}")
                shift = d["invariance_pass"].get(m)
                measured = (f"randomisation rho {rho:.2f} (passes below {d['threshold']}); input shift "
                            f"{'not testable on this model' if shift is None else 'ignored' if shift else 'changes it'}; "
                            f"deletion / insertion AUC {dele:.2f} / {ins:.2f} (random {rnd_del:.2f} / {rnd_ins:.2f})"
                            if None not in (rho, dele, ins, rnd_del, rnd_ins) else "")
                out.append(Check(f"saliency: {d['labels'][m]}", "sanity checks (Adebayo et al.; Kindermans et al.)",
                                 measured, bool(d["pass"][m]), "trust" if d["pass"][m] else "fails a check"))
        else:
            chance = value_of(r, "evidence_top3_chance")
            for m in ("occlusion", "integrated_gradients", "grad_x_input", "gradient"):
                top3, pct = value_of(r, f"evidence_top3.{m}"), value_of(r, f"evidence_percentile.{m}")
                if top3 is None or chance is None or pct is None:
                    continue
                ok = top3 > 3 * chance
                out.append(Check(f"token saliency: {m.replace('_', ' ')}", "ranks the known evidence",
                                 f"evidence percentile {pct:.2f}; in top 3 {top3:.2f} (chance {chance:.2f})",
                                 ok, "trust" if ok else "weak"))
        gap = value_of(r, "ig_completeness_gap")
        if gap is not None:
            out.append(Check("Integrated Gradients", "completeness (attributions sum to the output change)",
                             f"gap {gap:.2%}", gap < 0.05, "trust" if gap < 0.05 else "not converged"))
        return tuple(out)

    def run(self, ctx: Context) -> Result:
        if ctx.subject.task != "image-classifier":
            from talkgen.analyses.token_saliency import run_tokens

            return run_tokens(self.name, ctx)
        s, p = ctx.subject, dict(ctx.params)
        model = s.model
        xt = s.data.x_test
        g = ctx.generator()
        pick = torch.randperm(len(xt), generator=g)
        x = xt[pick[: p["n_inputs"]]].float()
        xd = xt[pick[: p["deletion_inputs"]]].float()
        data_range = float(s.data.x_train.max() - s.data.x_train.min()) or 1.0
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        methods = image_methods(p, data_range, ctx.seed, has_conv)
        keys = [k for k, _, _ in methods]
        labels = dict((k, lab) for k, lab, _ in methods)
        with torch.no_grad():
            target = model(x).argmax(1)
            target_d = model(xd).argmax(1)

        # Integrated Gradients once, with its completeness gap; the other methods through their functions
        ig, gap = A.integrated_gradients(model, x, target, n_steps=p["ig_steps"], return_convergence_delta=True,
                                         internal_batch_size=p["internal_batch_size"])
        original = {k: ig if k == "integrated_gradients" else fn(model, x, target) for k, _, fn in methods}
        maps = {k: as_map(a) for k, a in original.items()}
        with torch.no_grad():
            span = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
        rel_gap = (gap.abs() / span.abs().clamp_min(1e-12)).numpy()

        # 1. cascading randomisation
        cascade = sanity.cascading_models(model, x, ctx.seed)
        layer_names = [name for name, _ in cascade]
        rho = np.zeros((len(keys), len(cascade)))
        sim = np.zeros_like(rho)
        example_maps = {k: [maps[k][0]] for k in keys}
        for j, (_, randomised) in enumerate(cascade):
            for i, (k, _, fn) in enumerate(methods):
                m = as_map(fn(randomised, x, target))
                rho[i, j] = float(sanity.spearman_rows(maps[k].reshape(len(x), -1), m.reshape(len(x), -1)).mean())
                sim[i, j] = float(sanity.ssim(maps[k], m).mean())
                example_maps[k].append(m[0])
        half = math.ceil(len(cascade) / 2) - 1  # index after the top half of the layers is randomised
        cascade_pass = {k: rho[i, half] < p["cascade_threshold"] for i, k in enumerate(keys)}

        # 2. input invariance
        twin = sanity.shifted_twin(model, x, p["input_shift"])
        invariance: dict[str, float] = {}
        twin_note = ""
        if isinstance(twin, str):
            twin_note = twin
        else:
            shifted = x + p["input_shift"]
            for k, _, fn in methods:
                a, b = original[k].detach(), fn(twin, shifted, target).detach()
                invariance[k] = float(((a - b).abs().flatten(1).sum(1) /
                                       a.abs().flatten(1).sum(1).clamp_min(1e-12)).mean())
        invariance_pass = {k: v <= p["invariance_tolerance"] for k, v in invariance.items()}

        # 3. deletion and insertion, against random orders
        n_pix = xd.shape[-1] * xd.shape[-2]
        dels, ins = {}, {}
        curves_arrays = {}
        for k, _, fn in methods:
            score = torch.as_tensor(as_map(fn(model, xd, target_d))).flatten(1)
            noise = torch.rand(score.shape, generator=torch.Generator().manual_seed(ctx.seed)) * 1e-9
            order = torch.argsort(score + noise, dim=1, descending=True)  # ties broken at random
            d, i_ = sanity.order_curves(model, xd, target_d, order, p["curve_steps"])
            dels[k], ins[k] = sanity.auc(d), sanity.auc(i_)
            curves_arrays[f"del:{k}"], curves_arrays[f"ins:{k}"] = d.mean(0), i_.mean(0)
        rd, ri = [], []
        rg = torch.Generator().manual_seed(ctx.seed + 1)
        for _ in range(p["random_orders"]):
            order = torch.stack([torch.randperm(n_pix, generator=rg) for _ in range(len(xd))])
            d, i_ = sanity.order_curves(model, xd, target_d, order, p["curve_steps"])
            rd.append(d)
            ri.append(i_)
        rdel, rins = np.mean(rd, axis=0), np.mean(ri, axis=0)
        random_del, random_ins = sanity.auc(rdel), sanity.auc(rins)
        curves_arrays["del:random"], curves_arrays["ins:random"] = rdel.mean(0), rins.mean(0)
        order_pass = {k: dels[k] < random_del and ins[k] > random_ins for k in keys}

        # figures
        show = min(p["show"], len(x))
        grid = [normalise(x[:show].sum(1).numpy())] + [normalise(maps[k][:show]) for k in keys]
        cascade_grid = [normalise(np.stack(example_maps[k])) for k in keys]
        arrays: dict[str, np.ndarray] = {
            "maps": np.concatenate(grid), "cascade_maps": np.concatenate(cascade_grid),
            "layers_randomised": np.arange(len(cascade) + 1, dtype=np.float64),
            "fraction": np.linspace(0, 1, p["curve_steps"] + 1),
            "del_auc": np.array([dels[k] for k in keys] + [random_del]),
            "ins_auc": np.array([ins[k] for k in keys] + [random_ins]),
            "ig_relative_gap": rel_gap, "spearman": rho, "ssim": sim, **curves_arrays,
        }
        for i, k in enumerate(keys):
            arrays[f"rho:{k}"] = np.concatenate([[1.0], rho[i]])
            arrays[f"ssim:{k}"] = np.concatenate([[1.0], sim[i]])
        classes = s.data.classes
        figures = (
            ImageGrid(id="maps", title="What each method says the model looked at",
                      caption=f"Top row: {show} held-out inputs; below, each method's |attribution| for the "
                              "predicted class, each map scaled to its own maximum.",
                      alt=f"A grid of saliency maps: {len(keys)} methods (rows) for {show} input images (columns).",
                      array="maps", colorbar="|attribution| / its maximum", signed=False, columns=show,
                      row_labels=("input",) + tuple(labels[k] for k in keys),
                      panel_titles=tuple(f"pred {classes[int(t)] if int(t) < len(classes) else int(t)}"
                                         for t in target[:show]), max_images=show * (len(keys) + 1)),
            ImageGrid(id="cascade", title="Randomise the layers from the top: do the maps change?",
                      caption="Cascading randomisation (Adebayo et al. 2018) on the first input: left, the map of "
                              "the trained model; then with the layers named above re-initialised cumulatively, "
                              "top first.",
                      alt="A grid of saliency maps: methods (rows) as more layers are randomised (columns).",
                      array="cascade_maps", colorbar="|attribution| / its maximum", signed=False,
                      columns=len(cascade) + 1, row_labels=tuple(labels[k] for k in keys),
                      panel_titles=("trained",) + tuple(f"+ {n}" for n in layer_names),
                      max_images=len(keys) * (len(cascade) + 1)),
            Curves(id="cascade_curves", title="How much of each map survives randomisation",
                   caption=f"Mean Spearman rank correlation (left) and SSIM (right) between each method's |map| "
                           f"and the trained model's, over {len(x)} inputs, as layers are re-initialised from the "
                           f"top; a method passes when ρ < {p['cascade_threshold']} once the top half "
                           f"({', '.join(layer_names[: half + 1])}) is random.",
                   alt="Two panels of lines, one per method, falling from 1 as more layers are randomised.",
                   x=("layers_randomised",) * (2 * len(keys)),
                   y=tuple(f"rho:{k}" for k in keys) + tuple(f"ssim:{k}" for k in keys),
                   labels=tuple(labels[k] for k in keys) * 2, panels=(0,) * len(keys) + (1,) * len(keys),
                   panel_titles=("Spearman ρ of |map|", "SSIM of |map|"), xlabel="layers randomised (top first)",
                   ylabel="similarity to the trained model's map", markers=True),
            Bars(id="deletion_insertion", title="Deletion and insertion",
                 caption=f"Area under the probability of the predicted class as pixels are deleted (lower is "
                         f"better) or inserted into a blank image (higher is better) in each method's order, "
                         f"{len(xd)} inputs; 'random' averages {p['random_orders']} random orders.",
                 alt="Grouped bars of deletion and insertion AUC per method, with a random-order baseline.",
                 categories=tuple(labels[k] for k in keys) + ("random",), values=("del_auc", "ins_auc"),
                 series=("deletion AUC (lower is better)", "insertion AUC (higher is better)"),
                 ylabel="area under the curve"),
        )

        def mark(ok: bool | None) -> str:
            return "—" if ok is None else ("pass" if ok else "FAIL")

        rows = []
        for i, k in enumerate(keys):
            inv = invariance.get(k)
            rows.append((labels[k], f"{rho[i, half]:.2f}", f"{rho[i, -1]:.2f}", mark(cascade_pass[k]),
                         "—" if inv is None else f"{inv:.3f}", mark(invariance_pass.get(k)),
                         f"{dels[k]:.3f}", f"{ins[k]:.3f}", mark(order_pass[k])))
        rows.append(("random order", "", "", "", "", "", f"{random_del:.3f}", f"{random_ins:.3f}", ""))
        table = Table(id="sanity", title="Sanity checks per method",
                      columns=("method", f"ρ, top {half + 1} random", "ρ, all random", "randomisation",
                               "change under input shift", "invariance", "deletion AUC", "insertion AUC",
                               "beats random order"),
                      rows=tuple(rows),
                      caption="ρ: mean Spearman correlation of |map| with the trained model's. Input shift: mean "
                              "relative L1 change of the map on the shifted twin network.")

        passes = {k: cascade_pass[k] and invariance_pass.get(k, True) and order_pass[k] for k in keys}
        summaries = {
            "methods_passing_randomisation": Scalar(float(sum(cascade_pass.values())), "methods",
                                                    f"of {len(keys)}, maps that decorrelate (ρ < "
                                                    f"{p['cascade_threshold']}) once the top half is random"),
            "methods_passing_invariance": Scalar(float(sum(invariance_pass.values())), "methods",
                                                 f"of {len(invariance)}, maps unchanged on the input-shifted twin"),
            "methods_beating_random_order": Scalar(float(sum(order_pass.values())), "methods",
                                                   f"of {len(keys)}, deletion below and insertion above random"),
            "methods_passing_all": Scalar(float(sum(passes.values())), "methods", "pass all three checks"),
            "ig_completeness_gap": Scalar(float(rel_gap.max()), "fraction",
                                          "largest |sum of IG attributions - (f(x) - f(0))| / |f(x) - f(0)|"),
            "deletion_auc_random": Scalar(random_del, "", "deletion AUC of random pixel orders"),
            "insertion_auc_random": Scalar(random_ins, "", "insertion AUC of random pixel orders"),
        }
        for i, k in enumerate(keys):
            summaries[f"randomisation_rho.{k}"] = Scalar(float(rho[i, half]), "Spearman ρ",
                                                         f"{labels[k]}: rank correlation with the trained map "
                                                         f"once the top half of the layers is random")
            summaries[f"deletion_auc.{k}"] = Scalar(dels[k], "", f"{labels[k]}: deletion AUC")
            summaries[f"insertion_auc.{k}"] = Scalar(ins[k], "", f"{labels[k]}: insertion AUC")

        findings = []
        failed = [i for i, k in enumerate(keys) if not cascade_pass[k]]
        if failed:
            worst = max(failed, key=lambda i: rho[i, half])
            findings.append(Finding(
                "medium", f"{len(failed)} of {len(keys)} saliency methods fail the randomisation sanity check",
                f"{', '.join(f'{labels[keys[i]]} (ρ {rho[i, half]:.2f})' for i in failed)} keep their maps after "
                f"{', '.join(layer_names[: half + 1])} are re-initialised: those maps do not depend on what the "
                f"layers learned; do not use them to explain this model", value=float(rho[worst, half]),
                threshold=p["cascade_threshold"]))
        worse = [k for k in keys if not order_pass[k]]
        if worse:
            findings.append(Finding(
                "medium", f"{len(worse)} saliency {'method does' if len(worse) == 1 else 'methods do'} not beat a "
                          "random pixel order",
                "; ".join(f"{labels[k]}: deletion AUC {dels[k]:.3f}, insertion {ins[k]:.3f}" for k in worse)
                + f" (random: {random_del:.3f}, {random_ins:.3f})",
                value=max(dels[k] for k in worse), threshold=random_del))
        changed = [k for k in invariance if not invariance_pass[k]]
        if changed:
            findings.append(Finding(
                "low", f"{len(changed)} saliency {'method is' if len(changed) == 1 else 'methods are'} not "
                       "input-invariant",
                f"{', '.join(f'{labels[k]} ({invariance[k]:.0%})' for k in changed)} change on a twin network that "
                f"computes the same function of inputs shifted by {p['input_shift']:g}",
                value=max(invariance[k] for k in changed), threshold=p["invariance_tolerance"]))
        return Result(
            analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries, figures=figures,
            tables=(table,), findings=tuple(findings),
            data={"methods": keys, "labels": labels, "layers": layer_names, "half": half + 1,
                  "threshold": p["cascade_threshold"], "pass": {k: bool(v) for k, v in passes.items()},
                  "cascade_pass": {k: bool(v) for k, v in cascade_pass.items()},
                  "invariance_pass": {k: bool(v) for k, v in invariance_pass.items()},
                  "order_pass": {k: bool(v) for k, v in order_pass.items()},
                  "twin_note": twin_note, "shift": p["input_shift"], "n_inputs": len(x), "n_deletion": len(xd),
                  "ig_steps": p["ig_steps"], "ig_gap_mean": float(rel_gap.mean()),
                  "grad_cam_layer": (p["grad_cam_layer"] or next(
                      n for n, m in model.named_modules() if m is A.last_conv_layer(model, x[:1]))) if has_conv else None})
