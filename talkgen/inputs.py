"""What a build's outputs depend on, fingerprinted without importing torch.

Two fingerprints, both written into the build folder's record after a build:

- **analysis inputs**: the parts of the config that decide what runs (subjects, profile, parameters,
  --only/--skip, seed, device), every file a subject is read from (bundled sample files, the user's
  model, weights and data files), talkgen's own code outside ``talkgen/render``, and the versions of
  Python and of the packages that compute;
- **render inputs**: the whole config, the templates, ``talkgen/render`` and the same versions.

When the analysis inputs of a new build equal the record's, every result is the cached one the record
names: a build with nothing changed returns at once, and one where only the render inputs changed
(a template, a title) re-renders from the cache without loading a model. Anything that cannot be
fingerprinted this way (a model given as an installed ``package.module:factory``) makes the
fingerprint ``None``: that build takes the full path, which decides from the cache keys.

A file is known by its path, size and modification time, and by its contents' sha256 when it is
under 64 MB (above that, the size and time alone, to keep a rebuild instant on a large model).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any, Iterable

HASH_CONTENT_BELOW = 64 * 2**20
PACKAGES = ("torch", "numpy", "matplotlib", "scikit-learn", "scipy", "nbconvert", "nbformat", "jinja2",
            "safetensors", "transformers", "tokenizers")
ANALYSIS_KEYS = ("subjects", "profile", "params", "only", "skip", "seed", "device")


def analysis_fingerprint(config: Any) -> str | None:
    """The analysis inputs of ``config`` (a TalkConfig), or None when they cannot all be named."""
    full = config.to_json()
    h = hashlib.sha256(json.dumps({k: full.get(k) for k in ANALYSIS_KEYS} | {"versions": versions()},
                                  sort_keys=True, default=str).encode())
    package = Path(__file__).resolve().parent
    _update_tree(h, package, skip=package / "render")
    base = sys.modules.get("talkgen.analyses.base")
    own = sorted((name, cls.version, cls.__module__, cls.__qualname__) for name, cls in base._REGISTRY.items()
                 if not cls.__module__.startswith("talkgen.")) if base is not None else []
    if own:  # a process that registered analyses of its own (the Python API): they count too
        h.update(json.dumps(own).encode())
    for sc in config.subjects:
        files = subject_files(sc)
        if files is None:
            return None
        for path in files:
            _update_file(h, path)
    return h.hexdigest()


def render_fingerprint(config: Any, templates: Path) -> str:
    """The render inputs of ``config`` (every key), ``templates`` and ``talkgen/render``."""
    h = hashlib.sha256(json.dumps({"config": config.to_json(), "versions": versions()},
                                  sort_keys=True, default=str).encode())
    _update_tree(h, Path(templates))
    _update_tree(h, Path(__file__).resolve().parent / "render")
    return h.hexdigest()


def config_file_digest(path: str | Path) -> tuple[str, str] | None:
    """What checking the talk.toml at ``path`` depends on, twice: (all of it, all but its [talk] table).
    All of it: its bytes, the Markdown files its [[talk.add]] slides read, talkgen's code, its templates and
    the installed versions; None when the file cannot be read. A build folder's record keeps the checked
    config under these digests, so that a rebuild of the same talk.toml does not import the analyses (and
    torch) to check it again, and an edit of [talk] alone checks only [talk]."""
    import tomllib

    from talkgen.resources import templates_dir

    path = Path(path)
    try:
        raw = path.read_bytes()
        parsed = tomllib.loads(raw.decode("utf-8"))
        talk = parsed.pop("talk", {})
        added = talk.get("add", []) if isinstance(talk, dict) else []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None
    base = hashlib.sha256(json.dumps({"path": str(path.resolve()), "versions": versions()}, sort_keys=True).encode())
    _update_tree(base, Path(__file__).resolve().parent)
    _update_tree(base, templates_dir())
    rest = base.copy()
    rest.update(json.dumps(parsed, sort_keys=True, default=str).encode())
    whole = base.copy()
    whole.update(raw)
    for a in added if isinstance(added, list) else []:
        if isinstance(a, dict) and isinstance(a.get("file"), str):
            _update_file(whole, path.resolve().parent / a["file"])
    return whole.hexdigest(), rest.hexdigest()


def subject_files(sc: Any) -> list[Path] | None:
    """Every file a subject (a SubjectConfig) is read from; None when one cannot be named."""
    files: list[Path] = []
    if sc.sample:
        from talkgen.resources import sample_models_dir

        files += sorted(sample_models_dir().glob(f"{sc.sample}.*"))
        return files
    model = sc.model or ""
    target, sep, _ = model.rpartition(":")
    if sep and target.endswith(".py"):
        # the factory's file and its neighbours (modules it may import from its folder)
        files += sorted(Path(target).parent.glob("*.py"))
    elif sep or not Path(model).exists():
        return None  # an installed package.module:factory: its code is not a file we can name here
    elif Path(model).is_dir():
        files += sorted(p for p in Path(model).rglob("*") if p.is_file())
    else:
        files.append(Path(model))
    if sc.weights:
        files.append(Path(sc.weights))
    if sc.data and Path(sc.data).is_file():  # otherwise a bundled set's name, which the config holds
        files.append(Path(sc.data))
    return files


def versions() -> dict[str, str]:
    """Python's version and the installed versions of the packages that compute or render."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": sys.platform}
    for pkg in ("talkgen",) + PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = ""
    return out


def _update_tree(h: "hashlib._Hash", root: Path, skip: Path | None = None) -> None:
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix == ".pyc" or (skip is not None and skip in path.parents):
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())


def _update_file(h: "hashlib._Hash", path: Path) -> None:
    try:
        st = path.stat()
    except OSError:
        h.update(f"missing {path}".encode())
        return
    h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    if st.st_size < HASH_CONTENT_BELOW:
        h.update(hashlib.sha256(path.read_bytes()).digest())


def files_digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        _update_file(h, p)
    return h.hexdigest()
