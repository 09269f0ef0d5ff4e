"""Deck -> notebooks (nbformat v4): one cell group per slide, reveal.js slide metadata.

Per slide: a markdown cell, then one code cell per figure whose source recomputes the figure through
``talkgen.figure`` and whose output is the PNG, then a ``notes`` cell. Two notebooks come from one deck:

- the talk (``talk.ipynb``, rendered to slides.html): the main line as ``slide`` cells, what sits below a
  main-line slide and the appendix as ``subslide`` cells (reveal.js's vertical slides);
- the report (rendered to report.html): the evidence in the outline's order, with the findings, contents,
  skipped analyses and provenance around it.
"""

from __future__ import annotations

import base64
import json
import pprint
from typing import Any, Mapping

import nbformat
from nbformat.v4 import new_notebook

from talkgen.render.deck import Deck, Slide, table_markdown
from talkgen.render.text import md_escape as escape


# Cells are made as plain nodes and the notebook is validated once, whole (nbformat's new_*_cell validates
# every cell on its own, which costs more than the rest of rendering the notebook).
def _md(text: str, slide_type: str, **meta: Any) -> nbformat.NotebookNode:
    return nbformat.from_dict({"cell_type": "markdown", "source": text,
                               "metadata": {"slideshow": {"slide_type": slide_type}, "talkgen": meta}})


def _code(source: str, metadata: Mapping[str, Any], outputs: list[Any] | None = None) -> nbformat.NotebookNode:
    return nbformat.from_dict({"cell_type": "code", "source": source, "metadata": metadata,
                               "execution_count": None, "outputs": outputs or []})


def _slide_markdown(slide: Slide, body: bool = True) -> str:
    level = "#" if slide.kind in ("title", "divider") else "##"
    parts = [f"{level} {escape(slide.title)}", str(slide.body) if body else ""]
    for table in slide.tables:
        if not table.report_only:
            parts.append((f"**{escape(table.title)}**\n\n" if table.title else "") + table_markdown(table))
    return "\n\n".join(p for p in parts if p.strip())


def _findings_markdown(deck: Deck) -> str:
    if not deck.findings:
        return "## Findings\n\nNo finding was raised by the analyses that ran in this build."
    rows = ["| # | severity | subject | finding | measured | threshold | evidence |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, (subject, f, slide_id) in enumerate(deck.findings, 1):
        def c(x: Any) -> str:
            return str(escape("" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)))
        rows.append(f"| {i} | **{c(f.severity)}** | {c(subject)} | {c(f.title)}: {c(f.detail)} | "
                    f"{c(f.value)} | {c(f.threshold)} | [evidence](#{slide_id}) |")
    return "## Findings\n\nRanked by severity.\n\n" + "\n".join(rows)


def _contents_markdown(deck: Deck) -> str:
    lines = ["## Contents", "", "- [Findings](#findings)"]
    for s in deck.slides:
        if s.kind == "divider":
            lines.append(f"- [{escape(s.title)}](#{s.id})")
        elif s.kind == "overview":
            indent = "" if s.section == "title" else "    "
            lines.append(f"{indent}- [{escape(s.title)}](#{s.id})")
    lines += ["- [Skipped and failed analyses](#not-run)", "- [Provenance](#provenance)"]
    return "\n".join(lines)


def _not_run_markdown(deck: Deck) -> str:
    lines = ["## Skipped and failed analyses", ""]
    if not deck.skipped and not deck.failed:
        lines.append("Every planned analysis ran.")
    for o in deck.skipped:
        lines.append(f"- skipped: **{escape(o.analysis)}** on {escape(o.subject)}: {escape(o.message)}")
    for o in deck.failed:
        lines.append(f"- failed: **{escape(o.analysis)}** on {escape(o.subject)}: {escape(o.message)}")
    return "\n".join(lines)


def _provenance_markdown(deck: Deck) -> str:
    p = deck.provenance
    lines = ["## Provenance", "", "| item | value |", "| --- | --- |"]
    for key, value in p.get("facts", {}).items():
        lines.append(f"| {escape(key)} | {escape(str(value))} |")
    lines += ["", "**Cost ledger** (wall time, peak extra resident memory, forward/backward passes of the subject model)",
              "", "| subject | analysis | status | wall s | peak MB | forward | backward | cached |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in p.get("ledger", []):
        lines.append("| " + " | ".join(str(escape(str(row[k]))) for k in (
            "subject", "analysis", "status", "wall_s", "peak_mem_mb", "forward_passes",
            "backward_passes", "cached")) + " |")
    return "\n".join(lines)


def _slide_cells(slide: Slide, slide_type: str, *, talk: bool, **meta: Any) -> list[nbformat.NotebookNode]:
    """A slide's cells. In the talk, a figure slide reads title, figure, then its sentence (the figure's
    caption goes to the notes); in the report, title and text, then the figure with its caption."""
    after = talk and bool(slide.figures)
    head = dict(anchor=slide.id, kind=slide.kind, section=slide.section, subject=slide.subject,
                analysis=slide.analysis, beat=slide.beat, report=slide.kind not in ("title", "agenda"), **meta)
    title = _slide_markdown(slide, body=not after)
    if talk and slide.kicker:  # which model and analysis a talk slide shows, a line above its title
        cells = [_md(str(escape(slide.kicker)), slide_type, part="kicker", **head), _md(title, "-", part="slide")]
    else:
        cells = [_md(title, slide_type, part="slide", **head)]
    for table in slide.tables:
        if table.report_only:  # too long for a slide: the report shows it under the slide's text
            cells.append(_md(f"**{escape(table.title)}**\n\n" + table_markdown(table), "skip",
                             part="table", report=True))
    for fig in slide.figures:
        payload = ({"text/html": fig.html} if fig.html else
                   {"image/png": base64.b64encode(fig.png).decode("ascii")})
        out = {"output_type": "display_data", "data": payload | {"text/plain": fig.alt},
               "metadata": {"alt": fig.alt}}
        cells.append(_code(
            f"talkgen.figure(TALK, {fig.subject!r}, {fig.analysis!r}, {fig.spec_id!r})",
            outputs=[out],
            metadata={"slideshow": {"slide_type": "-"},
                      "talkgen": {"part": "figure", "number": fig.number, "caption": fig.caption,
                                  "alt": fig.alt, "title": fig.title}}))
    notes = str(slide.notes)
    if after:
        if str(slide.body).strip():
            cells.append(_md(str(slide.body), "-", part="body"))
        captions = " ".join(escape(f.caption) for f in slide.figures if f.caption)
        notes = f"*The figure:* {captions}\n\n{notes}" if captions else notes
    cells.append(_md(notes, "notes", part="notes", report=slide.kind not in ("title", "agenda")))
    return cells


def _setup_cell(talk: Mapping[str, Any]) -> nbformat.NotebookNode:
    return _code(
        "# Recompute any figure of this build through talkgen's Python API.\n"
        "import talkgen\n\n"
        f"TALK = {pprint.pformat(json.loads(json.dumps(dict(talk))), width=100)}",
        metadata={"slideshow": {"slide_type": "skip"}, "talkgen": {"part": "setup"}})


def _notebook(deck: Deck, cells: list[nbformat.NotebookNode], view: str) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):  # stable ids: the same deck gives the same notebook, byte for byte
        cell["id"] = f"cell-{i}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "talkgen": {"title": deck.title, "subtitle": deck.subtitle, "speaker": deck.speaker, "view": view},
    })
    nbformat.validate(nb)
    return nb


def deck_to_notebook(deck: Deck, talk: Mapping[str, Any]) -> nbformat.NotebookNode:
    """The talk's notebook (talk.ipynb, rendered to slides.html): the main line as reveal.js slides, what
    sits below each and the appendix as vertical slides; ``talk`` is the resolved config the figures
    recompute from."""
    cells = [_setup_cell(talk)]
    for entry in deck.talk:
        cells += _slide_cells(entry.slide, "slide" if entry.place == "main" else "subslide", talk=True,
                              place=entry.place, under=entry.under)
    return _notebook(deck, cells, "talk")


def report_notebook(deck: Deck, talk: Mapping[str, Any]) -> nbformat.NotebookNode:
    """The report's notebook: findings, contents, the evidence in the outline's order (every analysis on
    every subject), skipped and failed analyses, provenance."""
    cells = [
        _setup_cell(talk),
        _md(_findings_markdown(deck), "skip", part="findings", anchor="findings"),
        _md(_contents_markdown(deck), "skip", part="contents", anchor="contents"),
    ]
    for slide in deck.slides:
        cells += _slide_cells(slide, "slide", talk=False)
    cells.append(_md(_not_run_markdown(deck), "skip", part="not-run", anchor="not-run"))
    cells.append(_md(_provenance_markdown(deck), "skip", part="provenance", anchor="provenance"))
    return _notebook(deck, cells, "report")
