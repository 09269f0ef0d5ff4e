"""Activations: what each layer computes on a fixed set of test inputs, and where classes separate.

What it measures: for each looked-at layer (the subject's named layers, else every conv, linear
and recurrent module), its output on the first ``n_inputs`` test examples. Dead units: outputs
never positive on any of them (a following ReLU never lets them through). Saturated units:
|output| > 2.65 (tanh beyond +-0.99) on more than 99% of inputs. The representation of each
layer (flattened per example) is projected to 2-D with PCA and t-SNE (van der Maaten & Hinton
2008, scikit-learn), and its class separability is the 5-fold cross-validated accuracy of a
5-nearest-neighbour classifier on it: 1.0 when classes sit in separate clusters. The input
itself is layer 0, the baseline. Sequence models get unit x time maps and the same unit counts.
Assumptions: a classifier's test labels are its classes; for sequence models no projection.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from talkgen.analyses import budget
from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.budget import example_size
from talkgen.analyses.hooks import capture_outputs
from talkgen.specs import Bars, Heatmaps, ImageGrid, Scatter, Table
from talkgen.models.introspect import default_layers
from talkgen.stats import proportion



def knn_separability(features: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> float:
    """5-fold cross-validated k-NN accuracy of ``labels`` from ``features`` (N, D)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    counts = np.bincount(labels)
    folds = int(min(5, counts[counts > 0].min()))
    if folds < 2:
        return float("nan")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    smallest_train_fold = len(labels) - -(-len(labels) // folds)
    neighbours = max(1, min(k, smallest_train_fold))
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=neighbours), features, labels, cv=cv).mean())


def evenly_spaced(names: tuple, most: int) -> tuple:
    """At most ``most`` of ``names``, evenly spaced, the first and the last included."""
    if len(names) <= most:
        return names
    return tuple(names[int(i)] for i in np.unique(np.linspace(0, len(names) - 1, most).round().astype(int)))


def hashed(features: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    """``features`` (N, D) as (N, ``width``) by signed feature hashing when D is larger (Weinberger et al. 2009):
    each input feature is added, with a random sign, to one of ``width`` buckets, so that inner products and
    distances are kept in expectation at a cost linear in N x D; unchanged when D <= width."""
    if features.shape[1] <= width:
        return features
    g = torch.Generator().manual_seed(seed)
    bucket = torch.randint(width, (features.shape[1],), generator=g)
    sign = torch.randint(2, (features.shape[1],), generator=g, dtype=features.dtype) * 2 - 1
    return torch.zeros(len(features), width, dtype=features.dtype).index_add_(1, bucket, features * sign)


@register
class Activations(Analysis):
    name = "activations"
    order = 20
    runs_on_twins = ("initial", "width")
    title = "Activations, layer by layer"
    section = "looking-in"
    version = 9  # 5: separability gain and final separability as summaries (the talk picks on them); 6: with n,
    # interval; 7: a token model's units are its hidden dimension (B, T, H), and its unit x time map is drawn
    # from the last layer that keeps the sequence; 8: at most max_layers layers, outputs over max_features hashed;
    # 9: one pass in batches sized to what they capture, keeping per-unit statistics (not every output)
    cost_hint = 3
    applies_text = "classifiers (maps, projections, separability) and sequence models (unit x time maps)"
    params = {"n_inputs": 1000, "tsne_points": 400, "tsne_layers": 4, "tsne_iterations": 500,
              "max_units_shown": 64, "max_layers": 48, "max_features": 8192}
    quick = {"n_inputs": 300, "tsne_points": 200, "tsne_iterations": 300, "max_layers": 24, "max_features": 4096}
    param_bounds = {"tsne_layers": (0, None), "max_layers": (2, None), "max_features": (16, None)}  # tsne 0: none

    sample_order = (("n_inputs", 50),)

    def passes(self, subject, params) -> float:
        return params["n_inputs"] * example_size(subject)

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        every = default_layers(s.model, s.layers)
        layers = evenly_spaced(every, ctx.params["max_layers"])
        sampled = [f"{len(layers)} of {len(every)} layers, evenly spaced"] if len(layers) < len(every) else []
        n = min(ctx.params["n_inputs"], len(s.data.x_test))
        x, y = s.data.x_test[:n], s.data.y_test[:n]
        classifier = s.task.endswith("classifier")
        tokens = example_size(s) > 1  # (B, T) token ids: a unit is a hidden dimension, not a position
        modules = dict(s.model.named_modules())
        stats = self._pass(s.model, x, layers, modules, tokens, ctx.params["max_features"] if classifier else 0,
                           ctx.seed, lambda done: ctx.progress(done, n, "inputs"), budget.pass_budget(s),
                           budget.row_cost(s) if budget.large(s) else 0)
        arrays: dict[str, np.ndarray] = {}
        summaries: dict[str, Scalar] = {}
        rows = []
        dead_frac, sat_frac, per_layer = [], [], []
        for name, st in stats.items():
            units = len(st.unit_max)
            dead = int((st.unit_max <= 0).sum())
            sat = None if st.stuck is None else int((st.stuck / st.seen > 0.99).sum())
            dead_frac.append(dead / units)
            sat_frac.append(float("nan") if sat is None else sat / units)
            summaries[f"{name}.dead_fraction"] = Scalar(dead / units, "fraction",
                                                        f"units of {name} never positive on {n} test inputs")
            if sat is not None:
                summaries[f"{name}.saturated_fraction"] = Scalar(sat / units, "fraction",
                                                                 f"units of {name} beyond ±0.99 on >99% of inputs")
            per_layer.append({"name": name, "units": units, "dead": dead, "saturated": sat,
                              "shape": list(st.shape)})
        arrays["dead_fraction"] = np.array(dead_frac)
        squashing = [l["name"] for l in per_layer if l["saturated"] is not None]
        if squashing:
            arrays["saturated_fraction"] = np.array(sat_frac)
            figures: list = [Bars(
                id="dead", title="Dead and saturated units per layer",
                caption=f"Share of each layer's units that are never positive (dead) or, on a tanh or sigmoid "
                        f"output, stuck beyond ±0.99 (saturated) on {n} test inputs; saturation is not defined "
                        f"for the other layers.",
                alt="Grouped bars of dead and saturated unit fractions for " + ", ".join(layers) + ".",
                categories=tuple(layers), values=("dead_fraction", "saturated_fraction"),
                series=("dead", "saturated"), ylabel="fraction of units")]
        else:
            figures = [Bars(
                id="dead", title="Dead units per layer",
                caption=f"Share of each layer's units that are never positive on {n} test inputs (after a ReLU "
                        "such a unit passes nothing on). No layer here is a tanh or sigmoid, so saturation does "
                        "not apply.",
                alt="Bars of the dead unit fraction for " + ", ".join(layers) + ".",
                categories=tuple(layers), values=("dead_fraction",), series=("dead",), ylabel="fraction of units")]
        data = {"layers": per_layer, "n_inputs": n}
        if classifier:
            figures += self._classifier_views(ctx, x, y.numpy(), stats, arrays, summaries, data)
            if data.get("projected"):
                sampled.append(f"{data['projected']} of {len(layers) + 1} representations (the input and each "
                               f"layer's output) hashed to {ctx.params['max_features']:,} features (signed feature "
                               "hashing, which keeps distances in expectation) for the neighbours, PCA and t-SNE")
        if sampled:
            data["sampled"] = "; ".join(sampled)
        elif sequence := [name for name in layers if len(stats[name].shape) == 2]:
            last = sequence[-1]  # the last layer that keeps the sequence (an encoder's pooled output does not)
            first = stats[last].first  # (T, H) of the first sequence
            shown = first[:, : ctx.params["max_units_shown"]].T.numpy()
            arrays["unit_time"] = shown
            figures.append(Heatmaps(
                id="unit-time", title=f"{last}: units over time",
                caption=f"Output of the first {shown.shape[0]} units of {last} at each step of one "
                        "held-out sequence.",
                alt=f"Heatmap of {shown.shape[0]} units by {shown.shape[1]} time steps.",
                arrays=("unit_time",), panel_titles=(f"{last}, sequence 0",),
                xlabel="time step", ylabel="unit", colorbar="activation", signed=True))
        rows = [(l["name"], "x".join(map(str, l["shape"])), str(l["units"]), str(l["dead"]),
                 "n/a" if l["saturated"] is None else str(l["saturated"]),
                 f"{data['separability'][i + 1]:.3f}" if "separability" in data else "")
                for i, l in enumerate(per_layer)]
        table = Table(id="units", title="Units per layer",
                      columns=("layer", "output shape", "units", "dead", "saturated", "k-NN separability"),
                      rows=tuple(rows))
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
                      figures=tuple(figures), tables=(table,), data=data)

    @staticmethod
    def _pass(model, x: torch.Tensor, layers: tuple, modules: dict, tokens: bool, hash_width: int,
              seed: int, each=None, limit: int | None = None, row_cost: int = 0) -> dict[str, SimpleNamespace]:
        """One pass over ``x`` in batches, keeping per layer only what the slides read: each unit's largest
        output, how often a squashing unit was stuck, the first example's output, and (``hash_width`` > 0, a
        classifier) each example's representation hashed to at most that many features. A batch holds at most
        about 2^26 captured floats (the whole set at once was a vocabulary-wide logit tensor per token on a
        language model: gigabytes). With ``limit`` (a large model's pass budget, bytes), a batch's pass
        (``row_cost`` a row) and its captures (each held twice: the output and the copy read here) stay within it."""
        stats: dict[str, SimpleNamespace] = {}
        rows, i = min(len(x), 8), 0  # a small first batch measures how much one example captures
        if limit is not None:
            rows = max(1, min(rows, limit // max(1, row_cost)))
        with torch.no_grad(), capture_outputs(model, layers) as outs:
            while i < len(x):
                model(x[i:i + rows])
                for k, name in enumerate(layers):
                    a = torch.cat(outs[name]).float()  # this batch's output (twice the rows for a layer run twice)
                    outs[name].clear()
                    # units: channels for conv maps (B, C, ...), last dim for sequences (B, T, H), else features
                    if a.ndim >= 3 and not tokens:
                        per_unit = a.transpose(0, 1).reshape(a.shape[1], -1)       # (C, B*spatial)
                    else:
                        per_unit = a.reshape(-1, a.shape[-1]).T                      # (H, B*T) or (F, B)
                    module = modules[name]
                    # saturation is a property of a squashing non-linearity: measured on tanh and sigmoid outputs
                    # only (a ReLU has no saturated side; its stuck units are the dead ones counted above)
                    if isinstance(module, (torch.nn.Tanh, torch.nn.Hardtanh)):
                        stuck = per_unit.abs() > 0.99
                    elif isinstance(module, torch.nn.Sigmoid):
                        stuck = (per_unit < 0.01) | (per_unit > 0.99)
                    else:
                        stuck = None
                    st = stats.get(name)
                    if st is None:
                        st = stats[name] = SimpleNamespace(shape=tuple(a.shape[1:]), first=a[0].clone(),
                                                           unit_max=per_unit.max(1).values, seen=0, feats=[],
                                                           stuck=None if stuck is None else stuck.sum(1))
                    else:
                        st.unit_max = torch.maximum(st.unit_max, per_unit.max(1).values)
                        if stuck is not None:
                            st.stuck += stuck.sum(1)
                    st.seen += per_unit.shape[1]
                    if hash_width:
                        st.feats.append(hashed(a.reshape(len(a), -1), hash_width, seed + k + 1).numpy())
                i += rows
                if each is not None:
                    each(min(i, len(x)))
                if i == rows:  # after the first batch: as many rows as keep a batch's captures near 2^26 floats
                    per_row = sum(math.prod(st.shape) for st in stats.values())
                    rows = int(max(1, min(256, 2**26 // max(per_row, 1))))
                    if limit is not None:
                        rows = int(max(1, min(rows, limit // (row_cost + 8 * per_row))))
        for st in stats.values():
            st.stuck = None if st.stuck is None else st.stuck.double()
            st.feats = np.concatenate(st.feats) if st.feats else None
        return stats

    def _classifier_views(self, ctx, x, y, stats, arrays, summaries, data) -> list:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        s = ctx.subject
        names = ["input", *stats]
        cap = ctx.params["max_features"]
        widths = [math.prod(x.shape[1:])] + [math.prod(st.shape) for st in stats.values()]
        data["projected"] = sum(w > cap for w in widths)
        # each layer's representation was hashed batch by batch in the pass (the same buckets for every batch)
        feats = [hashed(x.reshape(len(x), -1).float(), cap, ctx.seed).numpy()] + [st.feats for st in stats.values()]
        sep = [knn_separability(f, y, seed=ctx.seed) for f in feats]
        data["separability"] = sep
        data["layer_names"] = names
        arrays["separability"] = np.array(sep)
        n = len(y)  # cross-validation predicts every input once: the accuracy is a proportion of n
        for name, v in zip(names, sep):
            summaries[f"{name}.knn_separability"] = proportion(v * n, n, f"5-NN cross-validated class accuracy "
                                                                         f"from {name}")
        summaries["final_knn_separability"] = proportion(sep[-1] * n, n, f"5-NN cross-validated class accuracy "
                                                                         f"from {names[-1]}")
        summaries["separability_gain"] = Scalar(sep[-1] - sep[0], "fraction",
                                                f"5-NN class accuracy at {names[-1]} minus at the input")
        rises = all(b >= a - 0.01 for a, b in zip(sep, sep[1:]))
        summaries["separability_rises_with_depth"] = Scalar(float(rises), "bool",
                                                            "1 if k-NN separability never drops by more than 0.01 with depth")
        out = [Bars(id="separability", title="Where the classes come apart",
                    caption="5-fold cross-validated 5-nearest-neighbour accuracy of the class from each "
                            "layer's representation; the input is the baseline.",
                    alt="Bar chart of k-NN class separability from the input through " + ", ".join(stats) + ".",
                    categories=tuple(names), values=("separability",), series=("k-NN accuracy",),
                    ylabel="class separability (accuracy)")]
        m = min(ctx.params["tsne_points"], len(y))
        pick = np.random.default_rng(ctx.seed).permutation(len(y))[:m]
        arrays["proj_labels"] = y[pick]
        # t-SNE is the expensive part: on a subsample, and on evenly spaced layers (input and last included)
        tsne_at = set(evenly_spaced(tuple(range(len(names))), ctx.params["tsne_layers"])
                      if ctx.params["tsne_layers"] else [])  # 0: no t-SNE
        panels: dict[str, list[str]] = {"pca": [], "tsne": []}
        for i, (name, f) in enumerate(zip(names, feats)):
            sub = f[pick]
            flat = sub.shape[1] < 2
            z = np.column_stack([sub[:, 0], np.zeros(m)]) if flat else PCA(2, random_state=ctx.seed).fit_transform(sub)
            arrays[f"pca_x:{name}"], arrays[f"pca_y:{name}"] = z[:, 0], z[:, 1]
            panels["pca"].append(name)
            if i in tsne_at:
                if not flat:
                    # one OpenMP thread: the Barnes-Hut loop is tiny per iteration, and spinning
                    # threads cost far more than they save (and than any other work on the machine)
                    with threadpool_limits(limits=1, user_api="openmp"):
                        z = TSNE(n_components=2, perplexity=min(30, (m - 1) / 3), random_state=ctx.seed,
                                 init="pca", max_iter=ctx.params["tsne_iterations"]).fit_transform(sub)
                arrays[f"tsne_x:{name}"], arrays[f"tsne_y:{name}"] = z[:, 0], z[:, 1]
                panels["tsne"].append(name)
        for kind, label in (("pca", "PCA"), ("tsne", "t-SNE")):
            xs = panels[kind]
            if not xs:
                continue
            out.append(Scatter(
                id=f"{kind}", title=f"Each layer's representation, {label} to 2-D",
                caption=f"{m} of {len(y)} test examples (a random subsample) projected to two dimensions with "
                        f"{label}, coloured by true class; one panel per layer"
                        + (f" ({len(xs)} of {len(names)} layers, evenly spaced)." if len(xs) < len(names) else "."),
                alt=f"{label} scatter plots, one per layer from the input to the output, points coloured by class.",
                x=tuple(f"{kind}_x:{n}" for n in xs), y=tuple(f"{kind}_y:{n}" for n in xs),
                labels=tuple("proj_labels" for _ in xs), panel_titles=tuple(xs),
                label_names=tuple(s.data.classes), xlabel=f"{label} 1", ylabel=f"{label} 2", ticks=kind == "pca"))
        data["tsne_points"] = m
        data["tsne_layers"] = panels["tsne"]
        conv = [(n, st.first) for n, st in stats.items() if len(st.shape) == 3]
        if conv:
            name, a = conv[0]
            arrays["feature_maps"] = a.numpy()  # (C, H, W) for the first test input
            out.insert(0, ImageGrid(
                id="maps", title=f"Feature maps of {name} for one digit",
                caption=f"The {a.shape[0]} channels of {name} on the first test example (class "
                        f"{s.data.classes[int(y[0])]}); red positive, blue negative.",
                alt=f"A grid of {a.shape[0]} small feature-map images from {name}.",
                array="feature_maps", colorbar="activation", signed=True))
        return out
