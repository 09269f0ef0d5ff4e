"""torch.export archives (.pt2) crafted to run code are refused before torch reads them, and the
payload never runs; plain exported programs (static and dynamic shapes, kwargs, dict outputs) load."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from conftest import TinyCNN, run_cli
from talkgen.errors import TalkgenError
from talkgen.models.loading import load_model


class _Touch:
    """A pickle payload: unpickling it creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _export(tmp_path: Path, model: nn.Module | None = None, **kw) -> Path:
    torch.manual_seed(0)
    model = (model or TinyCNN()).eval()
    program = torch.export.export(model, (torch.rand(2, 1, 4, 4),), **kw)
    path = tmp_path / "good.pt2"
    torch.export.save(program, path)
    return path


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes, dict[str, bytes]], bytes | None]) -> Path:
    """Copy the archive, letting ``edit(relative name, bytes, extra files)`` change or drop each member."""
    extra: dict[str, bytes] = {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rel = info.filename[len(root) + 1:]
            data = edit(rel, zin.read(info), extra)
            if data is not None:
                zout.writestr(info, data)
        for rel, data in extra.items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def _pickle_bytes(payload: object) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _program_edit(change: Callable[[dict], None]):
    def edit(rel, data, extra):
        if rel.startswith("models/"):
            program = json.loads(data)
            change(program)
            return json.dumps(program).encode()
        return data
    return edit


def _nodes(program: dict) -> list[dict]:
    return program["graph_module"]["graph"]["nodes"]


def _use_pickle_weight(marker):
    def edit(rel, data, extra):
        if rel.endswith("model_weights_config.json"):
            config = json.loads(data)
            name = next(iter(config["config"]))
            config["config"][name].update(use_pickle=True, path_name="evil")
            extra["data/weights/evil"] = _pickle_bytes({"w": _Touch(marker)})
            return json.dumps(config).encode()
        return data
    return edit


def _pickled_sample_inputs(marker):
    def edit(rel, data, extra):
        return _pickle_bytes((_Touch(marker),)) if rel.startswith("data/sample_inputs/") else data
    return edit


def _aoti_library(marker):
    def edit(rel, data, extra):
        extra["data/aotinductor/model/model.so"] = b"\x7fELF not really"
        return data
    return edit


def _legacy_pickled_weights(marker):
    def edit(rel, data, extra):
        extra["data/weights/model.pt"] = _pickle_bytes({"w": _Touch(marker)})
        return data
    return edit


def _os_system_target(marker):
    def change(program):
        _nodes(program)[0]["target"] = "torch.os.system"
    return _program_edit(change)


def _injected_parameter_name(marker):
    bad = f'conv")or open("{marker}","w")or("'

    def change(program):
        for spec in program["graph_module"]["signature"]["input_specs"]:
            if "parameter" in spec:
                spec["parameter"]["parameter_name"] = bad
                return

    def edit(rel, data, extra):
        if rel.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][bad] = config["config"].pop(first)
            return json.dumps(config).encode()
        return _program_edit(change)(rel, data, extra)
    return edit


def _eval_in_shape(marker):
    def change(program):
        tv = next(iter(program["graph_module"]["graph"]["tensor_values"].values()))
        tv["sizes"][0] = {"as_expr": {"expr_str": f"__import__('builtins').open('{marker}','w')", "hint": {"as_int": 2}}}
    return _program_edit(change)


def _range_key_code(marker):
    def change(program):
        program["range_constraints"] = {f"__import__('builtins').open('{marker}','w')": {"min_val": 2, "max_val": 9}}
    return _program_edit(change)


def _injected_kwarg_key(marker):
    def change(program):
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["children_spec"][1]["context"] = json.dumps([f"x':open('{marker}','w'),'y"])
        sig["in_spec"] = json.dumps(spec)
    return _program_edit(change)


def _opaque_constant(marker):
    def edit(rel, data, extra):
        if rel.endswith("model_constants_config.json"):
            extra["data/constants/opaque_obj_0"] = _pickle_bytes(_Touch(marker))
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": False, "tensor_meta": None}}}).encode()
        return data
    return edit


CRAFTED = {
    "weight marked use_pickle": (_use_pickle_weight, "stored as a pickle"),
    "sample inputs that need pickle code": (_pickled_sample_inputs, "sample inputs"),
    "AOTInductor shared library": (_aoti_library, "AOTInductor"),
    "legacy pickled weights file": (_legacy_pickled_weights, "does not need"),
    "node calling torch.os.system": (_os_system_target, "not a torch operator"),
    "parameter name that injects code": (_injected_parameter_name, "not an identifier"),
    "symbolic shape that evals code": (_eval_in_shape, "symbolic shape"),
    "pytree key that injects code": (_injected_kwarg_key, "specification"),
    "opaque constant object": (_opaque_constant, "object"),
    "range constraint keyed by code": (_range_key_code, "identifier"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_archive_is_refused_and_its_payload_never_runs(case, tmp_path):
    make, needle = CRAFTED[case]
    marker = tmp_path / "payload-ran"
    evil = _rewrite(_export(tmp_path), tmp_path / "evil.pt2", make(marker))
    with pytest.raises(TalkgenError, match=needle) as info:
        load_model(str(evil))
    assert "refused" in str(info.value) and "\n" not in str(info.value)
    model_out = marker.exists()
    assert not model_out, f"{case}: the payload ran"


def test_crafted_archive_through_the_cli_is_one_line_and_exit_2(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = _rewrite(_export(tmp_path), tmp_path / "evil.pt2", _use_pickle_weight(marker))
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((12, 1, 4, 4)).astype("float32"),
             y=np.arange(12) % 3)
    proc = run_cli("audit", str(evil), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("talkgen: error:") and "refused" in lines[0], proc.stderr
    assert not marker.exists()


def test_damaged_archive_is_one_line_without_torchs_traceback(tmp_path, capfd):
    good = _export(tmp_path)
    broken = _rewrite(good, tmp_path / "broken.pt2",
                      lambda rel, data, extra: b"{not json" if rel.startswith("models/") else data)
    with pytest.raises(TalkgenError, match="not a torch.export program"):
        load_model(str(broken))
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(TalkgenError, match="not a torch.export program"):
        load_model(str(tmp_path / "junk.pt2"))
    assert "Traceback" not in capfd.readouterr().err


class _KwargsDict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x, *, scale=None):
        h = nn.functional.gelu(self.norm(x.flatten(1)), approximate="tanh")
        return {"logits": self.fc(h) * scale, "outer": torch.einsum("bi,bj->bij", h, h)}


def test_plain_programs_still_load(tmp_path):
    """Dynamic batch size, keyword inputs, dict outputs, buffers, string and float arguments."""
    torch.manual_seed(0)
    ref = TinyCNN().eval()
    dyn = _export(tmp_path, ref, dynamic_shapes={"x": {0: torch.export.Dim("batch", min=2)}})
    model, _ = load_model(str(dyn))
    x = torch.rand(7, 1, 4, 4)
    assert torch.allclose(model(x), ref(x))
    kw = _KwargsDict().eval()
    program = torch.export.export(kw, (torch.rand(2, 1, 4, 4),), {"scale": torch.tensor(2.0)})
    torch.export.save(program, tmp_path / "kw.pt2")
    model, _ = load_model(str(tmp_path / "kw.pt2"))
    out = model(x[:2], scale=torch.tensor(2.0))
    want = kw(x[:2], scale=torch.tensor(2.0))
    assert torch.allclose(out["logits"], want["logits"]) and torch.allclose(out["outer"], want["outer"])


def test_shape_guards_written_as_code_are_dropped(tmp_path):
    """torch compiles an archive's guards_code (Python source) into a check run on every call."""
    marker = tmp_path / "payload-ran"

    def change(program):
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]

    guarded = _rewrite(_export(tmp_path), tmp_path / "guarded.pt2", _program_edit(change))
    model, _ = load_model(str(guarded))
    model(torch.rand(2, 1, 4, 4))
    assert not marker.exists()
