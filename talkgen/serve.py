"""talkgen serve: the build folder on localhost, rebuilt through the cache whenever what the talk reads changes.

What is watched (watchfiles): the talk.toml, the templates in use, the user's model, weights and data files
and the speaker's own Markdown slides. A change rebuilds in this process (the cache answers every analysis
whose inputs did not change: a title edit reruns none) and the open page reloads itself at the slide it was on
(reveal.js keeps the slide in the URL's hash). A rebuild that fails leaves the last good build in place (a
build checks every input before it touches the folder) and the page shows the one-line error as a banner.

The page learns of rebuilds by asking ``/__talkgen__/state`` a few times a second; the script that asks is
added to slides.html and report.html as they are served, never written into the files. The server binds to
127.0.0.1 unless told otherwise; Ctrl-C stops it after the rebuild in progress, if any.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from talkgen.errors import TalkgenError

STATE_PATH = "/__talkgen__/state"
LIVE_PAGES = ("/slides.html", "/report.html")


@dataclass
class ServeState:
    """What the pages poll: the build's version (one up per finished rebuild), the last error (None when the
    last rebuild succeeded), whether a rebuild is running, and what the last one ran."""

    version: int = 0
    error: str | None = None
    building: bool = False
    last: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"version": self.version, "error": self.error, "building": self.building, "last": dict(self.last)}


_LIVE_SCRIPT = """<script>
/* talkgen serve: reload at this slide when the build changes; show a failed rebuild's error */
(() => {
  let seen = %(version)d;
  const banner = document.createElement("div");
  banner.id = "talkgen-serve-error";
  banner.setAttribute("role", "alert");
  banner.style.cssText = "position:fixed;top:0;left:0;right:0;z-index:2147483647;background:#a4001d;" +
    "color:#fff;font:18px/1.4 system-ui,sans-serif;padding:10px 16px;display:none;white-space:pre-wrap";
  const attach = () => document.body.appendChild(banner);
  document.body ? attach() : document.addEventListener("DOMContentLoaded", attach);
  // the slide shown now, in the hash the reload reads: reveal.js writes it itself, but at most once a second,
  // so a slide changed just before a rebuild would otherwise reload at the one before
  function here() {
    if (!window.Reveal || !Reveal.isReady || !Reveal.isReady()) return;
    const slide = Reveal.getCurrentSlide(), at = Reveal.getIndices();
    history.replaceState(null, "", slide && slide.id ? "#/" + slide.id : "#/" + at.h + (at.v ? "/" + at.v : ""));
  }
  async function poll() {
    try {
      const s = await (await fetch("%(state)s", {cache: "no-store"})).json();
      if (s.version !== seen) { here(); location.reload(); return; }
      banner.textContent = s.error ? "Rebuild failed: " + s.error + " (showing the last good build)" : "";
      banner.style.display = s.error ? "block" : "none";
    } catch (e) { /* the server stopped: the page stays as it is */ }
    setTimeout(poll, 250);
  }
  setTimeout(poll, 250);
})();
</script>
"""


def _live_script(version: int) -> str:
    return _LIVE_SCRIPT % {"version": version, "state": STATE_PATH}


class _Handler(SimpleHTTPRequestHandler):
    state: ServeState

    def __init__(self, *args: Any, state: ServeState, **kw: Any) -> None:
        self.state = state
        super().__init__(*args, **kw)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # a request line per poll would drown the rebuild lines

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == STATE_PATH:
            return self._send(json.dumps(self.state.snapshot()).encode(), "application/json")
        if path in ("", "/"):
            self.send_response(302)
            self.send_header("Location", "/slides.html")
            self.end_headers()
            return None
        if path in LIVE_PAGES:
            file = Path(self.directory) / path.lstrip("/")
            try:
                html = file.read_text(encoding="utf-8")
            except OSError:
                return self._send(_waiting_page(self.state).encode(), "text/html; charset=utf-8")
            script = _live_script(self.state.snapshot()["version"])
            cut = html.rfind("</body>")
            html = html[:cut] + script + html[cut:] if cut >= 0 else html + script
            return self._send(html.encode("utf-8"), "text/html; charset=utf-8")
        return super().do_GET()

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _waiting_page(state: ServeState) -> str:
    """What a page shows before the first build has finished (or when it failed with nothing built before)."""
    from html import escape

    s = state.snapshot()
    what = f"The build failed: {escape(s['error'])}" if s["error"] else "Building the talk..."
    script = _live_script(s["version"])
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>talkgen serve</title></head>"
            f"<body><p style='font:20px system-ui,sans-serif;margin:2em'>{what}</p>{script}</body></html>")


def watched(config: Any, config_path: Path | None, templates: Path) -> set[Path]:
    """The files a rebuild reads that the speaker may edit: the talk.toml, every template, each subject's model,
    weights and data files, and the Markdown files of the speaker's own slides (``config`` None: the talk.toml
    could not be read, so only it and the templates)."""
    files: set[Path] = {p.resolve() for p in templates.rglob("*") if p.is_file()}
    if config_path is not None:
        files.add(Path(config_path).resolve())
    if config is None:
        return files
    for s in config.subjects:
        for value in (s.model, s.weights, s.data):
            if not value:
                continue
            head, sep, _ = value.rpartition(":")
            p = Path(head if sep and head.endswith(".py") else value)  # file.py:factory reads file.py
            if p.is_file():
                files.add(p.resolve())
            elif p.is_dir():
                files.update(q.resolve() for q in p.iterdir() if q.is_file())
    for added in config.talk.add:
        if added.file:
            files.add(Path(added.file).resolve())
    return files


class Server:
    """The live server: an HTTP server over ``out`` and a watcher thread that rebuilds on change.

    ``load`` gives (config, config_file record) from the talk.toml as it is now (raising TalkgenError when it is
    broken); ``build`` runs one build and returns its BuildReport; ``say(line, error)`` prints a line for the
    speaker (``error``: a failed rebuild)."""

    def __init__(self, out: Path, config_path: Path | None, load: Callable[[], tuple[Any, Any]],
                 build: Callable[[Any, Any], Any], say: Callable[[str, bool], None], host: str = "127.0.0.1",
                 port: int = 8000) -> None:
        from talkgen.resources import templates_dir

        self.out, self.config_path, self.load, self.build, self.say = Path(out), config_path, load, build, say
        self.templates = templates_dir()
        self.state = ServeState()
        self.stop = threading.Event()
        self.out.mkdir(parents=True, exist_ok=True)
        handler = partial(_Handler, state=self.state, directory=str(self.out))
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.config: Any = None  # the talk as the last rebuild read it (None until one could)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/slides.html"

    def rebuild(self, why: str) -> None:
        t0 = time.perf_counter()
        with self.state.lock:
            self.state.building = True
        try:
            config, record = self.load()
            self.config = config
            report = self.build(config, record)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the server the speaker is using either
            line = exc.one_line() if isinstance(exc, TalkgenError) else \
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            with self.state.lock:
                self.state.error, self.state.building = line, False
            self.say(f"{why}: rebuild failed, the last good build stays: {line}", True)
            return
        talk = [o for o in report.outcomes if o.twin_of is None and o.status == "ok"]
        ran = sum(not o.cached for o in report.outcomes if o.status == "ok")
        seconds = time.perf_counter() - t0
        with self.state.lock:
            self.state.version += 1
            self.state.error, self.state.building = None, False
            self.state.last = {"ran": ran, "cached": sum(o.cached for o in talk), "seconds": round(seconds, 3),
                               "exit_code": report.exit_code, "why": why}
        self.say(f"{why}: {'built' if why == 'start' else 'rebuilt'} in {seconds:.1f} s ({ran} analyses ran, "
                 f"{self.state.last['cached']} from the cache){'' if why == 'start' else '; the page reloads'}", False)

    def _watch(self) -> None:
        from watchfiles import watch

        self.rebuild("start")
        while not self.stop.is_set():
            files = watched(self.config, self.config_path, self.templates)
            folders = sorted({f.parent for f in files if f.parent.is_dir()})  # every template folder holds a file

            def relevant(_change: Any, path: str, files: set[Path] = files) -> bool:
                return Path(path) in files or (Path(path).parent.is_relative_to(self.templates.resolve())
                                               and not Path(path).name.startswith("."))

            for changes in watch(*folders, watch_filter=relevant, debounce=120, step=40, stop_event=self.stop,
                                 recursive=False, raise_interrupt=False, yield_on_timeout=False):
                names = sorted({Path(p).name for _, p in changes})
                self.rebuild(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} changed")
                if watched(self.config, self.config_path, self.templates) != files:
                    break  # other files to watch now (a new subject, a new slide file)

    def serve(self) -> None:
        """Serve at once (a page asked for before the first build has finished says so), build, then watch and
        rebuild until Ctrl-C (or :meth:`shutdown`)."""
        if threading.current_thread() is threading.main_thread():
            import signal

            # Ctrl-C stops the server even where it was started with SIGINT ignored (a background job of a
            # script: the shell ignores SIGINT for it, and Python then never turns it into KeyboardInterrupt);
            # SIGTERM stops it the same way
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        watcher = threading.Thread(target=self._watch, name="talkgen-watch", daemon=True)
        watcher.start()
        self.say(f"serving {self.url} (Ctrl-C stops)", False)
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop.set()
            self.httpd.server_close()
            watcher.join(timeout=120)  # a rebuild in progress finishes, so the folder is left whole
            self.say("stopped", False)

    def shutdown(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
