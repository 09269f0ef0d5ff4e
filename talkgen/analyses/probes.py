"""Probes: which concepts each layer makes decodable, and how much of that is the probe's own doing.

What it measures: for every layer (and the raw input as depth 0), linear and one-hidden-layer MLP
probes (``talkgen.meta.probes``) trained on the frozen subject's representations of one split and
scored on another; the same probes on Hewitt & Liang's control task (a random but consistent label
per input type) give selectivity = task accuracy - control accuracy; and a linear probe on the same
architecture at initialisation says what random weights already make decodable.

Concepts: the class for classifiers (types: each exact input, so a control probe can only
memorise); for character models, the tokenizer's labels (in string, in comment, bracket depth and
indentation level, the last two capped at 3) over held-out text (types: the current character).
Assumptions: layer outputs are (B, ...) per example or (B, T, D) per position; images' feature maps
above ``max_features`` values are average-pooled; text classifiers' (B, T, D) outputs are averaged
over the tokens.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Analysis, Check, Context, Result, Scalar, register, value_of
from talkgen.analyses.hooks import capture_inputs, capture_outputs
from talkgen.analyses import budget
from talkgen.models.twins import initial_model, initialised_in_place
from talkgen.specs import Curves, Table
from talkgen.meta.probes import control_labels, fit_mlp_probes, fit_probe
from talkgen.models.introspect import default_layers
from talkgen.stats import CI_LEVEL, proportion, wilson_interval

CHAR_LABELS = ("in_string", "in_comment", "bracket_depth", "indent_level")
CAP = 3  # graded labels above this are one class ("3 or more")


def _flatten(out: torch.Tensor, max_features: int, pool_tokens: bool) -> torch.Tensor:
    if out.ndim == 4 and out[0].numel() > max_features:  # (B, C, H, W) feature maps
        side = max(1, int(math.sqrt(max_features / out.shape[1])))
        out = nn.functional.adaptive_avg_pool2d(out, side)
    if out.ndim == 3 and pool_tokens:
        out = out.mean(1)
    return out.reshape(len(out), -1)


def classifier_representations(model: nn.Module, x: torch.Tensor, layers: tuple[str, ...], max_features: int,
                               pool_tokens: bool) -> dict[str, np.ndarray]:
    reps: dict[str, list[torch.Tensor]] = {"input": [], **{n: [] for n in layers}}
    with torch.no_grad():
        for i in range(0, len(x), 256):
            xb = x[i:i + 256]
            with capture_outputs(model, layers) as seen:
                model(xb)
            reps["input"].append(_flatten(xb.float(), max_features, pool_tokens))
            for n in layers:
                reps[n].append(_flatten(seen[n][0], max_features, pool_tokens))
    return {k: torch.cat(v).numpy() for k, v in reps.items()}


def char_representations(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per character: the embedding, and the LSTM's hidden and cell state (replayed step by step)."""
    from talkgen.models.recurrent import last_lstm, lstm_states

    name = last_lstm(model)
    lstm = dict(model.named_modules())[name]
    parts: dict[str, list[torch.Tensor]] = {"embedding": [], f"{name}.h": [], f"{name}.c": []}
    with torch.no_grad():
        for i in range(0, len(x), 64):
            with capture_inputs(model, name) as seen:
                model(x[i:i + 64])
            e = seen[0][0]
            states = lstm_states(lstm, e)
            parts["embedding"].append(e.reshape(-1, e.shape[-1]))
            parts[f"{name}.h"].append(states["h"].reshape(-1, states["h"].shape[-1]))
            parts[f"{name}.c"].append(states["c"].reshape(-1, states["c"].shape[-1]))
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


@register
class Probes(Analysis):
    name = "probes"
    order = 10
    title = "Probes: what each layer makes decodable"
    section = "method"
    version = 6  # 2: linear probes solved to convergence (L-BFGS); 3: the untrained accuracy as a summary; 4: with n
    # and interval, and the commonest label's accuracy; 5: a subject whose train and test inputs are one set (a file
    # of sentences) is split 70/30, and labelled sentence encoders are probed; 6: the MLP probes of a layer trained
    # together (the same paths, other rounding)
    cost_hint = 10
    applies_text = "labelled classifiers, and character models with per-character labels"
    params = {"n_examples": 3000, "n_chars": 16000, "steps": 300, "hidden": 64, "max_features": 2048}
    quick = {"n_examples": 600, "n_chars": 3000, "steps": 100, "max_features": 512}

    def applies_to(self, subject) -> bool | str:
        if subject.task == "char-lm":
            if subject.text_labels is None:
                return "needs per-character labels of its text (in string, in comment, brackets, ...)"
            from talkgen.models.recurrent import last_lstm

            return True if last_lstm(subject.model) else "needs an nn.LSTM to read states from"
        if (subject.task.endswith("classifier") or subject.task == "text-encoder") and subject.data.labelled:
            return True
        return "needs a labelled classifier or encoder, or a character model with per-character labels"

    # the representations of the training and held-out examples, of the trained model and of its untrained twin
    sample_order = (("n_examples", 100), ("n_chars", 500))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        if subject.task == "char-lm":
            return 2 * params["n_chars"]
        return 4 * params["n_examples"] * example_size(subject)

    def _data(self, model: nn.Module, s, p) -> tuple[dict, dict, np.ndarray, np.ndarray]:
        """(representations, labels, types, is_train) for one model."""
        if s.task == "char-lm":
            window = s.data.x_test.shape[1]
            x = s.data.x_test[: max(2, math.ceil(p["n_chars"] / window))]
            n_win = len(x)
            reps = char_representations(model, x)
            lab = s.text_labels()
            n = n_win * window
            labels = {k: np.minimum(np.asarray(lab[k][:n]), CAP) for k in CHAR_LABELS}
            types = x.reshape(-1).numpy()
            # whole windows (no shared text), interleaved so that both splits see the same files' styles
            win_train = np.arange(n_win) % 10 < 7
            if win_train.all():
                win_train[-1] = False
            is_train = np.repeat(win_train, window)
            return reps, labels, types, is_train
        layers = default_layers(model, s.layers)
        xtr, ytr = s.data.x_train[: p["n_examples"]], s.data.y_train[: p["n_examples"]]
        xte, yte = s.data.x_test[: p["n_examples"]], s.data.y_test[: p["n_examples"]]
        if len(xtr) == len(xte) and torch.equal(xtr, xte):
            # one set of inputs only (a file of sentences is both): fit the probes on 70% of it, score them on the
            # rest, so that no probe is scored on what it was fitted to
            k = max(1, min(len(xte) - 1, round(0.7 * len(xte))))
            xtr, ytr, xte, yte = xte[:k], yte[:k], xte[k:], yte[k:]
        x = torch.cat([xtr, xte])
        reps = classifier_representations(model, x, layers, p["max_features"],
                                          s.task in ("text-classifier", "text-encoder"))
        types = x.reshape(len(x), -1).numpy()
        is_train = np.arange(len(x)) < len(xtr)
        return reps, {"class": torch.cat([ytr, yte]).numpy()}, types, is_train

    def checks(self, r: Result) -> tuple[Check, ...]:
        lin, mlp = value_of(r, "mean_selectivity_linear"), value_of(r, "mean_selectivity_mlp")
        if lin is None:
            return ()
        ok = lin > 0.05
        return (Check("probes", "selectivity over Hewitt and Liang's control task",
                      f"mean selectivity linear {lin:+.2f}" + (f", MLP {mlp:+.2f}" if mlp is not None else ""),
                      ok, "trust" if ok else "probe may be memorising"),)

    def run(self, ctx: Context) -> Result:
        m = self._measure(ctx)
        return Result(analysis=self.name, subject=m.s.name, arrays=self._arrays(m), summaries=self._summaries(m),
                      figures=self._figures(m), tables=(self._table(m),), data=self._result_data(m))

    def _measure(self, ctx: Context) -> SimpleNamespace:
        """Linear and MLP probes per concept and layer, on the task and its control task, and linear probes on
        the same architecture at initialisation."""
        s, p = ctx.subject, ctx.params
        reps, labels, types, tr = self._data(s.model, s, p)
        if budget.large(s):  # the model itself at initialisation, its trained weights on disk meanwhile
            with initialised_in_place(s, ctx.seed, ctx.store) as (init_model, init_source):
                init_reps, _, _, _ = self._data(init_model, s, p)
        else:
            init_model, init_source = initial_model(s, ctx.seed)
            init_reps, _, _, _ = self._data(init_model, s, p)
        del init_model
        layers, names = list(reps), list(labels)
        fit = lambda r, y, kind: fit_probe(r[tr], y[tr], r[~tr], y[~tr], kind=kind, steps=p["steps"],  # noqa: E731
                                           hidden=p["hidden"], seed=ctx.seed)
        acc = {k: np.zeros((len(names), len(layers))) for k in
               ("linear", "mlp", "linear_control", "mlp_control", "linear_init")}
        majority = np.zeros(len(names))
        controls = []
        total, done = 3 * len(names) * len(layers) + len(layers), [0]

        def fitted(n: int) -> None:
            done[0] += n
            ctx.progress(done[0], total, "probe fits")

        for i, lab in enumerate(names):
            y = labels[lab]
            ctrl = control_labels(types, y, ctx.seed + i)
            controls.append(ctrl)
            values, counts = np.unique(y[~tr], return_counts=True)
            majority[i] = counts.max() / counts.sum()
            for j, layer in enumerate(layers):
                acc["linear"][i, j] = fit(reps[layer], y, "linear")
                acc["linear_control"][i, j] = fit(reps[layer], ctrl, "linear")
                acc["linear_init"][i, j] = fit(init_reps[layer], y, "linear")
                fitted(3)
        for j, layer in enumerate(layers):  # every MLP probe of a layer (each concept and its control) in one pass
            ys = [labels[lab] for lab in names] + controls
            got = fit_mlp_probes(reps[layer][tr], [y[tr] for y in ys], reps[layer][~tr], [y[~tr] for y in ys],
                                 steps=p["steps"], hidden=p["hidden"], seed=ctx.seed)
            acc["mlp"][:, j], acc["mlp_control"][:, j] = got[:len(names)], got[len(names):]
            fitted(1)
        sel = {k: acc[k] - acc[f"{k}_control"] for k in ("linear", "mlp")}
        return SimpleNamespace(s=s, p=p, tr=tr, init_source=init_source, layers=layers, names=names, acc=acc,
                               sel=sel, majority=majority, title_of={lab: lab.replace("_", " ") for lab in names})

    @staticmethod
    def _arrays(m: SimpleNamespace) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"depth": np.arange(len(m.layers), dtype=np.float64),
                                         **{f"acc_{k}": v for k, v in m.acc.items()},
                                         **{f"sel_{k}": v for k, v in m.sel.items()}}
        for i, lab in enumerate(m.names):
            for key in ("linear", "mlp", "linear_init"):
                arrays[f"{key}:{lab}"] = m.acc[key][i]
            arrays[f"majority:{lab}"] = np.full(len(m.layers), m.majority[i])
            for key in ("linear", "mlp"):
                arrays[f"sel_{key}:{lab}"] = m.sel[key][i]
        return arrays

    @staticmethod
    def _figures(m: SimpleNamespace) -> tuple:
        xs, ys, lbs, pan, sty = [], [], [], [], []
        xs2, ys2, lbs2, pan2, sty2 = [], [], [], [], []
        for i, lab in enumerate(m.names):
            for key, label, style in (("linear", "linear", "-"), ("mlp", "MLP", "--"),
                                      ("linear_init", "linear, at initialisation", ":"),
                                      ("majority", "always the commonest answer", "-.")):
                xs.append("depth"), ys.append(f"{key}:{lab}"), lbs.append(label), pan.append(i), sty.append(style)
            for key, label, style in (("linear", "linear", "-"), ("mlp", "MLP", "--")):
                xs2.append("depth"), ys2.append(f"sel_{key}:{lab}"), lbs2.append(label), pan2.append(i)
                sty2.append(style)
        split = "held-out text (7 of every 10 windows train the probes, the other 3 score them)" \
            if m.s.task == "char-lm" else "training inputs (probe training) and test inputs (probe scores)"
        titles = tuple(m.title_of[n] for n in m.names)
        return (
            Curves(id="accuracy", title="What a probe can read from each layer",
                   caption=f"Held-out probe accuracy per layer ({', '.join(m.layers)}), linear and MLP probes on the "
                           f"trained model, a linear probe on the same architecture at initialisation "
                           f"({m.init_source}), and the accuracy of always answering the commonest label; {split}.",
                   alt="Panels per concept: probe accuracy against layer depth for linear, MLP and untrained probes.",
                   x=tuple(xs), y=tuple(ys), labels=tuple(lbs), panels=tuple(pan), styles=tuple(sty),
                   panel_titles=titles, xlabel="layer", ylabel="probe accuracy", markers=True,
                   xticks=tuple(m.layers)),
            Curves(id="selectivity", title="How much is the representation, how much the probe",
                   caption="Selectivity = task accuracy - control-task accuracy (Hewitt & Liang 2019), linear and "
                           "MLP probes; a probe that memorises input types scores well on both and is not selective.",
                   alt="Panels per concept: selectivity against depth, linear and MLP probes.",
                   x=tuple(xs2), y=tuple(ys2), labels=tuple(lbs2), panels=tuple(pan2), styles=tuple(sty2),
                   panel_titles=titles, xlabel="layer", ylabel="selectivity", markers=True, xticks=tuple(m.layers)),
        )

    @staticmethod
    def _table(m: SimpleNamespace) -> Table:
        acc, sel = m.acc, m.sel
        n_test = int((~m.tr).sum())
        widest = max((hi - lo) / 2 for a in acc.values() for lo, hi in
                     (wilson_interval(round(v * n_test), n_test) for v in a.ravel()))
        rows = []
        for i, lab in enumerate(m.names):
            for j, layer in enumerate(m.layers):
                rows.append((m.title_of[lab], layer, f"{acc['linear'][i, j]:.3f}", f"{acc['linear_control'][i, j]:.3f}",
                             f"{sel['linear'][i, j]:+.3f}", f"{acc['mlp'][i, j]:.3f}",
                             f"{acc['mlp_control'][i, j]:.3f}", f"{sel['mlp'][i, j]:+.3f}",
                             f"{acc['linear_init'][i, j]:.3f}"))
        return Table(id="probes", title="Probe accuracy, control and selectivity",
                     columns=("concept", "layer", "linear", "control", "selectivity", "MLP", "control",
                              "selectivity", "linear at init"), rows=tuple(rows),
                     caption=f"Accuracies on n = {n_test:,} held-out items; their {CI_LEVEL:.0%} intervals (Wilson) "
                             f"are at most ±{widest:.3f}. Always answering the commonest label: "
                             + ", ".join(f"{m.title_of[n]} {m.majority[i]:.3f}" for i, n in enumerate(m.names)) + ".")

    @staticmethod
    def _summaries(m: SimpleNamespace) -> dict[str, Scalar]:
        acc, sel = m.acc, m.sel
        more_selective = int((sel["linear"] > sel["mlp"]).sum())
        summaries = {
            "linear_more_selective": Scalar(float(more_selective), "pairs",
                                            f"of {sel['linear'].size} (concept, layer) pairs where the linear probe "
                                            f"is more selective than the MLP"),
            "mean_selectivity_linear": Scalar(float(sel["linear"].mean()), "accuracy",
                                              "mean selectivity of linear probes"),
            "mean_selectivity_mlp": Scalar(float(sel["mlp"].mean()), "accuracy", "mean selectivity of MLP probes"),
        }
        n = int((~m.tr).sum())  # held-out items each probe is scored on
        for i, lab in enumerate(m.names):
            j = int(np.argmax(acc["linear"][i]))
            summaries[f"best_linear_accuracy.{lab}"] = proportion(
                round(float(acc["linear"][i, j]) * n), n, f"{m.title_of[lab]}: best linear probe ({m.layers[j]})",
                unit="accuracy")
            summaries[f"init_linear_accuracy.{lab}"] = proportion(
                round(float(acc["linear_init"][i, j]) * n), n,
                f"{m.title_of[lab]}: the same probe on the untrained network ({m.layers[j]})", unit="accuracy")
            summaries[f"majority.{lab}"] = proportion(round(float(m.majority[i]) * n), n,
                                                      f"{m.title_of[lab]}: always answering the commonest label",
                                                      unit="accuracy")
            summaries[f"gain_over_init.{lab}"] = Scalar(float(acc["linear"][i, j] - acc["linear_init"][i, j]),
                                                        "accuracy", f"{m.title_of[lab]}: that probe's accuracy minus "
                                                                    f"the same probe's on the untrained network")
        return summaries

    @staticmethod
    def _result_data(m: SimpleNamespace) -> dict:
        acc, sel = m.acc, m.sel
        best = {}
        for i, lab in enumerate(m.names):
            j = int(np.argmax(acc["linear"][i]))
            best[lab] = {"layer": m.layers[j], "accuracy": float(acc["linear"][i, j]),
                         "selectivity": float(sel["linear"][i, j]), "init": float(acc["linear_init"][i, j]),
                         "majority": float(m.majority[i]), "gain": float(acc["linear"][i, j] - acc["linear_init"][i, j]),
                         "mlp_selectivity": float(sel["mlp"][i, j])}
        most_gained = max(m.names, key=lambda lab: (best[lab]["gain"], -m.names.index(lab)))  # the first on ties
        return {"layers": m.layers, "concepts": m.names, "best": best, "init_source": m.init_source,
                "most_gained": most_gained,
                "more_selective": int((sel["linear"] > sel["mlp"]).sum()), "pairs": int(sel["linear"].size),
                "n_train": int(m.tr.sum()), "n_test": int((~m.tr).sum()), "steps": m.p["steps"],
                "types": "the current character" if m.s.task == "char-lm" else "each exact input"}
