"""The house style: one place for sizes, fonts and colour maps (STYLE.md: viridis for
magnitudes, a diverging map centred on zero for signed values)."""

from __future__ import annotations

STYLE_VERSION = 7  # 4: heatmap axes get integer or named ticks; 5: image grids laid out by hand;
# 6: no text under SMALL, ticks spaced by the room they have, crowded bars drawn across, one scale per image grid
DPI = 110
SLIDE_FIGSIZE = (9.6, 5.0)   # inches: fills a 960x700 reveal.js slide under a title
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
SMALL = 10.5  # points: the smallest text drawn (legends, panel titles); 14 px on a 1280x720 slide
PALETTE = ("#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.frameon": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
