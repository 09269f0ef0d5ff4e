"""Shared fixtures: tiny models for unit tests, one real quick build reused by the e2e tests."""

from __future__ import annotations

import os

# Threads of one process waiting for each other yield the core instead of spinning on it (GNU OpenMP's
# default spins), so tests that train with two threads beside a busy test worker are not slowed several-fold.
# Set before torch is imported here, so the test workers and every process they start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from talkgen.subject import Subject, SubjectData

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


class TinyCNN(nn.Module):
    """A 1-conv, 1-linear model on 4x4 images: fast enough for table-driven tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_data(classes=("a", "b", "c")) -> SubjectData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 4, 4, generator=g)
    y = torch.arange(24) % len(classes)
    return SubjectData(x[:16], y[:16], x[16:], y[16:], tuple(classes), "random test data")


@pytest.fixture
def tiny_subject() -> Subject:
    torch.manual_seed(0)
    return Subject(name="tiny", model=TinyCNN(), task="image-classifier", data=tiny_data(), source="test")


SHARED_BUILDS = {"quick_build", "hostile_build"}

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per test worker: the workers already fill the cores, and two OpenMP pools spinning
    # on the same cores cost several times their work (builds the tests start size their own workers).
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests that read a real build of the built-in talk (or the hostile one) are end-to-end tests: they
    share one build each, whose making the first of them pays for (``-m "not e2e"`` runs the rest).

    The suite runs in worker processes (pytest-xdist, ``--dist loadgroup``): the tests of one shared build
    go to one worker, so the build is made once, and the tests of one file stay together, so a file's
    module-scoped fixtures (a trained zoo, a browser) are made once."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SHARED_BUILDS & fixtures:
            item.add_marker(pytest.mark.e2e)
        shared = sorted((SHARED_BUILDS | {"small_build"}) & fixtures)
        item.add_marker(pytest.mark.xdist_group("+".join(shared) or item.nodeid.split("::")[0]))


@pytest.fixture
def counted(monkeypatch):
    """Count run() calls of every registered analysis (a cache hit is proved by a count, never by timing)."""
    from collections import Counter

    from talkgen.analyses.base import registry

    calls: Counter = Counter()
    for name, cls in registry().items():
        original = cls.run

        def run(self, ctx, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, ctx)

        monkeypatch.setattr(cls, "run", run)
    return calls


def run_cli(*args: str, cwd: Path | None = None, check: bool = False, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run ``python -m talkgen ARGS`` in a subprocess (as a user would). The timeout only stops a hung
    run: a shared 2-core machine can be ten times slower than an idle one, and that is not a failure."""
    proc = subprocess.run([sys.executable, "-m", "talkgen", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"talkgen {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def shared_folder(tmp_path_factory, name: str, make) -> Path:
    """A folder made once per test run by ``make(folder)`` and read by every test that needs it (never
    written to: a test that changes a build copies it first). With test workers, the first worker to need it
    makes it under a lock in the folder the workers share, and the others wait for it and read it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    folder, made = shared / name, shared / f"{name}.made"
    with FileLock(str(shared / f"{name}.lock")):
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            made.touch()
    return folder


@pytest.fixture(scope="session")
def quick_build(tmp_path_factory) -> Path:
    """One real `talkgen build --profile quick` on the built-in talk, shared by the e2e tests."""
    return shared_folder(tmp_path_factory, "build",
                         lambda out: run_cli("build", "--profile", "quick", "--out", str(out), check=True))


@pytest.fixture(scope="session")
def small_build(tmp_path_factory) -> Path:
    """A complete build of a small user project (one tiny CNN, every analysis that applies), shared by the
    tests that check bad input leaves an earlier build as it was (they copy it first)."""
    def make(d: Path) -> None:
        write_user_project(d)
        (d / "talk.toml").write_text('title = "A small talk"\n[[subjects]]\nname = "tiny"\n'
                                     'model = "models.py:make_model"\nweights = "weights.safetensors"\n'
                                     'data = "data.npz"\n', encoding="utf-8")
        run_cli("build", "--config", str(d / "talk.toml"), "--out", str(d / "build"), check=True)
    return shared_folder(tmp_path_factory, "small", make) / "build"


def write_user_project(d: Path, classes=("a", "b", "c")) -> Path:
    """A user's project in ``d``: models.py with a factory (TinyCNN's twin), weights, data.npz."""
    (d / "models.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 3, 3, padding=1)\n"
        "        self.fc = nn.Linear(3 * 4 * 4, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.conv(x)).flatten(1))\n\n"
        "def make_model():\n"
        "    return Net()\n", encoding="utf-8")
    torch.manual_seed(1)
    save_file(TinyCNN().state_dict(), str(d / "weights.safetensors"))
    data = tiny_data(classes)
    np.savez(d / "data.npz", x=torch.cat([data.x_train, data.x_test]).numpy(),
             y=torch.cat([data.y_train, data.y_test]).numpy(), classes=np.array(data.classes))
    return d


@pytest.fixture
def user_model_dir(tmp_path) -> Path:
    """A user's project: models.py with a factory, weights.safetensors, data.npz."""
    return write_user_project(tmp_path)


def chromium_path() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return shutil.which("chromium")


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (never a downloaded browser), one per test module."""
    exe = chromium_path()
    if exe is None:
        if os.environ.get("TALKGEN_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required (TALKGEN_REQUIRE_BROWSER) but /usr/bin/chromium is missing")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        yield b
        b.close()


def offline_route(blocked: list):
    """A Playwright route handler that lets local files through and aborts, and records in ``blocked``, any
    other request: a page (or a whole browser context) that must work with the network cut off."""
    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()
    return route


def need_pdf_tools() -> None:
    missing = [t for t in ("pdftoppm", "pdfinfo", "pdftotext") if shutil.which(t) is None] + (
        [] if chromium_path() else ["chromium"])
    if missing:
        if os.environ.get("TALKGEN_REQUIRE_BROWSER"):
            pytest.fail(f"required for the PDF tests: {', '.join(missing)} (apt-get install chromium poppler-utils)")
        pytest.skip(f"missing {', '.join(missing)}")


def pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


HOSTILE = "<script>alert(1)</script>"
# Markdown that would become live links if user text were not escaped as Markdown too.
LINK = "[x](javascript:alert(1))"
AUTOLINK = "<javascript:alert(2)>"


@pytest.fixture(scope="session")
def hostile_build(tmp_path_factory) -> Path:
    """A build whose title, subtitle, speaker, model name, class labels and a layer name are HTML
    and Markdown links: they must come out as text."""
    return shared_folder(tmp_path_factory, "hostile", _make_hostile) / "build"


def _make_hostile(d: Path) -> None:
    write_user_project(d, classes=(HOSTILE, "b|c", LINK))
    (d / "linked.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        f"NAME = {LINK!r}\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.add_module(NAME, nn.Conv2d(1, 3, 3, padding=1))\n"
        "        self.fc = nn.Linear(3 * 4 * 4, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(getattr(self, NAME)(x)).flatten(1))\n\n"
        "def make_model():\n"
        "    torch.manual_seed(1)\n"
        "    return Net()\n", encoding="utf-8")
    (d / "talk.toml").write_text(
        f'title = "Audit {HOSTILE} {LINK}"\nsubtitle = "{LINK}"\nspeaker = "{AUTOLINK}"\n'
        f'[[subjects]]\nname = "{HOSTILE}"\nmodel = "models.py:make_model"\n'
        'weights = "weights.safetensors"\ndata = "data.npz"\n'
        f'[[subjects]]\nname = "{LINK}"\nmodel = "linked.py:make_model"\ndata = "data.npz"\n',
        encoding="utf-8")
    run_cli("build", "--config", str(d / "talk.toml"), "--out", str(d / "build"), check=True)


PY_SNIPPET = '''def f(a, b=(1, [2, 3])):
    """Docstring without brackets."""
    x = {"k": [a, (b, {c})]}  # a comment
    if x:
        return g(h(i(j(1))), k[(2)])
    return [(((a)))]
'''


def tiny_char_subject(model: nn.Module | None = None, window: int = 64) -> Subject:
    """A character model on a Python snippet, with tokenize labels: enough for rnn-cells."""
    from talkgen.data.pysource import VOCAB, char_labels, encode
    from talkgen.models.architectures import CharLSTM

    text = PY_SNIPPET * 4
    tokens = torch.from_numpy(encode(text))
    n = (len(tokens) - 1) // window
    x = tokens[: n * window].view(n, window)
    y = tokens[1: n * window + 1].view(n, window)
    labels = char_labels(text)

    def text_labels():
        return {"text": text[: n * window], **{k: v[: n * window] for k, v in labels.items()}}

    if model is None:
        torch.manual_seed(0)
        model = CharLSTM(hidden=8)
    return Subject(name="tiny-char", model=model, task="char-lm",
                   data=SubjectData(x, y, x, y, tuple(VOCAB) + ("?",), "snippet"), source="test",
                   text_labels=text_labels)
