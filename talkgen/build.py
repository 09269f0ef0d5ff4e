"""One build: config -> subjects -> plan -> results -> deck -> notebook -> HTML, atomically written.

Every input is resolved and validated before anything is written, so bad input leaves an
earlier build and the cache as they were. Each output file is written to a temporary name
and renamed into place: a build killed halfway leaves the previous outputs intact.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from typing import TYPE_CHECKING

from talkgen.results import AnalysisInfo, Finding, Outcome, Result
from talkgen.config import SubjectConfig, TalkConfig, device_problem
from talkgen.errors import TalkgenError
from talkgen import outdir
from talkgen.files import write_atomic
from talkgen.render.assets import reveal_version
from talkgen.resources import templates_dir

if TYPE_CHECKING:
    from talkgen.subject import Subject

# torch, the models and the pipeline are imported where a build needs them: a build whose inputs have
# not changed since the last one (``talkgen.inputs``) returns, or re-renders from the cache, without them.


@dataclass
class BuildReport:
    exit_code: int
    outputs: dict[str, Path]
    outcomes: list[Outcome]
    warnings: list[str] = field(default_factory=list)


def load_subject(sc: SubjectConfig) -> "Subject":
    """The subject ``sc`` names, loaded; it can load its model again (``Subject.remake``), so that a large
    model need not be held while analyses run on its twins."""
    subject = _load_subject(sc)
    subject.remake = lambda: _load_subject(sc).model
    return subject


def _load_subject(sc: SubjectConfig) -> "Subject":
    from talkgen.data import BUNDLED, load_bundled, load_user_data
    from talkgen.models.loading import load_model
    from talkgen.models.samples import load_sample

    if sc.sample:
        subject = load_sample(sc.sample)
        if sc.name != sc.sample or sc.layers:
            subject = replace(subject, name=sc.name, layers=sc.layers or subject.layers)
        _check_layers(subject)
        return subject
    assert sc.model is not None
    from talkgen.models.hf import is_hf_dir, load_hf_subject

    if is_hf_dir(sc.model):
        subject = load_hf_subject(sc.model, sc.data, sc.name)
        if sc.layers:
            subject = replace(subject, layers=sc.layers)
        _check_layers(subject)
        return subject
    model, source = load_model(sc.model, sc.weights)
    if sc.data is None:
        raise TalkgenError(f"subject {sc.name!r}: no data given (--data FILE.npz or a bundled name)")
    data = load_bundled(sc.data) if sc.data in BUNDLED else load_user_data(sc.data)
    from talkgen.subject import Subject

    subject = Subject(name=sc.name, model=model, task=sc.task, data=data, source=source, layers=sc.layers)
    _check_layers(subject)
    _check_shapes(subject)
    return subject


def _check_layers(subject: "Subject") -> None:
    modules = {n for n, _ in subject.model.named_modules() if n}
    missing = [n for n in subject.layers if n not in modules]
    if missing:
        raise TalkgenError(f"subject {subject.name!r}: no layer {', '.join(map(repr, missing))} in the model; "
                           f"layers: {', '.join(sorted(modules)[:40])}")


def _check_shapes(subject: "Subject") -> None:
    """One forward pass on two test inputs: a wrong input shape is a one-line error, not a traceback."""
    import torch

    x = subject.data.x_test[:2]
    try:
        with torch.no_grad():
            out = subject.model(x)
    except Exception as exc:  # noqa: BLE001
        raise TalkgenError(f"subject {subject.name!r}: the model cannot take the data's inputs of shape "
                           f"{tuple(x.shape)} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if subject.task.endswith("classifier") and isinstance(out, torch.Tensor) and out.ndim == 2 \
            and out.shape[1] < len(subject.data.classes):
        raise TalkgenError(f"subject {subject.name!r}: the model gives {out.shape[1]} outputs but the data "
                           f"names {len(subject.data.classes)} classes")


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("talkgen", "torch", "numpy", "matplotlib", "scikit-learn", "nbconvert", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass(frozen=True)
class SubjectFacts:
    """What the outputs say of a subject; a build's record keeps them, so a re-render needs no model."""

    name: str
    source: str
    task: str
    model_hash: str
    data_hash: str
    data_source: str
    nonfinite: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, s: "Subject") -> "SubjectFacts":
        return cls(name=s.name, source=s.source, task=s.task, model_hash=s.model_hash, data_hash=s.data_hash,
                   data_source=s.data.source, nonfinite=dict(s.nonfinite_parameters()))

    def nonfinite_parameters(self) -> dict[str, int]:
        return dict(self.nonfinite)


def summary_json(config: TalkConfig, subjects: Sequence[SubjectFacts], outcomes: Sequence[Outcome],
                 findings: Sequence[tuple[str, Finding, str]], exit_code: int,
                 outputs: dict[str, Path], versions: dict[str, str]) -> dict[str, Any]:
    subj: dict[str, Any] = {}
    for s in subjects:
        subj[s.name] = {"source": s.source, "task": s.task, "model_hash": s.model_hash,
                        "data_hash": s.data_hash, "nonfinite_parameters": s.nonfinite_parameters(),
                        "analyses": {}}
    for o in outcomes:
        entry: dict[str, Any] = {"status": o.status, "cached": o.cached}
        if o.twin_of is not None:  # a comparison baseline that an analysis of o.twin_of asked for
            twins = subj[o.twin_of].setdefault("twins", {}).setdefault(o.subject, {})
            twins[o.analysis] = entry | ({"message": o.message} if o.message else {}) | (
                {"cost": o.cost} if o.cost else {})
            continue
        if o.status == "skipped":
            entry["reason"] = o.message
        if o.status == "failed":
            entry["message"] = o.message
        if o.result is not None and o.result.data.get("sampled"):
            entry["sampled"] = o.result.data["sampled"]  # what the size budget sampled (talkgen.analyses.budget)
        if o.result is not None:
            entry["summaries"] = {k: {"value": _finite(v.value), "unit": v.unit} | (
                {"n": v.n, "interval": [_finite(v.lo), _finite(v.hi)]} if v.n is not None else {})
                for k, v in o.result.summaries.items()}
        if o.cost:
            entry["cost"] = o.cost
        subj[o.subject]["analyses"][o.analysis] = entry
    return {
        "talkgen_version": versions.get("talkgen"),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": config.profile,
        "seed": config.seed,
        "exit_status": exit_code,
        "outputs": {k: v.name for k, v in outputs.items()},
        "findings": [{"subject": s, "severity": f.severity, "title": f.title, "detail": f.detail,
                      "value": _finite(f.value), "threshold": _finite(f.threshold), "evidence": e}
                     for s, f, e in findings],
        "subjects": subj,
    }


def build(config: TalkConfig, out: Path, *, force: bool = False, strict: bool = False,
          progress: Callable[[str], None] | None = None, threads: int | None = None,
          config_file: Mapping[str, Any] | None = None) -> BuildReport:
    """Run the talk described by ``config`` into ``out``; returns the exit code and outputs.

    Every input is checked before ``out`` is touched; the analyses run under the folder's lock and
    the outputs are rendered into a staging folder that replaces the previous outputs together
    (``talkgen.outdir``). ``threads``: the CPU threads to use (see :func:`talkgen.pipeline.run_plan`;
    None: one analysis at a time with torch's own setting). ``config_file``: the talk.toml this config was
    checked from, as :func:`remembered_config` reads it back (its path, digest and checked config)."""
    problem = device_problem(config.device)
    if problem:
        raise TalkgenError(f"--device {problem}")
    out = outdir.check_output_dir(Path(out))
    if {"pdf", "slides-pdf"} & set(config.formats):  # fail before any work when the printer is missing
        from talkgen.render.pdf import find_chromium

        find_chromium()
    if not force:
        again = _from_record(config, out, config_file)
        if again is not None:
            return again
    from talkgen.analyses.base import catalogue
    from talkgen.pipeline import Cache, make_plan, run_plan
    from talkgen.pipeline.plan import select_names

    names = select_names(config.only, config.skip)
    subjects = [load_subject(sc) for sc in config.subjects]
    plan = make_plan(subjects, names, config.profile, config.params, config.seed, config.device)  # validates params too

    outdir.claim(out)
    with outdir.locked(out):
        outcomes = run_plan(plan, Cache(out / "cache"), seed=config.seed, device=config.device,
                            profile=config.profile, force=force, strict=strict, progress=progress,
                            threads=threads, after_each=_figure_drawer(out, config.formats, config.talk.theme))
        return _render(config, [SubjectFacts.of(s) for s in subjects], outcomes, out, force, catalogue(),
                       config_file)


def remembered_config(out: Path, path: str | Path) -> tuple[TalkConfig | None, dict[str, Any] | None]:
    """The talk.toml at ``path`` as the last build in ``out`` checked it, when neither the file (nor what it
    reads) nor talkgen changed since; when only its [talk] table changed, that config with [talk] checked
    again (neither needs the analyses, nor torch). None when the file must be checked whole. Also the record
    of it for this build to keep (without "config" when the file must be checked whole)."""
    from talkgen.inputs import config_file_digest

    digests = config_file_digest(path)
    if digests is None:
        return None, None
    kept = _read_record(Path(out)).get("config_file") or {}
    mine = {"path": str(Path(path).resolve()), "digest": digests[0], "rest": digests[1]}
    if kept.get("path") != mine["path"] or not isinstance(kept.get("config"), dict) \
            or not isinstance(kept.get("catalogue"), dict):
        return None, mine
    try:
        config = TalkConfig.from_json(kept["config"])
    except (TypeError, ValueError, KeyError):
        return None, mine
    if config.device != "cpu":  # whether a GPU is there is not in the digest: check that again
        return None, mine
    if kept.get("digest") == digests[0]:
        return config, kept
    if kept.get("rest") == digests[1]:  # only [talk] changed: check it against the same catalogue
        from talkgen.config import reload_talk

        config = reload_talk(path, config, {k: AnalysisInfo(**v) for k, v in kept["catalogue"].items()})
        return config, mine | {"config": config.to_json(), "catalogue": kept["catalogue"]}
    return None, mine


def _from_record(config: TalkConfig, out: Path, config_file: Mapping[str, Any] | None = None) -> BuildReport | None:
    """The last build's outcome when none of its analysis inputs changed (``talkgen.inputs``): its outputs
    as they are when nothing else changed either, else re-rendered from the cached results it names.
    None when the full path must decide (changed inputs, a failed analysis to retry, a missing result)."""
    from talkgen.inputs import analysis_fingerprint, render_fingerprint
    from talkgen.pipeline.cache import Cache

    record = _read_record(out)
    if not record.get("inputs") or record.get("inputs") != analysis_fingerprint(config):
        return None
    try:
        outcomes = [Outcome(r["subject"], r["analysis"], r["status"], cost=dict(r.get("cost") or {}),
                            cached=r["status"] == "ok", message=r.get("message", ""), key=r.get("key", ""),
                            twin_of=r.get("twin_of")) for r in record["outcomes"]]
        subjects = [SubjectFacts(**f) for f in record["subjects"]]
        catalogue = {k: AnalysisInfo(**v) for k, v in record["catalogue"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):  # a record of another version: the full path decides
        return None
    if any(o.status == "failed" for o in outcomes):
        return None  # a failed analysis is tried again
    fresh = _up_to_date(out, record.get("key", ""), config.formats)
    if fresh is not None and record.get("render") == render_fingerprint(config, templates_dir()):
        warnings, _ = _input_warnings(subjects)  # nothing changed at all: the outputs stand as they are
        return BuildReport(exit_code=2 if warnings else 0, outputs=fresh, outcomes=outcomes, warnings=warnings)
    cache = Cache(out / "cache")
    with outdir.locked(out):
        for o in outcomes:
            if o.status == "ok":
                hit = cache.get(o.analysis, o.key)
                if hit is None:
                    return None
                o.result = hit[0]
        return _render(config, subjects, outcomes, out, False, catalogue, config_file)


def _figure_drawer(out: Path, formats: Sequence[str], theme: str = "light") -> Callable[[Any, Result], None]:
    """Draws a result's figures into the build's figure cache where the result was computed (a worker
    process, in parallel with the other analyses), so that rendering finds them drawn; their compact copies
    too when an output embeds them (the report and its PDF)."""
    compact = bool({"report", "pdf"} & set(formats))

    def draw(item: Any, result: Result) -> None:
        if item.subject.twin_of is None:  # twins are baselines inside other analyses, never drawn
            from talkgen.render.deck import FigureCache, predraw

            predraw(result, FigureCache(out / "cache" / "figures", theme), compact)
    return draw


def _input_warnings(subjects: Sequence[SubjectFacts]) -> tuple[list[str], dict[str, list[Finding]]]:
    """Warnings (exit status 2) and findings about the inputs themselves: non-finite weights."""
    warnings: list[str] = []
    input_findings: dict[str, list[Finding]] = {}
    for s in subjects:
        bad = s.nonfinite_parameters()
        if bad:
            total = sum(bad.values())
            warnings.append(f"subject {s.name!r} has {total} NaN/inf weights in {', '.join(bad)}; "
                            "the report flags them")
            input_findings[s.name] = [Finding(
                severity="high", title=f"non-finite weights in {', '.join(bad)}",
                detail=f"{total} NaN or infinite entries ({', '.join(f'{k}: {v}' for k, v in bad.items())}); "
                       "every output that depends on them is meaningless",
                value=float(total), threshold=0.0)]
    return warnings, input_findings


def _render(config: TalkConfig, subjects: Sequence[SubjectFacts], outcomes: Sequence[Outcome], out: Path,
            force: bool, catalogue: Mapping[str, AnalysisInfo],
            config_file: Mapping[str, Any] | None = None) -> BuildReport:
    warnings, input_findings = _input_warnings(subjects)
    versions = _versions()
    templates = templates_dir()
    exit_code = 1 if any(o.status == "failed" for o in outcomes) else 0
    if warnings:
        exit_code = 2
    key = _render_key(config, subjects, outcomes, templates, versions)
    record = _record(config, subjects, outcomes, templates, catalogue, key)
    if config_file:
        record["config_file"] = dict(config_file)
    fresh = None if force else _up_to_date(out, key, config.formats)
    if fresh is not None:  # nothing that the outputs depend on has changed: keep them as they are
        previous = _read_record(out)
        kept = json.loads(json.dumps(record | {"outputs": previous.get("outputs")}))
        if kept != previous:  # the same outputs from newer inputs: the next build can tell at once
            write_atomic(out / RENDER_KEY, json.dumps(kept))
        return BuildReport(exit_code=exit_code, outputs=fresh, outcomes=list(outcomes), warnings=warnings)
    staging = outdir.new_staging(out)
    try:
        made = _write_outputs(config, subjects, outcomes, staging, out, templates, versions, input_findings,
                              exit_code, record, catalogue, warnings)
        outdir.commit(out, staging)
    finally:
        if staging.exists():  # not committed: the earlier outputs stay as they were
            shutil.rmtree(staging, ignore_errors=True)
    return BuildReport(exit_code=exit_code, outputs={k: out / v for k, v in made.items()},
                       outcomes=list(outcomes), warnings=warnings)


def _write_outputs(config: TalkConfig, subjects: Sequence[SubjectFacts], outcomes: Sequence[Outcome], stage: Path,
                   out: Path, templates: Path, versions: dict[str, str],
                   input_findings: dict[str, list[Finding]], exit_code: int, record: dict[str, Any],
                   catalogue: Mapping[str, AnalysisInfo], warnings: list[str]) -> dict[str, str]:
    """Render every output into ``stage``; returns {output kind: file name}."""
    import nbformat

    from talkgen.render.deck import FigureCache, build_deck
    from talkgen.render.export import render_report, render_slides
    from talkgen.render.notebook import deck_to_notebook, report_notebook

    for o in outcomes:  # fitted models an analysis hands to the user (e.g. the sparse autoencoder)
        if o.status == "ok" and o.result is not None and "export" in o.result.data:
            export_result(o.result, stage / "models")
    facts = {"talkgen": versions["talkgen"], "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
             "config": config.source, "profile": config.profile, "seed": config.seed, "device": config.device,
             "built (UTC)": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "reveal.js": reveal_version()}
    for s in subjects:
        facts[f"{s.name}: model"] = s.source
        facts[f"{s.name}: model sha256"] = s.model_hash
        facts[f"{s.name}: data"] = s.data_source
        facts[f"{s.name}: data sha256"] = s.data_hash
    ledger = [{"subject": o.subject, "analysis": o.analysis, "status": o.status,
               "wall_s": o.cost.get("wall_s", ""), "peak_mem_mb": o.cost.get("peak_mem_mb", ""),
               "forward_passes": o.cost.get("forward_passes", ""),
               "backward_passes": o.cost.get("backward_passes", ""), "cached": o.cached,
               **({"gpu_peak_mb": o.cost["gpu_peak_mb"]} if "gpu_peak_mb" in o.cost else {})} for o in outcomes]
    deck = build_deck(title=config.title, subtitle=config.subtitle, speaker=config.speaker,
                      outcomes=outcomes, catalogue=catalogue, templates=templates,
                      figure_cache=FigureCache(out / "cache" / "figures", config.talk.theme),
                      provenance={"facts": facts, "ledger": ledger}, subject_notes=input_findings,
                      controls=config.talk)
    warnings.extend(deck.warnings)
    talk = config.to_json() | {"cache": str((out / "cache").resolve())}
    nb = deck_to_notebook(deck, talk)

    made: dict[str, str] = {}
    if "notebook" in config.formats:
        made["notebook"] = "talk.ipynb"
        write_atomic(stage / "talk.ipynb", nbformat.writes(nb))
    if "slides" in config.formats:
        made["slides"] = "slides.html"
        write_atomic(stage / "slides.html", render_slides(nb, templates, theme=config.talk.theme,
                                                          accent=config.talk.accent))
    if "report" in config.formats or "pdf" in config.formats:
        write_atomic(stage / "report.html", render_report(report_notebook(deck, talk), templates))
        if "report" in config.formats:
            made["report"] = "report.html"
        else:
            made["_report"] = "report.html"  # printed to PDF; kept beside it
        if "pdf" in config.formats:
            from talkgen.render.pdf import html_to_pdf

            made["pdf"] = html_to_pdf(stage / "report.html", stage / "report.pdf").name
    if "slides-pdf" in config.formats:  # the main line only, as the arrow keys walk it
        from talkgen.render.pdf import SLIDES_READY, html_to_pdf

        main_line = deck_to_notebook(replace(deck, talk=tuple(e for e in deck.talk if e.place == "main")), talk)
        page = stage / ".slides-print.html"  # the page printed; not an output
        write_atomic(page, render_slides(main_line, templates, print_view=True, notes=config.pdf_notes,
                                         theme=config.talk.theme, accent=config.talk.accent))
        made["slides-pdf"] = html_to_pdf(page, stage / "slides.pdf", ready=SLIDES_READY).name
        page.unlink()
    if "pptx" in config.formats:
        from talkgen.render.powerpoint import notebook_to_pptx

        made["pptx"] = "slides.pptx"
        write_atomic(stage / "slides.pptx", notebook_to_pptx(nb, theme=config.talk.theme, accent=config.talk.accent))
    for fig in deck.figures():
        stem = f"{fig.number:02d}-{_safe(fig.subject)}-{fig.analysis}-{fig.spec_id}"
        if fig.html:
            write_atomic(stage / "figures" / f"{stem}.html", fig.html)
        else:
            write_atomic(stage / "figures" / f"{stem}.png", fig.png)
    made["summary"] = "summary.json"
    outputs = {k: out / v for k, v in made.items() if not k.startswith("_")}
    summary = summary_json(config, subjects, outcomes, deck.findings, exit_code, outputs, versions)
    summary["deck"] = deck.structure() | {"warnings": list(deck.warnings)}
    from talkgen.render.powerpoint import main_line_notes

    for entry, notes in zip(summary["deck"]["main"], main_line_notes(nb), strict=True):
        entry["notes"] = notes  # as the speaker view and slides.pptx give them, in plain text
    write_atomic(stage / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    write_atomic(stage / RENDER_KEY, json.dumps(record | {"outputs": {k: v.name for k, v in outputs.items()}}))
    return {k: v for k, v in made.items() if not k.startswith("_")}


RENDER_KEY = ".render-key.json"  # the build's record: render key, input fingerprints, outcomes, subjects


def _record(config: TalkConfig, subjects: Sequence[SubjectFacts], outcomes: Sequence[Outcome], templates: Path,
            catalogue: Mapping[str, AnalysisInfo], key: str) -> dict[str, Any]:
    """What the next build needs to know that nothing changed, and to re-render without the models."""
    from dataclasses import asdict

    from talkgen.inputs import analysis_fingerprint, render_fingerprint

    names = {o.analysis for o in outcomes}
    return {"key": key, "inputs": analysis_fingerprint(config), "render": render_fingerprint(config, templates),
            "outcomes": [{"subject": o.subject, "analysis": o.analysis, "status": o.status, "key": o.key,
                          "message": o.message, "cost": o.cost, "twin_of": o.twin_of} for o in outcomes],
            "subjects": [asdict(s) for s in subjects],
            "catalogue": {k: asdict(v) for k, v in catalogue.items() if k in names}}


def _read_record(out: Path) -> dict[str, Any]:
    try:
        record = json.loads((out / RENDER_KEY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def export_result(result: Result, folder: Path) -> Path:
    """Write the arrays a result marks for export (``data["export"]``: file, prefix, metadata) as
    ``folder/<subject>-<file>`` in safetensors, loadable without talkgen's cache."""
    import numpy as np
    from safetensors.numpy import save

    spec = result.data["export"]
    prefix = spec.get("prefix", "")
    tensors = {k[len(prefix):]: np.ascontiguousarray(v) for k, v in result.arrays.items() if k.startswith(prefix)}
    path = folder / f"{_safe(result.subject)}-{spec['file']}"
    write_atomic(path, save(tensors, metadata={k: str(v) for k, v in spec.get("metadata", {}).items()}))
    return path


def _render_key(config: TalkConfig, subjects: Sequence[SubjectFacts], outcomes: Sequence[Outcome],
                templates: Path, versions: dict[str, str]) -> str:
    """A hash of everything the rendered outputs depend on: results (by cache key), statuses,
    the config, the subjects, the templates' bytes, the house style and talkgen's version."""
    import hashlib

    from talkgen.hashing import canonical_json
    from talkgen.render.style import STYLE_VERSION

    h = hashlib.sha256(canonical_json({
        "config": config.to_json(), "talkgen": versions.get("talkgen"), "style": STYLE_VERSION,
        "subjects": [[s.name, s.model_hash, s.data_hash, s.source] for s in subjects],
        "outcomes": [[o.subject, o.analysis, o.status, o.key, o.message] for o in outcomes],
    }).encode())
    render_code = Path(__file__).parent / "render"  # a changed renderer re-renders, even at the same version
    for base in (templates, render_code):
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.suffix != ".pyc":
                h.update(str(path.relative_to(base)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def _up_to_date(out: Path, key: str, formats: Sequence[str]) -> dict[str, Path] | None:
    """The previous outputs, when they were rendered from the same key and all still exist."""
    record = _read_record(out)
    names = {"notebook": "talk.ipynb", "slides": "slides.html", "report": "report.html", "pdf": "report.pdf",
             "slides-pdf": "slides.pdf", "pptx": "slides.pptx"}
    wanted = {f: out / names[f] for f in formats} | {"summary": out / "summary.json"}
    if record.get("key") != key or not all(p.is_file() for p in wanted.values()):
        return None
    return wanted


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
