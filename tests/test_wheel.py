"""A non-editable install (the wheel) carries templates/ and sample_models/ and builds."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=1800)
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


def _environment_with_the_wheel(wheel, env_dir):
    """A new virtual environment with the wheel installed in it (no dependencies resolved), that sees this
    interpreter's installed packages (torch and the rest) through a .pth file. Works from a virtual
    environment as from a system interpreter: a venv made with system_site_packages inside a venv sees the
    base interpreter, not the venv it was made from. The editable checkout is not visible there: a
    .pth file's folders get no .pth processing of their own, so the editable install's hook stays off."""
    import site
    import sysconfig

    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])]
    (Path(purelib) / "parent-environment.pth").write_text("\n".join(parents) + "\n")
    proc = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return py


def test_installed_wheel_builds_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    py = _environment_with_the_wheel(wheel, env_dir)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import talkgen, talkgen.resources as r, torch; print(talkgen.__file__);"
                            "print(r.templates_dir())"], cwd=work, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-2000:]
    assert str(env_dir) in where.stdout and "_data/templates" in where.stdout, where.stdout
    proc = subprocess.run([str(env_dir / "bin" / "talkgen"), "build", "--only", "weights", "--format",
                           "slides,report", "--out", "b"], cwd=work, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert (work / "b" / "slides.html").is_file() and (work / "b" / "report.html").is_file()
