"""The analysis contract: Analysis, Result, Scalar, Finding, Context and the registry.

An analysis is one small class: it declares what it applies to, its parameters per
profile and its dependencies, and ``run(ctx)`` returns a frozen :class:`Result` of plain
data (arrays, named scalars, notes, figure specs). It never draws or writes HTML.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np
import torch

from talkgen.analyses.specs import FigureSpec, Table, spec_from_json
from talkgen.errors import TalkgenError

if TYPE_CHECKING:
    from talkgen.subject import Subject

SEVERITIES = ("high", "medium", "low", "info")


@dataclass(frozen=True)
class Scalar:
    """A named number with its unit and what it means, e.g. Scalar(3.2, "", "stable rank of fc1")."""

    value: float
    unit: str
    meaning: str


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

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis": self.analysis,
            "subject": self.subject,
            "summaries": {k: {"value": s.value, "unit": s.unit, "meaning": s.meaning}
                          for k, s in self.summaries.items()},
            "notes": list(self.notes),
            "figures": [f.to_json() for f in self.figures],
            "tables": [t.to_json() for t in self.tables],
            "findings": [vars(f) for f in self.findings],
            "data": dict(self.data),
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
        )


@dataclass(frozen=True)
class Context:
    """What an analysis may read: the subject, its parameters, seed, device and its deps' results."""

    subject: "Subject"
    params: Mapping[str, Any]
    seed: int
    device: torch.device
    profile: str
    deps: Mapping[str, Result] = field(default_factory=dict)
    # For an analysis that gathers: the resolved parameters of every analysis in the plan.
    plan_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Where an analysis may keep large build inputs it makes (the model zoo): the build's cache
    # folder, or None (then such inputs go to a temporary folder and are not kept).
    store: "Path | None" = None
    # For an analysis that gathers: the cost ledger entry of every result in ``deps`` (same keys).
    costs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "deps", MappingProxyType(dict(self.deps)))
        object.__setattr__(self, "plan_params", MappingProxyType(dict(self.plan_params)))
        object.__setattr__(self, "costs", MappingProxyType(dict(self.costs)))

    def generator(self) -> torch.Generator:
        """A fresh torch generator seeded from the build seed (same seed, same bytes)."""
        return torch.Generator().manual_seed(self.seed)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def evenly_spaced(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced, the first and the last always included."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


class Analysis:
    """Base class. Subclasses set the class attributes and implement :meth:`run`.

    ``version`` is bumped by hand whenever the maths changes: it is part of the cache key.
    ``params`` holds the defaults for the ``full`` profile; ``quick`` overrides some of them.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    section: ClassVar[str]
    version: ClassVar[int] = 1
    deps: ClassVar[tuple[str, ...]] = ()
    # True: ``ctx.deps`` holds every result that ran before it, of every subject, keyed
    # "subject/analysis" (the fingerprint); register such an analysis after those it reads.
    gathers: ClassVar[bool] = False
    applies_text: ClassVar[str] = "any model"
    params: ClassVar[Mapping[str, Any]] = {}
    quick: ClassVar[Mapping[str, Any]] = {}
    # A parameter's type is its default's; numbers must be finite and at least 1 (integers) or 0
    # (floats) unless a bound here says otherwise: name -> (lowest, highest), None for open.
    param_bounds: ClassVar[Mapping[str, tuple[float | None, float | None]]] = {}

    @classmethod
    def param_problem(cls, key: str, value: Any) -> str | None:
        """Why ``value`` is not a valid ``key`` for this analysis (None when it is)."""
        if key not in cls.params:
            return f"unknown parameter; known: {', '.join(sorted(cls.params)) or '(none)'}"
        default = cls.params[key]
        if isinstance(default, (list, tuple)):
            if not isinstance(value, (list, tuple)) or not value:
                return f"must be a non-empty list like {list(default)!r}, got {value!r}"
            if len(default) == 2 and key.endswith("_steps") and len(value) != 2:
                return f"must be [low, high], got {value!r}"
            kind = default[0] if default else 0.0
            for item in value:
                problem = cls._scalar_problem(key, kind, item)
                if problem:
                    return problem
            if key.endswith("_steps") and len(value) == 2 and value[0] > value[1]:
                return f"must be [low, high] with low <= high, got {value!r}"
            return None
        return cls._scalar_problem(key, default, value)

    @classmethod
    def _scalar_problem(cls, key: str, default: Any, value: Any) -> str | None:
        if isinstance(default, bool):
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if isinstance(default, str):
            return None if isinstance(value, str) else f"must be a string, got {type(value).__name__} {value!r}"
        if isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer, got {type(value).__name__} {value!r}"
            lo, hi = cls.param_bounds.get(key, (1, None))
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number, got {type(value).__name__} {value!r}"
            if not math.isfinite(value):
                return f"must be a finite number, got {value!r}"
            lo, hi = cls.param_bounds.get(key, (0, None))
        if lo is not None and value < lo:
            return f"must be at least {lo:g}, got {value!r}"
        if hi is not None and value > hi:
            return f"must be at most {hi:g}, got {value!r}"
        return None

    def applies_to(self, subject: "Subject") -> bool | str:
        """True when the analysis can run on ``subject``; otherwise a reason (a short phrase)."""
        return True

    def resolve_params(self, profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        resolved = dict(self.params)
        if profile == "quick":
            resolved.update(self.quick)
        for key, value in (overrides or {}).items():
            problem = self.param_problem(key, value)
            if problem:
                raise TalkgenError(f"analysis {self.name!r}, parameter {key!r}: {problem}")
            resolved[key] = value
        return resolved

    def run(self, ctx: Context) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError


_REGISTRY: dict[str, type[Analysis]] = {}


def register(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator: the registry is the single source of analysis names and order."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"analysis {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> Mapping[str, type[Analysis]]:
    """All registered analyses, in registration (= default) order."""
    import talkgen.analyses  # noqa: F401  (imports every analysis module once)

    return MappingProxyType(_REGISTRY)


def get_analysis(name: str) -> Analysis:
    reg = registry()
    if name not in reg:
        raise TalkgenError(f"unknown analysis {name!r}; valid names: {', '.join(reg)}")
    return reg[name]()
