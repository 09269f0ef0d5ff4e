"""The output folder: talkgen writes and empties only folders it made, one build at a time, and
a build's outputs replace the previous build's together.

- **Ownership.** A folder talkgen made holds a marker file (``.talkgen``). ``build``, ``audit``,
  ``zoo`` and ``clean`` refuse a folder that has other content and no marker; ``/``, the home
  folder, the working folder and any folder above it are refused outright.
- **One build at a time.** A build holds an exclusive lock on ``.talkgen.lock``; a second build on
  the same folder says so in one line and waits.
- **Outputs replaced together.** A build renders into a staging folder. When every output is
  there, the staging folder is renamed to ``.commit`` (the commit point) and its entries are
  moved into place; outputs of the earlier build that this one did not make are removed (stale
  figures included). A build killed before the commit point leaves the earlier outputs as they
  were; one killed after it is finished by the next command that takes the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from talkgen.errors import TalkgenError

MARKER = ".talkgen"
LOCK = ".talkgen.lock"
COMMIT = ".commit"
STAGING_PREFIX = ".staging-"
# Everything a build writes at the top of the folder; the cache (cache/) is kept across builds.
OUTPUT_NAMES = ("talk.ipynb", "slides.html", "report.html", "report.pdf", "slides.pdf", "slides.pptx", "summary.json",
                "figures", "models", ".render-key.json")
# Earlier talkgen versions wrote no marker: a folder holding their render key is talkgen's too.
_LEGACY_MARKERS = (".render-key.json",)
_IGNORABLE = {".gitkeep", ".DS_Store"}


def _refused_outright(resolved: Path) -> str | None:
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "the file system's root"
    if resolved == home:
        return "your home folder"
    if resolved == cwd or resolved in cwd.parents:
        return "the working folder or a folder above it"
    return None


def check_output_dir(out: Path, purpose: str = "write its outputs to") -> Path:
    """Refuse a dangerous or foreign ``out`` before any work; writes nothing. Returns it resolved."""
    resolved = Path(out).expanduser().resolve()
    why = _refused_outright(resolved)
    if why is not None:
        raise TalkgenError(f"--out {out}: refused, talkgen will not {purpose} {why}; name a folder of its own "
                           f"(e.g. --out build)")
    if resolved.exists() and not resolved.is_dir():
        raise TalkgenError(f"--out {out}: exists and is not a folder")
    if resolved.is_dir() and not owned(resolved):
        other = sorted(p.name for p in resolved.iterdir()
                       if p.name not in _IGNORABLE and not (p.is_dir() and owned(p)))  # e.g. build/audit-x
        if other:
            raise TalkgenError(
                f"--out {out}: refused, the folder holds files talkgen did not make ({', '.join(other[:3])}"
                f"{', ...' if len(other) > 3 else ''}) and has no {MARKER} marker; choose a new or empty folder")
    return resolved


def owned(folder: Path) -> bool:
    """True when ``folder`` carries talkgen's marker (or an earlier version's render key)."""
    return any((folder / m).is_file() for m in (MARKER, *_LEGACY_MARKERS))


def claim(out: Path) -> None:
    """Create ``out`` (checked by :func:`check_output_dir`) and mark it as talkgen's."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker = out / MARKER
        if not marker.is_file():
            marker.write_text("This folder is written by talkgen (talkgen build / audit / clean).\n",
                              encoding="utf-8")
    except OSError as exc:
        raise TalkgenError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def locked(out: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the folder's build lock; a second holder waits (and is told so once)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        yield
        return
    try:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise TalkgenError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (on_wait or _say)(f"talkgen: another build is writing {out}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        recover(out)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def new_staging(out: Path) -> Path:
    """An empty folder inside ``out`` to render this build into (removed unless committed)."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))


def commit(out: Path, staging: Path) -> None:
    """Swap the staged outputs in: after the rename to ``.commit`` the new build is the one on disk."""
    made = sorted(p.name for p in staging.iterdir() if p.name in OUTPUT_NAMES)
    (staging / "manifest.json").write_text(json.dumps(made), encoding="utf-8")
    os.replace(staging, out / COMMIT)
    _finish_commit(out)


def _finish_commit(out: Path) -> None:
    """Move ``.commit``'s entries into place and remove outputs this build did not make. Idempotent:
    a run killed halfway is finished by the next."""
    pending = out / COMMIT
    made = set(json.loads((pending / "manifest.json").read_text(encoding="utf-8")))
    trash = pending / "replaced"
    trash.mkdir(exist_ok=True)
    for name in OUTPUT_NAMES:
        new, old = pending / name, out / name
        if name in made and not new.exists():
            continue  # moved in already
        if old.is_dir() and not old.is_symlink():
            os.replace(old, trash / name)
        elif old.exists() or old.is_symlink():
            old.unlink()
        if name in made:
            os.replace(new, old)
    shutil.rmtree(pending)


def recover(out: Path) -> None:
    """Finish a committed build that was interrupted; drop staging folders that never committed and
    temporary files a killed writer left behind."""
    if (out / COMMIT / "manifest.json").is_file():
        _finish_commit(out)
    elif (out / COMMIT).exists():
        shutil.rmtree(out / COMMIT, ignore_errors=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def clean(out: Path, keep_cache: bool) -> bool:
    """Remove a build folder's outputs (and its cache unless ``keep_cache``); False when there is none."""
    resolved = check_output_dir(out, purpose="empty")
    if not resolved.is_dir():
        return False
    if not owned(resolved):  # an empty folder talkgen never wrote: nothing of talkgen's to clean
        return False
    with locked(resolved):
        claim(resolved)  # a folder an earlier version made keeps being talkgen's after it is emptied
        for child in resolved.iterdir():
            if child.name in (MARKER, LOCK, *_IGNORABLE) or (keep_cache and child.name == "cache"):
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    return True
