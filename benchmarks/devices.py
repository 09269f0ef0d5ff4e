"""CPU against each GPU present: attribution, the zoo's training and the loss plane, timed side by side.

The same work on every device (torch sees: ``talkgen.devices.present()``), the CPU first as the baseline:

- attribution: Integrated Gradients (50 Gauss-Legendre steps, zero baseline) of the digits-cnn sample on
  512 test digits, through the device boundary every analysis uses;
- zoo: one chunk of 32 digits-cnn members trained together for 200 steps (``talkgen.meta.zoo.Trainer``);
- landscape: the loss on a 31 x 31 plane of two filter-normalised directions through the sample's weights,
  on 1024 training digits (``PlaneEvaluator``).

Prints seconds per device, the ratio to the CPU, and the largest difference of each device's result from the
CPU's (attributions relative to their largest magnitude, zoo weights absolute, plane losses absolute). On a
machine without a GPU it says so and times the CPU alone.

``--compare A B`` instead reads two builds' summary.json (e.g. ``talkgen build --device cpu --out A`` and
``--device cuda --out B``) and prints, per analysis, the largest relative difference of its numeric summaries
(clocks left out, and the costs analysis, whose numbers all come from clocks), and the largest of all.

    python benchmarks/devices.py [--threads 2]
    python benchmarks/devices.py --compare build-cpu build-cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from talkgen import attribution as A
from talkgen import devices
from talkgen.analyses.landscape import PlaneEvaluator, filter_normalised_direction, parameter_views
from talkgen.analyses.loss import loss_batch
from talkgen.meta.zoo import Trainer, ZooSpec, chunk_members, hash_seed, zoo_source
from talkgen.models.samples import load_sample


def timed(device: str, work):
    devices.sync(device)
    t = time.perf_counter()
    out = work()
    devices.sync(device)
    return time.perf_counter() - t, out


def attribution(device: str) -> tuple[float, np.ndarray]:
    s = load_sample("digits-cnn")
    x = s.data.x_test[:512]
    with devices.placed(s.model, device):
        A.integrated_gradients(s.model, x[:8], n_steps=4)  # warm-up: kernels and allocator
        sec, attr = timed(device, lambda: A.integrated_gradients(s.model, x, n_steps=50, internal_batch_size=4096))
    return sec, attr.detach().cpu().numpy()


def zoo(device: str) -> tuple[float, np.ndarray]:
    spec = ZooSpec(n=32, chunk=32, steps=(200, 200))
    source = zoo_source(spec.subject)
    members = chunk_members(spec, source)[0]
    trainer = Trainer(source, members, spec.batch_size, device)
    st = trainer.initial()

    def train():
        for step in range(200):
            trainer.step(st, torch.Generator().manual_seed(hash_seed(spec.seed, 0, step)))
        return st

    sec, _ = timed(device, train)
    return sec, torch.cat([v.detach().cpu().reshape(-1) for v in st.params.values()]).numpy()


def landscape(device: str) -> tuple[float, np.ndarray]:
    s = load_sample("digits-cnn")
    x, y = loss_batch(s, 1024, 0)
    with devices.placed(s.model, device):
        centre = parameter_views(s.model)
        g = torch.Generator().manual_seed(0)
        d1, d2 = filter_normalised_direction(centre, g), filter_normalised_direction(centre, g)
        ev = PlaneEvaluator(s.model, x, y, centre, [d1, d2])
        coords = np.linspace(-1.0, 1.0, 31)
        sec, (loss, _) = timed(device, lambda: ev.grid(coords, coords))
    return sec, loss


BENCHES = {"attribution": (attribution, "relative"), "zoo": (zoo, "absolute"), "landscape": (landscape, "absolute")}


def run(threads: int) -> None:
    torch.set_num_threads(threads)
    present = devices.present()
    gpus = [d for d in present if d != "cpu"]
    print(f"torch {torch.__version__}; devices: {', '.join(present)}; CPU threads {threads}")
    for d in gpus:
        name = torch.cuda.get_device_name(0) if d == "cuda" else d
        print(f"  {d}: {name}")
    if not gpus:
        print("no GPU present: the CPU alone is timed (nothing to compare)")
    worst = 0.0
    for bench, (fn, how) in BENCHES.items():
        base_s, base = fn("cpu")
        line = f"{bench:12s} cpu {base_s:8.3f} s"
        for d in gpus:
            sec, out = fn(d)
            diff = float(np.nanmax(np.abs(out - base)))
            if how == "relative":
                diff /= max(float(np.nanmax(np.abs(base))), 1e-30)
            worst = max(worst, diff)
            line += f" | {d} {sec:8.3f} s, {base_s / sec:6.1f}x the CPU, largest difference {diff:.2e} ({how})"
        print(line)
    if gpus:
        print(f"largest difference from the CPU over all benchmarks: {worst:.2e}")


def _numbers(path: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    out: dict[str, dict[str, float]] = {}
    for subject, entry in summary.get("subjects", {}).items():
        for analysis, res in entry.get("analyses", {}).items():
            if analysis == "costs":
                continue  # every number of it is a clock or derived from one
            for key, s in (res.get("summaries") or {}).items():
                if s.get("unit") == "s" or not isinstance(s.get("value"), (int, float)):
                    continue  # clocks differ by design
                out.setdefault(f"{subject}/{analysis}", {})[key] = float(s["value"])
    return out


def compare(a: Path, b: Path) -> int:
    left, right = _numbers(a), _numbers(b)
    common = sorted(set(left) & set(right))
    if not common:
        print(f"no analysis in common between {a} and {b}")
        return 1
    worst = (0.0, "")
    for item in common:
        diffs = []
        for key in set(left[item]) & set(right[item]):
            x, y = left[item][key], right[item][key]
            if math.isnan(x) and math.isnan(y):
                continue
            diffs.append((abs(x - y) / max(abs(x), abs(y), 1e-6), key, x, y))
        if not diffs:
            continue
        d, key, x, y = max(diffs)
        print(f"{item:48s} {d:9.2e}  ({key}: {x:.6g} vs {y:.6g})")
        worst = max(worst, (d, f"{item}: {key}"))
    only = sorted(set(left) ^ set(right))
    if only:
        print(f"in one build only: {', '.join(only[:8])}{' ...' if len(only) > 8 else ''}")
    print(f"largest relative difference of a summary: {worst[0]:.2e} ({worst[1]})")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BUILD_A", "BUILD_B"))
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    run(args.threads)


if __name__ == "__main__":
    main()
