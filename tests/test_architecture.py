"""The shape of the code: contracts at the bottom, analyses that never reach back, a new analysis in one
file, one cache keyed by what it depends on, no process-wide side effects."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT

PACKAGE = ROOT / "talkgen"

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, BlockTorch())
""")


def test_contracts_and_renderers_import_without_torch_and_without_analyses():
    code = BLOCK_TORCH + textwrap.dedent("""
        import talkgen, talkgen.results, talkgen.specs
        from talkgen.results import Result, Scalar, Finding, Check, Outcome
        r = Result(analysis="a", subject="s", summaries={"x": Scalar(1.0, "", "one")})
        import talkgen.render.deck, talkgen.render.notebook, talkgen.render.export, talkgen.render.commentary
        import talkgen.render.figures, talkgen.render.html, talkgen.render.text
        loaded = sorted(m for m in sys.modules if m.startswith("talkgen.analyses") or m.startswith("talkgen.pipeline"))
        print(loaded)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def _analysis_modules() -> dict[str, ast.Module]:
    """Every module of the analyses package that registers an analysis, parsed."""
    out = {}
    for path in sorted((PACKAGE / "analyses").glob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(d, ast.Name) and d.id == "register" for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef) for d in n.decorator_list):
            out[path.stem] = tree
    return out


def test_analyses_never_reach_back_or_into_each_other():
    modules = _analysis_modules()
    assert len(modules) >= 19, sorted(modules)
    problems = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                target = node.module
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                target, names = None, [a.name for a in node.names]
            else:
                continue
            for mod in ([target] if target else names):
                if mod.startswith(("talkgen.pipeline", "talkgen.render", "talkgen.cli", "talkgen.build")):
                    problems.append(f"{name} imports {mod}")
                other = mod.removeprefix("talkgen.analyses.")
                if mod.startswith("talkgen.analyses.") and other in modules and other != name:
                    problems.append(f"{name} imports the analysis module {other}")
            if target and target.startswith("talkgen") and any(n.startswith("_") for n in names):
                problems.append(f"{name} imports a private name from {target}: {names}")
    assert not problems, problems


def test_readme_lists_every_registered_analysis_in_its_section():
    from talkgen.analyses.base import registry, section_ranks

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Analyses"):]
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (\d) \|", table, re.M))
    ranks = section_ranks()
    assert rows == {name: str(ranks[cls.section]) for name, cls in registry().items()}


PLUGIN = '''
"""A tiny analysis added by dropping this file into the package: the number of parameters, squared."""

from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.specs import Bars


@register
class ParameterSquare(Analysis):
    name = "parameter-square"
    title = "Parameters, squared"
    section = "method"
    order = 15

    def run(self, ctx: Context) -> Result:
        import numpy as np

        n = float(sum(p.numel() for p in ctx.subject.model.parameters()))
        return Result(analysis=self.name, subject=ctx.subject.name, arrays={"v": np.array([n, n * n])},
                      summaries={"square": Scalar(n * n, "", "parameters squared")},
                      figures=(Bars(id="bars", title="n and n squared", caption="Two bars.", alt="Two bars.",
                                    categories=("n", "n^2"), values=("v",), series=("value",), ylabel="value"),))
'''

PLUGIN_TEMPLATE = '''{% macro overview(r) %}
Plugin overview: the model's parameter count squared is {{ r.s("square") | fmt }}.
{% endmacro %}
'''


def test_a_new_analysis_is_one_module_and_one_template(tmp_path, user_model_dir):
    """Drop a module into talkgen/analyses/ and a template into templates/commentary/ of a copy of the
    package: the analysis runs, and its slide sits in its section of the talk and of the report."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "talkgen", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copytree(ROOT / "templates", src / "templates")
    shutil.copytree(ROOT / "sample_models", src / "sample_models")
    (src / "talkgen" / "analyses" / "parameter_square.py").write_text(PLUGIN)
    (src / "templates" / "commentary" / "parameter-square.md.j2").write_text(PLUGIN_TEMPLATE)
    cfg = user_model_dir / "talk.toml"
    cfg.write_text('[[subjects]]\nname = "net"\nmodel = "models.py:make_model"\nweights = "weights.safetensors"\n'
                   'data = "data.npz"\n[analyses]\nonly = ["model-card", "parameter-square", "attacks"]\n')
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    import os

    proc = subprocess.run([sys.executable, "-m", "talkgen", "build", "--config", str(cfg), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path,
                          env=os.environ | env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    n = sum(p.numel() for p in __import__("conftest").TinyCNN().parameters())
    assert summary["subjects"]["net"]["analyses"]["parameter-square"]["summaries"]["square"]["value"] == n * n
    for page in ("slides.html", "report.html"):
        html = (tmp_path / "out" / page).read_text()
        at = html.index("Plugin overview: the model")
        assert html.index('id="section-method"') < at < html.index('id="section-costs"'), page


def test_bumping_the_trojan_detectors_version_refits_it(tmp_path, monkeypatch):
    """The fitted meta-networks are cached beside the zoo under a key holding the analysis's name and
    version and every member it was fitted on."""
    from talkgen.analyses._zoo import fit_cached, member_key
    from talkgen.analyses.meta_trojan import MetaTrojan

    class Zoo:
        directory = tmp_path

    fits = []

    def fit():
        fits.append(1)
        return {"w": torch.ones(2)}, {"fitted": len(fits)}

    config = {"epochs": 3, "fit": member_key(np.arange(10))}
    assert fit_cached(Zoo, MetaTrojan, "mntd", config, fit)[1] == {"fitted": 1}
    assert fit_cached(Zoo, MetaTrojan, "mntd", config, fit)[1] == {"fitted": 1} and len(fits) == 1
    assert fit_cached(Zoo, MetaTrojan, "mntd", config | {"fit": member_key(np.arange(1, 11))}, fit)[1] == {"fitted": 2}
    monkeypatch.setattr(MetaTrojan, "version", MetaTrojan.version + 1)
    assert fit_cached(Zoo, MetaTrojan, "mntd", config, fit)[1] == {"fitted": 3}


def test_building_leaves_the_callers_backend_and_random_state(user_model_dir, tmp_path):
    import matplotlib

    from talkgen.build import build
    from talkgen.config import SubjectConfig, TalkConfig
    from talkgen.meta.metanets import train_deepsets
    from talkgen.meta.sae import SAEConfig, train_sae

    before_backend = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        g = torch.Generator().manual_seed(0)
        acts, members = torch.randn(64, 8, generator=g), {"fc.weight": torch.randn(12, 3, 2, generator=g),
                                                           "fc.bias": torch.randn(12, 3, generator=g)}
        torch.manual_seed(1234)
        np.random.seed(4321)
        torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
        d = user_model_dir
        config = TalkConfig(subjects=(SubjectConfig(name="net", model=f"{d}/models.py:make_model",
                                                    weights=f"{d}/weights.safetensors", data=f"{d}/data.npz"),),
                            only=("model-card", "weights", "fingerprint"))
        for i in range(2):
            build(config, tmp_path / f"out{i}")
        train_sae(acts, SAEConfig(n_features=16, k=2, batch_size=16, epochs=1, seed=3))
        train_deepsets(members, np.random.default_rng(0).random(12), kind="regression", epochs=2, seed=5)
        assert matplotlib.get_backend() == "svg"
        assert torch.equal(torch.get_rng_state(), torch_state)
        assert np.array_equal(np.random.get_state()[1], numpy_state)
    finally:
        matplotlib.use(before_backend)
