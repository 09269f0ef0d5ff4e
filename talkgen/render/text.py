"""User text inside generated Markdown: escaped for HTML and for Markdown, so it stays text.

Titles, speaker names, subject and class names, layer names and error messages come from the user
(or from a model file). HTML escaping alone is not enough: the deck is Markdown, and
``[x](javascript:...)`` or ``<javascript:...>`` would become a live link. Every such string goes
through :func:`md_escape` (the commentary environment applies it to every ``{{ }}`` value), and
the Markdown renderer drops harmful link protocols as a second guard (``render.export``).
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

# Punctuation that Markdown (with nbconvert's math extension) gives meaning inline. ``& < > " '``
# are left to HTML escaping: a backslash before an entity would show the entity itself.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]()#!|~$])")


def md_escape(value: Any) -> Markup:
    """``value`` as literal text in Markdown that is rendered to HTML; Markup passes through."""
    if hasattr(value, "__html__"):
        return Markup(value.__html__())
    return escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", str(value)))


def md_finalize(value: Any) -> Any:
    """Jinja ``finalize``: every ``{{ value }}`` that is not already markup is Markdown-escaped."""
    if value is None or hasattr(value, "__html__"):
        return value
    return md_escape(value)


def no_negative_zero(text: str) -> str:
    """'-0', '-0.0', '-0.00%' (a tiny negative number rounded away) print without the sign."""
    return text[1:] if re.fullmatch(r"-0(\.0*)?(e[+-]?0+)?%?", text) else text


def number(value: float, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, never '-0'."""
    return no_negative_zero(f"{value:.{digits}g}")
