"""The 51x51 loss plane on digits-cnn: talkgen against the ``loss-landscapes`` package.

Both evaluate the training loss of the sample at 51 x 51 points of a plane of two random,
filter-normalised directions through the trained weights, on the same 1024 training digits,
with the same thread count, side by side in this run. Prints seconds, the ratio, the achieved
GFLOP/s of each (forward FLOPs counted by torch's FlopCounterMode, times the points) and the
machine's measured float32 matmul peak. Two variants show what each choice buys: the first
layer forced to be precomputed (it is linear in its weights; by default talkgen does this only
where the first layer is at least 20% of a forward pass, and digits-cnn's conv1 is 2.7%), and
the channels-last memory format for convolutions switched off.

    pip install loss-landscapes==3.0.6   # the peer; a benchmark-only dependency
    python benchmarks/landscape.py [--steps 51] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from talkgen.analyses.landscape import PlaneEvaluator, filter_normalised_direction, parameter_views
from talkgen.analyses.loss import loss_batch
from talkgen.models.samples import load_sample


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(FLOPs of one forward pass, FLOPs of its first layer)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    per_module = counter.get_flop_counts()
    first = next(name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False)))
    first_flops = sum(per_module.get(f"{type(model).__name__}.{first}", {}).values())
    return counter.get_total_flops(), first_flops


def talkgen_plane(model, x, y, steps: int, **switches) -> tuple[float, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    centre = {k: v.clone() for k, v in parameter_views(model).items()}
    d1, d2 = filter_normalised_direction(centre, g), filter_normalised_direction(centre, g)
    t = time.perf_counter()
    ev = PlaneEvaluator(model, x, y, centre, [d1, d2], **switches)
    coords = np.linspace(-1.0, 1.0, steps)
    loss, _ = ev.grid(coords, coords)
    return time.perf_counter() - t, loss


def peer_plane(model, x, y, steps: int) -> tuple[float, np.ndarray]:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(torch.nn.functional.cross_entropy, x, y)
    torch.manual_seed(0)
    t = time.perf_counter()
    loss = loss_landscapes.random_plane(model, metric, distance=1.0, steps=steps, normalization="filter",
                                        deepcopy_model=True)
    return time.perf_counter() - t, np.asarray(loss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=51)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    try:
        import loss_landscapes  # noqa: F401
    except ImportError:
        raise SystemExit("the peer is missing: pip install loss-landscapes==3.0.6")

    s = load_sample("digits-cnn")
    model = copy.deepcopy(s.model).eval()
    x, y = loss_batch(s, 1024, 0)
    points = args.steps ** 2
    total, first = forward_flops(model, x)
    peak = matmul_peak_gflops()
    print(f"threads {torch.get_num_threads()}; {points} points x {len(x)} digits; one forward "
          f"{total / 1e6:.0f} MFLOP (first layer {first / 1e6:.1f}); matmul peak {peak:.0f} GFLOP/s")

    runs = {"loss-landscapes random_plane": lambda: peer_plane(model, x, y, args.steps),
            "talkgen": lambda: talkgen_plane(model, x, y, args.steps),
            "talkgen, first layer precomputed": lambda: talkgen_plane(model, x, y, args.steps,
                                                                      linear_first_layer=True),
            "talkgen, no channels-last": lambda: talkgen_plane(model, x, y, args.steps, channels_last=False)}
    best: dict[str, float] = {k: float("inf") for k in runs}
    grids: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved, best of the repeats
        for name, fn in runs.items():
            seconds, grid = fn()
            best[name] = min(best[name], seconds)
            grids[name] = grid
    peer = best["loss-landscapes random_plane"]
    for name, seconds in best.items():
        flops = points * (total - (first if name == "talkgen, first layer precomputed" else 0))
        print(f"{name:38s} {seconds:7.2f} s  {flops / seconds / 1e9:6.1f} GFLOP/s "
              f"({flops / seconds / 1e9 / peak:5.1%} of peak)  speed-up vs peer {peer / seconds:5.2f}x")
    ok = best["talkgen"] <= peer
    print(f"target: talkgen at least as fast as loss-landscapes: {'met' if ok else 'NOT met'} "
          f"(ratio {peer / best['talkgen']:.2f})")
    a, b = grids["talkgen, first layer precomputed"], grids["talkgen"]
    print(f"precomputed vs plain first layer: max |loss difference| {np.abs(a - b).max():.2e} nats")


if __name__ == "__main__":
    main()
