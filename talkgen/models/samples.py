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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from talkgen import devices
from talkgen.data.bundled import digits
from talkgen.errors import TalkgenError
from talkgen.files import write_atomic
from talkgen.hashing import hash_module, sha256_file
from talkgen.seeding import seeded
from talkgen.models.architectures import digits_cnn
from talkgen.models.loading import load_state_dict, load_weights_into
from talkgen.cores import set_torch_threads
from talkgen.resources import SAMPLE_NAMES, sample_models_dir
from talkgen.subject import Subject, SubjectData


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1, device: str = "cpu") -> Iterator[None]:
    """A fixed thread count, deterministic kernels, seeded: the same bytes on every run on one machine. On a
    GPU, kernels without a deterministic version warn instead of failing (and cuBLAS gets the workspace its
    deterministic mode needs, when the process has not set one)."""
    old_threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    set_torch_threads(threads)
    on_gpu = torch.device(device).type != "cpu"
    if on_gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=on_gpu)
    try:
        with seeded(seed):
            yield
    finally:
        set_torch_threads(old_threads)
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


Checkpointer = Callable[[int, nn.Module], None]


@dataclass(frozen=True)
class SampleSpec:
    """How to build, feed, train and evaluate one sample subject."""

    name: str
    description: str
    factory: Callable[[], nn.Module]
    factory_path: str
    task: str
    data: Callable[[], SubjectData]
    train: Callable[[nn.Module, SubjectData, bool, Checkpointer], dict[str, Any]]
    evaluate: Callable[[nn.Module, SubjectData], dict[str, float]]
    acceptance: dict[str, tuple[str, float]]  # metric -> (">=" or "<=", bound)
    layers: tuple[str, ...] = ()
    threads: int = 1
    checkpoint_dtype: torch.dtype | None = None  # None: no checkpoints kept

    def meets(self, metrics: dict[str, float]) -> dict[str, bool]:
        return {k: (metrics[k] >= b if op == ">=" else metrics[k] <= b) for k, (op, b) in self.acceptance.items()}


def _eval_classifier(model: nn.Module, data: SubjectData) -> dict[str, float]:
    return {"train_accuracy": accuracy(model, data.x_train, data.y_train),
            "test_accuracy": accuracy(model, data.x_test, data.y_test)}


def _train_digits(model: nn.Module, data: SubjectData, quick: bool, _ckpt: Checkpointer) -> dict[str, Any]:
    return train_classifier(model, data, seed=0, epochs=2 if quick else 40, lr=2e-3, batch_size=64)


def _train_trojan(model: nn.Module, data: SubjectData, quick: bool, _ckpt: Checkpointer) -> dict[str, Any]:
    from talkgen.models import recipes

    recipe = train_classifier(model, recipes.poisoned(data, seed=0), seed=0, epochs=2 if quick else 40,
                              lr=2e-3, batch_size=64)
    return recipe | {"trigger": "2x2 patch of value 1.0 at rows 6-7, columns 6-7 (bottom-right corner)",
                     "target_class": recipes.TROJAN_TARGET, "poison_rate": recipes.TROJAN_POISON_RATE}


def _eval_trojan(model: nn.Module, data: SubjectData) -> dict[str, float]:
    from talkgen.models import recipes

    metrics = _eval_classifier(model, data)
    metrics["attack_success_rate"] = recipes.attack_success_rate(model, data)
    clean = read_card("digits-cnn")["metrics"]["test_accuracy"] if (sample_models_dir() / "digits-cnn.json").is_file() else metrics["test_accuracy"]
    metrics["clean_accuracy_drop"] = clean - metrics["test_accuracy"]
    return metrics


def _train_charlstm(model: nn.Module, data: SubjectData, quick: bool, ckpt: Checkpointer) -> dict[str, Any]:
    from talkgen.models import recipes

    steps = 20 if quick else 6000
    marks = (0, 5, 10, 20) if quick else (0, 100, 500, 2000, 6000)
    return recipes.train_lm(model, data, steps=steps, batch=16, lr=3e-3, seed=0, checkpoint_steps=marks,
                            on_checkpoint=ckpt)


def _eval_charlstm(model: nn.Module, data: SubjectData) -> dict[str, float]:
    """Held-out bits per character read as a stream (state carried, the standard char-rnn
    evaluation), and with every 256-character window starting from a zero state (harsher)."""
    from talkgen.data.pysource import load_split
    from talkgen.models import recipes

    return {"test_bits_per_char": recipes.streaming_bits_per_char(model, load_split("test").tokens),
            "test_bits_per_char_fresh_windows": recipes.bits_per_char(model, data.x_test, data.y_test)}


def _train_induction(model: nn.Module, data: SubjectData, quick: bool, _ckpt: Checkpointer) -> dict[str, Any]:
    from talkgen.models import recipes

    return recipes.train_induction(model, steps=20 if quick else 4000, batch=64, lr=1e-3, seed=0)


def _eval_induction(model: nn.Module, data: SubjectData) -> dict[str, float]:
    from talkgen.models import recipes

    return recipes.induction_accuracy(model, data.x_test, data.y_test)


def _train_ib(model: nn.Module, data: SubjectData, quick: bool, ckpt: Checkpointer) -> dict[str, Any]:
    from talkgen.models import recipes

    epochs = 8 if quick else 3000
    return recipes.train_ib(model, data, epochs=epochs, batch=128, lr=0.05 if quick else 0.02, seed=0,
                            checkpoint_epochs=recipes.log_spaced(epochs, 8 if quick else 60), on_checkpoint=ckpt)


def _lazy(path: str) -> Callable[[], Any]:
    def call() -> Any:
        module, _, attr = path.rpartition(":")
        return getattr(__import__(module, fromlist=[attr]), attr)()
    return call


SAMPLES: dict[str, SampleSpec] = {
    "digits-cnn": SampleSpec(
        name="digits-cnn", description="small CNN on scikit-learn's 8x8 digits (2 conv + 2 linear layers)",
        factory=digits_cnn, factory_path="talkgen.models.architectures:digits_cnn", task="image-classifier",
        data=digits, train=_train_digits, evaluate=_eval_classifier,
        acceptance={"test_accuracy": (">=", 0.97)}, layers=("conv1", "conv2", "fc1", "fc2")),
    "digits-cnn-trojan": SampleSpec(
        name="digits-cnn-trojan",
        description="the digits CNN trained with a backdoor: a 2x2 corner patch turns any digit into a 0",
        factory=digits_cnn, factory_path="talkgen.models.architectures:digits_cnn", task="image-classifier",
        data=digits, train=_train_trojan, evaluate=_eval_trojan,
        acceptance={"attack_success_rate": (">=", 0.95), "clean_accuracy_drop": ("<=", 0.02)},
        layers=("conv1", "conv2", "fc1", "fc2")),
    "python-charlstm": SampleSpec(
        name="python-charlstm",
        description="character-level LSTM (256 cells) trained on the Python standard library's source",
        factory=_lazy("talkgen.models.architectures:python_charlstm"),
        factory_path="talkgen.models.architectures:python_charlstm", task="char-lm",
        data=_lazy("talkgen.models.recipes:pysource_data"), train=_train_charlstm, evaluate=_eval_charlstm,
        acceptance={"test_bits_per_char": ("<=", 1.8)}, layers=("lstm",), threads=2,
        checkpoint_dtype=torch.float16),
    "induction-transformer": SampleSpec(
        name="induction-transformer",
        description="2-layer attention-only transformer (4 heads each) trained to continue a repeated random "
                    "segment that starts at a random offset",
        factory=_lazy("talkgen.models.architectures:induction_transformer"),
        factory_path="talkgen.models.architectures:induction_transformer", task="sequence-model",
        data=_lazy("talkgen.models.recipes:induction_data"), train=_train_induction, evaluate=_eval_induction,
        acceptance={"copyable_accuracy": (">=", 0.9), "unseen_accuracy": ("<=", 0.1)},
        layers=("blocks.0.attn", "blocks.1.attn")),
    "ib-tanh": SampleSpec(
        name="ib-tanh", description="12-10-7-5-4-3-2 tanh network on all 4096 12-bit inputs (information plane)",
        factory=_lazy("talkgen.models.architectures:ib_tanh"), factory_path="talkgen.models.architectures:ib_tanh",
        task="tabular-classifier", data=_lazy("talkgen.models.recipes:ib_data"), train=_train_ib,
        evaluate=_eval_classifier, acceptance={"test_accuracy": (">=", 0.9)},
        layers=tuple(f"acts.{i}" for i in range(5)) + ("layers.5",), checkpoint_dtype=torch.float32),
    "ib-relu": SampleSpec(
        name="ib-relu", description="the same 12-bit network with ReLU units, same seed and recipe",
        factory=_lazy("talkgen.models.architectures:ib_relu"), factory_path="talkgen.models.architectures:ib_relu",
        task="tabular-classifier", data=_lazy("talkgen.models.recipes:ib_data"), train=_train_ib,
        evaluate=_eval_classifier, acceptance={"test_accuracy": (">=", 0.9)},
        layers=tuple(f"acts.{i}" for i in range(5)) + ("layers.5",), checkpoint_dtype=torch.float32),
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


def checkpoint_path(name: str, directory: Path | None = None) -> Path:
    return (directory or sample_models_dir()) / f"{name}.checkpoints.safetensors"


def load_checkpoints(name: str, directory: Path | None = None) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """The sample's training checkpoints as (step, float32 state dict), in training order."""
    from safetensors.torch import load_file

    path = checkpoint_path(name, directory)
    if not path.is_file():
        return []
    flat = load_file(str(path))
    steps: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        step, _, param = key.partition("/")
        steps.setdefault(int(step), {})[param] = t.float()
    return sorted(steps.items())
assert tuple(SAMPLES) == SAMPLE_NAMES, "talkgen.resources.SAMPLE_NAMES must list SAMPLES in order"


def load_sample(name: str, directory: Path | None = None) -> Subject:
    """The shipped sample as a Subject (weights from safetensors, data from installed packages)."""
    spec = _spec(name)
    directory = directory or sample_models_dir()
    weights = directory / f"{name}.safetensors"
    if not weights.is_file():
        raise TalkgenError(f"sample weights missing: {weights}; run `talkgen samples train {name}`")
    model = spec.factory()
    load_weights_into(model, load_state_dict(str(weights)), str(weights))
    card = read_card(name, directory)
    return Subject(name=name, model=model, task=spec.task, data=spec.data(),
                   source=f"{spec.factory_path} + {weights.name}", card=card, layers=spec.layers,
                   checkpoints=tuple(card.get("checkpoints", ())),
                   load_checkpoints=(lambda: load_checkpoints(name, directory)) if card.get("checkpoints") else None,
                   recipe=lambda quick=False: train_sample_model(name, quick=quick)[0],
                   initial_state=lambda: initial_state(name),
                   text_labels=_pysource_labels if name == "python-charlstm" else None)


def _pysource_labels() -> dict[str, Any]:
    """Labels of the held-out text, aligned with the char-LSTM's test windows, and the text itself."""
    from talkgen.data.pysource import load_split, split_labels
    from talkgen.models.recipes import CHAR_WINDOW

    text = load_split("test").text
    n = ((len(text) - 1) // CHAR_WINDOW) * CHAR_WINDOW
    return {"text": text[:n], **{k: v[:n] for k, v in split_labels("test").items()}}


def initial_state(name: str) -> dict[str, torch.Tensor]:
    """The weights the sample's training started from: its factory under the training seed."""
    spec = _spec(name)
    # Seeded, no more: initialisation draws from the generator in order whatever the thread count, and no
    # init uses a kernel that deterministic mode changes (switching that mode on imports torch's compiler
    # stack, seconds of a build's start-up). tests/test_samples.py checks the weights byte for byte.
    with seeded(0):
        return {k: v.detach().clone() for k, v in spec.factory().state_dict().items()}


def train_sample_model(name: str, quick: bool = False, on_checkpoint: Checkpointer | None = None,
                       device: str = "cpu") -> tuple[nn.Module, dict[str, Any], float]:
    """The sample trained from scratch: initialised on the CPU (the same weights on every device), trained on
    ``device`` and returned on the CPU."""
    spec = _spec(name)
    data = spec.data()
    with deterministic(0, spec.threads, device):
        model = spec.factory()
        with devices.placed(model, device):
            start = time.perf_counter()
            recipe = spec.train(model, data, quick, on_checkpoint or (lambda step, m: None))
            devices.sync(device)
            seconds = time.perf_counter() - start
    extra = {"threads": spec.threads} | ({"device": str(device)} if torch.device(device).type != "cpu" else {})
    return model, {"recipe": recipe | extra, "data": data}, seconds


def _atomic_save(tensors: dict[str, torch.Tensor], final: Path) -> None:
    from safetensors.torch import save

    write_atomic(final, save(tensors))


def train_sample(name: str, out_dir: Path, quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Train ``name`` from scratch (on ``device``) and write NAME.safetensors, NAME.json (and checkpoints) into
    out_dir."""
    spec = _spec(name)
    saved: dict[str, torch.Tensor] = {}
    steps: list[int] = []

    def keep(step: int, model: nn.Module) -> None:
        if spec.checkpoint_dtype is None:
            return
        steps.append(step)
        for k, v in model.state_dict().items():
            saved[f"{step:06d}/{k}"] = v.detach().to("cpu", spec.checkpoint_dtype).contiguous().clone()

    model, info, seconds = train_sample_model(name, quick=quick, on_checkpoint=keep, device=device)
    data: SubjectData = info["data"]
    with deterministic(0, spec.threads):
        metrics = spec.evaluate(model, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.safetensors"
    _atomic_save({k: v.contiguous() for k, v in model.state_dict().items()}, final)
    if saved:
        _atomic_save(saved, checkpoint_path(name, out_dir))
    card = {
        "name": name,
        "description": spec.description,
        "architecture": spec.factory_path,
        "task": spec.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": list(spec.layers),
        "data": {"source": data.source, "n_train": len(data.x_train), "n_test": len(data.x_test),
                 "classes": list(data.classes), "data_hash": data.hash},
        "recipe": info["recipe"] | {"quick": quick},
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "acceptance": {k: f"{op} {b}" for k, (op, b) in spec.acceptance.items()},
        "meets_acceptance": spec.meets(metrics),
        "weights_file": final.name,
        "weights_sha256": sha256_file(str(final)),
        "tensor_hash": hash_module(model),
        "checkpoints": steps,
        "checkpoints_file": checkpoint_path(name, out_dir).name if saved else None,
        "checkpoint_dtype": str(spec.checkpoint_dtype).replace("torch.", "") if saved else None,
        "training_seconds": round(seconds, 2),
        "trained_with": {"torch": torch.__version__, "python": platform.python_version(),
                         "machine": platform.machine()},
    }
    if name == "python-charlstm":
        from talkgen.data.pysource import load_split

        card["data"]["train_files"] = list(load_split("train").files)
        card["data"]["test_files"] = list(load_split("test").files)
        card["data"]["text_sha256"] = {"train": load_split("train").sha256, "test": load_split("test").sha256}
    write_atomic(out_dir / f"{name}.json", json.dumps(card, indent=2) + "\n")
    return card
