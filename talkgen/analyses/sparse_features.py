"""Sparse features: a TopK sparse autoencoder trained on one layer's activations (section 3).

What it measures: activations of one layer are collected over many inputs of the training split
(for the char-LSTM, its hidden state over >= 1M characters), a TopK autoencoder
(``talkgen.meta.sae``) is trained on them, and on held-out inputs it reports explained variance,
L0, the fraction of dead features, and the loss recovered when the reconstruction is spliced
back in place of the real activations: (L_zero - L_splice) / (L_zero - L_clean), where L_zero
zero-ablates them; plus the model's own metric with the splice (bits per character for
character models).

Which layer: by default the input of the model's output layer (the last ``nn.Linear`` that runs):
the char-LSTM's hidden state, a transformer's final residual stream, a classifier's penultimate
layer. ``layer`` names another module, whose output is used instead. Per-position outputs
(B, T, D) give one vector per position, feature maps (B, C, H, W) one per pixel.
For an LSTM whose hidden state is the default layer, the splice is measured twice: into the
output layer only, and also into the recurrence (each reconstructed h_t is what step t+1 reads);
the second is the headline.

Legibility: each feature's activation density, its top-activating contexts, and how well it
tracks each known label: AUROC of the feature's activation for binary labels, |Pearson r| for
graded ones (the best of max(AUROC, 1 - AUROC) and |r| for both features and neurons, scored
the same way on the same positions). Labels: the tokenizer's labels for character models, the
"copyable" positions and position index for the induction task, the class (one against the
rest) for classifiers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Analysis, Check, Context, Finding, Result, Scalar, register, value_of
from talkgen.analyses.loss import cross_entropy
from talkgen.stats import CI_LEVEL
from talkgen.specs import Bars, ColouredText, Curves, ImageGrid, Table

BINARY_LABELS = ("in_string", "in_comment")
GRADED_LABELS = ("bracket_depth", "indent_level", "column")
MIN_WIDTH = 16  # narrower layers have nothing to disentangle: every unit is already a direction


def output_layer(model: nn.Module) -> str | None:
    """The last ``nn.Linear`` in forward order (found by running nothing: module order)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _as_vectors(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4:                                  # (B, C, H, W): one vector per pixel
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])                # (B, T, D) per position, (B, D) per example


def _from_vectors(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.ndim == 4:
        B, C, H, W = like.shape
        return v.reshape(B, H, W, C).permute(0, 3, 1, 2)
    return v.reshape(like.shape)


class Site:
    """Where the autoencoder reads (and writes back): a module's first input or its output."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        modules = dict(model.named_modules())
        if layer:
            if layer not in modules:
                raise ValueError(f"no module named {layer!r} in the model")
            self.name, self.where = layer, "output"
        else:
            name = output_layer(model)
            if name is None:
                raise ValueError("the model has no nn.Linear output layer; name a layer")
            self.name, self.where = name, "input"
        self.module = modules[self.name]
        self.label = f"the {self.where} of {self.name}"

    @contextmanager
    def hook(self, fn) -> Iterator[None]:
        """Run ``fn(activation) -> replacement or None`` on every pass through the site."""
        if self.where == "input":
            def pre(_m, args):
                out = fn(args[0])
                return None if out is None else (out, *args[1:])
            handle = self.module.register_forward_pre_hook(pre)
        else:
            def post(_m, _args, output):
                t = output[0] if isinstance(output, tuple) else output
                out = fn(t)
                if out is None:
                    return None
                return (out, *output[1:]) if isinstance(output, tuple) else out
            handle = self.module.register_forward_hook(post)
        try:
            yield
        finally:
            handle.remove()

    def collect(self, model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
        parts: list[torch.Tensor] = []

        def grab(t: torch.Tensor) -> None:
            parts.append(_as_vectors(t.detach().float()).cpu())  # the autoencoder trains on the CPU

        with torch.no_grad(), self.hook(grab):
            for i in range(0, len(x), batch):
                model(x[i:i + batch])
        return torch.cat(parts)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, replace=None) -> float:
        """Mean cross-entropy on (x, y) with the site's activation replaced by ``replace(vectors)``."""
        def swap(t: torch.Tensor) -> torch.Tensor | None:
            if replace is None:
                return None
            # the replacement (the autoencoder) computes on the CPU; its output goes back where the model computes
            return _from_vectors(replace(_as_vectors(t.float()).cpu()).to(t.device, t.dtype), t)

        total, count = 0.0, 0
        with torch.no_grad(), self.hook(swap):
            for i in range(0, len(x), batch):
                yb = y[i:i + batch]
                total += float(cross_entropy(model(x[i:i + batch]), yb)) * yb.numel()
                count += yb.numel()
        return total / count


def _lstm_feeding(model: nn.Module, site: Site) -> tuple[str, nn.LSTM] | None:
    """The single-layer, batch-first, one-way LSTM whose output is the site (default site only)."""
    if site.where != "input":
        return None
    lstms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.LSTM)]
    if len(lstms) != 1:
        return None
    name, lstm = lstms[0]
    if lstm.num_layers != 1 or lstm.bidirectional or not lstm.batch_first or lstm.proj_size:
        return None
    return name, lstm


def recurrent_splice_loss(model: nn.Module, lstm_name: str, lstm: nn.LSTM, site: Site, x: torch.Tensor,
                          y: torch.Tensor, replace, batch: int) -> float:
    """Cross-entropy when h_t is replaced by ``replace(h_t)`` for the output layer *and* for step t+1.

    The LSTM's input is recorded with a hook; the recurrence is replayed step by step with its own
    weights (``replace=None`` replays it unchanged; ``zero`` handled by the caller's function)."""
    from talkgen.analyses.hooks import capture_inputs
    from talkgen.devices import like

    w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0  # the replay computes where they live
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0) if lstm.bias else w_ih.new_zeros(4 * lstm.hidden_size)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            with capture_inputs(model, lstm_name) as seen:
                model(xb)
            e = like(seen[0][0], w_ih)                          # (B, T, E)
            B, T = e.shape[:2]
            h = e.new_zeros(B, lstm.hidden_size)
            c = e.new_zeros(B, lstm.hidden_size)
            xw = e @ w_ih.T + b                                 # (B, T, 4H)
            outs = []
            for t in range(T):
                gates = xw[:, t] + h @ w_hh.T
                ig, fg, gg, og = gates.chunk(4, dim=1)
                c = torch.sigmoid(fg) * c + torch.sigmoid(ig) * torch.tanh(gg)
                h = torch.sigmoid(og) * torch.tanh(c)
                if replace is not None:  # the autoencoder computes on the CPU
                    h = like(replace(h.cpu()), w_ih)
                outs.append(h)
            hs = torch.stack(outs, 1)                           # (B, T, H)
            logits = site.module(hs)
            total += float(cross_entropy(logits, yb)) * yb.numel()
            count += yb.numel()
    return total / count


def recovered(clean: float, zero: float, splice: float) -> float:
    return (zero - splice) / (zero - clean) if zero != clean else float("nan")


# --------------------------------------------------------------------------- labels


def _metric(subject) -> tuple[str, float]:
    """The loss the splice is reported in: bits per character for character models, nats otherwise."""
    return ("bits per character", 1 / math.log(2)) if subject.task == "char-lm" else ("cross-entropy (nats)", 1.0)


def _labels(subject, n_windows: int) -> tuple[dict[str, np.ndarray], str | None]:
    """Per-vector labels on the evaluation inputs (test split), and the text for char models."""
    if subject.task == "char-lm" and subject.text_labels is not None:
        lab = subject.text_labels()
        n = n_windows * subject.data.x_test.shape[1]
        return {k: np.asarray(lab[k][:n]) for k in BINARY_LABELS + GRADED_LABELS if k in lab}, lab["text"][:n]
    if subject.data.position_labels is not None:  # a token task that knows its structure (the induction task)
        return subject.data.position_labels(subject.data.x_test[:n_windows], subject.data.y_test[:n_windows]), None
    if subject.task.endswith("classifier") and subject.data.labelled:
        y = subject.data.y_test[:n_windows].numpy()
        return {f"class {name}": y == i for i, name in enumerate(subject.data.classes)}, None
    return {}, None


def _score_cell(b: dict, who: str) -> str:
    """A unit's score for the table: an AUROC with its interval, an |r| as it is."""
    ci = b.get(f"{who}_ci")
    return f"{b[f'{who}_score']:.3f}" + (f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci else "")


def _is_binary(v: np.ndarray) -> bool:
    return v.dtype == bool or set(np.unique(v).tolist()) <= {0, 1}


def score_labels(values: np.ndarray, indices: np.ndarray, neurons: np.ndarray, labels: dict[str, np.ndarray],
                 n_features: int) -> dict[str, dict[str, Any]]:
    """Best feature and best neuron per label, with the same metric for both."""
    from talkgen.stats import auc_interval, auroc, pearson
    from talkgen.meta.sae import sparse_auroc, sparse_pearson

    out: dict[str, dict[str, Any]] = {}
    for name, lab in labels.items():
        if _is_binary(lab):
            pos = lab.astype(bool)
            if pos.all() or not pos.any():
                continue
            f = sparse_auroc(values, indices, pos, n_features)
            u = auroc(neurons, pos)
            f_score, u_score, metric = np.maximum(f, 1 - f), np.maximum(u, 1 - u), "AUROC"
        else:
            y = lab.astype(np.float64)
            if y.std() == 0:
                continue
            f_score = np.abs(sparse_pearson(values, indices, y, n_features))
            u_score = np.abs(pearson(neurons, y))
            metric = "|r|"
        bf, bu = int(np.nanargmax(f_score)), int(np.nanargmax(u_score))
        out[name] = {"metric": metric, "feature": bf, "feature_score": float(f_score[bf]),
                     "neuron": bu, "neuron_score": float(u_score[bu]),
                     "feature_wins": bool(f_score[bf] > u_score[bu]), "n": int(len(lab))}
        if metric == "AUROC":  # each best unit's AUROC with its interval (as measured; picking the best of many
            # units is not accounted for)
            n_pos = int(lab.astype(bool).sum())
            for who in ("feature", "neuron"):
                out[name][f"{who}_ci"] = list(auc_interval(out[name][f"{who}_score"], n_pos, len(lab) - n_pos))
    return out


# --------------------------------------------------------------------------- the analysis


@register
class SparseFeatures(Analysis):
    param_bounds = {"dashboard": (0, None)}
    name = "sparse-features"
    order = 20
    title = "Sparse features: what a second network finds in the first one's activations"
    section = "method"
    version = 3  # 2: the number of labels scored is a summary; 3: each AUROC's interval and n
    cost_hint = 10
    applies_text = "any model with an nn.Linear output layer, or a layer named in talk.toml"
    params = {"n_train": 1_048_576, "n_eval": 131_072, "n_features": 2048, "k": 16, "epochs": 1, "min_steps": 2000,
              "batch_size": 1024, "layer": "", "dashboard": 4, "contexts": 3, "context_chars": 64}
    quick = {"n_train": 32_768, "n_eval": 8_192, "n_features": 512, "min_steps": 200}

    def applies_to(self, subject) -> bool | str:
        name = output_layer(subject.model)
        if name is None:
            return "needs an nn.Linear output layer (or a layer named in talk.toml)"
        if not len(subject.data.x_train):
            return "needs training inputs to collect activations from"
        width = dict(subject.model.named_modules())[name].in_features
        if width < MIN_WIDTH:
            return f"its output layer reads {width} numbers; a sparse dictionary needs at least {MIN_WIDTH}"
        return True

    # the site's activations on the training vectors, and on the held-out ones clean, spliced and ablated
    sample_order = (("n_train", 4096), ("n_eval", 1024))

    def passes(self, subject, params) -> float:
        from talkgen.analyses.budget import example_size

        per_row = example_size(subject)
        rows = min(len(subject.data.x_train), math.ceil(params["n_train"] / per_row)) + 3 * min(
            len(subject.data.x_test), math.ceil(params["n_eval"] / per_row))
        return rows * per_row

    def checks(self, r: Result) -> tuple[Check, ...]:
        d = r.data
        recovered = value_of(r, "loss_recovered")
        ok = d["explained_variance"] >= 0.85 and recovered is not None and recovered >= 0.9
        return (Check("sparse autoencoder", "reconstruction and loss recovered (held out)",
                      f"explained variance {d['explained_variance']:.3f} at L0 {d['l0']:.1f}; loss recovered "
                      f"{recovered if recovered is not None else float('nan'):.3f}; a feature beats every neuron on "
                      f"{len(d['wins'])} of {len(d['scores'])} labels", ok, "trust" if ok else "lossy"),)

    def run(self, ctx: Context) -> Result:
        m = self._train(ctx)
        self._splice(m)
        self._legibility(m)
        arrays, figures, tables = self._present(m)
        return Result(analysis=self.name, subject=m.s.name, arrays=arrays, summaries=self._summaries(m),
                      figures=tuple(figures), tables=tuple(tables), findings=self._findings(m), data=self._data(m))

    def _train(self, ctx: Context) -> SimpleNamespace:
        """Collect the site's activations on training and held-out inputs, and train the autoencoder."""
        from talkgen.meta.sae import SAEConfig, evaluate_sae, train_sae

        s, p = ctx.subject, ctx.params
        model = s.model
        site = Site(model, p["layer"])
        per_row = self._vectors_per_row(model, site, s.data.x_train[:1])
        n_tr_rows = max(1, min(len(s.data.x_train), math.ceil(p["n_train"] / per_row)))
        n_ev_rows = max(1, min(len(s.data.x_test), math.ceil(p["n_eval"] / per_row)))
        # rows per forward pass: about 65,536 vectors at the site, and no more than about 2^25 output values (a
        # language model's logits over its vocabulary at every position: GPT-2's would be 1.8 GB for 150 sequences)
        from talkgen.analyses.budget import example_size, pass_rows

        outputs_per_row = example_size(s) * max(1, len(s.data.classes))
        batch = pass_rows(s, max(1, min(65_536 // per_row, 2**25 // outputs_per_row)))  # a large model: fewer
        x_tr = s.data.x_train[:n_tr_rows]
        x_ev, y_ev = s.data.x_test[:n_ev_rows], s.data.y_test[:n_ev_rows]
        acts = site.collect(model, x_tr, batch)
        held = site.collect(model, x_ev, batch)
        if not torch.isfinite(acts).all():
            raise ValueError(f"activations at {site.label} contain NaN or infinite values")
        d = acts.shape[1]
        # at most 8 features per dimension, and no more than a quarter of the training vectors
        n_features = int(min(p["n_features"], 8 * d, max(d, len(acts) // 4)))
        k = int(min(p["k"], max(1, d // 4)))
        bs = int(min(p["batch_size"], len(acts)))
        epochs = max(int(p["epochs"]), math.ceil(p["min_steps"] * bs / len(acts)))
        cfg = SAEConfig(n_features=n_features, k=k, epochs=epochs, batch_size=bs, seed=ctx.seed)
        sae, log = train_sae(acts, cfg)
        return SimpleNamespace(s=s, p=p, model=model, site=site, per_row=per_row, n_ev_rows=n_ev_rows, batch=batch,
                               x_ev=x_ev, y_ev=y_ev, acts=acts, held=held, d=d, n_features=n_features, k=k, bs=bs,
                               epochs=epochs, cfg=cfg, sae=sae, log=log, met=evaluate_sae(sae, held))

    @staticmethod
    def _splice(m: SimpleNamespace) -> None:
        """The model's loss with the reconstruction spliced in, against clean and zero-ablated (and, for an
        LSTM's state, spliced into the recurrence too)."""
        model, site, sae, batch, x_ev, y_ev = m.model, m.site, m.sae, m.batch, m.x_ev, m.y_ev
        clean = site.loss(model, x_ev, y_ev, batch)
        spliced = site.loss(model, x_ev, y_ev, batch, replace=lambda v: sae(v))
        zero = site.loss(model, x_ev, y_ev, batch, replace=torch.zeros_like)
        m.splice = {"output": {"clean": clean, "splice": spliced, "zero": zero,
                               "recovered": recovered(clean, zero, spliced)}}
        lstm = _lstm_feeding(model, site)
        if lstm is not None:
            rb = max(1, batch // 4)
            args = (model, lstm[0], lstm[1], site, x_ev, y_ev)
            r_clean = recurrent_splice_loss(*args, replace=None, batch=rb)
            r_splice = recurrent_splice_loss(*args, replace=lambda h: sae(h), batch=rb)
            r_zero = recurrent_splice_loss(*args, replace=torch.zeros_like, batch=rb)
            m.splice["recurrent"] = {"clean": r_clean, "splice": r_splice, "zero": r_zero,
                                     "recovered": recovered(r_clean, r_zero, r_splice)}
        m.headline = "recurrent" if "recurrent" in m.splice else "output"
        m.rec = m.splice[m.headline]["recovered"]

    @staticmethod
    def _legibility(m: SimpleNamespace) -> None:
        """The sparse codes of the held-out vectors, and every known label scored against features and neurons."""
        from talkgen.meta.sae import sparse_codes

        m.values, m.indices = (t.numpy() for t in sparse_codes(m.sae, m.held))
        labels, m.text = _labels(m.s, m.n_ev_rows)
        labels = {k2: v for k2, v in labels.items() if len(v) == len(m.held)}
        m.scores = score_labels(m.values, m.indices, m.held.numpy(), labels, m.n_features)
        m.wins = [name for name, b in m.scores.items() if b["feature_wins"]]

    def _present(self, m: SimpleNamespace) -> tuple[dict[str, np.ndarray], list, list]:
        met, held, scores = m.met, m.held, m.scores
        arrays: dict[str, np.ndarray] = {f"sae.{k2}": v.detach().numpy() for k2, v in m.sae.state_dict().items()}
        arrays["density"] = met.density
        arrays["losses"] = np.asarray(m.log.losses)
        arrays["loss_steps"] = np.minimum(np.arange(1, len(m.log.losses) + 1) * 50, m.log.steps)
        figures: list = []
        tables: list = []
        live = met.density[met.density > 0]
        edges = np.linspace(-7, 0, 29)
        hist, _ = np.histogram(np.log10(live), bins=edges) if len(live) else (np.zeros(28), None)
        arrays["density_x"] = (edges[:-1] + edges[1:]) / 2
        arrays["density_hist"] = hist.astype(float)
        figures.append(Curves(
            id="density", title="How often each feature fires",
            caption=f"Histogram of the {m.n_features} features' activation densities on {len(held):,} held-out vectors "
                    f"(log10 of the fraction of vectors on which a feature is active); "
                    f"{int((met.density == 0).sum())} features never fire (dead).",
            alt="Histogram of feature activation densities on a log scale.",
            x=("density_x",), y=("density_hist",), labels=("features",),
            xlabel="log10 activation density", ylabel="features", markers=True))
        if scores:
            names = list(scores)
            # one scale for both kinds of label: how far above no relation, as a share of the way to perfect
            # (an AUROC a maps to 2a - 1, an |r| stays); the table keeps each score as measured
            def strength(b: dict, who: str) -> float:
                v = b[f"{who}_score"]
                return 2 * v - 1 if b["metric"] == "AUROC" else v

            arrays["best_feature"] = np.array([strength(scores[n], "feature") for n in names])
            arrays["best_neuron"] = np.array([strength(scores[n], "neuron") for n in names])
            figures.append(Bars(
                id="features-vs-neurons", title="Best feature against best neuron, per label",
                caption="For every label, the best score of any autoencoder feature and of any raw neuron of "
                        f"{m.site.label}, scored the same way on the same {len(held):,} held-out positions, on one "
                        "scale from no relation (0) to a perfect one (1): 2 x AUROC - 1 for binary labels, reading the AUROC "
                        "as max(AUROC, 1 - AUROC), and |Pearson r| for graded ones.",
                alt="Grouped bars per label: best feature score and best neuron score.",
                categories=tuple(n.replace("_", " ") for n in names), values=("best_feature", "best_neuron"),
                series=("best feature", "best neuron"), ylabel="strength of the match (0 none, 1 perfect)"))
            tables.append(Table(
                id="labels", title="Features against neurons: which tracks each label best",
                columns=("label", "metric", "best feature", "score", "best neuron", "score", "winner"),
                rows=tuple((n.replace("_", " "), b["metric"], f"f{b['feature']}", _score_cell(b, "feature"),
                            f"u{b['neuron']}", _score_cell(b, "neuron"),
                            "feature" if b["feature_wins"] else "neuron") for n, b in scores.items()),
                caption=f"{len(m.wins)} of {len(scores)} labels are tracked better by one feature than by any neuron. "
                        f"Scores on n = {len(held):,} held-out positions; each AUROC with its {CI_LEVEL:.0%} interval "
                        "(for the unit as measured: picking the best of many units is not accounted for)."))
        m.dashboard = self._dashboard(m, arrays, figures)
        return arrays, figures, tables

    def _dashboard(self, m: SimpleNamespace, arrays: dict[str, np.ndarray], figures: list) -> list[dict]:
        """The best feature per label (most distinct first), then the most frequent: top contexts of each."""
        s, p, met, scores, values, indices = m.s, m.p, m.met, m.scores, m.values, m.indices
        chosen: list[int] = []
        for b in sorted(scores.values(), key=lambda b: -(b["feature_score"] - b["neuron_score"])):
            if b["feature"] not in chosen:
                chosen.append(b["feature"])
        for f in np.argsort(-met.density):
            if len(chosen) >= p["dashboard"]:
                break
            if int(f) not in chosen:
                chosen.append(int(f))
        dashboard = []
        for f in chosen[: p["dashboard"]]:
            best_label = max(((n, b) for n, b in scores.items() if b["feature"] == f),
                             key=lambda nb: nb[1]["feature_score"], default=None)
            entry = {"feature": f, "density": float(met.density[f]),
                     "label": best_label[0] if best_label else None,
                     "label_score": best_label[1]["feature_score"] if best_label else None,
                     "label_metric": best_label[1]["metric"] if best_label else None,
                     "label_ci": best_label[1].get("feature_ci") if best_label else None,
                     "label_n": best_label[1]["n"] if best_label else None,
                     "max_activation": float(values[indices == f].max()) if (indices == f).any() else 0.0}
            dashboard.append(entry)
            interval = (f" ({CI_LEVEL:.0%} interval {entry['label_ci'][0]:.2f} to {entry['label_ci'][1]:.2f}; "
                        f"n = {entry['label_n']:,})" if entry["label_ci"] else "")
            desc = (f"{entry['label_metric']} {entry['label_score']:.2f}{interval} for "
                    f"{entry['label'].replace('_', ' ')}" if entry["label"] else "no label matched best by it")
            if m.text is not None:
                fig, arr = self._text_dashboard(f, values, indices, m.text, p, desc, entry)
                if fig is not None:
                    arrays.update(arr)
                    figures.append(fig)
            elif s.task == "image-classifier" and m.per_row == 1:
                from talkgen.meta.sae import top_contexts

                top = top_contexts(values, indices, f, 8, 1)
                if top:
                    key = f"images:f{f}"
                    x_ev = m.x_ev
                    arrays[key] = x_ev[[r for r, _ in top]].numpy()[:, 0] if x_ev.ndim == 4 else x_ev[[r for r, _ in top]].numpy()
                    figures.append(ImageGrid(
                        id=f"feature-{f}", title=f"Feature {f}: the inputs that excite it most",
                        caption=f"The 8 held-out inputs on which feature {f} is most active; it fires on "
                                f"{entry['density']:.2%} of inputs; {desc}.",
                        alt=f"Grid of the inputs that most activate feature {f}.",
                        array=key, colorbar="input value", signed=False))
        return dashboard

    @staticmethod
    def _summaries(m: SimpleNamespace) -> dict[str, Scalar]:
        met, splice, headline = m.met, m.splice, m.headline
        metric_name, conv = _metric(m.s)
        summaries = {
            "explained_variance": Scalar(met.explained_variance, "", f"variance of {m.site.label} the autoencoder "
                                                                     "reconstructs on held-out inputs"),
            "l0": Scalar(met.l0, "features", "mean number of active features per vector"),
            "dead_fraction": Scalar(met.dead_fraction, "", "fraction of features that never fire on held-out inputs"),
            "loss_recovered": Scalar(m.rec, "", "share of the zero-ablation loss gap closed by the reconstruction"
                                                + (" (spliced into the recurrence too)" if headline == "recurrent" else "")),
            "labels_feature_wins": Scalar(float(len(m.wins)), "count",
                                          "labels tracked better by one feature than by any single neuron"),
            "labels_scored": Scalar(float(len(m.scores)), "count", "known labels scored against features and neurons"),
            "metric.clean": Scalar(splice[headline]["clean"] * conv, metric_name, "the model's own loss"),
            "metric.splice": Scalar(splice[headline]["splice"] * conv, metric_name,
                                    "the model's loss with the reconstruction spliced in"),
            "metric.zero": Scalar(splice[headline]["zero"] * conv, metric_name,
                                  "the model's loss with the activations zeroed"),
            "train.seconds": Scalar(m.log.seconds, "s", f"training on {len(m.acts):,} vectors"),
        }
        if headline == "recurrent":
            summaries["loss_recovered.output_only"] = Scalar(splice["output"]["recovered"], "",
                                                             "loss recovered when only the output layer reads it")
        return summaries

    @staticmethod
    def _findings(m: SimpleNamespace) -> tuple[Finding, ...]:
        met = m.met
        if met.explained_variance < 0.7 or m.rec < 0.7:
            return (Finding(severity="info", title="sparse autoencoder reconstructs poorly",
                            detail=f"explained variance {met.explained_variance:.3f}, loss recovered {m.rec:.3f} at "
                                   f"L0 {met.l0:.1f}: its features describe only part of {m.site.label}",
                            value=float(min(met.explained_variance, m.rec)), threshold=0.7),)
        return ()

    @staticmethod
    def _data(m: SimpleNamespace) -> dict[str, Any]:
        from talkgen.meta.sae import sae_state

        met, log = m.met, m.log
        metric_name, conv = _metric(m.s)
        return {
            "site": m.site.label, "d": m.d, "n_features": m.n_features, "k": m.k, "epochs": m.epochs,
            "batch_size": m.bs, "n_train": len(m.acts), "n_eval": len(m.held), "steps": log.steps,
            "seconds": log.seconds, "vectors_per_second": log.vectors_per_second, "lr": m.cfg.learning_rate(),
            "explained_variance": met.explained_variance, "l0": met.l0, "dead_fraction": met.dead_fraction,
            "dead_during_training": log.dead_during_training,
            "splice": m.splice, "headline": m.headline, "metric_name": metric_name, "metric_scale": conv,
            "scores": m.scores, "wins": m.wins, "dashboard": m.dashboard,
            # the file load_sae reads: the "sae." arrays, with sae_state's metadata
            "export": {"file": "sparse-features.safetensors", "prefix": "sae.",
                       "metadata": sae_state(m.sae, m.cfg, {"site": m.site.label, "subject": m.s.name})[1]},
        }

    @staticmethod
    def _vectors_per_row(model: nn.Module, site: Site, x1: torch.Tensor) -> int:
        return len(site.collect(model, x1, 1))

    @staticmethod
    def _text_dashboard(f: int, values, indices, text: str, p, desc: str, entry) -> tuple[Any, dict]:
        from talkgen.meta.sae import top_contexts

        width = int(p["context_chars"])
        top = top_contexts(values, indices, f, int(p["contexts"]), width)
        if not top:
            return None, {}
        act = np.zeros(len(text))
        rows = np.repeat(np.arange(len(values)), indices.shape[1])
        sel = indices.reshape(-1) == f
        act[rows[sel]] = values.reshape(-1)[sel]
        pieces, vals = [], []
        for r, _ in sorted(top):
            a, b = max(0, r - width + 8), min(len(text), r + 8)
            pieces.append(text[a:b])
            vals.append(act[a:b] / max(entry["max_activation"], 1e-9))
            pieces.append("\n⋯\n")
            vals.append(np.zeros(3))
        key = f"text:f{f}"
        return ColouredText(
            id=f"feature-{f}", title=f"Feature {f}: where it fires",
            caption=f"Held-out Python source around the {len(top)} places where feature {f} is most active "
                    f"(background: its activation, white = silent); it fires on {entry['density']:.2%} of "
                    f"characters; {desc}.",
            alt=f"Source code excerpts coloured by the activation of feature {f}.",
            text="".join(pieces[:-1]), values=key, signed=False), {key: np.concatenate(vals[:-1])}
