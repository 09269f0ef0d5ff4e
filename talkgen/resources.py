"""Where templates/ and sample_models/ live: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"talkgen's {name}/ folder is missing from this installation")


def templates_dir() -> Path:
    return _find("templates")


def sample_models_dir() -> Path:
    return _find("sample_models")


# What a subject's model does (talkgen.subject), defined torch-free: the config checks tasks without torch.
TASKS = ("image-classifier", "char-lm", "sequence-model", "tabular-classifier", "text-classifier", "text-encoder")
# The bundled samples, in the built-in talk's order (``talkgen.models.samples.SAMPLES`` defines them; this
# torch-free copy lets the command line and the config name them without loading torch).
SAMPLE_NAMES = ("digits-cnn", "digits-cnn-trojan", "python-charlstm", "induction-transformer", "ib-tanh", "ib-relu")
