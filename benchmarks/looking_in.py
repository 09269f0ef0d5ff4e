"""Section 1's analyses on every sample, --profile full.

Prints each (subject, analysis) wall time; the total of the matrix analyses (weights,
activations, rnn-cells) against their target of 2 minutes on 2 cores; the information plane per
subject against its 2-minute target; and, as the peer measured in the same run, the time of one
forward pass of each subject over its whole test set (what "looking" costs in units of "using").

    python benchmarks/looking_in.py
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from talkgen.models.samples import SAMPLES, load_sample
from talkgen.pipeline import Cache, make_plan, run_plan

MATRICES = ["weights", "activations", "rnn-cells"]
ANALYSES = MATRICES + ["information-plane"]


def forward_seconds(subject) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(subject.data.x_test), 256):
            subject.model(subject.data.x_test[i:i + 256])
    return time.perf_counter() - t0


def main() -> None:
    subjects = [load_sample(n) for n in SAMPLES]
    total = 0.0
    print(f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as d:
        plan = make_plan(subjects, ANALYSES, "full")
        t0 = time.perf_counter()
        outcomes = run_plan(plan, Cache(d), profile="full", force=True)
        total = time.perf_counter() - t0
    for o in outcomes:
        print(f"{o.subject:24s} {o.analysis:18s} {o.status:8s} {o.cost.get('wall_s', 0):7.2f} s")
    matrices = sum(o.cost.get("wall_s", 0) for o in outcomes if o.analysis in MATRICES)
    print(f"matrix analyses: {matrices:.1f} s (target < 120 s: {'met' if matrices < 120 else 'NOT met'}; "
          f"ratio to target {matrices / 120:.2f})")
    for o in outcomes:
        if o.analysis == "information-plane" and o.status == "ok":
            t = o.cost["wall_s"]
            print(f"information plane, {o.subject}: {t:.1f} s (target < 120 s: {'met' if t < 120 else 'NOT met'})")
    fwd = sum(forward_seconds(s) for s in subjects)
    print(f"all of section 1: {total:.1f} s; peer: one forward pass over every test set: {fwd:.2f} s; "
          f"ratio {total / fwd:.0f}x")


if __name__ == "__main__":
    main()
