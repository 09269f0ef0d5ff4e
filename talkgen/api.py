"""The small public Python API: recompute a figure or a result of a build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from talkgen.analyses.base import Result
from talkgen.config import TalkConfig
from talkgen.errors import TalkgenError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureImage:
    """A drawn figure: ``figure`` (matplotlib) and ``png`` (bytes); shows itself in Jupyter."""

    figure: "Figure | None"
    png: bytes
    alt: str
    html: str = ""  # coloured-text figures are HTML, not images

    def _repr_png_(self) -> bytes | None:
        return self.png or None

    def _repr_html_(self) -> str | None:
        return self.html or None


_RUNS: dict[str, dict[tuple[str, str], Any]] = {}  # one run of a talk's plan per process (canonical JSON -> outcomes)


def _outcomes(talk: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """Every (subject, analysis) outcome of the talk, from the same plan the build ran: the same
    subjects and analyses give the same cache keys, so a built talk is read back, not recomputed
    (a gathering analysis such as the fingerprint or the costs is keyed by everything it gathered)."""
    from talkgen.build import load_subject
    from talkgen.hashing import canonical_json
    from talkgen.pipeline import Cache, make_plan, run_plan
    from talkgen.pipeline.plan import select_names

    key = canonical_json(dict(talk))
    if key not in _RUNS:
        talk = dict(talk)
        cache_dir = talk.pop("cache", None)
        config = TalkConfig.from_json(talk)
        subjects = [load_subject(s) for s in config.subjects]
        plan = make_plan(subjects, select_names(config.only, config.skip), config.profile, config.params, config.seed,
                         config.device)
        cache = Cache(Path(cache_dir) if cache_dir else Path(".talkgen-cache"))
        outcomes = run_plan(plan, cache, seed=config.seed, device=config.device, profile=config.profile)
        _RUNS[key] = {(o.subject, o.analysis): o for o in outcomes}
    return _RUNS[key]


def result(talk: Mapping[str, Any], subject: str, analysis: str) -> Result:
    """The Result of ``analysis`` on ``subject`` for the talk ``talk`` (from the cache, or computed)."""
    outcomes = _outcomes(talk)
    subjects = list(dict.fromkeys(s for s, _ in outcomes))
    if subject not in subjects:
        raise TalkgenError(f"no subject {subject!r} in this talk; subjects: {', '.join(subjects)}")
    outcome = outcomes.get((subject, analysis))
    if outcome is None:
        analyses = [a for s, a in outcomes if s == subject]
        raise TalkgenError(f"{analysis!r} is not in this talk; analyses: {', '.join(analyses)}")
    if outcome.status != "ok" or outcome.result is None:
        raise TalkgenError(f"{analysis} on {subject}: {outcome.status}: {outcome.message}")
    return outcome.result


def figure(talk: Mapping[str, Any], subject: str, analysis: str, figure_id: str) -> FigureImage:
    """Recompute one figure of a build through the cache and draw it in the house style."""
    from talkgen.render.figures import render

    res = result(talk, subject, analysis)
    for spec in res.figures:
        if spec.id == figure_id and spec.kind == "coloured_text":
            from talkgen.render.html import coloured_text_html

            return FigureImage(figure=None, png=b"", alt=spec.alt, html=coloured_text_html(spec, res.arrays))
        if spec.id == figure_id:
            fig, png, _ = render(spec, res.arrays)
            return FigureImage(figure=fig, png=png, alt=spec.alt)
    raise TalkgenError(f"{analysis} has no figure {figure_id!r}; figures: {', '.join(s.id for s in res.figures)}")
