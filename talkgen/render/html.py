"""Figures that are HTML, not images (no matplotlib needed to render them)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from talkgen.specs import ColouredText


def coloured_text_html(spec: ColouredText, arrays: Mapping[str, np.ndarray]) -> str:
    """One line of HTML: each character escaped, in a span whose background shows its value
    (red positive, blue negative for signed values; white to green for magnitudes)."""
    from html import escape

    values = np.asarray(arrays[spec.values], dtype=np.float64)
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    scale = scale or 1.0
    # a short context (a few lines before one prediction) is set large: the room reads it from the back
    short = spec.text.count("\n") < 8 and len(spec.text) <= 400
    parts = [f'<div class="ctext{" large" if short else ""}" role="img" aria-label="', escape(spec.alt), '">']
    run: list[str] = []
    shade = ""
    for ch, v in zip(spec.text, values):
        # opacity in steps of 0.05 (finer than the eye tells apart): neighbours of one shade share a span
        a = 0.0 if not np.isfinite(v) else round(min(1.0, abs(v) / scale) * 20) / 20
        rgb = ("214,39,40" if v >= 0 else "31,119,180") if spec.signed else "44,160,44"
        this = f"rgba({rgb},{a:.2f})" if a > 0 else ""
        if this != shade and run:
            parts.append(_span(shade, run))
            run = []
        shade = this
        run.append("&#10;" if ch == "\n" else escape(ch))
    if run:
        parts.append(_span(shade, run))
    parts.append("</div>")
    parts.append(_key(spec.signed, scale))
    return "".join(parts)


def _key(signed: bool, scale: float) -> str:
    """The colour key under the text: what a shade means, and the value the darkest shade stands for."""
    def swatch(rgb: str, a: float, label: str) -> str:
        return f'<span class="swatch" style="background:rgba({rgb},{a:.2f})">{label}</span>'

    top = f"{scale:.3g}"
    if signed:
        cells = [swatch("31,119,180", 1.0, f"&minus;{top}"), swatch("31,119,180", 0.5, ""), swatch("255,255,255", 0, "0"),
                 swatch("214,39,40", 0.5, ""), swatch("214,39,40", 1.0, f"+{top}")]
        words = "blue negative, red positive; the darker, the larger"
    else:
        cells = [swatch("44,160,44", 0.0, "0"), swatch("44,160,44", 0.5, ""), swatch("44,160,44", 1.0, top)]
        words = "the darker, the larger"
    return f'<div class="ckey">Colour key ({words}): {"".join(cells)}</div>'


def _span(shade: str, chars: list[str]) -> str:
    return f'<span style="background:{shade}">{"".join(chars)}</span>' if shade else "".join(chars)
