"""talk.toml: schema, parsing (tomllib) and validation with one-line errors naming key and file.

A talk.toml (see ``talkgen init``)::

    title = "Making The Black Box Transparent"
    subtitle = "Lessons in Opacity"
    speaker = ""
    profile = "quick"            # or "full"
    seed = 0
    device = "cpu"
    formats = ["slides", "report", "notebook"]  # also "pdf" (report.pdf), "slides-pdf" (slides.pdf), "pptx"
    pdf_notes = false            # slides.pdf: a page of speaker notes after each slide

    [[subjects]]
    name = "digits-cnn"          # a bundled sample ...
    sample = "digits-cnn"

    [[subjects]]
    name = "my-model"            # ... or your own model
    model = "models.py:make_model"
    weights = "weights.safetensors"
    data = "data.npz"            # or a bundled data set's name, e.g. "digits"
    task = "image-classifier"
    layers = ["conv1", "fc1"]    # optional: the modules to look at

    [analyses]
    only = []
    skip = []
    [analyses.params.weights]
    max_side = 64

    [talk]                       # the story: which beats, in which order, on which model
    beats = []                   # choose and order beats (empty: the outline's); `talkgen beats` lists them
    hide = ["curvature"]
    theme = "dark"               # or "light" (the default); accent = "#6cc4ee" for the line above titles
    [talk.pin]
    rnn-cell = "python-charlstm"
    [talk.slides.rnn-cell]       # a main-line slide's title or notes, by its id
    title = "One cell counts brackets"
    [[talk.add]]                 # a Markdown slide of your own, after a main-line slide
    id = "why-lstm"
    after = "rnn-cell"
    title = "Why an LSTM?"
    markdown = "..."             # or file = "slides/why-lstm.md"
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from talkgen.errors import TalkgenError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES = ("quick", "full")
FORMATS = ("slides", "report", "notebook", "pdf", "slides-pdf", "pptx")
DEFAULT_FORMATS = ("slides", "report", "notebook")
DEFAULT_TITLE = "Making The Black Box Transparent"
DEFAULT_SUBTITLE = "Lessons in Opacity"


@dataclass(frozen=True)
class SubjectConfig:
    name: str
    sample: str | None = None
    model: str | None = None
    weights: str | None = None
    data: str | None = None
    task: str = "image-classifier"
    layers: tuple[str, ...] = ()  # modules to look at (default: found by introspection)


@dataclass(frozen=True)
class AddedSlide:
    """A Markdown slide of the speaker's own, placed after the main-line slide ``after``."""

    id: str
    after: str
    title: str
    markdown: str
    notes: str = ""
    file: str = ""  # the file the Markdown was read from ("" when it was given inline)


@dataclass(frozen=True)
class TalkControls:
    """The speaker's control of the story (talk.toml's [talk]): which beats, in which order, pinned to
    which subject, slide titles and notes overridden by id, and slides of their own. Rendering only:
    changing any of it reruns no analysis."""

    beats: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    pins: Mapping[str, str] = field(default_factory=dict)
    slides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    add: tuple[AddedSlide, ...] = ()
    theme: str = "light"  # the slides' theme: light | dark (talkgen.render.theme); figures follow it
    accent: str = ""  # the accent colour (#RRGGBB); "" for the theme's own

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "TalkControls":
        d = dict(d or {})
        return cls(beats=tuple(d.get("beats", ())), hide=tuple(d.get("hide", ())), pins=dict(d.get("pins", {})),
                   slides={k: dict(v) for k, v in d.get("slides", {}).items()},
                   add=tuple(AddedSlide(**a) for a in d.get("add", ())),
                   theme=d.get("theme", "light"), accent=d.get("accent", ""))


@dataclass(frozen=True)
class TalkConfig:
    title: str = DEFAULT_TITLE
    subtitle: str = DEFAULT_SUBTITLE
    speaker: str = ""
    profile: str = "quick"
    seed: int = 0
    device: str = "cpu"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    subjects: tuple[SubjectConfig, ...] = ()
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "(built-in talk)"
    talk: TalkControls = field(default_factory=TalkControls)
    pdf_notes: bool = False  # slides.pdf: a page of speaker notes after each slide

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = {k: dict(v) for k, v in self.params.items()}
        d["talk"] = {"beats": list(self.talk.beats), "hide": list(self.talk.hide), "pins": dict(self.talk.pins),
                     "slides": {k: dict(v) for k, v in self.talk.slides.items()},
                     "add": [asdict(a) for a in self.talk.add], "theme": self.talk.theme, "accent": self.talk.accent}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TalkConfig":
        d = dict(d)
        d["subjects"] = tuple(SubjectConfig(**(s | {"layers": tuple(s.get("layers", ()))}))
                              for s in d.get("subjects", ()))
        for key in ("formats", "only", "skip"):
            d[key] = tuple(d.get(key, ()))
        d["talk"] = TalkControls.from_json(d.get("talk"))
        return cls(**d)


DEVICE_KINDS = ("cpu", "cuda", "mps")


def device_problem(device: str) -> str | None:
    """Why torch cannot compute on ``device`` here (None when it can): a typo, or a GPU that is absent."""
    if device == "cpu":
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"{device!r} is not a torch device; use one of {', '.join(DEVICE_KINDS)} (e.g. cuda:0)"
    if dev.type not in DEVICE_KINDS:
        return f"{device!r}: talkgen runs on {', '.join(DEVICE_KINDS)}"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{device!r}: no CUDA device is available to this torch ({torch.__version__})"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return f"{device!r}: MPS is not available on this machine"
    return None


def default_config() -> TalkConfig:
    """The built-in talk: every bundled sample, every analysis."""
    from talkgen.resources import SAMPLE_NAMES

    return TalkConfig(subjects=tuple(SubjectConfig(name=n, sample=n) for n in SAMPLE_NAMES))


class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> TalkgenError:
        return TalkgenError(f"{self.path}: {key}: {problem}")

    def str_(self, d: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
        v = d.get(key, default)
        if v is not None and not isinstance(v, str):
            raise self.fail(f"{where}{key}", f"must be a string, got {type(v).__name__} {v!r}")
        return v

    def list_of_str(self, d: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(f"{where}{key}", f"must be a list of strings, got {v!r}")
        if allowed is not None:
            bad = [x for x in v if x not in allowed]
            if bad:
                raise self.fail(f"{where}{key}", f"unknown value {bad[0]!r}; allowed: {', '.join(allowed)}")
        return tuple(v)

    def known_keys(self, d: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.fail(f"{where}{k}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")


def _resolve(base: Path, value: str | None) -> str | None:
    """Paths in talk.toml are relative to the file; module:factory specs are left alone."""
    if value is None:
        return None
    target, sep, attr = value.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{(base / target).resolve()}:{attr}"
    if sep:
        return value
    candidate = base / value
    return str(candidate.resolve()) if ("/" in value or "." in value) else value


def load_config(path: str | os.PathLike[str]) -> TalkConfig:
    """Parse and validate a talk.toml; any problem is one TalkgenError line naming the key."""
    from talkgen.resources import SAMPLE_NAMES as SAMPLES, TASKS

    path = str(path)
    check = _Checker(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise TalkgenError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TalkgenError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise TalkgenError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                           "save it as UTF-8") from None
    except IsADirectoryError:
        raise TalkgenError(f"{path}: is a folder, not a talk.toml") from None
    check.known_keys(raw, {"title", "subtitle", "speaker", "profile", "seed", "device", "formats",
                           "subjects", "analyses", "talk", "pdf_notes"}, "")
    base = Path(path).resolve().parent
    profile = check.str_(raw, "profile", "", "quick")
    if profile not in PROFILES:
        raise check.fail("profile", f"must be one of {', '.join(PROFILES)}, got {profile!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise check.fail("seed", f"must be a non-negative integer, got {seed!r}")
    formats = check.list_of_str(raw, "formats", "", FORMATS) if "formats" in raw else DEFAULT_FORMATS
    device = check.str_(raw, "device", "", "cpu") or "cpu"
    pdf_notes = raw.get("pdf_notes", False)
    if not isinstance(pdf_notes, bool):
        raise check.fail("pdf_notes", f"must be true or false, got {pdf_notes!r}")
    problem = device_problem(device)
    if problem:
        raise check.fail("device", problem)
    raw_subjects = raw.get("subjects", [])
    if not isinstance(raw_subjects, list) or not all(isinstance(s, dict) for s in raw_subjects):
        raise check.fail("subjects", "must be an array of tables ([[subjects]])")
    subjects = []
    names = set()
    for i, s in enumerate(raw_subjects):
        where = f"subjects[{i}]."
        check.known_keys(s, {"name", "sample", "model", "weights", "data", "task", "layers"}, where)
        name = check.str_(s, "name", where)
        if not name:
            raise check.fail(f"{where}name", "is required")
        if name in names:
            raise check.fail(f"{where}name", f"duplicate subject name {name!r}")
        names.add(name)
        sample = check.str_(s, "sample", where)
        model = check.str_(s, "model", where)
        if bool(sample) == bool(model):
            raise check.fail(where.rstrip("."), "give exactly one of 'sample' (a bundled model) or 'model'")
        if sample and sample not in SAMPLES:
            raise check.fail(f"{where}sample", f"unknown sample {sample!r}; samples: {', '.join(SAMPLES)}")
        task = check.str_(s, "task", where, "image-classifier")
        if task not in TASKS:
            raise check.fail(f"{where}task", f"must be one of {', '.join(TASKS)}, got {task!r}")
        if model and not s.get("data"):
            raise check.fail(f"{where}data", "is required for your own model (an .npz, a tensor dict or 'digits')")
        subjects.append(SubjectConfig(
            name=name, sample=sample, model=_resolve(base, model),
            weights=_resolve(base, check.str_(s, "weights", where)),
            data=_resolve(base, check.str_(s, "data", where)), task=task,
            layers=check.list_of_str(s, "layers", where)))
    analyses = raw.get("analyses", {})
    if not isinstance(analyses, dict):
        raise check.fail("analyses", "must be a table")
    check.known_keys(analyses, {"only", "skip", "params"}, "analyses.")
    from talkgen.analyses.index import declared  # what the analyses declare, without importing them (torch)

    analyses_declared = declared()
    valid = tuple(analyses_declared)
    only = check.list_of_str(analyses, "only", "analyses.", valid)
    skip = check.list_of_str(analyses, "skip", "analyses.", valid)
    params = analyses.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise check.fail("analyses.params", "must be tables, one per analysis ([analyses.params.NAME])")
    for a, p in params.items():
        if a not in valid:
            raise check.fail(f"analyses.params.{a}", f"unknown analysis; valid names: {', '.join(valid)}")
        for k, v in p.items():
            problem = analyses_declared[a].param_problem(k, v)
            if problem:
                raise check.fail(f"analyses.params.{a}.{k}", problem)
    defaults = default_config()
    subject_names = tuple(s.name for s in subjects) or tuple(s.name for s in defaults.subjects)
    talk = _talk_controls(check, raw.get("talk", {}), base, subject_names,
                          {name: d.info() for name, d in analyses_declared.items()})
    return TalkConfig(
        title=check.str_(raw, "title", "", DEFAULT_TITLE) or DEFAULT_TITLE,
        subtitle=check.str_(raw, "subtitle", "", DEFAULT_SUBTITLE) or "",
        speaker=check.str_(raw, "speaker", "", "") or "",
        profile=profile, seed=seed, device=device,
        formats=formats, subjects=tuple(subjects) or defaults.subjects,
        only=only, skip=skip, params={k: dict(v) for k, v in params.items()}, source=str(Path(path).resolve()),
        talk=talk, pdf_notes=pdf_notes,
    )


def reload_talk(path: str | os.PathLike[str], checked: TalkConfig, analyses: Mapping[str, Any]) -> TalkConfig:
    """``checked`` (the config the same talk.toml gave when only its [talk] table differed) with the file's
    [talk] table checked again against ``analyses`` (the catalogue it was checked with): a speaker's edit
    of a title or a pin needs neither the analyses nor torch."""
    path = str(path)
    check = _Checker(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return load_config(path)  # the full check says what is wrong
    talk = _talk_controls(check, raw.get("talk", {}), Path(path).resolve().parent,
                          tuple(s.name for s in checked.subjects), analyses)
    return replace(checked, talk=talk)


def _talk_controls(check: _Checker, raw: Any, base: Path, subjects: tuple[str, ...],
                   analyses: Mapping[str, Any]) -> TalkControls:
    """talk.toml's [talk] table, checked against the outline's beats (``analyses``: the registry's
    catalogue) and the talk's main-line slide ids."""
    from talkgen.render.story import beat_ids, main_line_ids

    if not isinstance(raw, dict):
        raise check.fail("talk", "must be a table ([talk])")
    check.known_keys(raw, {"beats", "hide", "pin", "slides", "add", "theme", "accent"}, "talk.")
    from talkgen.render.theme import THEMES, accent_problem

    theme = check.str_(raw, "theme", "talk.", "light") or "light"
    if theme not in THEMES:
        raise check.fail("talk.theme", f"must be one of {', '.join(THEMES)}, got {theme!r}")
    accent = check.str_(raw, "accent", "talk.", "") or ""
    if accent and (problem := accent_problem(theme, accent)):
        raise check.fail("talk.accent", problem)
    known = beat_ids(analyses)
    order = check.list_of_str(raw, "beats", "talk.")
    hide = check.list_of_str(raw, "hide", "talk.")
    for key, ids in (("beats", order), ("hide", hide)):
        for b in ids:
            if b not in known:
                raise check.fail(f"talk.{key}", f"unknown beat {b!r}; beats: {', '.join(known)}")
        if len(set(ids)) != len(ids):
            raise check.fail(f"talk.{key}", "names a beat twice")
    pins = raw.get("pin", {})
    if not isinstance(pins, dict):
        raise check.fail("talk.pin", "must be a table of beat = \"subject\"")
    for b, s in pins.items():
        if b not in known:
            raise check.fail(f"talk.pin.{b}", f"unknown beat; beats: {', '.join(known)}")
        if not isinstance(s, str) or s not in subjects:
            raise check.fail(f"talk.pin.{b}", f"must name a subject of this talk ({', '.join(subjects)}), got {s!r}")
    shown = [b for b in (order or known) if b not in hide]
    add_raw = raw.get("add", [])
    if not isinstance(add_raw, list) or not all(isinstance(a, dict) for a in add_raw):
        raise check.fail("talk.add", "must be an array of tables ([[talk.add]])")
    fixed = main_line_ids(shown, analyses)
    added: list[AddedSlide] = []
    own: set[str] = set()
    for i, a in enumerate(add_raw):
        where = f"talk.add[{i}]."
        check.known_keys(a, {"id", "after", "title", "markdown", "file", "notes"}, where)
        sid = check.str_(a, "id", where)
        if not sid or not all(c.isalnum() or c in "-_" for c in sid):
            raise check.fail(f"{where}id", f"is required: letters, digits, '-' and '_', got {sid!r}")
        if sid in fixed or sid in own:
            raise check.fail(f"{where}id", f"{sid!r} is already the id of a slide")
        after = check.str_(a, "after", where)
        if after not in fixed and after not in own:
            raise check.fail(f"{where}after", f"no main-line slide {after!r} in this talk; ids: "
                                              f"{', '.join(list(fixed) + sorted(own))}")
        title = check.str_(a, "title", where)
        if not title:
            raise check.fail(f"{where}title", "is required")
        markdown, file = check.str_(a, "markdown", where), check.str_(a, "file", where)
        source = ""
        if (markdown is None) == (file is None):
            raise check.fail(where.rstrip("."), "give exactly one of 'markdown' (the text) or 'file' (a .md file)")
        if file is not None:
            path = (base / file).resolve()
            source = str(path)
            try:
                markdown = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise check.fail(f"{where}file", f"no such file: {path}") from None
            except UnicodeDecodeError:
                raise check.fail(f"{where}file", f"{path} is not UTF-8 text") from None
            except OSError as exc:
                raise check.fail(f"{where}file", f"cannot read {path} ({exc.strerror})") from None
        own.add(sid)
        added.append(AddedSlide(id=sid, after=after, title=title, markdown=markdown or "",
                                notes=check.str_(a, "notes", where, "") or "", file=source))
    slides = raw.get("slides", {})
    if not isinstance(slides, dict) or not all(isinstance(v, dict) for v in slides.values()):
        raise check.fail("talk.slides", "must be tables, one per slide id ([talk.slides.ID])")
    for sid, o in slides.items():
        if sid not in fixed and sid not in own:
            raise check.fail(f"talk.slides.{sid}", f"no main-line slide {sid!r} in this talk; ids: {', '.join(fixed)}")
        check.known_keys(o, {"title", "notes"}, f"talk.slides.{sid}.")
        for k in o:
            check.str_(o, k, f"talk.slides.{sid}.")
    return TalkControls(beats=order, hide=hide, pins=dict(pins), slides={k: dict(v) for k, v in slides.items()},
                        add=tuple(added), theme=theme, accent=accent)


_INIT_TEMPLATE = '''# talk.toml: what `talkgen build` builds. Every key is optional.
title = "Making The Black Box Transparent"
subtitle = "Lessons in Opacity"
speaker = ""
profile = "quick"            # "quick" for a fast rehearsal, "full" for the real talk
seed = 0                     # every analysis is seeded from this
device = "cpu"               # or "cuda" where an analysis can use a GPU
formats = ["slides", "report", "notebook"]  # also "pdf" (report.pdf), "slides-pdf" (slides.pdf), "pptx"
pdf_notes = false            # slides.pdf: a page of speaker notes after each slide

# The models to look into: the bundled samples (`talkgen samples list`), as the built-in talk has them ...
{subjects}
# ... or your own: an architecture factory plus weights (safetensors or a plain state dict),
# a TorchScript .pt or torch.export .pt2 file, and data (.npz with x and y, optional classes).
# [[subjects]]
# name = "my-model"
# model = "models.py:make_model"
# weights = "weights.safetensors"
# data = "data.npz"
# task = "image-classifier"
# layers = ["conv1", "fc1"]  # optional: the modules to look at (default: every conv, linear, recurrent)

[analyses]
only = []                    # e.g. ["weights"]; `talkgen analyses` lists the names
skip = []

# Per-analysis parameters (`talkgen analyses` shows them):
# [analyses.params.weights]
# max_side = 64

# The story. The talk is a sequence of beats in the outline's order (`talkgen beats` lists them); each makes
# one claim on the model whose measurement shows it best. Changing anything here re-renders without
# re-running an analysis. summary.json's "deck" lists the slides this build gave, with their ids.
[talk]
beats = []                   # choose and order the beats (within their sections); empty: every beat
hide = []                    # beats to leave out, e.g. ["curvature", "loss-plane"]
theme = "light"              # or "dark": the slides, slides.pdf, slides.pptx and their figures
accent = ""                  # e.g. "#0b6e99": the line above each title (needs 4.5:1 contrast on the theme)

# Show a beat on another model than the one its measurement picks:
[talk.pin]
# rnn-cell = "python-charlstm"

# Retitle a main-line slide, or give it your own notes (Markdown), by its id: a beat's id (its
# second and third slides are id-2, id-3), title, agenda, section-looking-in, ..., close, appendix:
# [talk.slides.rnn-cell]
# title = "One cell of 256 counts the indentation"
# notes = "Pause here: ask who has seen Karpathy's post."

# Your own Markdown slides, after a main-line slide (HTML in them is shown as text):
# [[talk.add]]
# id = "why-lstm"
# after = "rnn-cell"
# title = "Why an LSTM?"
# markdown = """
# - it reads one character at a time
# - everything it knows about the past fits in 256 numbers
# """
# # or: file = "slides/why-lstm.md" (relative to this file)
# notes = "Keep this under a minute."
'''


def init_template() -> str:
    """The commented talk.toml `talkgen init` writes: the built-in talk (every bundled sample), ready to edit."""
    from talkgen.resources import SAMPLE_NAMES as SAMPLES

    subjects = "\n".join(f'[[subjects]]\nname = "{n}"\nsample = "{n}"\n' for n in SAMPLES)
    return _INIT_TEMPLATE.replace("{subjects}", subjects)
