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
    parts = ['<div class="ctext" role="img" aria-label="', escape(spec.alt), '">']
    for ch, v in zip(spec.text, values):
        a = 0.0 if not np.isfinite(v) else min(1.0, abs(v) / scale)
        rgb = ("214,39,40" if v >= 0 else "31,119,180") if spec.signed else "44,160,44"
        shown = "&#10;" if ch == "\n" else escape(ch)
        parts.append(f'<span style="background:rgba({rgb},{a:.2f})">{shown}</span>')
    parts.append("</div>")
    return "".join(parts)
