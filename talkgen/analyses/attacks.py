"""The attacker's view: the gradient that draws a saliency map also builds an adversarial example.

What it measures (image classifiers with labels), on held-out inputs the model gets right:

* how many predictions flip under a perturbation of L-infinity size eps, for directions taken
  from explanations (the sign of the loss gradient: FGSM, Goodfellow et al. 2015; the sign of
  Integrated Gradients for the true class, pushed against; and 10 projected gradient steps: PGD,
  Madry et al. 2018) against random sign directions of exactly the same L-infinity and L2 size.
  Inputs are not clipped to the pixel range, so every direction at one eps has the same norm.
* for 8x8 digit models, what explanations show of the bundled backdoor's trigger (a 2x2 patch in
  the bottom-right corner, ``talkgen.models.recipes.add_trigger``): the share of each map's
  |attribution| that falls on the trigger's 4 pixels (of 64) when the trigger is present, for the
  class the model then predicts. A clean model gives the comparison.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Analysis, Check, Context, Finding, Result, Scalar, register
from talkgen.analyses.loss import predicted_classes as _predict
from talkgen.specs import Curves, ImageGrid, Table
from talkgen.stats import proportion

FRAGILE = 0.5           # share of predictions flipped by FGSM at the reference eps that earns a finding
POINTS_AT = 4.0         # attribution on the trigger above this many times its area share earns a finding


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Projected gradient ascent on the loss inside the L-infinity ball of radius eps (no clipping to
    the pixel range), step 2.5 eps / steps, starting at x."""
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps
    adv = x.clone()
    for _ in range(steps):
        adv = adv + alpha * loss_gradient(model, adv, y).sign()
        adv = x + (adv - x).clamp(-eps, eps)
    return adv


def trigger_share(maps: torch.Tensor, region: torch.Tensor) -> np.ndarray:
    """Per input: the share of |map| inside the boolean ``region`` (H, W)."""
    m = maps.abs().flatten(1)
    inside = m[:, region.flatten()].sum(1)
    return (inside / m.sum(1).clamp_min(1e-12)).numpy()


def _ig_batch(subject) -> int:
    """Examples per backward pass of Integrated Gradients: 256 for a small model, fewer as one forward pass grows
    (what a backward pass keeps grows with it: a ViT-Base at 224x224 took 24 GB at 256)."""
    from talkgen.analyses.budget import macs_per_unit

    return int(max(1, min(256, 2e10 // max(macs_per_unit(subject), 1.0))))


@register
class Attacks(Analysis):
    param_bounds = {"epsilons": (0, 1), "reference_eps": (0, 1)}
    name = "attacks"
    order = 10
    title = "The attacker's view: an explanation is an attack direction"
    section = "costs"
    version = 3  # 2: the reference size and the trigger's area are summaries; 3: rates with their n and interval
    applies_text = "labelled image classifiers"
    params = {"n_inputs": 450, "epsilons": [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3],
              "reference_eps": 0.1, "pgd_steps": 10, "ig_steps": 32, "random_draws": 5}
    quick = {"n_inputs": 120, "pgd_steps": 5, "ig_steps": 16, "random_draws": 2}

    # per input: a prediction, a gradient (about three forward passes' work), Integrated Gradients (three per
    # step), and at each epsilon the FGSM, IG and random predictions and PGD's steps
    sample_order = (("n_inputs", 8), ("ig_steps", 4), ("pgd_steps", 1), ("random_draws", 1))

    def passes(self, subject, params) -> float:
        per_eps = 2 + params["random_draws"] + 3 * params["pgd_steps"] + 1
        return params["n_inputs"] * (4 + 3 * params["ig_steps"] + len(params["epsilons"]) * per_eps)

    def applies_to(self, subject) -> bool | str:
        if subject.task != "image-classifier" or not subject.data.labelled:
            return "needs a labelled image classifier"
        return True

    def checks(self, r: Result) -> tuple[Check, ...]:
        """Passed when an explanation's direction buys an attacker no more than random noise."""
        d = r.data
        i = d["eps"].index(d["reference_eps"])
        f = d["flips"]
        exploited = f["fgsm"][i] > 3 * max(f["random"][i], 0.01)
        return (Check("explanations, seen by an attacker", f"predictions flipped at eps {d['reference_eps']}",
                      f"along the gradient {f['fgsm'][i]:.1%}, PGD {f['pgd'][i]:.1%}, random {f['random'][i]:.1%}",
                      not exploited, "explanations are attack maps" if exploited else "no gain"),)

    def run(self, ctx: Context) -> Result:
        from talkgen.attribution import integrated_gradients

        s, p = ctx.subject, ctx.params
        model = s.model
        x_all, y_all = s.data.x_test[: p["n_inputs"]].float(), s.data.y_test[: p["n_inputs"]]
        pred = _predict(model, x_all)
        right = pred == y_all
        x, y = x_all[right], y_all[right]
        if len(x) == 0:  # a model that is always wrong: attack its own answers instead
            x, y = x_all, pred
        eps_list = [float(e) for e in p["epsilons"]]
        grad_sign = loss_gradient(model, x, y).sign()
        ig = integrated_gradients(model, x, y, n_steps=int(p["ig_steps"]), internal_batch_size=_ig_batch(s))
        ig_sign = -ig.sign()  # against the evidence for the true class
        gen = torch.Generator().manual_seed(ctx.seed)
        randoms = [torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1 for _ in range(int(p["random_draws"]))]
        flips: dict[str, list[float]] = {"pgd": [], "fgsm": [], "ig": [], "random": [], "random_sd": []}
        for eps in eps_list:
            flips["fgsm"].append(float((_predict(model, x + eps * grad_sign) != y).float().mean()))
            flips["ig"].append(float((_predict(model, x + eps * ig_sign) != y).float().mean()))
            flips["pgd"].append(float((_predict(model, pgd(model, x, y, eps, int(p["pgd_steps"]))) != y).float().mean()))
            r = [float((_predict(model, x + eps * d) != y).float().mean()) for d in randoms]
            flips["random"].append(float(np.mean(r)))
            flips["random_sd"].append(float(np.std(r)))
        ref = float(p["reference_eps"])
        if ref not in eps_list:
            raise ValueError(f"reference_eps {ref} must be one of the epsilons {eps_list}")
        at = eps_list.index(ref)
        d = x[0].numel()

        def eps50(curve: list[float]) -> float | None:
            for i in range(1, len(eps_list)):
                if curve[i] >= 0.5 > curve[i - 1]:
                    e0, e1, f0, f1 = eps_list[i - 1], eps_list[i], curve[i - 1], curve[i]
                    return e0 + (0.5 - f0) * (e1 - e0) / (f1 - f0)
            return None

        names = {"pgd": f"PGD, {p['pgd_steps']} gradient steps", "fgsm": "sign of the gradient (FGSM)",
                 "ig": "against Integrated Gradients", "random": f"random signs (mean of {len(randoms)})"}
        arrays: dict[str, np.ndarray] = {"eps": np.array(eps_list)}
        for k in names:
            arrays[f"flip_{k}"] = np.array(flips[k])
        figures: list = [Curves(
            id="attack", title="Explanation-guided perturbations against random ones of the same size",
            caption=f"Share of {len(x)} correctly classified held-out inputs whose prediction changes, against the "
                    f"perturbation's L-infinity size eps (every direction at one eps also has the same L2 norm, "
                    f"eps x {d ** 0.5:.0f}; inputs are not clipped to the pixel range).",
            alt="Curves of flipped predictions against perturbation size for PGD, FGSM, Integrated-Gradients-guided "
                "and random perturbations.",
            x=("eps",) * 4, y=tuple(f"flip_{k}" for k in names), labels=tuple(names.values()),
            xlabel="perturbation size eps (L-infinity; pixel range is 0-1)", ylabel="predictions flipped",
            markers=True, styles=("-", "-", "-", ":"))]
        summaries = {
            "flip_rate.fgsm": proportion(round(flips["fgsm"][at] * len(x)), len(x),
                                         f"predictions flipped by FGSM at eps {ref}"),
            "flip_rate.ig": proportion(round(flips["ig"][at] * len(x)), len(x),
                                       f"predictions flipped against Integrated Gradients at eps {ref}"),
            "flip_rate.pgd": proportion(round(flips["pgd"][at] * len(x)), len(x),
                                        f"predictions flipped by PGD at eps {ref}"),
            # the mean over the random draws: its interval as one draw's (the draws are of the same inputs)
            "flip_rate.random": proportion(flips["random"][at] * len(x), len(x),
                                           f"predictions flipped by random signs at eps {ref} "
                                           f"(mean of {len(randoms)} draws)"),
            "reference_eps": Scalar(float(ref), "per pixel", "the perturbation size the flip rates are read at"),
            "guided_over_random": Scalar(flips["fgsm"][at] / max(flips["random"][at], 1.0 / len(x)), "x",
                                         f"FGSM's flips over random flips at eps {ref} (random floored at one input)"),
        }
        e50 = {k: eps50(flips[k]) for k in names}
        rows = [(names[k], f"{flips[k][at]:.3f}" + (f" ± {flips['random_sd'][at]:.3f}" if k == "random" else ""),
                 f"{e50[k]:.3f}" if e50[k] is not None else f"> {eps_list[-1]}") for k in names]
        tables = [Table(id="attack", title=f"Predictions flipped at eps {ref}",
                        columns=("direction", f"flipped at eps {ref}", "eps that flips half"), rows=tuple(rows),
                        caption=f"{len(x)} held-out inputs the model classifies correctly.")]
        data: dict = {"n": len(x), "eps": eps_list, "flips": flips, "reference_eps": ref, "eps50": e50,
                      "names": names, "dims": d}
        findings: list[Finding] = []
        if flips["fgsm"][at] >= FRAGILE:
            findings.append(Finding("low", "Predictions flip under small gradient-sign perturbations",
                                    f"{flips['fgsm'][at]:.1%} of correctly classified held-out inputs change class at "
                                    f"L-infinity size {ref} along the sign of the gradient, {flips['random'][at]:.1%} "
                                    "along random signs of the same size",
                                    value=flips["fgsm"][at], threshold=FRAGILE))
        if s.data.trigger is not None:  # the data know a backdoor trigger: do explanations point at it?
            self._trigger(model, s, p, arrays, figures, tables, summaries, data, findings)
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries, figures=tuple(figures),
                      tables=tuple(tables), findings=tuple(findings), data=data)

    @staticmethod
    def _trigger(model, s, p, arrays, figures, tables, summaries, data, findings) -> None:  # noqa: PLR0913
        from talkgen.attribution import grad_cam, integrated_gradients, saliency

        trigger = s.data.trigger
        keep = s.data.y_test[: p["n_inputs"]] != trigger.target
        x = trigger.apply(s.data.x_test[: p["n_inputs"]][keep].float())
        pred = _predict(model, x)
        region = trigger.region
        area = float(region.float().mean())
        maps = {"gradient": saliency(model, x, pred),
                "Integrated Gradients": integrated_gradients(model, x, pred, n_steps=int(p["ig_steps"]),
                                                             internal_batch_size=_ig_batch(s)),
                "Grad-CAM": grad_cam(model, x, pred)}
        shares = {k: trigger_share(v[:, 0], region) for k, v in maps.items()}
        to_target = float((pred == trigger.target).float().mean())
        rows = tuple((k, f"{float(np.mean(v)):.3f}", f"{float(np.mean(v)) / area:.1f}x") for k, v in shares.items())
        tables.append(Table(id="trigger", title="Do the explanations point at the trigger?",
                            columns=("method", "share of |attribution| on the trigger", "against its area"),
                            rows=rows,
                            caption=f"{len(x)} held-out digits (not of class {trigger.target}) with the bundled 2x2 "
                                    f"trigger added; maps for the predicted class. The trigger covers {area:.1%} of "
                                    f"the image. {to_target:.1%} of these inputs are predicted as class "
                                    f"{trigger.target}."))
        show = 6
        grid = [x[:show, 0]] + [v[:show, 0].abs() / v[:show, 0].abs().flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
                                for v in maps.values()]
        arrays["trigger_maps"] = torch.cat(grid).numpy()
        figures.append(ImageGrid(
            id="trigger", title="Explanations of inputs carrying the trigger",
            caption="Top row: held-out digits with the 2x2 trigger in the bottom-right corner; below, each method's "
                    "|attribution| for the predicted class, scaled to its maximum.",
            alt="A grid of digits with a corner patch and their saliency maps.",
            array="trigger_maps", colorbar="|attribution| / its maximum (top row: pixel value)", signed=False,
            columns=show, row_labels=("input",) + tuple("IG" if k.startswith("Integrated") else k for k in maps),
            max_images=show * (len(maps) + 1),
            panel_titles=tuple(f"pred {int(c)}" for c in pred[:show])))
        for k, v in shares.items():
            summaries[f"trigger_share.{k.replace(' ', '_').lower()}"] = Scalar(
                float(np.mean(v)), "", f"share of {k} attribution on the trigger's pixels (area {area:.3f})")
        summaries["trigger_area"] = Scalar(float(area), "", "share of the image the trigger covers")
        summaries["trigger_to_target"] = proportion(round(to_target * len(x)), len(x),
                                                    f"inputs with the trigger predicted as {trigger.target}")
        data["trigger"] = {"shares": {k: float(np.mean(v)) for k, v in shares.items()}, "area": area,
                           "to_target": to_target, "n": len(x), "target": int(trigger.target)}
        best = max(shares, key=lambda k: float(np.mean(shares[k])))
        if float(np.mean(shares[best])) > POINTS_AT * area:
            findings.append(Finding(
                "medium", "Explanations point at a small corner patch (the known trigger)",
                f"{best} puts {float(np.mean(shares[best])):.1%} of its attribution on the 4 trigger pixels "
                f"({area:.1%} of the image) of held-out digits carrying the trigger; {to_target:.1%} of them are "
                f"then predicted as class {trigger.target}",
                value=float(np.mean(shares[best])), threshold=POINTS_AT * area))
