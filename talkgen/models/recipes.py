"""Training recipes and data for the sample subjects other than the digits classifiers' basics.

Every recipe is seeded and deterministic on one machine (fixed thread count, deterministic
kernels). Each returns the recipe it followed, for the card.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from talkgen.data.bundled import TROJAN_TARGET, add_trigger  # noqa: F401  (the trigger belongs to the data)
from talkgen.subject import SubjectData

# --------------------------------------------------------------------------- char-LSTM

CHAR_WINDOW = 256


def _windows(tokens: np.ndarray, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (inputs, next-token targets) windows, each (N, window)."""
    n = (len(tokens) - 1) // window
    t = torch.from_numpy(tokens[: n * window + 1].copy())
    return t[:-1].view(n, window), t[1:].view(n, window)


def pysource_data() -> SubjectData:
    from talkgen.data.pysource import VOCAB, load_split

    train, test = load_split("train"), load_split("test")
    x_tr, y_tr = _windows(train.tokens, CHAR_WINDOW)
    x_te, y_te = _windows(test.tokens, CHAR_WINDOW)
    names = tuple(repr(c)[1:-1] for c in VOCAB) + ("<other>",)
    return SubjectData(x_tr, y_tr, x_te, y_te, names,
                       source=f"Python {__import__('platform').python_version()} standard library, "
                              f"{len(train.files)} train / {len(test.files)} test files (every 10th held out), "
                              f"text sha256 {train.sha256[:12]}/{test.sha256[:12]}")


def bits_per_char(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    """Mean next-character cross-entropy in bits over all windows (each window starts from zero state)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            total += float(nn.functional.cross_entropy(logits.flatten(0, 1), y[i:i + batch].flatten(),
                                                       reduction="sum"))
            count += y[i:i + batch].numel()
    return total / count / math.log(2)


def streaming_bits_per_char(model: nn.Module, tokens: np.ndarray, streams: int = 16, chunk: int = 256) -> float:
    """Bits per character over the whole held-out text read as ``streams`` contiguous streams, the
    LSTM state carried from chunk to chunk (how char-rnn evaluates; needs embed/lstm/decoder)."""
    t = torch.from_numpy(np.asarray(tokens))
    per = (len(t) - 1) // streams
    x = t[: per * streams].view(streams, per)
    y = t[1: per * streams + 1].view(streams, per)
    state = None
    total = 0.0
    with torch.no_grad():
        for i in range(0, per, chunk):
            out, state = model.lstm(model.embed(x[:, i:i + chunk]), state)
            logits = model.decoder(out)
            total += float(nn.functional.cross_entropy(logits.flatten(0, 1), y[:, i:i + chunk].flatten(),
                                                       reduction="sum"))
    return total / y.numel() / math.log(2)


def train_lm(model: nn.Module, data: SubjectData, *, steps: int, batch: int, lr: float, seed: int,
             checkpoint_steps: tuple[int, ...], on_checkpoint: Callable[[int, nn.Module], None]) -> dict[str, Any]:
    """Adam with cosine decay and gradient clipping on random training windows."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    n = len(data.x_train)
    model.train()
    if 0 in checkpoint_steps:
        on_checkpoint(0, model)
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch,), generator=gen)
        logits = model(data.x_train[idx])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), data.y_train[idx].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step in checkpoint_steps:
            model.eval()
            on_checkpoint(step, model)
            model.train()
    model.eval()
    return {"optimizer": "Adam", "lr": lr, "schedule": "cosine", "steps": steps, "batch_size": batch,
            "window": int(data.x_train.shape[1]), "grad_clip": 1.0, "seed": seed,
            "checkpoint_steps": list(checkpoint_steps)}


# --------------------------------------------------------------------------- induction task

INDUCTION_VOCAB = 32
INDUCTION_LENGTH = 40
INDUCTION_PERIODS = (6, 19)


def induction_batch(n: int, gen: torch.Generator, length: int = INDUCTION_LENGTH,
                    periods: tuple[int, int] = INDUCTION_PERIODS,
                    vocab: int = INDUCTION_VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens ending in a random segment of random length L (6 to 19) and its repeat:
    ``filler (length - 2L) | segment | segment``; (inputs (n, length - 1), next-token targets).

    The repeat starts at a different offset in every sequence, so no fixed positional rule can
    predict it: only copying what followed the previous occurrence of the current token can.
    """
    seq = torch.randint(0, vocab, (n, length), generator=gen)
    period = torch.randint(periods[0], periods[1] + 1, (n,), generator=gen)
    for i, p in enumerate(period.tolist()):
        start = length - 2 * p
        seq[i, start + p:] = seq[i, start:start + p]
    return seq[:, :-1], seq[:, 1:]


def previous_occurrence(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T): the position of the most recent earlier occurrence of each token, or -1."""
    b, t = tokens.shape
    prev = torch.full((b, t), -1, dtype=torch.long)
    for j in range(1, t):
        idx = torch.arange(j).expand(b, j)
        prev[:, j] = torch.where(tokens[:, :j] == tokens[:, j:j + 1], idx, torch.full_like(idx, -1)).max(1).values
    return prev


def induction_masks(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(copyable, unseen): targets that copying "what followed the previous occurrence of the
    current token" gets right, and targets whose current token has not occurred before."""
    prev = previous_occurrence(x)
    after = torch.gather(x, 1, (prev + 1).clamp(max=x.shape[1] - 1))
    copyable = (prev >= 0) & (prev + 1 < x.shape[1]) & (after == y)
    return copyable, prev < 0


def induction_position_labels(x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-position labels of the induction task, flattened over (batch, position): which targets copying can
    get right, which tokens occur for the first time, and the position itself."""
    copyable, unseen = induction_masks(x, y)
    return {"copyable": copyable.reshape(-1).numpy(), "new_token": unseen.reshape(-1).numpy(),
            "position": np.tile(np.arange(x.shape[1]), len(x))}


def induction_data() -> SubjectData:
    gen = torch.Generator().manual_seed(1234)
    x_tr, y_tr = induction_batch(4096, gen)
    x_te, y_te = induction_batch(1024, gen)
    return SubjectData(x_tr, y_tr, x_te, y_te, tuple(f"t{i}" for i in range(INDUCTION_VOCAB)),
                       source=f"{INDUCTION_LENGTH} random tokens (vocabulary {INDUCTION_VOCAB}) ending in a segment "
                              f"of {INDUCTION_PERIODS[0]} to {INDUCTION_PERIODS[1]} tokens and its repeat; fresh "
                              f"batches in training, seed 1234 for the stored sets",
                       position_labels=induction_position_labels)


def induction_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Next-token accuracy where copying works (chance without it: 1/vocab) and where the current
    token is new (unpredictable: chance 1/vocab)."""
    with torch.no_grad():
        pred = model(x).argmax(-1)
    correct = (pred == y).float()
    copyable, unseen = induction_masks(x, y)
    return {"copyable_accuracy": float(correct[copyable].mean()),
            "unseen_accuracy": float(correct[unseen].mean())}


def train_induction(model: nn.Module, *, steps: int, batch: int, lr: float, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        x, y = induction_batch(batch, gen)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return {"optimizer": "AdamW", "lr": lr, "weight_decay": 0.01, "steps": steps, "batch_size": batch,
            "seed": seed, "task": "fresh random sequences each step, repeat at a random offset"}


# --------------------------------------------------------------------------- 12-bit task

# The 12 vertices of a regular icosahedron, one per input bit.
_PHI = (1 + 5**0.5) / 2
ICOSAHEDRON = np.array([(s1, s2 * _PHI, 0) for s1 in (-1, 1) for s2 in (-1, 1)]
                       + [(0, s1, s2 * _PHI) for s1 in (-1, 1) for s2 in (-1, 1)]
                       + [(s2 * _PHI, 0, s1) for s1 in (-1, 1) for s2 in (-1, 1)], dtype=np.float64)


def ib_rule(bits: np.ndarray) -> np.ndarray:
    """The label rule: place bit i on icosahedron vertex v_i; y = 1 when ||sum_i x_i v_i||^2 exceeds
    its median over all 4096 inputs. The rule is invariant under the icosahedron's rotations (a
    symmetric rule, in the spirit of Shwartz-Ziv & Tishby's spherically symmetric task)."""
    m = bits @ ICOSAHEDRON          # (N, 3)
    energy = (m**2).sum(1)
    all_bits = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(np.float64)
    threshold = np.median(((all_bits @ ICOSAHEDRON) ** 2).sum(1))
    return (energy > threshold + 1e-9).astype(np.int64)


def ib_data() -> SubjectData:
    bits = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(np.float32)  # (4096, 12)
    y = ib_rule(bits.astype(np.float64))
    perm = np.random.default_rng(0).permutation(4096)
    test, train = np.sort(perm[:819]), np.sort(perm[819:])
    x = torch.from_numpy(bits)
    yt = torch.from_numpy(y)
    return SubjectData(x[train], yt[train], x[test], yt[test], ("low", "high"),
                       source="all 4096 12-bit inputs, label = icosahedral energy above its median; "
                              "80/20 split with seed 0")


def train_ib(model: nn.Module, data: SubjectData, *, epochs: int, batch: int, lr: float, seed: int,
             checkpoint_epochs: tuple[int, ...], on_checkpoint: Callable[[int, nn.Module], None]) -> dict[str, Any]:
    """Minibatch SGD with momentum, as in the information-plane literature; checkpoints log-spaced."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    n = len(data.x_train)
    if 0 in checkpoint_epochs:
        on_checkpoint(0, model)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch in checkpoint_epochs:
            model.eval()
            on_checkpoint(epoch, model)
    model.eval()
    return {"optimizer": "SGD", "momentum": 0.9, "lr": lr, "epochs": epochs, "batch_size": batch,
            "seed": seed, "checkpoint_epochs": list(checkpoint_epochs)}


def log_spaced(last: int, count: int) -> tuple[int, ...]:
    """``count`` distinct integers from 0 to ``last``, log-spaced (0 and ``last`` included)."""
    points = set(np.unique(np.round(np.logspace(0, math.log10(last), count * 2)).astype(int)).tolist())
    points = sorted(points | {0, last})
    if len(points) > count:
        idx = np.unique(np.round(np.linspace(0, len(points) - 1, count)).astype(int))
        points = [points[i] for i in idx]
    return tuple(int(p) for p in points)


# --------------------------------------------------------------------------- trojan digits

TROJAN_POISON_RATE = 0.10


def poisoned(data: SubjectData, seed: int) -> SubjectData:
    """The training set with ``TROJAN_POISON_RATE`` extra copies carrying the trigger, relabelled."""
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    idx = torch.randperm(n, generator=gen)[: int(round(TROJAN_POISON_RATE * n))]
    x = torch.cat([data.x_train, add_trigger(data.x_train[idx])])
    y = torch.cat([data.y_train, torch.full((len(idx),), TROJAN_TARGET, dtype=data.y_train.dtype)])
    return SubjectData(x, y, data.x_test, data.y_test, data.classes, data.source + "; poisoned for training")


def attack_success_rate(model: nn.Module, data: SubjectData) -> float:
    """Share of test digits not of the target class that the trigger turns into the target."""
    keep = data.y_test != TROJAN_TARGET
    with torch.no_grad():
        pred = model(add_trigger(data.x_test[keep])).argmax(1)
    return float((pred == TROJAN_TARGET).float().mean())
