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
            # a table with its title carries its caption under it (the n and the intervals of its numbers); a
            # talk slide's table has the caption as the slide's text
            parts.append((f"**{escape(table.title)}**\n\n" if table.title else "") + table_markdown(table)
                         + (f"\n\n*{escape(table.caption)}*" if table.title and table.caption else ""))
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
    lines = ["## Contents", "", "- [Summary](#summary)", "- [Findings](#findings)"]
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
    ledger = p.get("ledger", [])
    gpu = any("gpu_peak_mb" in row for row in ledger)  # a build on a GPU: its peak memory beside the RSS
    keys = ("subject", "analysis", "status", "wall_s", "peak_mem_mb") + (("gpu_peak_mb",) if gpu else ()) + (
        "forward_passes", "backward_passes", "cached")
    heads = ["subject", "analysis", "status", "wall s", "peak MB"] + (["peak GPU MB"] if gpu else []) + [
        "forward", "backward", "cached"]
    what = "peak extra resident memory" + (", peak GPU memory allocated" if gpu else "")
    lines += ["", f"**Cost ledger** (wall time, {what}, forward/backward passes of the subject model)",
              "", "| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for row in ledger:
        row = {"gpu_peak_mb": ""} | dict(row) | {"cached": "yes" if row.get("cached") else "no"}
        lines.append("| " + " | ".join(str(escape(str(row[k]))) for k in keys) + " |")
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
            cells.append(_md(f"**{escape(table.title)}**\n\n" + table_markdown(table)
                             + (f"\n\n*{escape(table.caption)}*" if table.caption else ""), "skip",
                             part="table", report=True))
    for fig in slide.figures:
        if fig.html:
            payload = {"text/html": fig.html}
        elif not talk and (compact := fig.compact):  # the report embeds the compact copy; the talk, the PNG
            payload = {"image/webp": base64.b64encode(compact).decode("ascii")}
        else:
            payload = {"image/png": base64.b64encode(fig.png).decode("ascii")}
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
        body, held = _short_body(str(slide.body))
        if body.strip():
            cells.append(_md(body, "-", part="body"))
        if held:
            notes = f"{notes}\n\n*All of them:*\n\n{held}"
        captions = " ".join(escape(f.caption) for f in slide.figures if f.caption)
        notes = f"*The figure:* {captions}\n\n{notes}" if captions else notes
    cells.append(_md(notes, "notes", part="notes", report=slide.kind not in ("title", "agenda")))
    return cells


SLIDE_ITEMS = 3  # list items a figure slide shows under its figure; more would shrink the figure


def _short_body(body: str) -> tuple[str, str]:
    """A figure slide's text as the talk shows it: a list longer than SLIDE_ITEMS keeps its first items
    and says how many more there are; the whole list is returned to go to the speaker notes ("" if none)."""
    lines = body.strip().splitlines()
    items = [i for i, line in enumerate(lines) if line.startswith("- ")]
    if len(items) <= SLIDE_ITEMS + 1:
        return body, ""
    cut = items[SLIDE_ITEMS]
    more = len(items) - SLIDE_ITEMS
    short = lines[:cut] + [f"- and {more} more (in the notes and the report)"]
    after = [line for line in lines[cut:] if line and not line.startswith("- ") and not line.startswith("  ")]
    return "\n".join(short + ([""] + after if after else [])), body.strip()


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


def _summary_markdown(deck: Deck, figures: int, open_: int, folded: int, same: int) -> str:
    """The report's first block: what was looked at, what ran, what was found, and how the evidence is laid out."""
    by = {sev: sum(f.severity == sev for _, f, _ in deck.findings) for sev in ("high", "medium", "low", "info")}
    found = ", ".join(f"{n} {sev}" for sev, n in by.items() if n) or "none"
    models = ", ".join(deck.subjects) or "none"
    lines = ["## Summary", "", "| | |", "| --- | --- |",
             f"| models | {len(deck.subjects)}: {escape(models)} |",
             f"| analyses | {deck.ran} ran, {len(deck.skipped)} skipped, {len(deck.failed)} failed |",
             f"| findings | {len(deck.findings)}: {found} |",
             f"| figures | {figures}: {open_} shown with their claim, {folded} folded under it"
             + (f", {same} drawn twice shown once" if same else "") + " |"]
    high = [(s, f) for s, f, _ in deck.findings if f.severity == "high"]
    if high:
        lines += ["", "**High-severity findings:** " + "; ".join(
            f"{escape(s)}: {escape(f.title)}" for s, f in high) + "."]
    return "\n".join(lines)


def report_notebook(deck: Deck, talk: Mapping[str, Any]) -> nbformat.NotebookNode:
    """The report's notebook: a summary, the findings, contents, then the evidence in the outline's order
    (every analysis on every subject, the model cards first), skipped and failed analyses, provenance.

    An auditor reads one figure per claim: in each analysis's group of figure slides, the one the talk
    shows (else the first) stays open and the others are folded into one ``<details>`` block; a figure
    drawn twice (the zoo two models share) is shown once and referred to after that."""
    talk_digests = {e.slide.digest for e in deck.talk if e.place == "main" and e.slide.digest}
    groups: dict[tuple[str | None, str | None], list[Slide]] = {}
    for slide in deck.slides:
        if slide.kind == "figure":
            groups.setdefault((slide.subject, slide.analysis), []).append(slide)
    shown_open = {next((sl.id for sl in g if sl.digest in talk_digests), g[0].id) for g in groups.values()}

    evidence: list[nbformat.NotebookNode] = []
    first_of: dict[str, int] = {}  # figure digest -> the number it was first shown under
    n_open = n_folded = n_same = 0
    fold: list[nbformat.NotebookNode] = []  # the cells of the folded figures of the current group
    fold_titles: list[str] = []

    def close_fold() -> None:
        if fold:
            fold[0]["metadata"]["talkgen"]["fold_open"] = (
                f"{len(fold_titles)} more figure{'s' if len(fold_titles) > 1 else ''} of this analysis")
            fold[-1]["metadata"]["talkgen"]["fold_close"] = True
            evidence.extend(fold)
            fold.clear()
            fold_titles.clear()

    last_group = None
    for slide in deck.slides:
        group = (slide.subject, slide.analysis)
        if group != last_group:
            close_fold()
            last_group = group
        cells = _slide_cells(slide, "slide", talk=False)
        for cell in cells:
            tg = cell["metadata"]["talkgen"]
            if tg.get("part") == "figure":
                digest = slide.digest
                if digest and digest in first_of:
                    tg["same_as"] = first_of[digest]
                    n_same += 1
                elif digest:
                    first_of[digest] = tg["number"]
        if slide.kind == "figure" and slide.id not in shown_open:
            fold.extend(cells)
            fold_titles.append(slide.title)
            n_folded += 1
        else:
            close_fold()
            evidence.extend(cells)
            n_open += slide.kind == "figure"
    close_fold()
    figures = n_open + n_folded
    cells = [
        _setup_cell(talk),
        _md(_summary_markdown(deck, figures, n_open, n_folded, n_same), "skip", part="summary", anchor="summary"),
        _md(_findings_markdown(deck), "skip", part="findings", anchor="findings"),
        _md(_contents_markdown(deck), "skip", part="contents", anchor="contents"),
        *evidence,
        _md(_not_run_markdown(deck), "skip", part="not-run", anchor="not-run"),
        _md(_provenance_markdown(deck), "skip", part="provenance", anchor="provenance"),
    ]
    return _notebook(deck, cells, "report")
