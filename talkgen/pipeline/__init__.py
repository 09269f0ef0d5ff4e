"""Plan, cache and runner: which analyses run on which subject, once, with their costs.

The names below are imported on first use: ``talkgen.pipeline.cache`` (torch-free) can be read by a
build that loads no model."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Cache": "cache", "Plan": "plan", "PlanItem": "plan", "make_plan": "plan", "Outcome": "runner",
          "run_plan": "runner"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"talkgen.pipeline.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'talkgen.pipeline' has no attribute {name!r}")
