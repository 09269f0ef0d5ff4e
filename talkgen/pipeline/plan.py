"""The plan: which analyses apply to which subject, in an order that respects declared deps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from talkgen.analyses.base import Analysis, get_analysis, registry
from talkgen.errors import TalkgenError
from talkgen.subject import Subject


@dataclass(frozen=True)
class PlanItem:
    subject: Subject
    analysis: Analysis
    params: Mapping[str, Any]
    skip_reason: str | None = None
    sampled: str = ""  # what the size budget sampled (``talkgen.analyses.budget``); "" when it runs as asked


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]

    def to_run(self) -> list[PlanItem]:
        return [i for i in self.items if i.skip_reason is None]


def select_names(only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[str]:
    """Registry order, filtered by --only/--skip; unknown names are an error listing valid ones."""
    names = list(registry())
    for name in list(only) + list(skip):
        if name not in names:
            raise TalkgenError(f"unknown analysis {name!r}; valid names: {', '.join(names)}")
    chosen = [n for n in names if (not only or n in only) and n not in skip]
    return _with_deps(chosen)


def _with_deps(names: list[str]) -> list[str]:
    """Topological order (deps first), pulling in deps that were not asked for."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered:
            return
        if n in visiting:
            raise TalkgenError(f"analysis dependency cycle through {n!r}")
        visiting.add(n)
        for d in get_analysis(n).deps:
            visit(d)
        visiting.discard(n)
        ordered.append(n)

    for n in names:
        visit(n)
    return ordered


def make_plan(subjects: Sequence[Subject], names: Sequence[str], profile: str,
              overrides: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0, device: str = "cpu") -> Plan:
    """Every (subject, analysis) item, analysis-major: every subject's result of an analysis exists
    before the next analysis runs. Gathering analyses come last, and before them the twins they asked
    for (``Analysis.twins``) with every analysis that runs on that kind of twin: the comparison
    baselines are ordinary, cached items of the plan. Each item is sized to its profile's budget on
    ``device`` (a GPU does more in the same time: ``talkgen.analyses.budget``)."""
    overrides = overrides or {}
    for a in overrides:
        if a not in registry():
            raise TalkgenError(f"parameters given for unknown analysis {a!r}; valid names: {', '.join(registry())}")
    analyses = [get_analysis(n) for n in names]
    params = {a.name: a.resolve_params(profile, overrides.get(a.name)) for a in analyses}
    plain = [a for a in analyses if not a.gathers]
    gatherers = [a for a in analyses if a.gathers]
    items = [_item(s, a, params[a.name], profile, device) for a in plain for s in subjects]
    for twin, request in _twins(subjects, gatherers, params, seed):
        for a in plain:
            if request.kind in a.runs_on_twins:
                mine = request.overrides(a.name)  # the twin's own parameters go on top of the subject's
                if request.profile:
                    p = a.resolve_params(request.profile, mine)
                else:
                    p = a.resolve_params(profile, {**overrides.get(a.name, {}), **mine}) if mine else params[a.name]
                items.append(_item(twin, a, p, request.profile or profile, device))
    items += [_item(s, a, params[a.name], profile, device) for a in gatherers for s in subjects]
    return Plan(tuple(items))


def _item(subject: Subject, analysis: Analysis, params: Mapping[str, Any], profile: str,
          device: str = "cpu") -> PlanItem:
    from talkgen.analyses.budget import fit

    verdict = analysis.applies_to(subject)
    if verdict is not True:
        return PlanItem(subject, analysis, params, verdict or "does not apply")
    sized, sampled, too_large = fit(analysis, subject, params, profile, device)
    return PlanItem(subject, analysis, sized, too_large, sampled)


def _twins(subjects: Sequence[Subject], gatherers: Sequence[Analysis], params: Mapping[str, Mapping[str, Any]],
           seed: int) -> list[tuple[Subject, Any]]:
    """The twins the gathering analyses asked for, each made once (those that cannot be made are left out:
    the analysis that asked says so)."""
    from talkgen.models.twins import make_twin

    made: dict[tuple[str, str, Any, Any], tuple[Subject, Any]] = {}
    for a in gatherers:
        for s in subjects:
            if a.applies_to(s) is not True:
                continue
            for request in a.twins(s, params[a.name]):
                key = (s.name, request.kind, request.width, request.profile, request.params)
                if key in made:
                    continue
                twin = make_twin(s, request.kind, request.width, seed)
                if not isinstance(twin, str):
                    made[key] = (twin, request)
    return list(made.values())
