"""Model-zoo training: vectorised over members (talkgen.meta.zoo) against a sequential loop.

Both train the same N members of the digits-cnn architecture (default 128; the zoo's own recipes:
SGD with momentum or Adam, learning rate, weight decay, init scale, training fraction, label
noise, backdoor poisoning) for the same number of steps each, batch size 16, 2 threads. The peer
is the loop one would write by hand: for each member a fresh model, ``torch.optim.Adam`` or
``SGD`` (default foreach implementation) with a cosine ``LambdaLR`` schedule, and the same
per-step sampling of its own subset, noisy labels and poisoned examples. Prints member-steps per
second for both, the ratio, and the mean test accuracy each reached (they should agree: same
recipes, different random draws).

    python benchmarks/zoo.py [--members 128] [--steps 300] [--batch 16] [--chunk 32]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from talkgen.meta.zoo import Trainer, ZooSpec, _Batches, chunk_members, hash_seed, init_members, zoo_source


def sequential(source, members, steps: int, batch: int) -> tuple[float, float]:
    """(seconds, summed test accuracy) of training each member in turn with torch.optim."""
    acc = 0.0
    t0 = time.perf_counter()
    for m in members:
        model = source.factory()
        with torch.no_grad():
            init = init_members(source, [m])
            for k, p in model.named_parameters():
                p.copy_(init[k][0])
        one = _Batches(source, [m])
        Opt = torch.optim.Adam if m["optimizer"] == "adam" else torch.optim.SGD
        kw = {"momentum": 0.9} if m["optimizer"] == "sgd" else {}
        opt = Opt(model.parameters(), lr=m["lr"], weight_decay=m["weight_decay"], **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t / steps, 1.0))))
        gen = torch.Generator().manual_seed(hash_seed(m["index"]))
        for _ in range(steps):
            x, y = one.draw(batch, gen)
            loss = nn.functional.cross_entropy(model(x[0]), y[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acc += float((model(source.x_test).argmax(1) == source.y_test).float().mean())
    return time.perf_counter() - t0, acc


def vectorised(source, members, steps: int, batch: int, seed: int) -> tuple[float, float, str]:
    """(seconds, summed test accuracy, how) of training ``members`` together, as one chunk of
    ``talkgen zoo build``."""
    t0 = time.perf_counter()
    part = sorted(members, key=lambda m: m["optimizer"] != "adam")
    trainer = Trainer(source, part, batch)
    st = trainer.initial()
    for s in range(steps):
        trainer.step(st, torch.Generator().manual_seed(hash_seed(0, seed, s)))
    pred = trainer.predict(st.params, source.x_test)
    return time.perf_counter() - t0, float((pred == source.y_test).float().mean(1).sum()), trainer.how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=ZooSpec.chunk, help="members trained together (the zoo's default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    source = zoo_source("digits-cnn")
    spec = ZooSpec(n=args.members, chunk=args.members)
    members = [m | {"steps": args.steps} for m in chunk_members(spec, source)[0]]
    # One chunk at a time, both ways, in alternating order: a machine whose speed drifts during
    # the run slows both sides alike, and the per-chunk ratios show how steady the timing was.
    tv = ts = acc_v = acc_s = 0.0
    ratios = []
    for c in range(0, len(members), args.chunk):
        part = members[c:c + args.chunk]
        runs = [lambda: vectorised(source, part, args.steps, args.batch, c),
                lambda: sequential(source, part, args.steps, args.batch)]
        first, second = (runs if (c // args.chunk) % 2 == 0 else runs[::-1])
        a, b = first(), second()
        (v, s) = (a, b) if (c // args.chunk) % 2 == 0 else (b, a)
        tv, acc_v, how = tv + v[0], acc_v + v[1], v[2]
        ts, acc_s = ts + s[0], acc_s + s[1]
        ratios.append(s[0] / v[0])
    acc_v, acc_s = acc_v / len(members), acc_s / len(members)
    work = args.members * args.steps
    print(f"{args.members} members x {args.steps} steps, batch {args.batch}, {args.threads} threads, chunks of {args.chunk}")
    print(f"  sequential torch.optim loop : {ts:7.1f} s  {work / ts:7.0f} member-steps/s  mean test acc {acc_s:.3f}")
    print(f"  talkgen zoo ({how}) : {tv:7.1f} s  {work / tv:7.0f} member-steps/s  mean test acc {acc_v:.3f}")
    print(f"  per-chunk ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  ratio (vectorised / sequential throughput): {ts / tv:.2f}x")

if __name__ == "__main__":
    main()
