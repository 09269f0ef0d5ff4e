"""The bundled sample subjects: architecture, data, training recipe, and their shipped weights.

Each sample ships ``sample_models/NAME.safetensors`` and a card ``sample_models/NAME.json``
(data, split, seed, recipe, measured metrics, weight hash, training time), both written by
``talkgen samples train NAME``. Training is deterministic on one machine: same seed, same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from talkgen.data.bundled import digits
from talkgen.errors import TalkgenError
from talkgen.hashing import hash_module, sha256_file
from talkgen.models.architectures import digits_cnn
from talkgen.models.loading import load_state_dict, load_weights_into
from talkgen.resources import sample_models_dir
from talkgen.subject import Subject, SubjectData


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Single-threaded, deterministic kernels, seeded: the same bytes on every run."""
    threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_det)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    with torch.no_grad():
        preds = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).float().mean())


def train_classifier(model: nn.Module, data: SubjectData, *, seed: int, epochs: int, lr: float,
                     batch_size: int, weight_decay: float = 0.0) -> dict[str, Any]:
    """Minibatch Adam on cross-entropy; returns the recipe it followed."""
    with deterministic(seed):
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
        gen = torch.Generator().manual_seed(seed)
        n = len(data.x_train)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        model.eval()
    return {"optimizer": "Adam", "lr": lr, "schedule": "cosine", "epochs": epochs,
            "batch_size": batch_size, "weight_decay": weight_decay, "loss": "cross-entropy",
            "seed": seed}


@dataclass(frozen=True)
class SampleSpec:
    """How to build, feed and train one sample subject."""

    name: str
    description: str
    factory: Callable[[], nn.Module]
    factory_path: str
    task: str
    data: Callable[[], SubjectData]
    train: Callable[[nn.Module, SubjectData, bool], dict[str, Any]]
    evaluate: Callable[[nn.Module, SubjectData], dict[str, float]]
    min_metrics: dict[str, float]


def _train_digits(model: nn.Module, data: SubjectData, quick: bool) -> dict[str, Any]:
    return train_classifier(model, data, seed=0, epochs=2 if quick else 40, lr=2e-3, batch_size=64)


def _eval_classifier(model: nn.Module, data: SubjectData) -> dict[str, float]:
    return {"train_accuracy": accuracy(model, data.x_train, data.y_train),
            "test_accuracy": accuracy(model, data.x_test, data.y_test)}


SAMPLES: dict[str, SampleSpec] = {
    "digits-cnn": SampleSpec(
        name="digits-cnn",
        description="small CNN on scikit-learn's 8x8 digits (2 conv + 2 linear layers)",
        factory=digits_cnn,
        factory_path="talkgen.models.architectures:digits_cnn",
        task="image-classifier",
        data=digits,
        train=_train_digits,
        evaluate=_eval_classifier,
        min_metrics={"test_accuracy": 0.97},
    ),
}


def _spec(name: str) -> SampleSpec:
    if name not in SAMPLES:
        raise TalkgenError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    return SAMPLES[name]


def read_card(name: str, directory: Path | None = None) -> dict[str, Any]:
    path = (directory or sample_models_dir()) / f"{name}.json"
    if not path.is_file():
        raise TalkgenError(f"sample {name!r} has no card at {path}; run `talkgen samples train {name}`")
    return json.loads(path.read_text(encoding="utf-8"))


def load_sample(name: str, directory: Path | None = None) -> Subject:
    """The shipped sample as a Subject (weights from safetensors, data from installed packages)."""
    spec = _spec(name)
    directory = directory or sample_models_dir()
    weights = directory / f"{name}.safetensors"
    if not weights.is_file():
        raise TalkgenError(f"sample weights missing: {weights}; run `talkgen samples train {name}`")
    model = spec.factory()
    load_weights_into(model, load_state_dict(str(weights)), str(weights))
    data = spec.data()
    return Subject(name=name, model=model, task=spec.task, data=data,
                   source=f"{spec.factory_path} + {weights.name}", card=read_card(name, directory),
                   recipe=lambda quick=False: train_sample_model(name, quick=quick)[0])


def train_sample_model(name: str, quick: bool = False) -> tuple[nn.Module, dict[str, Any], float]:
    spec = _spec(name)
    data = spec.data()
    with deterministic(0):
        model = spec.factory()
    start = time.perf_counter()
    recipe = spec.train(model, data, quick)
    seconds = time.perf_counter() - start
    return model, {"recipe": recipe, "data": data}, seconds


def train_sample(name: str, out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Train ``name`` from scratch and write NAME.safetensors + NAME.json atomically into out_dir."""
    from safetensors.torch import save_file

    spec = _spec(name)
    model, info, seconds = train_sample_model(name, quick=quick)
    data: SubjectData = info["data"]
    metrics = spec.evaluate(model, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, final)
    card = {
        "name": name,
        "description": spec.description,
        "architecture": spec.factory_path,
        "task": spec.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"source": data.source, "n_train": len(data.x_train), "n_test": len(data.x_test),
                 "classes": list(data.classes), "data_hash": data.hash},
        "recipe": info["recipe"] | {"quick": quick},
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "acceptance": spec.min_metrics,
        "weights_file": final.name,
        "weights_sha256": sha256_file(str(final)),
        "tensor_hash": hash_module(model),
        "training_seconds": round(seconds, 2),
        "trained_with": {"torch": torch.__version__, "python": platform.python_version(),
                         "machine": platform.machine()},
    }
    tmp_card = out_dir / f".{name}.json.tmp"
    tmp_card.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_card, out_dir / f"{name}.json")
    return card
