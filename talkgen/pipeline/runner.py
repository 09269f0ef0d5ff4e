"""Run a plan: cache look-up, failure isolation, cost ledger, side-effect guard, progress."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

import torch

from talkgen import devices
from talkgen.analyses.base import Context
from talkgen.cores import cap_threads, lean_allocator, release_memory, restore_allocator, set_torch_threads
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
    grad_mode = torch.is_grad_enabled()
    # the model computes on the build's device for this item (moved there and back; nothing moves on the CPU)
    with devices.placed(item.subject.model, ctx.device):
        before = model_state(item.subject.model)
        try:
            # manual_seed seeds every device: a GPU's generator is restored afterwards too
            cuda_rng = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda_rng):
                torch.manual_seed(ctx.seed)
                with devices.peak_memory(ctx.device) as gpu, CostMeter(item.subject.model) as meter:
                    result = item.analysis.run(ctx)
        finally:
            torch.set_grad_enabled(grad_mode)  # a global switch no analysis may leave flipped
        problem = _side_effects(item.subject, before)
    meter.cost.extra.update(gpu)
    if problem:
        raise RuntimeError(f"analysis {item.analysis.name!r} {problem}")
    if not isinstance(result, Result):
        raise TypeError(f"analysis {item.analysis.name!r} returned {type(result).__name__}, not a Result")
    if not result.checks:
        result = dataclasses.replace(result, checks=tuple(item.analysis.checks(result)))
    if item.sampled:  # what the size budget sampled (and what the analysis sampled itself): slides and summary say so
        own = result.data.get("sampled")
        result = dataclasses.replace(result, data={**result.data, "sampled": "; ".join(filter(None, (item.sampled, own)))})
    return result, meter.cost.to_json()


# an item's first progress report (Context.progress) after this many seconds, the next ones this far apart
STEP_FIRST, STEP_EVERY = 10.0, 15.0


class _Steps:
    """The progress reports of one running item, thinned out (a short item reports nothing), each with the
    seconds the item has run, sent by ``send`` to wherever the build's display is."""

    def __init__(self, send: Callable[[tuple], None], subject: str, analysis: str, lean: bool = False) -> None:
        self.send, self.key, self.lean = send, (subject, analysis), lean
        self.t0, self.last = time.monotonic(), None

    def __call__(self, done: float, total: float, unit: str) -> None:
        if self.lean:  # a large model's step (a matrix, a point) is over: its freed memory goes back now
            release_memory()
        now = time.monotonic()
        if done <= 0 or now - self.t0 < STEP_FIRST or (self.last is not None and now - self.last < STEP_EVERY):
            return
        self.last = now
        self.send((*self.key, float(done), float(total), str(unit), now - self.t0))


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


def run_plan(plan: Plan, cache: Cache, *, seed: int = 0, device: str = "cpu", profile: str = "quick",
             force: bool = False, strict: bool = False, progress: Progress | None = None,
             threads: int | None = None, after_each: Callable[[PlanItem, Result], None] | None = None) -> list[Outcome]:
    """Run every applicable item once (cache hits are free); failures are isolated unless strict.

    ``threads``: the CPU threads the build may use (None: torch's setting, one item at a time). With two
    or more on the CPU, items run in that many worker processes of one thread each, as their deps allow
    (processes share a machine's cores more fairly than one process's thread pool: a build beside
    another degrades in proportion to the cores it gets). ``after_each(item, result)`` runs where the
    item ran, after a result is computed (the build uses it to draw the result's figures there too).
    Outcomes come back in plan order whatever order the items ran in."""
    global _WORKER
    runner = _Runner(plan, cache, seed, device, profile, force, strict, progress, after_each)
    large = _large(plan)
    jobs = threads if threads and device == "cpu" and not large else 1
    pools = _Pools(jobs)
    if large:
        lean_allocator()
        runner.lean = True
    try:
        settled = runner.settle()  # skips and cache hits, before any worker exists
        spread = jobs > 1 and runner.to_compute() > 1
        with _torch_threads(1 if spread else threads):  # one thread everywhere when the work is spread
            if spread:  # fork before any thread of ours (the progress display) starts
                _WORKER = runner  # what the workers inherit (by fork) to run items by their index
                runner.steps = multiprocessing.get_context("fork").SimpleQueue()  # their progress reports
                pools.get()
            if progress:
                progress.start(len(runner.todo), {k: runner.ledger[f"{k[0]}/{k[1]}"] for k in runner.todo
                                                  if f"{k[0]}/{k[1]}" in runner.ledger},
                               workers=jobs if pools.pool is not None else 1,
                               hints={(i.subject.name, i.analysis.name): i.analysis.cost_hint for i in plan.items
                                      if i.skip_reason is None},
                               declared=_declared(plan, device))
                for item in settled:
                    runner.report(item)
            if pools.pool is not None:
                runner.run_parallel(pools, jobs)
            runner.run_serial()  # what is left: everything (one job), or the gathering analyses
        if large:
            _give_back(plan)
    finally:
        pools.close()
        _WORKER = None
        if large:
            restore_allocator()
            with contextlib.suppress(Exception):  # the build is failing already: the first error is the one to say
                _give_back(plan)
        if progress:
            progress.close()
        _write_ledger(cache, runner.ledger)
    return [runner.done[(i.subject.name, i.analysis.name)] for i in plan.items]


def _give_back(plan: Plan) -> None:
    """The caller's subjects with their models, as they were given (twins stay let go: made when asked)."""
    for s in {id(i.subject): i.subject for i in plan.items if i.subject.twin_of is None}.values():
        try:
            s.restore()
        except Exception as exc:  # noqa: BLE001 - its files changed while the build ran
            raise TalkgenError(f"subject {s.name!r}: its model could not be loaded again after the analyses "
                               f"({' '.join(str(exc).split())[:200]})") from None


def _large(plan: Plan) -> bool:
    """Whether a model of the plan is large (``budget.large``) and its items run one at a time, in this
    process, with every thread: its analyses keep the cores busy in their matrix products by themselves, and
    two at once (or a forked worker's writes to the model's pages) would hold two analyses' copies."""
    from talkgen.analyses.budget import large

    seen: set[int] = set()
    for i in plan.items:
        if i.skip_reason is None and id(i.subject) not in seen:
            seen.add(id(i.subject))
            if large(i.subject):
                return True
    return False


def _declared(plan: Plan, device: str = "cpu") -> dict[tuple[str, str], float]:
    """Seconds of work each item declares for its model on ``device``, where the plan counted the model's
    multiply-adds."""
    from talkgen.analyses.budget import declared_seconds

    out = {}
    for i in plan.items:
        if i.skip_reason is None:
            seconds = declared_seconds(i.analysis, i.subject, i.params, device)
            if seconds is not None:
                out[(i.subject.name, i.analysis.name)] = seconds
    return out


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the duration (None: left as the caller set them)."""
    old = torch.get_num_threads()
    if n:
        set_torch_threads(n)
    try:
        yield
    finally:
        set_torch_threads(old)


class _Pools:
    """The worker processes (forked, one torch thread each); a new set replaces a set that a dying worker
    broke (the items it was running are reported failed, the others go on)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_worker_start, initargs=(os.getpid(),))
            self.pool.submit(int).result()  # fork them all now
        return self.pool

    def replace(self) -> ProcessPoolExecutor:
        self.close()
        return self.get()

    def close(self, kill: bool = False) -> None:
        if self.pool is not None:
            if kill:  # strict, Ctrl-C: stop the running items at once
                for proc in list(getattr(self.pool, "_processes", {}).values()):
                    proc.kill()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class _Runner:
    """The state of one run: outcomes so far (by subject and analysis), the cost ledger, progress."""

    def __init__(self, plan: Plan, cache: Cache, seed: int, device: str, profile: str, force: bool,
                 strict: bool, progress: Progress | None,
                 after_each: Callable[[PlanItem, Result], None] | None) -> None:
        self.items, self.cache, self.seed, self.dev = plan.items, cache, seed, torch.device(device)
        self.profile, self.force, self.strict, self.progress = profile, force, strict, progress
        self.after_each = after_each
        self.lean = False  # a large model's plan: memory handed back after each item
        self.done: dict[tuple[str, str], Outcome] = {}
        self.ledger = _read_ledger(cache)
        self.todo = [(i.subject.name, i.analysis.name) for i in self.items if i.skip_reason is None]
        self.planned = {(i.subject.name, i.analysis.name) for i in self.items}
        self.pid = os.getpid()  # the build's process: a worker sends its items' progress here through ``steps``
        self.steps: Any = None

    # -- progress inside an item --------------------------------------------------------------------------
    def _send(self, step: tuple) -> None:
        if self.steps is not None and os.getpid() != self.pid:
            self.steps.put(step)
        else:
            self._show(step)

    def _show(self, step: tuple) -> None:
        if self.progress is not None and hasattr(self.progress, "step"):
            self.progress.step(*step)

    def _drain(self) -> None:
        while self.steps is not None and not self.steps.empty():
            self._show(self.steps.get())

    # -- one item -------------------------------------------------------------------------------------------
    def _record(self, item: PlanItem, out: Outcome, report: bool = True) -> None:
        s, a = item.subject.name, item.analysis.name
        out.twin_of = item.subject.twin_of
        self.done[(s, a)] = out
        if report:
            self.report(item)
        if out.status == "ok" and not out.cached:
            self.ledger[f"{s}/{a}"] = float(out.cost.get("wall_s", 0.0))
        if out.status == "failed" and self.strict:
            raise AnalysisFailed(f"{a} failed on {s}: {out.message}")

    def report(self, item: PlanItem) -> None:
        """Tell the progress display that an item is done."""
        s, a = item.subject.name, item.analysis.name
        out = self.done[(s, a)]
        if self.progress and item.skip_reason is None:
            self.progress.end(s, a, out.status, float(out.cost.get("wall_s", 0.0)), out.cached)

    def _inputs(self, item: PlanItem) -> tuple[dict[str, Outcome], str | None] | None:
        """The outcomes an item reads (its deps, or everything so far for a gathering analysis) and why it
        cannot run (a dep that did not); None while a dep is still to come."""
        s = item.subject.name
        if item.analysis.gathers:
            return {f"{ks}/{ka}": o for (ks, ka), o in self.done.items() if o.status == "ok"}, None
        deps: dict[str, Outcome] = {}
        for d in item.analysis.deps:
            o = self.done.get((s, d))
            if o is None and (s, d) in self.planned:
                return None
            deps[d] = o  # type: ignore[assignment]
        bad = [d for d, o in deps.items() if o is None or o.status != "ok"]
        return deps, (f"needs {', '.join(bad)}, which did not run" if bad else None)

    def _key(self, item: PlanItem, inputs: dict[str, Outcome]) -> str:
        params = dict(item.params)
        if inputs:  # a result built from other results is stale when any of them changes
            params["_inputs"] = dict(sorted((k, o.key) for k, o in inputs.items()))
        return cache_key(item.analysis.name, item.analysis.version, params, self.seed,
                         item.subject.model_hash, item.subject.data_hash)

    def _context(self, item: PlanItem, inputs: dict[str, Outcome]) -> Context:
        gathers = item.analysis.gathers
        return Context(subject=item.subject, params=item.params, seed=self.seed, device=self.dev,
                       profile=self.profile, deps={k: o.result for k, o in inputs.items()},  # type: ignore[misc]
                       twins={o.subject: o.twin_of for o in inputs.values() if o.twin_of} if gathers else {},
                       store=self.cache.root,
                       costs={k: dict(o.cost) for k, o in inputs.items()} if gathers else {},
                       report=_Steps(self._send, item.subject.name, item.analysis.name, lean=self.lean))

    def _settled(self, item: PlanItem) -> tuple[Outcome | None, dict[str, Outcome], str | None]:
        """(an outcome that needs no computing: skipped or a cache hit, the item's inputs, its key); None
        for the outcome when the item must run."""
        s, a = item.subject.name, item.analysis.name
        if item.skip_reason is not None:
            return Outcome(s, a, "skipped", message=item.skip_reason), {}, None
        found = self._inputs(item)
        assert found is not None
        inputs, problem = found
        if problem:
            return Outcome(s, a, "skipped", message=problem), {}, None
        key = self._key(item, inputs)
        hit = None if self.force else self.cache.get(a, key)
        if hit is not None:
            result, cost = hit
            return Outcome(s, a, "ok", result=result, cost=cost, cached=True, key=key), inputs, key
        return None, inputs, key

    def settle(self) -> list[PlanItem]:
        """Record, in plan order, every item that needs no computing (skipped, or in the cache with its inputs
        known), without telling the progress display (the caller does, once it has started)."""
        settled = []
        for item in self.items:
            if item.analysis.gathers:
                break  # they read every other result: they come after all of them
            if item.skip_reason is None and self._inputs(item) is None:
                continue
            out, _, _ = self._settled(item)
            if out is not None:
                self._record(item, out, report=False)
                settled.append(item)
        return settled

    def to_compute(self) -> int:
        """How many items that do not gather are still to be computed (or settled once their deps are)."""
        return sum(1 for i in self.items
                   if not i.analysis.gathers and (i.subject.name, i.analysis.name) not in self.done)

    # -- one at a time, in this process -----------------------------------------------------------------
    def run_serial(self) -> None:
        for item in self._order():
            if (item.subject.name, item.analysis.name) in self.done:
                continue
            if self.progress and item.skip_reason is None:
                self.progress.begin(item.subject.name, item.analysis.name)
            out, inputs, key = self._settled(item)
            if out is None:
                assert key is not None
                if self.lean:  # a large model's twin is held only while an analysis runs on it
                    out = self._hold(item, key)
                if out is None:
                    out = _compute(item, self._context(item, inputs), self.cache, key, self.after_each)
                if self.lean:  # what this item freed goes back to the kernel before the next one starts
                    gc.collect()
                    release_memory()
            self._record(item, out)

    def _order(self) -> list[PlanItem]:
        """Plan order; when lean, one subject's items together (each subject's and twin's in the plan's order,
        the gathering analyses last), so that a model let go is made again once, not once per analysis."""
        if not self.lean:
            return list(self.items)
        first: dict[int, int] = {}
        for n, i in enumerate(self.items):
            first.setdefault(id(i.subject), n)
        return sorted(self.items, key=lambda i: (i.analysis.gathers, first[id(i.subject)]))

    def _hold(self, item: PlanItem, key: str) -> Outcome | None:
        """The item's model made again if it was let go, every other model that can be made again (a twin's,
        a subject's loaded from files) let go until an analysis runs on it; the item's failure if its model
        could not be made again."""
        let_go = False
        for other in {id(i.subject): i.subject for i in self.items}.values():
            if other is not item.subject and other.release():
                let_go = True
        if let_go:
            gc.collect()
            release_memory()  # back to the kernel before the next model is made
        try:
            if item.subject.released:
                item.subject.restore()
                gc.collect()
                release_memory()  # what making it again took beside it
        except Exception as exc:  # noqa: BLE001 - as an analysis's own failure: the build goes on
            return Outcome(item.subject.name, item.analysis.name, "failed", key=key,
                           message=" ".join(f"{type(exc).__name__}: {exc}".split()))
        return None

    # -- in worker processes ------------------------------------------------------------------------------
    def run_parallel(self, pools: _Pools, jobs: int) -> None:
        """Every item that does not gather, in ``jobs`` single-threaded worker processes of ``pools``; the
        gathering analyses are left to :meth:`run_serial` (they read everything else)."""
        waiting = [i for i, it in enumerate(self.items)
                   if not it.analysis.gathers and (it.subject.name, it.analysis.name) not in self.done]
        # the costliest first (last time's cost, else the analysis's hint), so that the long ones do not come last
        waiting.sort(key=lambda i: -self.ledger.get(f"{self.items[i].subject.name}/{self.items[i].analysis.name}",
                                                    self.items[i].analysis.cost_hint))
        running: dict[Future, tuple[int, str, set[str]]] = {}
        busy: set[str] = set()  # cache keys and shared work (a zoo) of the running items
        shares: dict[int, str | None] = {}
        alone: set[int] = set()  # items that were running when a worker died: tried again, by themselves
        try:
            while waiting or running:
                for i in list(waiting):
                    if len(running) >= jobs or (running and (alone & {r[0] for r in running.values()})):
                        break
                    if i in alone and running:
                        continue
                    item = self.items[i]
                    if item.skip_reason is None and self._inputs(item) is None:
                        continue  # a dep still running
                    out, inputs, key = self._settled(item)
                    if out is None and i not in shares:
                        shares[i] = item.analysis.shared_work(item.subject, item.params)
                    shared = shares.get(i)
                    if out is None and (key in busy or shared in busy):
                        continue  # the same work is running: wait for it (then this is a cache hit, or cheap)
                    waiting.remove(i)
                    if self.progress and item.skip_reason is None:
                        self.progress.begin(item.subject.name, item.analysis.name)
                    if out is not None:
                        self._record(item, out)
                        continue
                    assert key is not None
                    locks = {key} | ({shared} if shared else set())
                    busy |= locks
                    deps = {k: o.key for k, o in inputs.items()}
                    try:
                        fut = pools.get().submit(_worker_run, i, deps, key)
                    except BrokenProcessPool:  # a worker died since the last item finished: new workers
                        fut = pools.replace().submit(_worker_run, i, deps, key)
                    running[fut] = (i, key, locks)
                    if i in alone:
                        break
                if not running:
                    if waiting:  # nothing runs and nothing can start: deps that will never come
                        for i in waiting:
                            self._record(self.items[i], Outcome(self.items[i].subject.name,
                                                                self.items[i].analysis.name, "skipped",
                                                                message="its deps did not run"))
                        waiting.clear()
                    break
                while True:  # pass on the workers' progress reports while waiting
                    finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                    self._drain()
                    if finished:
                        break
                for fut in finished:
                    i, key, locks = running.pop(fut)
                    busy -= locks
                    if isinstance(fut.exception(), BrokenProcessPool) and i not in alone:
                        alone.add(i)  # this item, or the one beside it, took a worker down: try it alone
                        waiting.insert(0, i)
                        continue
                    self._record(self.items[i], self._collect(self.items[i], fut, key))
        finally:
            if running:  # strict, Ctrl-C: stop the workers at once
                pools.close(kill=True)

    def _collect(self, item: PlanItem, fut: Future, key: str) -> Outcome:
        s, a = item.subject.name, item.analysis.name
        try:
            status, payload = fut.result()
        except BrokenProcessPool:
            return Outcome(s, a, "failed", key=key,
                           message="the worker process running it died (killed, or out of memory), twice")
        if status == "raise":  # the cache could not be written (a full disk): the build stops, as it would here
            raise payload
        if status == "failed":
            message, tb = payload
            return Outcome(s, a, "failed", message=message, key=key, traceback=tb)
        hit = self.cache.get(a, key)
        if hit is None:
            return Outcome(s, a, "failed", key=key, message="its result could not be read back from the cache")
        result, cost = hit
        return Outcome(s, a, "ok", result=result, cost=cost, key=key)


_WORKER: _Runner | None = None


def _worker_start(parent: int) -> None:
    """In a new worker: one torch thread, and gone when the build's process is (Linux: PDEATHSIG)."""
    cap_threads(1)
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the build died before the signal was armed
        os._exit(1)


def _worker_run(index: int, dep_keys: dict[str, str], key: str) -> tuple[str, Any]:
    """Run one item of the inherited plan; its result goes to the cache (the parent reads it there)."""
    w = _WORKER
    assert w is not None
    item = w.items[index]
    inputs: dict[str, Outcome] = {}  # its deps, read back from the cache (they were computed after the fork)
    for name, dep_key in dep_keys.items():
        hit = w.cache.get(name, dep_key)
        if hit is None:
            return "failed", (f"RuntimeError: the result of {name} was not in the cache", "")
        inputs[name] = Outcome(item.subject.name, name, "ok", result=hit[0], key=dep_key)
    try:
        out = _compute(item, w._context(item, inputs), w.cache, key, w.after_each)
    except OSError as exc:
        return "raise", exc
    if out.status == "failed":
        return "failed", (out.message, out.traceback)
    return "ok", None


def _compute(item: PlanItem, ctx: Context, cache: Cache, key: str,
             after_each: Callable[[PlanItem, Result], None] | None) -> Outcome:
    s, a = item.subject.name, item.analysis.name
    try:
        result, cost = _run_one(item, ctx)
    except Exception as exc:  # noqa: BLE001 - failure isolation: one analysis never sinks the build
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return Outcome(s, a, "failed", message=message, key=key,
                       traceback="".join(traceback.format_exception(exc)))
    cache.put(a, key, result, cost)
    if after_each is not None:
        try:
            after_each(item, result)
        except Exception:  # noqa: BLE001 - a convenience (figures drawn early): the render retries and reports
            pass
    return Outcome(s, a, "ok", result=result, cost=cost, key=key)
