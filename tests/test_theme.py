"""The slides' theme: light or dark with an accent colour, figures drawn in the theme's colours, and text that
keeps WCAG AA contrast (4.5:1), measured from the colours the browser computes from the page's CSS."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

from conftest import ARTIFACTS, run_cli
from talkgen.render.theme import AA, THEMES, accent_problem, contrast, parse_colour


def test_contrast_matches_wcag_reference_values():
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((255, 255, 255), (255, 255, 255)) == pytest.approx(1.0)
    assert contrast(parse_colour("#777"), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)  # just under AA
    assert contrast(parse_colour("#767676"), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)  # just over
    for t in THEMES.values():  # every text colour of every theme, on its own background
        bg = parse_colour(t.background)
        for name in ("text", "body", "muted", "accent"):
            assert contrast(parse_colour(getattr(t, name)), bg) >= AA, (t.name, name)


def test_accent_and_theme_are_checked_in_talk_toml(tmp_path):
    assert accent_problem("light", "#0b6e99") is None
    assert "1.07:1" in accent_problem("light", "#ffff00")
    assert "lighter" in accent_problem("dark", "#0b0b60")
    assert "#RRGGBB" in accent_problem("dark", "blue")
    for table, key in (('theme = "sepia"', "talk.theme"), ('accent = "#ffff00"', "talk.accent")):
        cfg = tmp_path / "talk.toml"
        cfg.write_text(f"[talk]\n{table}\n")
        proc = run_cli("build", "--config", str(cfg), "--out", str(tmp_path / "out"))
        assert proc.returncode != 0 and key in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "out").exists()


def _page_colours(browser, html):
    """(colour, background) of every kind of text on the slides, as the browser computes them from the CSS."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(html.as_uri())
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    found = page.evaluate("""() => {
        const bg = getComputedStyle(document.querySelector('.reveal-viewport') || document.body).backgroundColor;
        const out = {};
        for (const sel of ['.reveal h1', '.reveal h2', '.reveal h3', '.reveal .slides section p',
                           '.reveal .slides section li', '.reveal .kicker p', '.reveal .figtext p',
                           '.reveal figcaption', '.reveal table td', '.reveal .ckey']) {
          const e = document.querySelector(sel);
          if (e) out[sel] = getComputedStyle(e).color;
        }
        return [bg, out];
    }""")
    page.close()
    return found


def _rgb(css):
    return tuple(float(v) for v in css[css.index("(") + 1: css.index(")")].split(",")[:3])


@pytest.mark.browser
def test_dark_theme_slides_and_figures_keep_text_readable(browser, small_build, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(small_build.parent, project)
    toml = project / "talk.toml"
    # two analyses are enough to see the page's colours and the figures' paper
    toml.write_text('formats = ["slides"]\n' + toml.read_text() + '\n[analyses]\nonly = ["model-card", "weights"]\n'
                    '\n[talk]\ntheme = "dark"\naccent = "#f0a030"\n')
    run_cli("build", "--config", str(toml), "--out", str(project / "build"), check=True)
    summary = json.loads((project / "build" / "summary.json").read_text())
    ran = [a for a, e in summary["subjects"]["tiny"]["analyses"].items() if e["status"] == "ok" and not e["cached"]]
    assert ran == []  # a theme is rendering only

    for html, name in ((small_build / "slides.html", "light"), (project / "build" / "slides.html", "dark")):
        bg, colours = _page_colours(browser, html)
        assert _rgb(bg) == parse_colour(THEMES[name].background), (name, bg)
        assert len(colours) >= 6, colours
        low = {sel: round(contrast(_rgb(c), _rgb(bg)), 2) for sel, c in colours.items() if contrast(_rgb(c), _rgb(bg)) < AA}
        assert low == {}, (name, low)
        if name == "dark":
            assert _rgb(colours[".reveal .kicker p"]) == parse_colour("#f0a030")

    # the figures follow the theme: their paper is the slide's background
    from PIL import Image

    for folder, name in ((small_build, "light"), (project / "build", "dark")):
        pngs = sorted((folder / "figures").glob("*.png"))
        if name == "dark":
            assert len(pngs) >= 3
        assert pngs
        for png in pngs:
            corner = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))[2, 2]
            assert tuple(int(v) for v in corner) == parse_colour(THEMES[name].figure), (name, png.name, corner)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(sorted((project / "build" / "figures").glob("*.png"))[0], ARTIFACTS / "dark-figure.png")
