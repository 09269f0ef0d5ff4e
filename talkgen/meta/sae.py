"""Sparse autoencoders: a second network that rewrites a layer's activations as a sparse sum of features.

The model is a TopK autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):

    z = TopK(W_enc (x - b_dec) + b_enc)        keep the k largest pre-activations, ReLU, zero the rest
    x_hat = W_dec^T z + b_dec                   a sum of k unit-norm feature directions

The sparsity is fixed (L0 <= k), so no L1 coefficient needs tuning and no shrinkage biases the
codes. Following the paper: the encoder starts as the transpose of the decoder, ``b_dec`` starts at
the data's mean (the paper uses the geometric median), decoder rows are renormalised to unit norm
after every step and the gradient component parallel to each row is removed before it, and
features that have not fired for ``dead_after`` training vectors are "dead": an auxiliary loss
(AuxK, weight ``aux_weight``) asks the top ``k_aux`` dead features to reconstruct what the live ones
missed, which pulls them back into use.

The decoder is applied sparsely: ``embedding_bag`` sums the k selected rows weighted by their
codes, so decoding costs O(k d) per vector instead of O(n_features d), and so does its gradient.

Inputs are scaled by one scalar so that the mean squared norm per dimension is 1; reconstructions
are returned on the original scale. Everything here works on plain (N, d) float tensors.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from talkgen.seeding import seeded


@dataclass(frozen=True)
class SAEConfig:
    n_features: int = 2048
    k: int = 16
    lr: float = 0.0           # 0: Gao et al.'s rule, 2e-4 / sqrt(n_features / 2**14)
    batch_size: int = 1024
    epochs: int = 2
    dead_after: int = 250_000  # vectors without firing before a feature counts as dead in training
    k_aux: int = 0            # 0: d_in // 2
    aux_weight: float = 1 / 32
    seed: int = 0

    def learning_rate(self) -> float:
        return self.lr or 2e-4 / math.sqrt(self.n_features / 2 ** 14)


class TopKSAE(nn.Module):
    """A TopK sparse autoencoder on d_in-dimensional vectors (see the module docstring)."""

    def __init__(self, d_in: int, n_features: int, k: int) -> None:
        super().__init__()
        if not 0 < k <= n_features:
            raise ValueError(f"k must be in 1..n_features ({n_features}); got {k}")
        self.d_in, self.n_features, self.k = d_in, n_features, k
        w = torch.randn(n_features, d_in)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)                    # (F, d): row f is feature f's direction
        self.W_enc = nn.Parameter(w.clone())            # (F, d): starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(()))   # inputs are divided by it

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.scale - self.b_dec) @ self.W_enc.T + self.b_enc   # (N, F)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> codes (N, k) >= 0 and their feature indices (N, k)."""
        values, indices = self.pre_activations(x).topk(self.k, dim=-1, sorted=False)
        return values.relu(), indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sum of the selected decoder rows weighted by their codes, plus b_dec, on the input's scale."""
        out = nn.functional.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return (out + self.b_dec) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))

    def dense_codes(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = self.encode(x)
        return torch.zeros(len(x), self.n_features, dtype=values.dtype).scatter_(1, indices, values)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the part of each decoder row's gradient that would change its norm."""
        g = self.W_dec.grad
        if g is not None:
            g.sub_((g * self.W_dec).sum(1, keepdim=True) * self.W_dec)


@dataclass
class TrainLog:
    steps: int
    seconds: float
    vectors_per_second: float
    losses: list[float]          # normalised MSE per logged step
    dead_during_training: float  # fraction dead (by ``dead_after``) at the end


def _aux_loss(sae: TopKSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """AuxK: the top ``k_aux`` dead features reconstruct the live features' residual (normalised)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    recon = nn.functional.embedding_bag(indices, sae.W_dec, per_sample_weights=values.relu(), mode="sum")
    denom = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
    return (recon - residual).pow(2).sum(-1).mean() / denom


def train_sae(x: torch.Tensor, cfg: SAEConfig, progress: Callable[[str], None] | None = None) -> tuple[TopKSAE, TrainLog]:
    """Train a TopK autoencoder on the rows of ``x`` (N, d) with ``cfg``; deterministic for a seed (the
    caller's random state is left as it was)."""
    with seeded(cfg.seed):
        return _train_sae(x, cfg, progress)


def _train_sae(x: torch.Tensor, cfg: SAEConfig, progress: Callable[[str], None] | None = None) -> tuple[TopKSAE, TrainLog]:
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need activations shaped (N >= 2, d); got {tuple(x.shape)}")
    x = x.float().contiguous()
    if not torch.isfinite(x).all():
        raise ValueError("activations contain NaN or infinite values")
    n, d = x.shape
    sae = TopKSAE(d, cfg.n_features, min(cfg.k, cfg.n_features))
    with torch.no_grad():
        mean = x.mean(0)
        scale = ((x - mean).pow(2).sum(1).mean() / d).sqrt().clamp_min(1e-8)
        sae.scale.fill_(float(scale))
        sae.b_dec.copy_(mean / scale)
    k_aux = cfg.k_aux or max(1, d // 2)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.learning_rate(), betas=(0.9, 0.999), eps=6.25e-10)
    gen = torch.Generator().manual_seed(cfg.seed)
    since_fired = torch.zeros(cfg.n_features, dtype=torch.long)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = steps_per_epoch * cfg.epochs
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            xb = x[perm[b * batch:(b + 1) * batch]] / scale
            pre = (xb - sae.b_dec) @ sae.W_enc.T + sae.b_enc
            values, indices = pre.topk(sae.k, dim=-1, sorted=False)
            values = values.relu()
            recon = nn.functional.embedding_bag(indices, sae.W_dec, per_sample_weights=values, mode="sum") + sae.b_dec
            err = recon - xb
            var = (xb - xb.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
            loss = err.pow(2).sum(-1).mean() / var
            with torch.no_grad():
                fired = torch.zeros(cfg.n_features, dtype=torch.bool)
                fired[indices[values > 0]] = True
                since_fired += len(xb)
                since_fired[fired] = 0
                dead = since_fired >= cfg.dead_after
            if cfg.aux_weight > 0 and bool(dead.any()):
                loss = loss + cfg.aux_weight * _aux_loss(sae, pre, (xb - recon).detach(), dead, k_aux)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.project_decoder_grad()
            opt.step()
            sae.normalise_decoder()
            step += 1
            if step % 50 == 0 or step == total:
                losses.append(float(loss.detach()))
                if progress is not None:
                    progress(f"sae step {step}/{total}: normalised mse {losses[-1]:.4f}, "
                             f"dead {float(dead.float().mean()):.3f}")
    seconds = time.perf_counter() - t0
    sae.eval()
    return sae, TrainLog(steps=step, seconds=seconds, vectors_per_second=step * batch / max(seconds, 1e-9),
                         losses=losses, dead_during_training=float((since_fired >= cfg.dead_after).float().mean()))


# --------------------------------------------------------------------------- evaluation


@dataclass
class SAEMetrics:
    explained_variance: float
    l0: float
    dead_fraction: float
    density: np.ndarray  # (F,) fraction of vectors on which each feature is active


@torch.no_grad()
def sparse_codes(sae: TopKSAE, x: torch.Tensor, batch: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, k) and indices (N, k) of every row of x."""
    vals, idxs = [], []
    for i in range(0, len(x), batch):
        v, ix = sae.encode(x[i:i + batch].float())
        vals.append(v)
        idxs.append(ix)
    return torch.cat(vals), torch.cat(idxs)


@torch.no_grad()
def evaluate_sae(sae: TopKSAE, x: torch.Tensor, batch: int = 8192) -> SAEMetrics:
    """Explained variance (1 - SSE / total variance), mean L0, and dead features on held-out ``x``."""
    x = x.float()
    sse, count = 0.0, torch.zeros(sae.n_features, dtype=torch.float64)
    l0 = 0.0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        v, ix = sae.encode(xb)
        sse += float((sae.decode(v, ix) - xb).double().pow(2).sum())
        active = v > 0
        l0 += float(active.sum())
        count += torch.bincount(ix[active], minlength=sae.n_features).double()
    sst = float((x.double() - x.double().mean(0)).pow(2).sum())
    density = (count / len(x)).numpy()
    return SAEMetrics(explained_variance=1.0 - sse / max(sst, 1e-30), l0=l0 / len(x),
                      dead_fraction=float((density == 0).mean()), density=density)


# --------------------------------------------------------------------------- legibility


def sparse_pearson(values: np.ndarray, indices: np.ndarray, label: np.ndarray, n_features: int) -> np.ndarray:
    """Pearson r of every feature's activation (zero where not selected) with ``label`` (N,)."""
    n = len(label)
    y = label.astype(np.float64)
    rows = np.repeat(np.arange(n), indices.shape[1])
    f, v = indices.reshape(-1), values.reshape(-1).astype(np.float64)
    sx = np.bincount(f, weights=v, minlength=n_features)
    sxx = np.bincount(f, weights=v * v, minlength=n_features)
    sxy = np.bincount(f, weights=v * y[rows], minlength=n_features)
    cov = sxy / n - sx / n * y.mean()
    var_x = sxx / n - (sx / n) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * y.var())
    return np.where(np.isfinite(r), r, 0.0)


def sparse_auroc(values: np.ndarray, indices: np.ndarray, positive: np.ndarray, n_features: int) -> np.ndarray:
    """AUROC of every feature's activation (zero where not selected, ties counted half) as a score
    for the boolean ``positive`` (N,). NaN when one class is empty."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    out = np.full(n_features, 0.5)
    if n_pos == 0 or n_neg == 0:
        return np.full(n_features, np.nan)
    rows = np.repeat(np.arange(len(positive)), indices.shape[1])
    f, v = indices.reshape(-1), values.reshape(-1)
    keep = v > 0
    f, v, lab = f[keep], v[keep], positive[rows[keep]]
    order = np.argsort(f, kind="stable")
    f, v, lab = f[order], v[order], lab[order]
    bounds = np.searchsorted(f, np.arange(n_features + 1))
    for j in range(n_features):
        a, b = bounds[j], bounds[j + 1]
        if a == b:
            continue
        lj = lab[a:b]
        ap = int(lj.sum())
        an = (b - a) - ap
        zp, zn = n_pos - ap, n_neg - an
        u_active = 0.0
        if ap and an:
            r = rankdata(v[a:b])
            u_active = r[lj].sum() - ap * (ap + 1) / 2
        u = u_active + ap * zn + 0.5 * zp * zn
        out[j] = u / (n_pos * n_neg)
    return out


def top_contexts(values: np.ndarray, indices: np.ndarray, feature: int, n: int, min_gap: int) -> list[tuple[int, float]]:
    """The ``n`` positions where ``feature`` is most active, at least ``min_gap`` apart: (row, value)."""
    rows, cols = np.nonzero(indices == feature)
    acts = values[rows, cols]
    picked: list[tuple[int, float]] = []
    for i in np.argsort(-acts, kind="stable"):
        if acts[i] <= 0:
            break
        r = int(rows[i])
        if all(abs(r - p) >= min_gap for p, _ in picked):
            picked.append((r, float(acts[i])))
            if len(picked) == n:
                break
    return picked


# --------------------------------------------------------------------------- storage


def sae_state(sae: TopKSAE, cfg: SAEConfig, extra: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata for a safetensors file that ``load_sae`` reads back."""
    import json

    meta = {"format": "talkgen-topk-sae", "d_in": str(sae.d_in), "n_features": str(sae.n_features), "k": str(sae.k),
            "config": json.dumps(asdict(cfg)), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    return {k: v.detach().contiguous() for k, v in sae.state_dict().items()}, meta


def load_sae(path: str) -> TopKSAE:
    """A TopKSAE from a safetensors file written by talkgen (``sparse-features.safetensors``)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "talkgen-topk-sae":
            raise ValueError(f"{path} is not a talkgen sparse autoencoder")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    sae = TopKSAE(int(meta["d_in"]), int(meta["n_features"]), int(meta["k"]))
    sae.load_state_dict(tensors)
    return sae.eval()
