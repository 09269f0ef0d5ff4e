"""Run a plan: cache look-up, failure isolation, cost ledger, side-effect guard, progress."""

from __future__ import annotations

import dataclasses
import json
import traceback
from typing import Any

import torch

from talkgen.analyses.base import Context
from talkgen.errors import TalkgenError
from talkgen.pipeline.cache import Cache, cache_key
from talkgen.metering import CostMeter
from talkgen.pipeline.plan import Plan, PlanItem
from talkgen.pipeline.progress import Progress
from talkgen.results import Outcome, Result
from talkgen.subject import Subject


class AnalysisFailed(TalkgenError):
    """Raised under --strict: the first failing analysis stops the build (exit status 1)."""

    exit_code = 1


def model_state(model: torch.nn.Module) -> dict[str, Any]:
    """Mode, requires_grad flags and hook counts of every module: what an analysis must not change."""
    state: dict[str, Any] = {}
    for name, m in model.named_modules():
        hooks = sum(len(getattr(m, a, {})) for a in (
            "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
        state[f"{name}:training"] = m.training
        state[f"{name}:hooks"] = hooks
    for name, p in model.named_parameters():
        state[f"{name}:requires_grad"] = p.requires_grad
    return state


def _side_effects(subject: Subject, before: dict[str, Any]) -> str | None:
    from talkgen.hashing import hash_module

    after = model_state(subject.model)
    changed = sorted(k for k in before if before[k] != after.get(k))
    if changed:
        return "left the model changed: " + ", ".join(changed[:6])
    if hash_module(subject.model) != subject.tensor_hash:
        return "left the model's weights changed"
    return None


def _run_one(item: PlanItem, ctx: Context) -> tuple[Result, dict[str, Any]]:
    before = model_state(item.subject.model)
    grad_mode = torch.is_grad_enabled()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            with CostMeter(item.subject.model) as meter:
                result = item.analysis.run(ctx)
    finally:
        torch.set_grad_enabled(grad_mode)  # a global switch no analysis may leave flipped
    problem = _side_effects(item.subject, before)
    if problem:
        raise RuntimeError(f"analysis {item.analysis.name!r} {problem}")
    if not isinstance(result, Result):
        raise TypeError(f"analysis {item.analysis.name!r} returned {type(result).__name__}, not a Result")
    if not result.checks:
        result = dataclasses.replace(result, checks=tuple(item.analysis.checks(result)))
    return result, meter.cost.to_json()


def run_plan(plan: Plan, cache: Cache, *, seed: int = 0, device: str = "cpu", profile: str = "quick",
             force: bool = False, strict: bool = False, progress: Progress | None = None) -> list[Outcome]:
    """Run every applicable item once (cache hits are free); failures are isolated unless strict."""
    outcomes: list[Outcome] = []
    done: dict[tuple[str, str], Outcome] = {}
    dev = torch.device(device)
    ledger = _read_ledger(cache)
    if progress:
        todo = [(i.subject.name, i.analysis.name) for i in plan.items if i.skip_reason is None]
        progress.start(len(todo), {k: ledger[f"{k[0]}/{k[1]}"] for k in todo if f"{k[0]}/{k[1]}" in ledger})
    try:
        for item in plan.items:
            s, a = item.subject.name, item.analysis.name
            if item.skip_reason is not None:
                out = Outcome(s, a, "skipped", message=item.skip_reason, twin_of=item.subject.twin_of)
                done[(s, a)] = out
                outcomes.append(out)
                continue
            if progress:
                progress.begin(s, a)
            if item.analysis.gathers:
                # every result so far, of every subject, keyed "subject/analysis"
                gathered = {f"{ks}/{ka}": o for (ks, ka), o in done.items() if o.status == "ok"}
                out = _execute(item, cache, seed, dev, profile, force,
                               {k: o.result for k, o in gathered.items()},  # type: ignore[misc]
                               {k: o.key for k, o in gathered.items()},
                               {o.subject: o.twin_of for o in gathered.values() if o.twin_of},
                               {k: dict(o.cost) for k, o in gathered.items()})
            else:
                dep_outs = {d: done.get((s, d)) for d in item.analysis.deps}
                bad = [d for d, o in dep_outs.items() if o is None or o.status != "ok"]
                if bad:
                    out = Outcome(s, a, "skipped", message=f"needs {', '.join(bad)}, which did not run")
                else:
                    out = _execute(item, cache, seed, dev, profile, force,
                                   {d: o.result for d, o in dep_outs.items()},  # type: ignore[misc]
                                   {d: o.key for d, o in dep_outs.items()})  # type: ignore[misc]
            out.twin_of = item.subject.twin_of
            if progress:
                progress.end(s, a, out.status, float(out.cost.get("wall_s", 0.0)), out.cached)
            if out.status == "failed" and strict:
                raise AnalysisFailed(f"{a} failed on {s}: {out.message}")
            done[(s, a)] = out
            outcomes.append(out)
            if out.status == "ok" and not out.cached:
                ledger[f"{s}/{a}"] = float(out.cost.get("wall_s", 0.0))
    finally:
        if progress:
            progress.close()
        _write_ledger(cache, ledger)
    return outcomes


LEDGER = "ledger.json"  # subject/analysis -> seconds it took when last computed (the progress estimate)


def _read_ledger(cache: Cache) -> dict[str, float]:
    try:
        raw = json.loads((cache.root / LEDGER).read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_ledger(cache: Cache, ledger: dict[str, float]) -> None:
    from talkgen.files import write_atomic

    if ledger and cache.root.parent.is_dir():
        try:
            write_atomic(cache.root / LEDGER, json.dumps(ledger, sort_keys=True, indent=0))
        except OSError:  # the estimate is a convenience: never fail a build over it
            pass


def _execute(item: PlanItem, cache: Cache, seed: int, dev: torch.device, profile: str,
             force: bool, deps: dict[str, Result], dep_keys: dict[str, str | None],
             twins: dict[str, str] | None = None, costs: dict[str, dict] | None = None) -> Outcome:
    s, a = item.subject.name, item.analysis.name
    params = dict(item.params)
    if dep_keys:  # a result built from other results is stale when any of them changes
        params["_inputs"] = dict(sorted(dep_keys.items()))
    key = cache_key(a, item.analysis.version, params, seed, item.subject.model_hash, item.subject.data_hash)
    hit = None if force else cache.get(a, key)
    if hit is not None:
        result, cost = hit
        return Outcome(s, a, "ok", result=result, cost=cost, cached=True, key=key)
    ctx = Context(subject=item.subject, params=item.params, seed=seed, device=dev,
                  profile=profile, deps=deps, twins=twins or {}, store=cache.root, costs=costs or {})
    try:
        result, cost = _run_one(item, ctx)
    except Exception as exc:  # noqa: BLE001 - failure isolation: one analysis never sinks the build
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return Outcome(s, a, "failed", message=message, key=key,
                       traceback="".join(traceback.format_exception(exc)))
    cache.put(a, key, result, cost)
    return Outcome(s, a, "ok", result=result, cost=cost, key=key)
