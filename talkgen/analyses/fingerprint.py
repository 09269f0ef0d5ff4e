"""The fingerprint: every analysis of a subject reduced to its named numbers, side by side with the
same numbers for other subjects of the same architecture and for the subject at initialisation.

What it measures: nothing new about the model; it gathers the headline scalar summaries (those
without a per-layer or per-method suffix) of every analysis that ran on the subject, and runs the
cheap analyses (weights, activations, model card) once more on the same architecture with its
initial weights. For every summary that the subject shares with a peer (a subject with the same
parameter count, i.e. the same architecture) or with its initialisation, the relative difference
|a - b| / max(|a|, |b|, 0.001) says how well that number separates the two; the figure shows the
summaries that separate them most. These numbers are the features section 3's meta-networks
learn from.
"""

from __future__ import annotations

import math

import numpy as np

from talkgen.analyses.base import Analysis, Context, Result, Scalar, TwinRequest, register
from talkgen.models.twins import initial_source
from talkgen.specs import Bars, Table
from talkgen.stats import CI_LEVEL

def headline(results: dict) -> dict[str, tuple[float, str, str, dict]]:
    """'analysis: summary' -> (value, unit, meaning, estimate) for the summaries without a '.' suffix; estimate
    is {"n", "lo", "hi"} for a number measured on a sample (an accuracy, an AUC), else {}."""
    out = {}
    for a, r in results.items():
        for name, sc in r.summaries.items():
            if "." not in name and isinstance(sc.value, (int, float)) and math.isfinite(sc.value):
                est = {"n": sc.n, "lo": sc.lo, "hi": sc.hi} if sc.n is not None else {}
                out[f"{a}: {name}"] = (float(sc.value), sc.unit, sc.meaning, est)
    return out


def readable(key: str) -> str:
    """'meta-trojan: trojan_score' as a reader meets it: 'trojan score (meta-trojan)'."""
    analysis, _, name = key.partition(": ")
    return f"{name.replace('_', ' ')} ({analysis})" if name else key.replace("_", " ")


FLOOR = 1e-3  # two numbers both this close to zero do not separate anything


def separation(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|, FLOOR): 0 for equal numbers, up to 2 for opposite signs."""
    return abs(a - b) / max(abs(a), abs(b), FLOOR)


@register
class Fingerprint(Analysis):
    name = "fingerprint"
    order = 10
    title = "The model's fingerprint"
    section = "summaries"
    version = 3  # 2: how far its nearest same-architecture peer is, as a summary; 3: estimates keep their interval
    gathers = True
    applies_text = "any model (gathers the summaries of the analyses that ran before it)"
    params = {"top": 12}

    def twins(self, subject, params) -> tuple[TwinRequest, ...]:
        # the cheap analyses (runs_on_twins) rerun on the initial weights; the fingerprint reads their summaries,
        # so the t-SNE pictures (most of the activations' time, and no summary) are left out there
        return (TwinRequest("initial", params=(("activations", "tsne_layers", 0),)),)

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        by_subject: dict[str, dict] = {}
        for key, r in ctx.deps.items():
            subj, _, analysis = key.partition("/")
            if analysis != self.name:
                by_subject.setdefault(subj, {})[analysis] = r
        lines = {t: headline(res) for t, res in by_subject.items() if t not in ctx.twins}
        own = lines.get(s.name, {})
        columns = {s.name: own}
        n_params = own.get("model-card: parameters", (None,))[0]
        peers = [t for t, h in lines.items()
                 if t != s.name and n_params is not None and h.get("model-card: parameters", (None,))[0] == n_params]
        for t in peers:
            columns[t] = lines[t]
        init_name = TwinRequest("initial").name(s.name)
        init_results = by_subject.get(init_name, {})
        if init_results:
            columns[init_name] = headline(init_results)
        init_source = initial_source(s) if init_results else "not available (no initial weights for this model)"
        names = list(columns)
        shared = [k for k in own if any(k in columns[c] for c in names[1:])]
        sep = {k: max(separation(own[k][0], columns[c][k][0]) for c in names[1:] if k in columns[c]) for k in shared}
        # half the rows for what separates the subject from its peers, the rest from its initialisation
        peer_sep = {k: max([separation(own[k][0], columns[c][k][0]) for c in peers if k in columns[c]] or [0.0])
                    for k in shared}
        top = sorted(shared, key=lambda k: -peer_sep[k])[: ctx.params["top"] // 2] if peers else []
        top += [k for k in sorted(shared, key=lambda k: -sep[k]) if k not in top][: ctx.params["top"] - len(top)]
        arrays: dict[str, np.ndarray] = {}
        for i, c in enumerate(names):
            vals = []
            for k in top:
                row = [columns[d][k][0] for d in names if k in columns[d]]
                scale = max(abs(v) for v in row) or 1.0
                vals.append(columns[c][k][0] / scale if k in columns[c] else np.nan)
            arrays[f"col{i}"] = np.array(vals)
        best_by_column = {}
        for c in names[1:]:
            common = [k for k in own if k in columns[c]]
            ranked = sorted(common, key=lambda k: -separation(own[k][0], columns[c][k][0]))[:3]
            best_by_column[c] = [{"summary": k, "own": own[k][0], "other": columns[c][k][0], "unit": own[k][1],
                                  "own_est": own[k][3], "other_est": columns[c][k][3],
                                  "separation": separation(own[k][0], columns[c][k][0])} for k in ranked]
        figures = ()
        if top:
            figures = (Bars(id="separating", title="The numbers that tell these models apart",
                            caption=f"The {len(top)} headline summaries that differ most between {s.name} and "
                                    f"{', '.join(names[1:]) or 'nothing else'}; each summary is divided by its largest "
                                    f"absolute value across the models, so bars compare within a summary.",
                            alt="Grouped bars, one group per summary, one bar per model.",
                            categories=tuple(readable(k) for k in top),
                            values=tuple(f"col{i}" for i in range(len(names))),
                            series=tuple(names), ylabel="value / largest |value| in the group"),)
        rows = tuple((k.split(": ")[0], k.split(": ")[1], f"{v:.4g}" + (
                      f" ({CI_LEVEL:.0%} interval {est['lo']:.4g} to {est['hi']:.4g}; n = {est['n']:,})"
                      if est and est["lo"] is not None and math.isfinite(est["lo"]) else ""), unit, meaning)
                     for k, (v, unit, meaning, est) in own.items())
        def cell(entry) -> str:  # a value; an estimate with its interval and n
            v, _, _, est = entry
            if est and est["lo"] is not None and math.isfinite(est["lo"]):
                return f"{v:.4g} ({est['lo']:.3g} to {est['hi']:.3g}, n = {est['n']:,})"
            return f"{v:.4g}"

        sep_rows = tuple((readable(k),) + tuple(cell(columns[c][k]) if k in columns[c] else "—" for c in names)
                         + (f"{sep[k]:.2f}",) for k in top)
        tables = (
            Table(id="separating_table", title="Where they differ", columns=("summary",) + tuple(names) + ("separation",),
                  rows=sep_rows, caption="separation = the largest |a − b| / max(|a|, |b|, 0.001) against any other "
                                         "column (numbers within 0.001 of zero do not separate). An estimate (an "
                                         f"accuracy, an AUC) with its {CI_LEVEL:.0%} interval and n."),
            Table(id="fingerprint", title=f"Fingerprint of {s.name}",
                  columns=("analysis", "summary", "value", "unit", "meaning"), rows=rows, report_only=True),
        )
        return Result(
            analysis=self.name, subject=s.name, arrays=arrays,
            summaries={"headline_summaries": Scalar(float(len(own)), "count",
                                                    "named numbers this subject's analyses produced"),
                       **({"peer_separation": Scalar(max(b[0]["separation"] for c, b in best_by_column.items()
                                                         if c in peers and b), "",
                                                     "the largest separation from a peer of the same architecture")}
                          if any(best_by_column.get(c) for c in peers) else {})},
            figures=figures, tables=tables,
            data={"columns": names, "peers": peers, "init": init_name if init_name in columns else None,
                  "init_source": init_source, "best": best_by_column, "count": len(own), "shared": len(shared)})
