"""Progress of a build: what runs now, how much is done, how long is left.

On a terminal a live display (rich): done/total, elapsed time and an estimate of what is left. Anywhere
else (a log file, CI, a notebook) plain lines, one when an analysis starts and one when it finishes,
with its time and done/total, so a log always shows life. ``--quiet`` silences both.

The estimate weighs each analysis by what it cost last time (its cost ledger in the cache) where that
is known. Otherwise it takes the larger of two guesses: the work the analysis declares for this model
(``talkgen.analyses.budget``: forward passes times multiply-adds, at the rate the budget assumes, scaled
by how the finished items' declared work compared with their time), known before anything runs on a model
large enough to be counted, so that a long audit says so at its start; and its cost hint scaled by what the
finished ones cost per unit of hint. The sum is shared out over the worker processes.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Protocol


class Progress(Protocol):
    def start(self, total: int, expected: dict[tuple[str, str], float], workers: int = 1,
              hints: dict[tuple[str, str], float] | None = None,
              declared: dict[tuple[str, str], float] | None = None) -> None: ...
    def begin(self, subject: str, analysis: str) -> None: ...
    def end(self, subject: str, analysis: str, status: str, seconds: float, cached: bool) -> None: ...
    def step(self, subject: str, analysis: str, done: float, total: float, unit: str, seconds: float) -> None: ...
    def close(self) -> None: ...


class _Clock:
    """done/total and the time left, from the expected cost of what is not done yet."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.workers = 1
        self.t0 = time.perf_counter()
        self.expected: dict[tuple[str, str], float] = {}
        self.hints: dict[tuple[str, str], float] = {}
        self.spent: list[tuple[float, float]] = []  # (seconds, hint) of the items computed so far
        self.declared: dict[tuple[str, str], float] = {}  # seconds of declared work (budget.declared_seconds)
        self.measured: list[tuple[float, float]] = []  # (seconds, declared seconds) of those computed so far
        self.finished: set[tuple[str, str]] = set()
        self.partial = False  # the last estimate left out items it had no guess for (a floor, not an estimate)

    def start(self, total: int, expected: dict[tuple[str, str], float], workers: int = 1,
              hints: dict[tuple[str, str], float] | None = None,
              declared: dict[tuple[str, str], float] | None = None) -> None:
        self.total, self.expected, self.t0 = total, dict(expected), time.perf_counter()
        self.workers, self.hints = max(1, workers), dict(hints or {})
        self.declared = dict(declared or {})

    def finish(self, key: tuple[str, str], seconds: float, cached: bool) -> None:
        self.done += 1
        self.finished.add(key)
        if not cached:
            self.spent.append((seconds, self.hints.get(key, 1.0)))
            if key in self.declared:
                self.measured.append((seconds, self.declared[key]))

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float | None:
        left = [k for k in self.expected if k not in self.finished]
        unknown = self.total - self.done - len(left)
        known = sum(self.expected[k] for k in left)
        if unknown > 0:
            per_hint = sum(t for t, _ in self.spent) / sum(h for _, h in self.spent) if self.spent else None
            # declared seconds assume a rate; once declared items have finished, this machine's own
            rate = (sum(t for t, _ in self.measured) / sum(d for _, d in self.measured)
                    if self.measured and sum(d for _, d in self.measured) > 0 else 1.0)
            waiting = [k for k in set(self.hints) | set(self.declared)
                       if k not in self.finished and k not in self.expected]
            guessed = 0
            for k in waiting:
                guesses = ([self.declared[k] * rate] if k in self.declared else []) + (
                    [per_hint * self.hints[k]] if per_hint is not None and k in self.hints else [])
                if guesses:
                    known += max(guesses)
                    guessed += 1
            rest = unknown - guessed
            if rest > 0:
                if per_hint is None:
                    self.partial = True  # some items have no guess yet: what is known is a floor
                    return None if not known else known / self.workers
                known += per_hint * rest
        self.partial = False
        return known / self.workers


def _step_text(done: float, total: float, unit: str, seconds: float) -> str:
    """'120 of 289 points after 0:40, about 0:56 more' (the rest at the rate so far)."""
    more = seconds * (total - done) / done if done > 0 else None
    return (f"{done:,.0f} of {total:,.0f} {unit} after {_clock_text(seconds)}"
            + (f", about {_clock_text(more)} more" if more is not None and total > done else ""))


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class PlainProgress:
    """One line per analysis started and finished, for logs and CI."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.clock = _Clock()

    def _say(self, text: str) -> None:
        print(f"talkgen: {text}", file=self.stream, flush=True)

    def start(self, total: int, expected: dict[tuple[str, str], float], workers: int = 1,
              hints: dict[tuple[str, str], float] | None = None,
              declared: dict[tuple[str, str], float] | None = None) -> None:
        self.clock.start(total, expected, workers, hints, declared)
        left = self.clock.remaining()
        self._say(f"{total} analyses to run or read from the cache"
                  + ("" if left is None else f"; {'at least' if self.clock.partial else 'about'} "
                                            f"{_clock_text(left)} of work"))

    def begin(self, subject: str, analysis: str) -> None:
        self._say(f"[{self.clock.done + 1}/{self.clock.total}] {analysis} on {subject}: started")

    def end(self, subject: str, analysis: str, status: str, seconds: float, cached: bool) -> None:
        self.clock.finish((subject, analysis), seconds, cached)
        how = "from the cache" if cached else f"{status} in {seconds:.1f} s"
        left = self.clock.remaining()
        self._say(f"[{self.clock.done}/{self.clock.total}] {analysis} on {subject}: {how}; "
                  f"elapsed {_clock_text(self.clock.elapsed())}, about {_clock_text(left)} left")

    def step(self, subject: str, analysis: str, done: float, total: float, unit: str, seconds: float) -> None:
        self._say(f"{analysis} on {subject}: {_step_text(done, total, unit, seconds)}")

    def close(self) -> None:
        pass


class LiveProgress:
    """A live progress bar on a terminal (rich): the running analysis, done/total, elapsed, time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.clock = _Clock()
        self._left = TextColumn("{task.fields[left]}")
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("left"), self._left,
                            console=Console(stderr=True), transient=False)
        self.task = None
        self.running: list[str] = []  # what the workers are computing now
        self.detail: dict[str, str] = {}  # how far each of them has come, when it said

    def start(self, total: int, expected: dict[tuple[str, str], float], workers: int = 1,
              hints: dict[tuple[str, str], float] | None = None,
              declared: dict[tuple[str, str], float] | None = None) -> None:
        self.clock.start(total, expected, workers, hints, declared)
        self.bar.start()
        self.task = self.bar.add_task("starting", total=total, left=_clock_text(self.clock.remaining()))

    def begin(self, subject: str, analysis: str) -> None:
        self.running.append(f"{analysis} on {subject}")
        self._describe()

    def _describe(self) -> None:
        shown = [f"{r} ({self.detail[r]})" if r in self.detail else r for r in self.running]
        self.bar.update(self.task, description=" | ".join(shown) or "working")

    def step(self, subject: str, analysis: str, done: float, total: float, unit: str, seconds: float) -> None:
        self.detail[f"{analysis} on {subject}"] = _step_text(done, total, unit, seconds)
        self._describe()

    def end(self, subject: str, analysis: str, status: str, seconds: float, cached: bool) -> None:
        self.clock.finish((subject, analysis), seconds, cached)
        self.detail.pop(f"{analysis} on {subject}", None)
        if f"{analysis} on {subject}" in self.running:
            self.running.remove(f"{analysis} on {subject}")
            self._describe()
        if status == "failed":
            self.bar.console.print(f"[red]failed[/red] {analysis} on {subject}", highlight=False)
        self.bar.update(self.task, advance=1, left=_clock_text(self.clock.remaining()))

    def close(self) -> None:
        if self.task is not None:
            self.bar.update(self.task, description="done")
        self.bar.stop()


def reporter(quiet: bool = False, stream: IO[str] | None = None) -> Progress | None:
    """The progress display for this process: live on a terminal, plain lines elsewhere, none if quiet."""
    if quiet:
        return None
    out = stream or sys.stderr
    if stream is None and out.isatty():
        return LiveProgress()
    return PlainProgress(out)
