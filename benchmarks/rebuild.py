"""Cold vs warm build of the built-in talk (`--profile quick`): wall time and peak memory.

The peer for the warm rebuild is the cold build of the same talk, measured in the same run.
Target: a warm rebuild with nothing changed takes under 3 s on 2 cores.

    python benchmarks/rebuild.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def timed_build(out: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `talkgen build` in a fresh child process."""
    code = ("import resource, sys\nfrom talkgen.cli import main\n"
            f"sys.argv = ['talkgen', 'build', '--profile', 'quick', '--out', {out!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak_kb = int(proc.stderr.strip().splitlines()[-1].split()[1])
    return wall, peak_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    colds, warms = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "build")
            colds.append(timed_build(out))
            warms.append(timed_build(out))
    cold = min(c[0] for c in colds)
    warm = min(w[0] for w in warms)
    print(f"cores: {os.cpu_count()}")
    print(f"cold --profile quick build: {cold:.2f} s (best of {args.repeats}), peak RSS {max(c[1] for c in colds):.0f} MB")
    print(f"warm rebuild, nothing changed: {warm:.2f} s (best of {args.repeats}), peak RSS {max(w[1] for w in warms):.0f} MB")
    print(f"warm / cold ratio: {warm / cold:.2f}  (target: warm < 3 s -> {'met' if warm < 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
