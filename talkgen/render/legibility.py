"""Can a room read this figure? Checks a drawn ``Figure`` the way a speaker's audience meets it on a
1280x720 slide: no two pieces of text on top of each other, text large enough, a colour scale beside
every image of values, whole-number or named ticks where the axis counts things.

The checks measure the figure as Agg lays it out (the same layout ``to_png`` saves), so they hold for
the PNG the slides and the report show. They are cheap after a draw: ``problems(fig)`` draws once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from talkgen.render import style

# The smallest fraction of its pixel size a figure is shown at on a 1280x720 slide; tests/test_browser.py
# measures every figure of the built-in talk against it in Chromium (most are shown at 0.96: the slide is
# 1280x720 with a 4% margin). Text sizes below are what the audience sees: points * DPI / 72 * scale.
SLIDE_SCALE = 0.9
MIN_TITLE_PX = 16.0
MIN_TEXT_PX = 14.0
_OVERLAP_PX = 1.5  # anti-aliased edges may touch; more than this is text on text


@dataclass(frozen=True)
class _Box:
    """A text's rectangle in display pixels, possibly rotated: centre, half sizes along its own axes, and
    ``extent`` (x0, y0, x1, y1), the upright box around it that matplotlib reports."""

    extent: tuple[float, float, float, float]
    cx: float
    cy: float
    hw: float
    hh: float
    angle: float  # radians

    def axes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (c, s), (-s, c)

    @cached_property  # read for every pair of texts
    def corners(self) -> list[tuple[float, float]]:
        (ux, uy), (vx, vy) = self.axes()
        return [(self.cx + a * self.hw * ux + b * self.hh * vx, self.cy + a * self.hw * uy + b * self.hh * vy)
                for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]


def _box(text: Text, renderer) -> _Box | None:
    ext = text.get_window_extent(renderer)
    if ext.width <= 0 or ext.height <= 0:
        return None
    angle = text.get_rotation()
    if angle % 180:  # the text's own (upright) size, in display pixels
        text.set_rotation(0)
        try:
            layout, _, _ = text._get_layout(renderer)
        finally:
            text.set_rotation(angle)
        w, h = layout.width, layout.height
    else:
        w, h = ext.width, ext.height
    return _Box((ext.x0, ext.y0, ext.x1, ext.y1), ext.x0 + ext.width / 2, ext.y0 + ext.height / 2, w / 2, h / 2,
                math.radians(angle))


def _overlap(a: _Box, b: _Box) -> float:
    """How far the two rectangles interpenetrate along the axis where they overlap least (0 if apart)."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.extent, b.extent
    if ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0:  # their upright boxes are apart: so are they
        return 0.0
    depth = math.inf
    ca, cb = a.corners, b.corners
    for ux, uy in (*a.axes(), *b.axes()):
        pa = [x * ux + y * uy for x, y in ca]
        pb = [x * ux + y * uy for x, y in cb]
        d = min(max(pa), max(pb)) - max(min(pa), min(pb))
        if d <= 0:
            return 0.0
        depth = min(depth, d)
    return depth


def _drawn_texts(fig: Figure, canvas: FigureCanvasAgg) -> list[Text]:
    """Draw ``fig`` and return every piece of text that was drawn, where it was drawn: ticks outside the
    view and the axes turned off are not drawn, so not counted; a 3-D axis's labels are measured where
    that draw put them. (Text.draw is wrapped for the draw: not for use from several threads at once.)"""
    import matplotlib

    drawn: list[Text] = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and renderer is not None:
            drawn.append(self)

    Text.draw = record
    try:
        with matplotlib.rc_context(style.RC):  # as to_png draws it
            canvas.draw()
    finally:
        Text.draw = original
    seen: set[int] = set()
    return [t for t in drawn if not (id(t) in seen or seen.add(id(t)))]


def _is_title(t: Text, fig: Figure) -> bool:
    """The figure's own title; a panel's title is read as a label (it names one of several panels)."""
    return t is getattr(fig, "_suptitle", None)


def problems(fig: Figure, *, scale: float = SLIDE_SCALE) -> list[str]:
    """What would stop a room reading ``fig``: one line per problem, empty when it reads well."""
    canvas = FigureCanvasAgg(fig)
    return _problems(fig, canvas, _drawn_texts(fig, canvas), scale)


def png_and_problems(fig: Figure, *, scale: float = SLIDE_SCALE) -> tuple[bytes, list[str]]:
    """``fig`` as PNG (the bytes ``render.figures.to_png`` writes) and its ``problems``, from one draw: the
    checks read the layout of the very picture that is saved."""
    import io

    import matplotlib.image

    canvas = FigureCanvasAgg(fig)
    texts = _drawn_texts(fig, canvas)
    buf = io.BytesIO()  # what savefig's print_png does after its draw (same dpi, facecolor "auto")
    matplotlib.image.imsave(buf, canvas.buffer_rgba(), format="png", origin="upper", dpi=fig.dpi,
                            metadata={"Software": None})
    return buf.getvalue(), _problems(fig, canvas, texts, scale)


def _problems(fig: Figure, canvas: FigureCanvasAgg, texts: list[Text], scale: float) -> list[str]:
    renderer = canvas.get_renderer()
    drawn = {id(t) for t in texts}
    found: list[str] = []
    px = style.DPI / 72 * scale
    for t in texts:
        size = t.get_fontsize() * px
        floor = MIN_TITLE_PX if _is_title(t, fig) else MIN_TEXT_PX
        if size < floor - 0.05:
            found.append(f"text {t.get_text()!r} is {size:.1f} px on the slide (at least {floor:.0f})")
    boxes = [(t, _box(t, renderer)) for t in texts]
    boxes = [(t, b) for t, b in boxes if b is not None]
    width, height = canvas.get_width_height()
    for t, b in boxes:  # the upright box around the text is the reach of its corners
        x0, y0, x1, y1 = b.extent
        if x0 < -_OVERLAP_PX or y0 < -_OVERLAP_PX or x1 > width + _OVERLAP_PX or y1 > height + _OVERLAP_PX:
            found.append(f"text {t.get_text()!r} runs off the figure")
    for i in range(len(boxes)):
        ti, bi = boxes[i]
        for j in range(i + 1, len(boxes)):
            tj, bj = boxes[j]
            if _overlap(bi, bj) > _OVERLAP_PX:
                found.append(f"texts {ti.get_text()!r} and {tj.get_text()!r} overlap")
    found += _legends_on_data(fig, renderer)
    keyed = {id(im.norm) for ax in fig.axes for im in ax.get_images() if im.colorbar is not None}
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None:
            continue
        for im in ax.get_images():
            if im.colorbar is None and id(im.norm) not in keyed and not _is_picture(im):
                found.append(f"image in {ax.get_title()!r} has no colour bar")
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            shown = [t.get_text() for t in axis.get_ticklabels() if id(t) in drawn and t.get_text()]
            if len(shown) != len(set(shown)):
                found.append(f"{name} axis of {ax.get_title()!r} repeats a tick label: {shown}")
            if getattr(axis, "_talkgen_counts", False):
                for tick in axis.get_ticklabels():
                    text = tick.get_text().replace("\u2212", "-")
                    if text and _is_fraction(text):
                        found.append(f"{name} axis of {ax.get_title()!r} counts things but has tick {text!r}")
    return found


def _data_points(ax) -> np.ndarray:
    """Where an axes' data is drawn, in display pixels: its lines (each segment walked in 12 steps) and its
    scatter points, (N, 2)."""
    from matplotlib.collections import PathCollection

    pts = []
    for line in ax.get_lines():
        xy = ax.transData.transform(np.asarray(line.get_xydata(), dtype=float))
        xy = xy[np.isfinite(xy).all(1)]
        if len(xy) > 1:
            t = np.linspace(0, 1, 12)[:, None, None]
            xy = (xy[:-1][None] * (1 - t) + xy[1:][None] * t).reshape(-1, 2)
        pts.append(xy)
    for coll in ax.collections:
        if isinstance(coll, PathCollection):
            pts.append(coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float)))
    pts = [p for p in pts if len(p)]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _bars(ax) -> list[tuple[float, float, float, float]]:
    """An axes' bars as display rectangles (x0, y0, x1, y1)."""
    from matplotlib.patches import Rectangle

    out = []
    for patch in ax.patches:
        if isinstance(patch, Rectangle) and patch.get_width() and patch.get_height():
            (x0, y0), (x1, y1) = patch.get_window_extent().get_points()
            out.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return out


def legend_covers(legend, ax, renderer) -> bool:
    """Whether ``legend`` (already laid out by ``renderer``) hides part of ``ax``'s data: a line point or a
    scatter point inside its box, or a bar under it."""
    box = legend.get_window_extent(renderer)
    pts = _data_points(ax)
    inside = ((pts[:, 0] > box.x0 + _OVERLAP_PX) & (pts[:, 0] < box.x1 - _OVERLAP_PX)
              & (pts[:, 1] > box.y0 + _OVERLAP_PX) & (pts[:, 1] < box.y1 - _OVERLAP_PX))
    return bool(inside.any()) or any(
        min(x1, box.x1) - max(x0, box.x0) > _OVERLAP_PX and min(y1, box.y1) - max(y0, box.y0) > _OVERLAP_PX
        for x0, y0, x1, y1 in _bars(ax))


def _legends_on_data(fig: Figure, renderer) -> list[str]:
    """A legend drawn over the data it explains hides part of it: each legend against every axes it
    overlaps."""
    legends = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    out = []
    for legend in legends:
        if legend is None or not legend.get_visible():
            continue
        for ax in fig.axes:
            if getattr(ax, "_colorbar", None) is None and legend_covers(legend, ax, renderer):
                out.append(f"the legend covers data of {ax.get_title() or 'its axes'!r}")
                break
    return out


def _is_picture(im: AxesImage) -> bool:
    """An image that shows pixels (an input digit, RGB), not values on a colour scale."""
    a = np.asarray(im.get_array())
    return a.ndim == 3 or bool(getattr(im, "_talkgen_picture", False))


def _is_fraction(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return not float(v).is_integer()


def mark_counting(axis) -> None:
    """Declare that ``axis`` counts things (indices, layers, sizes): ``problems`` then rejects fractional ticks."""
    axis._talkgen_counts = True


def mark_picture(im: AxesImage) -> None:
    """Declare that ``im`` shows pixels (an input image), so it needs no colour bar."""
    im._talkgen_picture = True
