"""The talkgen command line: build, audit, analyses, beats, samples, zoo, init, clean."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from talkgen.errors import TalkgenError


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _analysis_names(value: str | None) -> tuple[str, ...]:
    """--only / --skip: analysis names, checked before anything loads (what the analyses declare, no torch)."""
    from talkgen.analyses.index import declared

    names, valid = _csv(value), declared()
    for name in names:
        if name not in valid:
            raise TalkgenError(f"unknown analysis {name!r}; valid names: {', '.join(valid)}")
    return names


def _fail(exc: TalkgenError) -> None:
    click.echo(f"talkgen: error: {exc.one_line()}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turns a TalkgenError from any command into one line on stderr and its exit status."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except TalkgenError as exc:
            _fail(exc)
        except OSError as exc:  # a full disk, a read-only folder: the environment, said in one line
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(TalkgenError(f"cannot write {where}{exc.strerror or exc}; nothing of the earlier build was replaced"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="talkgen")
def cli() -> None:
    """Look inside PyTorch models and render the talk, the audit report and the notebook.

    \b
    Example:
      talkgen build                  # the built-in talk on the bundled sample models
      talkgen audit digits-cnn       # an audit report for one model
    """


def _report_build(report, out: Path, quiet: bool = False) -> None:
    for w in report.warnings:
        click.echo(f"talkgen: warning: {w}", err=True)
    talk = [o for o in report.outcomes if o.twin_of is None]
    twins = [o for o in report.outcomes if o.twin_of is not None and o.status != "skipped"]
    ok = sum(o.status == "ok" for o in talk)
    cached = sum(o.cached for o in talk)
    failed = [o for o in report.outcomes if o.status == "failed"]
    skipped = [o for o in talk if o.status == "skipped"]
    for o in failed:
        click.echo(f"  failed: {o.analysis} on {o.subject}: {o.message}", err=True)
    if quiet:
        return
    click.echo(f"{ok} analyses ok ({cached} from cache), {len(skipped)} skipped, {len(failed)} failed"
               + (f"; {len(twins)} runs on comparison twins ({sum(o.cached for o in twins)} from cache)" if twins else ""))
    for line in skipped_summary(skipped):
        click.echo(f"  {line}")
    ran = sorted((o for o in report.outcomes if o.status == "ok" and not o.cached),
                 key=lambda o: -float(o.cost.get("wall_s", 0.0)))[:5]
    if ran:
        click.echo("  costliest: " + ", ".join(f"{o.analysis} on {o.subject} {float(o.cost['wall_s']):.1f} s"
                                            for o in ran))
    for name, path in report.outputs.items():
        click.echo(f"  {name:9s} {path}")


def skipped_summary(skipped) -> list[str]:
    """One line per reason: '12 skipped: needs labels (4 models: a, b, c, d)', commonest first."""
    by_reason: dict[str, list] = {}
    for o in skipped:
        by_reason.setdefault(o.message, []).append(o)
    lines = []
    for reason, group in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        models = list(dict.fromkeys(o.subject for o in group))
        analyses = list(dict.fromkeys(o.analysis for o in group))
        shown = ", ".join(analyses[:4]) + (", ..." if len(analyses) > 4 else "")
        lines.append(f"{len(group)} skipped ({shown}): {reason} "
                     f"({len(models)} model{'s' if len(models) != 1 else ''}: {', '.join(models)})")
    return lines


_THREADS = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads to use in all (default: OMP_NUM_THREADS if set, else the cores this process may use); "
         "analyses run side by side in that many one-thread worker processes.")


def _threads(value: int | None) -> int:
    from talkgen.cores import default_threads, tune_allocator

    tune_allocator()  # the command line owns its process (and its workers): see talkgen.cores
    return value or default_threads()


_QUIET = click.option("--quiet", "-q", is_flag=True,
                      help="No progress and no summary: only errors and warnings (on stderr).")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="talk.toml to build (default: ./talk.toml if present, else the built-in talk).")
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True,
              help="Output folder (slides.html, report.html, talk.ipynb, summary.json, figures/, cache/).")
@click.option("--only", default=None, help="Comma-separated analyses to run (see `talkgen analyses`).")
@click.option("--skip", default=None, help="Comma-separated analyses to leave out.")
@click.option("--force", is_flag=True, help="Ignore the cache: re-run every analysis and re-render everything.")
@click.option("--profile", type=click.Choice(["quick", "full"]), default=None,
              help="quick: small settings for rehearsal and tests; full: the real talk.")
@click.option("--format", "formats", default=None,
              help="Comma-separated: slides,report,notebook,pdf,slides-pdf,pptx (pdf: report.pdf; slides-pdf: the "
                   "main line as slides.pdf, both printed by headless Chromium; pptx: slides.pptx).")
@click.option("--notes", "pdf_notes", is_flag=True, default=None,
              help="slides.pdf: a page of speaker notes after each slide (talk.toml: pdf_notes = true).")
@click.option("--device", default=None, help="Torch device for analyses that can use one (cpu, cuda).")
@click.option("--strict", is_flag=True, help="Stop at the first failing analysis.")
@_THREADS
@_QUIET
def build(config_path, out, only, skip, force, profile, formats, pdf_notes, device, strict, threads, quiet) -> None:
    """Run every analysis that applies and render the talk.

    \b
    Example:
      talkgen build --profile quick --out build
      talkgen build --config talk.toml --only weights --format slides
      talkgen build --format slides,slides-pdf,pptx --notes
    """
    from talkgen.build import build as run_build
    from talkgen.config import FORMATS
    from talkgen.pipeline.progress import reporter

    if config_path is None and Path("talk.toml").is_file():
        config_path = "talk.toml"
    config, config_file = _talk_config(config_path, out)
    changes = {}
    if only is not None:
        changes["only"] = _analysis_names(only)
    if skip is not None:
        changes["skip"] = _analysis_names(skip)
    if profile:
        changes["profile"] = profile
    if device:
        changes["device"] = device
    if formats is not None:
        fs = _csv(formats)
        bad = [f for f in fs if f not in FORMATS]
        if bad:
            raise TalkgenError(f"unknown format {bad[0]!r}; formats: {', '.join(FORMATS)}")
        changes["formats"] = fs
    if pdf_notes:
        changes["pdf_notes"] = True
    config = replace(config, **changes)
    report = run_build(config, Path(out), force=force, strict=strict, progress=reporter(quiet),
                       threads=_threads(threads), config_file=config_file)
    _report_build(report, Path(out), quiet)
    sys.exit(report.exit_code)


def _talk_config(config_path: str | None, out: str):
    """The talk to build: the talk.toml at ``config_path`` (None: the built-in talk), and the record of it the
    build keeps. The same talk.toml as the last build in ``out`` is not checked again (nor the analyses loaded)."""
    from talkgen.build import remembered_config
    from talkgen.config import default_config, load_config

    if not config_path:
        return default_config(), None
    remembered, config_file = remembered_config(Path(out), config_path)
    config = remembered or load_config(config_path)
    if remembered is None and config_file is not None:
        from dataclasses import asdict

        from talkgen.analyses.index import catalogue  # what load_config checked against

        config_file = config_file | {"config": config.to_json(),
                                     "catalogue": {k: asdict(v) for k, v in catalogue().items()}}
    return config, config_file


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="talk.toml to serve (default: ./talk.toml if present, else the built-in talk).")
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True,
              help="Build folder to serve and rebuild.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port on localhost (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the default serves this machine only.")
@click.option("--profile", type=click.Choice(["quick", "full"]), default=None,
              help="quick: small settings for rehearsal; full: the real talk.")
@_THREADS
@_QUIET
def serve(config_path, out, port, host, profile, threads, quiet) -> None:
    """Serve the talk on localhost and rebuild it when its files change.

    Watches the talk.toml, the templates, your model, weights and data files and
    your own Markdown slides; a change rebuilds through the cache and the open
    page reloads at the slide it was on. A failed rebuild keeps the last good
    deck and shows its error as a banner in the page. Ctrl-C stops.

    \b
    Example:
      talkgen serve                      # ./talk.toml (or the built-in talk) at http://127.0.0.1:8000
      talkgen serve --config talk.toml --port 8080
    """
    import socket

    from talkgen.build import build as run_build
    from talkgen.outdir import check_output_dir
    from talkgen.serve import Server

    if config_path is None and Path("talk.toml").is_file():
        config_path = "talk.toml"
    check_output_dir(Path(out))
    n_threads = _threads(threads)

    def load():
        config, record = _talk_config(config_path, out)
        if profile:
            config = replace(config, profile=profile)
        if "slides" not in config.formats:
            config = replace(config, formats=("slides", *config.formats))
        return config, record

    def build(config, record):
        report = run_build(config, Path(out), threads=n_threads, config_file=record)
        for w in report.warnings:
            click.echo(f"talkgen: warning: {w}", err=True)
        return report

    def say(line: str, error: bool) -> None:
        if not quiet or error:
            click.echo(line, err=error)

    try:
        server = Server(Path(out), Path(config_path) if config_path else None, load, build, say, host=host, port=port)
    except OSError as exc:
        raise TalkgenError(f"cannot serve on {host}:{port}: {exc.strerror or exc}"
                           + ("; another program uses that port (try --port 0)" if isinstance(exc, socket.error)
                              and exc.errno in (98, 48) else "")) from None
    server.serve()


@cli.command()
@click.argument("model")
@click.option("--weights", default=None, help="Weights for MODEL=file.py:factory (.safetensors or a state dict).")
@click.option("--data", default=None, help="Data: .npz with x, y (optional classes), a tensor dict, or 'digits'; "
                                            "for a Hugging Face model directory, a text file (one sentence per line).")
@click.option("--task", default="image-classifier", show_default=True,
              type=click.Choice(["image-classifier", "char-lm", "sequence-model", "tabular-classifier"]),
              help="What MODEL does (a Hugging Face directory's task comes from its config).")
@click.option("--name", default=None, help="Name of the model in the report (default: derived from MODEL).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: build/audit-NAME, apart from the talk's build/).")
@click.option("--profile", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="quick: small settings, minutes; full: the settings of the real talk.")
@click.option("--format", "formats", default="report,notebook", show_default=True,
              help="Comma-separated: report,notebook,slides,pdf,slides-pdf,pptx (pdf: report.pdf printed by "
                   "headless Chromium).")
@click.option("--only", default=None, help="Comma-separated analyses to run (see `talkgen analyses`).")
@click.option("--skip", default=None, help="Comma-separated analyses to leave out.")
@click.option("--device", default="cpu", show_default=True, help="Torch device to compute on (cpu, cuda, cuda:1, mps).")
@click.option("--force", is_flag=True, help="Ignore the cache: re-run every analysis and re-render everything.")
@_THREADS
@_QUIET
def audit(model, weights, data, task, name, out, profile, formats, only, skip, device, force, threads, quiet) -> None:
    """Audit one model: report.html with findings first, evidence, provenance.

    MODEL is a bundled sample's name, file.py:factory or package.module:factory
    (with --weights), a TorchScript .pt / torch.export .pt2 file, or a local Hugging Face
    model directory (config.json, model.safetensors, tokenizer files; needs talkgen[hf]).

    \b
    Example:
      talkgen audit digits-cnn
      talkgen audit models.py:make_model --weights w.safetensors --data data.npz
      talkgen audit ./my-bert --data sentences.txt
    """
    from talkgen.build import build as run_build
    from talkgen.config import FORMATS, SubjectConfig, TalkConfig
    from talkgen.resources import SAMPLE_NAMES as SAMPLES

    fs = _csv(formats)
    bad = [f for f in fs if f not in FORMATS]
    if bad:
        raise TalkgenError(f"unknown format {bad[0]!r}; formats: {', '.join(FORMATS)}")
    if model in SAMPLES:
        subject = SubjectConfig(name=name or model, sample=model)
    else:
        _no_such_sample(model)
        target, sep, _ = model.rpartition(":")
        path = target if sep and target.endswith(".py") else (model if not sep else None)
        if path is not None and not Path(path).is_file() and not Path(path).is_dir():
            raise TalkgenError(f"model file not found: {path}")
        if path is not None and Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            raise TalkgenError(f"{path} is a folder without config.json: not a Hugging Face model directory")
        if data is None:
            raise TalkgenError("--data is required to audit your own model (an .npz, a tensor dict or 'digits'; "
                               "a text file of sentences for a Hugging Face model)")
        resolved_data = data if data in ("digits",) else str(Path(data).resolve())
        model_spec = model
        target, sep, attr = model.rpartition(":")
        if sep and target.endswith(".py"):
            model_spec = f"{Path(target).resolve()}:{attr}"
        elif not sep:
            model_spec = str(Path(model).resolve())
        subject = SubjectConfig(name=name or Path(target or model).stem, model=model_spec,
                                weights=str(Path(weights).resolve()) if weights else None,
                                data=resolved_data, task=task)
    config = TalkConfig(title=f"Audit of {subject.name}", subtitle="What looking inside this model found",
                        profile=profile, device=device, formats=fs, subjects=(subject,),
                        only=_analysis_names(only), skip=_analysis_names(skip), source="talkgen audit " + model)
    from talkgen.pipeline.progress import reporter

    out = out or str(Path("build") / f"audit-{_folder_name(subject.name)}")
    report = run_build(config, Path(out), force=force, progress=reporter(quiet), threads=_threads(threads))
    _report_build(report, Path(out), quiet)
    sys.exit(report.exit_code)


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "model"


def _no_such_sample(model: str) -> None:
    """MODEL that is neither a path nor a module spec: a mistyped sample name gets the closest names."""
    import difflib

    from talkgen.resources import SAMPLE_NAMES as SAMPLES

    if ":" in model or "/" in model or Path(model).exists() or Path(model).suffix:
        return
    close = difflib.get_close_matches(model, list(SAMPLES), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else f"samples: {', '.join(SAMPLES)}"
    raise TalkgenError(f"{model!r} is not a bundled sample, a model file or a module:factory; {hint}")


@cli.command("analyses")
def analyses_cmd() -> None:
    """List the registered analyses: name, talk section, what each applies to, parameters.

    \b
    Example:
      talkgen analyses
    """
    from talkgen.analyses.index import declared

    for name, d in declared().items():
        params = ", ".join(f"{k}={v}" for k, v in d.params.items()) or "none"
        click.echo(f"{name:24s} section {d.section:12s} {d.title}")
        click.echo(f"{'':24s} applies to: {d.applies_text}; params: {params}")


@cli.command("beats")
def beats_cmd() -> None:
    """List the talk's beats in order: id, section, the analysis it shows and how its model is picked.

    talk.toml's [talk] table names them: `beats` chooses and orders, `hide` leaves out,
    [talk.pin] shows one on another model, [talk.slides.ID] retitles a slide.

    \b
    Example:
      talkgen beats
    """
    from talkgen.analyses.index import catalogue
    from talkgen.render.story import outline_beats

    for b in outline_beats(catalogue()):
        shows = f"table {b.table}" if b.table else ("a table of every model" if b.kind == "lineup" else
                                                     ", ".join(b.figures))
        pick = "every model" if b.kind == "lineup" else (b.pick or "the first model it ran on")
        click.echo(f"{b.id:26s} section {b.section:11s} {b.analysis}: {b.claim}")
        click.echo(f"{'':26s} shows {shows}; model: {pick}{'; contrast: ' + b.contrast if b.contrast else ''}")


@cli.group()
def samples() -> None:
    """The bundled sample models: list them, or retrain one from scratch.

    \b
    Example:
      talkgen samples list
      talkgen samples train digits-cnn
    """


@samples.command("list")
def samples_list() -> None:
    """List the bundled samples with their measured metrics.

    \b
    Example:
      talkgen samples list
    """
    from talkgen.models.samples import SAMPLES, read_card
    from talkgen.render.text import number

    for name, spec in SAMPLES.items():
        try:
            card = read_card(name)
            metrics = ", ".join(f"{k} {number(v)}" for k, v in card["metrics"].items())
        except TalkgenError:
            metrics = "not trained yet"
        click.echo(f"{name:24s} {spec.task:18s} {spec.description}; {metrics}")


@samples.command("train")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where to write NAME.safetensors and NAME.json (default: the bundled sample_models/).")
@click.option("--quick", is_flag=True, help="A shortened recipe (for tests); the card says so.")
@click.option("--device", default="cpu", show_default=True,
              help="Torch device to train on (cpu, cuda, cuda:1, mps); the card names a device other than the CPU.")
def samples_train(name, out, quick, device) -> None:
    """Train sample NAME from scratch, deterministically (same seed, same bytes).

    \b
    Example:
      talkgen samples train digits-cnn --out /tmp/samples
      talkgen samples train digits-cnn --out /tmp/samples --device cuda
    """
    from talkgen.config import device_problem
    from talkgen.models.samples import train_sample
    from talkgen.resources import sample_models_dir

    problem = device_problem(device)
    if problem:
        raise TalkgenError(f"--device {problem}")
    card = train_sample(name, Path(out) if out else sample_models_dir(), quick=quick, device=device)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in card["metrics"].items())
    click.echo(f"trained {name} in {card['training_seconds']:.1f} s: {metrics}")
    click.echo(f"  weights sha256 {card['weights_sha256']}")


@cli.group()
def zoo() -> None:
    """The model zoo: a population of a sample's architecture, trained with varied recipes.

    \b
    Example:
      talkgen zoo build --subject digits-cnn --n 1024
      talkgen zoo build --subject digits-cnn --n 1024 --shard 2/4   # one of four independent jobs
      talkgen zoo status --subject digits-cnn --n 1024
    """


def _zoo_builder(subject, n, seed, steps, out):
    from talkgen.meta.zoo import ZooBuilder, ZooSpec

    if n < 1:
        raise TalkgenError(f"--n must be at least 1, got {n}")
    try:
        lo, hi = (int(v) for v in steps.split(","))
    except ValueError:
        raise TalkgenError(f"--steps must look like 30,1500, got {steps!r}") from None
    if not 1 <= lo <= hi:
        raise TalkgenError(f"--steps needs 1 <= low <= high, got {steps!r}")
    spec = ZooSpec(subject=subject, n=n, seed=seed, steps=(lo, hi))
    return ZooBuilder(spec, Path(out) / "cache" / "zoo")


_ZOO_OPTIONS = [
    click.option("--subject", default="digits-cnn", show_default=True, help="Sample whose architecture and data it copies."),
    click.option("--n", "n", type=int, default=1024, show_default=True, help="Members."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the zoo's recipes and initialisations."),
    click.option("--steps", default="30,1500", show_default=True, help="Range of training steps (log-uniform)."),
    click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True,
                 help="Build folder whose cache keeps the zoo (a later `talkgen build --out` reuses it)."),
]


def _zoo_options(fn):
    for opt in reversed(_ZOO_OPTIONS):
        fn = opt(fn)
    return fn


@zoo.command("build")
@_zoo_options
@click.option("--shard", default=None, help="i/k: train only every k-th chunk starting at i (1-based).")
@click.option("--threads", type=int, default=None,
              help="Torch threads (default: torch's choice; one per task with --executor ray/dask).")
@click.option("--executor", type=click.Choice(["local", "ray", "dask"]), default="local", show_default=True,
              help="Where the shards run: this process, a Ray cluster or a Dask cluster (one task per shard).")
@click.option("--address", default=None,
              help="The cluster to join (ray: ray.init(address=...), e.g. auto; dask: the scheduler, "
                   "tcp://host:8786). Default: a local cluster of --workers processes.")
@click.option("--workers", type=int, default=None, help="Processes of a local Ray or Dask cluster (default: the cores).")
@click.option("--shards", type=int, default=None,
              help="Tasks with --executor ray/dask (default: one per missing chunk, at most 64).")
@click.option("--device", default="cpu", show_default=True,
              help="Torch device the members train on (cpu, cuda, cuda:1, mps).")
def zoo_build(subject, n, seed, steps, out, shard, threads, executor, address, workers, shards, device) -> None:
    """Train the zoo (or this shard of it); resumes where a killed run stopped.

    \b
    Example:
      talkgen zoo build --subject digits-cnn --n 1024 --out build
      talkgen zoo build --subject digits-cnn --n 1024 --executor dask --workers 8
      talkgen zoo build --subject digits-cnn --n 1024 --executor ray --address auto
      talkgen zoo build --subject digits-cnn --n 1024 --device cuda
    """
    from talkgen.config import device_problem
    from talkgen.meta.zoo import parse_shard, zoo_source

    from talkgen.outdir import check_output_dir, claim

    b = _zoo_builder(subject, n, seed, steps, out)
    zoo_source(subject)  # a clear error for a sample that cannot be zooed
    if executor == "local" and (address or workers or shards):
        raise TalkgenError("--address, --workers and --shards go with --executor ray or dask")
    if executor != "local" and shard:
        raise TalkgenError(f"--shard names one job; --executor {executor} runs every shard (drop --shard)")
    if workers is not None and workers < 1:
        raise TalkgenError(f"--workers must be at least 1; got {workers}")
    problem = device_problem(device) if executor == "local" else None  # an engine's workers may have GPUs we lack
    if problem:
        raise TalkgenError(f"--device {problem}")
    claim(check_output_dir(Path(out)))  # shards may run side by side: the zoo's chunks are written atomically
    b.threads = threads
    import torch

    b.device = torch.device(device)
    b.progress = _zoo_progress()
    if executor != "local":
        from talkgen.meta.executors import run_shards

        run_shards(b, executor, shards=shards, address=address, workers=workers, threads=threads,
                   say=lambda line: click.echo(line, err=True), device=device)
        complete = not b.missing()
    else:
        complete = b.build(parse_shard(shard))
    missing = b.missing()
    click.echo(f"zoo {b.dir}: {b.spec.n_chunks - len(missing)} of {b.spec.n_chunks} chunks done"
               + ("" if complete else f"; missing chunks belong to other shards: {missing[:8]}"))


@zoo.command("status")
@_zoo_options
def zoo_status(subject, n, seed, steps, out) -> None:
    """Say which chunks of a zoo exist.

    \b
    Example:
      talkgen zoo status --subject digits-cnn --n 1024
    """
    b = _zoo_builder(subject, n, seed, steps, out)
    missing = b.missing()
    state = "complete" if not missing else f"missing {len(missing)} of {b.spec.n_chunks} chunks"
    click.echo(f"zoo {b.dir}: {state}")


def _zoo_progress():
    import sys

    if not sys.stderr.isatty():
        return None
    return lambda text: click.echo(f"\r{text}   ", nl=False, err=True)


@cli.command()
@click.option("--path", type=click.Path(dir_okay=False), default="talk.toml", show_default=True,
              help="Where to write the talk.toml.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path, force) -> None:
    """Write a commented talk.toml to start from.

    \b
    Example:
      talkgen init && talkgen build
    """
    from talkgen.config import init_template
    from talkgen.resources import SAMPLE_NAMES as SAMPLES

    p = Path(path)
    if p.exists() and not force:
        raise TalkgenError(f"{p} exists; use --force to overwrite it")
    p.write_text(init_template(), encoding="utf-8")
    click.echo(f"wrote {p}: the built-in talk ({len(SAMPLES)} sample models: {', '.join(SAMPLES)}; every analysis); "
               "edit it, then run `talkgen build`")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True,
              help="The build folder to empty (only a folder talkgen made).")
@click.option("--keep-cache", is_flag=True, help="Remove the outputs but keep cached results.")
def clean(out, keep_cache) -> None:
    """Remove a build folder's outputs (and its cache unless --keep-cache).

    \b
    Example:
      talkgen clean --keep-cache
    """
    from talkgen.outdir import clean as clean_folder

    if clean_folder(Path(out), keep_cache):
        click.echo(f"cleaned {out}")
    else:
        click.echo(f"nothing to clean at {out}")


def main() -> None:
    cli(prog_name="talkgen")
