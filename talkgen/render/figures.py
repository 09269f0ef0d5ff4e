"""Draw each kind of figure spec once, on ``matplotlib.figure.Figure`` (no pyplot state)."""

from __future__ import annotations

import io
import math
from typing import Callable, Mapping

import matplotlib
import matplotlib.lines
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from talkgen.render import style
from talkgen.render.legibility import legend_covers, mark_counting
from talkgen.specs import Bars, Curves, FigureSpec, Heatmaps, ImageGrid, Scatter, Surface, Trajectories

# No matplotlib.use(): a Figure made directly prints through the Agg canvas savefig picks for PNG, and a
# user's notebook keeps its own backend.


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def _panel_title(text: str, cols: int) -> str:
    """A panel's title broken onto lines that fit the panel's width (names such as
    ``blocks.0.attn.v.weight 64x64`` run into the next panel otherwise)."""
    import textwrap

    width = max(14, 96 // max(cols, 1))
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) if len(text) > width else text


def _few_ticks(ax, cols: int) -> None:
    """Narrow panels get fewer x ticks, so that labels such as -0.025 do not run into each other."""
    if cols >= 3 and ax.xaxis.get_scale() == "linear":
        ax.xaxis.set_major_locator(MaxNLocator(nbins=max(2, 8 // cols)))


def _log_ticks(axis, cols: int = 1) -> None:
    """A log axis labels its decades only; spanning less than one decade, it labels a few round values
    (matplotlib would label every minor tick there, and in a narrow panel they collide)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo < 10:  # evenly spaced on the log scale, rounded to two figures
        inner = np.geomspace(lo, hi, (3 if cols < 3 else 2 if cols == 3 else 1) + 2)[1:-1]
        axis.set_major_locator(FixedLocator([float(f"{v:.2g}") for v in inner]))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _symmetric_norm(values: np.ndarray) -> TwoSlopeNorm:
    finite = values[np.isfinite(values)]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    lim = lim or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)


def _heatmaps(spec: Heatmaps, arrays: Mapping[str, np.ndarray]) -> Figure:
    rows, cols = _grid(len(spec.arrays))
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    sizes = spec.sizes or tuple(np.shape(arrays[k])[:2] for k in spec.arrays)
    for ax, key, title, (n_rows, n_cols) in zip(axes.flat, spec.arrays, spec.panel_titles, sizes):
        a = np.asarray(arrays[key], dtype=np.float64)
        extent = (-0.5, n_cols - 0.5, n_rows - 0.5, -0.5)  # true indices even when subsampled
        if spec.signed:
            im = ax.imshow(a, cmap=style.DIVERGING, norm=_symmetric_norm(a), aspect="auto",
                           interpolation="nearest", extent=extent)
        else:
            im = ax.imshow(a, cmap=style.SEQUENTIAL, aspect="auto", interpolation="nearest", extent=extent)
        ax.set_title(_panel_title(title, cols), pad=9)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        # rows and columns are indices or named things, never fractions
        for axis, n, labels in ((ax.yaxis, n_rows, spec.row_labels), (ax.xaxis, n_cols, spec.col_labels)):
            if labels and len(labels) == n:
                axis.set_ticks(range(n), labels)
            elif n == 1:
                axis.set_ticks([])
            else:  # as many as the axis has room for at its font size (matplotlib measures at draw time)
                axis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
                mark_counting(axis)
        fig.colorbar(im, ax=ax, label=spec.colorbar, shrink=0.85)
    for ax in list(axes.flat)[len(spec.arrays):]:
        ax.set_axis_off()
    return fig


def _image_grid(spec: ImageGrid, arrays: Mapping[str, np.ndarray]) -> Figure:
    a = np.asarray(arrays[spec.array], dtype=np.float64)[: spec.max_images]
    n = a.shape[0]
    if spec.columns:
        rows, cols = math.ceil(n / spec.columns), spec.columns
    else:
        rows, cols = _grid(n, max_cols=min(8, max(4, math.ceil(math.sqrt(n * 2)))))
    # A grid of bare images needs no layout engine (constrained layout costs most of the drawing time
    # of a grid of 50 panels): margins for the row labels, the panel titles, the suptitle and the colour bar.
    colour = a.ndim == 4
    labels = 0.0075 * max(len(t) for t in spec.row_labels) if spec.row_labels else 0.0
    bar = 0.0 if colour else 0.1
    titled = bool(spec.panel_titles)
    top, bottom, wspace, hspace = (0.9 if titled else 0.92), 0.02, (0.35 if titled else 0.08), (0.3 if titled else 0.08)
    # panels as wide as the images are for the height a row gets, the whole block centred
    width, height = style.SLIDE_FIGSIZE
    img_h, img_w = (a.shape[-2], a.shape[-1])
    cell_h = (top - bottom) * height / (rows + (rows - 1) * hspace)
    grid_w = min(0.96 - labels - bar, cols * cell_h * img_w / img_h * (1 + wspace) / width)
    left = (1 - (labels + grid_w + bar)) / 2 + labels
    right = left + grid_w
    fig = Figure(figsize=style.SLIDE_FIGSIZE)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": left, "right": right, "top": top, "bottom": bottom, "wspace": wspace, "hspace": hspace})
    # one scale for every panel, so the one colour bar reads each of them
    if colour:
        norm = None
    elif spec.signed:
        norm = _symmetric_norm(a)
    else:
        from matplotlib.colors import Normalize

        finite = a[np.isfinite(a)]
        norm = Normalize(float(finite.min()), float(finite.max())) if finite.size else Normalize(0.0, 1.0)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        if colour:  # (3, H, W) -> (H, W, 3), each image stretched to [0, 1]
            img = np.moveaxis(a[i], 0, -1)
            lo, hi = img.min(), img.max()
            ax.imshow((img - lo) / (hi - lo + 1e-12), interpolation="nearest")
        else:
            im = ax.imshow(a[i], cmap=style.DIVERGING if spec.signed else style.SEQUENTIAL,
                           norm=norm, interpolation="nearest")
        if spec.panel_titles and i < len(spec.panel_titles) and spec.panel_titles[i]:
            ax.set_title(spec.panel_titles[i], fontsize=style.SMALL)
        if spec.row_labels and i % cols == 0 and i // cols < len(spec.row_labels):
            ax.set_ylabel(spec.row_labels[i // cols], fontsize=style.SMALL, rotation=0, ha="right", va="center")
    if im is not None:
        fig.colorbar(im, cax=fig.add_axes((right + 0.015, 0.12, 0.018, 0.72)), label=spec.colorbar)
    return fig


def _curves(spec: Curves, arrays: Mapping[str, np.ndarray]) -> Figure:
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    n_panels = max(spec.panels) + 1 if spec.panels else 1
    rows, cols = _grid(n_panels)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    labels_in: dict[int, list[str]] = {}  # each panel's series, in drawing order (the n-th gets colour n)
    for i, (xk, yk, label) in enumerate(zip(spec.x, spec.y, spec.labels)):
        panel = spec.panels[i] if spec.panels else 0
        ax = axes[panel]
        c = len(labels_in.setdefault(panel, []))
        # past the palette's 8 colours, the line style tells the series apart
        ls = spec.styles[i] if spec.styles else ("-", "--", ":", "-.")[(c // len(style.PALETTE)) % 4]
        ax.plot(arrays[xk], arrays[yk], label=label, linestyle=ls,
                color=style.PALETTE[c % len(style.PALETTE)],
                marker="o" if spec.markers else None, markersize=3, linewidth=1.8)
        labels_in[panel].append(label)
    # the same series in every panel: one legend for the figure, not one crowding each panel
    shared = n_panels > 1 and len({tuple(v) for v in labels_in.values()}) == 1 and len(labels_in) == n_panels
    for p, ax in enumerate(axes):
        if p >= n_panels:
            ax.set_axis_off()
            continue
        if spec.logx:
            ax.set_xscale("log")
            _log_ticks(ax.xaxis, cols)
        if spec.logy:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, cols)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.panel_ylabels[p] if spec.panel_ylabels else spec.ylabel)
        if spec.xticks:
            ax.set_xticks(range(len(spec.xticks)), spec.xticks, rotation=30, ha="right", fontsize=style.SMALL)
        else:
            _few_ticks(ax, cols)
        ax.grid(True, alpha=0.3)
        if spec.panel_titles:
            ax.set_title(_panel_title(spec.panel_titles[p], cols), fontsize=style.SMALL)
        if len(labels_in.get(p, ())) > 1 and not shared:
            ax.legend(loc="best", fontsize=style.SMALL)
    if shared and len(labels_in[0]) > 1:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 4), fontsize=style.SMALL)
    return fig


def move_covering_legends(fig: Figure, theme: str = "light") -> bool:
    """Moves beside its axes each legend that matplotlib placed "best" and that still covers data in the
    figure's last draw; True when one moved (the figure must be drawn again). "best" weighs each place by
    the line vertices and segments it hides and takes the least bad, which on a crowded chart (measured
    timings crossing one another) is still on a line; the check reads the layout that was drawn, since
    constrained layout moves the axes between draws."""
    from talkgen.render.theme import matplotlib_rc

    renderer = fig.canvas.get_renderer()
    moved = False
    with matplotlib.rc_context(style.RC | matplotlib_rc(theme)):  # a new legend takes its colours from rc
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None or legend._loc != 0 or not legend_covers(legend, ax, renderer):
                continue
            fontsize = legend.get_texts()[0].get_fontsize() if legend.get_texts() else style.SMALL
            legend.remove()
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=fontsize)
            moved = True
    return moved


def _bars(spec: Bars, arrays: Mapping[str, np.ndarray]) -> Figure:
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    ax = fig.subplots()
    n_series = len(spec.values)
    width = 0.8 / n_series
    x = np.arange(len(spec.categories))
    # names that would not fit side by side under the bars are written across, one per row
    across = sum(len(c) + 3 for c in spec.categories) > 90 or len(spec.categories) > 16
    for i, (key, label) in enumerate(zip(spec.values, spec.series)):
        at = x + (i - (n_series - 1) / 2) * width
        colour = style.PALETTE[i % len(style.PALETTE)]
        if across:
            ax.barh(at, arrays[key], width, label=label, color=colour)
        else:
            ax.bar(at, arrays[key], width, label=label, color=colour)
    if across:
        ax.set_yticks(x, spec.categories)
        ax.invert_yaxis()  # the first category on top, as it is read
        ax.set_xlabel(spec.ylabel)
        if spec.logy:
            ax.set_xscale("log")
    else:
        ax.set_xticks(x, spec.categories)
        ax.set_ylabel(spec.ylabel)
        if spec.logy:
            ax.set_yscale("log")
    if n_series > 1:  # under the chart, not on the bars
        handles, names = ax.get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncol=min(n_series, 4), fontsize=style.SMALL)
    return fig


def _scatter(spec: Scatter, arrays: Mapping[str, np.ndarray]) -> Figure:
    rows, cols = _grid(len(spec.x))
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = matplotlib.colormaps["tab10" if len(spec.label_names) <= 10 else "tab20"]
    for ax, xk, yk, lk, title in zip(axes.flat, spec.x, spec.y, spec.labels, spec.panel_titles):
        lab = np.asarray(arrays[lk]).astype(int)
        ax.scatter(arrays[xk], arrays[yk], c=[cmap(i % cmap.N) for i in lab], s=6, alpha=0.8, linewidths=0)
        ax.set_title(_panel_title(title, cols), fontsize=style.SMALL)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        if spec.limits is not None:
            ax.set_xlim(*spec.limits)
            ax.set_ylim(*spec.limits)
            if spec.diagonal:
                ax.plot(spec.limits, spec.limits, color="#999999", linewidth=0.8, linestyle=":", zorder=0)
        if not spec.ticks:
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.grid(True, alpha=0.3)
            _few_ticks(ax, cols)
    for ax in list(axes.flat)[len(spec.x):]:
        ax.set_axis_off()
    if len(spec.label_names) > 1:
        handles = [matplotlib.lines.Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N), label=name)
                   for i, name in enumerate(spec.label_names[:20])]
        fig.legend(handles=handles, loc="outside right center", fontsize=style.SMALL, title=spec.legend_title)
    return fig


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _trajectories(spec: Trajectories, arrays: Mapping[str, np.ndarray]) -> Figure:
    from matplotlib.colors import LogNorm, Normalize

    n_panels = max(spec.panels) + 1
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    axes = list(fig.subplots(1, n_panels, squeeze=False).flat)
    c = np.asarray(arrays[spec.colour], dtype=np.float64)
    norm = LogNorm(max(c[c > 0].min(), 1e-9), c.max()) if spec.log_colour and (c > 0).any() else Normalize(c.min(), c.max())
    # each path (layer) has its own marker, named once in a legend: labels written at the paths' ends
    # land on each other where the paths end close together
    names = list(dict.fromkeys(spec.labels))
    marker = {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(names)}
    sc = None
    for xk, yk, label, p in zip(spec.x, spec.y, spec.labels, spec.panels):
        ax = axes[p]
        x, y = arrays[xk], arrays[yk]
        ax.plot(x, y, color="#999999", linewidth=0.8, zorder=1)
        sc = ax.scatter(x, y, c=np.maximum(c, norm.vmin), cmap=style.SEQUENTIAL, norm=norm, s=18,
                        marker=marker[label], zorder=2)
    for p, ax in enumerate(axes):
        ax.set_title(_panel_title(spec.panel_titles[p], n_panels), fontsize=style.SMALL)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        ax.grid(True, alpha=0.3)
        _few_ticks(ax, n_panels)
    if sc is not None:
        fig.colorbar(sc, ax=axes, label=spec.colour_label, shrink=0.85)
    if len(names) > 1:
        handles = [matplotlib.lines.Line2D([], [], marker=marker[n], linestyle="", color="#555555", label=n)
                   for n in names]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(names), 8), fontsize=style.SMALL)
    return fig


def _surface(spec: Surface, arrays: Mapping[str, np.ndarray]) -> Figure:
    from matplotlib.colors import LogNorm, Normalize

    x = np.asarray(arrays[spec.x], dtype=np.float64)
    y = np.asarray(arrays[spec.y], dtype=np.float64)
    z = np.asarray(arrays[spec.z], dtype=np.float64)
    finite = z[np.isfinite(z)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    log = spec.log and lo > 0 and hi > lo
    if hi <= lo:
        hi = lo + 1.0
    levels = np.geomspace(lo, hi, 16) if log else np.linspace(lo, hi, 16)
    norm = LogNorm(lo, hi) if log else Normalize(lo, hi)
    zc = np.clip(np.where(np.isfinite(z), z, hi), lo, hi)
    fig = Figure(figsize=style.SLIDE_FIGSIZE, layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    cs = ax.contourf(x, y, zc, levels=levels, cmap=style.SEQUENTIAL, norm=norm)
    ax.contour(x, y, zc, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
    if spec.mark is not None:
        ax.plot(*spec.mark, marker="*", color="#d62728", markersize=12, linestyle="", label=spec.mark_label)
        if spec.mark_label:
            ax.legend(loc="lower left", fontsize=style.SMALL, framealpha=0.8, frameon=True)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    ax.set_aspect("equal")
    # the bar's ticks at round values, not at the 16 contour levels (which %.3g can print twice)
    from matplotlib.ticker import LogLocator

    fig.colorbar(cs, ax=ax, label=spec.zlabel, shrink=0.85,
                 ticks=LogLocator(subs=(1.0, 2.0, 5.0)) if log else MaxNLocator(nbins=6))
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    xx, yy = np.meshgrid(x, y)
    shown = np.log10(zc) if log else zc
    ax3.plot_surface(xx, yy, shown, cmap=style.SEQUENTIAL, norm=Normalize(shown.min(), shown.max()),
                     linewidth=0, antialiased=True, rcount=min(len(y), 64), ccount=min(len(x), 64))
    ax3.set_xlabel(spec.xlabel, fontsize=style.SMALL, labelpad=10)
    ax3.set_ylabel(spec.ylabel, fontsize=style.SMALL, labelpad=10)
    ax3.set_title(f"log10 {spec.zlabel}" if log else spec.zlabel, fontsize=style.SMALL)
    ax3.view_init(elev=35, azim=-60)
    return fig


DRAWERS: dict[str, Callable[..., Figure]] = {
    Surface.kind: _surface,
    Heatmaps.kind: _heatmaps,
    ImageGrid.kind: _image_grid,
    Curves.kind: _curves,
    Bars.kind: _bars,
    Scatter.kind: _scatter,
    Trajectories.kind: _trajectories,
}


def draw(spec: FigureSpec, arrays: Mapping[str, np.ndarray], theme: str = "light") -> Figure:
    """The matplotlib Figure for ``spec``, in the house style, in the colours of the slides' ``theme``."""
    from talkgen.render.theme import matplotlib_rc

    with matplotlib.rc_context(style.RC | matplotlib_rc(theme)):
        fig = DRAWERS[spec.kind](spec, arrays)
        fig.suptitle(spec.title, fontsize=13, fontweight="bold")
    return fig


def render(spec: FigureSpec, arrays: Mapping[str, np.ndarray], theme: str = "light") -> tuple[Figure, bytes, list[str]]:
    """``spec`` drawn (``draw``), as PNG, with what ``render.legibility`` found wrong with the very picture
    saved; a legend that landed on the data is moved beside its axes and the figure drawn again."""
    from talkgen.render import legibility

    fig = draw(spec, arrays, theme)
    data, found = legibility.png_and_problems(fig)
    if found and move_covering_legends(fig, theme):
        data, found = legibility.png_and_problems(fig)
    return fig, data, found


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context(style.RC):
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
