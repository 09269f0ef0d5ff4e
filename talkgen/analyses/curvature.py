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
from dataclasses import dataclass

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.loss import (Params, batch_count, hvp, loss_batch, loss_batch_size, loss_problem, make_loss,
                                   parameter_copy)
from talkgen.specs import Bars, Table


def _flat(p: Params) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in p.values()])


def _unflat(v: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, t in like.items():
        out[k] = v[i:i + t.numel()].view_as(t)
        i += t.numel()
    return out


@dataclass(frozen=True)
class LanczosFit:
    """Ritz values of H, largest first, with the bound on each one's error."""

    values: np.ndarray     # the k largest Ritz values
    residuals: np.ndarray  # ||H u - theta u|| for each: |theta - lambda| <= residual for some eigenvalue lambda
    steps: int
    tolerance: float

    @property
    def converged(self) -> np.ndarray:
        """The leading Ritz values whose residual is within ``tolerance`` of their size (a prefix: a
        later value is only trusted when every larger one is)."""
        ok = self.residuals <= self.tolerance * np.maximum(np.abs(self.values), 1e-12)
        n = int(np.argmin(ok)) if not ok.all() else len(ok)
        return self.values[:n]


def lanczos(loss, params: Params, k: int, iterations: int, seed: int, max_iterations: int | None = None,
            tolerance: float = 1e-3, each=None) -> LanczosFit:
    """Lanczos on H with full re-orthogonalisation: at least ``iterations`` steps, then more (up to
    ``max_iterations``) until the ``k`` largest Ritz values have converged. A Ritz pair (theta, u = Q s)
    after m steps has residual beta_m |s_m| (the next off-diagonal times the last entry of s)."""
    n = sum(t.numel() for t in params.values())
    limit = min(max(max_iterations or iterations, iterations), n)
    g = torch.Generator().manual_seed(seed)
    first = next(iter(params.values()))
    q = torch.randn(n, generator=g, dtype=first.dtype).to(first.device)  # drawn on the CPU, used where H is
    q /= q.norm()
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    fit = None
    for j in range(limit):
        w = _flat(hvp(loss, params, _unflat(basis[-1], params)))
        if each is not None:
            each(j + 1)
        alphas.append(float(w @ basis[-1]))
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough"): one pass lets ghost
            for b in basis:  # Ritz values appear once the top eigenvalues have converged
                w = w - (w @ b) * b
        beta = float(w.norm())
        betas.append(beta)
        if j + 1 >= min(iterations, limit) or beta < 1e-10:
            fit = _ritz(alphas, betas, k, tolerance)
            if beta < 1e-10 or j + 1 == limit or len(fit.converged) >= min(k, len(alphas)):
                break
        basis.append(w / beta)
    assert fit is not None
    return fit


def _ritz(alphas: list[float], betas: list[float], k: int, tolerance: float) -> LanczosFit:
    m = len(alphas)
    t = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
    theta, s = np.linalg.eigh(t)
    order = np.argsort(theta)[::-1][:k]
    return LanczosFit(values=theta[order], residuals=abs(betas[m - 1]) * np.abs(s[-1, order]), steps=m,
                      tolerance=tolerance)


def lanczos_top_eigenvalues(loss, params: Params, k: int, iterations: int, seed: int) -> np.ndarray:
    """The ``k`` largest (algebraic) Ritz values after ``iterations`` Lanczos steps on H, converged or not."""
    return lanczos(loss, params, k, iterations, seed).values


def hutchinson_trace(loss, params: Params, probes: int, seed: int, each=None) -> tuple[float, float]:
    """(trace estimate, its standard error) from ``probes`` Rademacher vectors."""
    g = torch.Generator().manual_seed(seed + 1)
    values = []
    for _ in range(probes):
        v = {k: (torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(t.device, t.dtype) for k, t in params.items()}
        hv = hvp(loss, params, v)
        values.append(float(sum((hv[k] * v[k]).sum() for k in params)))
        if each is not None:
            each(len(values))
    arr = np.array(values)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan


@register
class Curvature(Analysis):
    name = "curvature"
    order = 80
    runs_on_twins = ("width",)  # the costs analysis times it at several widths
    title = "Sharpness of the minimum"
    section = "looking-in"
    version = 2  # 2: only converged Ritz values are reported; Lanczos runs on until the top k converge
    cost_hint = 3
    applies_text = "models trained with a cross-entropy loss (classifiers and sequence models)"
    # batch: examples for classifiers; sequence models use batch // 128 sequences (an LSTM's
    # double backward through 256 steps is the expensive case)
    # lanczos_iterations steps at least, more (up to lanczos_max_iterations) until the top_k Ritz values
    # converge; only converged ones are reported
    params = {"batch": 512, "top_k": 5, "lanczos_iterations": 30, "lanczos_max_iterations": 120, "probes": 50,
              "seq_len": 256}
    quick = {"batch": 128, "lanczos_iterations": 12, "lanczos_max_iterations": 40, "probes": 10, "seq_len": 64}

    def applies_to(self, subject) -> bool | str:
        return loss_problem(subject) or True

    # a Hessian-vector product costs about four forward passes of the batch; Lanczos and Hutchinson's probes
    # each make one per step
    sample_order = (("batch", 16), ("probes", 4), ("lanczos_max_iterations", 12), ("lanczos_iterations", 8))

    def passes(self, subject, params) -> float:
        steps = params["lanczos_max_iterations"] + params["probes"]
        return 4 * steps * loss_batch_size(subject, params["batch"], params["seq_len"])

    def copies(self, subject, params) -> float:
        # Lanczos keeps its whole Krylov basis (full re-orthogonalisation), besides the parameters' copy, the
        # Hessian-vector product and its gradients
        return params["lanczos_max_iterations"] + 4

    def run(self, ctx: Context) -> Result:
        s = ctx.subject
        n = batch_count(s, ctx.params["batch"])
        x, y = loss_batch(s, n, ctx.seed, ctx.params["seq_len"])
        params = parameter_copy(s.model)
        loss = make_loss(s.model, x, y)
        most = ctx.params["lanczos_max_iterations"] + ctx.params["probes"]  # Lanczos may stop early: at most this
        fit = lanczos(loss, params, ctx.params["top_k"],
                      min(ctx.params["lanczos_iterations"], ctx.params["lanczos_max_iterations"]), ctx.seed,
                      ctx.params["lanczos_max_iterations"],
                      each=lambda j: ctx.progress(j, most, "Hessian-vector products (at most)"))
        top = fit.converged if len(fit.converged) else fit.values[:1]  # lambda1 is reported even unconverged
        trace, trace_se = hutchinson_trace(loss, params, ctx.params["probes"], ctx.seed,
                                           each=lambda i: ctx.progress(fit.steps + i, fit.steps + ctx.params["probes"],
                                                                       "Hessian-vector products"))
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
            "eigenvalues_converged": Scalar(float(len(fit.converged)), "",
                                            f"of the top {ctx.params['top_k']} Ritz values, those whose residual is "
                                            f"within {fit.tolerance:g} of their size after {fit.steps} Lanczos steps"),
            "top_eigenvalue_residual": Scalar(float(fit.residuals[0]), "",
                                              "error bound on the largest eigenvalue (Ritz residual)"),
        }
        arrays = {"top": top}
        rows = tuple((f"λ{i + 1}", f"{v:.4g}") for i, v in enumerate(top)) + (
            ("converged", f"{len(top)} of {ctx.params['top_k']} after {fit.steps} Lanczos steps"),
            ("trace", f"{trace:.4g} ± {trace_se:.2g}"), ("parameters", f"{n_params:,}"),
            ("batch", f"{len(x)} examples"), ("loss", f"{loss_value:.4f}"))
        return Result(
            analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries,
            figures=(Bars(id="eigenvalues", title="Top Hessian eigenvalues",
                          caption=f"The {len(top)} largest eigenvalues of the loss Hessian at the trained weights "
                                  f"whose Lanczos estimate converged ({fit.steps} steps, Ritz residual within "
                                  f"{fit.tolerance:g} of the value; {len(x)} training examples).",
                          alt="Bar chart of the largest Hessian eigenvalues, largest first.",
                          categories=tuple(f"λ{i + 1}" for i in range(len(top))), values=("top",),
                          series=("eigenvalue",), ylabel="Hessian eigenvalue"),),
            tables=(Table(id="curvature", title="Curvature at the minimum", columns=("quantity", "value"), rows=rows),),
            data={"n_params": n_params, "batch": len(x), "top": [float(v) for v in top], "trace": trace,
                  "trace_se": trace_se, "lanczos_steps": fit.steps, "asked": ctx.params["top_k"],
                  "unconverged": [float(v) for v in fit.values[len(top):]],
                  "residuals": [float(v) for v in fit.residuals]})
