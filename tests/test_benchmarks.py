"""The benchmark scripts stay runnable as talkgen changes: each one imports (every name it takes from talkgen
still exists), and its help text, the start of its docstring, says what it measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_script_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its imports and definitions; main() only runs as a script
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert (module.__doc__ or "").strip(), f"{path.name} does not say what it measures"

