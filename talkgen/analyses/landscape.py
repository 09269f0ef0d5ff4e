"""The loss landscape: the loss along the straight line from initialisation to the trained weights,
and on a plane through the trained weights spanned by two random, filter-normalised directions.

What it measures:

* **Line** (Goodfellow, Vinyals & Saxe 2015): ``L((1 - a) θ0 + a θ*)`` for ``a`` from -0.25 to
  1.25, on training and held-out data. Whether the loss falls monotonically along it, and the
  largest bump above the straight chord between its ends (the "barrier").
* **Plane** (Li et al. 2018): ``L(θ* + a d1 + b d2)`` on a ``grid x grid`` lattice over
  ``[-span, span]^2``. Each direction is Gaussian, then every filter (a row of a linear layer, an
  output channel of a convolution) is rescaled to the norm of the same filter in θ*; directions
  for biases and normalisation parameters (1-D tensors) are zero. ``a = 1`` therefore moves every
  filter by its own size, which makes pictures of differently scaled networks comparable.
* **Flatness**: along 32 rays from the centre of the plane, the radius at which the loss first
  rises ``basin_delta`` nats above its value at θ*, averaged (rays that stay below it count as
  ``span``, and are counted).

How it is computed: a private copy of the model is moved in place from point to point (no
autograd; convolutional models in the channels-last memory format, which oneDNN runs several
times faster on CPU). When the first parametrised module (a linear, convolution or embedding layer) reads
the raw input, its output is linear in its own weights, ``f(x; W* + a D1 + b D2) = f(x; W*) +
a f(x; D1) + b f(x; D2)``, so the three terms are computed once and each grid point only adds
them (when that layer is a sizeable share of the FLOPs); every other layer runs per point. Each grid point is evaluated once.
Memory: the model, the copy that moves, and the directions (the line's one, the plane's two), so at most three
copies of the weights besides the model's own. A large model (``budget.large``) is moved itself instead, and the
trained weights and the directions are written to an anonymous file on disk as they are made and read back one
piece (32 MB) at a time for each point (``talkgen.spill``; the same numbers); the line's initial weights are
made in the model itself while its trained ones wait on disk: it holds the weights once. Assumptions: a
cross-entropy loss; a model in eval mode (batch-norm statistics are the running ones).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from talkgen.analyses import budget
from talkgen.devices import like
from talkgen.analyses.base import Analysis, Context, Result, Scalar, register
from talkgen.analyses.loss import Params, batch_count, cross_entropy, loss_batch, loss_batch_size, loss_problem
from talkgen.models.twins import initial_state, initialised_in_place
from talkgen.specs import Curves, Surface, Table
from talkgen.models.introspect import has_own_parameters, modules_called
from talkgen import spill as spill_files
from talkgen.spill import Spill, Spilled, row_ranges

LINEAR_IN_WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
MIN_SHARE = 0.2  # precompute the first layer when it is at least this share of a forward pass


def parameter_views(model: nn.Module) -> Params:
    """Every distinct parameter of ``model`` by name, detached but not copied: to read, never to write (at the
    size of a large model a copy of the weights is a copy too many)."""
    return {k: p.detach() for k, p in model.named_parameters()}


def _pieces(t: "torch.Tensor | Spilled") -> list[tuple[int, int]]:
    """Row ranges of ``t`` of at most 32 MB each (``spill.row_ranges``)."""
    return row_ranges(t.shape, t.nbytes if isinstance(t, Spilled) else t.numel() * t.element_size())


def _rows(t: "torch.Tensor | Spilled", start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``t``, read back if it is a tensor of a spill file (a 0-d tensor: itself)."""
    if isinstance(t, Spilled):
        return t.rows(start, stop).read()
    return t[start:stop] if t.ndim else t


def cosine(a: Params, b: Params) -> float:
    """The cosine of the angle between two parameter-shaped vectors (tensors, or tensors of a spill file),
    without concatenating either: 32 MB of each at a time, in float64 (never a whole tensor widened or read
    back at once: a vocabulary's embedding)."""
    dot = na = nb = 0.0
    for k in a:
        for start, stop in _pieces(a[k]):
            ca = _rows(a[k], start, stop)
            cb = like(_rows(b[k], start, stop), ca)
            ca, cb = ca.reshape(-1).double(), cb.reshape(-1).double()
            dot += float(ca @ cb)
            na += float(ca @ ca)
            nb += float(cb @ cb)
    return dot / max(math.sqrt(na * nb), 1e-30)


def filter_normalised_direction(params: Params, generator: torch.Generator, spill: Spill | None = None) -> Params:
    """A Gaussian direction with each filter rescaled to the norm of the same filter in ``params``
    (Li et al. 2018). Filters are slices along the first dimension (output units or channels);
    1-D tensors (biases, normalisation scales and shifts) get a zero direction. ``spill``: each tensor of
    the direction goes to this file as soon as it is drawn (the same numbers; one tensor in memory at a time).
    The directions are drawn on the CPU (the same numbers wherever the model computes)."""
    out: Params = {}
    for k, p in params.items():
        if p.ndim <= 1:
            out[k] = torch.zeros(p.shape, dtype=p.dtype)
            continue
        # with a spill file, drawn 32 MB of filters at a time (``spill.row_ranges``: the same draws)
        ranges = [(0, p.shape[0])] if spill is None else _pieces(p)
        parts = (_filter_normalised(p[a:b], generator) for a, b in ranges)
        out[k] = next(parts) if spill is None else spill.put_parts(parts)
    return out


def _filter_normalised(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian draws shaped like the filters ``p`` (rows), each row rescaled to the norm of ``p``'s."""
    d = torch.randn(p.shape, generator=generator, dtype=p.dtype)
    d_norm = d.flatten(1).norm(dim=1)
    p_norm = p.flatten(1).norm(dim=1).cpu()
    scale = torch.where(d_norm > 0, p_norm / d_norm.clamp_min(1e-30), torch.zeros_like(d_norm))
    return d.mul_(scale.view(-1, *([1] * (p.ndim - 1))))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


class PlaneEvaluator:
    """Loss and accuracy at ``centre + sum_i c_i * directions[i]`` on fixed data (x, y).

    Works on a private deep copy of ``model`` (eval mode, no autograd), whose parameters are
    overwritten in place for each point; the caller's model is never touched. ``fast_path`` says
    whether the first layer's output is precomputed (see the module docstring).

    With ``spill`` (a large model), no copy is made: ``centre`` (the model's own weights, as tensors or as
    tensors of the spill file) and the directions (tensors, or tensors of the spill file, read back one at a
    time) move the model itself, and :meth:`close` (or leaving a ``with`` block) puts the centre back, bit
    for bit, with the modules' train/eval modes. The process then holds the weights once, and one tensor
    of each direction at a time.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, centre: Params,
                 directions: Sequence[Params], *, linear_first_layer: bool | None = None,
                 channels_last: bool = True, each: Callable[[], None] | None = None,
                 spill: Spill | None = None) -> None:
        self.each = each  # called after every point evaluated (progress)
        self.spill = spill
        self._modes: dict[nn.Module, bool] = {}
        self._overridden: nn.Module | None = None
        self._buffers: dict[torch.dtype, torch.Tensor] = {}
        if spill is None:
            self.model = copy.deepcopy(model).eval()
            self.model.requires_grad_(False)
        else:
            self.model = model
            self._modes = {m: m.training for m in model.modules()}
            model.eval()
        self.channels_last = spill is None and channels_last and x.ndim == 4 and any(
            isinstance(m, nn.Conv2d) for m in self.model.modules())
        if self.channels_last:  # oneDNN's convolutions are several times faster on NHWC tensors
            self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        live = dict(self.model.named_parameters())
        self.names = list(centre)
        self.live = [live[k].detach() for k in self.names]  # written under no_grad, through views
        if spill is None:
            self.centre: list[torch.Tensor | Spilled] = [
                centre[k].to(self.live[i].device, self.live[i].dtype) for i, k in enumerate(self.names)]
        else:
            self.centre = [centre[k] for k in self.names]
            for i, c in enumerate(self.centre):  # the centre is what close() puts back: it must be the model's own
                same = (c.data_ptr() == self.live[i].data_ptr() if isinstance(c, torch.Tensor)
                        else all(torch.equal(piece, rows) for piece, rows in self._parts(c, self.live[i])))
                if not same:  # nothing was written yet: the modes go back as they were
                    for m, training in self._modes.items():
                        m.train(training)
                    self._modes = {}
                    raise ValueError(f"with a spill file the centre must be the model's own weights ({self.names[i]})")
            self.centre = [c if isinstance(c, Spilled) else spill.put(c) for c in self.centre]
        # the directions go where the copy computes; directions in the spill file stay there
        self.dirs = [[d[k] if isinstance(d[k], Spilled) else d[k].to(self.live[i].device, self.live[i].dtype)
                      for i, k in enumerate(self.names)] for d in directions]
        self.x, self.y = x, y
        self.fast_path = ""
        self._terms: list[torch.Tensor] = []
        self._out: torch.Tensor | None = None
        try:
            if linear_first_layer is not False:
                self._try_linear_first_layer(always=linear_first_layer is True)
        except BaseException:
            self.close()
            raise

    def _read(self, t: Spilled) -> torch.Tensor:
        """A spilled tensor (a piece of one: :meth:`_parts`) read into this evaluator's buffer for its type
        (valid until the next read): one buffer of at most a piece's size, or of the largest parameter's."""
        buf = self._buffers.get(t.dtype)
        n = math.prod(t.shape)
        if buf is None or buf.numel() < n:
            largest = max((math.prod(p.shape) for p in self.live), default=n)
            piece = spill_files.PIECE_BYTES // max(1, t.nbytes // max(1, n))
            buf = self._buffers[t.dtype] = torch.empty(max(n, min(largest, piece)), dtype=t.dtype)
        return t.read_into(buf[:n].view(t.shape))

    def _parts(self, t: torch.Tensor | Spilled, p: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(a piece of ``t``, the same rows of ``p``) for the whole of ``t``: a tensor as it is, a spilled one
        read back 32 MB at a time into the buffer (a vocabulary's embedding is never read back whole)."""
        if not isinstance(t, Spilled):
            yield t, p
            return
        for start, stop, piece in t.pieces():
            rows = p[start:stop] if t.ndim else p
            yield like(self._read(piece), rows), rows

    def _put(self, c: torch.Tensor | Spilled, p: torch.Tensor) -> None:
        """``c`` (a point of the centre) written into the parameter ``p``: a spilled tensor straight into a
        contiguous CPU parameter, else piece by piece."""
        if isinstance(c, Spilled) and p.device.type == "cpu" and p.is_contiguous():
            c.read_into(p)
        else:
            for piece, rows in self._parts(c, p):
                rows.copy_(piece)

    def close(self) -> None:
        """With a spill file: the model's own weights, modes and forward put back (a no-op otherwise, and
        the second time)."""
        if self.spill is None or not self._modes:
            return
        with torch.no_grad():
            for p, c in zip(self.live, self.centre):
                if isinstance(c, Spilled):
                    self._put(c, p)
        if self._overridden is not None:
            self._overridden.__dict__.pop("forward", None)
            self._overridden = None
        for m, training in self._modes.items():
            m.train(training)
        self._modes = {}
        self._terms, self._out, self._buffers = [], None, {}

    def __enter__(self) -> "PlaneEvaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- moving the copy -------------------------------------------------------------------------
    def _move(self, coeffs: Sequence[float]) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.live):
                self._put(self.centre[i], p)
                for coef, d in zip(coeffs, self.dirs):
                    if coef:
                        for piece, rows in self._parts(d[i], p):
                            rows.add_(piece, alpha=float(coef))

    # -- the first layer, once ---------------------------------------------------------------------
    def _first_call(self) -> tuple[str, nn.Module, tuple, int] | None:
        """(name, module, positional inputs, number of calls) of the first module with parameters of
        its own that runs in a forward pass."""
        calls = modules_called(self.model, self.x, has_own_parameters)
        if not calls:
            return None
        name, mod, args = calls[0]
        return name, mod, args, sum(1 for c in calls if c[1] is mod)

    def _first_layer_share(self, mod: nn.Module) -> float:
        """The first layer's share of one forward pass's FLOPs."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            self.model(self.x)
        total = counter.get_total_flops()
        name = next(k for k, m in self.model.named_modules() if m is mod)
        own = counter.get_flop_counts().get(f"{type(self.model).__name__}.{name}", {})
        return sum(own.values()) / total if total else 0.0

    def _try_linear_first_layer(self, always: bool) -> None:
        """Precompute the first layer when it is linear in its weights and reads the raw input; by
        default only when it is at least MIN_SHARE of the forward FLOPs (below that, adding its
        three stored outputs costs about as much memory traffic as recomputing it)."""
        self._move([0.0] * len(self.dirs))
        first = self._first_call()
        if first is None:
            return
        name, mod, args, n_calls = first
        own = dict(mod.named_parameters(recurse=False))
        if (not isinstance(mod, LINEAR_IN_WEIGHTS) or n_calls != 1 or len(args) != 1
                or not isinstance(args[0], torch.Tensor) or set(own) - {"weight", "bias"}
                or (isinstance(mod, nn.Embedding) and mod.max_norm is not None)):
            return
        # The layer's input must not depend on the parameters: check it at another point.
        self._move([1.0] * len(self.dirs))
        moved = self._first_call()
        self._move([0.0] * len(self.dirs))
        if moved is None or moved[1] is not mod or not torch.equal(moved[2][0], args[0]):
            return
        if not always and self._first_layer_share(mod) < MIN_SHARE:
            return
        inp = args[0]
        index = {p.data_ptr(): i for i, p in enumerate(self.live)}

        def direction_of(p: torch.Tensor | None, d: list[torch.Tensor | Spilled]) -> torch.Tensor | None:
            if p is None:
                return None
            t = d[index[p.data_ptr()]]
            return (like(t.read(), p) if isinstance(t, Spilled) else t).to(p.dtype)

        def apply(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            if isinstance(mod, nn.Linear):
                return nn.functional.linear(inp, weight, bias)
            if isinstance(mod, nn.Embedding):
                return nn.functional.embedding(inp, weight, mod.padding_idx, None, mod.norm_type,
                                               mod.scale_grad_by_freq, mod.sparse)
            return mod._conv_forward(inp, weight, bias)

        with torch.no_grad():
            terms = [apply(mod.weight, getattr(mod, "bias", None))]
            for d in self.dirs:
                terms.append(apply(direction_of(mod.weight, d), direction_of(getattr(mod, "bias", None), d)))
        self._terms = terms
        self._out = torch.empty_like(terms[0])
        out = self._out
        mod.forward = lambda *a, **k: out  # the private copy only, or undone by close()
        self._overridden = mod
        self.fast_path = name

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, coeffs: Sequence[float]) -> tuple[float, float]:
        """(mean cross-entropy in nats, accuracy) at the point ``coeffs``."""
        self._move(coeffs)
        with torch.no_grad():
            if self._out is not None:
                torch.add(self._terms[0], self._terms[1], alpha=float(coeffs[0]), out=self._out)
                for c, t in zip(coeffs[1:], self._terms[2:]):
                    self._out.add_(t, alpha=float(c))
            logits = self.model(self.x)
            out = float(cross_entropy(logits, self.y)), _accuracy(logits, self.y)
        if self.each is not None:
            self.each()
        return out

    def grid(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy at every (a[j], b[i]), as (len(b), len(a)) arrays; each point once."""
        loss = np.empty((len(b), len(a)))
        acc = np.empty_like(loss)
        for j, aj in enumerate(a):
            for i, bi in enumerate(b):
                loss[i, j], acc[i, j] = self.evaluate((aj, bi))
        return loss, acc


def basin_radii(loss: np.ndarray, coords: np.ndarray, delta: float, rays: int = 32) -> np.ndarray:
    """For ``rays`` directions from the centre of the grid, the radius where the (bilinearly
    interpolated) loss first exceeds its centre value + ``delta``; ``coords[-1]`` when it never does."""
    from scipy.interpolate import RegularGridInterpolator

    interp = RegularGridInterpolator((coords, coords), loss)  # loss[i, j] at (b=coords[i], a=coords[j])
    centre = float(interp([[0.0, 0.0]])[0])
    span = float(coords[-1])
    r = np.linspace(0.0, span, 201)
    out = np.empty(rays)
    for k, theta in enumerate(np.linspace(0, 2 * np.pi, rays, endpoint=False)):
        pts = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
        above = np.nonzero(interp(pts) > centre + delta)[0]
        out[k] = r[above[0]] if above.size else span
    return out


@register
class LossLandscape(Analysis):
    param_bounds = {"grid": (3, None), "line_points": (3, None), "span": (1e-6, None), "basin_delta": (1e-6, None)}
    name = "loss-landscape"
    order = 70
    runs_on_twins = ("width",)  # the costs analysis times it at several widths
    title = "The loss landscape"
    section = "looking-in"
    version = 5  # 2: the highest loss on the path from init to trained is a summary; 3: captions without nested
    # parentheses; 4: the line's points from the trained weights (the same points, other rounding); 5: a large
    # model's copies on disk (the same numbers), said in the table
    cost_hint = 2
    applies_text = "models trained with a cross-entropy loss (classifiers and sequence models)"
    # batch: examples for classifiers; sequence models use batch // 128 sequences of seq_len steps
    params = {"grid": 51, "span": 1.0, "line_points": 31, "batch": 1024, "seq_len": 256, "basin_delta": 0.1}
    quick = {"grid": 17, "batch": 256, "seq_len": 64}

    def applies_to(self, subject) -> bool | str:
        return loss_problem(subject) or True

    # every point of the line (training and held-out data) and of the plane is a loss on one batch
    sample_order = (("batch", 32), ("grid", 7), ("line_points", 11))

    def passes(self, subject, params) -> float:
        points = 2 * params["line_points"] + params["grid"] ** 2 + 1
        return points * loss_batch_size(subject, params["batch"], params["seq_len"])

    def copies(self, subject, params) -> float:
        # the plane's two directions and the evaluator's moving copy of the model (the line: one direction); a
        # large model's copies go to a spill file on disk, and only the line's initial weights are made whole
        return 1 if budget.large(subject) else 3

    def run(self, ctx: Context) -> Result:
        total, done = 2 * ctx.params["line_points"] + ctx.params["grid"] ** 2 + 1, [0]

        def tick() -> None:
            done[0] += 1
            ctx.progress(done[0], total, "loss evaluations")

        if not budget.large(ctx.subject):
            m = self._line(ctx, tick)
            self._plane(m, ctx, tick)
            return self._present(m, ctx)
        with Spill(ctx.store) as spill:  # a large model is moved in place: its copies wait on disk
            m = self._line(ctx, tick, spill)
            self._plane(m, ctx, tick, spill)
        return self._present(m, ctx)

    @staticmethod
    def _line(ctx: Context, tick: Callable[[], None] | None = None, spill: Spill | None = None) -> SimpleNamespace:
        """The loss on the straight path from the initial to the trained weights, on training and held-out data."""
        s, p = ctx.subject, ctx.params
        seq = not s.task.endswith("classifier")
        n = batch_count(s, p["batch"])
        x, y = loss_batch(s, n, ctx.seed, p["seq_len"])
        xt, yt = s.data.x_test, s.data.y_test
        g = torch.Generator().manual_seed(ctx.seed + 7)
        idx = torch.randperm(len(xt), generator=g)[: min(n, len(xt))]
        xt, yt = xt[idx], yt[idx]
        if seq and xt.ndim == 2:
            xt, yt = xt[:, : p["seq_len"]], yt[:, : p["seq_len"]]
        trained = parameter_views(s.model)  # read only: the evaluators move copies of their own
        if spill is None:
            init_state, init_source = initial_state(s, ctx.seed)
            init_state = dict(init_state)  # ours to empty (the tensors stay wherever the source keeps them too)
            # theta* - theta0, one tensor at a time, each initial tensor let go as soon as it is used: with the
            # model and an evaluator's moving copy, the line holds the weights three times over, no more
            toward: Params = {}
            for k, v in trained.items():
                toward[k] = v - init_state.pop(k).to(v.device, v.dtype)
            del init_state
            centre: Params = trained
        else:  # a large model: the trained weights to disk, then the initial ones made in the model itself
            centre = {k: spill.put(v) for k, v in trained.items()}
            toward = {}
            with initialised_in_place(s, ctx.seed, ctx.store) as (init_model, init_source):
                init = parameter_views(init_model)
                for k, c in centre.items():  # theta* - theta0 to disk 32 MB at a time (the same numbers)
                    v = init[k]
                    toward[k] = spill.put_parts(
                        _rows(c, a, b).to(v.device) - (v[a:b] if v.ndim else v) for a, b in _pieces(c))
        # from initialisation (a = 0) to the trained weights (a = 1), train and test data; the point
        # (1 - a) theta0 + a theta* is theta* + (a - 1) (theta* - theta0)
        alphas = np.linspace(-0.25, 1.25, p["line_points"])
        lines = {}
        for split, (xs, ys) in {"train": (x, y), "test": (xt, yt)}.items():
            with PlaneEvaluator(s.model, xs, ys, centre, [toward], each=tick, spill=spill) as ev:
                vals = [ev.evaluate((float(a) - 1.0,)) for a in alphas]
            lines[split] = (np.array([v[0] for v in vals]), np.array([v[1] for v in vals]))
            del ev  # one moving copy at a time
        del toward
        on_path = (alphas >= 0) & (alphas <= 1)
        a_path, l_path = alphas[on_path], lines["train"][0][on_path]
        chord = l_path[0] + (l_path[-1] - l_path[0]) * a_path
        return SimpleNamespace(s=s, p=p, seq=seq, x=x, y=y, g=g, trained=trained, centre=centre,
                               init_source=init_source, alphas=alphas, lines=lines,
                               barrier=float(np.max(l_path - chord)),
                               monotonic=bool(np.all(np.diff(l_path) <= 1e-4 * max(1.0, abs(l_path[0])))))

    @staticmethod
    def _plane(m: SimpleNamespace, ctx: Context, tick: Callable[[], None] | None = None,
               spill: Spill | None = None) -> None:
        """The loss on the plane of two random filter-normalised directions through the trained weights."""
        p = m.p
        d1 = filter_normalised_direction(m.trained, m.g, spill=spill)
        d2 = filter_normalised_direction(m.trained, m.g, spill=spill)
        m.spilled = spill is not None
        with PlaneEvaluator(m.s.model, m.x, m.y, m.centre, [d1, d2], each=tick, spill=spill) as m.ev:
            coords = np.linspace(-p["span"], p["span"], p["grid"])
            m.coords = coords
            m.loss, m.acc = m.ev.grid(coords, coords)
            m.centre_loss, m.centre_acc = m.ev.evaluate((0.0, 0.0))
        m.cosine = cosine(d1, d2)
        m.finite = np.isfinite(m.loss)
        m.radii = basin_radii(np.nan_to_num(m.loss, nan=1e30, posinf=1e30), coords, p["basin_delta"])
        m.censored = int((m.radii >= coords[-1]).sum())
        half = np.argmin(np.abs(coords - coords[-1] / 2))
        mid = len(coords) // 2
        m.rise_half = float(np.mean([m.loss[mid, half], m.loss[mid, len(coords) - 1 - half],
                                     m.loss[half, mid], m.loss[len(coords) - 1 - half, mid]]) - m.centre_loss)

    def _present(self, m: SimpleNamespace, ctx: Context) -> Result:
        s, p, x, alphas, lines, coords, radii = m.s, m.p, m.x, m.alphas, m.lines, m.coords, m.radii
        summaries = {
            "basin_radius": Scalar(float(radii.mean()), "filter-normalised units",
                                   f"mean radius at which the loss rises {p['basin_delta']} nats above the minimum "
                                   f"(32 rays; larger is flatter)"),
            "loss_rise_at_half_span": Scalar(m.rise_half, "nats",
                                             f"mean loss rise {coords[-1] / 2:g} units from the minimum along the axes"),
            "loss_at_minimum": Scalar(m.centre_loss, "nats", "training loss at the trained weights (centre of the plane)"),
            "accuracy_at_minimum": Scalar(m.centre_acc, "fraction", "accuracy on the same batch at the trained weights"),
            "grid_points_below_minimum": Scalar(float((m.loss < m.centre_loss - 1e-6).mean()), "fraction",
                                                "share of the plane with lower loss than the trained weights"),
            "line_init_loss": Scalar(float(lines["train"][0][np.argmin(np.abs(alphas))]), "nats",
                                     "training loss at the initial weights"),
            "line_chord_gap": Scalar(m.barrier, "nats",
                                   "largest rise of the loss above the straight chord from init to trained "
                                   "(positive: the loss stays high early on the path and falls late)"),
            "line_max_loss": Scalar(float(lines["train"][0][(alphas >= 0) & (alphas <= 1)].max()), "nats",
                                    "highest training loss on the straight path from init (0) to trained (1)"),
            "line_monotonic": Scalar(float(m.monotonic), "bool",
                                     "1 if the training loss never rises on the straight path from init to trained"),
        }
        arrays = {
            "alpha": alphas, "line_train_loss": lines["train"][0], "line_test_loss": lines["test"][0],
            "line_train_acc": lines["train"][1], "line_test_acc": lines["test"][1],
            "coords": coords, "plane_loss": m.loss, "plane_acc": m.acc, "basin_radii": radii,
        }
        n_params = sum(t.numel() for t in m.trained.values())
        what = "sequences" if m.seq else "examples"
        size = f"{len(x)} {what}" + (f" of {x.shape[1]} steps" if m.seq and x.ndim == 2 else "")
        figures = (
            Curves(id="line", title="From initialisation to the trained weights",
                   caption=f"Loss and accuracy along the straight line (1 - a)·θ0 + a·θ*: a = 0 is the "
                           f"initialisation ({m.init_source}), a = 1 the trained weights; {size}.",
                   alt="Two panels: loss and accuracy, on training and held-out data, against the "
                       "interpolation coefficient a.",
                   x=("alpha",) * 4, y=("line_train_loss", "line_test_loss", "line_train_acc", "line_test_acc"),
                   labels=("train", "held out", "train", "held out"), panels=(0, 0, 1, 1),
                   panel_titles=("loss", "accuracy"), panel_ylabels=("cross-entropy (nats)", "accuracy"),
                   xlabel="a (0 = initialisation, 1 = trained)", ylabel="", markers=True),
            Surface(id="plane", title="The loss around the trained weights",
                    caption=f"Training loss on the plane θ* + a·d1 + b·d2 through the trained weights, two "
                            f"random filter-normalised directions (bias and normalisation directions zero), "
                            f"{p['grid']}×{p['grid']} grid, {size}; contours (left) and surface (right).",
                    alt="Filled contour plot and 3-D surface of the training loss over a plane of two "
                        "random directions, with the trained weights at the centre.",
                    x="coords", y="coords", z="plane_loss", xlabel="a (direction 1)", ylabel="b (direction 2)",
                    zlabel="loss (nats)", mark=(0.0, 0.0), mark_label="trained weights"),
        )
        rows = (("initial loss (train)", f"{summaries['line_init_loss'].value:.4g} nats"),
                ("trained loss (train)", f"{m.centre_loss:.4g} nats"),
                ("monotonic on the path", "yes" if m.monotonic else "no"),
                ("largest gap above the chord", f"{m.barrier:.3g} nats"),
                ("basin radius", f"{radii.mean():.3g} ± {radii.std(ddof=1) / math.sqrt(len(radii)):.2g} "
                                 f"({m.censored}/{len(radii)} rays stay in the basin)"),
                ("loss rise at half span", f"{m.rise_half:.4g} nats"),
                ("grid", f"{p['grid']}×{p['grid']} over ±{p['span']:g}"),
                ("first layer precomputed", m.ev.fast_path or "no"),
                ("copies of the weights", "on disk, read back per point (a large model)" if m.spilled
                 else "in memory"),
                ("parameters", f"{n_params:,}"))
        return Result(
            analysis=self.name, subject=s.name, arrays=arrays, summaries=summaries, figures=figures,
            tables=(Table(id="landscape", title="Loss landscape", columns=("quantity", "value"), rows=rows),),
            data={"init_source": m.init_source, "batch": size, "grid": p["grid"], "span": p["span"],
                  "delta": p["basin_delta"], "censored_rays": m.censored, "rays": len(radii),
                  "direction_cosine": m.cosine, "fast_path": m.ev.fast_path, "monotonic": m.monotonic,
                  "points": p["grid"] ** 2 + 2 * p["line_points"], "n_params": n_params,
                  "nonfinite_points": int((~m.finite).sum()),
                  "test_loss_trained": float(lines["test"][0][np.argmin(np.abs(alphas - 1))]),
                  "spilled": m.spilled})
