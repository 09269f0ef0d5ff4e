"""Latency budgets of the command line, each timed solo in fresh processes on this machine.

    python benchmarks/build.py            # --help, cold quick build, warm rebuild, template edit, cold audit
    python benchmarks/build.py --pair     # also: two cold quick builds started together
    python benchmarks/build.py --serial   # also: the cold quick build in one process (--threads 1), the peer
    python benchmarks/build.py --full     # also: the full profile from an empty cache (zoo of 1,024 included)

Budgets (2 cores): `talkgen --help` < 0.5 s; cold quick build of the built-in talk < 90 s (target 60 s);
warm rebuild with nothing changed < 1 s (also from a talk.toml); a template edit or a title override in
talk.toml re-rendered < 3 s; cold `talkgen audit
digits-cnn` < 30 s; two cold quick builds together each < 3x the solo build; full profile < 15 min.
Each line prints the measurement, its budget and a ratio against a peer measured in the same run
(the interpreter's own start-up, the cold build, the solo build). Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], cwd: str | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MB of the largest process) of one talkgen command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "talkgen", *args], capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"talkgen {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def best(args: list[str], repeats: int) -> float:
    return min(run(args)[0] for _ in range(repeats))


def costliest(out: Path, n: int = 5) -> str:
    """The ``n`` costliest analyses of a build, from its summary.json (twins included, by their name)."""
    summary = json.loads((out / "summary.json").read_text())
    rows = []
    for name, subj in summary["subjects"].items():
        for analysis, entry in subj["analyses"].items():
            if entry.get("cost") and not entry.get("cached"):
                rows.append((entry["cost"]["wall_s"], f"{analysis} on {name}"))
        for twin, analyses in subj.get("twins", {}).items():
            for analysis, entry in analyses.items():
                if entry.get("cost") and not entry.get("cached"):
                    rows.append((entry["cost"]["wall_s"], f"{analysis} on {twin}"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    return (", ".join(f"{name} {s:.1f} s" for s, name in rows[:n])
            + f" (all {len(rows)} runs: {total:.0f} s of analysis time)")


def line(what: str, seconds: float, budget: float | None, peer: str = "", ratio: float = 0.0) -> None:
    verdict = "" if budget is None else f"budget < {budget:g} s: {'met' if seconds < budget else 'NOT met':<7}"
    against = f"{ratio:7.2f} x {peer}" if peer else ""
    print(f"{what:<44} {seconds:8.2f} s   {verdict:<27} {against}")


def edit_template() -> tuple[Path, bytes]:
    from talkgen.resources import templates_dir

    path = templates_dir() / "commentary" / "weights.md.j2"
    return path, path.read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="Repeats of the short measurements (best is kept).")
    ap.add_argument("--pair", action="store_true", help="Also time two cold quick builds started together.")
    ap.add_argument("--serial", action="store_true", help="Also time the cold quick build with --threads 1.")
    ap.add_argument("--full", action="store_true", help="Also time the full profile from an empty cache.")
    args = ap.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}; python {sys.version.split()[0]}")

    start = min(_python_start() for _ in range(args.repeats))
    help_s = best(["--help"], args.repeats)
    line("talkgen --help", help_s, 0.5, "python start-up", help_s / start)

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "build"
        cold, peak = run(["build", "--out", str(out), "--quiet"])
        line("cold quick build of the built-in talk", cold, 90)
        print(f"{'':<44} peak resident memory {peak:.0f} MB (largest process); costliest: {costliest(out)}")
        warm = best(["build", "--out", str(out), "--quiet"], args.repeats)
        line("warm rebuild, nothing changed", warm, 1, "the cold build", warm / cold)
        path, original = edit_template()
        edits = []
        try:
            for i in range(args.repeats):
                path.write_bytes(original + f"\n{{# benchmark edit {i} #}}\n".encode())
                edits.append(run(["build", "--out", str(out), "--quiet"])[0])
        finally:
            path.write_bytes(original)
        line("rebuild after one template edit", min(edits), 3, "the cold build", min(edits) / cold)

        # the speaker's loop: the same talk as a talk.toml (`talkgen init`), rebuilt unchanged, then retitled
        toml = Path(d) / "talk.toml"
        run(["init", "--path", str(toml)])
        run(["build", "--config", str(toml), "--out", str(out), "--quiet"])
        warm_toml = best(["build", "--config", str(toml), "--out", str(out), "--quiet"], args.repeats)
        line("warm rebuild of a talk.toml, nothing changed", warm_toml, 1, "the cold build", warm_toml / cold)
        text = toml.read_text()
        retitles = []
        for i in range(args.repeats):
            toml.write_text(text + f'\n[talk.slides.rnn-cell]\ntitle = "A retitled beat {i}"\n')
            retitles.append(run(["build", "--config", str(toml), "--out", str(out), "--quiet"])[0])
        line("rebuild after a title override in talk.toml", min(retitles), 3, "the cold build", min(retitles) / cold)

        if args.serial:
            serial = run(["build", "--out", str(Path(d) / "serial"), "--quiet", "--threads", "1"])[0]
            line("cold quick build, one process (--threads 1)", serial, None, "the cold build", serial / cold)

        if args.pair:
            outs = [Path(d) / f"pair-{i}" for i in (0, 1)]
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-m", "talkgen", "build", "--out", str(o), "--quiet"])
                     for o in outs]
            walls = []
            for p in procs:
                p.wait()
                walls.append(time.perf_counter() - t0)
            for i, w in enumerate(walls):
                line(f"two cold quick builds together: build {i + 1}", w, round(3 * cold), "the solo cold build",
                     w / cold)

    with tempfile.TemporaryDirectory() as d:
        audit, _ = run(["audit", "digits-cnn", "--out", str(Path(d) / "audit"), "--quiet"])
        line("cold audit of digits-cnn (quick)", audit, 30, "the cold build", audit / cold)

    if args.full:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "full"
            full, peak = run(["build", "--profile", "full", "--out", str(out), "--quiet"])
            line("full profile, empty cache (zoo included)", full, 15 * 60, "the cold quick build", full / cold)
            print(f"{'':<44} peak resident memory {peak:.0f} MB; costliest: {costliest(out)}")


def _python_start() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
