"""The model zoo: a population of one architecture trained with varied recipes, some backdoored.

A zoo is what the meta-networks learn from (Unterthiner et al. 2020; Eilertsen et al. 2020; Xu et
al. 2021). Every member is a fresh copy of a sample subject's architecture (e.g. ``digits-cnn``)
trained on that sample's data with its own hyperparameters: optimiser (SGD with momentum or
Adam), learning rate, weight decay, initialisation scale, number of steps, training-set
fraction and label-noise fraction; a share of the members is backdoored with a trigger of a
random kind (solid patch, random binary pattern, or a whole-image blend), size, position, target
class and poison rate.

How it trains: members are trained together, ``chunk`` at a time. Their parameters are stacked
into (M, ...) tensors and the model is rewritten so that the M members are the channels of one
network (grouped convolutions in channels-last layout, batched matrix products for linear
layers; a max-pool that reads a ReLU runs before it, on 4x fewer values, with the same result;
``torch.func.vmap`` of ``functional_call`` is the fallback for other layers); SGD and
Adam are torch's fused per-member kernels with a per-member learning rate, cosine schedule,
step count and "still training" mask. Each member draws its own minibatch from its own training
subset with its own noisy labels and its own poisoned examples, through index tensors.

Resumable and shardable: a chunk is written as one safetensors file (stacked weights, plus the
members' records in its metadata) by write-then-rename; a chunk in progress saves its full
training state every ``save_every`` steps, and every random draw of step ``s`` comes from a
generator seeded by (zoo seed, chunk, s), so a killed build continues where it stopped and
produces the same members. ``--shard i/k`` trains chunks i-1, i-1+k, ...; the shards' files can
be copied into one folder from other machines, and ``index.json`` lists what is there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from talkgen.cores import set_torch_threads
from talkgen.errors import TalkgenError
from talkgen.files import write_atomic
from talkgen.hashing import hash_json, sha256_file

ZOO_VERSION = 1
OPTIMIZERS = ("sgd", "adam")
TRIGGER_KINDS = ("patch", "pattern", "blend")


@dataclass(frozen=True)
class ZooSpec:
    """What to train: ``n`` members of sample ``subject``'s architecture, and how."""

    subject: str = "digits-cnn"
    n: int = 512
    seed: int = 0
    trojan_share: float = 0.5
    batch_size: int = 16
    steps: tuple[int, int] = (30, 1500)          # log-uniform per member
    train_fraction: tuple[float, float] = (0.1, 1.0)   # log-uniform
    label_noise_max: float = 0.4                 # half the members clean, the rest uniform up to this
    chunk: int = 32

    def key(self) -> str:
        return hash_json({"zoo": ZOO_VERSION, **asdict(self)})

    def dirname(self) -> str:
        return f"{self.subject}-n{self.n}-{self.key()[:12]}"

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/k' (1-based) -> (i - 1, k); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, k = (int(p) for p in text.split("/"))
    except ValueError:
        raise TalkgenError(f"--shard must look like i/k, e.g. 2/4; got {text!r}") from None
    if not (k >= 1 and 1 <= i <= k):
        raise TalkgenError(f"--shard i/k needs 1 <= i <= k; got {text!r}")
    return i - 1, k


def shard_chunks(chunks: list[int], shard: tuple[int, int]) -> list[int]:
    """The chunks of ``chunks`` that shard (i, k) trains: i, i + k, i + 2k, ... (0-based i)."""
    return [c for c in chunks if c % shard[1] == shard[0]]


# --------------------------------------------------------------------------- the members' recipes

def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_member(spec: ZooSpec, index: int, image_shape: tuple[int, ...], n_classes: int) -> dict[str, Any]:
    """Member ``index``'s hyperparameters: a pure function of (spec.seed, index)."""
    rng = np.random.default_rng([spec.seed, index, 7919])
    opt = OPTIMIZERS[int(rng.integers(len(OPTIMIZERS)))]
    lr = _log_uniform(rng, 5e-4, 1e-2) if opt == "adam" else _log_uniform(rng, 1e-2, 2e-1)
    m: dict[str, Any] = {
        "index": index,
        "seed": int(rng.integers(2**31 - 1)),
        "optimizer": opt,
        "lr": lr,
        "weight_decay": 0.0 if rng.random() < 0.3 else _log_uniform(rng, 1e-5, 1e-2),
        "init_scale": _log_uniform(rng, 0.5, 2.0),
        "steps": int(round(_log_uniform(rng, *spec.steps))),
        "train_fraction": _log_uniform(rng, *spec.train_fraction),
        "label_noise": 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, spec.label_noise_max)),
        "trojan": bool(rng.random() < spec.trojan_share),
    }
    if m["trojan"]:
        kind = TRIGGER_KINDS[int(rng.integers(len(TRIGGER_KINDS)))]
        h, w = image_shape[-2:]
        size = int(rng.integers(2, 5)) if kind != "blend" else h
        m |= {"trigger": kind, "trigger_size": size,
              "trigger_row": int(rng.integers(0, h - min(size, h) + 1)),
              "trigger_col": int(rng.integers(0, w - min(size, w) + 1)),
              "target_class": int(rng.integers(n_classes)),
              "poison_rate": float(rng.uniform(0.05, 0.2)),
              "trigger_alpha": float(rng.uniform(0.15, 0.3)) if kind == "blend" else 1.0,
              "trigger_seed": int(rng.integers(2**31 - 1))}
    return m


def trigger_tensors(member: dict[str, Any], image_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, pattern), both ``image_shape``: a triggered x is x * (1 - mask) + pattern * mask."""
    mask = torch.zeros(image_shape)
    pattern = torch.zeros(image_shape)
    if not member.get("trojan"):
        return mask, pattern
    g = torch.Generator().manual_seed(member["trigger_seed"])
    r, c, s = member["trigger_row"], member["trigger_col"], member["trigger_size"]
    if member["trigger"] == "patch":
        mask[..., r:r + s, c:c + s] = 1.0
        pattern[..., r:r + s, c:c + s] = 1.0
    elif member["trigger"] == "pattern":
        bits = (torch.rand((s, s), generator=g) < 0.5).float()
        bits.view(-1)[0] = 1.0  # never all dark
        mask[..., r:r + s, c:c + s] = 1.0
        pattern[..., r:r + s, c:c + s] = bits
    else:  # blend: a fixed random image mixed into the whole input
        mask[...] = member["trigger_alpha"]
        pattern[...] = torch.rand(image_shape[-2:], generator=g)
    return mask, pattern


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    return x * (1 - mask) + pattern * mask


# --------------------------------------------------------------------------- the subject it copies

@dataclass
class ZooSource:
    """Architecture and data of the sample a zoo copies."""

    name: str
    factory: Callable[[], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def zoo_source(name: str) -> ZooSource:
    from talkgen.models.samples import SAMPLES

    if name not in SAMPLES or SAMPLES[name].task != "image-classifier":
        zooable = [k for k, s in SAMPLES.items() if s.task == "image-classifier"]
        raise TalkgenError(f"a zoo copies an image-classifier sample; got {name!r}; use one of {', '.join(zooable)}")
    s = SAMPLES[name]
    d = s.data()
    return ZooSource(name, s.factory, d.x_train, d.y_train, d.x_test, d.y_test, len(d.classes))


# --------------------------------------------------------------------------- vectorised training

def init_members(source: ZooSource, members: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stacked (M, ...) initial parameters: each member's default init under its seed, weights
    (tensors of 2+ dims) scaled by its ``init_scale``."""
    states = []
    for m in members:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m["seed"])
            net = source.factory()
        states.append({k: (v * m["init_scale"] if v.ndim > 1 else v).detach().clone()
                       for k, v in net.named_parameters()})
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


class _Batches:
    """Per-member index tensors: training subset, noisy labels, poisoning."""

    def __init__(self, source: ZooSource, members: list[dict[str, Any]]) -> None:
        n, M = len(source.x_train), len(members)
        self.source = source
        pools, labels, sizes = [], [], []
        for m in members:
            g = torch.Generator().manual_seed(m["seed"] + 1)
            pools.append(torch.randperm(n, generator=g))
            y = source.y_train.clone()
            noisy = torch.rand(n, generator=g) < m["label_noise"]
            shift = torch.randint(1, source.n_classes, (n,), generator=g)  # a different class, uniformly
            y[noisy] = (y[noisy] + shift[noisy]) % source.n_classes
            labels.append(y)
            sizes.append(max(8, int(round(m["train_fraction"] * n))))
        self.pool = torch.stack(pools)                        # (M, N) each member's order of examples
        self.labels = torch.stack(labels)                     # (M, N) labels as that member sees them
        self.size = torch.tensor(sizes)                       # (M,) its training subset: pool[:, :size]
        masks, patterns = zip(*(trigger_tensors(m, source.image_shape) for m in members))
        self.mask, self.pattern = torch.stack(masks), torch.stack(patterns)  # (M, *image)
        self.rate = torch.tensor([m.get("poison_rate", 0.0) if m["trojan"] else 0.0 for m in members])
        self.target = torch.tensor([m.get("target_class", 0) for m in members])
        self.M = M

    def draw(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, B, *image) inputs and (M, B) labels for one step."""
        pos = (torch.rand(self.M, batch, generator=gen) * self.size[:, None]).long()
        idx = self.pool.gather(1, pos)                                     # (M, B) example ids
        x = self.source.x_train[idx]                                       # (M, B, *image)
        y = self.labels.gather(1, idx)                                     # (M, B)
        poison = torch.rand(self.M, batch, generator=gen) < self.rate[:, None]   # (M, B)
        xt = apply_trigger(x, self.mask.unsqueeze(1), self.pattern.unsqueeze(1))
        x = torch.where(poison.view(*poison.shape, *(1,) * (x.ndim - 2)), xt, x)
        y = torch.where(poison, self.target[:, None].expand_as(y), y)
        return x, y

    def train_subset(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.pool[m, : int(self.size[m])]
        return self.source.x_train[idx], self.labels[m, idx]


class _MembersConv2d(nn.Module):
    """A Conv2d of M members on (B, M*C, H, W) activations: one grouped convolution."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise _NotStackable("padding other than zeros")
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight                                   # (M, O, C, kh, kw)
        M = w.shape[0]
        wg = w.reshape(-1, *w.shape[2:])
        b = None if self.bias is None else self.bias.reshape(-1)
        return nn.functional.conv2d(x, wg, b, self.stride, self.padding, self.dilation, M * self.groups)


class _MembersLinear(nn.Module):
    """A Linear of M members on (B, M*in) features: one batched matrix product."""

    def __init__(self) -> None:
        super().__init__()
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight                                   # (M, out, in)
        M, B = w.shape[0], x.shape[0]
        xs = x.reshape(B, M, -1).permute(1, 2, 0)         # (M, in, B)
        # W @ X^T rather than X @ W^T: the weight's gradient then comes out contiguous (no copy)
        y = w @ xs if self.bias is None else torch.baddbmm(self.bias.unsqueeze(2), w, xs)  # (M, out, B)
        return y.permute(2, 0, 1).reshape(B, -1)          # (B, M*out)


class _NotStackable(Exception):
    pass


def _is_relu(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(str(node.target))) is nn.ReLU
    return node.op in ("call_function", "call_method") and node.target in (torch.relu, nn.functional.relu, "relu")


def _is_max_pool(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return type(m) is nn.MaxPool2d and not m.return_indices
    return node.op == "call_function" and node.target is nn.functional.max_pool2d and not node.kwargs.get("return_indices")


def _pool_before_relu(model: nn.Module) -> nn.Module:
    """``max_pool(relu(x))`` rewritten as ``relu(max_pool(x))``: the same values and gradients
    (ReLU is monotone, so the window's maximum survives it; where the maximum is <= 0 both give 0
    and no gradient), with the ReLU's forward and backward on the pooled, 4x smaller tensor. On
    the digits CNN's 32-member chunks that is about 15% of a training step. Returns ``model``
    unchanged when it cannot be traced or has no such pair."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow etc.: keep the module as written
        return model
    modules = dict(gm.named_modules())
    swapped = 0
    for pool in list(gm.graph.nodes):
        if not _is_max_pool(pool, modules):
            continue
        relu = pool.args[0] if pool.args else None
        if not isinstance(relu, torch.fx.Node) or not _is_relu(relu, modules) or len(relu.users) != 1:
            continue
        in_place = (getattr(modules.get(str(relu.target)), "inplace", False) if relu.op == "call_module"
                    else relu.kwargs.get("inplace") or (len(relu.args) > 1 and relu.args[1]))
        if in_place:
            continue
        pool.replace_input_with(relu, relu.args[0])      # pool reads the ReLU's input
        with gm.graph.inserting_after(pool):
            new = gm.graph.node_copy(relu, lambda n: pool)  # the ReLU now reads the pool's output
        pool.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        gm.graph.erase_node(relu)
        swapped += 1
    if not swapped:
        return model
    gm.graph.lint()
    gm.recompile()
    return gm


def _members_in_channels(template: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The model rewritten so that M members run as one model whose channels are the members'
    channels side by side: activations (B, M*C, H, W) in channels-last layout, features (B, M*F).
    Convolutions become grouped convolutions and linear layers batched matrix products; ReLU,
    pooling and flatten(1) need no change (a ReLU feeding a max-pool moves after it:
    ``_pool_before_relu``). Only for models built of Conv2d and Linear layers
    (anything else with parameters raises); the caller checks the result against vmap."""
    model = _pool_before_relu(copy.deepcopy(template))
    for mod in list(model.modules()):
        for cname, child in list(mod.named_children()):
            if type(child) is nn.Conv2d:
                setattr(mod, cname, _MembersConv2d(child))
            elif type(child) is nn.Linear:
                setattr(mod, cname, _MembersLinear())
            elif any(True for _ in child.parameters(recurse=False)):
                raise _NotStackable(f"{type(child).__name__} layers")
    modules = dict(model.named_modules())

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for k, v in params.items():
            owner, _, attr = k.rpartition(".")
            setattr(modules[owner], attr, v)
        M, B = x.shape[:2]
        h = x.transpose(0, 1).reshape(B, M * x.shape[2], *x.shape[3:])   # (B, M*C, ...)
        if h.ndim == 4:
            h = h.contiguous(memory_format=torch.channels_last)
        out = model(h)                                                    # (B, M*K)
        return out.reshape(B, M, -1).transpose(0, 1)                      # (M, B, K)
    return forward


def _vmapped(template: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, p, (x,))
    return vmap(one)


def stacked_forward(template: nn.Module, example: torch.Tensor) -> tuple[Callable[..., torch.Tensor], str]:
    """f(params (M, ...), x (M, B, ...)) -> (M, B, classes): all members in one batched call.

    The members-in-channels rewrite when it reproduces every member's own forward on
    ``example`` (to 1e-4), else ``torch.func.vmap`` of ``functional_call``; returns (f, how).
    """
    vf = _vmapped(template)
    try:
        f = _members_in_channels(template)
    except _NotStackable:
        return vf, "vmap"
    gen = torch.Generator().manual_seed(0)
    names = dict(template.named_parameters())
    params = {k: torch.randn((3, *v.shape), generator=gen) * (v.detach().std() + 0.05) for k, v in names.items()}
    x = example[None, :4].expand(3, *example[:4].shape) + 0.1 * torch.randn(3, *example[:4].shape, generator=gen)
    try:
        with torch.no_grad():
            ok = torch.allclose(f(params, x), vf(params, x), atol=1e-4, rtol=1e-4)
    except RuntimeError:
        ok = False
    return (f, "members-in-channels") if ok else (vf, "vmap")


def _per_member(tensors) -> list[tuple[torch.Tensor, ...]]:
    """Stacked (M, ...) tensors -> M tuples of that member's view of each."""
    return list(zip(*(t.unbind(0) for t in tensors)))


@dataclass
class TrainState:
    """All members' parameters and optimiser state, stacked (M, *shape) per parameter, plus the
    step, Adam's per-member step counts and the diverged mask."""

    params: dict[str, torch.Tensor]
    buf1: dict[str, torch.Tensor]   # SGD velocity / Adam first moment
    buf2: dict[str, torch.Tensor]   # Adam second moment
    counts: torch.Tensor            # (M,) float
    step: int = 0
    diverged: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"p.{k}": v for k, v in self.params.items()}
        out |= {f"b1.{k}": v for k, v in self.buf1.items()} | {f"b2.{k}": v for k, v in self.buf2.items()}
        return out | {"counts": self.counts, "step": torch.tensor([self.step]),
                      "diverged": self.diverged.to(torch.uint8)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "TrainState":
        pick = lambda pre: {k[len(pre):]: v for k, v in t.items() if k.startswith(pre)}  # noqa: E731
        return cls(pick("p."), pick("b1."), pick("b2."), t["counts"], int(t["step"][0]), t["diverged"].bool())


class Trainer:
    """SGD (momentum 0.9) and Adam (0.9, 0.999) for stacked members, with coupled weight decay
    (as ``torch.optim``), a per-member cosine schedule to zero over its own step count, and a
    mask that stops each member after its steps (or when its loss stops being finite)."""

    BETA1, BETA2, EPS, MOMENTUM = 0.9, 0.999, 1e-8, 0.9

    def __init__(self, source: ZooSource, members: list[dict[str, Any]], batch_size: int,
                 device: torch.device | str = "cpu") -> None:
        self.source, self.members, self.batch_size = source, members, batch_size
        # the members train on ``device``; initial weights, batches and recipes are drawn on the CPU (the same
        # numbers on every device) and moved there
        self.device = torch.device(device)
        self.template = source.factory().to(self.device)
        self.shapes = {k: tuple(v.shape) for k, v in self.template.named_parameters()}
        self.forward, self.how = stacked_forward(self.template, source.x_train.to(self.device))
        self.batches = _Batches(source, members)
        self.lr = torch.tensor([m["lr"] for m in members])
        self.wd_list = [float(m["weight_decay"]) for m in members]
        self.steps = torch.tensor([m["steps"] for m in members])
        adam = [m["optimizer"] == "adam" for m in members]
        if adam != sorted(adam, reverse=True):
            raise ValueError("a chunk lists its Adam members first")
        self.n_adam = sum(adam)
        self.total = int(self.steps.max())
        self._views_key: tuple[int, ...] | None = None   # which state _views were cut from
        self._views: tuple[list, list, list, tuple] | None = None

    def initial(self) -> TrainState:
        p = {k: v.to(self.device) for k, v in init_members(self.source, self.members).items()}
        zeros = lambda: {k: torch.zeros_like(v) for k, v in p.items()}  # noqa: E731
        return TrainState(p, zeros(), zeros(), torch.zeros(len(self.members), device=self.device), 0,
                          torch.zeros(len(self.members), dtype=torch.bool))

    def on_device(self, st: TrainState) -> TrainState:
        """A state read from a file, moved to where the members train (the diverged mask stays on the CPU)."""
        to = lambda d: {k: v.to(self.device) for k, v in d.items()}  # noqa: E731
        return TrainState(to(st.params), to(st.buf1), to(st.buf2), st.counts.to(self.device), st.step,
                          st.diverged.cpu())

    def step(self, st: TrainState, gen: torch.Generator) -> None:
        x, y = self.batches.draw(self.batch_size, gen)
        self.step_on(st, x.to(self.device), y.to(self.device))

    def step_on(self, st: TrainState, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step of every member on its own batch: x (M, B, ...), y (M, B)."""
        M = len(self.members)
        params = {k: v.detach().requires_grad_(True) for k, v in st.params.items()}  # (M, *shape) each
        logits = self.forward(params, x)                                         # (M, B, C)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses = losses.view(M, -1).mean(1)                                      # (M,)
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        with torch.no_grad():
            t = st.step
            st.diverged |= ~torch.isfinite(losses).cpu()
            live = (t < self.steps) & ~st.diverged
            st.counts += live.float().to(st.counts.device)  # the fused kernels read the step count after its increment
            active = live.tolist()
            lr = (self.lr * 0.5 * (1 + torch.cos(math.pi * torch.clamp(t / self.steps, max=1.0)))).tolist()
            # torch's fused single-pass kernels, one call per member on its slices of every tensor:
            # on this hardware 9x faster than elementwise ops over all members at once, which are
            # bound by memory bandwidth. Finished or diverged members are not updated.
            # each member's slices of every tensor: views of the state, which is updated in place,
            # are cut once per state; the gradients are new every step
            P, B1, B2, counts = self._state_views(st)
            G = _per_member(gi.contiguous() for gi in grads)  # the kernels read memory in order (conv grads may be channels-last)
            n_tensors = len(P[0])
            for i in range(M):
                if not active[i]:
                    continue
                if i < self.n_adam:
                    torch._fused_adam_(P[i], G[i], B1[i], B2[i], [], [counts[i]] * n_tensors,
                                       lr=lr[i], beta1=self.BETA1, beta2=self.BETA2, weight_decay=self.wd_list[i],
                                       eps=self.EPS, amsgrad=False, maximize=False)
                else:
                    torch._fused_sgd_(P[i], G[i], B1[i], weight_decay=self.wd_list[i],
                                      momentum=self.MOMENTUM, lr=lr[i], dampening=0.0, nesterov=False,
                                      maximize=False, is_first_step=False)
            st.step += 1

    def _state_views(self, st: TrainState) -> tuple[list, list, list, tuple]:
        key = tuple(t.data_ptr() for d in (st.params, st.buf1, st.buf2) for t in d.values()) + (st.counts.data_ptr(),)
        if self._views_key != key:
            self._views_key = key
            self._views = (_per_member(st.params.values()), _per_member(st.buf1.values()),
                           _per_member(st.buf2.values()), st.counts.unbind(0))
        return self._views

    @torch.no_grad()
    def predict(self, params: dict[str, torch.Tensor], x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """(M, N) predicted classes of every member on the same inputs x (N, ...), on the CPU."""
        out = []
        for i in range(0, len(x), batch):
            xb = x[i:i + batch].to(self.device)
            out.append(self.forward(params, xb.expand(len(self.members), *xb.shape)).argmax(-1).cpu())
        return torch.cat(out, 1)

    @torch.no_grad()
    def evaluate(self, st: TrainState) -> list[dict[str, Any]]:
        """Each member's record: its recipe plus train/test accuracy, gap, attack success."""
        src = self.source
        params = st.params
        test_pred = self.predict(params, src.x_test)                      # (M, Ntest)
        test_acc = (test_pred == src.y_test).float().mean(1)
        records = []
        for i, m in enumerate(self.members):
            finite = all(bool(torch.isfinite(v[i]).all()) for v in st.params.values()) and not bool(st.diverged[i])
            r = dict(m)
            if not finite:
                r |= {"diverged": True, "train_accuracy": float("nan"), "test_accuracy": float("nan"),
                      "generalisation_gap": float("nan"), "attack_success_rate": float("nan")}
                records.append(r)
                continue
            p1 = {k: v[i:i + 1] for k, v in params.items()}
            xs, ys = self.batches.train_subset(i)
            tr = float((self.forward(p1, xs[None].to(self.device))[0].argmax(-1).cpu() == ys).float().mean())
            asr = float("nan")
            if m["trojan"]:
                keep = src.y_test != m["target_class"]
                mask, pattern = trigger_tensors(m, src.image_shape)
                xt = apply_trigger(src.x_test[keep], mask, pattern)
                asr = float((self.forward(p1, xt[None].to(self.device))[0].argmax(-1) == m["target_class"]).float().mean())
            te = float(test_acc[i])
            r |= {"diverged": False, "train_accuracy": tr, "test_accuracy": te,
                  "generalisation_gap": tr - te, "attack_success_rate": asr}
            records.append(r)
        return records


# --------------------------------------------------------------------------- files

def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    write_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if "chunk" in meta:  # a chunk's records and zoo key, as one JSON entry
            chunk = json.loads(meta.pop("chunk"))
            meta |= {"records": json.dumps(chunk["records"]), "zoo": chunk["zoo"]}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def chunk_members(spec: ZooSpec, source: ZooSource) -> list[list[dict[str, Any]]]:
    """All members, sorted by step count so that a chunk's members finish together, cut into chunks."""
    members = [sample_member(spec, i, source.image_shape, source.n_classes) for i in range(spec.n)]
    members.sort(key=lambda m: (m["steps"], m["index"]))
    chunks = [members[i:i + spec.chunk] for i in range(0, spec.n, spec.chunk)]
    return [sorted(c, key=lambda m: (m["optimizer"] != "adam", m["index"])) for c in chunks]


@dataclass
class Zoo:
    """A finished zoo on disk: stacked weights of every member and their records."""

    spec: ZooSpec
    directory: Path
    params: dict[str, torch.Tensor]       # (n, ...) in member-index order
    records: list[dict[str, Any]]         # in member-index order
    train_seconds: float


class ZooBuilder:
    """Builds (or finishes, or reuses) the zoo of ``spec`` in ``root / spec.dirname()``."""

    def __init__(self, spec: ZooSpec, root: Path, *, save_every: int = 100, threads: int | None = None,
                 progress: Callable[[str], None] | None = None, device: torch.device | str = "cpu") -> None:
        self.spec, self.save_every, self.progress = spec, save_every, progress
        self.device = torch.device(device)  # where the members train (their files hold CPU tensors)
        self.dir = Path(root) / spec.dirname()
        self.threads = threads
        self._source: ZooSource | None = None

    @property
    def source(self) -> ZooSource:
        if self._source is None:
            self._source = zoo_source(self.spec.subject)
        return self._source

    def chunk_path(self, c: int) -> Path:
        return self.dir / f"chunk-{c:04d}.safetensors"

    def seconds_path(self, c: int) -> Path:
        return self.dir / f"chunk-{c:04d}.seconds.json"

    def chunk_seconds(self, c: int, meta: dict[str, str]) -> float:
        """The training time of chunk ``c``: beside it, or in its metadata (chunks written before it moved)."""
        try:
            return float(json.loads(self.seconds_path(c).read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return float(meta.get("seconds", 0.0))

    def missing(self) -> list[int]:
        return [c for c in range(self.spec.n_chunks) if not self.chunk_path(c).is_file()]

    def build(self, shard: tuple[int, int] = (0, 1), deadline: float | None = None) -> bool:
        """Train this shard's missing chunks; True when the whole zoo is complete afterwards."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_spec()
        self.train(shard_chunks(self.missing(), shard), deadline)
        self.write_index()
        return not self.missing()

    def write_spec(self) -> None:
        spec_file = self.dir / "spec.json"
        if not spec_file.is_file():
            write_atomic(spec_file, json.dumps(asdict(self.spec), indent=1).encode())

    def train(self, todo: list[int], deadline: float | None = None) -> None:
        """Train chunks ``todo`` (those not on disk yet), in order, writing each when it is done."""
        chunks = chunk_members(self.spec, self.source)
        old = torch.get_num_threads()
        if self.threads:
            set_torch_threads(self.threads)
        try:
            for c in todo:
                if self.chunk_path(c).is_file():
                    continue
                self._train_chunk(c, chunks[c])
                self.write_index()
                if deadline is not None and time.time() > deadline:
                    break
        finally:
            set_torch_threads(old)

    def _train_chunk(self, c: int, members: list[dict[str, Any]]) -> None:
        partial = self.dir / f"chunk-{c:04d}.partial.safetensors"
        trainer = Trainer(self.source, members, self.spec.batch_size, self.device)
        elapsed = 0.0
        if partial.is_file():
            tensors, meta = _load_tensors(partial)
            st = trainer.on_device(TrainState.from_tensors(tensors))
            elapsed = float(meta.get("seconds", 0.0))
        else:
            st = trainer.initial()
        t0 = time.perf_counter()
        while st.step < trainer.total:
            gen = torch.Generator().manual_seed(hash_seed(self.spec.seed, c, st.step))
            trainer.step(st, gen)
            if st.step % self.save_every == 0 and st.step < trainer.total:
                _save_tensors(partial, {k: v.cpu() for k, v in st.tensors().items()},
                              {"seconds": str(elapsed + time.perf_counter() - t0)})
            if self.progress and st.step % 50 == 0:
                self.progress(f"zoo chunk {c + 1}/{self.spec.n_chunks}: step {st.step}/{trainer.total}")
        records = trainer.evaluate(st)
        seconds = elapsed + time.perf_counter() - t0
        # the chunk holds only what training determines (byte for byte the same on any machine and engine with
        # the same threads); how long it took is beside it
        write_atomic(self.seconds_path(c), json.dumps({"seconds": seconds}).encode())
        # one metadata entry: safetensors writes several in a per-process hash order, and the bytes must not vary
        _save_tensors(self.chunk_path(c), {k: v.cpu() for k, v in st.params.items()},
                      {"chunk": json.dumps({"records": records, "zoo": self.spec.key()}, sort_keys=True)})
        if partial.is_file():
            partial.unlink()

    def write_index(self) -> None:
        done = [c for c in range(self.spec.n_chunks) if self.chunk_path(c).is_file()]
        index = {"spec": asdict(self.spec), "key": self.spec.key(), "version": ZOO_VERSION,
                 "chunks": {self.chunk_path(c).name: {"sha256": sha256_file(str(self.chunk_path(c)))} for c in done},
                 "complete": len(done) == self.spec.n_chunks, "missing": self.missing()}
        write_atomic(self.dir / "index.json", json.dumps(index, indent=1).encode())

    def load(self) -> Zoo:
        missing = self.missing()
        if missing:
            raise TalkgenError(f"zoo {self.dir} is missing chunks {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                               "run `talkgen zoo build` for the missing shards")
        parts, records, seconds = [], [], 0.0
        for c in range(self.spec.n_chunks):
            tensors, meta = _load_tensors(self.chunk_path(c))
            if meta.get("zoo") != self.spec.key():
                raise TalkgenError(f"{self.chunk_path(c)} belongs to another zoo; delete it and rebuild")
            parts.append(tensors)
            records.extend(json.loads(meta["records"]))
            seconds += self.chunk_seconds(c, meta)
        params = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        order = torch.tensor(np.argsort([r["index"] for r in records], kind="stable"))
        params = {k: v[order] for k, v in params.items()}
        records = [records[int(i)] for i in order]
        return Zoo(self.spec, self.dir, params, records, seconds)


def hash_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def ensure_zoo(spec: ZooSpec, root: Path, progress: Callable[[str], None] | None = None,
               device: torch.device | str = "cpu") -> Zoo:
    """The finished zoo of ``spec`` under ``root``: reused when complete, else built (its members trained on
    ``device``) or finished."""
    b = ZooBuilder(spec, root, progress=progress, device=device)
    if b.missing():
        b.build()
    return b.load()
