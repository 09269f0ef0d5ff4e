"""Per-token saliency for token models, scored against evidence whose position is known.

For a character model, the evidence for predicting a closing bracket is its matching opening
bracket; for a model that continues repeated sequences, the evidence for a copied token is the
token that followed the previous occurrence of the current one. For each such target, every
method of ``talkgen.attribution.token_attributions`` ranks the earlier tokens, and we measure
where the evidence lands: its percentile rank (1 = most salient; 0.5 by chance) and how often it
is among the top 3 (against the chance rate 3 / context length). A random ordering and "the
most recent tokens first" are the two baselines. The attributions are drawn over the text.
"""

from __future__ import annotations

import numpy as np
import torch

from talkgen import attribution as A
from talkgen.analyses.base import Context, Finding, Result, Scalar
from talkgen.analyses.specs import Bars, ColouredText, Table
from talkgen.models.recipes import previous_occurrence

METHODS = {"gradient": "gradient", "grad_x_input": "gradient × input", "integrated_gradients": "Integrated Gradients",
           "occlusion": "occlusion"}
CLOSE = {")": "(", "]": "[", "}": "{"}


def _chars(classes: tuple[str, ...]) -> list[str]:
    out = []
    for c in classes:
        c = {"\\n": "\n", "\\t": "\t"}.get(c, c)
        out.append(c if len(c) == 1 else "?")
    return out


def bracket_evidence(x: torch.Tensor, y: torch.Tensor, chars: list[str], context: int, limit: int) -> list[tuple[int, int, int]]:
    """(row, position, position of the matching opening bracket) for targets that close a bracket
    opened at least 2 and at most ``context`` - 1 characters earlier in the same row."""
    out = []
    for r in range(len(x)):
        row, tgt = x[r].tolist(), y[r].tolist()
        for j, t in enumerate(tgt):
            if chars[t] not in CLOSE:
                continue
            depth, k = 0, j
            while k >= 0 and j - k < context:
                c = chars[row[k]]
                if c == chars[t]:
                    depth += 1
                elif c == CLOSE[chars[t]]:
                    if depth == 0:
                        break
                    depth -= 1
                k -= 1
            if k >= 0 and j - k < context and j - k >= 2 and chars[row[k]] == CLOSE[chars[t]]:
                out.append((r, j, k))
                if len(out) >= limit:
                    return out
    return out


def copy_evidence(x: torch.Tensor, y: torch.Tensor, limit: int) -> list[tuple[int, int, int]]:
    """(row, position, position of the token to copy) for targets that copying predicts."""
    prev = previous_occurrence(x)
    out = []
    for r in range(len(x)):
        for j in range(x.shape[1]):
            k = int(prev[r, j]) + 1
            if prev[r, j] >= 0 and k < j and int(x[r, k]) == int(y[r, j]):
                out.append((r, j, k))
                if len(out) >= limit:
                    return out
    return out


def percentile(scores: np.ndarray, k: int) -> float:
    """Share of the other positions that score lower than position k (1: the most salient)."""
    others = np.delete(scores, k)
    return float((others < scores[k]).mean() + 0.5 * (others == scores[k]).mean())


def run_tokens(name: str, ctx: Context) -> Result:
    s, p = ctx.subject, ctx.params
    model = s.model
    chars = _chars(s.data.classes) if s.task == "char-lm" else None
    context = 64
    g = ctx.generator()
    order = torch.randperm(len(s.data.x_test), generator=g)
    x, y = s.data.x_test[order], s.data.y_test[order]
    limit = p["n_inputs"]
    if chars is not None:
        evidence, kind = bracket_evidence(x, y, chars, context, limit), "the matching opening bracket"
    else:
        evidence, kind = copy_evidence(x, y, limit), "the token after the previous occurrence of the current token"
    if not evidence:
        return Result(analysis=name, subject=s.name,
                      notes=(f"No target in the held-out data has known evidence ({kind}); nothing to score.",),
                      data={"kind": kind, "n": 0})
    embedding = A.input_embedding(model, x[:1])
    ranks = {m: [] for m in METHODS}
    top3 = {m: [] for m in METHODS}
    chance_top3, recency_pct, recency_top3 = [], [], []
    examples = []
    for i, (r, j, k) in enumerate(evidence):
        start = max(0, j - context + 1)
        seq, pos, ev = x[r:r + 1, start:j + 1], j - start, k - start
        target = y[r, j:j + 1]
        n = pos + 1
        chance_top3.append(min(3, n - 1) / (n - 1))
        rec = np.arange(n, dtype=float)  # the most recent token scores highest
        recency_pct.append(percentile(rec, ev))
        recency_top3.append(float(ev >= n - 3))
        per = {}
        for m in METHODS:
            kw = {"n_steps": p["ig_steps"], "internal_batch_size": p["internal_batch_size"]} \
                if m == "integrated_gradients" else {}
            a = A.token_attributions(model, seq, pos, target, method=m, embedding=embedding, **kw)[0].abs().numpy()
            per[m] = a
            ranks[m].append(percentile(a, ev))
            top3[m].append(float(ev in np.argsort(-a)[:3]))
        if i < 3:
            examples.append((seq[0].tolist(), per["grad_x_input"], ev, int(target)))
    pct = {m: float(np.mean(v)) for m, v in ranks.items()}
    hit = {m: float(np.mean(v)) for m, v in top3.items()}
    chance = float(np.mean(chance_top3))
    arrays: dict[str, np.ndarray] = {
        "percentile": np.array([pct[m] for m in METHODS] + [0.5, float(np.mean(recency_pct))]),
        "top3": np.array([hit[m] for m in METHODS] + [chance, float(np.mean(recency_top3))]),
    }
    figures = [Bars(id="evidence", title="Does saliency point at the evidence?",
                    caption=f"For {len(evidence)} held-out targets whose evidence is known ({kind}): its mean "
                            f"percentile rank among the context's tokens, and how often it is in the top 3; "
                            f"baselines: random order, and the most recent tokens first.",
                    alt="Grouped bars of evidence percentile rank and top-3 rate per method and baseline.",
                    categories=tuple(METHODS.values()) + ("random", "most recent first"),
                    values=("percentile", "top3"), series=("mean percentile rank", "evidence in top 3"),
                    ylabel="share")]
    for e, (toks, attr, ev, tgt) in enumerate(examples):
        if chars is not None:
            text = "".join(chars[t] for t in toks)
            values = attr / (attr.max() or 1.0)
            shown = chars[tgt]
        else:
            labels = [s.data.classes[t] for t in toks]
            text = " ".join(labels)
            values = np.concatenate([np.full(len(lab) + (1 if q < len(labels) - 1 else 0), attr[q])
                                     for q, lab in enumerate(labels)]) / (attr.max() or 1.0)
            shown = s.data.classes[tgt]
        key = f"text{e}"
        arrays[key] = values
        figures.append(ColouredText(
            id=f"text-{e}", title=f"What the prediction of {shown!r} rests on",
            caption=f"Gradient × input of the score of {shown!r} (the next token) over the preceding context; the "
                    f"evidence ({kind}) is token {ev + 1} of {len(toks)}.",
            alt="Text with each token's background set by its attribution.", text=text, values=key, signed=False))
    rows = tuple((METHODS[m], f"{pct[m]:.2f}", f"{hit[m]:.2f}") for m in METHODS) + (
        ("random order", "0.50", f"{chance:.2f}"),
        ("most recent first", f"{np.mean(recency_pct):.2f}", f"{np.mean(recency_top3):.2f}"))
    summaries = {f"evidence_percentile.{m}": Scalar(pct[m], "fraction", f"{METHODS[m]}: mean percentile rank of "
                                                     f"the evidence (0.5 by chance)") for m in METHODS}
    summaries.update({f"evidence_top3.{m}": Scalar(hit[m], "fraction", f"{METHODS[m]}: evidence in the top 3")
                      for m in METHODS})
    summaries["evidence_top3_chance"] = Scalar(chance, "fraction", "top-3 rate of a random order")
    findings = tuple(
        Finding("medium", f"{METHODS[m]} does not point at the evidence better than chance",
                f"mean percentile rank of {kind}: {pct[m]:.2f} (0.5 by chance)", value=pct[m], threshold=0.5)
        for m in METHODS if pct[m] <= 0.5)
    best = max(METHODS, key=lambda m: pct[m])
    return Result(
        analysis=name, subject=s.name, arrays=arrays, summaries=summaries, figures=tuple(figures),
        tables=(Table(id="evidence_table", title="Where the evidence ranks", rows=rows,
                      columns=("method", "mean percentile rank", "in top 3")),),
        findings=findings,
        data={"kind": kind, "n": len(evidence), "context": context, "best": METHODS[best],
              "best_percentile": pct[best], "best_top3": hit[best], "chance_top3": chance,
              "recency_percentile": float(np.mean(recency_pct)), "labels": METHODS,
              "percentile": pct, "top3": hit})
