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

import contextlib
import copy
import dataclasses
import inspect
import itertools
from typing import Iterator

import torch
from torch import nn

from talkgen.seeding import seeded
from talkgen.spill import Spill
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


def _reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` itself, moved to the CPU, with every module's default initialisation drawn again (seeded, on
    the CPU: the same numbers wherever the model computes)."""
    model = model.cpu()
    with seeded(seed):
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model


def _from_checkpoint(subject) -> bool:
    """Whether the subject saved a checkpoint at step 0 (its initial weights, exactly)."""
    return bool(subject.load_checkpoints is not None and subject.checkpoints and subject.checkpoints[0] == 0)


def _fresh_source(seed: int) -> str:
    return f"a fresh default initialisation (seed {seed}), not the weights this model started from"


def initial_state(subject, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """The weights training started from, and where they came from."""
    if subject.initial_state is not None:
        return subject.initial_state(), "the exact initial weights, the sample's seeded initialisation"
    if _from_checkpoint(subject):
        return subject.load_checkpoints()[0][1], "the checkpoint saved at step 0"
    fresh = _reinitialised(copy.deepcopy(subject.model), seed)
    # the fresh copy's own tensors: no second copy
    return {k: v.detach() for k, v in fresh.state_dict().items()}, _fresh_source(seed)


def initial_source(subject) -> str:
    """Where :func:`initial_state` takes the initial weights from, without loading them."""
    if subject.initial_state is not None:
        return "the exact initial weights, the sample's seeded initialisation"
    if _from_checkpoint(subject):
        return "the checkpoint saved at step 0"
    return "a fresh default initialisation, not the weights this model started from"


def initial_model(subject, seed: int, into: nn.Module | None = None) -> tuple[nn.Module, str]:
    """A copy of the subject's model holding its initial weights (see :func:`initial_state`): one copy of
    the weights, however they are found. ``into``: a copy of the subject's model (its trained weights) to
    put them into, e.g. the model loaded again from its files; by default a deep copy of ``subject.model``."""
    model = into if into is not None else copy.deepcopy(subject.model)
    if subject.initial_state is None and not _from_checkpoint(subject):
        return _reinitialised(model, seed).eval(), _fresh_source(seed)
    state, source = initial_state(subject, seed)
    model.load_state_dict(state)
    return model.eval(), source


@contextlib.contextmanager
def initialised_in_place(subject, seed: int, folder: str | None = None) -> Iterator[tuple[nn.Module, str]]:
    """(the subject's own model holding its initial weights, where they came from) for the ``with`` block, and
    its trained weights and buffers back afterwards, bit for bit: for a large model, whose trained weights
    wait in a spill file on disk (in ``folder``) instead of in a second copy. A model on a GPU gets a copy
    (:func:`initial_model`): its initialisation is drawn on the CPU."""
    model = subject.model
    if any(t.device.type != "cpu" for t in itertools.chain(model.parameters(), model.buffers())):
        init, source = initial_model(subject, seed)
        yield init, source
        return
    tensors = {id(t): t.detach() for t in itertools.chain(model.parameters(), model.buffers())}
    modes = {m: m.training for m in model.modules()}
    with Spill(folder) as spill:
        saved = [(t, spill.put(t)) for t in tensors.values()]
        try:
            yield initial_model(subject, seed, into=model)
        finally:
            with torch.no_grad():
                for t, h in saved:
                    h.copy_to(t)
            for m, training in modes.items():
                m.train(training)


def at_initialisation(subject: Subject, seed: int) -> Subject:
    """The subject's architecture with the weights training started from."""
    model, source = initial_model(subject, seed)
    return dataclasses.replace(subject, name=twin_name(subject.name, "initial"), model=model,
                               source=f"{subject.source} ({source})", checkpoints=(), load_checkpoints=None,
                               initial_state=None, card={}, twin_of=subject.name,
                               remake=lambda: initial_model(subject, seed, into=subject.remake() if subject.remake
                                                            else None)[0])


def widens(subject: Subject) -> bool:
    """True when the subject's architecture can be built at another width."""
    params = inspect.signature(type(subject.model)).parameters
    return "width" in params and "n_classes" in params and subject.task.endswith("classifier")


def at_width(subject: Subject, width: int, seed: int) -> Subject:
    """The subject's architecture at ``width``, freshly initialised (seeded), on the subject's data."""
    def make() -> nn.Module:
        with seeded(seed):
            return type(subject.model)(width=width, n_classes=len(subject.data.classes)).eval()

    model = make()
    return dataclasses.replace(subject, name=twin_name(subject.name, "width", width), model=model,
                               source=f"{type(model).__name__}(width={width}), untrained", checkpoints=(),
                               load_checkpoints=None, initial_state=None, card={}, twin_of=subject.name,
                               remake=make)
