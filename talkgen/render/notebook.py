"""Deck -> notebook (nbformat v4): one cell group per slide, reveal.js slide metadata.

Per slide: a markdown cell (``slideshow.slide_type = "slide"``), then one code cell per
figure whose source recomputes the figure through ``talkgen.figure`` and whose output is
the PNG, then a ``notes`` cell. Report-only cells (findings, contents, skipped analyses,
provenance) are ``skip`` cells: the slides leave them out, the report shows them.
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


def _slide_markdown(slide: Slide) -> str:
    level = "#" if slide.kind in ("title", "divider") else "##"
    parts = [f"{level} {escape(slide.title)}", str(slide.body)]
    for table in slide.tables:
        if not table.report_only:
            parts.append(f"**{escape(table.title)}**\n\n" + table_markdown(table))
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


def deck_to_notebook(deck: Deck, talk: Mapping[str, Any]) -> nbformat.NotebookNode:
    """The notebook that carries the deck; ``talk`` is the resolved config the figures recompute from."""
    cells = [
        _code(
            "# Recompute any figure of this build through talkgen's Python API.\n"
            "import talkgen\n\n"
            f"TALK = {pprint.pformat(json.loads(json.dumps(dict(talk))), width=100)}",
            metadata={"slideshow": {"slide_type": "skip"}, "talkgen": {"part": "setup"}}),
        _md(_findings_markdown(deck), "skip", part="findings", anchor="findings"),
        _md(_contents_markdown(deck), "skip", part="contents", anchor="contents"),
    ]
    for slide in deck.slides:
        cells.append(_md(_slide_markdown(slide), "slide", part="slide", anchor=slide.id, kind=slide.kind,
                         section=slide.section, subject=slide.subject, analysis=slide.analysis,
                         report=slide.kind not in ("title", "agenda")))
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
        cells.append(_md(str(slide.notes), "notes", part="notes",
                         report=slide.kind not in ("title", "agenda")))
    cells.append(_md(_not_run_markdown(deck), "skip", part="not-run", anchor="not-run"))
    cells.append(_md(_provenance_markdown(deck), "skip", part="provenance", anchor="provenance"))
    for i, cell in enumerate(cells):  # stable ids: the same deck gives the same notebook, byte for byte
        cell["id"] = f"cell-{i}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "talkgen": {"title": deck.title, "subtitle": deck.subtitle, "speaker": deck.speaker},
    })
    nbformat.validate(nb)
    return nb
