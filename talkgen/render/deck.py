"""The Deck: slides built in Python from the outline, the outcomes and the commentary.

Templates only read the deck (through the notebook's metadata); every structural choice,
what goes on which slide, in which order, with which figure number, is made here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from markupsafe import Markup

from talkgen.hashing import canonical_json
from talkgen.render import style
from talkgen.render.commentary import Commentary, view_of
from talkgen.config import TalkControls
from talkgen.render.story import choose, parse_beats, plan_talk, resolve_figures, with_defaults
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
    # makes the PNG as the report embeds it (``FigureCache.compact``), on first use only: a build without a
    # report or notebook never pays for it
    compacter: Callable[[bytes], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def compact(self) -> bytes:
        """The PNG as the report embeds it (lossless WebP, 48 colours); empty for an HTML figure."""
        return self.compacter(self.png) if self.png and self.compacter is not None else b""


@dataclass(frozen=True)
class Slide:
    id: str
    kind: str  # title | agenda | divider | overview | figure | table | lineup | own | error | closing
    section: str
    title: str
    body: Markup
    notes: Markup
    figures: tuple[FigureRef, ...] = ()
    tables: tuple[Table, ...] = ()
    subject: str | None = None
    analysis: str | None = None
    error: str = ""  # for an error slide: what went wrong, as plain text
    beat: str | None = None  # the beat of the talk this slide gives (main-line slides)
    kicker: str = ""  # a small line above a talk slide's title: the model and the analysis it shows
    digest: str = ""  # what a figure slide shows (its figure's bytes): the talk shows each piece once


@dataclass(frozen=True)
class TalkEntry:
    """One slide of the talk: on the main line (what the arrow keys walk through), below a main-line
    slide (a reveal.js vertical slide, one key down), or in the appendix after the close."""

    slide: Slide
    place: str  # "main" | "below" | "appendix"
    beat: str | None = None
    under: str = ""  # the main-line slide it sits below ("" on the main line)


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
    slides: tuple[Slide, ...]  # the evidence, exhaustively, in the report's order
    findings: tuple[tuple[str, Finding, str], ...]  # (subject, finding, evidence slide id)
    skipped: tuple[Outcome, ...]
    failed: tuple[Outcome, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    talk: tuple[TalkEntry, ...] = ()  # the talk: the main line with what sits below it, then the appendix
    warnings: tuple[str, ...] = ()  # what the talk could not do as talk.toml asked
    subjects: tuple[str, ...] = ()  # the models, in the order the build met them
    ran: int = 0  # analyses that ran (twins, the baselines inside analyses, not counted)

    def figures(self) -> list[FigureRef]:
        return [f for s in self.slides for f in s.figures]

    def main_line(self) -> list[Slide]:
        return [e.slide for e in self.talk if e.place == "main"]

    def structure(self) -> dict[str, list[dict[str, Any]]]:
        """The talk's structure as data (summary.json's ``deck``): the main line and everything else in
        the talk file, in order, each ``{id, beat, subject, title, kind}`` (the rest with ``under``)."""
        def entry(e: TalkEntry) -> dict[str, Any]:
            d = {"id": e.slide.id, "beat": e.beat, "subject": e.slide.subject, "title": plain(e.slide.title),
                 "kind": e.slide.kind}
            return d if e.place == "main" else d | {"under": e.under, "place": e.place}
        return {"main": [entry(e) for e in self.talk if e.place == "main"],
                "appendix": [entry(e) for e in self.talk if e.place != "main"]}


def load_outline(templates: Path) -> dict[str, Any]:
    with open(templates / "outline.toml", "rb") as f:
        return tomllib.load(f)


def _slug(*parts: str) -> str:
    raw = "-".join(parts)
    clean = "".join(c if c.isalnum() else "-" for c in raw.lower()).strip("-")
    return f"{clean[:48]}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


class FigureCache:
    """PNG bytes per (spec, arrays, house style): a template change re-renders without redrawing."""

    def __init__(self, root: Path | None, theme: str = "light") -> None:
        self.root = root
        self.theme = theme  # the slides' theme (talkgen.render.theme): the figures' colours follow it

    def key(self, spec: FigureSpec, result: Result) -> str:
        """The name the PNG of ``spec`` drawn from ``result`` has in the cache."""
        house = {"spec": spec.to_json(), "style": style.STYLE_VERSION} | (
            {"theme": self.theme} if self.theme != "light" else {})
        h = hashlib.sha256(canonical_json(house).encode())
        for key in spec.array_keys():
            a = result.arrays[key]
            h.update(f"{key}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return f"{h.hexdigest()[:32]}.png"

    def png(self, spec: FigureSpec, result: Result) -> bytes:
        """The figure as PNG, drawn once; with a cache folder, what ``render.legibility`` found wrong with it
        (read off the same draw, at no extra cost) is kept beside it (``problems``)."""
        path = self.root / self.key(spec, result) if self.root else None
        if path is not None and path.is_file():
            return path.read_bytes()
        from talkgen.render import figures as figs  # matplotlib is imported only when drawing

        _, data, found = figs.render(spec, result.arrays, self.theme)
        if path is not None:
            import json

            from talkgen.files import write_atomic  # a temporary name of its own: builds may share the cache

            write_atomic(self._problems_path(path), json.dumps(found).encode())  # first: a cached PNG has its record
            write_atomic(path, data)
        return data

    def problems(self, spec: FigureSpec, result: Result) -> list[str] | None:
        """What the legibility checker found on the cached PNG of ``spec`` (empty: it reads on a slide), or None
        when it is not in the cache."""
        import json

        path = self._problems_path(self.root / self.key(spec, result)) if self.root else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    @staticmethod
    def _problems_path(png: Path) -> Path:
        return png.with_name(png.stem + ".problems.json")

    def compact(self, png: bytes) -> bytes:
        """``png`` as the report embeds it: lossless WebP of its colours reduced to 48 (a chart's flat colours
        and anti-aliased text survive, a colour bar shows about 20 steps; about a seventh of the PNG's
        bytes). Cached by the PNG's hash."""
        name = f"{hashlib.sha256(png).hexdigest()[:32]}-{COMPACT_VERSION}.webp"
        path = self.root / name if self.root else None
        if path is not None and path.is_file():
            return path.read_bytes()
        data = compact_image(png)
        if path is not None:
            from talkgen.files import write_atomic

            write_atomic(path, data)
        return data


COMPACT_VERSION = 3  # bump when compact_image's output changes


def compact_image(png: bytes) -> bytes:
    import io

    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(io.BytesIO(png)) as im:
        reduced = im.convert("RGB").quantize(48, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    reduced.save(out, "WEBP", lossless=True, quality=100, method=4)
    return out.getvalue()


def predraw(result: Result, figure_cache: FigureCache, compact: bool = True) -> None:
    """Draw every image figure of ``result`` into ``figure_cache`` now (the deck then reads them back), with
    its compact copy when ``compact`` (a build that writes the report or its PDF)."""
    for spec in result.figures:
        if spec.kind != "coloured_text":
            png = figure_cache.png(spec, result)
            if compact:
                figure_cache.compact(png)


def build_deck(*, title: str, subtitle: str, speaker: str, outcomes: Sequence[Outcome],
               catalogue: Mapping[str, AnalysisInfo], templates: Path, figure_cache: FigureCache,
               provenance: Mapping[str, Any], subject_notes: Mapping[str, Sequence[Finding]] | None = None,
               controls: TalkControls | None = None) -> Deck:
    """Assemble the evidence (every analysis on every subject, in the outline's order: the report) and the
    talk told from it (beats chosen from the results: ``talkgen.render.story``). ``catalogue`` says each
    analysis's title, section and place (from the registry, passed in: render reads no analysis module);
    ``controls`` are talk.toml's choices for the story."""
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
                                                    subjects=list(subject_order)),
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
    talk, warnings = _tell(outline=outline, sections=sections, commentary=commentary, outcomes=everything,
                           catalogue=catalogue, evidence=slides, controls=controls or TalkControls())
    return Deck(title=title, subtitle=subtitle, speaker=speaker, sections=sections, slides=tuple(slides),
                findings=tuple(ranked),
                skipped=tuple(o for o in outcomes if o.status == "skipped"),
                failed=tuple(o for o in everything if o.status == "failed"),
                provenance=provenance, talk=tuple(talk), warnings=tuple(warnings),
                subjects=tuple(subject_order), ran=sum(o.status == "ok" for o in outcomes))


def _tell(*, outline: Mapping[str, Any], sections: Sequence[Section], commentary: Commentary,
          outcomes: Sequence[Outcome], catalogue: Mapping[str, AnalysisInfo], evidence: Sequence[Slide],
          controls: TalkControls) -> tuple[list[TalkEntry], list[str]]:
    """The talk told from the evidence: title, agenda, each section's divider and beats (their supporting
    slides below them), the close, talk.toml's own slides where it placed them, and an appendix of every
    other piece of evidence. Each piece of evidence is shown at most once (identical figures included)."""
    section_ids = [s.id for s in sections]
    beats = with_defaults(parse_beats(outline, section_ids), catalogue, section_ids)
    plan = plan_talk(beats, controls.beats, controls.hide, controls.pins)
    own = [o for o in outcomes if o.twin_of is None]
    subjects = list(dict.fromkeys(o.subject for o in own))
    results = {(o.subject, o.analysis): o.result for o in own if o.status == "ok" and o.result is not None}
    costs = {(o.subject, o.analysis): o.cost for o in own}
    groups: dict[tuple[str, str], list[Slide]] = {}
    for sl in evidence:
        if sl.subject is not None and sl.analysis is not None:
            groups.setdefault((sl.subject, sl.analysis), []).append(sl)
    drawable = {k: {sl.figures[0].spec_id for sl in g if sl.kind == "figure"} for k, g in groups.items()}
    choices, warnings = choose(plan, results, subjects, drawable)
    by_id = {sl.id: sl for sl in evidence}

    used: set[str] = set()  # evidence slides already in the talk
    shown: set[str] = set()  # digests of the figures already in the talk

    def take(sl: Slide | None) -> bool:
        if sl is None or sl.id in used:
            return False
        used.add(sl.id)
        if sl.digest and sl.digest in shown:
            return False  # the same picture as one already shown (e.g. the zoo two subjects share)
        if sl.digest:
            shown.add(sl.digest)
        return True

    def figure_slide(subject: str, analysis: str, spec_id: str) -> Slide | None:
        for sl in groups.get((subject, analysis), ()):
            if sl.kind == "figure" and sl.figures[0].spec_id == spec_id:
                return sl
        return None

    def overview(subject: str, analysis: str) -> Slide | None:
        return next((sl for sl in groups.get((subject, analysis), ()) if sl.kind == "overview"), None)

    def kicker(subject: str, analysis: str) -> str:
        return f"{subject} · {catalogue[analysis].title}" if analysis in catalogue else subject

    # 1. every beat's main-line slides, claiming their evidence first
    mains: dict[str, list[Slide]] = {}
    for c in choices:
        b, view = c.beat, None
        ids = iter(b.slide_ids())
        out: list[Slide] = []
        if b.kind == "lineup":
            cards = [view_of(results[(s, b.analysis)], costs.get((s, b.analysis), {})) for s in c.candidates]
            out.append(Slide(id=next(ids), kind="lineup", section=b.section,
                             title=commentary.render_file("commentary/_lineup.md.j2", cards=cards, part="title"),
                             body=commentary.render_file("commentary/_lineup.md.j2", cards=cards, part="body"),
                             notes=commentary.render_file("commentary/_lineup.md.j2", cards=cards, part="notes"),
                             beat=b.id, kicker="the models"))
            mains[b.id] = out
            continue
        result = results[(c.subject, b.analysis)]
        view = view_of(result, costs.get((c.subject, b.analysis), {}))
        why = md_escape(f"Why {c.subject}: {c.why}.")
        if b.table:
            table = next(t for t in result.tables if t.id == b.table)
            if b.columns:  # the columns a room can read; the whole table stays below, on the overview
                keep = [table.columns.index(c) for c in b.columns if c in table.columns]
                table = replace(table, columns=tuple(table.columns[i] for i in keep),
                                rows=tuple(tuple(r[i] for i in keep) for r in table.rows))
            out.append(Slide(
                id=next(ids), kind="table", section=b.section,
                title=commentary.render(b.analysis, f"title_table_{b.table}", view, fallback=table.title),
                body=md_escape(table.caption),
                notes=_join(commentary.render(b.analysis, f"notes_table_{b.table}", view, fallback=table.caption), why),
                tables=(replace(table, report_only=False),), subject=c.subject, analysis=b.analysis, beat=b.id,
                kicker=kicker(c.subject, b.analysis)))
        slots = [(c.subject, f) for f in c.figures]
        if c.contrast is not None:
            figs = resolve_figures(b, results[(c.contrast, b.analysis)], drawable.get((c.contrast, b.analysis)))
            if figs:
                slots.append((c.contrast, figs[0]))
        for i, (subject, spec_id) in enumerate(slots):
            sl = figure_slide(subject, b.analysis, spec_id)
            if not take(sl):
                continue
            assert sl is not None
            note = why if subject == c.subject else md_escape(
                f"The other end: {subject}, for contrast with {c.subject}.")
            out.append(replace(sl, id=next(ids), beat=b.id, kicker=kicker(subject, b.analysis),
                               notes=_join(sl.notes, note)))
        if out:
            mains[b.id] = out

    # 2. what sits below each beat: its model's overview and other figures, then the same figure on the others
    belows: dict[str, list[Slide]] = {}
    for c in choices:
        b = c.beat
        below: list[Slide] = []
        if b.id not in mains:
            continue
        if b.kind == "lineup":
            for s in c.candidates:
                below += [sl for sl in groups.get((s, b.analysis), ()) if sl.kind != "error" and take(sl)]
            belows[b.id] = below
            continue
        if take(overview(c.subject, b.analysis)):
            below.append(overview(c.subject, b.analysis))  # type: ignore[arg-type]
        group = [sl for sl in groups.get((c.subject, b.analysis), ()) if sl.kind == "figure"]
        if b.more is None:
            extra = group
        else:
            extra = [sl for pattern in b.more for sl in group if fnmatch.fnmatchcase(sl.figures[0].spec_id, pattern)]
        below += [sl for sl in extra if take(sl)]
        for other in c.candidates:
            if other in (c.subject, c.contrast):
                continue
            figs = resolve_figures(b, results[(other, b.analysis)], drawable.get((other, b.analysis)))
            for f in figs or ():
                sl = figure_slide(other, b.analysis, f)
                if take(sl):
                    below.append(sl)  # type: ignore[arg-type]
        belows[b.id] = below

    # 3. the main line, section by section
    entries: list[TalkEntry] = []
    by_section = {s.id: [c for c in choices if c.beat.id in mains and c.beat.section == s.id] for s in sections}
    title_slide, agenda, close = by_id["title"], by_id["agenda"], by_id["close"]
    blocks: list[tuple[Slide, list[Slide], str | None]] = [(title_slide, [], None), (agenda, [], None)]
    for sec in sections:
        if sec.id == "close":
            continue
        chosen = by_section[sec.id]
        if sec.id != "title" and chosen:
            skipped = [o for o in own if o.status != "ok" and catalogue.get(o.analysis) is not None
                       and catalogue[o.analysis].section == sec.id]
            blocks.append((Slide(
                id=f"section-{sec.id}", kind="divider", section=sec.id, title=f"{sec.number}. {sec.title}",
                body=commentary.render_file("commentary/_section.md.j2", section=sec,
                                            claims=[c.beat.claim for c in chosen]),
                notes=commentary.render_file("commentary/_section_notes.md.j2", section=sec, skipped=skipped)),
                [], None))
        for c in chosen:
            slides_of = mains[c.beat.id]
            for i, sl in enumerate(slides_of):
                blocks.append((sl, belows.get(c.beat.id, []) if i == len(slides_of) - 1 else [], c.beat.id))
    blocks.append((close, [], None))
    rest = [sl for sl in evidence if sl.kind not in ("title", "agenda", "divider", "closing") and take(sl)]
    if rest:
        blocks.append((Slide(id="appendix", kind="divider", section="appendix", title="Appendix",
                             body=commentary.render_file("commentary/_appendix.md.j2", n=len(rest)),
                             notes=Markup("Everything the talk did not show, one key down, in the report's order.")),
                       rest, None))

    # 4. talk.toml: the speaker's own slides where they asked, and titles or notes by slide id
    present = [sl.id for sl, _, _ in blocks]
    virtual = ["title", "agenda"]
    for sec in sections:
        if sec.id in ("title", "close"):
            virtual += [b for c in by_section.get(sec.id, []) for b in c.beat.slide_ids()]
            continue
        virtual.append(f"section-{sec.id}")
        virtual += [i for b in plan.beats if b.section == sec.id for i in b.slide_ids()]
    virtual += ["close", "appendix"]
    for added in controls.add:
        anchor = added.after
        if anchor not in present:  # its slide is not in this build: the nearest earlier one that is
            at = virtual.index(anchor) if anchor in virtual else 0
            anchor = next((v for v in reversed(virtual[:at]) if v in present), "agenda")
        pos = present.index(anchor) + 1
        follows = blocks[pos - 1][0]
        sl = Slide(id=added.id, kind="own", section=follows.section, title=md_escape(added.title),
                   body=own_markdown(added.markdown), notes=own_markdown(added.notes), kicker="")
        blocks.insert(pos, (sl, [], None))
        present.insert(pos, added.id)
    for i, (sl, below, beat) in enumerate(blocks):
        o = controls.slides.get(sl.id)
        if o:
            blocks[i] = (replace(sl, title=md_escape(o["title"]) if "title" in o else sl.title,
                                 notes=own_markdown(o["notes"]) if "notes" in o else sl.notes), below, beat)
    for sl, below, beat in blocks:
        entries.append(TalkEntry(slide=sl, place="main", beat=beat))
        place = "appendix" if sl.id == "appendix" else "below"
        entries += [TalkEntry(slide=piece, place=place, beat=beat, under=sl.id) for b in below for piece in _fit(b)]
    return entries, warnings


TALK_TABLE_LINES = 16  # a line of a table is ~30 px at 1280x720: more does not fit under a title and caption
TALK_LINE_CHARS = 125  # characters of table text across a slide


def _row_lines(table: Table) -> list[int]:
    """How many lines each row of ``table`` takes on a slide (the header first): columns get the width
    their longest cell asks for, as a browser gives it, and a row is as tall as its tallest cell."""
    cells = [table.columns] + [tuple(str(c) for c in r) for r in table.rows]
    longest = [max(len(row[i]) for row in cells) or 1 for i in range(len(table.columns))]
    widths = [max(6, TALK_LINE_CHARS * n / sum(longest)) for n in longest]
    return [max(-(-len(c) // int(w)) for c, w in zip(row, widths)) or 1 for row in cells]


def _fit(slide: Slide) -> list[Slide]:
    """A slide as the talk shows it: an overview's tables each on slides of their own below it, as many
    rows to a slide as fit (a long table goes on over several), so nothing runs off a 1280x720 slide."""
    shown = [t for t in slide.tables if not t.report_only]
    if slide.kind != "overview" or not shown:
        return [slide]
    out = [replace(slide, tables=tuple(t for t in slide.tables if t.report_only))]
    for t in shown:
        lines = _row_lines(t)
        pages: list[list[tuple[str, ...]]] = [[]]
        used = lines[0]
        for row, n in zip(t.rows, lines[1:]):
            if pages[-1] and used + n > TALK_TABLE_LINES:
                pages.append([])
                used = lines[0]
            pages[-1].append(row)
            used += n
        for k, rows in enumerate(pages):
            part = f" ({k + 1} of {len(pages)})" if len(pages) > 1 else ""
            out.append(Slide(id=f"{slide.id}-{t.id}" + (f"-{k + 1}" if k else ""), kind="table",
                             section=slide.section, title=md_escape(t.title + part), body=md_escape(t.caption),
                             notes=md_escape(t.caption or t.title), tables=(replace(t, title="", rows=tuple(rows)),),
                             subject=slide.subject, analysis=slide.analysis, kicker=slide.kicker or (slide.subject or "")))
    return out


def own_markdown(text: str) -> Markup:
    """The speaker's own Markdown (an added slide, an overridden note): Markdown stays Markdown, HTML is
    shown as text (and the renderer drops harmful link protocols)."""
    return Markup(str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _join(*parts: Any) -> Markup:
    return Markup("\n\n".join(str(p) for p in parts if str(p).strip()))


def plain(text: Any) -> str:
    """A title as plain text: Markdown escapes and HTML entities undone."""
    import html
    import re

    return html.unescape(re.sub(r"\\(.)", r"\1", str(text))).strip()


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
    # what the size budget sampled (talkgen.analyses.budget), said on every slide of the analysis
    sampled = md_escape(f"{result.data['sampled'][0].upper()}{result.data['sampled'][1:]}.") \
        if isinstance(result.data.get("sampled"), str) and result.data["sampled"] else ""

    def with_sampled(body: Markup) -> Markup:
        return Markup(f"{body}\n\n*{sampled}*") if sampled else body

    out = [Slide(
        id=_slug(o.subject, o.analysis), kind="overview", section=section,
        title=f"{title_of}: {o.subject}",
        body=with_sampled(commentary.render(o.analysis, "overview", view, fallback=title_of)),
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
                        title=spec.title, caption=spec.caption, alt=spec.alt, png=png, html=html,
                        compacter=figure_cache.compact)
        out.append(Slide(
            id=_slug(o.subject, o.analysis, spec.id), kind="figure", section=section,
            # the claim this figure bears out, with its number ("title_<id>" in the commentary); the topic
            # when the analysis has none
            title=commentary.render(o.analysis, f"title_{spec.id}", view, fallback=spec.title, figure=spec),
            digest=hashlib.sha1(png or html.encode()).hexdigest(),
            body=with_sampled(commentary.render(o.analysis, f"fig_{spec.id}", view, fallback=spec.caption,
                                                figure=spec)),
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
