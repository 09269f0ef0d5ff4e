"""Declarative figure specs: an analysis says *what* to show from its arrays; render/ draws it.

Every spec names arrays of its Result by key, so a spec is plain JSON and a Result with
its specs round-trips through npz + json. Each kind is drawn once, in the house style,
by ``talkgen.render.figures``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class FigureSpec:
    """Fields every figure has. ``caption`` is one sentence for the report; ``alt`` the alt text."""

    id: str
    title: str
    caption: str
    alt: str
    kind: ClassVar[str] = ""

    def array_keys(self) -> tuple[str, ...]:
        return ()

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


@dataclass(frozen=True, kw_only=True)
class Heatmaps(FigureSpec):
    """A grid of matrices. ``signed``: diverging map centred on zero, else viridis."""

    arrays: tuple[str, ...]
    panel_titles: tuple[str, ...]
    xlabel: str
    ylabel: str
    colorbar: str
    signed: bool = True
    # Full (rows, cols) of each matrix when the array is a strided subsample: axes keep true indices.
    sizes: tuple[tuple[int, int], ...] = ()
    # Names for the rows (columns) of every panel with that many rows (columns), e.g. layers: drawn as ticks.
    row_labels: tuple[str, ...] = ()
    col_labels: tuple[str, ...] = ()
    kind: ClassVar[str] = "heatmaps"

    def array_keys(self) -> tuple[str, ...]:
        return self.arrays


@dataclass(frozen=True, kw_only=True)
class ImageGrid(FigureSpec):
    """Small images from one array shaped (N, H, W) or (N, 3, H, W), shared colour scale."""

    array: str
    colorbar: str
    signed: bool = True
    panel_titles: tuple[str, ...] = ()
    max_images: int = 64
    # Optional: a fixed number of columns, and a label for each row (drawn left of its first image).
    columns: int = 0
    row_labels: tuple[str, ...] = ()
    kind: ClassVar[str] = "image_grid"

    def array_keys(self) -> tuple[str, ...]:
        return (self.array,)


@dataclass(frozen=True, kw_only=True)
class Curves(FigureSpec):
    """Lines y_i(x_i) on one axis. ``x`` and ``y`` are parallel tuples of array keys."""

    x: tuple[str, ...]
    y: tuple[str, ...]
    labels: tuple[str, ...]
    xlabel: str
    ylabel: str
    logx: bool = False
    logy: bool = False
    markers: bool = False
    # Optional: the panel (subplot) of each curve, and each panel's title; one axis when empty.
    panels: tuple[int, ...] = ()
    panel_titles: tuple[str, ...] = ()
    # Optional: matplotlib line styles per curve ("-", "--", ":"), e.g. a fit drawn dashed.
    styles: tuple[str, ...] = ()
    # Optional: a y-axis label per panel (``ylabel`` is used where this is empty).
    panel_ylabels: tuple[str, ...] = ()
    # Optional: names for x = 0, 1, 2, ... (e.g. layers), drawn as tick labels.
    xticks: tuple[str, ...] = ()
    kind: ClassVar[str] = "curves"

    def array_keys(self) -> tuple[str, ...]:
        return self.x + self.y


@dataclass(frozen=True, kw_only=True)
class Bars(FigureSpec):
    """Grouped bars: ``values`` arrays (one per series) over ``categories``."""

    categories: tuple[str, ...]
    values: tuple[str, ...]
    series: tuple[str, ...]
    ylabel: str
    logy: bool = False
    kind: ClassVar[str] = "bars"

    def array_keys(self) -> tuple[str, ...]:
        return self.values


@dataclass(frozen=True, kw_only=True)
class Scatter(FigureSpec):
    """Panels of 2-D points coloured by an integer label array (one x, y, label triple per panel)."""

    x: tuple[str, ...]
    y: tuple[str, ...]
    labels: tuple[str, ...]
    panel_titles: tuple[str, ...]
    label_names: tuple[str, ...]
    xlabel: str
    ylabel: str
    # Axis values that mean something (PCA, fractions) keep their ticks; t-SNE's do not.
    ticks: bool = False
    limits: tuple[float, float] | None = None  # the same (low, high) on both axes, when given
    legend_title: str = "class"
    diagonal: bool = False  # draw y = x (predicted against measured)
    kind: ClassVar[str] = "scatter"

    def array_keys(self) -> tuple[str, ...]:
        return self.x + self.y + self.labels


@dataclass(frozen=True, kw_only=True)
class Trajectories(FigureSpec):
    """Panels of paths through a plane, each point coloured by a shared value (e.g. training step).

    ``x[i]``, ``y[i]`` are one path (one layer) drawn in panel ``panels[i]``; ``colour`` is the
    array of values along every path (same length), drawn on a log scale when ``log_colour``.
    """

    x: tuple[str, ...]
    y: tuple[str, ...]
    labels: tuple[str, ...]
    panels: tuple[int, ...]
    panel_titles: tuple[str, ...]
    colour: str
    colour_label: str
    xlabel: str
    ylabel: str
    log_colour: bool = True
    kind: ClassVar[str] = "trajectories"

    def array_keys(self) -> tuple[str, ...]:
        return self.x + self.y + (self.colour,)


@dataclass(frozen=True, kw_only=True)
class Surface(FigureSpec):
    """A function on a 2-D grid, drawn as filled contours beside a 3-D surface.

    ``z[i, j]`` is the value at (``x[j]``, ``y[i]``). With ``log``, contour levels are spaced
    geometrically and the surface shows log10(z) (z must be positive). ``mark`` is a point
    to label, e.g. the trained weights at the origin.
    """

    x: str
    y: str
    z: str
    xlabel: str
    ylabel: str
    zlabel: str
    log: bool = True
    mark: tuple[float, float] | None = None
    mark_label: str = ""
    kind: ClassVar[str] = "surface"

    def array_keys(self) -> tuple[str, ...]:
        return (self.x, self.y, self.z)


@dataclass(frozen=True, kw_only=True)
class ColouredText(FigureSpec):
    """Text with each character's background coloured by a value (Karpathy's cell visualisation).

    Rendered as escaped HTML spans, not as an image. ``values`` has one entry per character.
    """

    text: str
    values: str
    signed: bool = True
    kind: ClassVar[str] = "coloured_text"

    def array_keys(self) -> tuple[str, ...]:
        return (self.values,)


@dataclass(frozen=True, kw_only=True)
class Table:
    """A table the deck shows as HTML (not an image). Cells are plain text, escaped on output."""

    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    report_only: bool = False  # too long for a slide: shown in the report (and notebook) only

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "columns": list(self.columns),
                "rows": [list(r) for r in self.rows], "caption": self.caption, "report_only": self.report_only}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Table":
        return cls(id=d["id"], title=d["title"], columns=tuple(d["columns"]),
                   rows=tuple(tuple(r) for r in d["rows"]), caption=d.get("caption", ""),
                   report_only=d.get("report_only", False))


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


SPEC_KINDS: dict[str, type[FigureSpec]] = {
    cls.kind: cls for cls in (Heatmaps, ImageGrid, Curves, Bars, Scatter, ColouredText, Trajectories, Surface)
}


def spec_from_json(d: dict[str, Any]) -> FigureSpec:
    d = dict(d)
    cls = SPEC_KINDS[d.pop("kind")]
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            kwargs[f.name] = _tuples(v)
    return cls(**kwargs)


__all__ = ["FigureSpec", "Heatmaps", "ImageGrid", "Curves", "Bars", "Scatter", "ColouredText", "Trajectories", "Surface", "Table", "spec_from_json"]
