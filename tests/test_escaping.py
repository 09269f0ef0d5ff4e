"""User-controlled text (model name, class labels, title) is escaped in every HTML output."""

from conftest import HOSTILE


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
