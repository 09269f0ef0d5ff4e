"""talkgen: look inside a PyTorch model and tell the story.

Public API (kept small and stable):

- :func:`figure`, :func:`result`: recompute a figure or a result of a build;
- :class:`Analysis`, :class:`Result`, :class:`Scalar`, :class:`Finding`, :class:`Context`,
  :func:`register`, :func:`registry`: the analysis contract, to add an analysis;
- :class:`Subject`, :class:`TalkgenError`.

Names are imported on first use, so that ``talkgen --help`` and ``import talkgen`` stay fast (torch
is loaded only by what needs it).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Analysis": "talkgen.analyses.base", "Context": "talkgen.analyses.base", "Finding": "talkgen.analyses.base",
    "Result": "talkgen.analyses.base", "Scalar": "talkgen.analyses.base", "register": "talkgen.analyses.base",
    "registry": "talkgen.analyses.base", "figure": "talkgen.api", "result": "talkgen.api",
    "TalkgenError": "talkgen.errors", "Subject": "talkgen.subject",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'talkgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
