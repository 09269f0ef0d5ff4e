"""The analysis contract: Analysis, Context and the registry (the data types are in ``talkgen.results``).

An analysis is one small class: it declares what it applies to, its parameters per
profile and its dependencies, and ``run(ctx)`` returns a frozen :class:`Result` of plain
data (arrays, named scalars, notes, figure specs, trust checks). It never draws or writes HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from talkgen.errors import TalkgenError
from talkgen.results import SEVERITIES, AnalysisInfo, Check, Finding, Result, Scalar  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from talkgen.subject import Subject

@dataclass(frozen=True)
class Context:
    """What an analysis may read: the subject, its parameters, seed, device and its deps' results."""

    subject: "Subject"
    params: Mapping[str, Any]
    seed: int
    device: torch.device
    profile: str
    deps: Mapping[str, Result] = field(default_factory=dict)
    # For an analysis that gathers: twin subject name -> the subject it was made from, for the twins
    # whose results are in ``deps`` (``Analysis.twins``).
    twins: Mapping[str, str] = field(default_factory=dict)
    # Where an analysis may keep large build inputs it makes (the model zoo): the build's cache
    # folder, or None (then such inputs go to a temporary folder and are not kept).
    store: "Path | None" = None
    # For an analysis that gathers: the cost ledger entry of every result in ``deps`` (same keys).
    costs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Where ``progress`` reports go (the build's progress display, through the runner); None: nowhere.
    report: "Callable[[float, float, str], None] | None" = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "deps", MappingProxyType(dict(self.deps)))
        object.__setattr__(self, "twins", MappingProxyType(dict(self.twins)))
        object.__setattr__(self, "costs", MappingProxyType(dict(self.costs)))

    def storage(self) -> Path:
        """Where to keep large build inputs: the build's cache folder, or (for a context made outside a
        build) a temporary folder of this process, removed when it exits."""
        if self.store is not None:
            return Path(self.store)
        return _scratch()

    def progress(self, done: float, total: float, unit: str) -> None:
        """How far a long analysis has come: ``done`` of ``total`` ``unit`` ("points", "layers", "batches").
        Call it as often as is natural; the runner passes on a report only once the item has run a while, and
        then every so often, with the time it expects the rest to take."""
        if self.report is not None:
            self.report(done, total, unit)

    def generator(self) -> torch.Generator:
        """A fresh torch generator seeded from the build seed (same seed, same bytes)."""
        return torch.Generator().manual_seed(self.seed)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass(frozen=True)
class TwinRequest:
    """A twin an analysis wants measured: its kind ("initial" or "width"), the width for a width twin,
    and the profile its analyses run with (None: the build's, with the build's parameters)."""

    kind: str
    width: int | None = None
    profile: str | None = None
    # Parameters for the twin's analyses on top of those: ((analysis, parameter, value), ...), e.g. to leave
    # out the part of an analysis whose result the gathering analysis does not read.
    params: tuple[tuple[str, str, Any], ...] = ()

    def overrides(self, analysis: str) -> dict[str, Any]:
        return {k: v for a, k, v in self.params if a == analysis}

    def name(self, subject: str) -> str:
        """The twin's subject name (results of the twin are keyed "<name>/<analysis>")."""
        from talkgen.models.twins import twin_name

        return twin_name(subject, self.kind, self.width)


@lru_cache(maxsize=1)
def _scratch() -> Path:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="talkgen-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def value_of(result: Result, key: str) -> float | None:
    """A summary's value when it is a finite number, else None."""
    s = result.summaries.get(key)
    return None if s is None or s.value is None or not math.isfinite(s.value) else float(s.value)


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
    # The place of the analysis within its section of the talk (smaller first).
    order: ClassVar[float] = 50
    # Kinds of twin (``talkgen.models.twins``: "initial", "width") this analysis also runs on when a
    # gathering analysis asks for them; the pipeline runs those like any other item.
    runs_on_twins: ClassVar[tuple[str, ...]] = ()
    # True: ``ctx.deps`` holds every result that ran before it, of every subject, keyed
    # "subject/analysis" (the fingerprint); gathering analyses run after all the others.
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
        from talkgen.analyses.index import param_problem

        return param_problem(cls.params, cls.param_bounds, key, value)

    def applies_to(self, subject: "Subject") -> bool | str:
        """True when the analysis can run on ``subject``; otherwise a reason (a short phrase)."""
        return True

    def checks(self, result: Result) -> tuple[Check, ...]:
        """The trust checks this analysis ran on its own method, read off its ``result`` (the pipeline
        attaches them to the result: the costs analysis and the report's limitations collect them)."""
        return ()

    # How costly a run usually is, relative to the others (1: a second or so): without an earlier cost in the
    # ledger, the build starts costly items first, so that they do not come last on a single core.
    cost_hint: ClassVar[float] = 1.0

    # How the cost grows with the model (``talkgen.analyses.budget``): the forward-pass equivalents over examples
    # that run() makes with ``params`` (a backward pass counts 2, a Hessian-vector product 4; a token model's
    # example is one sequence), times the parameters, is its work in multiply-adds. None: no pass grows with
    # the model (the analysis reads weights or results only), never sampled.
    def passes(self, subject: "Subject", params: Mapping[str, Any]) -> float | None:
        return None

    # Copies of the weights (or of vectors their size) it holds at once besides the model itself; None: a few at
    # most, never checked. Above the memory limit (``talkgen.analyses.budget``) the item is skipped up front.
    def copies(self, subject: "Subject", params: Mapping[str, Any]) -> float | None:
        return None

    # The parameters that shrink its work, each with the least it may be shrunk to (sampling keeps at least
    # that much); the budget shrinks them in this order, halving each in turn.
    sample_order: ClassVar[tuple[tuple[str, int], ...]] = ()

    def shared_work(self, subject: "Subject", params: Mapping[str, Any]) -> str | None:
        """A name for work this item shares with other items (a model zoo, a fitted meta-network) and keeps
        for them: items naming the same work never run at the same time, so the second finds it done."""
        return None

    def twins(self, subject: "Subject", params: Mapping[str, Any]) -> tuple["TwinRequest", ...]:
        """The twins of ``subject`` whose results this (gathering) analysis reads; the pipeline makes them
        and runs on them every analysis that ``runs_on_twins`` of that kind."""
        return ()

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
_DISCOVERED = False


def register(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator: the registry is the single source of analysis names and order."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"analysis {cls.name!r} registered twice")
    ranks = section_ranks()
    if ranks and cls.section not in ranks:
        raise ValueError(f"analysis {cls.name!r}: unknown section {cls.section!r}; sections: {', '.join(ranks)}")
    _REGISTRY[cls.name] = cls
    return cls


@lru_cache(maxsize=1)
def section_ranks() -> dict[str, int]:
    """Section id -> its number in the talk's outline (templates/outline.toml, the one place that orders
    the talk)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    from talkgen.resources import templates_dir

    try:
        with open(templates_dir() / "outline.toml", "rb") as f:
            return {s["id"]: int(s["number"]) for s in tomllib.load(f)["sections"]}
    except (OSError, KeyError, ValueError):
        return {}


def _discover() -> None:
    """Import every module of the analyses package once, so that each ``@register`` runs: a new
    analysis is one module dropped into talkgen/analyses/ (plus its commentary template)."""
    import importlib
    import pkgutil

    import talkgen.analyses as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def registry() -> Mapping[str, type[Analysis]]:
    """All registered analyses in the talk's order: by section (the outline's numbers), then each
    analysis's ``order``; analyses that gather the others' results come last."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        _discover()
    ranks = section_ranks()
    ordered = sorted(_REGISTRY.values(), key=lambda c: (c.gathers, ranks.get(c.section, len(ranks)), c.order, c.name))
    return MappingProxyType({c.name: c for c in ordered})


def catalogue() -> dict[str, AnalysisInfo]:
    """What the renderers may know of each registered analysis (title, section, place), in order."""
    return {name: AnalysisInfo(name=name, title=cls.title, section=cls.section, order=float(cls.order))
            for name, cls in registry().items()}


def get_analysis(name: str) -> Analysis:
    reg = registry()
    if name not in reg:
        raise TalkgenError(f"unknown analysis {name!r}; valid names: {', '.join(reg)}")
    return reg[name]()
