"""Twins of a subject: the same architecture with other weights, for comparisons an analysis draws.

- ``initial``: the weights training started from (exactly, where the subject knows them) -- the
  baseline a trained network's numbers have to beat (the fingerprint, probes, RNN cells).
- ``width``: the same architecture at another width, untrained -- how an analysis's cost grows
  with the model (the costs analysis's scaling study). Only architectures whose constructor takes
  ``width`` (and ``n_classes``) have width twins.

A twin is an ordinary :class:`Subject` (its own name, model and hash, the subject's data), so the
pipeline runs analyses on it like on any other: cached, isolated and checked for side effects.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect

import torch
from torch import nn

from talkgen.seeding import seeded
from talkgen.subject import Subject


def twin_name(subject: str, kind: str, width: int | None = None) -> str:
    """A twin's subject name: "<subject> at initialisation" or "<subject> at width <w>"."""
    return f"{subject} at initialisation" if kind == "initial" else f"{subject} at width {width}"


def make_twin(subject: Subject, kind: str, width: int | None, seed: int) -> Subject | str:
    """The twin, or why there is none."""
    if kind == "initial":
        try:
            return at_initialisation(subject, seed)
        except (RuntimeError, ValueError, KeyError) as exc:
            return f"no initial weights for this model ({type(exc).__name__}: {exc})"
    if kind == "width":
        if not widens(subject):
            return "its architecture has no width to vary"
        return at_width(subject, int(width or 0), seed)
    raise ValueError(f"unknown twin kind {kind!r}")


def initial_state(subject, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """The weights training started from, and where they came from."""
    if subject.initial_state is not None:
        return subject.initial_state(), "the exact initial weights, the sample's seeded initialisation"
    if subject.load_checkpoints is not None and subject.checkpoints and subject.checkpoints[0] == 0:
        return subject.load_checkpoints()[0][1], "the checkpoint saved at step 0"
    fresh = copy.deepcopy(subject.model).cpu()  # drawn on the CPU: the same numbers wherever the model computes
    with seeded(seed):
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return ({k: v.detach() for k, v in fresh.state_dict().items()},  # the fresh copy's own tensors: no second copy
            f"a fresh default initialisation (seed {seed}), not the weights this model started from")


def initial_source(subject) -> str:
    """Where :func:`initial_state` takes the initial weights from, without loading them."""
    if subject.initial_state is not None:
        return "the exact initial weights, the sample's seeded initialisation"
    if subject.load_checkpoints is not None and subject.checkpoints and subject.checkpoints[0] == 0:
        return "the checkpoint saved at step 0"
    return "a fresh default initialisation, not the weights this model started from"


def initial_model(subject, seed: int) -> tuple[nn.Module, str]:
    """A copy of the subject's model holding its initial weights (see :func:`initial_state`)."""
    state, source = initial_state(subject, seed)
    model = copy.deepcopy(subject.model)
    model.load_state_dict(state)
    return model.eval(), source


def at_initialisation(subject: Subject, seed: int) -> Subject:
    """The subject's architecture with the weights training started from."""
    model, source = initial_model(subject, seed)
    return dataclasses.replace(subject, name=twin_name(subject.name, "initial"), model=model,
                               source=f"{subject.source} ({source})", checkpoints=(), load_checkpoints=None,
                               initial_state=None, card={}, twin_of=subject.name)


def widens(subject: Subject) -> bool:
    """True when the subject's architecture can be built at another width."""
    params = inspect.signature(type(subject.model)).parameters
    return "width" in params and "n_classes" in params and subject.task.endswith("classifier")


def at_width(subject: Subject, width: int, seed: int) -> Subject:
    """The subject's architecture at ``width``, freshly initialised (seeded), on the subject's data."""
    with seeded(seed):
        model = type(subject.model)(width=width, n_classes=len(subject.data.classes)).eval()
    return dataclasses.replace(subject, name=twin_name(subject.name, "width", width), model=model,
                               source=f"{type(model).__name__}(width={width}), untrained", checkpoints=(),
                               load_checkpoints=None, initial_state=None, card={}, twin_of=subject.name)
