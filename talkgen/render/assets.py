"""Offline assets: reveal.js 5 and its notes plugin, read from the installed ``sphinx-revealjs``
wheel and inlined, so the slides open from disk with no network."""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

from talkgen.errors import TalkgenError


@lru_cache(maxsize=1)
def reveal_root() -> Path:
    spec = importlib.util.find_spec("sphinx_revealjs")  # importing it would need Sphinx; finding it does not
    if spec is None or spec.origin is None:
        raise TalkgenError("the sphinx-revealjs package (which carries reveal.js) is not installed; "
                           "pip install sphinx-revealjs")
    root = Path(spec.origin).parent / "_static" / "revealjs"
    if not (root / "dist" / "reveal.js").is_file():
        raise TalkgenError(f"reveal.js not found under {root}")
    return root


def _script(text: str) -> Markup:
    # "</script" inside inlined code would end the <script> element early.
    return Markup(text.replace("</script", "<\\/script"))


def _style(text: str) -> Markup:
    return Markup(text.replace("</style", "<\\/style"))


@lru_cache(maxsize=2)
def reveal_assets(theme: str = "white") -> dict[str, Markup]:
    root = reveal_root()
    theme_css = (root / "dist" / "theme" / f"{theme}.css").read_text(encoding="utf-8")
    # Themes @import web or relative font files; drop them and fall back to system fonts.
    theme_css = re.sub(r"@import url\([^)]*\);?", "", theme_css)
    return {
        "reveal_js": _script((root / "dist" / "reveal.js").read_text(encoding="utf-8")),
        "notes_js": _script((root / "plugin" / "notes" / "notes.js").read_text(encoding="utf-8")),
        "reset_css": _style((root / "dist" / "reset.css").read_text(encoding="utf-8")),
        "reveal_css": _style((root / "dist" / "reveal.css").read_text(encoding="utf-8")),
        "theme_css": _style(theme_css),
    }


def reveal_version() -> str:
    head = (reveal_root() / "dist" / "reveal.js").read_text(encoding="utf-8")[:200]
    m = re.search(r"reveal\.js (\d+\.\d+\.\d+)", head)
    return m.group(1) if m else "unknown"
