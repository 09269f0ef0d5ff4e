"""PDFs printed by headless Chromium (no other PDF toolchain): report.pdf and slides.pdf.

Chromium is found from ``TALKGEN_CHROMIUM``, then the usual binary names on PATH. It is driven through the
DevTools protocol over a pipe (``--remote-debugging-pipe``: no port is opened), because reveal.js lays out its
print view asynchronously after the page's load event, when Chromium's one-shot ``--print-to-pdf`` has already
printed a blank page. The page is a local file; the browser runs with networking and updates off. The PDF is
written to a temporary name beside the target, checked to be a PDF, and renamed in place.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from talkgen.errors import TalkgenError

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-extensions", "--mute-audio")

# How a page says it is ready to print: the report once loaded; the slides when reveal.js has laid out its
# print view (the slides template sets window.talkgenPrintReady on reveal.js's "pdf-ready" event).
REPORT_READY = "document.readyState === 'complete'"
SLIDES_READY = "window.talkgenPrintReady === true"


def find_chromium() -> str:
    env = os.environ.get("TALKGEN_CHROMIUM")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise TalkgenError(f"TALKGEN_CHROMIUM={env} is not an executable file")
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise TalkgenError("PDF output is printed with headless Chromium, which is not installed "
                       "(Debian: apt-get install chromium), or set TALKGEN_CHROMIUM to its path")


class _DevTools:
    """The DevTools protocol over Chromium's pipe (fd 3: commands in, fd 4: replies out, NUL-separated JSON)."""

    def __init__(self, browser: str, profile: str) -> None:
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends Chromium expects, at fds 3 and 4, kept across exec
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        # not pass_fds=(3, 4): that marks the parent's fds 3 and 4 inheritable in the child before fds() runs,
        # and fails (EBADF) when another thread of this process has just closed one of them. Every other fd
        # Python opens is close-on-exec, so nothing else reaches Chromium.
        self.proc = subprocess.Popen([browser, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                      "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             deadline: float = 0.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(deadline)
            if "method" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._id:
                if "error" in reply:
                    raise TalkgenError(f"Chromium: {method} failed: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})

    def wait_for(self, method: str, session: str, deadline: float) -> dict[str, Any]:
        """The first event ``method`` of ``session``, seen already or coming."""
        while True:
            for i, e in enumerate(self.events):
                if e["method"] == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise TalkgenError(f"Chromium exited ({self._stderr_tail()})")
                self._buf += chunk
        head, self._buf = self._buf.split(b"\0", 1)
        return json.loads(head)

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=5)
            lines = [ln for ln in (self.proc.stderr.read() or b"").decode(errors="replace").splitlines() if ln.strip()]
        except (subprocess.TimeoutExpired, OSError, ValueError):
            lines = []
        return f"exit {self.proc.returncode}: {lines[-1][:200]}" if lines else f"exit {self.proc.returncode}"

    def close(self) -> None:
        if self.proc.poll() is None:  # ask first: Chromium then ends its helper processes itself
            try:
                self.call("Browser.close", deadline=time.monotonic() + 5)
            except (TalkgenError, TimeoutError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def html_to_pdf(html: Path, pdf: Path, timeout: int = 300, ready: str = REPORT_READY,
                query: str = "") -> Path:
    """Print the local page ``html`` (with ``query`` after its URL) to ``pdf`` once the JavaScript expression
    ``ready`` holds; the page's own CSS page size is used. The old ``pdf`` stays until the new one is whole."""
    browser = find_chromium()
    pdf = Path(pdf)
    url = Path(html).resolve().as_uri() + query
    deadline = time.monotonic() + timeout
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # a helper process of Chromium may still be writing its profile as it goes: cleaning that up is best effort
        with tempfile.TemporaryDirectory(prefix="talkgen-chromium-", ignore_cleanup_errors=True) as profile:
            chrome = _DevTools(browser, profile)
            try:
                target = chrome.call("Target.createTarget", {"url": "about:blank"}, deadline=deadline)["targetId"]
                session = chrome.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                      deadline=deadline)["sessionId"]
                chrome.call("Page.enable", {}, session, deadline)
                nav = chrome.call("Page.navigate", {"url": url}, session, deadline)
                if nav.get("errorText"):
                    raise TalkgenError(f"Chromium could not open {Path(html).name}: {nav['errorText']}")
                chrome.wait_for("Page.loadEventFired", session, deadline)
                wait = (f"new Promise(done => {{ const t = () => ({ready}) ? done(true) : setTimeout(t, 50); t(); }})")
                chrome.call("Runtime.evaluate", {"expression": wait, "awaitPromise": True}, session, deadline)
                data = chrome.call("Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True,
                                                       "displayHeaderFooter": False, "transferMode": "ReturnAsBase64"},
                                   session, deadline)["data"]
            finally:
                chrome.close()
        raw = base64.b64decode(data)
        if raw[:5] != b"%PDF-":
            raise TalkgenError(f"Chromium did not print {Path(html).name} to PDF")
        with open(tmp, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)
        os.replace(tmp, pdf)
    except TimeoutError:
        raise TalkgenError(f"Chromium took over {timeout} s to print {Path(html).name}") from None
    except OSError as exc:
        raise TalkgenError(f"Chromium could not print {Path(html).name}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return pdf
