"""Integrated Gradients and SmoothGrad: talkgen.attribution against Captum, side by side.

Same models, inputs, targets and settings for both: IG with 50 Gauss-Legendre steps and a zero
baseline, SmoothGrad with 50 noisy samples (signed gradients, the same noise level), the same
internal batch size. Models: the digits-cnn sample (1x8x8) and a 32x32 3-channel CNN (random
weights: speed does not depend on training). Prints inputs per second, the ratio, the largest
difference between the two libraries' IG attributions, and the peak extra memory of one IG call
at three internal batch sizes, each in a fresh process (it follows the batch size, not n_steps).
talkgen feeds images to the model in the channels-last layout (the model is not changed).

    pip install captum==0.9.0 tqdm   # the peer; benchmark-only dependencies
    python benchmarks/attribution.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from talkgen import attribution as A
from talkgen.models.samples import load_sample


class CifarCNN(nn.Module):
    """A small 32x32 RGB classifier: three conv layers and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


PEAK = """
import resource, sys, psutil, torch
sys.path.insert(0, {here!r})
from attribution import CifarCNN
from talkgen import attribution as A
torch.manual_seed(0)
model, x = CifarCNN().eval(), torch.rand(16, 3, 32, 32)
target = model(x).argmax(1).detach()
before = psutil.Process().memory_info().rss / 1024  # KiB, as ru_maxrss
A.integrated_gradients(model, x, target, n_steps=50, internal_batch_size={batch})
print(max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def peak_extra_mib(batch: int) -> float:
    """Peak RSS growth of one IG call on the 32x32 CNN, in a fresh process (no reused memory)."""
    import os
    import subprocess
    import sys

    code = PEAK.format(here=os.path.dirname(os.path.abspath(__file__)), batch=batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    except ImportError:
        raise SystemExit("the peer is missing: pip install captum==0.9.0 tqdm")

    torch.manual_seed(0)
    digits = load_sample("digits-cnn")
    cases = [("digits-cnn (1x8x8)", copy.deepcopy(digits.model).eval(), digits.data.x_test[:64].float(), 1024),
             ("32x32x3 CNN", CifarCNN().eval(), torch.rand(16, 3, 32, 32), 256)]
    print(f"threads {torch.get_num_threads()}; best of {args.repeats}")
    for name, model, x, ib in cases:
        with torch.no_grad():
            target = model(x).argmax(1)
        ig_peer = IntegratedGradients(model)
        sg_peer = NoiseTunnel(Saliency(model))
        sigma = 0.15 * float(x.max() - x.min())
        runs = {
            "IG": (lambda: A.integrated_gradients(model, x, target, n_steps=50, internal_batch_size=ib),
                   lambda: ig_peer.attribute(x, target=target, n_steps=50, method="gausslegendre",
                                             internal_batch_size=ib)),
            "SmoothGrad": (lambda: A.smoothgrad(model, x, target, n_samples=50, stdev=sigma, internal_batch_size=ib,
                                                generator=torch.Generator().manual_seed(0)),
                           lambda: sg_peer.attribute(x, nt_type="smoothgrad", nt_samples=50, stdevs=sigma,
                                                     nt_samples_batch_size=max(1, ib // len(x)), target=target,
                                                     abs=False)),
        }
        for method, (ours, peer) in runs.items():
            t_ours, t_peer = best_of(ours, args.repeats), best_of(peer, args.repeats)
            print(f"{name:20s} {method:10s} talkgen {len(x) / t_ours:8.1f} inputs/s   captum {len(x) / t_peer:8.1f} "
                  f"inputs/s   ratio {t_peer / t_ours:5.2f}x  {'(>= 1: target met)' if t_ours <= t_peer else '(below target)'}")
        diff = (A.integrated_gradients(model, x, target, n_steps=50) -
                ig_peer.attribute(x, target=target, n_steps=50, method="gausslegendre")).abs().max()
        print(f"{name:20s} IG max |talkgen - captum| = {float(diff):.2e}")
    for batch in (32, 128, 800):
        print(f"32x32x3 CNN, 16 inputs x 50 steps: IG peak extra memory at internal_batch_size {batch:4d}: "
              f"{peak_extra_mib(batch):7.1f} MiB")


if __name__ == "__main__":
    main()
