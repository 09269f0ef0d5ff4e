"""Curvature of the loss at the trained weights: the Hessian's top eigenvalues and its trace.

What it measures: the largest eigenvalues of the Hessian of the training loss (on a fixed,
seeded batch) by Lanczos iteration on Hessian-vector products with full re-orthogonalisation
(Ghorbani, Krishnan & Xiao 2019; PyHessian, Yao et al. 2020), and its trace by Hutchinson's
estimator with Rademacher probes. The top eigenvalue is the "sharpness" of the minimum;
the trace sums the curvature over all directions. Assumptions: a differentiable loss
(cross-entropy); no dropout or batch statistics that change between calls.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.loss import Params, batch_count, hvp, loss_batch, make_loss, parameter_copy
from talkgen.analyses.specs import Bars, Table


def _flat(p: Params) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in p.values()])


def _unflat(v: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, t in like.items():
        out[k] = v[i:i + t.numel()].view_as(t)
        i += t.numel()
    return out


def lanczos_top_eigenvalues(loss, params: Params, k: int, iterations: int, seed: int) -> np.ndarray:
    """The ``k`` largest (algebraic) Ritz values after ``iterations`` Lanczos steps on H."""
    n = sum(t.numel() for t in params.values())
    m = min(iterations, n)
    g = torch.Generator().manual_seed(seed)
    first = next(iter(params.values()))
    q = torch.randn(n, generator=g, dtype=first.dtype)
    q /= q.norm()
    basis = [q]
    alphas, betas = [], []
    for j in range(m):
        w = _flat(hvp(loss, params, _unflat(basis[-1], params)))
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        for b in basis:  # full re-orthogonalisation: numerical safety over speed
            w = w - (w @ b) * b
        beta = float(w.norm())
        if j == m - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append(w / beta)
    t = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    return np.sort(np.linalg.eigvalsh(t))[::-1][:k]


def hutchinson_trace(loss, params: Params, probes: int, seed: int) -> tuple[float, float]:
    """(trace estimate, its standard error) from ``probes`` Rademacher vectors."""
    g = torch.Generator().manual_seed(seed + 1)
    values = []
    for _ in range(probes):
        v = {k: (torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(t.dtype) for k, t in params.items()}
        hv = hvp(loss, params, v)
        values.append(float(sum((hv[k] * v[k]).sum() for k in params)))
    arr = np.array(values)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan


@register
class Curvature(Analysis):
    name = "curvature"
    title = "Sharpness of the minimum"
    section = "looking-in"
    version = 1
    applies_text = "models trained with a cross-entropy loss (classifiers and sequence models)"
    # batch: examples for classifiers; sequence models use batch // 128 sequences (an LSTM's
    # double backward through 256 steps is the expensive case)
    params = {"batch": 512, "top_k": 5, "lanczos_iterations": 30, "probes": 50, "seq_len": 256}
    quick = {"batch": 128, "lanczos_iterations": 12, "probes": 10, "seq_len": 64}

    def applies_to(self, subject) -> bool | str:
        if not subject.data.labelled:
            return "needs labelled data (the loss is measured against the labels)"
        return True

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        n = batch_count(s, ctx.params["batch"])
        x, y = loss_batch(s, n, ctx.seed, ctx.params["seq_len"])
        params = parameter_copy(s.model)
        loss = make_loss(s.model, x, y)
        top = lanczos_top_eigenvalues(loss, params, ctx.params["top_k"], ctx.params["lanczos_iterations"], ctx.seed)
        trace, trace_se = hutchinson_trace(loss, params, ctx.params["probes"], ctx.seed)
        with torch.no_grad():
            loss_value = float(loss(params))
        n_params = sum(t.numel() for t in params.values())
        summaries = {
            "top_eigenvalue": Scalar(float(top[0]), "", "largest Hessian eigenvalue: sharpness of the minimum"),
            "trace": Scalar(trace, "", f"Hessian trace (Hutchinson, {ctx.params['probes']} probes)"),
            "trace_stderr": Scalar(trace_se, "", "standard error of the trace estimate"),
            "top_to_mean": Scalar(float(top[0]) / (trace / n_params) if trace else math.nan, "ratio",
                                  "top eigenvalue over the mean eigenvalue (trace / parameters)"),
            "loss_at_minimum": Scalar(loss_value, "nats", "training loss on the batch used"),
        }
        arrays = {"top": top}
        rows = tuple((f"λ{i + 1}", f"{v:.4g}") for i, v in enumerate(top)) + (
            ("trace", f"{trace:.4g} ± {trace_se:.2g}"), ("parameters", f"{n_params:,}"),
            ("batch", f"{len(x)} examples"), ("loss", f"{loss_value:.4f}"))
        return Result(
            analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
            figures=(Bars(id="eigenvalues", title="Top Hessian eigenvalues",
                          caption=f"The {len(top)} largest eigenvalues of the loss Hessian at the trained weights "
                                  f"(Lanczos, {ctx.params['lanczos_iterations']} steps, {len(x)} training examples).",
                          alt="Bar chart of the largest Hessian eigenvalues, largest first.",
                          categories=tuple(f"λ{i + 1}" for i in range(len(top))), values=("top",),
                          series=("eigenvalue",), ylabel="Hessian eigenvalue"),),
            tables=(Table(id="curvature", title="Curvature at the minimum", columns=("quantity", "value"), rows=rows),),
            data={"n_params": n_params, "batch": len(x), "top": [float(v) for v in top], "trace": trace,
                  "trace_se": trace_se})
