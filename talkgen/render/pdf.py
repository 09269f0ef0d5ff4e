"""report.pdf: the audit report printed by headless Chromium (no other PDF toolchain).

Chromium is found from ``TALKGEN_CHROMIUM``, then the usual binary names on PATH. The page is
printed from the written report.html (a local file; the browser is started with networking and
updates off), to a temporary name beside the target, checked to be a PDF, and renamed in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from talkgen.errors import TalkgenError

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--no-pdf-header-footer")


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
    raise TalkgenError("--format pdf prints the report with headless Chromium, which is not installed "
                       "(Debian: apt-get install chromium), or set TALKGEN_CHROMIUM to its path")


def html_to_pdf(html: Path, pdf: Path, timeout: int = 300) -> Path:
    """Print ``html`` to ``pdf`` with headless Chromium; the old ``pdf`` stays until the new one is whole."""
    browser = find_chromium()
    pdf = Path(pdf)
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory() as profile:
            cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={tmp}",
                   Path(html).resolve().as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        with open(tmp, "rb") as f:
            head = f.read(5)
        if head != b"%PDF-":
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise TalkgenError(f"Chromium did not print {html.name} to PDF (exit {proc.returncode}: {tail[0]})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, pdf)
    except subprocess.TimeoutExpired as exc:
        raise TalkgenError(f"Chromium took over {timeout} s to print {html.name}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return pdf
