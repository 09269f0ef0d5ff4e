"""Real browser: Debian's Chromium opens the outputs from file:// with the network cut off."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ARTIFACTS, need_pdf_tools, offline_route, pdf_pages

pytestmark = pytest.mark.browser


def open_offline(browser, path):
    """Open ``path`` with every non-file request aborted and recorded; collect console errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    blocked, errors, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.route("**/*", offline_route(blocked))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, blocked, errors, dialogs


def assert_images_loaded(page):
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), widths


def test_slides_offline_keyboard_and_images(browser, quick_build):
    page, blocked, errors, dialogs = open_offline(browser, quick_build / "slides.html")
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    total = page.evaluate("() => Reveal.getHorizontalSlides().length")  # the main line
    deck = json.loads((quick_build / "summary.json").read_text())["deck"]
    assert total == len(deck["main"]) and 6 <= total <= 45
    seen = []
    for _ in range(total - 1):
        seen.append(page.evaluate("() => Reveal.getIndices().h"))
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(40)
    seen.append(page.evaluate("() => Reveal.getIndices().h"))
    assert seen == list(range(total)), seen
    assert page.evaluate("() => Reveal.isLastSlide() || Reveal.availableRoutes().down")
    # one key down from a beat: the evidence below it
    beat = next(e for e in deck["appendix"] if e["place"] == "below")["under"]
    page.evaluate(f"() => Reveal.slide(Reveal.getIndices(document.getElementById({beat!r})).h, 0)")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(60)
    below = page.evaluate("() => [Reveal.getIndices().v, Reveal.getCurrentSlide().dataset.place]")
    assert below == [1, "below"], below
    assert page.evaluate("() => !!Reveal.getPlugin('notes')")
    assert_images_loaded(page)
    # a content slide with a figure, saved as a test artifact (and looked at by a person)
    page.evaluate("() => Reveal.slide([...document.querySelectorAll('.slides > section')]"
                  ".findIndex(s => s.querySelector('img')))")
    page.wait_for_timeout(200)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "slide-content.png"))
    assert blocked == [] and errors == [] and dialogs == []


def test_every_slide_of_the_talk_fits_1280x720(browser, quick_build):
    """Every slide of slides.html, main line, below and appendix: no element runs past the slide's edges,
    and every figure is shown at least at the scale the figure checker reads its text at
    (talkgen.render.legibility.SLIDE_SCALE), so the sizes it checks are the sizes the room sees."""
    from talkgen.render.legibility import SLIDE_SCALE

    page, blocked, errors, dialogs = open_offline(browser, quick_build / "slides.html")
    page.set_viewport_size({"width": 1280, "height": 720})
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    over = page.evaluate("""() => {
        const out = [], scales = [];
        const stacks = [...document.querySelectorAll('.reveal .slides > section')];
        stacks.forEach((stack, h) => {
          const inner = [...stack.querySelectorAll(':scope > section')];
          (inner.length ? inner : [stack]).forEach((_, v) => {
            Reveal.slide(h, v);
            const s = Reveal.getCurrentSlide();
            const box = document.querySelector('.reveal .slides').getBoundingClientRect();
            let bottom = 0, right = 0;
            for (const e of s.querySelectorAll('*')) {
              if (e.closest('aside')) continue;
              const r = e.getBoundingClientRect();
              if (!r.width || !r.height) continue;
              bottom = Math.max(bottom, r.bottom - box.bottom); right = Math.max(right, r.right - box.right);
            }
            if (bottom > 2 || right > 2) out.push([s.id, Math.round(bottom), Math.round(right)]);
            for (const img of s.querySelectorAll('figure img')) {
              if (img.naturalWidth) scales.push([s.id, img.getBoundingClientRect().width / img.naturalWidth]);
            }
          });
        });
        return [out, stacks.length, scales];
    }""")
    overflowing, stacks, scales = over
    assert len(scales) > 50
    small = [(sid, round(k, 3)) for sid, k in scales if k < SLIDE_SCALE]
    assert small == [], small
    assert stacks >= 10
    assert overflowing == [], overflowing
    assert blocked == [] and errors == [] and dialogs == []


def test_section_four_and_the_closing_render_in_a_browser(browser, quick_build):
    """The costs and attacks slides, the scaling fit and the closing lessons are shown, images loaded."""
    page, blocked, errors, dialogs = open_offline(browser, quick_build / "slides.html")
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    summary = json.loads((quick_build / "summary.json").read_text())
    costs = summary["subjects"]["digits-cnn"]["analyses"]["costs"]["summaries"]
    shown = {}
    for prefix in ("section-costs", "compute", "scaling", "attack-map", "trigger", "close"):
        found = page.evaluate(
            """p => { const s = [...document.querySelectorAll('section[id]')].find(e => e.id === p);
                      if (!s) return null; const i = Reveal.getIndices(s); Reveal.slide(i.h, i.v || 0);
                      const r = s.getBoundingClientRect();
                      const imgs = [...s.querySelectorAll('img')].map(m => m.complete ? m.naturalWidth : 0);
                      return {present: s.classList.contains('present'), height: r.height, imgs: imgs,
                              text: s.innerText}; }""", prefix)
        assert found is not None, prefix
        assert found["present"] and found["height"] > 100, (prefix, found)
        if prefix in ("compute", "scaling", "attack-map", "trigger"):
            assert found["imgs"] and all(w > 0 for w in found["imgs"]), (prefix, found["imgs"])
        shown[prefix] = found["text"]
    # a fitted exponent is printed on the scaling slide only from 4 widths with a fit R² of 0.9 (with that R²,
    # as summary.json has them); from fewer widths the slide says it is not measurable and prints none
    from talkgen.render.commentary import fmt

    exponents = {k.split(".", 1)[1]: v["value"] for k, v in costs.items() if k.startswith("scaling_exponent.")}
    r2 = {k.split(".", 1)[1]: v["value"] for k, v in costs.items() if k.startswith("scaling_r2.")}
    assert len(exponents) >= 3
    if costs["scaling_widths"]["value"] < 4:
        assert "not measurable here" in shown["scaling"] and "b = " not in shown["scaling"]
    for name, value in exponents.items():
        if costs["scaling_widths"]["value"] >= 4 and r2[name] >= 0.9:
            assert f"{name}: b = {fmt(value)} (fit R² {fmt(r2[name])}" in shown["scaling"], (name, value)
    assert "From this build's measurements" in shown["close"]
    assert blocked == [] and errors == [] and dialogs == []


def test_report_offline_and_images(browser, quick_build):
    page, blocked, errors, dialogs = open_offline(browser, quick_build / "report.html")
    assert_images_loaded(page)
    assert page.locator("#findings").count() == 1 and page.locator("#provenance").count() == 1
    # every figure is numbered in order; a picture drawn twice is shown once and referred to after that
    shown = page.eval_on_selector_all("figcaption, p.same", "els => els.map(e => e.textContent)")
    assert shown and all(c.startswith(f"Figure {i}") for i, c in enumerate(shown, 1))
    for text in shown:
        if " is the same picture as " in text:
            first = int(text.rsplit("Figure ", 1)[1].rstrip("."))
            assert page.locator(f"figure#figure-{first} img").count() == 1, text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    assert blocked == [] and errors == [] and dialogs == []


def test_hostile_names_render_as_text_in_a_browser(browser, hostile_build):
    """Script tags and Markdown links in every user string are text; clicking every link of both
    files opens no dialog."""
    for name in ("slides.html", "report.html"):
        page, blocked, errors, dialogs = open_offline(browser, hostile_build / name)
        page.wait_for_timeout(300)
        assert dialogs == [], f"script ran in {name}"
        body = page.inner_text("body")
        assert "<script>alert(1)</script>" in body and "[x](javascript:alert(1))" in body, name
        clicked = page.evaluate("() => { const links = [...document.querySelectorAll('a[href]')];"
                                " links.forEach(a => a.click()); return links.length; }")
        page.wait_for_timeout(300)
        assert dialogs == [], f"a link in {name} ran script ({clicked} links clicked)"
        assert blocked == [] and errors == []


def test_report_pdf_is_a_pdf_whose_pages_render(tmp_path):
    """`--format report,pdf` prints report.html with headless Chromium; pdftoppm renders every page."""
    import subprocess

    import numpy as np
    from PIL import Image

    from conftest import run_cli

    need_pdf_tools()
    cfg = tmp_path / "talk.toml"
    cfg.write_text('title = "pdf check"\n[[subjects]]\nname = "digits-cnn"\nsample = "digits-cnn"\n'
                   '[analyses]\nonly = ["model-card", "attacks"]\n')
    out = tmp_path / "out"
    run_cli("build", "--config", str(cfg), "--out", str(out), "--format", "report,pdf", check=True)
    pdf = out / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = pdf_pages(pdf)
    assert pages >= 2
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == pages
    for png in pngs:
        ink = (np.asarray(Image.open(png).convert("L")) < 128).mean()
        assert ink > 0.001, f"{png.name} is blank"
    ARTIFACTS.mkdir(exist_ok=True)
    Image.open(pngs[0]).save(ARTIFACTS / "report-pdf-page1.png")
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["outputs"]["pdf"] == "report.pdf"

    # without a printer: one line, non-zero, and the earlier PDF is untouched
    before = pdf.read_bytes()
    proc = subprocess.run([__import__("sys").executable, "-m", "talkgen", "build", "--config", str(cfg), "--out",
                           str(out), "--format", "pdf", "--force"], capture_output=True, text=True,
                          env=os.environ | {"TALKGEN_CHROMIUM": str(tmp_path / "no-such-chromium")})
    assert proc.returncode != 0
    assert "TALKGEN_CHROMIUM" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert pdf.read_bytes() == before
