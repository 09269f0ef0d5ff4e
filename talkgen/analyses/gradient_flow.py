"""Gradient flow: how large each layer's gradient is, at every saved checkpoint of training.

What it measures: for each checkpoint, the L2 norm of the loss gradient with respect to each
layer's parameters (weights and biases of a module together) on a fixed, seeded training batch,
and the ratio of the first layer's norm to the last's. A ratio far below 1 means gradients
vanish on their way back to the input layers; far above 1, they explode (Bengio et al. 1994;
Glorot & Bengio 2010). Assumptions: saved checkpoints; a cross-entropy loss.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, evenly_spaced, register
from talkgen.analyses.loss import batch_count, loss_batch, make_loss, parameter_copy
from talkgen.specs import Curves, Heatmaps, Table

VANISH, EXPLODE = 1e-2, 1e2


def layer_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


@register
class GradientFlow(Analysis):
    name = "gradient-flow"
    order = 90
    title = "Gradient flow through training"
    section = "looking-in"
    version = 2  # 2: the heatmap names its layer rows
    applies_text = "models with saved training checkpoints"
    params = {"batch": 512, "max_checkpoints": 60}
    quick = {"batch": 128, "max_checkpoints": 10}

    # a forward and a backward pass (about three forward passes) on one batch at each checkpoint looked at
    sample_order = (("batch", 32), ("max_checkpoints", 3))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        checkpoints = min(len(subject.checkpoints), params["max_checkpoints"])
        return 3 * checkpoints * batch_count(subject, params["batch"]) * example_size(subject)

    def applies_to(self, subject) -> bool | str:
        if subject.load_checkpoints is None or len(subject.checkpoints) < 2:
            return "needs saved training checkpoints (at least 2)"
        return True

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        n = batch_count(s, ctx.params["batch"])
        x, y = loss_batch(s, n, ctx.seed)
        ckpts = s.load_checkpoints()
        ckpts = evenly_spaced(ckpts, ctx.params["max_checkpoints"])
        model = copy.deepcopy(s.model)
        layers: list[str] = []
        norms = []  # (checkpoints, layers)
        for _, state in ckpts:
            model.load_state_dict(state)
            model.eval()
            params = parameter_copy(model)
            grads = torch.autograd.grad(make_loss(model, x, y)(params), list(params.values()))
            per_layer: dict[str, float] = {}
            for name, g in zip(params, grads):
                per_layer[layer_of(name)] = per_layer.get(layer_of(name), 0.0) + float(g.pow(2).sum())
            if not layers:
                layers = list(per_layer)
            norms.append([math.sqrt(per_layer[l]) for l in layers])
        g = np.array(norms)  # (C, L)
        steps = np.array([max(st, 0) for st, _ in ckpts], dtype=np.float64)
        first, last = layers[0], layers[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = g[:, 0] / g[:, -1]
        arrays = {"log10_norms": np.log10(np.maximum(g, 1e-30)).T, "step": steps + 1,
                  **{f"norm:{l}": g[:, i] for i, l in enumerate(layers)}, "ratio": ratio}
        flagged = {"vanishing": [], "exploding": []}
        for i, st in enumerate(steps):
            if ratio[i] < VANISH:
                flagged["vanishing"].append(int(st))
            elif ratio[i] > EXPLODE:
                flagged["exploding"].append(int(st))
        summaries = {
            "first_to_last_ratio_final": Scalar(float(ratio[-1]), "ratio",
                                                f"gradient norm of {first} over {last} at the last checkpoint"),
            "first_to_last_ratio_initial": Scalar(float(ratio[0]), "ratio", "the same at the first checkpoint"),
            "final_gradient_norm": Scalar(float(np.sqrt((g[-1] ** 2).sum())), "", "total gradient norm at the end"),
            "checkpoints_vanishing": Scalar(float(len(flagged["vanishing"])), "count",
                                            f"checkpoints where first/last < {VANISH}"),
            "checkpoints_exploding": Scalar(float(len(flagged["exploding"])), "count",
                                            f"checkpoints where first/last > {EXPLODE}"),
        }
        rows = tuple((l, f"{g[0, i]:.3g}", f"{g[g.shape[0] // 2, i]:.3g}", f"{g[-1, i]:.3g}") for i, l in enumerate(layers))
        figures = (
            Heatmaps(id="norms", title="Gradient norm per layer through training",
                     caption=f"log10 of each layer's gradient norm (rows, input side at the top) at each of "
                             f"{len(ckpts)} checkpoints (columns, in training order), on {len(x)} training examples.",
                     alt=f"Heatmap of log10 gradient norms for layers {', '.join(layers)} across checkpoints.",
                     arrays=("log10_norms",), panel_titles=("log10 ||grad||",), xlabel="checkpoint (training order)",
                     ylabel="layer (input at top)", colorbar="log10 gradient norm", signed=False,
                     row_labels=tuple(layers)),
            Curves(id="curves", title="Gradient norms per layer",
                   caption="Each layer's gradient norm against training step (log-log).",
                   alt="Line plot of per-layer gradient norms against training step.",
                   x=tuple("step" for _ in layers), y=tuple(f"norm:{l}" for l in layers), labels=tuple(layers),
                   xlabel="training step + 1", ylabel="gradient norm", logx=True, logy=True, markers=True),
        )
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries, figures=figures,
                      tables=(Table(id="flow", title="Gradient norm per layer", rows=rows,
                                    columns=("layer", "first checkpoint", "middle", "last")),),
                      data={"layers": layers, "first": first, "last": last, "flagged": flagged,
                            "checkpoints": len(ckpts), "batch": len(x), "thresholds": [VANISH, EXPLODE]})
