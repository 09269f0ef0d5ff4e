"""slides.pptx: the talk's main line as a PowerPoint file (python-pptx), for a venue laptop without a browser.

One slide per main-line slide, read from the same notebook cells slides.html is rendered from: the title in
the slide's title placeholder (native text), the kicker above it, each figure as a picture at full
resolution, lists as native bullets, tables as native tables, the figure's sentence under it, and the speaker
notes in the notes pane. Coloured-text figures (the LSTM cell over source code) become monospace text whose
runs carry the same highlight colours. 16:9 (13.33 x 7.5 in).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import nbformat

from talkgen.render.export import markdown_to_html



@dataclass
class _Block:
    kind: str  # heading | para | item | table | code
    text: str = ""
    level: int = 0
    rows: list[list[str]] = field(default_factory=list)
    runs: list[tuple[str, tuple[int, int, int] | None]] = field(default_factory=list)


class _Blocks(HTMLParser):
    """Markdown rendered to HTML, read back as the blocks a slide shows: headings, paragraphs, list items
    (with their depth), tables and coloured-text runs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[_Block] = []
        self._text: list[str] | None = None
        self._kind = ""
        self._level = 0
        self._depth = 0
        self._table: list[list[str]] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._runs: list[tuple[str, tuple[int, int, int] | None]] | None = None
        self._colour: list[tuple[int, int, int] | None] = []
        self._skip = 0

    def _open(self, kind: str, level: int = 0) -> None:
        self._flush()
        self._kind, self._level, self._text = kind, level, []

    def _flush(self) -> None:
        if self._text is not None:
            text = " ".join("".join(self._text).split())
            if text:
                self.blocks.append(_Block(self._kind, text, self._level))
        self._text = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = a.get("class") or ""
        if self._runs is not None:
            if tag == "span":
                self._colour.append(_background(a.get("style") or ""))
            return
        if tag == "span" and "swatch" in cls.split() and self._text is not None:
            self._text.append(" ")  # the colour key's swatches, apart
        if "ckey" in cls.split():  # the colour key under coloured text: one line of its own
            self._open("para")
            return
        if "ctext" in cls.split():
            self._flush()
            self._runs = []
            return
        if tag in ("h1", "h2", "h3", "h4"):
            self._open("heading", int(tag[1]))
        elif tag in ("ul", "ol"):
            self._flush()
            self._depth += 1
        elif tag == "li":
            self._open("item", self._depth - 1)
        elif tag == "p" and self._table is None and self._kind != "item":
            self._open("para")
        elif tag == "p" and self._kind == "item" and self._text is None:
            self._open("item", self._depth - 1)
        elif tag == "table":
            self._flush()
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "br" and self._text is not None:
            self._text.append(" ")
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if self._runs is not None:
            if tag == "span" and self._colour:
                self._colour.pop()
            elif tag == "div":
                self.blocks.append(_Block("code", runs=self._runs))
                self._runs = None
            return
        if tag in ("h1", "h2", "h3", "h4", "p", "li"):
            self._flush()
            if tag == "li":
                self._kind = "item"
            if tag == "p" and self._depth:
                self._kind = "item"
        elif tag in ("ul", "ol"):
            self._flush()
            self._depth = max(0, self._depth - 1)
            self._kind = ""
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.blocks.append(_Block("table", rows=self._table))
            self._table = None
        elif tag == "div":
            self._flush()
        elif tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._runs is not None:
            self._runs.append((data, self._colour[-1] if self._colour else None))
        elif self._cell is not None:
            self._cell.append(data)
        elif self._text is not None:
            self._text.append(data)
        elif data.strip():
            self._open("para")
            self._text.append(data)  # type: ignore[union-attr]

    def close(self) -> None:
        super().close()
        self._flush()


def _background(style: str) -> tuple[int, int, int] | None:
    """A span's ``background:rgba(r,g,b,a)`` over white, as the solid colour it shows."""
    m = re.search(r"background:\s*rgba\((\d+),\s*(\d+),\s*(\d+),\s*([\d.]+)\)", style)
    if not m:
        return None
    r, g, b, a = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    if a <= 0:
        return None
    return tuple(round(255 + (c - 255) * a) for c in (r, g, b))  # type: ignore[return-value]


def blocks(html: str) -> list[_Block]:
    p = _Blocks()
    p.feed(html)
    p.close()
    return p.blocks


@dataclass
class _Slide:
    kind: str = ""
    place: str = ""  # main | below | appendix
    kicker: str = ""
    title: str = ""
    content: list[_Block] = field(default_factory=list)
    pictures: list[str] = field(default_factory=list)  # base64 PNGs
    coloured: list[_Block] = field(default_factory=list)
    after: list[_Block] = field(default_factory=list)  # the sentence under a figure
    notes: str = ""


def _slides(nb: nbformat.NotebookNode) -> list[_Slide]:
    """The notebook's cells grouped by slide, as slides.html shows them."""
    out: list[_Slide] = []
    for cell in nb.cells:
        meta = cell.get("metadata", {})
        tg = meta.get("talkgen", {})
        part = tg.get("part")
        if part in ("setup", "table"):
            continue
        if meta.get("slideshow", {}).get("slide_type") in ("slide", "subslide"):
            out.append(_Slide(kind=tg.get("kind", ""), place=tg.get("place", "main")))
        if not out:
            continue
        s = out[-1]
        if part == "kicker":
            s.kicker = " ".join(str(cell.source).split())
        elif part == "slide":
            bs = blocks(markdown_to_html(str(cell.source)))
            if bs and bs[0].kind == "heading":
                s.title = bs.pop(0).text
            s.content += bs
        elif part == "figure":
            for o in cell.get("outputs", []):
                data = o.get("data", {})
                if "image/png" in data:
                    s.pictures.append("".join(data["image/png"]))
                elif "text/html" in data:
                    s.coloured += blocks("".join(data["text/html"]))
        elif part == "body":
            s.after += blocks(markdown_to_html(str(cell.source)))
        elif part == "notes":
            s.notes = notes_text(str(cell.source))
    return out


def notes_text(markdown: str) -> str:
    """Speaker notes as plain text: paragraphs apart, list items as "- item"."""
    return "\n\n".join(b.text if b.kind != "item" else f"- {b.text}"
                       for b in blocks(markdown_to_html(markdown)) if b.kind not in ("table", "code"))


def main_line_notes(nb: nbformat.NotebookNode) -> list[str]:
    """The speaker notes of the talk notebook's main-line slides, in order, as plain text."""
    return [s.notes for s in _slides(nb) if s.place == "main"]


def notebook_to_pptx(nb: nbformat.NotebookNode, theme: str = "light", accent: str = "") -> bytes:
    """The main-line slides of the talk notebook ``nb`` as a .pptx file's bytes, in the slides' ``theme``
    colours (``talkgen.render.theme``; the figures were drawn in it)."""
    import base64

    from pptx.dml.color import RGBColor

    from talkgen.render.theme import parse_colour, theme as make_theme

    t = make_theme(theme, accent)
    rgb = {k: parse_colour(getattr(t, k)) for k in ("background", "text", "body", "accent")}

    from pptx import Presentation
    from pptx.enum.text import MSO_AUTO_SIZE, PP_ALIGN
    from pptx.util import Inches, Pt

    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    prs.core_properties.title = str(nb.metadata.get("talkgen", {}).get("title", ""))
    prs.core_properties.subject = str(nb.metadata.get("talkgen", {}).get("subtitle", ""))
    layout = prs.slide_layouts[5]  # "Title Only": the title is the slide's title placeholder
    W, H, M = prs.slide_width, prs.slide_height, Inches(0.5)
    for s in _slides(nb):
        if s.place != "main":
            continue
        slide = prs.slides.add_slide(layout)
        if theme != "light":
            slide.background.fill.solid()
            slide.background.fill.fore_color.rgb = RGBColor(*rgb["background"])
        big = s.kind in ("title", "divider")
        title = slide.shapes.title
        top = Inches(0.55) if s.kicker else Inches(0.35)
        if big:
            title.left, title.top, title.width, title.height = M, Inches(1.2), W - 2 * M, Inches(1.6)
        else:
            title.left, title.top, title.width, title.height = M, top, W - 2 * M, Inches(1.05)
        tf = title.text_frame
        tf.text = s.title
        tf.word_wrap = True
        for p in tf.paragraphs:
            p.alignment = PP_ALIGN.LEFT
            for r in p.runs:
                r.font.size = Pt(40 if big else 26)
                r.font.bold = True
                if theme != "light":
                    _colour(r, rgb["text"])
        if s.kicker:
            box = slide.shapes.add_textbox(M, Inches(0.22), W - 2 * M, Inches(0.35)).text_frame
            box.text = s.kicker
            box.word_wrap, box.auto_size = True, MSO_AUTO_SIZE.NONE  # else the box shrinks to its text, centred
            box.paragraphs[0].alignment = PP_ALIGN.LEFT
            box.paragraphs[0].runs[0].font.size = Pt(12)
            _colour(box.paragraphs[0].runs[0], rgb["accent"])
        y = (title.top + title.height + Inches(0.05))
        bottom = H - Inches(0.3)
        after_h = Inches(0.35 + 0.3 * max(0, _lines(s.after, 150) - 1)) if s.after else 0
        ink = rgb["text"] if theme != "light" else None
        if s.pictures or s.coloured:
            area_bottom = bottom - after_h
            if s.content:
                y = _text(slide, s.content, M, y, W - 2 * M, Inches(0.3 * _lines(s.content, 130) + 0.1), 14,
                          colour=ink)
            if s.pictures:
                _pictures(slide, [base64.b64decode(p) for p in s.pictures], M, y, W - 2 * M, area_bottom - y)
            else:  # on a dark slide, coloured text sits on a white panel, as its colours were mixed over white
                _coloured(slide, s.coloured, M, y, W - 2 * M, area_bottom - y, panel=theme != "light")
            if s.after:
                _text(slide, s.after, M, area_bottom, W - 2 * M, after_h, 14, colour=rgb["body"])
        else:
            items = sum(b.kind == "item" for b in s.content)
            _text(slide, s.content, M, y, W - 2 * M, bottom - y, 16 if items > 8 else 18 if big else 16,
                  columns=2 if items > 8 else 1, colour=ink)
        if s.notes:
            slide.notes_slide.notes_text_frame.text = s.notes
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def _lines(bs: list[_Block], chars: int) -> int:
    n = 0
    for b in bs:
        if b.kind == "table":
            n += len(b.rows)
        else:
            n += max(1, -(-len(b.text) // chars))
    return n


def _colour(run: Any, rgb: tuple[int, int, int]) -> None:
    from pptx.dml.color import RGBColor

    run.font.color.rgb = RGBColor(*rgb)


def _text(slide: Any, bs: list[_Block], left: int, top: int, width: int, height: int, size: float,
          colour: tuple[int, int, int] | None = None, columns: int = 1) -> int:
    """Paragraphs, bullets and tables from ``top`` down (a long list in ``columns``); returns where the next
    shape may start."""
    from pptx.enum.text import PP_ALIGN
    from pptx.util import Inches, Pt

    y = top
    run_blocks: list[_Block] = []

    def flush_text() -> None:
        nonlocal y, run_blocks
        if not run_blocks:
            return
        lines = _lines(run_blocks, 110)
        cols = columns if all(b.kind == "item" for b in run_blocks) else 1
        if cols > 1:
            lines = sum(b.kind != "item" for b in run_blocks) + -(-sum(b.kind == "item" for b in run_blocks) // columns)
        h = min(Inches(0.36 * lines + 0.1), max(Inches(0.4), top + height - y))
        tf = slide.shapes.add_textbox(left, y, width, h).text_frame
        tf.word_wrap = True
        if cols > 1:
            tf._txBody.bodyPr.set("numCol", str(cols))  # python-pptx has no API for text columns
            tf._txBody.bodyPr.set("spcCol", str(Inches(0.4)))
        for i, b in enumerate(run_blocks):
            p = tf.paragraphs[0] if i == 0 else tf.add_paragraph()
            text = b.text
            if b.kind == "item":
                p.level = min(b.level, 4)
                text = "\u2022 " + text if b.level == 0 else "\u2013 " + text
            p.alignment = PP_ALIGN.LEFT
            r = p.add_run()
            r.text = text
            r.font.size = Pt(size if b.kind != "heading" else size + 2)
            r.font.bold = b.kind == "heading"
            if colour:
                _colour(r, colour)
            p.space_after = Pt(4)
        y += h
        run_blocks = []

    for b in bs:
        if b.kind == "table" and b.rows:
            flush_text()
            rows, cols = len(b.rows), max(len(r) for r in b.rows)
            row_h = Inches(0.3)
            h = min(row_h * rows, max(row_h, top + height - y))
            table = slide.shapes.add_table(rows, cols, left, y, width, h).table
            for i, row in enumerate(b.rows):
                for j in range(cols):
                    cell = table.cell(i, j)
                    cell.text = row[j] if j < len(row) else ""
                    for p in cell.text_frame.paragraphs:
                        for r in p.runs:
                            r.font.size = Pt(11 if cols > 5 else 12)
                            r.font.bold = i == 0
            y += h + Inches(0.1)
        elif b.kind == "code":
            flush_text()
            _coloured(slide, [b], left, y, width, top + height - y)
            y = top + height
        else:
            if columns > 1 and run_blocks and (b.kind == "item") != (run_blocks[-1].kind == "item"):
                flush_text()  # a list in columns gets a box of its own
            run_blocks.append(b)
    flush_text()
    return y


def _pictures(slide: Any, pngs: list[bytes], left: int, top: int, width: int, height: int) -> None:
    """Figures side by side in the box, each as large as fits at its own aspect ratio (full resolution)."""
    from PIL import Image

    slot = width // len(pngs)
    for i, png in enumerate(pngs):
        w, h = Image.open(io.BytesIO(png)).size
        scale = min(slot / w, height / h)
        pw, ph = int(w * scale), int(h * scale)
        slide.shapes.add_picture(io.BytesIO(png), left + i * slot + (slot - pw) // 2, top + (height - ph) // 2, pw, ph)


def _coloured(slide: Any, bs: list[_Block], left: int, top: int, width: int, height: int, panel: bool = False) -> None:
    """Coloured text: monospace runs with their highlight colour (DrawingML ``a:highlight``); with ``panel``, black
    text on a white box (for a dark slide)."""
    from pptx.oxml.ns import qn
    from pptx.util import Pt
    from lxml import etree

    box = slide.shapes.add_textbox(left, top, width, height)
    if panel:
        from pptx.dml.color import RGBColor

        box.fill.solid()
        box.fill.fore_color.rgb = RGBColor(255, 255, 255)
    tf = box.text_frame
    tf.word_wrap = True
    first = True
    for b in bs:
        if b.kind != "code":
            p = tf.paragraphs[0] if first else tf.add_paragraph()
            first = False
            r = p.add_run()
            r.text = b.text
            r.font.size = Pt(11)
            if panel:
                _colour(r, (0x33, 0x33, 0x33))
            continue
        lines: list[list[tuple[str, Any]]] = [[]]
        for text, rgb in b.runs:
            for k, piece in enumerate(text.split("\n")):
                if k:
                    lines.append([])
                if piece:
                    lines[-1].append((piece, rgb))
        lines = lines[:30]
        widest = max((sum(len(t) for t, _ in line) for line in lines), default=1)
        rows = len(lines) + 2 * sum(b.kind != "code" for b in bs)  # the key under it, in smaller type
        # as large as the box allows: a line is ~1.45 x the size high, a monospace character 0.62 x wide
        size = max(8, min(18, int(height / 12700 / (1.45 * rows)), int(width / 12700 / (0.62 * max(widest, 1)))))
        for line in lines:
            p = tf.paragraphs[0] if first else tf.add_paragraph()
            first = False
            for piece, rgb in line:
                r = p.add_run()
                r.text = piece
                r.font.size = Pt(size)
                r.font.name = "Consolas"
                if panel:
                    _colour(r, (0, 0, 0))
                if rgb:
                    rpr = r._r.get_or_add_rPr()
                    hl = etree.Element(qn("a:highlight"))  # before a:latin, as the schema orders them
                    rpr.insert(0, hl)
                    clr = etree.SubElement(hl, qn("a:srgbClr"))
                    clr.set("val", "%02X%02X%02X" % rgb)
