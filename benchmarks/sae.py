"""Sparse-autoencoder training on 1M activation vectors (talkgen.meta.sae) against a plain version.

The vectors are the bundled python-charlstm's hidden state (256 numbers per character) over the
first ~1M characters of its training text, collected as the ``sparse-features`` analysis does.
Both sides train the same TopK autoencoder (2048 features, k = 16, batch 1024, Adam, unit-norm
decoder rows, AuxK for dead features), 2 threads. talkgen decodes sparsely (``embedding_bag``
sums the k selected decoder rows, and its backward touches only them); the peer is the version one
writes first: scatter the codes into a dense (batch, features) matrix and multiply it by the
whole decoder. The peer trains on a slice of the vectors (``--peer-vectors``) and is compared by
throughput. Prints seconds for one pass over all vectors (target: under 300 s on 2 cores), both
throughputs, their ratio, and held-out explained variance.

    python benchmarks/sae.py [--vectors 1048576] [--peer-vectors 131072] [--features 2048] [--k 16]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from talkgen.meta import sae as S


class DenseDecodeSAE(S.TopKSAE):
    """The same autoencoder, decoding with a dense matrix product."""

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(len(values), self.n_features, dtype=values.dtype).scatter(1, indices, values)
        return (z @ self.W_dec + self.b_dec) * self.scale


def train_dense(x: torch.Tensor, cfg: S.SAEConfig) -> float:
    """Seconds for one pass of the plain version over ``x`` (same loop, dense decode)."""
    torch.manual_seed(cfg.seed)
    n, d = x.shape
    sae = DenseDecodeSAE(d, cfg.n_features, cfg.k)
    scale = float(((x - x.mean(0)).pow(2).sum(1).mean() / d).sqrt())
    sae.scale.fill_(1.0)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0) / scale)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.learning_rate(), eps=6.25e-10)
    since = torch.zeros(cfg.n_features, dtype=torch.long)
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    for b in range(n // cfg.batch_size):
        xb = x[perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]] / scale
        pre = sae.pre_activations(xb)
        values, indices = pre.topk(cfg.k, dim=-1)
        values = values.relu()
        recon = sae.decode(values, indices)
        loss = (recon - xb).pow(2).sum(-1).mean() / (xb - xb.mean(0)).pow(2).sum(-1).mean()
        with torch.no_grad():
            since += len(xb)
            since[indices[values > 0]] = 0
            dead = since >= cfg.dead_after
        if dead.any():
            masked = pre.masked_fill(~dead, float("-inf"))
            v, i = masked.topk(min(d // 2, int(dead.sum())), dim=-1)
            z = torch.zeros_like(pre).scatter(1, i, v.relu())
            res = (xb - recon).detach()
            loss = loss + cfg.aux_weight * (z @ sae.W_dec - res).pow(2).sum(-1).mean() / (
                res - res.mean(0)).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        sae.project_decoder_grad()
        opt.step()
        sae.normalise_decoder()
    return time.perf_counter() - t0


def charlstm_vectors(n: int) -> torch.Tensor:
    from talkgen.analyses.sparse_features import Site
    from talkgen.models.samples import load_sample

    s = load_sample("python-charlstm")
    window = s.data.x_train.shape[1]
    site = Site(s.model.eval(), "")
    return site.collect(s.model, s.data.x_train[: math.ceil(n / window)], 256)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", type=int, default=1_048_576)
    ap.add_argument("--peer-vectors", type=int, default=131_072)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t = time.perf_counter()
    x = charlstm_vectors(args.vectors + 65_536)
    train, held = x[: args.vectors], x[args.vectors:]
    print(f"collected {len(x):,} hidden-state vectors of {x.shape[1]} in {time.perf_counter() - t:.1f} s")
    cfg = S.SAEConfig(n_features=args.features, k=args.k, epochs=1, batch_size=1024)
    sae, log = S.train_sae(train, cfg)
    met = S.evaluate_sae(sae, held)
    print(f"talkgen  : {len(train):,} vectors in {log.seconds:.1f} s ({log.vectors_per_second:,.0f} vectors/s); "
          f"held-out explained variance {met.explained_variance:.3f}, L0 {met.l0:.1f}, dead {met.dead_fraction:.3f}")
    peer_n = min(args.peer_vectors, len(train))
    peer_s = train_dense(train[:peer_n], cfg)
    peer_rate = (peer_n // cfg.batch_size) * cfg.batch_size / peer_s
    print(f"dense    : {peer_n:,} vectors in {peer_s:.1f} s ({peer_rate:,.0f} vectors/s)")
    print(f"speed-up : {log.vectors_per_second / peer_rate:.2f}x; 1M vectors in {log.seconds:.0f} s "
          f"({'under' if log.seconds < 300 else 'OVER'} the 300 s target)")


if __name__ == "__main__":
    main()
