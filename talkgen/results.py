"""The data that flows from the analyses to the renderers: torch-free, plain, frozen.

``Result`` is what an analysis measured (numpy arrays, named scalars with units and meanings, notes,
declarative figure specs from ``talkgen.specs``, tables, findings and trust checks); ``Outcome`` is
what happened to one (subject, analysis) pair in a build; ``AnalysisInfo`` is what the renderers
may know about an analysis (its title, section and place). Nothing here imports torch, an
analysis or the pipeline, so that both sides can depend on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from talkgen.specs import FigureSpec, Table, spec_from_json

SEVERITIES = ("high", "medium", "low", "info")


@dataclass(frozen=True)
class Scalar:
    """A named number with its unit and what it means, e.g. Scalar(3.2, "", "stable rank of fc1").

    A number estimated from a sample (an accuracy, a rate, an AUC, Kendall's tau, an R²) also carries ``n``,
    how many items it was measured on (held-out inputs, unseen zoo members), and ``lo``/``hi``, its interval
    at ``talkgen.stats.CI_LEVEL``: the renderers print them with it (``render.text.stat``)."""

    value: float
    unit: str
    meaning: str
    n: int | None = None
    lo: float | None = None
    hi: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "unit": self.unit, "meaning": self.meaning}
        out.update({k: v for k, v in (("n", self.n), ("lo", self.lo), ("hi", self.hi)) if v is not None})
        return out


@dataclass(frozen=True)
class Finding:
    """Something an auditor should act on, with the measured value and the threshold it was judged by."""

    severity: str
    title: str
    detail: str
    value: float | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class Check:
    """A trust check an analysis ran on its own method: what was measured against which bar.

    ``tool`` is the method checked ("saliency: Integrated Gradients"), ``check`` what was tested
    ("completeness"), ``measured`` the number(s) in words, ``passed`` the verdict against the bar and
    ``verdict`` that verdict in words ("trust", "fails a check", "not converged").
    """

    tool: str
    check: str
    measured: str
    passed: bool
    verdict: str


def _frozen_array(a: Any) -> np.ndarray:
    arr = np.array(a, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Result:
    """What an analysis measured. Frozen, plain data; saved as ``arrays.npz`` + ``result.json``."""

    analysis: str
    subject: str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    summaries: Mapping[str, Scalar] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    tables: tuple[Table, ...] = ()
    findings: tuple[Finding, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()

    def __post_init__(self) -> None:
        arrays = {k: _frozen_array(v) for k, v in self.arrays.items()}
        for spec in self.figures:
            missing = [k for k in spec.array_keys() if k not in arrays]
            if missing:
                raise ValueError(f"figure {spec.id!r} names arrays the result lacks: {missing}")
        object.__setattr__(self, "arrays", MappingProxyType(arrays))
        object.__setattr__(self, "summaries", MappingProxyType(dict(self.summaries)))
        object.__setattr__(self, "data", MappingProxyType(json.loads(json.dumps(dict(self.data)))))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "figures", tuple(self.figures))
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "checks", tuple(self.checks))

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis": self.analysis,
            "subject": self.subject,
            "summaries": {k: s.to_json() for k, s in self.summaries.items()},
            "notes": list(self.notes),
            "figures": [f.to_json() for f in self.figures],
            "tables": [t.to_json() for t in self.tables],
            "findings": [vars(f) for f in self.findings],
            "data": dict(self.data),
            "checks": [vars(c) for c in self.checks],
            "arrays": sorted(self.arrays),
        }

    def save(self, directory: str) -> None:
        """Write ``arrays.npz`` and ``result.json`` into an existing directory."""
        np.savez(os.path.join(directory, "arrays.npz"), **dict(self.arrays))
        with open(os.path.join(directory, "result.json"), "w", encoding="utf-8") as f:
            # keys in the order the analysis wrote them: a result read back from the cache renders exactly as
            # the fresh one (commentary iterates its dicts; sorted keys reordered lists on the slides)
            json.dump(self.to_json(), f, indent=1, allow_nan=True)

    @classmethod
    def load(cls, directory: str) -> "Result":
        with open(os.path.join(directory, "result.json"), encoding="utf-8") as f:
            d = json.load(f)
        with np.load(os.path.join(directory, "arrays.npz"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(
            analysis=d["analysis"],
            subject=d["subject"],
            arrays=arrays,
            summaries={k: Scalar(**v) for k, v in d["summaries"].items()},
            notes=tuple(d["notes"]),
            figures=tuple(spec_from_json(s) for s in d["figures"]),
            tables=tuple(Table.from_json(t) for t in d["tables"]),
            findings=tuple(Finding(**f) for f in d["findings"]),
            data=d["data"],
            checks=tuple(Check(**c) for c in d.get("checks", ())),
        )


@dataclass
class Outcome:
    """What happened to one (subject, analysis) pair in a build."""

    subject: str
    analysis: str
    status: str  # "ok" | "skipped" | "failed"
    result: Result | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    message: str = ""
    key: str = ""
    traceback: str = ""
    twin_of: str | None = None  # a twin's outcome (a comparison baseline, ``talkgen.models.twins``): not a slide


@dataclass(frozen=True)
class AnalysisInfo:
    """What the renderers know of an analysis: its name, title, section of the talk and place in it."""

    name: str
    title: str
    section: str
    order: float
