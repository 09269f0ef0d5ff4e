"""A Subject: the model under study, its data, its task kind and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping

import torch

from talkgen.hashing import hash_module, hash_tensors, model_identity
from talkgen.resources import TASKS  # defined torch-free: the config checks tasks without loading torch


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: what it is, how it is stamped on inputs, the pixels (H, W) it covers, and the class
    a backdoored model sends it to."""

    description: str
    apply: Callable[[torch.Tensor], torch.Tensor]
    region: torch.Tensor
    target: int


@dataclass(frozen=True)
class SubjectData:
    """Train/test tensors and the names of the classes (or tokens)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str
    # False when the labels are the model's own predictions (no ground truth was given).
    labelled: bool = True
    # A known backdoor trigger that applies to these inputs (the bundled digits' 2x2 corner patch): the
    # attacks analysis measures whether explanations point at it. None for other data.
    trigger: "Trigger | None" = None
    # For token tasks with known structure: (x, y) -> per-position labels, e.g. which targets copying
    # can get right (the induction task). None when the task has no such labels.
    position_labels: Callable[[torch.Tensor, torch.Tensor], dict[str, Any]] | None = None

    @cached_property
    def hash(self) -> str:
        return hash_tensors(
            [("x_train", self.x_train), ("y_train", self.y_train),
             ("x_test", self.x_test), ("y_test", self.y_test)],
            salt="\x1f".join(self.classes),
        )


@dataclass(eq=False)
class Subject:
    """The model (an ``nn.Module``), its data and what kind of task it solves.

    ``layers`` names the modules worth looking at (found by introspection when not given);
    ``recipe`` retrains the architecture from scratch when an analysis needs dynamics.
    """

    name: str
    model: torch.nn.Module
    task: str
    data: SubjectData
    source: str
    layers: tuple[str, ...] = ()
    card: Mapping[str, Any] = field(default_factory=dict)
    recipe: Callable[..., Any] | None = None
    checkpoints: tuple[int, ...] = ()
    load_checkpoints: Callable[[], list[tuple[int, dict[str, torch.Tensor]]]] | None = None
    # The weights training started from, when known exactly (e.g. a sample's seeded initialisation).
    initial_state: Callable[[], dict[str, torch.Tensor]] | None = None
    # For token models whose classes are not the vocabulary (text classifiers): token ids -> strings.
    token_names: Callable[[list[int]], list[str]] | None = None
    # For character models: per-character ground-truth labels aligned with data.x_test.flatten().
    text_labels: Callable[[], dict[str, Any]] | None = None
    # For a twin (``talkgen.models.twins``): the name of the subject it was made from. Twins are measured
    # for the analyses that compare against them; they are not subjects of the talk.
    twin_of: str | None = None
    # How to make the model again (a twin's: the same weights each time), so that a large model's twin need
    # not be held between the analyses that run on it (:meth:`release`, :meth:`restore`).
    remake: Callable[[], torch.nn.Module] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.model.eval()

    @cached_property
    def tensor_hash(self) -> str:
        """The weights (and architecture text): what an analysis must leave as it found it."""
        return hash_module(self.model)

    @cached_property
    def model_hash(self) -> str:
        """The weights and the code that computes with them: the model's identity in cache keys."""
        return model_identity(self.tensor_hash, self.model)

    @property
    def released(self) -> bool:
        return self.model is None

    def release(self) -> bool:
        """Let go of the model (its hashes are kept) if it can be made again; whether it was let go."""
        if self.remake is None or self.model is None:
            return False
        _ = self.model_hash  # what identifies it in cache keys stays known
        self.model = None  # type: ignore[assignment]
        return True

    def restore(self) -> None:
        """The model again, after :meth:`release` (the same weights: its hash is checked)."""
        if self.model is None:
            assert self.remake is not None
            model = self.remake().eval()
            if hash_module(model) != self.tensor_hash:
                raise RuntimeError(f"{self.name}: the model made again differs from the one first made")
            self.model = model

    @property
    def data_hash(self) -> str:
        return self.data.hash

    def nonfinite_parameters(self) -> dict[str, int]:
        """Parameter name -> count of NaN/inf entries, for those that have any."""
        from talkgen.models.introspect import nonfinite_count

        bad = {}
        for name, p in self.model.named_parameters():
            n = nonfinite_count(p)
            if n:
                bad[name] = n
        return bad
