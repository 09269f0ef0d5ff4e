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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from talkgen import attribution as A
from talkgen.analyses import sanity
from talkgen.analyses.base import Analysis, Check, Context, Finding, Result, Scalar, register, value_of
from talkgen.stats import CI_LEVEL
from talkgen.specs import Bars, Curves, ImageGrid, Table

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def occlusion_window(p: Mapping[str, Any], shape: Sequence[int]) -> int:
    """The occlusion window's side for images of ``shape`` (..., H, W): ``occlusion_window`` pixels, or larger where
    that would mean more than ``occlusion_windows`` windows along a side (a 224-pixel image: 14-pixel windows, 256 in
    all, instead of 12,544 at 2 pixels)."""
    return max(int(p["occlusion_window"]), math.ceil(max(shape[-2:]) / int(p["occlusion_windows"])))


def image_methods(p: dict, data_range: float, seed: int, has_conv: bool,
                  shape: Sequence[int] = (1, 1)) -> list[tuple[str, str, Method]]:
    """(key, label, fn(model, x, target)) for every method the analysis runs on images of ``shape``."""
    noise = p["smooth_noise"] * data_range
    ib = p["internal_batch_size"]

    def smooth(variant: str) -> Method:
        return lambda m, x, t: A.smoothgrad(m, x, t, n_samples=p["smooth_samples"], stdev=noise, variant=variant,
                                            internal_batch_size=ib, generator=torch.Generator().manual_seed(seed))

    w = occlusion_window(p, shape)
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
    param_bounds = {"input_shift": (None, None), "cascade_threshold": (0, 1), "occlusion_windows": (1, None)}
    name = "saliency"
    order = 40
    runs_on_twins = ("width",)  # the costs analysis times it at several widths
    title = "Saliency maps and their sanity checks"
    section = "looking-in"
    version = 6  # 2: findings' titles agree in number; 3: the number of methods and of maps that fail randomisation;
    # 4: deletion and insertion AUCs with their n and interval; known-evidence rates too; 5: sentence encoders
    # (attributions of the similarity to the next sentence), and the score a sentence deletion follows is named;
    # 6: occlusion windows grow with the image (at most occlusion_windows along a side)
    cost_hint = 2
    applies_text = ("image classifiers (batch x channels x height x width); token models get per-token saliency "
                    "over their text")
    params = {"n_inputs": 64, "show": 6, "deletion_inputs": 256, "ig_steps": 50, "smooth_samples": 50,
              "smooth_noise": 0.15, "occlusion_window": 2, "occlusion_windows": 16, "random_orders": 8, "curve_steps": 32,
              "input_shift": 1.0, "cascade_threshold": 0.3, "invariance_tolerance": 0.01,
              "internal_batch_size": 2048, "grad_cam_layer": "", "ig_tolerance": 0.01, "ig_max_steps": 800}
    quick = {"n_inputs": 12, "deletion_inputs": 48, "smooth_samples": 16, "ig_steps": 32, "random_orders": 4,
             "curve_steps": 16, "ig_max_steps": 256}

    # each map costs about a backward pass per step of IG and SmoothGrad (and the occlusion windows); the deletion
    # and insertion curves a forward pass per step for each method, and the randomisation cascade a map per layer
    sample_order = (("n_inputs", 4), ("deletion_inputs", 8), ("smooth_samples", 4), ("ig_steps", 8))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        t = example_size(subject)
        if t > 1:  # a token model: four methods per input (IG's steps, occlusion one pass per position), and the
            # deletion curves of a sentence model (eleven steps for each method and random order)
            per_input = 3 * (2 * params["ig_steps"] + 2) + t
            deletion = 11 * (4 + params["random_orders"]) if subject.task in ("text-classifier", "text-encoder") else 0
            return params["n_inputs"] * (per_input + deletion) * t
        from talkgen.models.introspect import has_own_parameters

        # an image: each method's map (a backward pass per IG and SmoothGrad step, a forward pass per occlusion
        # window), made again for every layer the randomisation cascade re-initialises and for the shifted twin
        x = subject.data.x_test[:1]
        w = occlusion_window(params, x.shape)
        windows = math.ceil(x.shape[-2] / w) * math.ceil(x.shape[-1] / w)
        per_map = 3 * (params["ig_steps"] + 3 * params["smooth_samples"] + 4) + windows
        # the layers the cascade can re-initialise: every module with parameters of its own (no forward pass)
        layers = sum(1 for m in subject.model.modules() if has_own_parameters(m))
        curves = 18 * params["deletion_inputs"] * params["curve_steps"]
        return params["n_inputs"] * per_map * (layers + 2) + curves

    def applies_to(self, subject) -> bool | str:
        if subject.task == "image-classifier" and subject.data.x_test.ndim == 4:
            return True
        if subject.task in ("char-lm", "sequence-model", "text-classifier", "text-encoder") \
                and subject.data.x_test.ndim == 2:
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
            from talkgen.stats import with_interval

            est = r.summaries
            for m in d["methods"]:
                rho = value_of(r, f"randomisation_rho.{m}")
                keys = (f"deletion_auc.{m}", f"insertion_auc.{m}", "deletion_auc_random", "insertion_auc_random")
                shift = d["invariance_pass"].get(m)
                measured = (f"randomisation rho {rho:.2f} (passes below {d['threshold']}); input shift "
                            f"{'not testable on this model' if shift is None else 'ignored' if shift else 'changes it'}; "
                            f"deletion AUC {with_interval(est[keys[0]])}, insertion AUC {with_interval(est[keys[1]])}, "
                            f"random orders {est[keys[2]].value:.2f} / {est[keys[3]].value:.2f}; n = {est[keys[0]].n}"
                            if rho is not None and all(k in est and est[k].n for k in keys) else "")
                out.append(Check(f"saliency: {d['labels'][m]}", "sanity checks (Adebayo et al.; Kindermans et al.)",
                                 measured, bool(d["pass"][m]), "trust" if d["pass"][m] else "fails a check"))
        else:
            chance = value_of(r, "evidence_top3_chance")
            for m in ("occlusion", "integrated_gradients", "grad_x_input", "gradient"):
                top3, pct = value_of(r, f"evidence_top3.{m}"), value_of(r, f"evidence_percentile.{m}")
                if top3 is None or chance is None or pct is None:
                    continue
                from talkgen.stats import with_interval

                est = r.summaries[f"evidence_top3.{m}"]
                ok = top3 > 3 * chance
                out.append(Check(f"token saliency: {m.replace('_', ' ')}", "ranks the known evidence",
                                 f"evidence percentile {pct:.2f}; in the top 3 for a share "
                                 f"{with_interval(est) if est.n else f'{top3:.2f}'} of n = {est.n} predictions "
                                 f"(chance {chance:.2f})", ok, "trust" if ok else "weak"))
        gap = value_of(r, "ig_completeness_gap")
        if gap is not None:
            out.append(Check("Integrated Gradients", "completeness (attributions sum to the output change)",
                             f"gap {gap:.2%}", gap < 0.05, "trust" if gap < 0.05 else "not converged"))
        return tuple(out)

    def run(self, ctx: Context) -> Result:
        if ctx.subject.task != "image-classifier":
            from talkgen.analyses.token_saliency import run_tokens

            return run_tokens(self.name, ctx)
        m = self._measure(ctx)
        return Result(analysis=self.name, subject=ctx.subject.name, arrays=_arrays(m), summaries=_summaries(m),
                      figures=_figures(m, ctx.subject.data.classes), tables=(_table(m),), findings=_findings(m),
                      data=_data(m))

    @staticmethod
    def _measure(ctx: Context) -> "_Measured":
        """Every map, then the three sanity checks: cascading randomisation, input invariance on a shifted
        twin network, deletion and insertion against random pixel orders."""
        s, p = ctx.subject, dict(ctx.params)
        model, xt = s.model, s.data.x_test
        pick = torch.randperm(len(xt), generator=ctx.generator())
        x = xt[pick[: p["n_inputs"]]].float()
        xd = xt[pick[: p["deletion_inputs"]]].float()
        data_range = float(s.data.x_train.max() - s.data.x_train.min()) or 1.0
        has_conv = any(isinstance(mod, nn.Conv2d) for mod in model.modules())
        methods = image_methods(p, data_range, ctx.seed, has_conv, tuple(x.shape))
        with torch.no_grad():
            target, target_d = model(x).argmax(1), model(xd).argmax(1)
        # Integrated Gradients once, with its completeness gap; the other methods through their functions
        ig, gap = A.integrated_gradients(model, x, target, n_steps=p["ig_steps"], return_convergence_delta=True,
                                         internal_batch_size=p["internal_batch_size"])
        original = {k: ig if k == "integrated_gradients" else fn(model, x, target) for k, _, fn in methods}
        with torch.no_grad():
            span = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
        m = _Measured(p=p, methods=methods, keys=[k for k, _, _ in methods],
                      labels={k: lab for k, lab, _ in methods}, x=x, xd=xd, target=target,
                      maps={k: as_map(a) for k, a in original.items()},
                      rel_gap=(gap.abs() / span.abs().clamp_min(1e-12)).numpy())
        _cascade(m, model, ctx.seed, lambda done, total: ctx.progress(done, total, "layers re-initialised"))
        _invariance(m, model, original)
        _deletion_insertion(m, model, target_d, ctx.seed)
        m.grad_cam_layer = (p["grad_cam_layer"] or next(
            n for n, mod in model.named_modules() if mod is A.last_conv_layer(model, x[:1]))) if has_conv else None
        return m


@dataclass
class _Measured:
    """What the saliency analysis measured on an image model, step by step."""

    p: dict
    methods: list
    keys: list[str]
    labels: dict[str, str]
    x: torch.Tensor
    xd: torch.Tensor
    target: torch.Tensor
    maps: dict[str, np.ndarray]
    rel_gap: np.ndarray
    layer_names: list[str] = field(default_factory=list)
    rho: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    sim: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    example_maps: dict[str, list] = field(default_factory=dict)
    half: int = 0
    cascade_pass: dict[str, bool] = field(default_factory=dict)
    invariance: dict[str, float] = field(default_factory=dict)
    invariance_pass: dict[str, bool] = field(default_factory=dict)
    twin_note: str = ""
    dels: dict[str, float] = field(default_factory=dict)
    ins: dict[str, float] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    random_del: float = 0.0
    random_ins: float = 0.0
    order_pass: dict[str, bool] = field(default_factory=dict)
    estimates: dict[str, Scalar] = field(default_factory=dict)  # the deletion and insertion AUCs with n and interval
    grad_cam_layer: str | None = None

    @property
    def passes(self) -> dict[str, bool]:
        return {k: self.cascade_pass[k] and self.invariance_pass.get(k, True) and self.order_pass[k] for k in self.keys}


def _cascade(m: _Measured, model: nn.Module, seed: int, each=None) -> None:
    """1. Cascading randomisation (Adebayo et al. 2018): maps as layers are re-initialised from the top."""
    cascade = sanity.cascading_models(model, m.x, seed)
    m.layer_names = [name for name, _ in cascade]
    m.rho = np.zeros((len(m.keys), len(cascade)))
    m.sim = np.zeros_like(m.rho)
    m.example_maps = {k: [m.maps[k][0]] for k in m.keys}
    n = len(m.x)
    for j, (_, randomised) in enumerate(cascade):
        for i, (k, _, fn) in enumerate(m.methods):
            new = as_map(fn(randomised, m.x, m.target))
            m.rho[i, j] = float(sanity.spearman_rows(m.maps[k].reshape(n, -1), new.reshape(n, -1)).mean())
            m.sim[i, j] = float(sanity.ssim(m.maps[k], new).mean())
            m.example_maps[k].append(new[0])
        if each is not None:
            each(j + 1, len(cascade))
    m.half = math.ceil(len(cascade) / 2) - 1  # index after the top half of the layers is randomised
    m.cascade_pass = {k: m.rho[i, m.half] < m.p["cascade_threshold"] for i, k in enumerate(m.keys)}


def _invariance(m: _Measured, model: nn.Module, original: dict[str, torch.Tensor]) -> None:
    """2. Input invariance (Kindermans et al. 2019): the same function of shifted inputs, the same map?"""
    twin = sanity.shifted_twin(model, m.x, m.p["input_shift"])
    if isinstance(twin, str):
        m.twin_note = twin
    else:
        shifted = m.x + m.p["input_shift"]
        for k, _, fn in m.methods:
            a, b = original[k].detach(), fn(twin, shifted, m.target).detach()
            m.invariance[k] = float(((a - b).abs().flatten(1).sum(1) / a.abs().flatten(1).sum(1).clamp_min(1e-12)).mean())
    m.invariance_pass = {k: v <= m.p["invariance_tolerance"] for k, v in m.invariance.items()}


def _deletion_insertion(m: _Measured, model: nn.Module, target_d: torch.Tensor, seed: int) -> None:
    """3. Deletion and insertion in each method's pixel order, against random orders."""
    xd, p = m.xd, m.p
    n_pix = xd.shape[-1] * xd.shape[-2]
    for k, _, fn in m.methods:
        score = torch.as_tensor(as_map(fn(model, xd, target_d))).flatten(1)
        noise = torch.rand(score.shape, generator=torch.Generator().manual_seed(seed)) * 1e-9
        order = torch.argsort(score + noise, dim=1, descending=True)  # ties broken at random
        d, i_ = sanity.order_curves(model, xd, target_d, order, p["curve_steps"])
        m.dels[k], m.ins[k] = sanity.auc(d), sanity.auc(i_)
        m.estimates[f"deletion_auc.{k}"] = sanity.auc_estimate(d, f"{m.labels[k]}: deletion AUC", seed)
        m.estimates[f"insertion_auc.{k}"] = sanity.auc_estimate(i_, f"{m.labels[k]}: insertion AUC", seed)
        m.curves[f"del:{k}"], m.curves[f"ins:{k}"] = d.mean(0), i_.mean(0)
    rd, ri = [], []
    rg = torch.Generator().manual_seed(seed + 1)
    for _ in range(p["random_orders"]):
        order = torch.stack([torch.randperm(n_pix, generator=rg) for _ in range(len(xd))])
        d, i_ = sanity.order_curves(model, xd, target_d, order, p["curve_steps"])
        rd.append(d)
        ri.append(i_)
    rdel, rins = np.mean(rd, axis=0), np.mean(ri, axis=0)
    m.random_del, m.random_ins = sanity.auc(rdel), sanity.auc(rins)
    m.estimates["deletion_auc_random"] = sanity.auc_estimate(rdel, "deletion AUC of random pixel orders", seed)
    m.estimates["insertion_auc_random"] = sanity.auc_estimate(rins, "insertion AUC of random pixel orders", seed)
    m.curves["del:random"], m.curves["ins:random"] = rdel.mean(0), rins.mean(0)
    m.order_pass = {k: m.dels[k] < m.random_del and m.ins[k] > m.random_ins for k in m.keys}


def _arrays(m: _Measured) -> dict[str, np.ndarray]:
    show = min(m.p["show"], len(m.x))
    grid = [normalise(m.x[:show].sum(1).numpy())] + [normalise(m.maps[k][:show]) for k in m.keys]
    arrays: dict[str, np.ndarray] = {
        "maps": np.concatenate(grid),
        "cascade_maps": np.concatenate([normalise(np.stack(m.example_maps[k])) for k in m.keys]),
        "layers_randomised": np.arange(len(m.layer_names) + 1, dtype=np.float64),
        "fraction": np.linspace(0, 1, m.p["curve_steps"] + 1),
        "del_auc": np.array([m.dels[k] for k in m.keys] + [m.random_del]),
        "ins_auc": np.array([m.ins[k] for k in m.keys] + [m.random_ins]),
        "ig_relative_gap": m.rel_gap, "spearman": m.rho, "ssim": m.sim, **m.curves,
    }
    for i, k in enumerate(m.keys):
        arrays[f"rho:{k}"] = np.concatenate([[1.0], m.rho[i]])
        arrays[f"ssim:{k}"] = np.concatenate([[1.0], m.sim[i]])
    return arrays


def _figures(m: _Measured, classes: tuple[str, ...]) -> tuple:
    p, keys, labels, n_layers = m.p, m.keys, m.labels, len(m.layer_names)
    show = min(p["show"], len(m.x))
    return (
        ImageGrid(id="maps", title="What each method says the model looked at",
                  caption=f"Top row: {show} held-out inputs; below, each method's |attribution| for the "
                          "predicted class, each map scaled to its own maximum.",
                  alt=f"A grid of saliency maps: {len(keys)} methods (rows) for {show} input images (columns).",
                  array="maps", colorbar="|attribution| / its maximum", signed=False, columns=show,
                  row_labels=("input",) + tuple(labels[k] for k in keys),
                  panel_titles=tuple(f"pred {classes[int(t)] if int(t) < len(classes) else int(t)}"
                                     for t in m.target[:show]), max_images=show * (len(keys) + 1)),
        ImageGrid(id="cascade", title="Randomise the layers from the top: do the maps change?",
                  caption="Cascading randomisation (Adebayo et al. 2018) on the first input: left, the map of "
                          "the trained model; then with the layers named above re-initialised cumulatively, "
                          "top first.",
                  alt="A grid of saliency maps: methods (rows) as more layers are randomised (columns).",
                  array="cascade_maps", colorbar="|attribution| / its maximum", signed=False,
                  columns=n_layers + 1, row_labels=tuple(labels[k] for k in keys),
                  panel_titles=("trained",) + tuple(f"+ {n}" for n in m.layer_names),
                  max_images=len(keys) * (n_layers + 1)),
        Curves(id="cascade_curves", title="How much of each map survives randomisation",
               caption=f"Mean Spearman rank correlation (left) and SSIM (right) between each method's |map| "
                       f"and the trained model's, over {len(m.x)} inputs, as layers are re-initialised from the "
                       f"top; a method passes when ρ < {p['cascade_threshold']} once the top half "
                       f"({', '.join(m.layer_names[: m.half + 1])}) is random.",
               alt="Two panels of lines, one per method, falling from 1 as more layers are randomised.",
               x=("layers_randomised",) * (2 * len(keys)),
               y=tuple(f"rho:{k}" for k in keys) + tuple(f"ssim:{k}" for k in keys),
               labels=tuple(labels[k] for k in keys) * 2, panels=(0,) * len(keys) + (1,) * len(keys),
               panel_titles=("Spearman ρ of |map|", "SSIM of |map|"), xlabel="layers randomised (top first)",
               ylabel="similarity to the trained model's map", markers=True),
        Bars(id="deletion_insertion", title="Deletion and insertion",
             caption=f"Area under the probability of the predicted class as pixels are deleted (lower is "
                     f"better) or inserted into a blank image (higher is better) in each method's order, "
                     f"{len(m.xd)} inputs; 'random' averages {p['random_orders']} random orders.",
             alt="Grouped bars of deletion and insertion AUC per method, with a random-order baseline.",
             categories=tuple(labels[k] for k in keys) + ("random",), values=("del_auc", "ins_auc"),
             series=("deletion AUC (lower is better)", "insertion AUC (higher is better)"),
             ylabel="area under the curve"),
    )


def _table(m: _Measured) -> Table:
    def mark(ok: bool | None) -> str:
        return "—" if ok is None else ("pass" if ok else "FAIL")

    rows = []
    for i, k in enumerate(m.keys):
        inv = m.invariance.get(k)
        rows.append((m.labels[k], f"{m.rho[i, m.half]:.2f}", f"{m.rho[i, -1]:.2f}", mark(m.cascade_pass[k]),
                     "—" if inv is None else f"{inv:.3f}", mark(m.invariance_pass.get(k)),
                     f"{m.dels[k]:.3f}", f"{m.ins[k]:.3f}", mark(m.order_pass[k])))
    rows.append(("random order", "", "", "", "", "", f"{m.random_del:.3f}", f"{m.random_ins:.3f}", ""))
    widest = max(((e.hi - e.lo) / 2 for e in m.estimates.values() if e.lo is not None and np.isfinite(e.lo)),
                 default=float("nan"))
    return Table(id="sanity", title="Sanity checks per method",
                 columns=("method", f"ρ, top {m.half + 1} random", "ρ, all random", "randomisation",
                          "change under input shift", "invariance", "deletion AUC", "insertion AUC",
                          "beats random order"),
                 rows=tuple(rows),
                 caption="ρ: mean Spearman correlation of |map| with the trained model's. Input shift: mean "
                         "relative L1 change of the map on the shifted twin network. Deletion and insertion AUCs: "
                         f"means over n = {len(m.xd)} inputs; their {CI_LEVEL:.0%} bootstrap intervals are at most "
                         f"±{widest:.3f}.")


def _summaries(m: _Measured) -> dict[str, Scalar]:
    p, keys = m.p, m.keys
    summaries = {
        "methods_passing_randomisation": Scalar(float(sum(m.cascade_pass.values())), "methods",
                                                f"of {len(keys)}, maps that decorrelate (ρ < "
                                                f"{p['cascade_threshold']}) once the top half is random"),
        "methods_passing_invariance": Scalar(float(sum(m.invariance_pass.values())), "methods",
                                             f"of {len(m.invariance)}, maps unchanged on the input-shifted twin"),
        "methods_beating_random_order": Scalar(float(sum(m.order_pass.values())), "methods",
                                               f"of {len(keys)}, deletion below and insertion above random"),
        "methods_passing_all": Scalar(float(sum(m.passes.values())), "methods", "pass all three checks"),
        "methods": Scalar(float(len(keys)), "methods", "attribution methods compared"),
        "methods_failing_randomisation": Scalar(float(len(keys) - sum(m.cascade_pass.values())), "methods",
                                                f"of {len(keys)}, maps still similar (ρ ≥ {p['cascade_threshold']}) "
                                                "once the top half of the layers is random"),
        "ig_completeness_gap": Scalar(float(m.rel_gap.max()), "fraction",
                                      "largest |sum of IG attributions - (f(x) - f(0))| / |f(x) - f(0)|"),
        **m.estimates,
    }
    for i, k in enumerate(keys):
        summaries[f"randomisation_rho.{k}"] = Scalar(float(m.rho[i, m.half]), "Spearman ρ",
                                                     f"{m.labels[k]}: rank correlation with the trained map "
                                                     f"once the top half of the layers is random")
    return summaries


def _findings(m: _Measured) -> tuple[Finding, ...]:
    p, keys, labels, half = m.p, m.keys, m.labels, m.half
    findings = []
    failed = [i for i, k in enumerate(keys) if not m.cascade_pass[k]]
    if failed:
        worst = max(failed, key=lambda i: m.rho[i, half])
        findings.append(Finding(
            "medium", f"{len(failed)} of {len(keys)} saliency methods fail the randomisation sanity check",
            f"{', '.join(f'{labels[keys[i]]} (ρ {m.rho[i, half]:.2f})' for i in failed)} keep their maps after "
            f"{', '.join(m.layer_names[: half + 1])} are re-initialised: those maps do not depend on what the "
            f"layers learned; do not use them to explain this model", value=float(m.rho[worst, half]),
            threshold=p["cascade_threshold"]))
    worse = [k for k in keys if not m.order_pass[k]]
    if worse:
        findings.append(Finding(
            "medium", f"{len(worse)} saliency {'method does' if len(worse) == 1 else 'methods do'} not beat a "
                      "random pixel order",
            "; ".join(f"{labels[k]}: deletion AUC {m.dels[k]:.3f}, insertion {m.ins[k]:.3f}" for k in worse)
            + f" (random: {m.random_del:.3f}, {m.random_ins:.3f})",
            value=max(m.dels[k] for k in worse), threshold=m.random_del))
    changed = [k for k in m.invariance if not m.invariance_pass[k]]
    if changed:
        findings.append(Finding(
            "low", f"{len(changed)} saliency {'method is' if len(changed) == 1 else 'methods are'} not "
                   "input-invariant",
            f"{', '.join(f'{labels[k]} ({m.invariance[k]:.0%})' for k in changed)} change on a twin network that "
            f"computes the same function of inputs shifted by {p['input_shift']:g}",
            value=max(m.invariance[k] for k in changed), threshold=p["invariance_tolerance"]))
    return tuple(findings)


def _data(m: _Measured) -> dict:
    return {"methods": m.keys, "labels": m.labels, "layers": m.layer_names, "half": m.half + 1,
            "threshold": m.p["cascade_threshold"], "pass": {k: bool(v) for k, v in m.passes.items()},
            "cascade_pass": {k: bool(v) for k, v in m.cascade_pass.items()},
            "invariance_pass": {k: bool(v) for k, v in m.invariance_pass.items()},
            "order_pass": {k: bool(v) for k, v in m.order_pass.items()},
            "twin_note": m.twin_note, "shift": m.p["input_shift"], "n_inputs": len(m.x), "n_deletion": len(m.xd),
            "ig_steps": m.p["ig_steps"], "ig_gap_mean": float(m.rel_gap.mean()), "grad_cam_layer": m.grad_cam_layer}
