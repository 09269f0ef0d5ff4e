"""Meta-networks: models that read other models (their weights, or their answers to queries).

Features and learners, all trained on a model zoo (``talkgen.meta.zoo``):

- ``weight_statistics``: per parameter tensor, mean, standard deviation and the 0/25/50/75/100%
  quantiles (Unterthiner et al. 2020), fed to scikit-learn's histogram gradient-boosted trees.
- ``recipe_features``: the training hyperparameters themselves, the baseline that asks "did the
  weights tell more than the recipe?".
- ``DeepSetsMetaNet``: a permutation-invariant network on the raw weights. Each hidden neuron
  (an output channel of a conv, an output unit of a linear layer) is an element of a set
  described by its incoming weights (grouped by the previous layer's neuron and pooled, so the
  previous layer's order does not matter either), its bias, and its pooled outgoing weights; a
  shared MLP embeds each element, a mean pools each layer, and an MLP reads the layers. Permuting
  the hidden neurons of a member (and its next layer's inputs to match: the same function)
  leaves its output unchanged; a test checks it to 1e-5.
- ``MNTD``: Xu et al. (2021)'s meta neural trojan detector. A set of query inputs and a small
  MLP on the member's softmax answers to them, trained jointly (gradients flow into the queries
  through every training member) to tell backdoored members from clean ones.

Everything is seeded; a split never sees its held-out members while it learns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from talkgen.seeding import seeded

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEEPSETS_WIDTH = 16
STAT_NAMES = ("mean", "std", "q0", "q25", "q50", "q75", "q100")


# --------------------------------------------------------------------------- features

def weight_statistics(params: dict[str, torch.Tensor]) -> tuple[np.ndarray, list[str]]:
    """(n, 7 * tensors) statistics of stacked parameters (n, ...), and the feature names."""
    cols, names = [], []
    q = torch.tensor(QUANTILES)
    for k, v in params.items():
        flat = v.detach().reshape(len(v), -1).double()
        cols += [flat.mean(1), flat.std(1, correction=0) if flat.shape[1] > 1 else torch.zeros(len(v), dtype=flat.dtype)]
        cols += list(torch.quantile(flat, q.double(), dim=1))
        names += [f"{k}:{s}" for s in STAT_NAMES]
    return torch.stack(cols, 1).float().numpy(), names


RECIPE_NAMES = ("log10 lr", "log10 weight decay", "log2 init scale", "log10 steps", "log10 train fraction",
                "label noise", "adam", "backdoored", "poison rate")


def recipe_features(records: list[dict[str, Any]]) -> np.ndarray:
    rows = []
    for r in records:
        rows.append([math.log10(r["lr"]), math.log10(r["weight_decay"] + 1e-6), math.log2(r["init_scale"]),
                     math.log10(r["steps"]), math.log10(r["train_fraction"]), r["label_noise"],
                     float(r["optimizer"] == "adam"), float(r["trojan"]), r.get("poison_rate", 0.0) if r["trojan"] else 0.0])
    return np.asarray(rows, dtype=np.float64)


# --------------------------------------------------------------------------- splits and scores

def split_indices(n: int, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (train, test) split of range(n)."""
    perm = np.random.default_rng([seed, 4242]).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return float("nan") if ss == 0 else 1.0 - float(((y - pred) ** 2).sum()) / ss


def kendall_tau(y: np.ndarray, pred: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if np.ptp(pred) == 0 or np.ptp(y) == 0:
        return 0.0  # a constant prediction ranks nothing
    return float(kendalltau(y, pred).statistic)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (midway between neighbouring scores) that maximises TPR - FPR."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():  # one class only: nothing to balance; the middle score
        return float(np.median(scores))
    s = np.unique(scores)
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    best, best_j = cands[0], -1.0
    for c in cands:
        pred = scores > c
        j = pred[labels].mean() - pred[~labels].mean()
        if j > best_j:
            best, best_j = c, j
    return float(best)


class LogitTarget:
    """A regressor fitted to logit(y) for y in (0, 1), predicting back through the sigmoid: an
    accuracy stays in [0, 1], and differences near 0 or 1 count as much as in the middle.
    (Chosen by 5-fold cross-validation on training members only: Kendall tau 0.678 vs 0.660.)"""

    EPS = 1e-3

    def __init__(self, model) -> None:
        self.model = model

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogitTarget":
        p = np.clip(y, self.EPS, 1 - self.EPS)
        self.model.fit(X, np.log(p / (1 - p)))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.model.predict(X)))


def accuracy_regressor(seed: int) -> LogitTarget:
    return LogitTarget(gbm_regressor(seed))


def gbm_regressor(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, max_leaf_nodes=15,
                                         min_samples_leaf=8, random_state=seed)


def gbm_classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                          min_samples_leaf=8, random_state=seed)


# --------------------------------------------------------------------------- DeepSets on raw weights

@dataclass(frozen=True)
class LayerPlan:
    """How one parametrised layer's weight is read: (out, in_groups, per_group) after reshaping."""

    weight: str
    bias: str | None
    in_groups: int      # neurons of the previous layer feeding it (1 for the input layer: fixed order)
    per_group: int      # weights per (output neuron, input neuron) pair: kernel taps, flattened positions
    hidden: bool        # its outputs are hidden neurons (permutable); False for the output layer


def layer_plans(shapes: dict[str, tuple[int, ...]]) -> list[LayerPlan]:
    """Conv/linear layers in order, each reading the previous one's neurons. Works for chains of
    Conv2d and Linear layers where a linear layer after a conv reads flattened (C, H, W) maps."""
    weights = [k for k, s in shapes.items() if k.endswith("weight") and len(s) >= 2]
    plans = []
    prev_out = None
    for i, w in enumerate(weights):
        shape = shapes[w]
        out, fan_in = shape[0], math.prod(shape[1:])
        if prev_out is None:
            groups = 1
        else:
            if fan_in % prev_out:
                raise ValueError(f"{w}: {fan_in} inputs do not divide into {prev_out} neurons of the layer before")
            groups = prev_out
        b = w[: -len("weight")] + "bias"
        plans.append(LayerPlan(w, b if b in shapes else None, groups, fan_in // groups, i < len(weights) - 1))
        prev_out = out
    return plans


class DeepSetsMetaNet(nn.Module):
    """Permutation-invariant meta-network on a zoo member's raw weights -> ``out`` numbers.

    For layer l with weight reshaped to (out, groups, per_group): each (neuron, input neuron)
    weight group goes through an edge MLP, mean-pooled over input neurons (order-free); with the
    bias and the mean-pooled outgoing weights of the next layer this describes each neuron; a
    neuron MLP embeds it and a mean over the layer's neurons pools it (for the output layer, whose
    units have fixed meanings, the embeddings are concatenated instead). A head MLP reads the
    layers' pooled vectors.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], out: int = 1, width: int = DEEPSETS_WIDTH) -> None:
        super().__init__()
        self.plans = layer_plans(shapes)
        self.out_units = shapes[self.plans[-1].weight][0]
        self.edge = nn.ModuleList(nn.Sequential(nn.Linear(p.per_group, width), nn.ReLU(), nn.Linear(width, width))
                                  for p in self.plans)
        self.node = nn.ModuleList(nn.Sequential(nn.Linear(width + 1 + (width if p.hidden else 0), width), nn.ReLU(),
                                                nn.Linear(width, width)) for p in self.plans)
        self.outgoing = nn.ModuleList(nn.Sequential(nn.Linear(self.plans[i + 1].per_group, width), nn.ReLU())
                                      for i in range(len(self.plans) - 1))
        head_in = width * (len(self.plans) - 1) + width * self.out_units
        self.head = nn.Sequential(nn.Linear(head_in, 64), nn.ReLU(), nn.Linear(64, out))
        self.scales: dict[str, float] = {}

    def fit_scales(self, params: dict[str, torch.Tensor]) -> None:
        """One scalar per tensor (its std over the zoo): inputs of comparable size, permutation-free."""
        self.scales = {k: float(v.std()) + 1e-8 for k, v in params.items()}

    def forward(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = []
        n = next(iter(params.values())).shape[0]
        for i, p in enumerate(self.plans):
            w = params[p.weight] / self.scales.get(p.weight, 1.0)
            w = w.reshape(n, w.shape[1], p.in_groups, p.per_group)                # (n, out, groups, per)
            e = self.edge[i](w).mean(2)                                           # (n, out, width)
            b = (params[p.bias] / self.scales.get(p.bias, 1.0)).unsqueeze(-1) if p.bias else torch.zeros_like(e[..., :1])
            parts = [e, b]
            if p.hidden:  # how the next layer reads each of this layer's neurons
                q = self.plans[i + 1]
                wn = params[q.weight] / self.scales.get(q.weight, 1.0)
                wn = wn.reshape(n, wn.shape[1], q.in_groups, q.per_group)         # (n, next_out, out, per)
                parts.append(self.outgoing[i](wn).mean(1))                        # (n, out, width)
            h = self.node[i](torch.cat(parts, -1))                                # (n, out, width)
            pooled.append(h.mean(1) if p.hidden else h.reshape(n, -1))
        return self.head(torch.cat(pooled, -1))


def permute_hidden(params: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The same networks with every hidden layer's neurons shuffled (outputs unchanged)."""
    shapes = {k: tuple(v.shape[1:]) for k, v in params.items()}
    out = {k: v.clone() for k, v in params.items()}
    plans = layer_plans(shapes)
    for i, p in enumerate(plans[:-1]):
        k = shapes[p.weight][0]
        perm = torch.randperm(k, generator=gen)
        out[p.weight] = out[p.weight][:, perm]
        if p.bias:
            out[p.bias] = out[p.bias][:, perm]
        q = plans[i + 1]
        w = out[q.weight]
        n, o = w.shape[:2]
        out[q.weight] = w.reshape(n, o, q.in_groups, q.per_group)[:, :, perm].reshape(w.shape)
    return out


def train_deepsets(params: dict[str, torch.Tensor], targets: np.ndarray, *, kind: str, epochs: int, seed: int,
                   width: int = DEEPSETS_WIDTH, lr: float = 2e-3, weight_decay: float = 1e-4,
                   val_fraction: float = 0.15) -> tuple[DeepSetsMetaNet, dict[str, float]]:
    """Fit on ``params`` (n, ...) -> targets ("regression": real; "binary": 0/1), full batch Adam.

    A slice of the training members (never the test split) picks the epoch to keep. Seeded by ``seed``;
    the caller's random state is left as it was.
    """
    with seeded(seed):
        return _train_deepsets(params, targets, kind=kind, epochs=epochs, seed=seed, width=width, lr=lr,
                               weight_decay=weight_decay, val_fraction=val_fraction)


def _train_deepsets(params: dict[str, torch.Tensor], targets: np.ndarray, *, kind: str, epochs: int, seed: int,
                   width: int = DEEPSETS_WIDTH, lr: float = 2e-3, weight_decay: float = 1e-4,
                   val_fraction: float = 0.15) -> tuple[DeepSetsMetaNet, dict[str, float]]:
    """Fit on ``params`` (n, ...) -> targets ("regression": real; "binary": 0/1), full batch Adam.

    A slice of the training members (never the test split) picks the epoch to keep.
    """
    n = len(targets)
    shapes = {k: tuple(v.shape[1:]) for k, v in params.items()}
    net = DeepSetsMetaNet(shapes, 1, width)
    net.fit_scales(params)
    y = torch.as_tensor(targets, dtype=torch.float32)
    mu, sd = (float(y.mean()), float(y.std()) + 1e-8) if kind == "regression" else (0.0, 1.0)
    perm = np.random.default_rng([seed, 17]).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    val, fit = perm[:n_val], perm[n_val:]
    sub = lambda idx: {k: v[idx] for k, v in params.items()}  # noqa: E731
    pf, pv = sub(fit), sub(val)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_fn = nn.functional.mse_loss if kind == "regression" else nn.functional.binary_cross_entropy_with_logits
    best, best_state, best_epoch = float("inf"), None, 0
    with torch.enable_grad():
        for epoch in range(epochs):
            net.train()
            loss = loss_fn(net(pf)[:, 0], (y[fit] - mu) / sd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch % 5 == 4 or epoch == epochs - 1:
                with torch.no_grad():
                    v = float(loss_fn(net(pv)[:, 0], (y[val] - mu) / sd))
                if v < best:
                    best, best_epoch = v, epoch + 1
                    best_state = {k: t.clone() for k, t in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    net.target_mu, net.target_sd = mu, sd  # type: ignore[attr-defined]
    return net, {"epochs_kept": best_epoch, "validation_loss": best}


def deepsets_predict(net: DeepSetsMetaNet, params: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        out = net(params)[:, 0] * net.target_sd + net.target_mu  # type: ignore[attr-defined]
    return out.numpy()


# --------------------------------------------------------------------------- MNTD: queries + meta-classifier

class MNTD(nn.Module):
    """Tuned query inputs and an MLP over a model's softmax answers: a backdoor score (logit)."""

    def __init__(self, n_queries: int, input_shape: tuple[int, ...], n_classes: int, hidden: int = 20,
                 init: torch.Tensor | None = None) -> None:
        super().__init__()
        q = init.clone() if init is not None else torch.rand(n_queries, *input_shape)
        self.queries = nn.Parameter(q)
        self.classifier = nn.Sequential(nn.Linear(n_queries * n_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def score(self, answers: torch.Tensor) -> torch.Tensor:
        """answers (n, queries, classes) logits of the members -> (n,) backdoor logits.

        A backdoor's target class is arbitrary, so the classifier reads the answers with the
        classes in order of their mean probability over the queries (largest first), not in
        label order: relabelling the classes does not change the score, and what is learned
        about one target class carries over to the others."""
        probs = answers.softmax(-1)                                   # (n, Q, C)
        order = probs.mean(1).argsort(-1, descending=True)            # (n, C)
        ranked = probs.gather(2, order[:, None, :].expand_as(probs))  # (n, Q, C), classes ranked
        return self.classifier(ranked.flatten(1))[:, 0]


def train_mntd(forward: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
               params: dict[str, torch.Tensor], labels: np.ndarray, *, input_shape: tuple[int, ...],
               n_classes: int, init_queries: torch.Tensor, epochs: int, seed: int, n_queries: int = 10,
               lr: float = 1e-2, batch: int = 64, weight_decay: float = 1e-3) -> MNTD:
    """Jointly tune the queries and the meta-classifier on members ``params`` (n, ...) with 0/1
    ``labels`` (1 = backdoored). ``forward(params, x (n, Q, ...)) -> (n, Q, classes)``. Seeded by
    ``seed``; the caller's random state is left as it was."""
    with seeded(seed):
        return _train_mntd(forward, params, labels, input_shape=input_shape, n_classes=n_classes,
                           init_queries=init_queries, epochs=epochs, seed=seed, n_queries=n_queries, lr=lr,
                           batch=batch, weight_decay=weight_decay)


def _train_mntd(forward: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
               params: dict[str, torch.Tensor], labels: np.ndarray, *, input_shape: tuple[int, ...],
               n_classes: int, init_queries: torch.Tensor, epochs: int, seed: int, n_queries: int = 10,
               lr: float = 1e-2, batch: int = 64, weight_decay: float = 1e-3) -> MNTD:
    """Jointly tune the queries and the meta-classifier on members ``params`` (n, ...) with 0/1
    ``labels`` (1 = backdoored). ``forward(params, x (n, Q, ...)) -> (n, Q, classes)``."""
    det = MNTD(n_queries, input_shape, n_classes, init=init_queries)
    opt = torch.optim.Adam([{"params": [det.queries], "weight_decay": 0.0},
                            {"params": list(det.classifier.parameters()), "weight_decay": weight_decay}], lr=lr)
    y = torch.as_tensor(labels, dtype=torch.float32)
    n = len(y)
    gen = torch.Generator().manual_seed(seed)
    frozen = {k: v.detach() for k, v in params.items()}
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch):
                idx = perm[i:i + batch]
                p = {k: v[idx] for k, v in frozen.items()}
                q = det.queries.clamp(0, 1)
                answers = forward(p, q.unsqueeze(0).expand(len(idx), *q.shape))
                loss = nn.functional.binary_cross_entropy_with_logits(det.score(answers), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    det.eval()
    return det


def mntd_scores(det: MNTD, forward, params: dict[str, torch.Tensor], batch: int = 128) -> np.ndarray:
    out = []
    n = next(iter(params.values())).shape[0]
    with torch.no_grad():
        q = det.queries.clamp(0, 1)
        for i in range(0, n, batch):
            p = {k: v[i:i + batch] for k, v in params.items()}
            m = next(iter(p.values())).shape[0]
            out.append(det.score(forward(p, q.unsqueeze(0).expand(m, *q.shape))))
    return torch.cat(out).numpy()


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    tp = np.concatenate([[0], np.cumsum(labels[order])])
    fp = np.concatenate([[0], np.cumsum(~labels[order])])
    return fp / max(1, (~labels).sum()), tp / max(1, labels.sum())
