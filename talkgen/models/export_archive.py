"""Reading a ``torch.export`` archive (``.pt2``) without letting it run code.

``torch.export.load`` trusts the file: it unpickles weights and constants marked ``use_pickle``
(``torch.load(weights_only=False)``), falls back to a full unpickle for sample inputs that a
weights-only load refuses, unpickles custom and opaque objects, loads AOTInductor shared
libraries, parses symbolic shapes with ``sympy.sympify`` (an ``eval``), resolves node targets by
walking attributes from ``torch`` (``torch.os.system`` is reachable), and pastes names from the
file into the Python source that ``torch.fx`` compiles. Its documentation says never to load an
untrusted file. An auditor's model file is exactly that.

So talkgen reads the archive into memory once, checks every part of it against what a plain
exported program contains, and refuses anything else with one line:

- only the files a ``torch.export.save`` archive holds (no AOTInductor code, no legacy pickled
  weight files), and only the exported programs' JSON, raw tensor bytes and configs;
- no payload marked ``use_pickle``, no custom or opaque objects;
- sample inputs that ``torch.load(weights_only=True)`` reads;
- every node target is an operator from ``torch.ops`` (or a whitelisted ``operator``/``math``
  function or ``torch.sym_*``), resolved and type-checked before torch sees it;
- every name that ends up in generated code (parameter, buffer and constant names, argument
  names, pytree keys) is a plain dotted identifier; every symbolic shape expression uses only
  integers, shape symbols, arithmetic and sympy's shape functions;
- node metadata (stack traces, source locations, custom metadata) and shape guards (Python source
  that torch compiles) are dropped before loading.

The checked, rewritten archive is then deserialised by torch with weights-only loading forced.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import zipfile
from typing import Any, Iterator

import torch

from talkgen.errors import TalkgenError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
# The files of a torch.export.save archive, below its top folder.
_ALLOWED_FILES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[A-Za-z0-9_]+\.json|data/(weights|constants)/[A-Za-z0-9_]+(_config\.json)?"
    r"|data/sample_inputs/[A-Za-z0-9_]+\.pt|extra/[A-Za-z0-9_.\-]+)")
_OPERATOR_FUNCS = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
                   "and_", "or_", "xor", "eq", "ne", "lt", "le", "gt", "ge", "not_", "invert", "abs",
                   "lshift", "rshift", "matmul"}
# Strings whose content torch.fx quotes with repr(), or that talkgen checks on their own.
_FREE_TEXT_KEYS = {"as_string", "as_strings", "expr_str", "in_spec", "out_spec", "target",
                   "as_operator", "torch_version"}
_FLOAT_WORDS = {"Infinity", "-Infinity", "NaN"}
# Integers, shape symbols (s0, u3), quoted symbol names and sympy's assumption keywords
# (``Symbol('s31', positive=True, integer=True)``), arithmetic, comparisons, capitalised function names.
_EXPR_TOKEN = re.compile(r"\s+|\d+\.\d+|\d+|'[a-z]\d+'|[a-z]\d+|oo|(positive|integer|real|nonnegative|finite)="
                         r"|[A-Z][A-Za-z]*|\*\*|//|[+\-*/%(),<>=!]")


def _refuse(path: str, why: str) -> TalkgenError:
    from talkgen.models.loading import REFUSE_HINT

    return TalkgenError(f"{path}: refused, {why}; {REFUSE_HINT}")


def _safe_name(name: str) -> bool:
    """A dotted path of identifiers or indices, none of them dunder: safe to paste into code."""
    if name == "":
        return True
    return all(_IDENT.fullmatch(p) and not p.startswith("__") for p in name.split("."))


def _allowed_target(target: str) -> bool:
    """An operator torch.export emits, resolved and type-checked here rather than by torch."""
    if not _safe_name(target):
        return False
    parts = target.split(".")
    if parts[0] == "_operator":
        return len(parts) == 2 and parts[1] in _OPERATOR_FUNCS
    if parts[0] == "math":
        return len(parts) == 2 and not parts[1].startswith("_") and callable(getattr(math, parts[1], None))
    if parts[0] != "torch":
        return False
    if len(parts) == 2 and parts[1].startswith("sym_"):
        return callable(getattr(torch, parts[1], None))
    if len(parts) not in (4, 5) or parts[1] != "ops":
        return False
    obj: Any = torch.ops
    try:
        for p in parts[2:]:
            obj = getattr(obj, p)
    except (AttributeError, RuntimeError):
        return False
    return isinstance(obj, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))


def _symbolic_functions() -> set[str]:
    import torch.utils._sympy.functions as fns

    return {n for n in dir(fns) if n[:1].isupper()} | {
        "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False",
        "Integer", "Rational", "Float", "Symbol"}


def _safe_expr(expr: str, functions: set[str]) -> bool:
    """Integers, shape symbols (s0, u3), arithmetic and comparisons, sympy's shape functions."""
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            return False
        tok = m.group()
        if tok[:1].isupper() and tok not in functions:
            return False
        pos = m.end()
    return True


def _walk(obj: Any, key: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key, value, parent) for every value in a JSON tree, depth first."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v, obj
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield key, v, obj
            yield from _walk(v, key)


def _check_treespec(path: str, text: str) -> None:
    """A pytree spec (JSON in a string): its type names and dict keys end up in generated code."""
    try:
        spec = json.loads(text) if text else None
    except ValueError:
        raise _refuse(path, "its input/output specification is not valid JSON") from None
    for k, v, _ in _walk(spec):
        if isinstance(v, str) and not _safe_name(v) and k != "context":
            raise _refuse(path, f"its input/output specification names {v[:60]!r}")
        if k == "context" and isinstance(v, str):
            try:
                context = json.loads(v)
            except ValueError:
                context = v
            items = context if isinstance(context, list) else [context]
            for item in items:
                if item is not None and not isinstance(item, (int, float)) and not (
                        isinstance(item, str) and _IDENT.fullmatch(item) and not item.startswith("__")):
                    raise _refuse(path, f"its input/output specification has the key {str(item)[:60]!r}")


def _check_program(path: str, program: dict[str, Any], functions: set[str]) -> dict[str, Any]:
    """Check an exported program's JSON; returns it with node metadata (free text) removed."""
    for _, value, _parent in _walk(program):
        if isinstance(value, dict) and "target" in value and "inputs" in value:
            value["metadata"] = {}
    # Guards are Python source that torch compiles into a check on the inputs' shapes: dropped (the
    # graph's own shape assertions stay).
    program["guards_code"] = []
    for key, value, parent in _walk(program):
        if isinstance(value, dict) and not all(isinstance(k, str) and _safe_name(k) for k in value):
            bad = next(k for k in value if not (isinstance(k, str) and _safe_name(k)))
            raise _refuse(path, f"it holds the key {str(bad)[:60]!r}, which is not an identifier")
        if key in ("custom_obj", "as_custom_obj", "custom_obj_name"):
            raise _refuse(path, "it holds a custom object, which torch unpickles")
        if key == "target" and isinstance(parent, dict) and "inputs" in parent:
            if not isinstance(value, str) or not _allowed_target(value):
                raise _refuse(path, f"its graph calls {str(value)[:80]!r}, which is not a torch operator")
            continue
        if key == "as_operator" and isinstance(value, str) and not _allowed_target(value):
            raise _refuse(path, f"its graph passes {value[:80]!r}, which is not a torch operator")
        if key == "expr_str" and isinstance(value, str) and not _safe_expr(value, functions):
            raise _refuse(path, f"its symbolic shape {value[:80]!r} is not plain arithmetic on shape symbols")
        if key in ("in_spec", "out_spec") and isinstance(value, str):
            _check_treespec(path, value)
            continue
        if key == "as_float" and value in _FLOAT_WORDS:
            continue
        if isinstance(value, str) and key not in _FREE_TEXT_KEYS and not _safe_name(value):
            raise _refuse(path, f"its {key or 'graph'} holds the name {value[:60]!r}, which is not an identifier")
    return program


def _check_payload_config(path: str, text: bytes, what: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except ValueError:
        raise _refuse(path, f"its {what} configuration is not valid JSON") from None
    for fqn, entry in (config.get("config") or {}).items():
        if not _safe_name(fqn):
            raise _refuse(path, f"it names a {what[:-1]} {fqn[:60]!r}, which is not an identifier")
        if not isinstance(entry, dict) or entry.get("use_pickle"):
            raise _refuse(path, f"its {what[:-1]} {fqn!r} is stored as a pickle")
        name = entry.get("path_name", "")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name) or \
                name.startswith(("custom_obj", "opaque_obj", "torchbind")):
            raise _refuse(path, f"its {what[:-1]} {fqn!r} is stored as an object, not a tensor")
    return config


def checked_archive(path: str, raw: bytes) -> bytes:
    """The archive's bytes, checked and rewritten (node metadata dropped), or a refusal."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise TalkgenError(f"{path}: not a torch.export program (not a zip archive)") from None
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
        raise TalkgenError(f"{path}: not a torch.export program (no single archive folder)")
    root = roots.pop()
    inner = {n: n[len(root) + 1:] for n in names if not n.endswith("/")}
    for name, rel in inner.items():
        if rel.startswith("data/aotinductor/"):
            raise _refuse(path, "it carries AOTInductor compiled code")
        if not _ALLOWED_FILES.fullmatch(rel):
            raise _refuse(path, f"it holds {rel!r}, which a torch.export program does not need")
    if not any(rel.startswith("models/") for rel in inner.values()):
        raise TalkgenError(f"{path}: not a torch.export program (no models/*.json in the archive)")
    functions = _symbolic_functions()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rewritten:
        for name, rel in inner.items():
            data = archive.read(name)
            if rel.startswith("models/"):
                try:
                    program = json.loads(data)
                except ValueError:
                    raise TalkgenError(f"{path}: not a torch.export program ({rel} is not JSON)") from None
                data = json.dumps(_check_program(path, program, functions)).encode()
            elif rel.endswith("_config.json"):
                _check_payload_config(path, data, "weights" if "/weights/" in rel else "constants")
            elif rel.startswith("data/sample_inputs/") and data:
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - anything a weights-only load refuses would need pickle code
                    raise _refuse(path, f"its sample inputs ({rel}) need arbitrary pickle code to load") from None
            rewritten.writestr(name, data)
    return out.getvalue()


@contextlib.contextmanager
def _weights_only_and_quiet() -> Iterator[None]:
    """Force every torch.load inside to weights_only (a second guard behind the checks above) and keep
    torch's own logged tracebacks off the user's terminal."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.export.pt2_archive")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_exported_program(path: str) -> "torch.export.ExportedProgram":
    """The exported program in ``path``, read only after :func:`checked_archive` accepted it."""
    try:
        from torch.export.pt2_archive._package import load_pt2
    except ImportError:
        raise TalkgenError(f"{path}: reading torch.export programs safely needs torch >= 2.7") from None
    with open(path, "rb") as f:
        raw = f.read()
    safe = checked_archive(path, raw)
    with _weights_only_and_quiet():
        try:
            contents = load_pt2(io.BytesIO(safe))
        except Exception as exc:  # noqa: BLE001 - a damaged archive is one line, not torch's traceback
            first = " ".join(str(exc).split())[:200]
            raise TalkgenError(f"{path}: not a loadable torch.export program ({type(exc).__name__}: {first})") from None
    if "model" not in contents.exported_programs:
        raise TalkgenError(f"{path}: not a torch.export program (no program named 'model')")
    return contents.exported_programs["model"]
