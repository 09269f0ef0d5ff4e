"""Weight matrices: heatmaps, first-layer filters, singular value spectra and norms.

What it measures: every weight matrix of the model (conv kernels unfolded to
(out, in * kh * kw), the im2col convention; tied parameters counted once), its singular
values, Frobenius norm ||W||_F, spectral norm ||W||_2 = sigma_max, and stable rank
||W||_F^2 / ||W||_2^2 (Rudelson & Vershynin 2007): how many directions carry the
matrix's energy. Karpathy's "visualise the matrices" is the heatmap; the spectrum is
the compact summary of what training put into it.
Assumptions: weights are finite; a layer with NaN/inf entries is reported as a
high-severity finding and left out of the spectra.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talkgen.analyses.base import Analysis, Context, Finding, Result, Scalar, register
from talkgen.analyses.specs import Curves, Heatmaps, ImageGrid, Table
from talkgen.models.introspect import first_conv, weight_matrices


def _shown(matrix: np.ndarray, max_side: int) -> np.ndarray:
    """Evenly strided rows/columns so that a heatmap stays legible at slide size."""
    rows = np.linspace(0, matrix.shape[0] - 1, min(max_side, matrix.shape[0])).round().astype(int)
    cols = np.linspace(0, matrix.shape[1] - 1, min(max_side, matrix.shape[1])).round().astype(int)
    return matrix[np.ix_(rows, cols)]


@register
class Weights(Analysis):
    name = "weights"
    title = "Weight matrices"
    section = "looking-in"
    version = 1
    applies_text = "any model with a weight matrix (a parameter of 2+ dims)"
    params = {"max_side": 128, "max_panels": 8}
    quick = {"max_side": 64}

    def applies_to(self, subject) -> bool | str:
        if not any(p.ndim >= 2 for p in subject.model.parameters()):
            return "the model has no weight matrix (no parameter with 2 or more dimensions)"
        return True

    def run(self, ctx: Context) -> Result:
        model = ctx.subject.model
        mats = weight_matrices(model)
        arrays: dict[str, np.ndarray] = {}
        summaries: dict[str, Scalar] = {}
        findings: list[Finding] = []
        rows: list[tuple[str, ...]] = []
        sv_keys: list[str] = []
        layers: list[dict] = []
        nonfinite_total = 0
        for m in mats:
            w = m.matrix  # (out, fan_in) float64
            finite = bool(torch.isfinite(w).all())
            n_bad = int((~torch.isfinite(w)).sum())
            nonfinite_total += n_bad
            layer = {"name": m.name, "kind": m.kind, "shape": list(m.shape),
                     "matrix_shape": list(w.shape), "finite": finite}
            fro = float(torch.linalg.matrix_norm(w, "fro")) if finite else math.nan
            if finite:
                sv = torch.linalg.svdvals(w).numpy()  # (min(out, fan_in),) descending
                spectral = float(sv[0])
                stable = fro**2 / spectral**2 if spectral > 0 else math.nan
                arrays[f"sv:{m.name}"] = sv
                arrays[f"rank:{m.name}"] = np.arange(1, len(sv) + 1, dtype=np.float64)
                sv_keys.append(m.name)
            else:
                spectral = stable = math.nan
                findings.append(Finding(
                    severity="high", title=f"non-finite weights in {m.name}",
                    detail=f"{n_bad} of {w.numel()} entries of {m.name} are NaN or infinite; "
                           "every output that depends on them is meaningless",
                    value=float(n_bad), threshold=0.0))
            arrays[f"matrix:{m.name}"] = _shown(w.numpy(), ctx.params["max_side"]).astype(np.float32)
            summaries[f"{m.name}.frobenius_norm"] = Scalar(fro, "", f"Frobenius norm of {m.name}")
            summaries[f"{m.name}.spectral_norm"] = Scalar(spectral, "", f"largest singular value of {m.name}")
            summaries[f"{m.name}.stable_rank"] = Scalar(
                stable, "", f"stable rank ||W||_F^2/||W||_2^2 of {m.name} (of at most {min(w.shape)})")
            layer |= {"frobenius_norm": fro, "spectral_norm": spectral, "stable_rank": stable,
                      "max_rank": min(w.shape), "nonfinite": n_bad}
            layers.append(layer)
            rows.append((m.name, m.kind, "x".join(map(str, m.shape)), f"{w.numel():,}",
                         _fmt(fro), _fmt(spectral), _fmt(stable) + f" / {min(w.shape)}"))

        summaries["matrices"] = Scalar(float(len(mats)), "count", "weight matrices (tied ones counted once)")
        summaries["nonfinite_weights"] = Scalar(float(nonfinite_total), "count", "NaN or infinite weight entries")
        finite_layers = [l for l in layers if l["finite"]]
        if finite_layers:
            rel = [l["stable_rank"] / l["max_rank"] for l in finite_layers]
            summaries["mean_relative_stable_rank"] = Scalar(
                float(np.mean(rel)), "fraction", "mean over layers of stable rank / full rank")

        shown = [m for m in mats][: ctx.params["max_panels"]]
        figures = [Heatmaps(
            id="matrices", title="The weight matrices, as pictures",
            caption="Each weight matrix as a heatmap (rows: output units; columns: inputs, conv kernels "
                    "unfolded); red positive, blue negative, white zero.",
            alt="Heatmaps of " + ", ".join(f"{m.name} ({m.shape[0]}x{m.matrix.shape[1]})" for m in shown)
                + ", coloured by sign and size of each weight.",
            arrays=tuple(f"matrix:{m.name}" for m in shown),
            panel_titles=tuple(f"{m.name} {m.matrix.shape[0]}x{m.matrix.shape[1]}" for m in shown),
            xlabel="input index", ylabel="output unit", colorbar="weight value", signed=True,
            sizes=tuple(tuple(m.matrix.shape) for m in shown))]
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
            figures.append(Curves(
                id="spectrum", title="Singular value spectra",
                caption="Singular values of each weight matrix, largest first (log scale): a steep drop "
                        "means a few directions carry the layer.",
                alt="Line plot of singular value against rank for " + ", ".join(sv_keys) + ".",
                x=tuple(f"rank:{n}" for n in sv_keys), y=tuple(f"sv:{n}" for n in sv_keys),
                labels=tuple(sv_keys), xlabel="rank (1 = largest)", ylabel="singular value", logy=True))
        table = Table(id="norms", title="Norms per weight matrix",
                      columns=("matrix", "module", "shape", "entries", "||W||_F", "||W||_2", "stable rank / max"),
                      rows=tuple(rows), caption="Frobenius norm, spectral norm and stable rank per matrix.")
        return Result(analysis=self.name, subject=ctx.subject.name, arrays=arrays, summaries=summaries,
                      figures=tuple(figures), tables=(table,), findings=tuple(findings),
                      data={"layers": layers, "shown": [m.name for m in shown], "total": len(mats)})


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"
