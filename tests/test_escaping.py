"""User-controlled text (model name, class labels, title) is escaped in every HTML output."""

import re
from urllib.parse import unquote

from conftest import AUTOLINK, HOSTILE, LINK


def test_hostile_text_is_escaped_in_both_html_files(hostile_build):
    for name in ("slides.html", "report.html"):
        html = (hostile_build / name).read_text()
        assert HOSTILE not in html, f"raw script tag in {name}"
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, f"label missing from {name}"


def test_hostile_text_survives_in_the_notebook_as_text(hostile_build):
    import nbformat

    nb = nbformat.read(hostile_build / "talk.ipynb", as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "&lt;script&gt;" in md and HOSTILE not in md


def _urls(html: str) -> list[str]:
    return [unquote(u) for u in re.findall(r"""(?:href|src|action)\s*=\s*["']?([^"'>\s]*)""", html, re.I)]


def test_markdown_links_in_user_strings_stay_text(hostile_build):
    """Title, subtitle, speaker, subject name, class names and a layer name carry Markdown links:
    no output has a javascript: URL in any attribute, and the text itself is shown."""
    for name in ("slides.html", "report.html"):
        html = (hostile_build / name).read_text()
        urls = _urls(html)
        assert not [u for u in urls if "javascript:" in u.lower()], name
        assert "[x](javascript:alert(1))" in html, f"the link's text is missing from {name}"
        assert "&lt;javascript:alert(2)&gt;" in html, f"the speaker is missing from {name}"
    import nbformat

    nb = nbformat.read(hostile_build / "talk.ipynb", as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert LINK not in md and AUTOLINK not in md  # escaped in the notebook's Markdown too


def test_harmful_protocols_are_dropped_even_in_unescaped_markdown():
    """The renderer's own guard, for Markdown that reaches it unescaped."""
    from talkgen.render.export import markdown_to_html

    html = markdown_to_html("[a](javascript:alert(1)) <vbscript:msgbox(1)> [b](JaVaScRiPt:x) ![i](data:text/html,x)")
    urls = re.findall(r'(?:href|src)="([^"]*)"', html)
    assert len(urls) == 4 and set(urls) == {"#harmful-link"}, html
    assert markdown_to_html("[ok](#anchor)").count('href="#anchor"') == 1


def test_error_messages_are_text(tmp_path):
    """An analysis's error message (often quoting layer names) is escaped like every other user string."""
    from talkgen.render.commentary import Commentary
    from talkgen.render.export import markdown_to_html
    from talkgen.pipeline.runner import Outcome
    from talkgen.resources import templates_dir

    body = Commentary(templates_dir()).render_file(
        "commentary/_error.md.j2", outcome=Outcome("m", "weights", "failed", message=f"layer {LINK} broke"))
    html = markdown_to_html(str(body))
    assert "<a " not in html and "[x](javascript:alert(1))" in html
