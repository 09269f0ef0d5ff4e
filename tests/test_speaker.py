"""What a speaker takes to the venue: slides.pdf, slides.pptx and the offline speaker view, checked against the
talk's main line as summary.json records it."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import unicodedata

import pytest

from conftest import ARTIFACTS, need_pdf_tools, offline_route, pdf_pages, run_cli

pytestmark = pytest.mark.browser


def _squash(text: str) -> str:
    """Text as compared across outputs: compatibility forms (ligatures) unfolded, no whitespace at all (a PDF
    breaks a long title over lines)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module")
def speaker_build(quick_build, tmp_path_factory):
    """The built-in talk's quick build, re-rendered from its cache as slides.pdf and slides.pptx."""
    out = tmp_path_factory.mktemp("speaker") / "build"
    shutil.copytree(quick_build, out)
    need_pdf_tools()
    proc = run_cli("build", "--profile", "quick", "--out", str(out), "--format", "slides-pdf,pptx", check=True)
    return out, proc


def test_slides_pdf_has_one_page_per_main_line_slide_with_its_title(speaker_build):
    out, proc = speaker_build
    summary = json.loads((out / "summary.json").read_text())
    main = summary["deck"]["main"]
    assert summary["outputs"]["slides-pdf"] == "slides.pdf" and summary["outputs"]["pptx"] == "slides.pptx"
    # re-rendered from the cache: no analysis ran again
    ran = [(s, a) for s, d in summary["subjects"].items() for a, e in d["analyses"].items()
           if e["status"] == "ok" and not e["cached"]]
    assert ran == [], ran
    pdf = out / "slides.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf_pages(pdf) == len(main)
    size = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    w, h = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", size).groups())
    assert abs(w / h - 16 / 9) < 0.01, (w, h)
    text = _squash(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout)
    missing = [e["title"] for e in main if _squash(e["title"]) not in text]
    assert missing == [], missing
    # each page is the slide it should be: a page's text holds its own title (pdftotext -f N -l N)
    for n in (1, len(main) // 2, len(main)):
        page = subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), str(pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert _squash(main[n - 1]["title"]) in _squash(page), (n, main[n - 1]["title"])
    # the figures are drawn on their pages, not collapsed: a figure slide's page has ink in its middle
    from PIL import Image
    import numpy as np

    k = next(i for i, e in enumerate(main, 1) if e["kind"] == "figure")
    subprocess.run(["pdftoppm", "-r", "30", "-f", str(k), "-l", str(k), "-png", str(pdf), str(out / "page")], check=True)
    img = np.asarray(Image.open(next(out.glob("page-*.png"))).convert("L"))
    middle = img[img.shape[0] // 3: 2 * img.shape[0] // 3]
    assert (middle < 200).mean() > 0.02, "the figure's band of the page is blank"


def test_slides_pdf_with_a_page_of_notes_after_each_slide(speaker_build, tmp_path):
    out, _ = speaker_build
    main = json.loads((out / "summary.json").read_text())["deck"]["main"]
    copy = tmp_path / "build"
    shutil.copytree(out, copy)
    run_cli("build", "--profile", "quick", "--out", str(copy), "--format", "slides-pdf", "--notes", check=True)
    with_notes = sum(1 for e in main if e["notes"].strip())
    assert with_notes == len(main)  # every main-line slide carries notes
    assert pdf_pages(copy / "slides.pdf") == len(main) + with_notes
    page2 = subprocess.run(["pdftotext", "-f", "2", "-l", "2", str(copy / "slides.pdf"), "-"], capture_output=True,
                           text=True, check=True).stdout
    assert _squash(main[0]["notes"])[:60] in _squash(page2)


def test_slides_pptx_reads_back_as_the_main_line(speaker_build):
    from PIL import Image
    from pptx import Presentation
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    out, _ = speaker_build
    main = json.loads((out / "summary.json").read_text())["deck"]["main"]
    prs = Presentation(str(out / "slides.pptx"))
    slides = list(prs.slides)
    assert len(slides) == len(main)
    assert abs(prs.slide_width / prs.slide_height - 16 / 9) < 0.01
    assert [s.shapes.title.text_frame.text for s in slides] == [e["title"] for e in main]
    assert [s.notes_slide.notes_text_frame.text for s in slides] == [e["notes"] for e in main]
    assert all(e["notes"].strip() for e in main)
    pictures = 0
    for slide, entry in zip(slides, main):
        pics = [sh for sh in slide.shapes if sh.shape_type == MSO_SHAPE_TYPE.PICTURE]
        if entry["kind"] == "figure" and not pics:  # a figure of coloured text is text, in a monospace face
            fonts = {r.font.name for sh in slide.shapes if sh.has_text_frame for p in sh.text_frame.paragraphs
                     for r in p.runs}
            assert "Consolas" in fonts, entry["title"]
        for pic in pics:  # at full resolution: the PNG the build drew, not a thumbnail
            pictures += 1
            w, _ = Image.open(io.BytesIO(pic.image.blob)).size
            assert pic.image.content_type == "image/png" and w >= 900, (entry["title"], w)
            assert pic.left >= 0 and pic.top >= 0 and pic.left + pic.width <= prs.slide_width \
                and pic.top + pic.height <= prs.slide_height, entry["title"]
    assert pictures >= 15
    # list items in the notes stay items (a template once ran them together: "layer- rnn-cells on ...")
    joined = [e["id"] for e in main if re.search(r"\w\)?- [\w-]+ on ", e["notes"])]
    assert joined == [], joined


def test_speaker_view_opens_from_the_offline_file(browser, quick_build):
    """reveal.js's speaker view (press s) from the single file with every non-file request aborted and counted:
    it shows the notes of the current slide and follows the main window."""
    main = json.loads((quick_build / "summary.json").read_text())["deck"]["main"]
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    blocked, errors = [], []

    context.route("**/*", offline_route(blocked))  # the context's pages too: the speaker view's window
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((quick_build / "slides.html").as_uri())
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    with context.expect_page() as popup:
        page.keyboard.press("s")
    view = popup.value
    view.on("pageerror", lambda e: errors.append(str(e)))
    notes = "() => (document.querySelector('.speaker-controls-notes .value') || {}).innerText || ''"
    view.wait_for_function(f"() => ({notes})().length > 20", timeout=15000)
    assert _squash(main[0]["notes"])[:80] in _squash(view.evaluate(notes))
    # the current and the upcoming slide are the same offline file, in frames
    frames = view.evaluate("() => [...document.querySelectorAll('iframe')].map(f => f.src)")
    assert len(frames) >= 2 and all(f.startswith("file:") for f in frames), frames
    page.keyboard.press("ArrowRight")
    want = _squash(main[1]["notes"])[:80]
    view.wait_for_function(f"w => ({notes})().replace(/\\s+/g, '').normalize('NFKC').includes(w)", arg=want,
                           timeout=15000)
    assert view.evaluate("() => !!document.querySelector('.speaker-controls-time')")  # the timer
    ARTIFACTS.mkdir(exist_ok=True)
    view.screenshot(path=str(ARTIFACTS / "speaker-view.png"))
    assert blocked == [], blocked
    assert errors == [], errors
    context.close()
