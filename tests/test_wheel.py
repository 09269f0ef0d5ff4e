"""A non-editable install (the wheel) carries templates/ and sample_models/ and builds."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("talkgen-*.whl")
    return path


def test_wheel_carries_templates_and_samples(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("talkgen/_data/templates/outline.toml", "talkgen/_data/templates/slides/conf.json",
                   "talkgen/_data/templates/report/index.html.j2",
                   "talkgen/_data/sample_models/digits-cnn.safetensors",
                   "talkgen/_data/sample_models/digits-cnn.json"):
        assert needed in names, needed


def test_installed_wheel_builds_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=True)  # dependencies from this interpreter
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import talkgen, talkgen.resources as r; print(talkgen.__file__);"
                            "print(r.templates_dir())"], cwd=work, capture_output=True, text=True, check=True)
    assert str(env_dir) in where.stdout and "_data/templates" in where.stdout
    proc = subprocess.run([str(env_dir / "bin" / "talkgen"), "build", "--only", "weights", "--format",
                           "slides,report", "--out", "b"], cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (work / "b" / "slides.html").is_file() and (work / "b" / "report.html").is_file()
