"""Loss landscape: filter normalisation, the plane evaluator against a plain functional loss (with
and without the precomputed first layer), grid orientation, basin radius on a known bowl, the line's
end points, and the Surface figure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from talkgen import spill as spill_files
from talkgen.analyses.base import Context, Result, get_analysis
from talkgen.analyses.landscape import (PlaneEvaluator, basin_radii, parameter_views,
                                        filter_normalised_direction)
from talkgen.analyses.loss import loss_batch, make_loss
from talkgen.specs import Surface
from talkgen.render.figures import draw, to_png


class ScaledInput(nn.Module):
    """Another module's parameter touches the input before the first layer that runs: that
    layer's input depends on the weights, so its output cannot be precomputed."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Linear(3, 3)  # never called; its bias is used directly
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x * self.gain.bias)


class Shared(nn.Module):
    """The first layer runs twice: its output is not one linear image of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.out = nn.Linear(3, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.rnn = nn.GRU(5, 6, batch_first=True)
        self.head = nn.Linear(6, 7)

    def forward(self, t):
        return self.head(self.rnn(self.embed(t))[0])


def _conv():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 4))


CASES = {
    "conv (reflect padding)": (_conv, lambda g: torch.randn(16, 2, 5, 5, generator=g),
                               lambda g: torch.randint(0, 4, (16,), generator=g), "0"),
    "embedding + GRU": (TinyLM, lambda g: torch.randint(0, 7, (3, 9), generator=g),
                        lambda g: torch.randint(0, 7, (3, 9), generator=g), "embed"),
    "parameter before the first layer": (ScaledInput, lambda g: torch.randn(16, 3, generator=g),
                                         lambda g: torch.randint(0, 4, (16,), generator=g), ""),
    "first layer used twice": (Shared, lambda g: torch.randn(16, 3, generator=g),
                               lambda g: torch.randint(0, 4, (16,), generator=g), ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plane_evaluator_equals_the_plain_loss(case):
    make, mx, my, fast = CASES[case]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = make().eval()
    x, y = mx(g), my(g)
    centre = parameter_views(model)
    d1 = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in centre.items()}  # biases move too
    d2 = filter_normalised_direction(centre, g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ev = PlaneEvaluator(model, x, y, centre, [d1, d2], linear_first_layer=True)
    assert ev.fast_path == fast
    loss = make_loss(model, x, y)
    for a, b in [(0.0, 0.0), (0.7, -0.3), (-1.0, 1.0), (0.25, 0.0)]:
        point = {k: centre[k] + a * d1[k] + b * d2[k] for k in centre}
        with torch.no_grad():
            expected = float(loss(point))
        got, acc = ev.evaluate((a, b))
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (case, a, b)
        assert 0.0 <= acc <= 1.0
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])
    assert PlaneEvaluator(model, x, y, centre, [d1, d2], linear_first_layer=False).fast_path == ""


def test_the_first_layer_is_precomputed_by_default_only_where_it_is_a_large_share_of_the_work():
    torch.manual_seed(0)
    wide_first = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 3))
    narrow_first = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
    for model, n_in, expected in ((wide_first, 256, "0"), (narrow_first, 4, "")):
        x, y = torch.randn(8, n_in), torch.randint(0, 3, (8,))
        centre = parameter_views(model)
        d = filter_normalised_direction(centre, torch.Generator().manual_seed(0))
        assert PlaneEvaluator(model, x, y, centre, [d, d]).fast_path == expected


def test_filter_normalisation_matches_each_filter_and_zeroes_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 5))
    params = parameter_views(model)
    d = filter_normalised_direction(params, torch.Generator().manual_seed(0))
    for k, p in params.items():
        if p.ndim == 1:  # conv and linear biases, batch-norm scale and shift
            assert torch.count_nonzero(d[k]) == 0, k
        else:
            np.testing.assert_allclose(d[k].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-5)
            assert not torch.allclose(d[k], p)
    again = filter_normalised_direction(params, torch.Generator().manual_seed(0))
    assert all(torch.equal(d[k], again[k]) for k in d)


def test_grid_rows_are_direction_two_and_columns_direction_one():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    centre = parameter_views(model)
    d1 = {k: torch.randn(v.shape) for k, v in centre.items()}
    d2 = {k: torch.randn(v.shape) for k, v in centre.items()}
    ev = PlaneEvaluator(model, x, y, centre, [d1, d2])
    a, b = np.array([-1.0, 0.0, 2.0]), np.array([-0.5, 0.5])
    loss, acc = ev.grid(a, b)
    assert loss.shape == (2, 3)
    assert loss[1, 2] == pytest.approx(ev.evaluate((2.0, 0.5))[0])
    assert loss[0, 0] == pytest.approx(ev.evaluate((-1.0, -0.5))[0])


def test_basin_radius_of_a_round_bowl():
    coords = np.linspace(-1, 1, 101)
    bb, aa = np.meshgrid(coords, coords, indexing="ij")
    bowl = 0.3 + aa ** 2 + bb ** 2
    radii = basin_radii(bowl, coords, delta=0.25)
    np.testing.assert_allclose(radii, 0.5, atol=0.01)
    # a flat plane never leaves the basin: every ray is censored at the span
    assert np.all(basin_radii(np.zeros_like(bowl), coords, delta=0.1) == 1.0)


def test_line_runs_from_the_initial_to_the_trained_weights(tiny_subject):
    torch.manual_seed(3)
    init = {k: torch.randn_like(v) for k, v in tiny_subject.model.state_dict().items()}
    subject = dataclasses.replace(tiny_subject, initial_state=lambda: init)
    a = get_analysis("loss-landscape")
    params = a.resolve_params("quick", {"grid": 5, "line_points": 7, "batch": 16})
    r = a.run(Context(subject=subject, params=params, seed=0, device=torch.device("cpu"), profile="quick"))
    alpha = r.arrays["alpha"]
    assert alpha[1] == pytest.approx(0.0) and alpha[5] == pytest.approx(1.0)
    xb, yb = loss_batch(subject, 16, 0)
    model = subject.model
    with torch.no_grad():
        trained = float(make_loss(model, xb, yb)(dict(model.named_parameters())))
        at_init = float(make_loss(model, xb, yb)({k: init[k] for k, _ in model.named_parameters()}))
    assert r.arrays["line_train_loss"][5] == pytest.approx(trained, rel=1e-5)
    assert r.arrays["line_train_loss"][1] == pytest.approx(at_init, rel=1e-5)
    assert r.summaries["loss_at_minimum"].value == pytest.approx(trained, rel=1e-5)
    assert r.arrays["plane_loss"][2, 2] == pytest.approx(trained, rel=1e-5)
    assert "exact initial weights" in r.data["init_source"]


def test_without_a_known_start_the_line_says_it_uses_a_fresh_initialisation(tiny_subject):
    a = get_analysis("loss-landscape")
    params = a.resolve_params("quick", {"grid": 3, "line_points": 4, "batch": 8})
    r = a.run(Context(subject=tiny_subject, params=params, seed=4, device=torch.device("cpu"), profile="quick"))
    assert "fresh default initialisation (seed 4)" in r.data["init_source"]


def test_a_sample_reproduces_the_weights_its_training_started_from():
    from talkgen.models.samples import initial_state, load_checkpoints

    step, first = load_checkpoints("ib-tanh")[0]
    assert step == 0
    init = initial_state("ib-tanh")
    assert all(torch.equal(first[k], init[k]) for k in first)


def test_surface_round_trips_and_draws(tmp_path):
    coords = np.linspace(-1, 1, 9)
    z = 0.1 + np.add.outer(coords ** 2, coords ** 2)
    spec = Surface(id="p", title="t", caption="c", alt="a", x="c", y="c", z="z", xlabel="a", ylabel="b",
                   zlabel="loss", mark=(0.0, 0.0), mark_label="here")
    r = Result(analysis="x", subject="s", arrays={"c": coords, "z": z}, figures=(spec,))
    r.save(str(tmp_path))
    back = Result.load(str(tmp_path))
    assert back.figures[0] == spec
    assert to_png(draw(spec, back.arrays)).startswith(b"\x89PNG")
    bad = z.copy()
    bad[0, 0], bad[1, 1] = np.nan, -1.0  # non-finite and non-positive values: linear levels, still drawn
    assert to_png(draw(spec, {"c": coords, "z": bad})).startswith(b"\x89PNG")


def test_a_large_model_moves_itself_with_its_copies_on_disk_and_gets_the_same_numbers(tiny_subject, monkeypatch):
    """A large model's landscape moves the model itself, keeps the trained weights and the directions in a
    spill file: the same losses as the in-memory copies, the model left as it was, and the budget counts one
    extra copy (the line's initial weights) instead of three."""
    from talkgen.analyses import budget
    from talkgen.hashing import hash_module

    a = get_analysis("loss-landscape")
    params = a.resolve_params("quick", {"grid": 5, "line_points": 5, "batch": 16})
    ctx = Context(subject=tiny_subject, params=params, seed=0, device=torch.device("cpu"), profile="quick")
    before = hash_module(tiny_subject.model)
    in_memory = a.run(ctx)
    assert a.copies(tiny_subject, params) == 3 and not in_memory.data["spilled"]
    monkeypatch.setattr(budget, "LARGE_MODEL_BYTES", 1)  # the tiny model now counts as large
    spilled = a.run(ctx)
    assert a.copies(tiny_subject, params) == 1 and spilled.data["spilled"]
    for k in ("line_train_loss", "line_test_loss", "plane_loss", "plane_acc"):
        np.testing.assert_allclose(spilled.arrays[k], in_memory.arrays[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert spilled.data["direction_cosine"] == pytest.approx(in_memory.data["direction_cosine"], rel=1e-9)
    assert hash_module(tiny_subject.model) == before and not tiny_subject.model.training
    # written, drawn and read back 200 bytes at a time (a vocabulary's embedding, scaled down): the same numbers
    monkeypatch.setattr(spill_files, "PIECE_BYTES", 200)
    pieces = a.run(ctx)
    for k in ("line_train_loss", "line_test_loss", "plane_loss", "plane_acc"):
        np.testing.assert_array_equal(pieces.arrays[k], spilled.arrays[k], err_msg=k)
    assert pieces.data["direction_cosine"] == pytest.approx(spilled.data["direction_cosine"], rel=1e-12)
    assert hash_module(tiny_subject.model) == before


def test_a_spilled_evaluator_puts_the_model_back_even_when_a_point_fails(tiny_subject):
    from talkgen.hashing import hash_module
    from talkgen.spill import Spill

    model = tiny_subject.model
    x, y = tiny_subject.data.x_train[:16], tiny_subject.data.y_train[:16]
    centre = parameter_views(model)
    before = hash_module(model)
    model.train()
    with Spill() as spill:
        d = filter_normalised_direction(centre, torch.Generator().manual_seed(0), spill=spill)
        assert all(type(v).__name__ == "Spilled" for k, v in d.items() if centre[k].ndim > 1)
        ev = PlaneEvaluator(model, x, y, centre, [d], spill=spill, linear_first_layer=True)
        with pytest.raises(RuntimeError, match="boom"):
            with ev:
                ev.evaluate((0.5,))
                assert hash_module(model) != before  # the model itself is moved
                raise RuntimeError("boom")
        assert hash_module(model) == before and model.training  # weights, mode and forward put back
        assert all("forward" not in m.__dict__ for m in model.modules())
        with pytest.raises(ValueError, match="model's own weights"):
            PlaneEvaluator(model, x, y, {k: v + 1 for k, v in centre.items()}, [d], spill=spill)
        assert model.training
    model.eval()


def test_spill_reads_back_what_was_written():
    from talkgen.spill import Spill

    tensors = [torch.randn(3, 5), torch.arange(7, dtype=torch.int64), torch.randn(4, 2).to(torch.bfloat16),
               torch.randn(6, 4).t(), torch.zeros(0)]
    with Spill() as spill:
        handles = [spill.put(t) for t in tensors]
        for t, h in zip(tensors, handles):
            assert torch.equal(h.read(), t) and h.read().dtype == t.dtype
        with pytest.raises(ValueError, match="cannot read"):
            handles[0].read_into(torch.empty(5, 3))


def test_a_tensor_goes_to_disk_and_back_in_pieces_with_the_same_gaussian_draws():
    """``row_ranges`` cuts a tensor's rows into pieces of about a given size whose Gaussian draws, made one piece
    after another, are the draws made at once; ``put_parts`` writes pieces as one tensor, ``rows`` reads some back."""
    import random

    from talkgen.spill import Spill, row_ranges

    rng = random.Random(0)
    for _ in range(200):
        shape = (rng.randint(1, 60),) + tuple(rng.randint(1, 9) for _ in range(rng.randint(0, 2)))
        ranges = row_ranges(shape, 4 * math.prod(shape), rng.randint(1, 400))
        assert ranges[0][0] == 0 and ranges[-1][1] == shape[0]
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))
        whole = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(1)
        assert torch.equal(torch.cat([torch.randn((b - a,) + shape[1:], generator=g) for a, b in ranges]), whole)
    assert row_ranges((100, 8), 3200, 4000) == [(0, 100)] and row_ranges((), 4, 1) == [(0, 1)]
    t = torch.randn(37, 5)
    with Spill() as spill:
        h = spill.put_parts(t[a:b] for a, b in row_ranges(t.shape, 4 * t.numel(), 64))
        assert h.shape == t.shape and torch.equal(h.read(), t)
        assert torch.equal(h.rows(10, 20).read(), t[10:20]) and torch.equal(h.rows(30, 99).read(), t[30:])
        assert torch.equal(torch.cat([p.read() for _, _, p in h.pieces(100)]), t)
        with pytest.raises(ValueError, match="does not continue"):
            spill.put_parts([torch.zeros(2, 3), torch.zeros(2, 4)])
        # written back into a tensor of another layout a piece at a time, or straight into a contiguous one
        target = torch.zeros(5, 37).t()
        h.copy_to(target)
        assert torch.equal(target, t) and not target.is_contiguous()
        scalar = spill.put(torch.tensor(2.5))
        assert scalar.rows(0, 1) is scalar and [p for _, _, p in scalar.pieces()] == [scalar]
        into = torch.zeros(())
        scalar.copy_to(into)
        assert float(into) == 2.5
