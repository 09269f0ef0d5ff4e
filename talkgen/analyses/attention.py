"""Attention focus: every layer's and head's attention matrix, what the heads do, and how far
attention agrees with attribution.

What it measures, on a seeded set of held-out sequences:

* the attention matrices of every layer and head, captured three ways so that no kernel hides
  them: a ``pattern`` submodule (an identity the softmax passes through, as in the sample
  transformer), ``nn.MultiheadAttention`` asked for per-head weights, and any call to
  ``torch.nn.functional.scaled_dot_product_attention`` recomputed explicitly (which also turns
  off fused fast paths while recording);
* per head: the mean entropy of its attention rows, and on the standard probe (a random segment
  of distinct tokens repeated once) its previous-token score (mean attention from t to t-1) and
  its induction score (mean attention from each token of the second copy to the token after its
  first occurrence; Olsson et al. 2022);
* attention rollout and attention flow (Abnar & Zuidema 2020) from the head-averaged matrices
  with the residual connection (0.5 A + 0.5 I);
* attention against attribution: Spearman rank correlation, per target position, between the
  importance that raw attention (last layer), rollout and flow give each earlier token and the
  importance given by gradient x input, Integrated Gradients and occlusion of the token
  embeddings (the "attention is not explanation" debate; Jain & Wallace 2019).

Assumptions: a token model (B, T) -> (B, T, V) whose attention is causal or full over one sequence.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from talkgen import attribution as A
from talkgen.analyses import budget
from talkgen.analyses.base import Analysis, Check, Context, Result, Scalar, register, value_of
from talkgen.analyses.sanity import spearman_rows
from talkgen.specs import Bars, Heatmaps, Table
from talkgen.models.recipes import previous_occurrence


class _SDPARecorder(TorchFunctionMode):
    """Records softmax(QK^T / sqrt(d) + mask) of every scaled_dot_product_attention call."""

    def __init__(self, sink, stack) -> None:
        super().__init__()
        self.sink, self.stack = sink, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is nn.functional.scaled_dot_product_attention:
            q, k = args[0], args[1]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
            scale = kwargs.get("scale") or 1 / math.sqrt(q.shape[-1])
            with torch.no_grad():
                s = (q @ k.transpose(-1, -2)) * scale
                if causal:
                    s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1),
                                      float("-inf"))
                if mask is not None:
                    s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
                self.sink.append((self.stack[-1] if self.stack else "sdpa", s.softmax(-1).detach().cpu()))
        return func(*args, **kwargs)


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Inside the block, every forward pass of ``model`` appends (layer name, (B, heads, T, S)), on the CPU."""
    sink: list[tuple[str, torch.Tensor]] = []
    stack: list[str] = []
    handles = []
    def leave(mod, args, out) -> None:  # a forward hook that returns something replaces the output
        stack.pop()

    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda mod, a, name=name: stack.append(name)))
        handles.append(m.register_forward_hook(leave))
        if name.endswith("pattern") or name == "pattern":
            handles.append(m.register_forward_hook(
                lambda mod, a, o, name=name: sink.append((name.rsplit(".pattern", 1)[0] or name, o.detach().cpu()))))
        if isinstance(m, nn.MultiheadAttention):
            def force(mod, args, kwargs):
                kwargs = dict(kwargs, need_weights=True, average_attn_weights=False)
                return args, kwargs

            handles.append(m.register_forward_pre_hook(force, with_kwargs=True))
            handles.append(m.register_forward_hook(
                lambda mod, a, o, name=name: sink.append((name, o[1].detach().cpu())) if o[1] is not None else None))
    mode = _SDPARecorder(sink, stack)
    try:
        with mode:
            yield sink
    finally:
        for h in handles:
            h.remove()


def attention_maps(model: nn.Module, tokens: torch.Tensor,
                   rows: int | None = None) -> tuple[list[str], list[torch.Tensor]]:
    """(layer names, [(B, heads, T, T) per layer]) from forward passes of ``rows`` sequences at a time (all of
    them by default): what a pass outputs (a language model's logits) is let go after each one."""
    rows = rows or len(tokens)
    names: list[str] = []
    parts: list[list[torch.Tensor]] = []
    for i in range(0, len(tokens), rows):
        with record_attention(model) as sink, torch.no_grad():
            model(tokens[i:i + rows])
        names = [n for n, _ in sink]
        parts.append([a for _, a in sink])
    if len(parts) == 1:
        return names, parts[0]
    return names, [torch.cat(layer) for layer in zip(*parts)]


def row_entropy(a: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of every attention row, (..., T)."""
    return -(a * torch.log2(a.clamp_min(1e-30))).sum(-1)


def head_scores(a: torch.Tensor, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous-token, induction, duplicate-token) score per head for (B, H, T, T) attention:
    mean attention from t to t-1; from t to the token after the previous occurrence of token t;
    and from t to that previous occurrence itself."""
    b, h, t, _ = a.shape
    rows = torch.arange(1, t)
    prev_tok = a[:, :, rows, rows - 1].mean((0, 2))
    prev = previous_occurrence(tokens)
    src = prev + 1  # the token after the earlier occurrence
    valid = (prev >= 0) & (src <= torch.arange(t))
    if not valid.any():
        return prev_tok.numpy(), np.full(h, np.nan), np.full(h, np.nan)
    bi, ti = valid.nonzero(as_tuple=True)
    induction = a[bi, :, ti, src[bi, ti]].mean(0)
    duplicate = a[bi, :, ti, prev[bi, ti]].mean(0)
    return prev_tok.numpy(), induction.numpy(), duplicate.numpy()


def repeated_probe(n: int, length: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """The standard induction probe: ``filler | r | r`` with r of length ``length // 2`` and every token
    distinct where the vocabulary allows, so that only the second copy has earlier occurrences."""
    period = length // 2
    out = torch.empty(n, length, dtype=torch.long)
    for i in range(n):
        if vocab >= length - period:
            distinct = torch.randperm(vocab, generator=gen)[: length - period]
        else:
            distinct = torch.randint(0, vocab, (length - period,), generator=gen)
        out[i, : length - period] = distinct
        out[i, length - period:] = distinct[length - 2 * period:]
    return out


def rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout: prod over layers (last first) of 0.5 A + 0.5 I, rows renormalised; A is
    each layer's head-averaged (T, T) matrix."""
    t = layers[0].shape[-1]
    out = torch.eye(t, dtype=torch.float64)
    for a in layers:
        m = 0.5 * a.double() + 0.5 * torch.eye(t, dtype=torch.float64)
        m = m / m.sum(-1, keepdim=True)
        out = m @ out
    return out


def flow(layers: list[torch.Tensor], target: int, scale: float = 1e6) -> np.ndarray:
    """Attention flow to position ``target`` of the last layer from every input position: the
    maximum flow through the layered graph whose edge capacities are the residual-augmented,
    head-averaged attention weights (capacities scaled to integers for the max-flow solver)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    t, n_layers = layers[0].shape[-1], len(layers)
    nodes = (n_layers + 1) * t + 1  # + a super-source
    rows, cols, caps = [], [], []
    for l, a in enumerate(layers):
        m = 0.5 * a.double() + 0.5 * torch.eye(t, dtype=torch.float64)
        m = (m / m.sum(-1, keepdim=True)).numpy()
        i, j = np.nonzero(m > 0)
        rows += list(l * t + j)          # from position j in layer l's input ...
        cols += list((l + 1) * t + i)    # ... to position i in its output
        caps += list(np.round(m[i, j] * scale).astype(np.int64))
    source = nodes - 1
    out = np.zeros(t)
    for j in range(t):
        r, c, w = rows + [source], cols + [j], caps + [int(scale * 10)]
        graph = csr_matrix((np.array(w, dtype=np.int32), (r, c)), shape=(nodes, nodes))
        out[j] = maximum_flow(graph, source, n_layers * t + target).flow_value / scale
    return out


@register
class Attention(Analysis):
    param_bounds = {"induction_threshold": (0, 1), "previous_token_threshold": (0, 1)}
    name = "attention"
    order = 50
    title = "Attention focus"
    section = "looking-in"
    version = 3  # 2: the number of heads looked at is a summary; 3: sentence encoders (attention against the
    # attributions of the similarity to the next sentence, read at the first position)
    applies_text = "token models whose attention can be recorded (a `pattern` module, nn.MultiheadAttention, "\
                   "or scaled_dot_product_attention)"
    params = {"n_sequences": 128, "compare_sequences": 8, "targets_per_sequence": 6, "ig_steps": 32,
              "induction_threshold": 0.4, "previous_token_threshold": 0.4}
    quick = {"n_sequences": 32, "compare_sequences": 3, "targets_per_sequence": 4, "ig_steps": 16}

    # the maps of the held-out and the probe sequences, and three token attributions per compared target
    sample_order = (("n_sequences", 8), ("compare_sequences", 1), ("ig_steps", 8), ("targets_per_sequence", 2))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        compare = 3 * params["compare_sequences"] * params["targets_per_sequence"] * (params["ig_steps"] + 3)
        return (2 * params["n_sequences"] + compare) * example_size(subject)

    def applies_to(self, subject) -> bool | str:
        if subject.task not in ("sequence-model", "char-lm", "text-classifier", "text-encoder") \
                or subject.data.x_test.ndim != 2:
            return "needs a token model (inputs shaped batch x sequence)"
        names, _ = attention_maps(subject.model, subject.data.x_test[:1])
        if not names:
            return "no attention matrices to record (no pattern module, MultiheadAttention or sdpa call)"
        return True

    def checks(self, r: Result) -> tuple[Check, ...]:
        raw, roll = value_of(r, "rho.raw.grad_x_input"), value_of(r, "rho.rollout.grad_x_input")
        if raw is None:
            return ()
        return (Check("attention as explanation", "rank agreement with gradient x input",
                      f"raw rho {raw:.2f}" + (f", rollout {roll:.2f}" if roll is not None else ""),
                      raw > 0.5, "trust" if raw > 0.5 else "weak agreement"),)

    EXPLAINERS = ("raw attention (last layer)", "rollout", "flow")
    ATTRIBUTORS = ("grad_x_input", "integrated_gradients", "occlusion")
    ATTR_LABELS = {"grad_x_input": "gradient × input", "integrated_gradients": "Integrated Gradients",
                   "occlusion": "occlusion"}

    def run(self, ctx: Context) -> Result:
        m = self._heads(ctx)
        self._against_attribution(m, ctx)
        arrays, figures = self._figures(m)
        return Result(analysis=self.name, subject=m.s.name, arrays=arrays, summaries=self._summaries(m),
                      figures=figures, tables=self._tables(m), data=self._data(m))

    @staticmethod
    def _heads(ctx: Context) -> SimpleNamespace:
        """Every head's attention on held-out sequences, and its previous-token, duplicate-token and induction
        scores on repeated random segments; the heads' entropy; rollout and flow on the first sequence."""
        s, p = ctx.subject, ctx.params
        model = s.model
        g = ctx.generator()
        pick = torch.randperm(len(s.data.x_test), generator=g)
        tokens = s.data.x_test[pick[: p["n_sequences"]]]
        rows = budget.pass_rows(s, len(tokens))  # a large language model's logits: a few sequences at a time
        names, maps = attention_maps(model, tokens, rows)
        n_layers, heads, t = len(maps), maps[0].shape[1], maps[0].shape[-1]
        embedding = A.input_embedding(model, tokens[:1])
        probe = repeated_probe(len(tokens), t, embedding.num_embeddings, g)
        _, probe_maps = attention_maps(model, probe, rows)
        prev_scores, ind_scores, dup_scores, entropies = [], [], [], []
        # the entropy of a uniform row over the positions each row can see (causal or not, padding excluded)
        causal_uniform = float(torch.log2((maps[0] > 0).sum(-1).clamp_min(1).double()).mean())
        for a, pa in zip(maps, probe_maps):
            pv, ind, dup = head_scores(pa, probe)
            prev_scores.append(pv)
            ind_scores.append(ind)
            dup_scores.append(dup)
            entropies.append(row_entropy(a).mean((0, 2)).numpy())
        prev_scores, ind_scores, dup_scores, entropies = map(
            np.array, (prev_scores, ind_scores, dup_scores, entropies))  # (L, H)
        labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(heads)]
        averaged = [a[0].mean(0) for a in maps]
        roll = rollout(averaged).numpy()
        return SimpleNamespace(
            s=s, p=p, model=model, tokens=tokens, names=names, maps=maps, heads=heads, t=t, embedding=embedding,
            probe=probe, prev_scores=prev_scores, ind_scores=ind_scores, dup_scores=dup_scores, entropies=entropies,
            causal_uniform=causal_uniform, labels=labels,
            induction_heads=[labels[i] for i in np.flatnonzero(ind_scores.ravel() >= p["induction_threshold"])],
            prev_heads=[labels[i] for i in np.flatnonzero(prev_scores.ravel() >= p["previous_token_threshold"])],
            dup_heads=[labels[i] for i in np.flatnonzero(dup_scores.ravel() >= p["previous_token_threshold"])],
            best=int(np.nanargmax(ind_scores.ravel())) if np.isfinite(ind_scores).any() else 0,
            roll=roll, last=t - 1, flow_last=flow(averaged, t - 1))

    def _against_attribution(self, m: SimpleNamespace, ctx: Context) -> None:
        """Rank agreement of raw attention, rollout and flow with three token attributions, on a few sequences
        and target positions (a classifier: its class, read at position 0)."""
        p, s, t, maps = m.p, m.s, m.t, m.maps
        m.cmp = cmp = m.tokens[: p["compare_sequences"]]
        m.classifier = classifier = s.task in ("text-classifier", "text-encoder")
        pad = s.card.get("pad_token_id") if isinstance(s.card, dict) else None
        model, target = m.model, None
        if s.task == "text-encoder":  # one score per sentence: its similarity to the next sentence's embedding
            with torch.no_grad():
                model = A.Similarity(m.model, m.model(cmp).roll(-1, 0))
            target = torch.zeros(len(cmp), dtype=torch.long)
        m.positions = [0] if classifier else sorted(
            {int(v) for v in np.linspace(t // 2, t - 1, p["targets_per_sequence"]).round()})
        rows = budget.pass_rows(s, None, grad=True)  # rows per backward pass: a large model's are bounded
        rho = {(e, a): [] for e in self.EXPLAINERS for a in self.ATTRIBUTORS}
        for pos in m.positions:
            attrib = {}
            for a in self.ATTRIBUTORS:
                kw = {"n_steps": p["ig_steps"]} if a == "integrated_gradients" else {}
                attrib[a] = A.token_attributions(model, cmp, None if classifier else pos, target, method=a,
                                                 embedding=m.embedding, rows=rows, **kw).abs()
            for b in range(len(cmp)):
                # the compared sequences are the first rows; padding is left out of the ranking
                span = t if classifier else pos + 1
                keep = (cmp[b, :span] != pad).numpy() if pad is not None else np.ones(span, dtype=bool)
                seq_maps = [a[b].mean(0) for a in maps]
                views = {"raw attention (last layer)": seq_maps[-1][pos, :span].numpy()[keep],
                         "rollout": rollout(seq_maps).numpy()[pos, :span][keep],
                         "flow": flow(seq_maps, pos)[:span][keep]}
                attrib_b = {a: attrib[a][b, :span].numpy()[keep] for a in self.ATTRIBUTORS}
                for e in self.EXPLAINERS:
                    for a in self.ATTRIBUTORS:
                        rho[(e, a)].append(float(spearman_rows(views[e][None], attrib_b[a][None])[0]))
        m.rho_mean = {k: float(np.mean(v)) for k, v in rho.items()}

    def _figures(self, m: SimpleNamespace) -> tuple[dict[str, np.ndarray], tuple]:
        ind_scores, last = m.ind_scores, m.last
        arrays: dict[str, np.ndarray] = {
            "prev_scores": m.prev_scores.ravel(), "induction_scores": ind_scores.ravel(),
            "duplicate_scores": m.dup_scores.ravel(),
            "entropy": m.entropies.ravel(), "rollout": m.roll, "flow_last": m.flow_last[None, :],
            "rollout_last": m.roll[last][None, :],
        }
        panel_keys, panel_titles = [], []
        for l, a in enumerate(m.maps):
            for h in range(m.heads):
                key = f"map:{l}:{h}"
                arrays[key] = a[0, h].numpy()
                panel_keys.append(key)
                panel_titles.append(f"L{l}H{h} · induction {ind_scores[l, h]:.2f}")
            arrays[f"mean:{l}"] = a[0].mean(0).numpy()
            panel_keys.append(f"mean:{l}")
            panel_titles.append(f"L{l}, mean of its heads")
        for e in self.EXPLAINERS:
            arrays[f"rho:{e}"] = np.array([m.rho_mean[(e, a)] for a in self.ATTRIBUTORS])
        figures = (
            Heatmaps(id="heads", title="Every head's attention on one sequence, and each layer's average",
                     caption=f"Attention weights of each layer and head ({', '.join(f'L{i} = {n}' for i, n in enumerate(m.names))}) "
                             f"on the first of {len(m.tokens)} held-out "
                             f"sequences (rows: the position attending; columns: the position attended to); "
                             f"'ind' is the head's induction score on {len(m.probe)} repeated-segment probes.",
                     alt=f"A grid of {len(panel_keys)} attention matrices, one per layer and head.",
                     arrays=tuple(panel_keys), panel_titles=tuple(panel_titles), xlabel="attended position",
                     ylabel="query position", colorbar="attention weight", signed=False),
            Bars(id="scores", title="What each head does",
                 caption=f"Per head: previous-token score (attention from t to t−1), duplicate-token score (to the "
                         f"current token's earlier occurrence) and induction score (attention "
                         f"from the second copy of a repeated random segment to the token after the current "
                         f"token's first occurrence), over {len(m.probe)} probe sequences of {m.t} tokens.",
                 alt="Grouped bars of previous-token and induction scores per head.",
                 categories=tuple(m.labels), values=("prev_scores", "duplicate_scores", "induction_scores"),
                 series=("previous-token score", "duplicate-token score", "induction score"),
                 ylabel="mean attention weight"),
            Heatmaps(id="rollout", title="Attention rollout and flow",
                     caption="Left: attention rollout over all layers for the first sequence (row t: how much each "
                             "input position reaches position t). Right: rollout and attention flow into the last "
                             "position.",
                     alt="Heatmap of the rollout matrix, and two rows comparing rollout and flow for the last position.",
                     arrays=("rollout", "rollout_last", "flow_last"),
                     panel_titles=("rollout (all positions)", f"rollout into position {last}",
                                   f"flow into position {last}"),
                     xlabel="input position", ylabel="output position", colorbar="share", signed=False),
        )
        return arrays, figures

    def _tables(self, m: SimpleNamespace) -> tuple[Table, ...]:
        table_rows = tuple((e,) + tuple(f"{m.rho_mean[(e, a)]:+.2f}" for a in self.ATTRIBUTORS)
                           for e in self.EXPLAINERS)
        return (
            Table(id="attention_vs_attribution", title="Does attention agree with attribution?",
                  columns=("attention view",) + tuple(self.ATTR_LABELS[a] for a in self.ATTRIBUTORS), rows=table_rows,
                  caption=f"Mean Spearman rank correlation of per-token importance, over {len(m.cmp)} sequences; "
                          + ("the predicted class, with attention read from position 0 (the classification "
                             "token)." if m.classifier else
                             f"{len(m.positions)} target positions (the model's predicted next token).")),
            Table(id="heads_table", title="Heads",
                  columns=("head", "previous-token", "duplicate-token", "induction", "entropy (bits)"),
                  rows=tuple((m.labels[i], f"{m.prev_scores.ravel()[i]:.2f}", f"{m.dup_scores.ravel()[i]:.2f}",
                              f"{m.ind_scores.ravel()[i]:.2f}", f"{m.entropies.ravel()[i]:.2f}")
                             for i in range(len(m.labels))),
                  caption=f"Entropy of a uniform row over the positions it can see, averaged: "
                          f"{m.causal_uniform:.2f} bits."),
        )

    def _summaries(self, m: SimpleNamespace) -> dict[str, Scalar]:
        p = m.p
        summaries = {
            "best_induction_score": Scalar(float(m.ind_scores.ravel()[m.best]), "attention weight",
                                           f"highest induction score of any head ({m.labels[m.best]})"),
            "heads_total": Scalar(float(m.ind_scores.size), "heads", "attention heads looked at (layers × heads)"),
            "induction_heads": Scalar(float(len(m.induction_heads)), "heads",
                                      f"heads with induction score ≥ {p['induction_threshold']}"),
            "previous_token_heads": Scalar(float(len(m.prev_heads)), "heads",
                                           f"heads with previous-token score ≥ {p['previous_token_threshold']}"),
            "duplicate_token_heads": Scalar(float(len(m.dup_heads)), "heads",
                                            f"heads with duplicate-token score ≥ {p['previous_token_threshold']}"),
            "mean_head_entropy": Scalar(float(m.entropies.mean()), "bits",
                                        f"mean entropy of attention rows (uniform over visible positions: "
                                        f"{m.causal_uniform:.2f})"),
        }
        for e in self.EXPLAINERS:
            for a in self.ATTRIBUTORS:
                summaries[f"rho.{e.split(' ')[0]}.{a}"] = Scalar(m.rho_mean[(e, a)], "Spearman ρ",
                                                                 f"{e} vs {self.ATTR_LABELS[a]}")
        return summaries

    def _data(self, m: SimpleNamespace) -> dict:
        return {"layers": m.names, "heads": m.heads, "length": m.t, "n_sequences": len(m.tokens),
                "induction_heads": m.induction_heads, "previous_token_heads": m.prev_heads,
                "duplicate_token_heads": m.dup_heads, "best_head": m.labels[m.best],
                "best_induction": float(m.ind_scores.ravel()[m.best]), "threshold": m.p["induction_threshold"],
                "rho": {f"{e}|{a}": m.rho_mean[(e, a)] for e in self.EXPLAINERS for a in self.ATTRIBUTORS},
                "positions": m.positions, "compare_sequences": len(m.cmp), "uniform_entropy": m.causal_uniform}

