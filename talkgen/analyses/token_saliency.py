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
from talkgen.analyses import budget
from talkgen.analyses.base import Context, Finding, Result, Scalar
from talkgen.analyses.sanity import auc, auc_estimate, spearman_rows
from talkgen.specs import Bars, ColouredText, Curves, Table
from talkgen.models.recipes import previous_occurrence
from talkgen.stats import proportion

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


def relative_gap(model, embedding, tokens, position, target, gap, blank: int | None) -> float:
    """The largest IG completeness gap relative to |f(x) - f(baseline)| over the rows."""
    f = A.at_position(model, embedding, position, tokens)
    with torch.no_grad():
        e = embedding(tokens)
        base = torch.zeros_like(e) if blank is None else embedding(torch.full_like(tokens, blank))
        t = torch.as_tensor(target).reshape(-1).expand(len(tokens)) if torch.as_tensor(target).numel() == 1 \
            else torch.as_tensor(target)
        span = (f(e) - f(base)).gather(1, t[:, None]).squeeze(1)
    return float((gap.abs() / span.abs().clamp_min(1e-12)).max())


def complete_ig(model, tokens, position, target, embedding, blank, p,
                rows: int | None = None) -> tuple[torch.Tensor, float, int]:
    """Token IG with ``ig_steps`` Gauss-Legendre steps, doubled (up to ``ig_max_steps``) until the
    completeness gap is at most ``ig_tolerance`` of f(x) - f(baseline), at most ``rows`` rows per backward
    pass besides ``internal_batch_size``. (scores, gap, steps)."""
    steps = p["ig_steps"]
    while True:
        a, gap = A.token_attributions(model, tokens, position, target, method="integrated_gradients",
                                      embedding=embedding, baseline_token=blank, n_steps=steps,
                                      internal_batch_size=p["internal_batch_size"], rows=rows,
                                      return_convergence_delta=True)
        rel = relative_gap(model, embedding, tokens, position, target, gap, blank)
        if rel <= p["ig_tolerance"] or steps * 2 > p["ig_max_steps"]:
            return a, rel, steps
        steps *= 2


def run_tokens(name: str, ctx: Context) -> Result:
    if ctx.subject.task in ("text-classifier", "text-encoder"):  # no evidence of known position: deletion instead
        return run_sentences(name, ctx)
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
    rows = budget.pass_rows(s, None, grad=True)  # a large model's logits bound a backward pass
    blank = chars.index(" ") if chars is not None and " " in chars else None
    ranks = {m: [] for m in METHODS}
    top3 = {m: [] for m in METHODS}
    chance_top3, recency_pct, recency_top3, ig_gaps, ig_steps = [], [], [], [], []
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
            if m == "integrated_gradients":
                a, gap, steps = complete_ig(model, seq, pos, target, embedding, blank, p, rows)
                ig_gaps.append(gap)
                ig_steps.append(steps)
            else:
                a = A.token_attributions(model, seq, pos, target, method=m, embedding=embedding,
                                         baseline_token=blank, rows=rows)
            a = a[0].abs().numpy()
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
    summaries.update({f"evidence_top3.{m}": proportion(round(hit[m] * len(evidence)), len(evidence),
                                                       f"{METHODS[m]}: evidence in the top 3")
                      for m in METHODS})
    summaries["evidence_top3_best"] = summaries[f"evidence_top3.{max(METHODS, key=lambda m: pct[m])}"]
    summaries["evidence_top3_chance"] = Scalar(chance, "fraction", "top-3 rate of a random order")
    summaries["evidence_predictions"] = Scalar(float(len(evidence)), "predictions",
                                               "held-out predictions whose evidence sits at a known position")
    summaries["ig_completeness_gap"] = Scalar(float(np.max(ig_gaps)), "fraction",
                                              "largest |sum of IG attributions - (f(x) - f(0))| / |f(x) - f(0)|")
    blind = [m for m in METHODS if pct[m] <= 0.5]
    findings = (Finding("medium", f"{len(blind)} attribution methods do not point at the evidence better than chance",
                        "; ".join(f"{METHODS[m]}: mean percentile rank {pct[m]:.2f}" for m in blind)
                        + f" for {kind} (0.5 by chance)", value=min(pct[m] for m in blind), threshold=0.5),) \
        if blind else ()
    best = max(METHODS, key=lambda m: pct[m])
    return Result(
        analysis=name, subject=s.name, arrays=arrays, summaries=summaries, figures=tuple(figures),
        tables=(Table(id="evidence_table", title="Where the evidence ranks", rows=rows,
                      columns=("method", "mean percentile rank", "in top 3")),),
        findings=findings,
        data={"kind": kind, "n": len(evidence), "context": context, "ig_gap": float(np.max(ig_gaps)),
              "ig_steps": [int(np.min(ig_steps)), int(np.max(ig_steps))],
              "baseline": "spaces" if blank is not None else "zero embeddings", "best": METHODS[best],
              "best_percentile": pct[best], "best_top3": hit[best], "chance_top3": chance,
              "recency_percentile": float(np.mean(recency_pct)), "labels": METHODS,
              "percentile": pct, "top3": hit})


def run_sentences(name: str, ctx: Context) -> Result:
    """A text classifier: per-token attributions of the predicted class, how far the methods agree,
    and a deletion check (remove tokens in each method's order, as padding, and follow the
    probability of the predicted class) against random orders. A sentence encoder: the same for the
    cosine similarity of each sentence's embedding to the next sentence's (``attribution.Similarity``)."""
    s, p = ctx.subject, ctx.params
    encoder = s.task == "text-encoder"
    pad = s.card.get("pad_token_id") if isinstance(s.card, dict) else None
    pad = 0 if pad is None else int(pad)
    g = ctx.generator()
    x = s.data.x_test[torch.randperm(len(s.data.x_test), generator=g)[: p["n_inputs"]]]
    real = x != pad
    if encoder:  # sentence r against sentence r + 1 of the sample (the last against the first)
        with torch.no_grad():
            references = s.model(x).roll(-1, 0)
        model = A.Similarity(s.model, references)
        target = torch.zeros(len(x), dtype=torch.long)
        score_name = "cosine similarity to the next sentence's embedding"
    else:
        model = s.model
        with torch.no_grad():
            target = model(x).argmax(1)
        score_name = "probability of the predicted class"
    embedding = A.input_embedding(model, x[:1])
    rows = budget.pass_rows(s, None, grad=True)
    attr = {}
    ig_gap = float("nan")
    for m in METHODS:
        if m == "integrated_gradients":
            a, ig_gap, steps = complete_ig(model, x, None, target, embedding, pad, p, rows)
        else:
            a = A.token_attributions(model, x, None, target, method=m, embedding=embedding, baseline_token=pad,
                                     rows=rows)
        attr[m] = a.abs()
    keys = list(METHODS)
    agree = np.ones((len(keys), len(keys)))
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            if i < j:
                rho = [float(spearman_rows(attr[a][r][real[r]].numpy()[None], attr[b][r][real[r]].numpy()[None])[0])
                       for r in range(len(x))]
                agree[i, j] = agree[j, i] = float(np.mean(rho))
    steps = 10
    fractions = np.linspace(0, 1, steps + 1)

    def deletion(order_of: dict[int, np.ndarray]) -> np.ndarray:
        curves = np.empty((len(x), steps + 1))
        for r in range(len(x)):
            pos = order_of[r]
            batch = x[r].repeat(steps + 1, 1)
            for k, f in enumerate(fractions):
                batch[k, pos[: int(round(f * len(pos)))]] = pad
            with torch.no_grad():
                if encoder:
                    curves[r] = A.Similarity(s.model, references[r:r + 1])(batch)[:, 0].numpy()
                else:
                    curves[r] = torch.softmax(model(batch), -1)[:, int(target[r])].numpy()
        return curves

    del_auc = {}
    curves = {}
    for m in keys:
        order_of = {r: real[r].nonzero().squeeze(1).numpy()[np.argsort(-attr[m][r][real[r]].numpy(), kind="stable")]
                    for r in range(len(x))}
        curves[m] = deletion(order_of)
        del_auc[m] = auc(curves[m])
    rng = np.random.default_rng(ctx.seed)
    rand = [deletion({r: rng.permutation(real[r].nonzero().squeeze(1).numpy()) for r in range(len(x))})
            for _ in range(p["random_orders"])]
    rand_auc = float(np.mean([auc(c) for c in rand]))
    arrays: dict[str, np.ndarray] = {"agreement": agree, "fraction": fractions,
                                     "del_auc": np.array([del_auc[m] for m in keys] + [rand_auc])}
    for m in keys:
        arrays[f"del:{m}"] = curves[m].mean(0)
    arrays["del:random"] = np.mean([c.mean(0) for c in rand], axis=0)
    names = s.token_names or (lambda ids: [str(i) for i in ids])
    figures = [
        Curves(id="deletion", title="Delete the tokens a method ranks first",
               caption=f"{score_name.capitalize()} as tokens are removed (as padding) in each method's "
                       f"order, mean over {len(x)} sentences; 'random' averages {p['random_orders']} random orders.",
               alt=f"Lines of the {score_name} against the fraction of tokens removed, per method and random.",
               x=("fraction",) * (len(keys) + 1), y=tuple(f"del:{m}" for m in keys) + ("del:random",),
               labels=tuple(METHODS.values()) + ("random order",), xlabel="fraction of tokens removed",
               ylabel="cosine similarity" if encoder else "probability of the predicted class", markers=True,
               styles=("-",) * len(keys) + ("--",)),
    ]
    for e in range(min(3, len(x))):
        ids = x[e][real[e]].tolist()
        words = names(ids)
        a = attr["integrated_gradients"][e][real[e]].numpy()
        a = a / (a.max() or 1.0)
        text = " ".join(words)
        values = np.concatenate([np.full(len(w) + (1 if q < len(words) - 1 else 0), a[q])
                                 for q, w in enumerate(words)])
        arrays[f"text{e}"] = values
        if encoder:
            other = " ".join(names(x[(e + 1) % len(x)][real[(e + 1) % len(x)]].tolist()))
            title = "What brings this sentence close to the next?"
            caption = (f"Integrated Gradients of the cosine similarity of this sentence's embedding to that of "
                       f"{other!r} per token, scaled to the largest.")
        else:
            label = s.data.classes[int(target[e])] if int(target[e]) < len(s.data.classes) else str(int(target[e]))
            title = f"Why {label!r}?"
            caption = f"Integrated Gradients of the predicted class ({label}) per token, scaled to the largest."
        figures.append(ColouredText(
            id=f"text-{e}", title=title, caption=caption,
            alt="A sentence with each token's background set by its attribution.", text=text,
            values=f"text{e}", signed=False))
    beats = {m: del_auc[m] < rand_auc for m in keys}
    summaries = {f"deletion_auc.{m}": auc_estimate(curves[m], f"{METHODS[m]}: area under the deletion curve",
                                                   ctx.seed) for m in keys}
    summaries["deletion_auc_random"] = auc_estimate(np.mean(rand, axis=0), "the same for random orders", ctx.seed)
    summaries["ig_completeness_gap"] = Scalar(ig_gap, "fraction",
                                              "largest |sum of IG attributions - (f(x) - f(0))| / |f(x) - f(0)|")
    summaries["methods_beating_random_order"] = Scalar(float(sum(beats.values())), "methods",
                                                       f"of {len(keys)}, deletion AUC below random")
    off = agree[np.triu_indices(len(keys), 1)]
    summaries["mean_method_agreement"] = Scalar(float(off.mean()), "Spearman ρ", "mean rank agreement between methods")
    losers = [m for m in keys if not beats[m]]
    findings = (Finding("medium", f"{len(losers)} of {len(keys)} attribution methods do not beat a random token order",
                        "; ".join(f"{METHODS[m]}: deletion AUC {del_auc[m]:.3f}" for m in losers)
                        + f" (random orders: {rand_auc:.3f}); their token rankings say nothing this test can see",
                        value=max(del_auc[m] for m in losers), threshold=rand_auc),) if losers else ()
    rows = tuple((METHODS[m], f"{del_auc[m]:.3f}", "yes" if beats[m] else "no") for m in keys) + (
        ("random order", f"{rand_auc:.3f}", ""),)
    agreement = Table(id="agreement", title="Do the methods agree?", columns=("",) + tuple(METHODS.values()),
                      rows=tuple((METHODS[a],) + tuple(f"{agree[i, j]:+.2f}" for j in range(len(keys)))
                                 for i, a in enumerate(keys)),
                      caption=f"Mean Spearman rank correlation between the methods' token rankings over {len(x)} "
                              f"sentences.")
    return Result(
        analysis=name, subject=s.name, arrays=arrays, summaries=summaries, figures=tuple(figures),
        tables=(Table(id="deletion_table", title="Token deletion", columns=("method", "deletion AUC", "beats random"),
                      rows=rows), agreement),
        findings=findings,
        data={"kind": "sentences", "score": score_name, "n": len(x), "ig_gap": ig_gap, "ig_steps": [steps, steps], "baseline": "padding",
              "labels": METHODS, "beats": beats, "random_auc": rand_auc,
              "del_auc": del_auc, "agreement": float(off.mean())})
