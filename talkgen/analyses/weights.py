"""Weight matrices: heatmaps, first-layer filters, singular value spectra, norms, and the
heavy-tailed spectral density of each matrix against the same matrix shuffled.

What it measures: every weight matrix of the model (conv kernels unfolded to
(out, in * kh * kw), the im2col convention, so one row is one output channel's whole receptive
field; tied parameters counted once), its singular values, Frobenius norm ||W||_F, spectral
norm ||W||_2 = sigma_max, stable rank ||W||_F^2 / ||W||_2^2 (how many directions carry the
energy), and, per meaningful block (LSTM gates and packed q/k/v split apart), the empirical
spectral density of W^T W / N with a power-law fit of its tail (alpha, Martin & Mahoney 2021;
fit as in Clauset et al. 2009, with its KS distance and standard error). The same block with
its entries randomly permuted keeps every entry but loses all structure: the difference in
alpha is what training put into the matrix's correlations.
Assumptions: weights are finite; a layer with NaN/inf entries is reported as a high-severity
finding and left out of the spectra.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Result, Scalar, evenly_spaced, register
from talkgen.analyses.spectral import (MIN_TAIL, WIDEN_BYTES, ccdf, esd, fit_power_law, fitted_ccdf,
                                       squared_singular_values, verdict)
from talkgen.specs import Bars, Curves, Heatmaps, ImageGrid, Table
from talkgen.models.introspect import blocks, first_conv, nonfinite_count, parameter_count, weight_matrices


def _shown(matrix: np.ndarray, max_side: int) -> np.ndarray:
    """Evenly strided rows/columns so that a heatmap stays legible at slide size."""
    rows = np.linspace(0, matrix.shape[0] - 1, min(max_side, matrix.shape[0])).round().astype(int)
    cols = np.linspace(0, matrix.shape[1] - 1, min(max_side, matrix.shape[1])).round().astype(int)
    return matrix[np.ix_(rows, cols)]


def _matrix(m) -> torch.Tensor:
    """``m`` as (rows, cols) on the CPU: a float64 copy when that takes at most ``WIDEN_BYTES``; a larger matrix
    as float32, the parameter itself where it is a float32 tensor on the CPU (no copy at all), and widened to
    float64 piece by piece where the numbers need it."""
    rows, cols = m.matrix_shape
    if rows * cols * 8 <= WIDEN_BYTES:
        return m.matrix
    return m.param.detach().reshape(m.matrix_shape).to("cpu", torch.float32)


def _frobenius(w: torch.Tensor) -> float:
    """The Frobenius norm of ``w``, summed in float64 (a float32 matrix ``WIDEN_BYTES`` at a time)."""
    if w.dtype == torch.float64:
        return float(torch.linalg.matrix_norm(w, "fro"))
    step = max(1, WIDEN_BYTES // (8 * w.shape[1]))
    return math.sqrt(sum(float(w[i:i + step].double().square().sum()) for i in range(0, w.shape[0], step)))


def _spectral_norm(w: torch.Tensor, iterations: int = 200, tol: float = 1e-10) -> float:
    """The largest singular value of ``w`` by power iteration on WᵀW (for matrices too large to decompose): in
    ``w``'s own type, to 1e-10 in float64 and to float32's precision (1e-7) in float32."""
    tol = max(tol, float(torch.finfo(w.dtype).eps))
    g = torch.Generator().manual_seed(0)
    v = torch.randn(w.shape[1], generator=g, dtype=w.dtype)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iterations):
        u = w @ v
        v = w.T @ u
        norm = float(v.norm())
        if norm == 0.0:
            return 0.0
        v /= norm
        new = math.sqrt(norm)
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


@register
class Weights(Analysis):
    name = "weights"
    order = 10
    runs_on_twins = ("initial", "width")
    title = "Weight matrices"
    section = "looking-in"
    version = 8  # 3: the tail fit follows the reference (one-sided KS), finite-size corrected alpha;
    # 4: each tail panel names its alpha in its title, so the three curves share one legend; 5: norms named in words;
    # 6: spectra of large matrices from their Gram matrix, and of very large ones on a row sample (said so);
    # 7: a matrix over 32 MB in float64 read as float32 and widened piece by piece (other rounding);
    # 8: the spectra figure shows at most max_curves matrices, evenly spaced (a transformer's 76 did not fit)
    applies_text = "any model with a weight matrix (a parameter of 2+ dims)"
    params = {"max_side": 128, "max_panels": 8, "max_spectra": 8, "max_spectrum_rows": 4096, "max_curves": 10}
    quick = {"max_side": 64, "max_spectrum_rows": 2048}

    def applies_to(self, subject) -> bool | str:
        if not any(p.ndim >= 2 for p in subject.model.parameters()):
            return "the model has no weight matrix (no parameter with 2 or more dimensions)"
        return True

    def run(self, ctx: Context) -> Result:
        model = ctx.subject.model
        mats = weight_matrices(model)
        rng = ctx.rng()
        arrays: dict[str, np.ndarray] = {}
        summaries: dict[str, Scalar] = {}
        rows: list[tuple[str, ...]] = []
        alpha_rows: list[tuple[str, ...]] = []
        sv_keys: list[str] = []
        layers: list[dict] = []
        fits: list[dict] = []
        nonfinite_total = 0
        cap = ctx.params["max_spectrum_rows"]
        sampled: list[str] = []
        for i, m in enumerate(mats):
            ctx.progress(i, len(mats), "weight matrices")
            w = _matrix(m)  # (out, fan_in): float64, or a large one's float32
            n_bad = nonfinite_count(w)  # a piece at a time: no mask (nor int64 copy of one) of the whole matrix
            finite = n_bad == 0
            nonfinite_total += n_bad
            fro = _frobenius(w) if finite else math.nan
            if finite:
                # a matrix with more than ``cap`` rows on both sides: its spectra on ``cap`` random rows (a random
                # projection of the same rows' statistics at a fixed cost); its norms always from the whole matrix
                keep = np.sort(rng.choice(w.shape[0], cap, replace=False)) if min(w.shape) > cap else None
                if keep is not None:
                    sampled.append(f"{m.name} {w.shape[0]:,} → {cap:,} rows")
                view = w.numpy() if keep is None else w.numpy()[keep]
                sv = np.sqrt(squared_singular_values(view))  # (min(out, fan_in),) descending
                spectral = float(sv[0]) if keep is None else _spectral_norm(w)
                stable = fro**2 / spectral**2 if spectral > 0 else math.nan
                arrays[f"sv:{m.name}"] = sv
                arrays[f"rank:{m.name}"] = np.arange(1, len(sv) + 1, dtype=np.float64)
                sv_keys.append(m.name)
                for block_name, block in blocks(m, w):
                    whole = block.shape == w.shape  # the matrix itself (its row sample): eigenvalues computed above
                    b = view if whole else block.numpy()
                    fits.append(self._fit_block(m.name, block_name, b, rng, arrays,
                                                lam=np.sort(sv**2 / len(b)) if whole else None))
            else:  # the build reports non-finite parameters as a finding about the model file
                spectral = stable = math.nan
            arrays[f"matrix:{m.name}"] = _shown(w.numpy(), ctx.params["max_side"]).astype(np.float32)
            summaries[f"{m.name}.frobenius_norm"] = Scalar(fro, "", f"Frobenius norm of {m.name}")
            summaries[f"{m.name}.log10_frobenius_norm"] = Scalar(
                math.log10(fro) if fro > 0 else math.nan, "log10", f"log10 of the Frobenius norm of {m.name}")
            summaries[f"{m.name}.spectral_norm"] = Scalar(spectral, "", f"largest singular value of {m.name}")
            summaries[f"{m.name}.stable_rank"] = Scalar(
                stable, "", f"stable rank of {m.name}: squared Frobenius norm over squared spectral norm, at most {min(w.shape)}")
            layers.append({"name": m.name, "kind": m.kind, "shape": list(m.shape), "matrix_shape": list(w.shape),
                           "finite": finite, "frobenius_norm": fro, "spectral_norm": spectral,
                           "stable_rank": stable, "max_rank": min(w.shape), "nonfinite": n_bad})
            rows.append((m.name, m.kind, "x".join(map(str, m.shape)), f"{w.numel():,}",
                         _fmt(fro), _fmt(spectral), _fmt(stable) + f" / {min(w.shape)}"))
            w = view = None  # let this matrix's copies go before the next one is made
        for f in fits:
            key = f["key"]
            summaries[f"{key}.alpha"] = Scalar(f["alpha"], "", f"power-law exponent of the ESD tail of {f['label']}")
            summaries[f"{key}.alpha_shuffled"] = Scalar(
                f["alpha_shuffled"], "", f"the same for {f['label']} with its entries shuffled")
            summaries[f"{key}.alpha_ks"] = Scalar(f["ks"], "", f"KS distance of the tail fit of {f['label']}")
            alpha_rows.append((f["label"], str(f["n_eigen"]),
                               f"{_fmt(f['alpha'])} ± {_fmt(f['stderr'])}" if math.isfinite(f["alpha"]) else f["reason"],
                               _fmt(f["ks"]), str(f["n_tail"]), _fmt(f["alpha_shuffled"]), f["verdict"]))

        summaries["matrices"] = Scalar(float(len(mats)), "count", "weight matrices (tied ones counted once)")
        summaries["nonfinite_weights"] = Scalar(float(nonfinite_total), "count", "NaN or infinite weight entries")
        finite_layers = [l for l in layers if l["finite"]]
        if finite_layers:
            rel = [l["stable_rank"] / l["max_rank"] for l in finite_layers]
            summaries["mean_relative_stable_rank"] = Scalar(
                float(np.mean(rel)), "fraction", "mean over layers of stable rank / full rank")
        fitted = [f for f in fits if f["judged"]]
        if fitted:
            summaries["mean_alpha"] = Scalar(float(np.mean([f["alpha"] for f in fitted])), "",
                                             f"mean power-law alpha over blocks whose fitted tail has >= {MIN_TAIL} "
                                             "eigenvalues")
            both = [f for f in fitted if f["judged_shuffled"]]
            if both:
                summaries["mean_alpha_shuffled"] = Scalar(float(np.mean([f["alpha_shuffled"] for f in both])), "",
                                                          "mean alpha of the same blocks shuffled")

        figures = self._figures(model, mats, arrays, sv_keys, fits, ctx.params)
        tables = (
            Table(id="norms", title="Norms per weight matrix",
                  columns=("matrix", "module", "shape", "entries", "Frobenius norm", "spectral norm", "stable rank / max"),
                  rows=tuple(rows), caption="Frobenius norm, spectral norm and stable rank per matrix."),
            Table(id="alpha", title="Power-law fits of each block's spectral density",
                  columns=("block", "eigenvalues", "alpha ± s.e.", "KS D", "tail size", "alpha shuffled", "reading"),
                  rows=tuple(alpha_rows),
                  caption="alpha of the ESD tail of WᵀW / N, fitted by maximum likelihood with xmin "
                          "chosen by the smallest KS distance; the same block with its entries shuffled."),
        )
        return Result(analysis=self.name, subject=ctx.subject.name, arrays=arrays, summaries=summaries,
                      figures=figures, tables=tables,
                      data={"n_params": parameter_count(model),
                            "layers": layers, "fits": fits, "shown": [m.name for m in mats][: ctx.params["max_panels"]],
                            "total": len(mats), "convention": "conv kernels unfolded to (out, in*kh*kw)"}
                      | ({"sampled": "spectra on a random sample of rows: " + ", ".join(sampled)} if sampled else {}))

    @staticmethod
    def _fit_block(name: str, block_name: str, block: np.ndarray, rng: np.random.Generator,
                   arrays: dict[str, np.ndarray], lam: np.ndarray | None = None) -> dict:
        label = f"{name} [{block_name}]" if block_name else name
        key = name + (":" + block_name.replace(" ", "_") if block_name else "")
        lam = esd(block) if lam is None else lam
        fit = fit_power_law(lam)
        shuffled = rng.permutation(block.reshape(-1)).reshape(block.shape)
        lam_s = esd(shuffled)
        fit_s = fit_power_law(lam_s)
        x, y = ccdf(lam)
        xs, ys = ccdf(lam_s)
        arrays[f"ccdf_x:{key}"], arrays[f"ccdf_y:{key}"] = x, y
        arrays[f"ccdf_xs:{key}"], arrays[f"ccdf_ys:{key}"] = xs, ys
        if math.isfinite(fit.alpha):
            tail_x = x[x >= fit.xmin]
            arrays[f"fit_x:{key}"] = tail_x
            arrays[f"fit_y:{key}"] = fitted_ccdf(fit, tail_x, fit.n_tail / len(x))
        return {"key": key, "label": label, "n_eigen": int(len(lam)), "alpha": fit.alpha, "stderr": fit.alpha_stderr,
                "ks": fit.ks_distance, "n_tail": fit.n_tail, "xmin": fit.xmin, "reason": fit.reason,
                "alpha_mle": fit.alpha_mle, "alpha_shuffled": fit_s.alpha, "ks_shuffled": fit_s.ks_distance,
                "verdict": verdict(fit.alpha, fit.n_tail), "verdict_shuffled": verdict(fit_s.alpha, fit_s.n_tail),
                # a fit whose tail is long enough to be read as trained or random (the summaries use these)
                "judged": bool(math.isfinite(fit.alpha) and fit.n_tail >= MIN_TAIL),
                "judged_shuffled": bool(math.isfinite(fit_s.alpha) and fit_s.n_tail >= MIN_TAIL)}

    @staticmethod
    def _figures(model, mats, arrays, sv_keys, fits, params) -> tuple:
        shown = mats[: params["max_panels"]]
        figures: list = [Heatmaps(
            id="matrices", title="The weight matrices, as pictures",
            caption="Each weight matrix as a heatmap (rows: output units; columns: inputs, conv kernels "
                    "unfolded); red positive, blue negative, white zero.",
            alt="Heatmaps of " + ", ".join(f"{m.name} ({m.matrix_shape[0]}x{m.matrix_shape[1]})" for m in shown)
                + ", coloured by sign and size of each weight.",
            arrays=tuple(f"matrix:{m.name}" for m in shown),
            panel_titles=tuple(f"{m.name} {m.matrix_shape[0]}x{m.matrix_shape[1]}" for m in shown),
            xlabel="input index", ylabel="output unit", colorbar="weight value", signed=True,
            sizes=tuple(tuple(m.matrix_shape) for m in shown))]
        conv = first_conv(model)
        if conv is not None and conv[1].weight.shape[1] in (1, 3):
            k = conv[1].weight.detach().cpu().float().numpy()  # (out, in, kh, kw)
            if np.isfinite(k).all() and k.ndim == 4:
                arrays["filters"] = k[:, 0] if k.shape[1] == 1 else k
                figures.append(ImageGrid(
                    id="filters", title=f"What the first layer looks for ({conv[0]})",
                    caption=f"The {k.shape[0]} first-layer filters of {conv[0]}, each {k.shape[2]}x{k.shape[3]} "
                            "pixels, on one colour scale centred on zero.",
                    alt=f"A grid of {k.shape[0]} small {k.shape[2]} by {k.shape[3]} filter images from {conv[0]}.",
                    array="filters", colorbar="weight value", signed=k.shape[1] == 1))
        if sv_keys:
            # a model of many matrices (a transformer's 76) gets a legible few, evenly spaced through it; every
            # matrix's singular values are in the data and the norms table
            shown = evenly_spaced(sv_keys, params["max_curves"])
            which = ("each weight matrix" if len(shown) == len(sv_keys) else
                     f"{len(shown)} of the {len(sv_keys)} weight matrices, evenly spaced from the first to the last")
            figures.append(Curves(
                id="spectrum", title="Singular value spectra",
                caption=f"Singular values of {which}, largest first (log scale): a steep drop "
                        "means a few directions carry the layer.",
                alt="Line plot of singular value against rank for " + ", ".join(shown) + ".",
                x=tuple(f"rank:{n}" for n in shown), y=tuple(f"sv:{n}" for n in shown),
                labels=tuple(shown), xlabel="rank (1 = largest)", ylabel="singular value", logy=True))
        fitted = [f for f in fits if f["judged"]]
        if fitted:
            chosen = sorted(fitted, key=lambda f: -f["n_eigen"])[: params["max_spectra"]]
            chosen = [f for f in fits if f in chosen]
            xs, ys, labels, panels, styles = [], [], [], [], []
            for p, f in enumerate(chosen):
                k = f["key"]
                for xk, yk, lab, st in ((f"ccdf_x:{k}", f"ccdf_y:{k}", "trained", "-"),
                                        (f"ccdf_xs:{k}", f"ccdf_ys:{k}", "shuffled", ":"),
                                        (f"fit_x:{k}", f"fit_y:{k}", "power-law fit", "--")):
                    xs.append(xk), ys.append(yk), labels.append(lab), panels.append(p), styles.append(st)
            figures.append(Curves(
                id="esd", title="Eigenvalue tails: trained vs shuffled",
                caption="Complementary CDF of the eigenvalues of WᵀW / N on log-log axes (a power law is a "
                        "straight line), the fitted tail (dashed) and the same block with shuffled entries (dotted).",
                alt="Log-log plots, one per weight block, of the eigenvalue CCDF of the trained block, its "
                    "power-law fit and its shuffled twin.",
                x=tuple(xs), y=tuple(ys), labels=tuple(labels), panels=tuple(panels), styles=tuple(styles),
                panel_titles=tuple(f"{f['label']}: α {f['alpha']:.2f}" for f in chosen), xlabel="eigenvalue",
                ylabel="P(λ ≥ x)",
                logx=True, logy=True))
            both = [f for f in fitted if f["judged_shuffled"]][:24]
            if both:
                arrays["alpha_trained"] = np.array([f["alpha"] for f in both])
                arrays["alpha_shuffled"] = np.array([f["alpha_shuffled"] for f in both])
                figures.append(Bars(
                    id="alpha", title="Power-law alpha per block: trained vs shuffled",
                    caption="alpha of each block's eigenvalue tail, trained and with its entries shuffled; "
                            "2 to 6 is the range typical of well-trained layers.",
                    alt="Grouped bar chart of alpha per weight block, trained next to shuffled.",
                    categories=tuple(f["label"] for f in both), values=("alpha_trained", "alpha_shuffled"),
                    series=("trained", "shuffled"), ylabel="alpha (power-law exponent)"))
        return tuple(figures)
