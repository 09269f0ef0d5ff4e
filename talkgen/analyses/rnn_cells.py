"""Interpretable cells of a recurrent network (Karpathy, Johnson & Fei-Fei 2015).

What it measures: the hidden state h_t and cell state c_t of every unit of the last LSTM layer
over held-out text, scored against ground-truth character labels (in string, in comment,
bracket depth, indentation level, column): Pearson r for every label, and for the binary labels
also AUROC (read as max(AUC, 1 - AUC), since a cell may fire on the complement). The best cell
per label is compared with the best cell of the same architecture re-initialised (the baseline
a discovery has to beat). Gate saturation: for each unit, the fraction of steps its input,
forget and output gates are below 0.1 or above 0.9. The best cells are drawn over the text.
Assumptions: an ``nn.LSTM`` fed by the model (its input is captured with a hook) and labels
aligned with the test characters (the subject's ``text_labels``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from talkgen import devices
from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.hooks import capture_inputs
from talkgen.models.recurrent import last_lstm, lstm_states
from talkgen.specs import Bars, ColouredText, Scatter, Table
from talkgen.stats import CI_LEVEL, auc_interval, auroc, pearson

BINARY = ("in_string", "in_comment")
GRADED = ("bracket_depth", "indent_level", "column")
FOUND_R, FOUND_AUROC = 0.6, 0.9


def _cell(b: dict) -> str:
    """A cell's score for the table: an AUROC with its interval, an |r| as it is."""
    return f"{b['score']:.3f} ({b['ci'][0]:.3f} to {b['ci'][1]:.3f})" if "ci" in b else f"{b['score']:.3f}"


@register
class RNNCells(Analysis):
    name = "rnn-cells"
    order = 30
    title = "Interpretable cells"
    section = "looking-in"
    version = 4  # 3: cells ordered by what training added; the best unit of each label is a summary; 4: AUROCs with
    # their interval and n
    cost_hint = 4
    applies_text = "models with an nn.LSTM and per-character labels (the char-LSTM on Python source)"
    params = {"n_chars": 50_000, "excerpt_chars": 700}
    quick = {"n_chars": 20_000}

    # per character: a forward pass of the trained model and of its re-initialised twin, and each one's LSTM
    # replayed step by step (about as much again)
    sample_order = (("n_chars", 2_000),)

    def passes(self, subject, params) -> float:
        return 4 * params["n_chars"]

    def applies_to(self, subject) -> bool | str:
        if last_lstm(subject.model) is None:
            return "needs a recurrent (nn.LSTM) layer"
        if subject.text_labels is None:
            return "needs per-character labels of its text (in string, in comment, brackets, ...)"
        return True

    def _states(self, model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        name = last_lstm(model)
        lstm = dict(model.named_modules())[name]
        parts: dict[str, list] = {}
        with torch.no_grad():
            for i in range(0, len(x), 128):
                with capture_inputs(model, name) as seen:
                    model(x[i:i + 128])
                for k, v in lstm_states(lstm, seen[0][0]).items():
                    parts.setdefault(k, []).append(v.reshape(-1, v.shape[-1]))
        return {k: torch.cat(v).numpy() for k, v in parts.items()}  # each (n_chars, H)

    def _scores(self, states: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, dict]:
        from scipy.stats import rankdata

        out = {}
        all_known = all((labels[f] >= 0).all() for f in BINARY)
        ranks = {src: rankdata(states[src], axis=0) for src in ("c", "h")} if all_known else {}
        for feat in BINARY + GRADED:
            lab = labels[feat].astype(np.float64)
            known = lab >= 0
            best = None
            for src in ("c", "h"):
                acts = states[src][known]
                if feat in BINARY:
                    auc = auroc(acts, lab[known] > 0, ranks.get(src))
                    score = np.maximum(auc, 1 - auc)
                    u = int(np.nanargmax(score))
                    n_pos = int((lab[known] > 0).sum())
                    cand = {"score": float(score[u]), "metric": "AUROC", "unit": u, "state": src,
                            "sign": 1 if auc[u] >= 0.5 else -1,
                            "r": float(pearson(acts[:, u:u + 1], lab[known])[0]), "n": int(known.sum()),
                            # as measured for the best cell; picking the best of many cells is not accounted for
                            "ci": list(auc_interval(float(score[u]), n_pos, int(known.sum()) - n_pos))}
                else:
                    r = pearson(acts, lab[known])
                    u = int(np.nanargmax(np.abs(r)))
                    cand = {"score": float(abs(r[u])), "metric": "|r|", "unit": u, "state": src,
                            "sign": 1 if r[u] >= 0 else -1, "r": float(r[u])}
                if best is None or cand["score"] > best["score"]:
                    best = cand
            out[feat] = best
        return out

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        labels_all = s.text_labels()
        per_window = s.data.x_test.shape[1]
        n_windows = max(1, min(len(s.data.x_test), ctx.params["n_chars"] // per_window))
        x = s.data.x_test[:n_windows]
        n = n_windows * per_window
        labels = {k: np.asarray(labels_all[k][:n]) for k in BINARY + GRADED}
        text = labels_all["text"][:n]
        trained = self._states(s.model, x)
        init_model = copy.deepcopy(s.model)
        with devices.on_cpu(init_model), torch.random.fork_rng(devices=[]):  # the CPU's draws on every device
            torch.manual_seed(ctx.seed)
            for m in init_model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        init_model.eval()
        baseline = self._states(init_model, x)
        scores, scores_init = self._scores(trained, labels), self._scores(baseline, labels)

        arrays: dict[str, np.ndarray] = {}
        summaries: dict[str, Scalar] = {}
        rows, found = [], []
        feats = list(BINARY + GRADED)
        for feat in feats:
            b, b0 = scores[feat], scores_init[feat]
            threshold = FOUND_AUROC if b["metric"] == "AUROC" else FOUND_R
            is_found = b["score"] >= threshold
            if is_found:
                found.append(feat)
            summaries[f"{feat}.best_score"] = Scalar(b["score"], b["metric"], f"best cell's {b['metric']} for {feat}")
            summaries[f"{feat}.best_score_at_init"] = Scalar(b0["score"], b0["metric"],
                                                             f"the same at initialisation (baseline) for {feat}")
            summaries[f"{feat}.best_r"] = Scalar(b["r"], "r", f"Pearson r of that cell with {feat}")
            summaries[f"{feat}.best_unit"] = Scalar(float(b["unit"]), "unit",
                                                    f"index of the best cell for {feat} in {b['state']}")
            rows.append((feat, f"{b['state']}[{b['unit']}]", b["metric"], _cell(b), f"{b['r']:+.3f}", _cell(b0),
                         "yes" if is_found else "no"))
        def gain(f: str) -> float:  # what training added, as a share of the range above chance
            chance = 0.5 if scores[f]["metric"] == "AUROC" else 0.0
            return (scores[f]["score"] - scores_init[f]["score"]) / (1 - chance)

        found.sort(key=gain, reverse=True)  # the discoveries, the one training changed most first
        summaries["labels_scored"] = Scalar(float(len(feats)), "count", "labels every cell is scored against")
        summaries["features_found"] = Scalar(float(len(found)), "count",
                                             f"labels with a cell at |r| >= {FOUND_R} or AUROC >= {FOUND_AUROC}")
        arrays["best"] = np.array([scores[f]["score"] for f in feats])
        arrays["best_init"] = np.array([scores_init[f]["score"] for f in feats])
        figures: list = [Bars(
            id="scores", title="How well the best cell tracks each label",
            caption="Best single cell's score per label (AUROC for in string / in comment, |Pearson r| for "
                    "the graded labels), trained model vs the same architecture at initialisation.",
            alt="Grouped bars of the best cell score per label, trained vs at initialisation.",
            categories=tuple(feats), values=("best", "best_init"), series=("trained", "at initialisation"),
            ylabel="best cell score (AUROC or |r|)")]
        start = self._excerpt_start(labels, ctx.params["excerpt_chars"])
        stop = start + ctx.params["excerpt_chars"]
        # AUROC and |r| have different chance levels: rank cells by their score over the bar they must clear
        def strength(f: str) -> float:
            b = scores[f]
            return b["score"] / (FOUND_AUROC if b["metric"] == "AUROC" else FOUND_R)

        # the three strongest cells, the one training changed most first (the talk shows the first)
        for feat in sorted(sorted(feats, key=strength, reverse=True)[:3], key=gain, reverse=True):
            b = scores[feat]
            key = f"text:{feat}"
            arrays[key] = trained[b["state"]][start:stop, b["unit"]] * b["sign"]
            figures.append(ColouredText(
                id=f"cell-{feat.replace('_', '-')}", title=f"Cell {b['state']}[{b['unit']}] and {feat.replace('_', ' ')}",
                caption=f"Held-out Python source with each character's background set by {b['state']}[{b['unit']}] "
                        f"(red high, blue low{', sign flipped' if b['sign'] < 0 else ''}); its {b['metric']} for "
                        f"{feat.replace('_', ' ')} is {b['score']:.2f}"
                        + (f" ({CI_LEVEL:.0%} interval {b['ci'][0]:.2f} to {b['ci'][1]:.2f}; n = {b['n']:,})"
                           if "ci" in b else "") + ".",
                alt=f"Source code coloured character by character by the activation of the cell that best tracks {feat}.",
                text=text[start:stop], values=key, signed=True))
        figures.append(self._saturation(trained, arrays))
        table = Table(id="cells", title="The best cell per label",
                      columns=("label", "cell", "metric", "score", "Pearson r", "best at init", "found"),
                      rows=tuple(rows),
                      caption=f"found: |r| >= {FOUND_R} (graded) or AUROC >= {FOUND_AUROC} (binary). AUROCs with "
                              f"their {CI_LEVEL:.0%} interval, over n = {n:,} held-out characters.")
        return Result(analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
                      figures=tuple(figures), tables=(table,),
                      data={"scores": scores, "scores_init": scores_init, "found": found, "n_chars": n,
                            "units": int(trained["h"].shape[1]), "thresholds": {"r": FOUND_R, "auroc": FOUND_AUROC}})

    @staticmethod
    def _excerpt_start(labels: dict[str, np.ndarray], length: int) -> int:
        """A stretch of text that shows strings, comments and nested brackets, at a line start."""
        n = len(labels["column"])
        best, best_score = 0, -1.0
        for start in range(0, max(1, n - length), max(1, length // 4)):
            while start < n and labels["column"][start] != 0:
                start += 1
            sl = slice(start, start + length)
            score = ((labels["in_string"][sl] > 0).mean() > 0.05) + ((labels["in_comment"][sl] > 0).mean() > 0.03) \
                + min(labels["bracket_depth"][sl].max(initial=0), 3) / 3 + (labels["indent_level"][sl].max(initial=0) >= 2)
            if score > best_score:
                best, best_score = start, float(score)
        return best

    @staticmethod
    def _saturation(states: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> Scatter:
        for g in ("i", "f", "o"):
            arrays[f"left:{g}"] = (states[g] < 0.1).mean(0)
            arrays[f"right:{g}"] = (states[g] > 0.9).mean(0)
        arrays["unit_label"] = np.zeros(states["i"].shape[1], dtype=np.int64)
        return Scatter(
            id="saturation", title="Gate saturation",
            caption="Each dot is one unit: the fraction of steps its gate is below 0.1 (x) or above 0.9 (y), "
                    "for the input, forget and output gates.",
            alt="Three scatter plots of left- versus right-saturation fractions of the LSTM's gates, one dot per unit.",
            x=tuple(f"left:{g}" for g in "ifo"), y=tuple(f"right:{g}" for g in "ifo"),
            labels=("unit_label",) * 3, panel_titles=("input gate", "forget gate", "output gate"),
            label_names=("unit",), xlabel="fraction of steps < 0.1", ylabel="fraction of steps > 0.9",
            ticks=True, limits=(-0.02, 1.02))
