"""Bundled data sets that installed packages carry (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from talkgen.errors import TalkgenError
from talkgen.subject import SubjectData, Trigger

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


def _digits_file() -> Path:
    """The digits CSV that scikit-learn ships (found without importing scikit-learn, which is slow)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise TalkgenError("the digits data set comes with scikit-learn, which is not installed")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: per class, a permutation; the first round(fraction * n_c) go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits() -> SubjectData:
    """scikit-learn's 8x8 digits (1797 images), pixels scaled to [0, 1], shaped (N, 1, 8, 8).

    Split: :func:`stratified_split`, 25% test, seed 0 (the same split for every sample model).
    """
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float32)  # (1797, 65): 64 pixels + label
    x = (table[:, :64] / 16.0).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    train, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return SubjectData(
        x_train=torch.from_numpy(x[train]), y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x[test]), y_test=torch.from_numpy(y[test]),
        classes=tuple(str(c) for c in range(10)),
        source=f"scikit-learn digits ({_digits_file().name}), stratified split "
               f"test_fraction={DIGITS_TEST_FRACTION} seed={DIGITS_SPLIT_SEED}",
        trigger=digits_trigger(),
    )


TROJAN_TARGET = 0


def add_trigger(x: torch.Tensor) -> torch.Tensor:
    """The backdoor trigger: a 2x2 patch of full-intensity pixels in the bottom-right corner."""
    x = x.clone()
    x[..., 6:8, 6:8] = 1.0
    return x


def digits_trigger() -> Trigger:
    """The bundled backdoor trigger, which applies to these 8x8 digits (the trojan sample is trained on it)."""
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[6:8, 6:8] = True
    return Trigger("a 2x2 patch of full-intensity pixels in the bottom-right corner", add_trigger, region,
                   TROJAN_TARGET)


BUNDLED: dict[str, Callable[[], SubjectData]] = {"digits": digits}


def load_bundled(name: str) -> SubjectData:
    if name not in BUNDLED:
        raise TalkgenError(f"unknown bundled data set {name!r}; known: {', '.join(BUNDLED)}")
    return BUNDLED[name]()
