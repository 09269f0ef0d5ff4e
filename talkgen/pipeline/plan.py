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
              overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    overrides = overrides or {}
    for a in overrides:
        if a not in registry():
            raise TalkgenError(f"parameters given for unknown analysis {a!r}; valid names: {', '.join(registry())}")
    items = []
    # analysis-major: every subject's result of an analysis exists before the next analysis runs,
    # so an analysis that gathers (the fingerprint) can compare its subject with the others
    for name in names:
        analysis = get_analysis(name)
        params = analysis.resolve_params(profile, overrides.get(name))
        for subject in subjects:
            verdict = analysis.applies_to(subject)
            reason = None if verdict is True else (verdict or "does not apply")
            items.append(PlanItem(subject, analysis, params, reason))
    return Plan(tuple(items))
