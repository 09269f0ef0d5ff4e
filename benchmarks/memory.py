"""Peak memory of a quick audit of a model over 100M parameters, against the model's own size.

The target (issue: real models): an audit's peak resident memory stays under 3 times the model's size plus
its data. Measured here as the whole process tree's memory, the build and its worker processes together,
sampled every 100 ms:

- PSS (proportional set size): a page shared by several processes (the model's weights a forked worker has
  not written to, the libraries) counts once, split between them. This is what the machine must hold;
- the largest single process's RSS, as ``/usr/bin/time -v`` reports it, for comparison.

The peer, measured in the same run the same way: a process that imports talkgen and loads the same model
and data and does nothing else (the floor no audit can go under). Printed: model and data sizes, the
floor, the audit's peak, the ratio of the peak to the model plus data, and each analysis's own peak as
the cost ledger records it.

Subjects, made in a temporary directory (random weights: memory does not depend on training):

- ``mlp``: ``nn.Sequential`` of eight 4096x4096 linear layers and a 10-way head (134,291,466 parameters,
  537 MB), on 600 random 4096-feature rows;
- ``gpt2``: a GPT-2-shaped ``GPT2LMHeadModel`` from a local config (124M parameters; needs ``transformers``),
  on 300 lines of text.

    python benchmarks/memory.py [--model mlp|gpt2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

MLP_SOURCE = textwrap.dedent("""\
    from torch import nn

    def make_model():
        layers = []
        for _ in range(8):
            layers += [nn.Linear(4096, 4096), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(4096, 10))
    """)


def make_mlp(root: Path) -> tuple[list[str], int]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    (root / "mlp.py").write_text(MLP_SOURCE)
    sys.path.insert(0, str(root))
    from mlp import make_model  # type: ignore[import-not-found]

    torch.manual_seed(0)
    model = make_model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "mlp.safetensors")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4096)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(root / "data.npz", x=x, y=y)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return [f"{root / 'mlp.py'}:make_model", "--weights", str(root / "mlp.safetensors"),
            "--data", str(root / "data.npz"), "--task", "tabular-classifier"], size


def make_gpt2(root: Path) -> tuple[list[str], int]:
    import random

    import torch
    import transformers

    d = root / "gpt2"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(2000)]
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    rng = random.Random(0)
    lines = [" ".join(f"w{rng.randrange(2000)}" for _ in range(rng.randrange(20, 60))) for _ in range(300)]
    (root / "text.txt").write_text("\n".join(lines) + "\n")
    size = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights count once
    return [str(d), "--data", str(root / "text.txt")], size


def data_bytes(args: list[str]) -> int:
    i = args.index("--data")
    return Path(args[i + 1]).stat().st_size


class TreeSampler:
    """Peak PSS of a process and all its descendants together, and the largest single RSS, every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.peak_pss = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            pss = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                pss += info.pss
                self.peak_rss = max(self.peak_rss, info.rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, TreeSampler, str]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    out, _ = proc.communicate()
    sampler.stop()
    return proc.returncode, time.perf_counter() - t, sampler, out


FLOOR = textwrap.dedent("""\
    import sys
    from talkgen.build import load_subject
    from talkgen.config import SubjectConfig
    model, weights, data, task = sys.argv[1:5]
    s = load_subject(SubjectConfig(name="floor", model=model, weights=weights or None, data=data, task=task or None))
    assert s.model is not None and s.data is not None
    """)


def floor_args(args: list[str]) -> list[str]:
    """The audit's command-line arguments as load_subject's: model, weights, data, task (absolute paths)."""
    def opt(flag: str) -> str:
        return args[args.index(flag) + 1] if flag in args else ""
    return [args[0], opt("--weights"), opt("--data"), opt("--task")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["mlp", "gpt2"], default="mlp")
    ap.add_argument("--keep", type=Path, help="make the subject and the audit's output here, and keep them")
    ap.add_argument("--budget", type=float, default=3.0, help="the target, in multiples of model + data")
    a = ap.parse_args()

    root = a.keep or Path(tempfile.mkdtemp(prefix="talkgen-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    args, model_size = (make_mlp if a.model == "mlp" else make_gpt2)(root)
    data_size = data_bytes(args)
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
    mb = 2**20

    # the peer: import talkgen, load this model and its data exactly as the audit does, nothing else
    floor_cmd = [sys.executable, "-c", FLOOR, *floor_args(args)]
    rc, _, floor, out = measured(floor_cmd, env)
    if rc != 0:
        print(out)
        print(f"loading the model alone failed (exit {rc})")
        return 1
    out_dir = root / "audit"
    rc, wall, audit, out = measured([sys.executable, "-m", "talkgen", "audit", *args, "--profile", "quick",
                                     "--quiet", "--force", "--out", str(out_dir)], env)
    if rc != 0:
        print(out)
        print(f"the audit failed (exit {rc})")
        return 1
    budget = a.budget * (model_size + data_size)
    print(f"{a.model}: model {model_size / mb:,.0f} MB, data {data_size / mb:,.1f} MB; audit {wall:.0f} s")
    print(f"  floor (talkgen + the model and data loaded): PSS {floor.peak_pss / mb:,.0f} MB, "
          f"RSS {floor.peak_rss / mb:,.0f} MB")
    print(f"  audit peak, process tree PSS: {audit.peak_pss / mb:,.0f} MB = "
          f"{audit.peak_pss / (model_size + data_size):.2f}x model + data "
          f"(target < {a.budget:g}x = {budget / mb:,.0f} MB: {'met' if audit.peak_pss < budget else 'NOT met'}); "
          f"{(audit.peak_pss - floor.peak_pss) / mb:,.0f} MB over the floor")
    print(f"  largest single process RSS: {audit.peak_rss / mb:,.0f} MB = "
          f"{audit.peak_rss / (model_size + data_size):.2f}x")
    summary = json.loads((out_dir / "summary.json").read_text())
    for name, sub in summary["subjects"].items():
        rows = [(a_, r.get("cost", {}).get("peak_mem_mb", 0.0), r.get("status")) for a_, r in
                sub.get("analyses", {}).items()]
        rows.sort(key=lambda r: -r[1])
        print(f"  {name}, each analysis's own peak over its start (the ledger):")
        for a_, peak, status in rows:
            if status == "ok":
                print(f"    {a_:<18} {peak:8,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
