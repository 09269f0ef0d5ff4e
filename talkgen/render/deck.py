"""The Deck: slides built in Python from the outline, the outcomes and the commentary.

Templates only read the deck (through the notebook's metadata); every structural choice,
what goes on which slide, in which order, with which figure number, is made here.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from markupsafe import Markup

from talkgen.hashing import canonical_json
from talkgen.render import style
from talkgen.render.commentary import Commentary, view_of
from talkgen.render.text import md_escape
from talkgen.results import AnalysisInfo, Finding, Outcome, Result
from talkgen.specs import FigureSpec, Table

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


@dataclass(frozen=True)
class FigureRef:
    number: int
    subject: str
    analysis: str
    spec_id: str
    title: str
    caption: str
    alt: str
    png: bytes
    html: str = ""  # set instead of png for figures that are HTML (coloured text)


@dataclass(frozen=True)
class Slide:
    id: str
    kind: str  # title | agenda | divider | overview | figure | error | skipped | closing
    section: str
    title: str
    body: Markup
    notes: Markup
    figures: tuple[FigureRef, ...] = ()
    tables: tuple[Table, ...] = ()
    subject: str | None = None
    analysis: str | None = None
    error: str = ""  # for an error slide: what went wrong, as plain text


@dataclass(frozen=True)
class Section:
    id: str
    number: int
    title: str
    lede: str
    covers: str


@dataclass(frozen=True)
class Deck:
    title: str
    subtitle: str
    speaker: str
    sections: tuple[Section, ...]
    slides: tuple[Slide, ...]
    findings: tuple[tuple[str, Finding, str], ...]  # (subject, finding, evidence slide id)
    skipped: tuple[Outcome, ...]
    failed: tuple[Outcome, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def figures(self) -> list[FigureRef]:
        return [f for s in self.slides for f in s.figures]


def load_outline(templates: Path) -> dict[str, Any]:
    with open(templates / "outline.toml", "rb") as f:
        return tomllib.load(f)


def _slug(*parts: str) -> str:
    raw = "-".join(parts)
    clean = "".join(c if c.isalnum() else "-" for c in raw.lower()).strip("-")
    return f"{clean[:48]}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


class FigureCache:
    """PNG bytes per (spec, arrays, house style): a template change re-renders without redrawing."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def png(self, spec: FigureSpec, result: Result) -> bytes:
        h = hashlib.sha256(canonical_json({"spec": spec.to_json(), "style": style.STYLE_VERSION}).encode())
        for key in spec.array_keys():
            a = result.arrays[key]
            h.update(f"{key}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        path = self.root / f"{h.hexdigest()[:32]}.png" if self.root else None
        if path is not None and path.is_file():
            return path.read_bytes()
        from talkgen.render import figures as figs  # matplotlib is imported only when drawing

        data = figs.to_png(figs.draw(spec, result.arrays))
        if path is not None:
            from talkgen.files import write_atomic  # a temporary name of its own: builds may share the cache

            write_atomic(path, data)
        return data


def predraw(result: Result, figure_cache: FigureCache) -> None:
    """Draw every image figure of ``result`` into ``figure_cache`` now (the deck then reads them back)."""
    for spec in result.figures:
        if spec.kind != "coloured_text":
            figure_cache.png(spec, result)


def build_deck(*, title: str, subtitle: str, speaker: str, outcomes: Sequence[Outcome],
               catalogue: Mapping[str, AnalysisInfo], templates: Path, figure_cache: FigureCache,
               provenance: Mapping[str, Any], subject_notes: Mapping[str, Sequence[Finding]] | None = None) -> Deck:
    """Assemble the whole talk: title, agenda, per-section dividers and content, closing. ``catalogue``
    says each analysis's title, section and place (from the registry, passed in: render reads no
    analysis module)."""
    outline = load_outline(templates)
    commentary = Commentary(templates)
    everything = list(outcomes)
    outcomes = [o for o in everything if o.twin_of is None]  # twins are baselines inside analyses, not slides
    sections = tuple(Section(id=s["id"], number=int(s["number"]), title=s["title"], lede=s["lede"],
                             covers=s.get("covers", "")) for s in outline["sections"])
    section_of = {o.analysis: catalogue[o.analysis].section for o in outcomes}
    order = {name: (info.order, name) for name, info in catalogue.items()}
    subject_order: dict[str, int] = {}
    for o in outcomes:
        subject_order.setdefault(o.subject, len(subject_order))
    slides: list[Slide] = []
    findings: list[tuple[str, Finding, str]] = []
    learned: dict[str, tuple[str, Markup]] = {}  # analysis -> (section, lesson), in outline order
    counter = [0]

    slides.append(Slide(id="title", kind="title", section="title", title=title,
                        body=commentary.render_file("commentary/_title.md.j2", subtitle=subtitle,
                                                    speaker=speaker, outline=outline,
                                                    subjects=sorted({o.subject for o in outcomes})),
                        notes=commentary.render_file("commentary/_title_notes.md.j2", outline=outline)))
    slides.append(Slide(id="agenda", kind="agenda", section="title", title="Where we are going",
                        body=commentary.render_file("commentary/_agenda.md.j2", sections=sections),
                        notes=Markup("The talk follows five steps; each divider slide says where we are.")))

    for subject, extra in (subject_notes or {}).items():
        for f in extra:
            findings.append((subject, f, "title"))

    for sec in sections:
        if sec.id == "close":
            continue
        # within a section: analysis by analysis (registry order), each across the subjects
        members = sorted((o for o in outcomes if section_of[o.analysis] == sec.id),
                         key=lambda o: (order[o.analysis], subject_order[o.subject]))
        ran = [o for o in members if o.status == "ok"]
        if sec.id != "title":  # the title section's content follows the agenda, with no divider
            slides.append(Slide(
                id=f"section-{sec.id}", kind="divider", section=sec.id, title=f"{sec.number}. {sec.title}",
                body=commentary.render_file("commentary/_divider.md.j2", section=sec,
                                            ran=sorted({o.analysis for o in ran}), n_members=len(members)),
                notes=md_escape(sec.lede)))
        for o in members:
            if o.status == "ok":
                assert o.result is not None
                if o.analysis not in learned:  # one lesson per analysis: its first subject with something to say
                    text = commentary.render(o.analysis, "lesson", view_of(o.result, o.cost))
                    if str(text).strip():
                        learned[o.analysis] = (sec.id, text)
                new = _content_slides(o, sec.id, catalogue[o.analysis].title, commentary, figure_cache, counter)
                slides.extend(new)
                for f in o.result.findings:
                    findings.append((o.subject, f, new[0].id))
                for sl in new:
                    if sl.kind == "error":
                        findings.append((o.subject, Finding(severity="medium", title=sl.title, detail=sl.error),
                                         sl.id))
            elif o.status == "failed":
                sid = _slug("error", o.subject, o.analysis)
                slides.append(Slide(
                    id=sid, kind="error", section=sec.id,
                    title=f"{o.analysis} failed on {o.subject}",
                    body=commentary.render_file("commentary/_error.md.j2", outcome=o),
                    notes=Markup("This analysis raised an error; the rest of the build went on without it."),
                    subject=o.subject, analysis=o.analysis))
                findings.append((o.subject, Finding(
                    severity="medium", title=f"analysis {o.analysis} failed",
                    detail=o.message), sid))
        skipped = [o for o in members if o.status == "skipped"]
        if skipped:
            slides.append(Slide(
                id=f"skipped-{sec.id}", kind="skipped", section=sec.id, title="Not run in this build",
                body=commentary.render_file("commentary/_skipped.md.j2", skipped=skipped),
                notes=Markup("Each analysis states why it does not apply; nothing is silently left out.")))

    ranked = sorted(findings, key=lambda t: SEVERITY_ORDER[t[1].severity])
    # each subject's limitations go under its first slide (its model card, which opens the talk)
    first = {}
    for i, sl in enumerate(slides):
        if sl.kind == "overview" and sl.subject and sl.subject not in first:
            first[sl.subject] = i
    slides = [replace(sl, tables=sl.tables + (limitations_table(sl.subject, outcomes, ranked),))
              if first.get(sl.subject) == i else sl for i, sl in enumerate(slides)]
    lessons = closing_lessons(learned)
    # headlines are the closing's fallback: rendered only when no analysis had a lesson to state
    headlines = [] if lessons else [(o, commentary.render(o.analysis, "headline", view_of(o.result, o.cost)))
                                    for o in outcomes if o.status == "ok" and o.result is not None]
    slides.append(Slide(id="close", kind="closing", section="close", title="What we learned",
                        body=commentary.render_file("commentary/_closing.md.j2", findings=ranked, lessons=lessons,
                                                    headlines=[h for h in headlines if h[1]]),
                        notes=commentary.render_file("commentary/_closing_notes.md.j2", outcomes=outcomes)))
    return Deck(title=title, subtitle=subtitle, speaker=speaker, sections=sections, slides=tuple(slides),
                findings=tuple(ranked),
                skipped=tuple(o for o in outcomes if o.status == "skipped"),
                failed=tuple(o for o in everything if o.status == "failed"),
                provenance=provenance)


def limitations_table(subject: str, outcomes: Sequence[Outcome],
                      findings: Sequence[tuple[str, Finding, str]]) -> Table:
    """The model card's limitations, from this build: what was found against the model, which of the
    tools used on it failed their own checks, and what could not be measured (report only)."""
    rows: list[tuple[str, str]] = []
    for subj, f, _ in findings:
        if subj == subject and f.severity in ("high", "medium", "low"):
            measured = f" (measured {f.value:.3g} against {f.threshold:.3g})" if (
                f.value is not None and f.threshold is not None) else ""
            rows.append((f"finding, {f.severity}", f"{f.title}{measured}"))
    for o in outcomes:
        if o.subject != subject:
            continue
        if o.status == "ok" and o.result is not None:
            for c in o.result.checks:  # the trust checks each analysis ran on its own method
                if not c.passed:
                    rows.append(("tool not to rely on", f"{c.tool}: {c.verdict} ({c.check}; {c.measured})"))
        elif o.status == "skipped":
            rows.append(("not measured", f"{o.analysis}: {o.message}"))
        elif o.status == "failed":
            rows.append(("not measured", f"{o.analysis} failed: {o.message}"))
    if not rows:
        rows.append(("none found", "no finding, failed check or skipped analysis in this build"))
    return Table(id="limitations", title="Limitations", columns=("kind", "what"), rows=tuple(rows),
                 caption="Collected from this build: findings, tools that failed their checks on this model, and "
                         "analyses that could not run.", report_only=True)


def _content_slides(o: Outcome, section: str, title_of: str, commentary: Commentary, figure_cache: FigureCache,
                    counter: list[int]) -> list[Slide]:
    result = o.result
    assert result is not None
    view = view_of(result, o.cost)
    out = [Slide(
        id=_slug(o.subject, o.analysis), kind="overview", section=section,
        title=f"{title_of}: {o.subject}",
        body=commentary.render(o.analysis, "overview", view, fallback=title_of),
        notes=commentary.render(o.analysis, "notes", view, fallback=title_of),
        tables=result.tables, subject=o.subject, analysis=o.analysis)]
    for spec in result.figures:
        try:
            if spec.kind == "coloured_text":
                from talkgen.render.html import coloured_text_html

                png, html = b"", coloured_text_html(spec, result.arrays)
            else:
                png, html = figure_cache.png(spec, result), ""
        except Exception as exc:  # noqa: BLE001 - one figure that cannot be drawn never sinks the build
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            out.append(Slide(
                id=_slug("figure-error", o.subject, o.analysis, spec.id), kind="error", section=section,
                title=f"A figure of {o.analysis} could not be drawn ({o.subject})",
                body=md_escape(f"Figure '{spec.id}' ({spec.title}): {message}"),
                notes=Markup("Drawing this figure failed; the measurement itself is in the report."),
                subject=o.subject, analysis=o.analysis, error=f"figure '{spec.id}': {message}"))
            continue
        counter[0] += 1
        ref = FigureRef(number=counter[0], subject=o.subject, analysis=o.analysis, spec_id=spec.id,
                        title=spec.title, caption=spec.caption, alt=spec.alt, png=png, html=html)
        out.append(Slide(
            id=_slug(o.subject, o.analysis, spec.id), kind="figure", section=section,
            title=f"{spec.title} ({o.subject})",
            body=commentary.render(o.analysis, f"fig_{spec.id}", view, fallback=spec.caption),
            notes=commentary.render(o.analysis, f"notes_{spec.id}", view,
                                    fallback=f"{spec.caption} {HOW_TO_READ.get(spec.kind, '')}".strip(),
                                    figure=spec),
            figures=(ref,), subject=o.subject, analysis=o.analysis))
    return out


def closing_lessons(learned: Mapping[str, tuple[str, Markup]], per_section: int = 2,
                    most: int = 6) -> list[Markup]:
    """The closing slide's "what we learned": the lessons the analyses drew from this build's numbers
    (a ``lesson`` macro says something only when its measurement clears a bar), at most ``per_section``
    from each section of the outline so the close retraces the whole talk, in outline order."""
    taken: dict[str, int] = {}
    out = []
    for section, text in learned.values():
        if taken.get(section, 0) < per_section:
            taken[section] = taken.get(section, 0) + 1
            out.append(text)
    return out[:most]


# Speaker notes for a figure whose commentary has no notes of its own: its caption, then how to read
# that kind of chart, for an audience that knows matrices but not every plot of the field.
HOW_TO_READ = {
    "heatmaps": "How to read it: every cell is one number of a matrix, its row and column say which two things "
                "it connects, and its colour how large it is (the colour bar gives the scale). Structure (stripes, "
                "blocks, a bright diagonal) means the layer does something organised; even speckle means it does not.",
    "image_grid": "How to read it: every panel is drawn in the input's own shape, so a bright spot sits where "
                  "that part of the input is; compare the panels with each other.",
    "curves": "How to read it: every line follows one measured quantity along the horizontal axis; the shapes "
              "of the lines, and where they part or cross, matter more than any single value.",
    "bars": "How to read it: every bar is one measured number; bars side by side are the same measurement for "
            "different things, so compare heights within a group.",
    "scatter": "How to read it: every dot is one item measured two ways, one on each axis; dots along a line "
               "mean the two measurements agree, a shapeless cloud means they do not.",
    "trajectories": "How to read it: every path follows one layer through training, step by step; where a path "
                    "turns is where training changed what that layer keeps about its input.",
    "surface": "How to read it: height and colour give the loss over a two-dimensional slice of weight space "
               "centred on the trained weights; a wide, flat basin means small changes to the weights barely "
               "matter, a narrow one means they do.",
    "coloured_text": "How to read it: every character is coloured by the value it gets; the scale is beside "
                     "the text.",
}


def table_markdown(table: Table) -> str:
    """A markdown table with every cell escaped (HTML and Markdown, the pipe character included)."""
    def cell(text: str) -> str:
        return str(md_escape(text))

    head = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in table.columns) + "|"
    rows = ["| " + " | ".join(cell(c) for c in r) + " |" for r in table.rows]
    return "\n".join([head, rule, *rows])
