"""Probes: small classifiers trained on a frozen network's representations to decode a concept.

``fit_probe`` trains a linear (multinomial logistic) or a one-hidden-layer MLP probe on
standardised features and returns its held-out accuracy. The linear probe is a convex problem and
is solved to convergence (full-batch L-BFGS with a strong-Wolfe line search until the largest
gradient entry is below ``tol``: the optimum of scikit-learn's LogisticRegression to five digits, with
C = 1 / (weight_decay * n)); a fixed number of Adam steps under-trains it on data without margin.
The MLP probe is non-convex and trains for ``steps`` full-batch Adam steps. ``control_labels``
builds Hewitt & Liang's (2019) control task: every input *type* (a character, a token, an
exact input) gets a random label drawn from the real task's label distribution, the same label
every time the type occurs. A probe that decodes the control task as well as the real one is
measuring its own capacity to memorise, not the representation: selectivity = task accuracy -
control accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _standardised(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits as float32 tensors, scaled by the training split's per-feature mean and standard deviation."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return (torch.as_tensor((x_train - mean) / std, dtype=torch.float32),
            torch.as_tensor((x_test - mean) / std, dtype=torch.float32))


def _class_indices(y_train: np.ndarray, y_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Both splits' labels as indices 0..k-1 of the k classes either split has, and k."""
    classes = np.unique(np.concatenate([y_train, y_test]))
    return (torch.as_tensor(np.searchsorted(classes, y_train), dtype=torch.long),
            torch.as_tensor(np.searchsorted(classes, y_test), dtype=torch.long), len(classes))


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              kind: str = "linear", hidden: int = 64, steps: int = 300, lr: float = 1e-2,
              weight_decay: float = 1e-4, seed: int = 0, tol: float = 1e-4) -> float:
    """Held-out accuracy of a probe of ``kind`` ("linear" or "mlp") trained on (x_train, y_train)."""
    if kind not in ("linear", "mlp"):
        raise ValueError(f"unknown probe kind {kind!r}; use linear or mlp")
    if kind == "mlp":
        return fit_mlp_probes(x_train, [y_train], x_test, [y_test], hidden=hidden, steps=steps, lr=lr,
                              weight_decay=weight_decay, seed=seed)[0]
    ytr, yte, k = _class_indices(y_train, y_test)
    xtr, xte = _standardised(x_train, x_test)
    if k < 2:
        return 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = linear_probe(xtr, ytr, k, weight_decay=weight_decay, tol=tol)
        with torch.no_grad():
            return float((probe(xte).argmax(1) == yte).float().mean())


def fit_mlp_probes(x_train: np.ndarray, ys_train: list[np.ndarray], x_test: np.ndarray, ys_test: list[np.ndarray],
                   *, hidden: int = 64, steps: int = 300, lr: float = 1e-2, weight_decay: float = 1e-4,
                   seed: int = 0) -> list[float]:
    """Held-out accuracy of one MLP probe per label set in ``ys_train`` (with ``ys_test``), all on the same
    features, trained together: the P probes are the blocks of one wider network (hidden P x ``hidden``, a
    block-diagonal output layer, each probe's classes beyond its own masked out) whose loss is the sum of theirs.
    Their parameters are disjoint and Adam updates each entry from its own gradient, so every probe follows the
    path it would alone, from the initialisation it would get alone (``seed``), at the cost of one pass."""
    xtr, xte = _standardised(x_train, x_test)
    d = xtr.shape[1]
    out: list[float] = [1.0] * len(ys_train)  # a label set with one class: nothing to decode
    ytr, yte, ks, which = [], [], [], []
    for p, (a, b) in enumerate(zip(ys_train, ys_test)):
        ia, ib, k = _class_indices(a, b)
        if k < 2:
            continue
        ytr.append(ia)
        yte.append(ib)
        ks.append(k)
        which.append(p)
    if not which:
        return out
    P, K = len(which), max(ks)
    w1, b1 = torch.zeros(P, hidden, d), torch.zeros(P, hidden)
    w2, b2 = torch.zeros(P, K, hidden), torch.zeros(P, K)
    with torch.random.fork_rng(devices=[]):
        for i, k in enumerate(ks):  # the initialisation each probe gets alone
            torch.manual_seed(seed)
            one = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))
            w1[i], b1[i] = one[0].weight.detach(), one[0].bias.detach()
            w2[i, :k], b2[i, :k] = one[2].weight.detach(), one[2].bias.detach()
    params = [t.requires_grad_(True) for t in (w1, b1, w2, b2)]
    absent = torch.arange(K)[None, :] >= torch.tensor(ks)[:, None]  # (P, K): classes a probe does not have
    y_train = torch.stack(ytr, 1)  # (n, P)

    def logits(x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.einsum("nd,phd->nph", x, w1) + b1)
        return (torch.einsum("nph,pkh->npk", h, w2) + b2).masked_fill(absent, float("-inf"))  # (n, P, K)

    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            z = logits(xtr)
            # the sum over probes of each one's mean cross-entropy: each probe's gradient is its own
            loss = nn.functional.cross_entropy(z.reshape(-1, K), y_train.reshape(-1), reduction="sum") / len(xtr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = logits(xte).argmax(-1)  # (n, P)
        for i, p in enumerate(which):
            out[p] = float((pred[:, i] == yte[i]).float().mean())
    return out


def linear_probe(x: torch.Tensor, y: torch.Tensor, k: int, *, weight_decay: float = 1e-4, tol: float = 1e-4,
                 max_iter: int = 300) -> nn.Linear:
    """Multinomial logistic regression minimising mean cross-entropy + weight_decay / 2 * ||W||^2 (the
    bias is not penalised), solved by L-BFGS until every gradient entry is below ``tol``."""
    probe = nn.Linear(x.shape[1], k).to(x.dtype)
    nn.init.zeros_(probe.weight)  # a convex problem: the start only changes how long it takes
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(probe(x), y) + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return probe


def control_labels(types: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A random label per distinct type, drawn from the empirical distribution of ``labels``,
    assigned to every occurrence of that type."""
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    distinct, inverse = np.unique(types, axis=0, return_inverse=True)
    drawn = rng.choice(values, size=len(distinct), p=counts / counts.sum())
    return drawn[inverse.reshape(-1)]
