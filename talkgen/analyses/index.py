"""What the analyses declare (name, title, section, place, parameters), known without importing them.

Importing the analysis modules imports torch, a second or two. Checking a talk.toml, refusing a mistyped
analysis name, listing the analyses or the beats needs only what each class declares, so ``declared()``
reads it from a file in the user's cache folder named by a digest of the analyses package's sources and of
the outline that orders them; when there is none, it imports the registry once and writes the file. Any
edit of an analysis module gives another digest, so the file can never describe other code than the code
installed (what a class declares must come from this package: its module or a shared one such as
``_zoo.py``). Once this process has imported the analyses (a build, an analysis registered in-process by
a plug-in or a test), the registry itself answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from talkgen.results import AnalysisInfo

FORMAT = 1  # bump when Declared's fields change


@dataclass(frozen=True)
class Declared:
    """One analysis as its class declares it (``talkgen.analyses.base.Analysis``'s class attributes)."""

    name: str
    title: str
    section: str
    order: float
    applies_text: str
    params: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    param_bounds: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, analysis: type) -> "Declared":
        # through JSON, so that a class and the file it was written to give equal values (tuples as lists)
        return cls(**json.loads(json.dumps({
            "name": analysis.name, "title": analysis.title, "section": analysis.section,
            "order": float(analysis.order), "applies_text": analysis.applies_text, "params": dict(analysis.params),
            "quick": dict(analysis.quick), "param_bounds": dict(analysis.param_bounds)})))

    def info(self) -> AnalysisInfo:
        return AnalysisInfo(name=self.name, title=self.title, section=self.section, order=self.order)

    def param_problem(self, key: str, value: Any) -> str | None:
        """Why ``value`` is not a valid ``key`` for this analysis (None when it is)."""
        return param_problem(self.params, self.param_bounds, key, value)


def param_problem(params: Mapping[str, Any], bounds: Mapping[str, Any], key: str, value: Any) -> str | None:
    """Why ``value`` is not a valid parameter ``key`` of an analysis whose defaults are ``params``: a
    parameter's type is its default's; numbers must be finite and at least 1 (integers) or 0 (floats) unless
    ``bounds`` says otherwise (name -> (lowest, highest), None for open)."""
    if key not in params:
        return f"unknown parameter; known: {', '.join(sorted(params)) or '(none)'}"
    default = params[key]
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)) or not value:
            return f"must be a non-empty list like {list(default)!r}, got {value!r}"
        if len(default) == 2 and key.endswith("_steps") and len(value) != 2:
            return f"must be [low, high], got {value!r}"
        kind = default[0] if default else 0.0
        for item in value:
            problem = _scalar_problem(bounds, key, kind, item)
            if problem:
                return problem
        if key.endswith("_steps") and len(value) == 2 and value[0] > value[1]:
            return f"must be [low, high] with low <= high, got {value!r}"
        return None
    return _scalar_problem(bounds, key, default, value)


def _scalar_problem(bounds: Mapping[str, Any], key: str, default: Any, value: Any) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"must be a string, got {type(value).__name__} {value!r}"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__} {value!r}"
        lo, hi = bounds.get(key, (1, None))
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__} {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        lo, hi = bounds.get(key, (0, None))
    if lo is not None and value < lo:
        return f"must be at least {lo:g}, got {value!r}"
    if hi is not None and value > hi:
        return f"must be at most {hi:g}, got {value!r}"
    return None


def declared() -> dict[str, Declared]:
    """Every registered analysis as declared, in the talk's order (the registry's)."""
    if "talkgen.analyses.base" in sys.modules:  # imported already: ask the registry, plug-ins included
        return _from_registry()
    path = _cache_file()
    try:
        raw = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            return {d["name"]: Declared(**d) for d in raw["analyses"]}
    except (OSError, ValueError, TypeError, KeyError):
        pass  # no file, or a damaged one: import the analyses and write it anew
    found = _from_registry()
    if path is not None:
        try:
            from talkgen.files import write_atomic

            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"format": FORMAT, "analyses": [asdict(d) for d in found.values()]},
                                          sort_keys=True).encode())
            for other in path.parent.glob("analyses-*.json"):  # what other versions of the code declared
                if other != path:
                    other.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only home: the next process imports the analyses again
    return found


def catalogue() -> dict[str, AnalysisInfo]:
    """What the renderers may know of each analysis (``talkgen.analyses.base.catalogue``, without torch)."""
    return {name: d.info() for name, d in declared().items()}


def _from_registry() -> dict[str, Declared]:
    from talkgen.analyses.base import registry

    return {name: Declared.of(cls) for name, cls in registry().items()}


def _cache_file() -> Path | None:
    """``$XDG_CACHE_HOME/talkgen/analyses-<digest>.json`` (``~/.cache`` when unset); None without a home."""
    root = os.environ.get("XDG_CACHE_HOME") or (str(Path.home() / ".cache") if Path.home() != Path("/") else "")
    return Path(root) / "talkgen" / f"analyses-{_digest()}.json" if root else None


@lru_cache(maxsize=1)
def _digest() -> str:
    """sha256 of the analyses package's Python sources (by name) and the outline that orders them."""
    from talkgen.resources import templates_dir

    h = hashlib.sha256(f"format {FORMAT}".encode())
    here = Path(__file__).resolve().parent
    for path in sorted(here.glob("*.py")) + [templates_dir() / "outline.toml"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:32]
