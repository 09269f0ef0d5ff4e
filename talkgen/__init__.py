"""talkgen: look inside a PyTorch model and tell the story.

Public API (kept small and stable):

- :func:`figure`, :func:`result`: recompute a figure or a result of a build;
- :class:`Analysis`, :class:`Result`, :class:`Scalar`, :class:`Finding`, :class:`Context`,
  :func:`register`, :func:`registry`: the analysis contract, to add an analysis;
- :class:`Subject`, :class:`TalkgenError`.
"""

from talkgen.analyses.base import Analysis, Context, Finding, Result, Scalar, register, registry
from talkgen.api import figure, result
from talkgen.errors import TalkgenError
from talkgen.subject import Subject

__version__ = "0.1.0"

__all__ = ["Analysis", "Context", "Finding", "Result", "Scalar", "Subject", "TalkgenError",
           "figure", "register", "registry", "result", "__version__"]
