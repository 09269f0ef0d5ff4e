"""Running a zoo's shards on an engine: this process (``local``), a Ray cluster or a Dask cluster.

A shard (i/k) is the chunks i, i + k, i + 2k, ... of the zoo (``talkgen.meta.zoo.shard_chunks``) and one
independent job: the task trains its chunks in a scratch folder of whichever machine runs it and returns
their files, and this process writes each one into the zoo by write-then-rename as its task comes back. A
chunk already in the zoo is never trained again, so a worker killed mid-shard costs that shard only: the
engine runs the task again (Ray's task retries, Dask's rescheduling of a lost worker's tasks), and if it
gives up, running the same command again trains only the chunks still missing. The files are the same
bytes whichever engine trained them (every random draw is seeded by zoo seed, chunk and step; the
threads per task are fixed, one by default).

Ray: ``ray.init(address=...)`` joins a running cluster; without an address a local one of ``workers``
CPUs is started and stopped. Dask: ``distributed.Client(address)``; without one a ``LocalCluster`` of
``workers`` single-threaded worker processes. The worker machines need talkgen installed, and nothing
else: the zoo's data is a bundled sample's.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from talkgen.errors import TalkgenError
from talkgen.files import write_atomic

EXECUTORS = ("local", "ray", "dask")
ATTEMPTS = "attempts.jsonl"  # what ran where: a line per shard task started and per chunk it trained


def spec_from_json(raw: dict[str, Any]):
    from talkgen.meta.zoo import ZooSpec

    return ZooSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def train_shard(spec: dict[str, Any], shard: tuple[int, int], todo: list[int], threads: int | None,
                zoo_dir: str, device: str = "cpu") -> dict[str, bytes]:
    """One task: train chunks ``todo`` of shard ``shard`` of the zoo ``spec`` (its ``asdict``), whose folder
    on the machine that submitted it is ``zoo_dir``.

    Where this worker sees that folder (one machine, or a shared file system), each chunk is written into
    it as soon as it is trained, training resumes from a chunk's saved state, a chunk already there is not
    trained again, and nothing is returned; the task notes in the zoo's attempts log when it started and
    each chunk it trained. Elsewhere it trains in a scratch folder and returns the files, name -> bytes.
    The members train on ``device`` of the worker."""
    target = Path(zoo_dir)
    shared = (target / "spec.json").is_file() and os.access(target, os.W_OK)
    note = (lambda **kv: _note(target / ATTEMPTS, shard, **kv)) if shared else (lambda **kv: None)
    note(event="started")
    from talkgen.meta.zoo import ZooBuilder  # torch: after the note, so that it is there from the task's start

    with tempfile.TemporaryDirectory(prefix="talkgen-zoo-") as scratch:
        b = ZooBuilder(spec_from_json(spec), target.parent if shared else Path(scratch), threads=threads or 1,
                       device=device)
        b.dir.mkdir(parents=True, exist_ok=True)
        for c in todo:
            if not b.chunk_path(c).is_file():
                b.train([c])
                note(event="trained", chunk=c)
        if shared:
            return {}
        return {p.name: p.read_bytes() for c in todo for p in (b.seconds_path(c), b.chunk_path(c)) if p.is_file()}


def _note(log: Path, shard: tuple[int, int], **fields: Any) -> None:
    line = {"shard": f"{shard[0] + 1}/{shard[1]}", "host": socket.gethostname(), "pid": os.getpid(),
            "time": time.time(), **fields}
    try:
        with open(log, "a", encoding="utf-8") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps(line) + "\n")
    except OSError:  # a note, never a reason to lose the shard
        pass


def attempts(zoo_dir: Path) -> list[dict[str, Any]]:
    """What shard tasks did for the zoo in ``zoo_dir``, oldest first (its attempts log): started, trained."""
    try:
        lines = (zoo_dir / ATTEMPTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def run_shards(builder, executor: str, *, shards: int | None = None, address: str | None = None,
               workers: int | None = None, threads: int | None = None,
               say: Callable[[str], None] | None = None, device: str = "cpu") -> list[int]:
    """Train every missing chunk of ``builder``'s zoo as ``shards`` independent tasks (default: one per
    missing chunk, at most 64) on ``executor``; returns the chunks written. A shard whose task failed for good
    is named in the error raised after the others are written. The members train on ``device`` (of each
    worker: a Ray task on a GPU asks the cluster for one)."""
    from talkgen.meta.zoo import shard_chunks

    if executor not in EXECUTORS:
        raise TalkgenError(f"--executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    say = say or (lambda line: None)
    builder.dir.mkdir(parents=True, exist_ok=True)
    builder.write_spec()
    missing = builder.missing()
    if not missing:
        return []
    k = shards or min(len(missing), 64)
    if k < 1:
        raise TalkgenError(f"--shards must be at least 1; got {k}")
    jobs = [((i, k), shard_chunks(missing, (i, k))) for i in range(k)]
    jobs = [(shard, todo) for shard, todo in jobs if todo]
    if executor == "local":
        if threads:
            builder.threads = threads
        import torch

        builder.device = torch.device(device)
        for shard, todo in jobs:
            builder.train(todo)
        builder.write_index()
        return missing
    spec = asdict(builder.spec)
    zoo_dir = str(builder.dir)
    written: list[int] = []
    failed: list[str] = []

    def land(shard: tuple[int, int], files: dict[str, bytes]) -> None:
        # from a worker that could not see the zoo (else it wrote them itself); the timing file first, as a
        # local build writes them: a chunk on disk always has its time
        for name in sorted(files, key=lambda n: n.endswith(".safetensors")):
            if not (builder.dir / name).is_file():
                write_atomic(builder.dir / name, files[name])
        written.extend(c for c in shard_chunks(missing, shard) if builder.chunk_path(c).is_file())
        builder.write_index()
        say(f"zoo shard {shard[0] + 1}/{shard[1]} done ({len(written)} of {len(missing)} chunks)")

    run = _on_ray if executor == "ray" else _on_dask
    run(jobs, spec, threads, zoo_dir, address, workers, land, failed, say, device)
    builder.write_index()
    if failed:
        raise TalkgenError(f"zoo shards failed on {executor}: {'; '.join(failed[:4])}; the other shards are written "
                           "(run the same command again to train only what is missing)")
    return sorted(written)


def _on_ray(jobs, spec, threads, zoo_dir, address, workers, land, failed, say, device) -> None:
    try:
        import ray
    except ImportError:
        raise TalkgenError("--executor ray needs Ray: pip install 'talkgen[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False)
    try:
        say(f"ray: {int(ray.cluster_resources().get('CPU', 0))} CPUs, {len(jobs)} shards")
        gpus = 1 if device.startswith("cuda") else 0  # Ray sets the task's CUDA_VISIBLE_DEVICES to the one it gives
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=3)(train_shard)  # a worker that dies: its shard again
        on = "cuda" if gpus else device
        pending = {task.remote(spec, shard, todo, threads, zoo_dir, on): shard for shard, todo in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard = pending.pop(ready[0])
            try:
                land(shard, ray.get(ready[0]))
            except ray.exceptions.RayError as e:
                failed.append(f"{shard[0] + 1}/{shard[1]}: {_first_line(e)}")
    finally:
        if started:
            ray.shutdown()


def _on_dask(jobs, spec, threads, zoo_dir, address, workers, land, failed, say, device) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise TalkgenError("--executor dask needs Dask: pip install 'talkgen[dask]'") from None
    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=workers or None, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        say(f"dask: {len(client.scheduler_info()['workers'])} workers, {len(jobs)} shards")
        futures = {client.submit(train_shard, spec, shard, todo, threads, zoo_dir, device, pure=False, retries=3): shard
                   for shard, todo in jobs}
        for future in as_completed(futures):
            shard = futures[future]
            try:
                land(shard, future.result())
            except Exception as e:  # the task's own error, or the cluster's (KilledWorker)
                failed.append(f"{shard[0] + 1}/{shard[1]}: {_first_line(e)}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
