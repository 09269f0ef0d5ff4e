"""The slides' theme (talk.toml: ``[talk] theme = "light" | "dark"``, ``accent = "#RRGGBB"``): the page's colours,
reveal.js's base theme and the figures' matplotlib colours, chosen so that text keeps WCAG AA contrast
(4.5:1) against its background. An accent colour below that contrast is refused, with its ratio."""

from __future__ import annotations

import re
from dataclasses import dataclass

AA = 4.5  # WCAG 2 contrast for body text


@dataclass(frozen=True)
class Theme:
    name: str
    reveal: str  # reveal.js's theme file the page builds on
    background: str
    text: str  # headings and the main text
    body: str  # a figure slide's sentence
    muted: str  # captions, h3, the colour key
    rule: str  # table lines
    accent: str  # the kicker above a title, links
    # matplotlib: the figure's paper, its ink, and the grey of reference lines
    figure: str
    ink: str


THEMES = {
    "light": Theme("light", "white", background="#ffffff", text="#222222", body="#333333", muted="#555555",
                   rule="#cccccc", accent="#0b6e99", figure="#ffffff", ink="#222222"),
    "dark": Theme("dark", "black", background="#191919", text="#f2f2f2", body="#e0e0e0", muted="#bdbdbd",
                  rule="#555555", accent="#6cc4ee", figure="#191919", ink="#e8e8e8"),
}


def parse_colour(text: str) -> tuple[int, int, int] | None:
    """``#rgb`` or ``#rrggbb`` as (r, g, b); None for anything else."""
    m = re.fullmatch(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", text.strip())
    if not m:
        return None
    h = m[1] if len(m[1]) == 6 else "".join(c * 2 for c in m[1])
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (channels 0-255)."""
    def lin(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG 2 contrast ratio of two colours, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def accent_problem(theme: str, accent: str) -> str | None:
    """Why ``accent`` cannot be the accent of ``theme`` (None when it can)."""
    rgb = parse_colour(accent)
    if rgb is None:
        return f"must be a colour as #RRGGBB, got {accent!r}"
    t = THEMES[theme]
    ratio = contrast(rgb, parse_colour(t.background))  # type: ignore[arg-type]
    if ratio < AA:
        lighter = "a lighter" if theme == "dark" else "a darker"
        return (f"{accent} has a contrast of {ratio:.2f}:1 against the {theme} theme's background "
                f"{t.background}; text needs {AA}:1 (WCAG AA): pick {lighter} colour")
    return None


def theme(name: str = "light", accent: str = "") -> Theme:
    t = THEMES[name]
    if accent:
        from dataclasses import replace

        t = replace(t, accent=accent)
    return t


def css(t: Theme) -> str:
    """The page's colours as CSS custom properties (the slides template uses only these)."""
    return (f":root {{ --tg-background: {t.background}; --tg-text: {t.text}; --tg-body: {t.body}; "
            f"--tg-muted: {t.muted}; --tg-rule: {t.rule}; --tg-accent: {t.accent}; "
            f"--r-background-color: {t.background}; --r-main-color: {t.text}; --r-heading-color: {t.text}; "
            f"--r-link-color: {t.accent}; }}")


def matplotlib_rc(name: str) -> dict[str, str]:
    """The matplotlib colours of a theme (empty for the light one: matplotlib's own)."""
    if name == "light":
        return {}
    t = THEMES[name]
    return {"figure.facecolor": t.figure, "savefig.facecolor": t.figure, "axes.facecolor": t.figure,
            "axes.edgecolor": t.ink, "axes.labelcolor": t.ink, "text.color": t.ink, "xtick.color": t.ink,
            "ytick.color": t.ink, "grid.color": "#5a5a5a", "legend.labelcolor": t.ink,
            "legend.facecolor": t.figure, "legend.edgecolor": "#5a5a5a", "patch.edgecolor": t.ink}
