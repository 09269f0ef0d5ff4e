"""The information plane: I(X;T) and I(T;Y) of every layer across training checkpoints.

Follows Shwartz-Ziv & Tishby (2017) and the reply by Saxe et al. (2018): each hidden layer's
representation T over all inputs X is recomputed from every saved checkpoint, and two
estimators place it in the plane: (a) binning, 30 equal bins over the layer's activation range
across all checkpoints; (b) Kolchinsky-Tracey kernel bounds with Gaussian noise of variance
``noise_var`` added to T (upper: pairwise KL; lower: Bhattacharyya). Compression is a fall of
I(X;T) after its peak; the analysis reports it per layer and estimator, with the numbers.
Assumptions: a classifier with saved checkpoints and few enough inputs for pairwise distances
(all 4096 for the 12-bit subjects); X is the set of distinct inputs, so binned I(X;T) = H(T).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, evenly_spaced, register
from talkgen.analyses.hooks import capture_outputs
from talkgen.specs import Table, Trajectories
from talkgen.information import binned_mi, discretise, kde_plane
from talkgen.models.introspect import default_layers

ESTIMATORS = ("binning", "kde_upper", "kde_lower")


@register
class InformationPlane(Analysis):
    param_bounds = {"noise_var": (1e-6, None), "bins": (2, None)}
    name = "information-plane"
    order = 60
    title = "The information plane"
    section = "looking-in"
    version = 1
    cost_hint = 6
    applies_text = "classifiers with saved training checkpoints and at most 8192 inputs"
    params = {"bins": 30, "noise_var": 0.1, "max_checkpoints": 100, "max_inputs": 8192}
    quick = {"max_checkpoints": 8}

    # a forward pass of every input at each checkpoint looked at (the estimates grow with the inputs, which
    # max_inputs bounds, not with the model)
    sample_order = (("max_checkpoints", 2),)

    def passes(self, subject, params) -> float:
        checkpoints = min(len(subject.checkpoints), params["max_checkpoints"])
        return checkpoints * (len(subject.data.x_train) + len(subject.data.x_test))

    def applies_to(self, subject) -> bool | str:
        if subject.load_checkpoints is None or len(subject.checkpoints) < 2:
            return "needs saved training checkpoints (at least 2)"
        if not subject.task.endswith("classifier"):
            return "needs a classifier (I(T;Y) uses the class labels)"
        if len(subject.data.x_train) + len(subject.data.x_test) > self.params["max_inputs"]:
            return "too many inputs for pairwise kernel estimates"
        return True

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        x = torch.cat([s.data.x_train, s.data.x_test])
        y = torch.cat([s.data.y_train, s.data.y_test]).numpy()
        layers = [n for n in default_layers(s.model, s.layers)]
        hidden = layers[:-1] if len(layers) > 1 else layers  # the last named layer is the output
        ckpts = s.load_checkpoints()
        ckpts = evenly_spaced(ckpts, ctx.params["max_checkpoints"])
        steps = np.array([max(step, 0) for step, _ in ckpts], dtype=np.float64)
        model = copy.deepcopy(s.model)  # checkpoints load into a copy; the subject stays as it is
        reps: dict[str, list[np.ndarray]] = {n: [] for n in hidden}
        with torch.no_grad():
            for _, state in ckpts:
                model.load_state_dict(state)
                model.eval()
                with capture_outputs(model, hidden) as outs:
                    model(x)
                for n in hidden:
                    reps[n].append(outs[n][0].reshape(len(x), -1).numpy())
        arrays: dict[str, np.ndarray] = {"step": steps + 1}  # +1: step 0 on a log colour scale
        summaries: dict[str, Scalar] = {}
        rows, compression = [], {}
        for n in hidden:
            lo = min(float(r.min()) for r in reps[n])
            hi = max(float(r.max()) for r in reps[n])
            series = {f"{e}:{q}": [] for e in ESTIMATORS for q in ("ixt", "ity")}
            for t in reps[n]:
                binned = discretise(t, ctx.params["bins"], lo, hi)
                series["binning:ixt"].append(binned_mi(np.arange(len(t)), binned))
                series["binning:ity"].append(binned_mi(binned, y))
                kde = kde_plane(t, y, ctx.params["noise_var"])
                for bound in ("upper", "lower"):
                    series[f"kde_{bound}:ixt"].append(kde[f"ixt_{bound}"])
                    series[f"kde_{bound}:ity"].append(kde[f"ity_{bound}"])
            for key, values in series.items():
                arrays[f"{key}:{n}"] = np.array(values)
            for e in ESTIMATORS:
                ixt = arrays[f"{e}:ixt:{n}"]
                peak = int(ixt.argmax())
                drop = float(ixt[peak] - ixt[-1])
                compression[(n, e)] = {"peak": float(ixt[peak]), "peak_step": float(steps[peak]),
                                       "final": float(ixt[-1]), "drop": drop,
                                       "final_ity": float(arrays[f"{e}:ity:{n}"][-1])}
                summaries[f"{n}.{e}.compression_bits"] = Scalar(
                    drop, "bits", f"fall of I(X;T) from its peak to the last checkpoint, {n}, {e}")
                summaries[f"{n}.{e}.final_ity_bits"] = Scalar(
                    float(arrays[f"{e}:ity:{n}"][-1]), "bits", f"I(T;Y) at the last checkpoint, {n}, {e}")
            c = compression[(n, "binning")]
            rows.append((n, f"{c['peak']:.2f} @ {int(c['peak_step'])}", f"{c['final']:.2f}", f"{c['drop']:.2f}",
                         f"{compression[(n, 'kde_upper')]['drop']:.2f}", f"{compression[(n, 'kde_lower')]['drop']:.2f}",
                         f"{c['final_ity']:.3f}"))
        h_y = binned_mi(y, y)
        summaries["label_entropy_bits"] = Scalar(h_y, "bits", "H(Y), the most any layer can know about the label")
        summaries["input_entropy_bits"] = Scalar(float(np.log2(len(x))), "bits", "H(X) for distinct inputs")
        deepest = hidden[-1]
        for e in ESTIMATORS:
            summaries[f"deepest.{e}.compression_bits"] = Scalar(
                compression[(deepest, e)]["drop"], "bits", f"compression of the deepest hidden layer, {e}")
        titles = (f"binning ({ctx.params['bins']} bins)", f"KDE upper bound (noise var {ctx.params['noise_var']})",
                  f"KDE lower bound (noise var {ctx.params['noise_var']})")
        fig = Trajectories(
            id="plane", title="Layers in the information plane during training",
            caption=f"Each path is one hidden layer, each dot one of {len(ckpts)} checkpoints coloured by training "
                    "step; left to right: binning, kernel upper bound, kernel lower bound. Compression would "
                    "show as paths turning left late in training.",
            alt=f"Three panels of I(X;T) against I(T;Y) for layers {', '.join(hidden)}, coloured by training step.",
            x=tuple(f"{e}:ixt:{n}" for e in ESTIMATORS for n in hidden),
            y=tuple(f"{e}:ity:{n}" for e in ESTIMATORS for n in hidden),
            labels=tuple(n for _ in ESTIMATORS for n in hidden),
            panels=tuple(i for i, _ in enumerate(ESTIMATORS) for _ in hidden),
            panel_titles=titles, colour="step", colour_label="training step (epoch + 1)",
            xlabel="I(X;T) (bits)", ylabel="I(T;Y) (bits)")
        table = Table(id="compression", title="Compression per layer",
                      columns=("layer", "binned I(X;T) peak @ epoch", "final", "drop (binning)", "drop (KDE upper)",
                               "drop (KDE lower)", "final I(T;Y) (binning)"),
                      rows=tuple(rows), caption="Drops are in bits: peak I(X;T) minus its value at the last checkpoint.")
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
                      figures=(fig,), tables=(table,),
                      data={"layers": hidden, "checkpoints": len(ckpts), "noise_var": ctx.params["noise_var"],
                            "bins": ctx.params["bins"], "label_entropy": h_y, "inputs": len(x),
                            "compression": {f"{n}|{e}": v for (n, e), v in compression.items()}})
