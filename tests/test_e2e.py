"""End to end: the CLI builds slides, report, notebook and summary.json from nothing."""

from __future__ import annotations

import json

import nbformat

from conftest import run_cli


def test_quick_build_writes_every_output(quick_build):
    for name in ("slides.html", "report.html", "talk.ipynb", "summary.json"):
        assert (quick_build / name).is_file(), name
    nb = nbformat.read(quick_build / "talk.ipynb", as_version=4)
    nbformat.validate(nb)
    kinds = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    assert kinds.count("slide") >= 6 and "notes" in kinds
    figure_cells = [c for c in nb.cells if c.metadata["talkgen"].get("part") == "figure"]
    assert figure_cells, "every figure is a code cell with its image as output"
    for c in figure_cells:
        assert c.source.startswith("talkgen.figure(TALK")
        data = c.outputs[0]["data"]
        assert (data.get("image/png") or data.get("text/html")) and c.metadata["talkgen"]["alt"]
    # figures/ holds every figure of the build once (the report shows them all); the talk shows each
    # picture once, so two identical pictures (the zoo two subjects share) are one slide there
    report = (quick_build / "report.html").read_text()
    in_report = report.count('<figure id="figure-') + report.count('<p class="same">')
    assert len(list((quick_build / "figures").iterdir())) == in_report
    assert 0 < len(figure_cells) <= in_report


def test_built_in_talk_covers_every_sample_and_analysis(quick_build):
    from talkgen.analyses.base import registry
    from talkgen.models.samples import SAMPLES

    summary = json.loads((quick_build / "summary.json").read_text())
    assert set(summary["subjects"]) == set(SAMPLES)
    for subject, entry in summary["subjects"].items():
        assert set(entry["analyses"]) == set(registry())
        for name, a in entry["analyses"].items():
            assert a["status"] in ("ok", "skipped"), (subject, name, a)
            if a["status"] == "skipped":
                assert a["reason"]
    assert summary["subjects"]["python-charlstm"]["analyses"]["rnn-cells"]["status"] == "ok"
    assert summary["subjects"]["digits-cnn"]["analyses"]["rnn-cells"]["status"] == "skipped"


def test_summary_json_shape(quick_build):
    summary = json.loads((quick_build / "summary.json").read_text())
    assert summary["exit_status"] == 0
    entry = summary["subjects"]["digits-cnn"]["analyses"]["weights"]
    assert entry["status"] == "ok"
    sr = entry["summaries"]["fc1.weight.stable_rank"]
    assert 1.0 <= sr["value"] <= 64 and sr["unit"] == ""
    assert entry["cost"]["wall_s"] > 0
    clean = [f for f in summary["findings"] if f["subject"] == "digits-cnn"]
    assert not [f for f in clean if f["severity"] == "high"]  # the clean sample raises nothing severe
    assert all(f["evidence"] for f in clean)


def test_notebook_figure_cell_recomputes_the_same_image(quick_build):
    nb = nbformat.read(quick_build / "talk.ipynb", as_version=4)
    namespace: dict = {}
    exec(nb.cells[0].source, namespace)  # the setup cell: import talkgen, TALK = {...}
    cell = next(c for c in nb.cells if c.metadata["talkgen"].get("part") == "figure")
    image = eval(cell.source, namespace)
    import base64

    assert image.png == base64.b64decode(cell.outputs[0]["data"]["image/png"])


def test_audit_on_the_digits_model(quick_build, tmp_path):
    """The audit command end to end; its folder starts with the talk's cache, as beside a built talk, so the
    model's analyses are read back (what is new is the audit's own gathering and rendering)."""
    import shutil

    shutil.copytree(quick_build / "cache", tmp_path / "cache")
    shutil.copy(quick_build / ".talkgen", tmp_path / ".talkgen")  # a folder talkgen made
    proc = run_cli("audit", "digits-cnn", "--out", str(tmp_path), check=True)
    assert "report" in proc.stdout
    nbformat.validate(nbformat.read(tmp_path / "talk.ipynb", as_version=4))
    html = (tmp_path / "report.html").read_text()
    assert html.index('id="findings"') < html.index('id="provenance"')
    assert not (tmp_path / "slides.html").exists()  # audit is report-first


def test_audit_of_a_user_model(user_model_dir, tmp_path):
    d = user_model_dir
    proc = run_cli("audit", f"{d}/models.py:make_model", "--weights", f"{d}/weights.safetensors",
                   "--data", f"{d}/data.npz", "--out", str(tmp_path / "out"), check=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["subjects"]["models"]["analyses"]["weights"]["status"] == "ok", proc.stdout


def test_every_command_has_help_with_an_example():
    for args in (["build"], ["audit"], ["analyses"], ["samples"], ["samples", "list"],
                 ["samples", "train"], ["init"], ["clean"]):
        proc = run_cli(*args, "--help", check=True)
        assert "Example" in proc.stdout, args


def test_analyses_lists_the_registry():
    from talkgen.analyses.base import registry

    out = run_cli("analyses", check=True).stdout
    for name in registry():
        assert name in out


def test_init_writes_a_config_that_builds(tmp_path):
    run_cli("init", cwd=tmp_path, check=True)
    from talkgen.config import load_config

    config = load_config(tmp_path / "talk.toml")
    assert config.subjects[0].sample == "digits-cnn"
    assert run_cli("init", cwd=tmp_path).returncode == 2  # refuses to overwrite


def test_clean_keeps_cache_when_asked(quick_build, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(quick_build, copy)
    run_cli("clean", "--out", str(copy), "--keep-cache", check=True)
    assert sorted(p.name for p in copy.iterdir() if not p.name.startswith(".")) == ["cache"]


def test_every_figure_has_speaker_notes_of_its_own(quick_build):
    """Each figure's notes explain that figure with this build's numbers; the generic 'how to read this kind
    of chart' text is only a fallback for a figure added without notes, and the built-in talk has none."""
    nb = nbformat.read(quick_build / "talk.ipynb", as_version=4)
    cells = nb.cells
    generic = []
    for i, c in enumerate(cells):
        if c.metadata["talkgen"].get("part") != "figure":
            continue
        notes = next((n for n in cells[i + 1:i + 3] if n.metadata["talkgen"].get("part") == "notes"), None)
        assert notes is not None and notes.source.strip(), c.source
        if "How to read it:" in notes.source:
            generic.append(c.source)
    assert not generic, generic


def test_closing_bullets_come_from_this_builds_numbers(quick_build):
    nb = nbformat.read(quick_build / "talk.ipynb", as_version=4)
    closing = [c for c in nb.cells if c.metadata["talkgen"].get("kind") == "closing"]
    assert len(closing) == 1
    text = closing[0].source
    summary = json.loads((quick_build / "summary.json").read_text())
    attacks = summary["subjects"]["digits-cnn"]["analyses"]["attacks"]["summaries"]
    fgsm, rand = attacks["flip_rate.fgsm"], attacks["flip_rate.random"]
    assert "From this build's measurements:" in text
    plain = text.replace("\\", "")  # Markdown escapes
    lesson = f"flips {100 * fgsm['value']:.0f}% (95% interval {100 * fgsm['interval'][0]:.0f}% to " \
             f"{100 * fgsm['interval'][1]:.0f}%; n = {fgsm['n']}) of digits-cnn's correct predictions"
    # the attack lesson is stated when the bar is cleared by the whole interval: its numbers are this build's
    assert (lesson in plain) == (fgsm["interval"][0] >= 2 * rand["interval"][1] + 0.05), plain
    trojan = summary["subjects"]["digits-cnn-trojan"]["analyses"]["meta-trojan"]["summaries"]
    assert ("flags digits-cnn-trojan" in text) == bool(trojan["flagged"]["value"])
    assert text.count("\n- ") <= 6 + 3  # at most six lessons and three findings


def test_the_notebook_runs_end_to_end_and_every_figure_cell_reproduces_its_image(quick_build, tmp_path):
    """talk.ipynb executed by kernels (nbclient): every code cell runs, gathering analyses (fingerprint,
    costs) included, reading the build's cache; every figure cell's new output is the image the build drew.
    The figure cells are shared between two kernels that run side by side (each runs the setup cell first),
    as a reader with two cores would; every one of them runs."""
    import asyncio
    import copy

    import nbclient

    nb = nbformat.read(quick_build / "talk.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code[0] == 0 and nb.cells[0].metadata["talkgen"]["part"] == "setup"
    before = {i: c.outputs[0]["data"] for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and c.metadata["talkgen"].get("part") == "figure"}
    assert len(before) >= 20 and set(before) == set(code[1:])  # every other code cell draws a figure
    gathered = {c.source.split(",")[2].strip(" '") for i, c in enumerate(nb.cells) if i in before}
    assert {"costs", "fingerprint"} <= gathered
    figures = sorted(before)
    halves = [figures[k::2] for k in range(2)]
    books = []
    for half in halves:
        book = copy.deepcopy(nb)
        book.cells = [copy.deepcopy(nb.cells[0])] + [copy.deepcopy(nb.cells[i]) for i in half]
        books.append(book)

    async def execute_all():
        await asyncio.gather(*(nbclient.NotebookClient(b, timeout=1800, kernel_name="python3",
                                                       resources={"metadata": {"path": str(tmp_path)}}).async_execute()
                               for b in books))

    asyncio.run(execute_all())
    ran = {i: cell for half, book in zip(halves, books) for i, cell in zip(half, book.cells[1:])}
    assert sorted(ran) == figures
    different = []
    for i, data in before.items():
        outputs = [o for o in ran[i].outputs if o.output_type in ("display_data", "execute_result")]
        assert outputs, nb.cells[i].source
        new = outputs[-1]["data"]
        if "image/png" in data:
            import base64

            same = "image/png" in new and base64.b64decode(new["image/png"]) == base64.b64decode(data["image/png"])
        else:
            same = new.get("text/html") == data["text/html"]
        if not same:
            different.append(nb.cells[i].source)
    assert not different, different


class _Report:
    """report.html read as a tree of the parts an auditor meets: every element's id, the sections in
    order, each <details> block with the figures in it, and every embedded image's bytes."""

    def __init__(self, text: str) -> None:
        from html.parser import HTMLParser

        self.ids: list[str] = []
        self.sections: list[str] = []  # the id (or "") of each top-level <section>, in order
        self.images: list[str] = []  # data URIs
        self.open_figures = 0
        self.details: list[dict] = []  # {"summary": str, "figures": int}
        report = self

        class P(HTMLParser):
            depth = 0  # <details> nesting
            in_summary = False

            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if "id" in a:
                    report.ids.append(a["id"])
                if tag == "section":
                    report.sections.append(a.get("id", ""))
                elif tag == "details":
                    self.depth += 1
                    report.details.append({"summary": "", "figures": 0})
                elif tag == "summary" and self.depth:
                    self.in_summary = True
                elif tag == "img" and a.get("src", "").startswith("data:"):
                    report.images.append(a["src"])
                elif tag == "figure" or (tag == "p" and a.get("class") == "same"):
                    if self.depth:
                        report.details[-1]["figures"] += 1
                    else:  # a picture shown earlier stands in its place as a reference
                        report.open_figures += 1

            def handle_endtag(self, tag):
                if tag == "details":
                    self.depth -= 1
                elif tag == "summary":
                    self.in_summary = False

            def handle_data(self, data):
                if self.in_summary:
                    report.details[-1]["summary"] += data

        P().feed(text)


def test_report_reads_as_an_audit(quick_build):
    """report.html of the built-in quick talk: under 3 MB, a summary block first whose counts are
    summary.json's, unique anchors, each picture embedded once, one figure open per claim with the rest
    folded, and no Python literals in its tables."""
    import re

    path = quick_build / "report.html"
    assert path.stat().st_size < 3_000_000, f"report.html is {path.stat().st_size / 1e6:.2f} MB"
    text = path.read_text()
    r = _Report(text)
    assert r.sections[0] == "summary", r.sections[:3]
    assert r.sections[1] == "findings"
    assert len(r.ids) == len(set(r.ids)), sorted({i for i in r.ids if r.ids.count(i) > 1})
    assert "" not in r.ids
    assert len(r.images) == len(set(r.images)), "an image is embedded twice"
    assert all(src.startswith("data:image/webp;base64,") for src in r.images)

    summary = json.loads((quick_build / "summary.json").read_text())
    block = text[text.index('<section id="summary"'):text.index("</section>", text.index('<section id="summary"'))]
    findings = summary["findings"]
    for sev in ("high", "medium", "low", "info"):
        n = sum(f["severity"] == sev for f in findings)
        if n:
            assert f"{n} {sev}" in block, (sev, n)
    statuses = [a["status"] for s in summary["subjects"].values() for a in s["analyses"].values()]
    assert f"{statuses.count('ok')} ran, {statuses.count('skipped')} skipped, {statuses.count('failed')} failed" in block
    assert f"models</td><td>{len(summary['subjects'])}:" in block

    # folded evidence: each block says how many figures it holds, and holds them
    assert r.details and r.open_figures
    for d in r.details:
        n = int(re.match(r"(\d+) more figures?", d["summary"]).group(1))
        assert d["figures"] == n, d
    shown = r.open_figures + sum(d["figures"] for d in r.details)
    assert f"figures</td><td>{shown}: {r.open_figures} shown with their claim" in block
    assert not re.search(r">\s*(False|True|None)\s*<", text)

