"""The talk as a story: beats chosen from the results.

A beat (``templates/outline.toml``'s ``[[beats]]``) makes one claim with one analysis's result, shown on
the subject whose measurement shows it best. Choosing is a pure function of the results, the outline and
talk.toml's choices (order, hidden beats, pinned subjects): :func:`choose` returns, per beat, the subject,
the figures of the main line and, for a beat with a ``contrast`` rule, the subject at the other end.
Nothing here draws or renders; the deck (``talkgen.render.deck``) turns the choices into slides.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from talkgen.results import AnalysisInfo, Result

BEAT_KINDS = ("evidence", "lineup")
_BEAT_KEYS = {"id", "section", "analysis", "claim", "figures", "table", "columns", "more", "pick", "contrast",
              "kind"}


@dataclass(frozen=True)
class Beat:
    """One claim of the talk (see the comment above ``[[beats]]`` in templates/outline.toml)."""

    id: str
    section: str
    analysis: str
    claim: str
    figures: tuple[str, ...] = ()
    table: str = ""
    columns: tuple[str, ...] = ()  # the table's columns the main-line slide shows (all when empty)
    more: tuple[str, ...] | None = None
    pick: str = ""
    contrast: str = ""
    kind: str = "evidence"
    declared: bool = True  # False: made for an analysis that no beat of the outline names

    def slide_ids(self) -> tuple[str, ...]:
        """The ids its main-line slides can have: ``id``, ``id-2``, ``id-3``."""
        n = max(1, len(self.figures)) + (1 if self.contrast else 0)
        return tuple(self.id if i == 0 else f"{self.id}-{i + 1}" for i in range(min(n, 3)))


@dataclass(frozen=True)
class Choice:
    """What a beat shows in this build: ``subject``'s figures (spec ids, one main-line slide each) or its
    table, ``contrast`` the subject for the contrasting slide (None: none), and why (for the notes)."""

    beat: Beat
    subject: str
    figures: tuple[str, ...]
    contrast: str | None = None
    why: str = ""
    candidates: tuple[str, ...] = ()
    pinned: bool = False


@dataclass(frozen=True)
class TalkPlan:
    """The beats to give, in order, with what talk.toml pinned (beat id -> subject)."""

    beats: tuple[Beat, ...]
    pins: Mapping[str, str] = field(default_factory=dict)


def parse_beats(outline: Mapping[str, Any], sections: Sequence[str]) -> tuple[Beat, ...]:
    """The outline's beats, checked (a mistake in the outline is the project's, so it raises ValueError)."""
    beats: list[Beat] = []
    seen: set[str] = set()
    for i, raw in enumerate(outline.get("beats", [])):
        unknown = set(raw) - _BEAT_KEYS
        if unknown:
            raise ValueError(f"outline.toml beats[{i}]: unknown keys {sorted(unknown)}")
        beat = Beat(id=raw["id"], section=raw["section"], analysis=raw["analysis"], claim=raw["claim"],
                    figures=tuple(raw.get("figures", ())), table=raw.get("table", ""),
                    columns=tuple(raw.get("columns", ())),
                    more=tuple(raw["more"]) if "more" in raw else None, pick=raw.get("pick", ""),
                    contrast=raw.get("contrast", ""), kind=raw.get("kind", "evidence"))
        if beat.id in seen:
            raise ValueError(f"outline.toml: beat {beat.id!r} declared twice")
        if beat.section not in sections:
            raise ValueError(f"outline.toml: beat {beat.id!r} names unknown section {beat.section!r}")
        if beat.kind not in BEAT_KINDS:
            raise ValueError(f"outline.toml: beat {beat.id!r}: kind must be one of {BEAT_KINDS}")
        if beat.kind == "evidence" and not beat.figures and not beat.table:
            raise ValueError(f"outline.toml: beat {beat.id!r} shows neither figures nor a table")
        if len(beat.slide_ids()) > 3 or len(beat.figures) + bool(beat.contrast) > 3:
            raise ValueError(f"outline.toml: beat {beat.id!r} has more than 3 main-line slides")
        for rule in (beat.pick, beat.contrast):
            if rule:
                _parse_rule(rule)
        seen.add(beat.id)
        beats.append(beat)
    return tuple(beats)


def load_outline(templates: "Path | None" = None) -> dict[str, Any]:
    """templates/outline.toml: the talk's sections and beats."""
    import tomllib

    from talkgen.resources import templates_dir

    with open(Path(templates or templates_dir()) / "outline.toml", "rb") as f:
        return tomllib.load(f)


def outline_beats(catalogue: Mapping[str, AnalysisInfo], templates: "Path | None" = None) -> tuple[Beat, ...]:
    """Every beat the talk can have: the outline's, plus one per analysis that no beat names."""
    outline = load_outline(templates)
    sections = [s["id"] for s in outline["sections"]]
    return with_defaults(parse_beats(outline, sections), catalogue, sections)


def beat_ids(catalogue: Mapping[str, AnalysisInfo]) -> tuple[str, ...]:
    """The ids of every beat of the talk, in order (one for each analysis of ``catalogue`` no beat names)."""
    return tuple(b.id for b in outline_beats(catalogue))


def main_line_ids(beats: Sequence[str], catalogue: Mapping[str, AnalysisInfo]) -> tuple[str, ...]:
    """The ids a main-line slide can have when ``beats`` are given: title, agenda, the section dividers,
    the beats' slides, the close and the appendix (talk.toml's overrides and additions name these)."""
    outline = load_outline()
    by_id = {b.id: b for b in outline_beats(catalogue)}
    ids = ["title", "agenda"] + [f"section-{s['id']}" for s in outline["sections"]
                                 if s["id"] not in ("title", "close")]
    for b in beats:
        ids += by_id[b].slide_ids()
    return tuple(ids + ["close", "appendix"])


def with_defaults(beats: Sequence[Beat], catalogue: Mapping[str, AnalysisInfo],
                  sections: Sequence[str]) -> tuple[Beat, ...]:
    """The outline's beats plus one for every analysis no beat names (an analysis dropped into the package
    shows its first figure at the end of its section), in the outline's section order."""
    named = {b.analysis for b in beats}
    extra = [Beat(id=name, section=info.section, analysis=name, claim=info.title, figures=("*",),
                  declared=False)
             for name, info in catalogue.items() if name not in named and info.section in sections]
    rank = {s: i for i, s in enumerate(sections)}
    ordered = list(beats) + sorted(extra, key=lambda b: (catalogue[b.analysis].order, b.id))
    return tuple(sorted(ordered, key=lambda b: rank[b.section]))  # stable: declared order within a section


def plan_talk(beats: Sequence[Beat], order: Sequence[str] = (), hide: Sequence[str] = (),
              pins: Mapping[str, str] | None = None) -> TalkPlan:
    """The beats talk.toml asks for: ``order`` chooses and orders them (within their sections; empty:
    every beat in the outline's order), ``hide`` leaves some out, ``pins`` fixes a beat's subject."""
    by_id = {b.id: b for b in beats}
    if order:
        position = {bid: i for i, bid in enumerate(order)}
        chosen = [by_id[b] for b in order if b in by_id]
        section_rank = {}
        for b in beats:
            section_rank.setdefault(b.section, len(section_rank))
        chosen.sort(key=lambda b: (section_rank[b.section], position[b.id]))
    else:
        chosen = list(beats)
    hidden = set(hide)
    return TalkPlan(beats=tuple(b for b in chosen if b.id not in hidden), pins=dict(pins or {}))


# --- choosing the subject -------------------------------------------------------------------------------

def _parse_rule(rule: str) -> tuple[str, str]:
    direction, sep, expr = rule.partition(":")
    if not sep or direction not in ("max", "min") or not expr.strip():
        raise ValueError(f"a pick rule is 'max:EXPR' or 'min:EXPR', got {rule!r}")
    return direction, expr.strip()


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def score(result: Result, expr: str, direction: str = "max") -> float | None:
    """The value of a pick expression on ``result``'s summaries (None when a summary is missing):
    a name, ``a - b``, ``a / b``, or a pattern with ``*`` (its largest match for max, smallest for min)."""
    def value(name: str) -> float | None:
        if "*" in name:
            vals = [v for k, s in result.summaries.items() if fnmatch.fnmatchcase(k, name)
                    for v in [_finite(s.value)] if v is not None]
            if not vals:
                return None
            return max(vals) if direction == "max" else min(vals)
        s = result.summaries.get(name)
        return None if s is None else _finite(s.value)

    for op in (" - ", " / "):
        if op in expr:
            a, b = (value(p.strip()) for p in expr.split(op, 1))
            if a is None or b is None:
                return None
            if op == " - ":
                return a - b
            return a / b if b else None
    return value(expr)


def resolve_figures(beat: Beat, result: Result, drawable: set[str] | None = None) -> tuple[str, ...] | None:
    """The spec ids of ``beat``'s main-line figures in ``result`` (None when one is missing): a plain id, a
    family ``name-*`` (its first figure in the result's order), ``*`` (the result's first figure), or
    alternatives ``a|b``. ``drawable``: the ids that could be drawn (an undrawable figure is missing)."""
    ids = [s.id for s in result.figures if drawable is None or s.id in drawable]
    out = []
    for want in beat.figures:
        found = None
        for alt in want.split("|"):
            matches = [i for i in ids if fnmatch.fnmatchcase(i, alt)]
            if matches:
                found = matches[0]
                break
        if found is None:
            return None
        out.append(found)
    if beat.table and not any(t.id == beat.table for t in result.tables):
        return None
    return tuple(out)


def choose(plan: TalkPlan, results: Mapping[tuple[str, str], Result], subjects: Sequence[str],
           drawable: Mapping[tuple[str, str], set[str]] | None = None) -> tuple[list[Choice], list[str]]:
    """Each beat's subject and figures, and warnings (a pin that cannot be honoured). ``results``: the
    ok results by (subject, analysis); ``subjects`` the talk's subjects in order (ties go to the first).
    A beat with no candidate (its analysis ran on no subject) is left out of the list."""
    choices: list[Choice] = []
    warnings: list[str] = []
    for beat in plan.beats:
        if beat.kind == "lineup":
            ran = tuple(s for s in subjects if (s, beat.analysis) in results)
            if ran:
                choices.append(Choice(beat=beat, subject="", figures=(), candidates=ran))
            continue
        cands: list[tuple[str, tuple[str, ...]]] = []
        for s in subjects:
            r = results.get((s, beat.analysis))
            if r is None:
                continue
            figs = resolve_figures(beat, r, None if drawable is None else drawable.get((s, beat.analysis), set()))
            if figs is not None:
                cands.append((s, figs))
        if not cands:
            continue
        names = tuple(s for s, _ in cands)
        ranked = _ranked(beat.pick, cands, results, beat.analysis)
        pick, figs = ranked[0]
        why = _why(beat.pick, ranked, results, beat.analysis)
        pinned = False
        pin = plan.pins.get(beat.id)
        if pin is not None:
            hit = [c for c in cands if c[0] == pin]
            if hit:
                pick, figs = hit[0]
                why, pinned = f"pinned to {pin} in talk.toml", True
            else:
                warnings.append(f"beat {beat.id!r} is pinned to {pin!r}, which has no {beat.analysis} result to "
                                f"show it; shown on {pick}")
        contrast = None
        if beat.contrast and len(cands) > 1:
            other = _ranked(beat.contrast, cands, results, beat.analysis)[0][0]
            direction, expr = _parse_rule(beat.contrast)
            mine = score(results[(pick, beat.analysis)], expr, direction)
            theirs = score(results[(other, beat.analysis)], expr, direction)
            if other != pick and theirs is not None and theirs != mine:
                contrast = other
        choices.append(Choice(beat=beat, subject=pick, figures=figs, contrast=contrast, why=why,
                              candidates=names, pinned=pinned))
    return choices, warnings


def _ranked(rule: str, cands: list[tuple[str, tuple[str, ...]]], results: Mapping[tuple[str, str], Result],
            analysis: str) -> list[tuple[str, tuple[str, ...]]]:
    if not rule:
        return list(cands)
    direction, expr = _parse_rule(rule)

    def key(item: tuple[int, tuple[str, tuple[str, ...]]]) -> tuple[int, float, int]:
        i, (s, _) = item
        v = score(results[(s, analysis)], expr, direction)
        if v is None:
            return (1, 0.0, i)  # a subject without the measurement comes after those with it
        return (0, -v if direction == "max" else v, i)

    return [c for _, c in sorted(enumerate(cands), key=key)]


def _why(rule: str, ranked: list[tuple[str, tuple[str, ...]]], results: Mapping[tuple[str, str], Result],
         analysis: str) -> str:
    """Why this subject, in words for the speaker notes."""
    if len(ranked) == 1:
        return "the only model this was measured on"
    if not rule:
        return "the first of the models it was measured on"
    direction, expr = _parse_rule(rule)
    from talkgen.render.commentary import fmt

    values = []
    for s, _ in ranked:
        v = score(results[(s, analysis)], expr, direction)
        values.append(f"{s} {fmt(v)}")
    word = "highest" if direction == "max" else "lowest"
    return f"the {word} {expr} of {len(ranked)} models ({', '.join(values)})"
