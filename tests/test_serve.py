"""talkgen serve: a speaker's edit reaches the open page, at the slide it was on, with no analysis rerun; a broken
talk.toml shows its error in the page and the last good deck stays."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def _state(url: str) -> dict:
    with urllib.request.urlopen(url.replace("/slides.html", "/__talkgen__/state"), timeout=5) as r:
        return json.loads(r.read())


def _wait(what, timeout: float, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def served(small_build, tmp_path):
    """`talkgen serve` on a copy of a built user project, on a free port; stopped with Ctrl-C (SIGINT)."""
    project = tmp_path / "project"
    shutil.copytree(small_build.parent, project)
    toml = project / "talk.toml"
    toml.write_text('formats = ["slides"]\n' + toml.read_text())  # what a speaker rehearsing looks at
    # its progress lines go to a file: a pipe nobody reads while the test runs could fill and stall a rebuild
    err = open(tmp_path / "serve.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "talkgen", "serve", "--config", "talk.toml", "--out", "build",
                             "--port", "0"], cwd=project, stdout=subprocess.PIPE, stderr=err, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # "serving http://127.0.0.1:PORT/slides.html (Ctrl-C stops)"
        assert line.startswith("serving http://127.0.0.1:"), (line, (tmp_path / "serve.err").read_text())
        url = line.split()[1]
        _wait(lambda: _state(url)["version"] >= 1, 120)  # the first build, through the copied cache
        yield project, url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()


def test_serve_reloads_an_edited_title_at_the_same_slide_and_shows_a_broken_config(browser, served):
    project, url, proc = served
    main = json.loads((project / "build" / "summary.json").read_text())["deck"]["main"]
    first = _state(url)
    # the first build answered from the copied cache: a user's model file in another folder is the same model
    assert first["error"] is None and first["last"]["ran"] == 0 and first["last"]["cached"] > 0, first
    target = next(i for i, e in enumerate(main) if e["kind"] == "figure")
    sid = main[target]["id"]

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    page.evaluate(f"() => Reveal.slide(Reveal.getIndices(document.getElementById({sid!r})).h)")
    page.wait_for_timeout(100)
    at = page.evaluate("() => Reveal.getIndices().h")

    # a title override in talk.toml: the open page shows it within 3 s, at the same slide, no analysis rerun
    toml = project / "talk.toml"
    good = toml.read_text() + f'\n[talk.slides.{sid}]\ntitle = "A title the speaker just wrote"\n'
    t0 = time.monotonic()
    toml.write_text(good)
    page.wait_for_function("() => window.Reveal && Reveal.isReady() && "
                           "document.body.innerText.includes('A title the speaker just wrote')", timeout=10000)
    seen_after = time.monotonic() - t0
    assert seen_after < 3.0, f"the new title took {seen_after:.2f} s to show"
    assert page.evaluate("() => Reveal.getIndices().h") == at
    assert page.evaluate("() => Reveal.getCurrentSlide().id") == sid
    after = _state(url)
    assert after["version"] == first["version"] + 1 and after["error"] is None
    assert after["last"]["ran"] == 0 and after["last"]["cached"] > 0, after["last"]  # cache hits, counted
    deck = json.loads((project / "build" / "summary.json").read_text())["deck"]["main"]
    assert deck[target]["title"] == "A title the speaker just wrote"

    # a broken talk.toml: a banner with the one-line error; the last good deck stays, on disk and in the page
    before = (project / "build" / "slides.html").read_bytes()
    toml.write_text(good + "\n[talk.slides.no-such-slide]\ntitle = 3\n")
    banner = page.wait_for_selector("#talkgen-serve-error", state="visible", timeout=10000)
    text = banner.inner_text()
    assert "no-such-slide" in text and "last good build" in text and "\n" not in text.strip(), text
    assert "A title the speaker just wrote" in page.evaluate("() => document.body.innerText")
    assert (project / "build" / "slides.html").read_bytes() == before
    broken = _state(url)
    assert broken["version"] == after["version"] and broken["error"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-error-banner.png"))

    # fixed again: the banner goes with the reload
    toml.write_text(good)
    _wait(lambda: _state(url)["version"] == after["version"] + 1, 30)
    page.wait_for_function("() => !document.getElementById('talkgen-serve-error') || "
                           "getComputedStyle(document.getElementById('talkgen-serve-error')).display === 'none'",
                           timeout=10000)
    assert errors == []

    # Ctrl-C stops it cleanly
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve did not stop within 60 s of Ctrl-C; its stderr ends: "
                    + (project.parent / "serve.err").read_text()[-2000:])
    assert code == 0
    assert "stopped" in proc.stdout.read()


def test_serve_binds_to_localhost_and_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "talkgen", "serve", "--out", str(tmp_path / "b"), "--port",
                               str(port)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.startswith("talkgen: error: cannot serve on 127.0.0.1:") and len(proc.stderr.splitlines()) == 1
