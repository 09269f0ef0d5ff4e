"""nbconvert exporters that render the notebook with talkgen's own template directories.

``templates/slides/`` (reveal.js, inlined) and ``templates/report/`` are nbconvert template
directories with a ``conf.json`` manifest. The jinja environment has autoescape on and
``StrictUndefined``; the only unescaped text is markdown rendered to HTML (whose inputs
the deck escaped) and the inlined assets.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import nbformat
from nbconvert.exporters import TemplateExporter
from nbconvert.exporters.slides import _RevealMetadataPreprocessor
from traitlets import default

from talkgen.render.assets import reveal_assets


@lru_cache(maxsize=4096)  # the slides and the report render the same cells: each is converted once
def markdown_to_html(source: str) -> str:
    """nbconvert's Markdown renderer (math included) with harmful link protocols off: a
    ``javascript:``, ``vbscript:``, ``file:`` or non-image ``data:`` URL becomes ``#harmful-link``.
    nbconvert's own filter allows them. The deck escapes user text as well (``render.text``); this is
    the second guard. Headings get no anchor links: slides and report anchor on the deck's own slide ids."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    renderer = IPythonRenderer(escape=False, allow_harmful_protocols=False, exclude_anchor_links=True)
    html = MarkdownWithMath(renderer=renderer).render(source)
    # the renderer indents every table cell on a line of its own: whitespace a table never shows
    return _TABLE.sub(lambda m: _BETWEEN_TAGS.sub("><", m.group(0)), html) if "<table" in html else html


_TABLE = re.compile(r"<table>.*?</table>", re.S)
_BETWEEN_TAGS = re.compile(r">\s+<")


class _TalkgenExporter(TemplateExporter):
    output_mimetype = "text/html"
    # The notebook is built and validated by talkgen: none of nbconvert's default preprocessors
    # (execute, clear outputs, extract outputs, ...) apply, and each would re-validate it.
    default_preprocessors = []

    @default("file_extension")
    def _file_extension_default(self) -> str:
        return ".html"

    @default("template_extension")
    def _template_extension_default(self) -> str:
        return ".html.j2"

    def _create_environment(self) -> jinja2.Environment:
        env = super()._create_environment()
        env.autoescape = True
        env.undefined = jinja2.StrictUndefined
        env.filters["markdown2html"] = markdown_to_html
        return env


class SlidesExporter(_TalkgenExporter):
    """Notebook -> single-file reveal.js slides."""

    def __init__(self, templates: Path, **kw: Any) -> None:
        super().__init__(template_name="slides", extra_template_basedirs=[str(templates)], **kw)
        self.register_preprocessor(_RevealMetadataPreprocessor, enabled=True)


class ReportExporter(_TalkgenExporter):
    """Notebook -> single-file HTML report (findings, evidence, provenance)."""

    def __init__(self, templates: Path, **kw: Any) -> None:
        super().__init__(template_name="report", extra_template_basedirs=[str(templates)], **kw)


def render_slides(nb: nbformat.NotebookNode, templates: Path, *, print_view: bool = False,
                  notes: bool = False, theme: str = "light", accent: str = "") -> str:
    """slides.html in ``theme`` (``accent``: its accent colour, "" for the theme's own); with ``print_view``, the
    page slides.pdf is printed from (reveal.js's print view, a page of speaker notes after each slide with
    ``notes``)."""
    from markupsafe import Markup

    from talkgen.render.theme import css, theme as make_theme

    t = make_theme(theme, accent)
    assets = dict(reveal_assets(t.reveal)) | {"theme_vars": Markup(css(t))}
    if print_view:
        assets |= {"print": True, "notes": notes}
    html, _ = SlidesExporter(templates).from_notebook_node(nb, resources={"talkgen": assets})
    return html


def render_report(nb: nbformat.NotebookNode, templates: Path) -> str:
    html, _ = ReportExporter(templates).from_notebook_node(nb, resources={"talkgen": {}})
    return html
