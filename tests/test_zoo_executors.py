"""The zoo on an engine: a 2-worker local Ray cluster and a 2-worker local Dask cluster write the same chunk
files, byte for byte, as the serial build; a worker killed mid-shard costs that shard one more run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from talkgen.errors import TalkgenError
from talkgen.meta import executors
from talkgen.meta.zoo import ZooBuilder, ZooSpec, shard_chunks

# four chunks of two members; the last chunk's members train longest (chunks are cut in order of steps)
SPEC = ZooSpec(subject="digits-cnn", n=8, chunk=2, seed=5, steps=(40, 600))


def chunk_bytes(b: ZooBuilder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(b.dir.glob("chunk-*.safetensors")) if ".partial" not in p.name}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[str, bytes]:
    b = ZooBuilder(SPEC, tmp_path_factory.mktemp("serial"), threads=1)
    assert b.build()
    files = chunk_bytes(b)
    assert len(files) == 4
    return files


def test_shards_split_the_chunks_between_them():
    assert shard_chunks([0, 1, 2, 3, 4], (1, 2)) == [1, 3]
    assert sorted(sum((shard_chunks(list(range(7)), (i, 3)) for i in range(3)), [])) == list(range(7))


def test_a_worker_that_cannot_see_the_zoo_returns_the_files_and_the_local_executor_fills_a_gap(serial, tmp_path):
    spec = executors.asdict(SPEC)
    files = executors.train_shard(spec, (0, 4), [0], 1, str(tmp_path / "elsewhere" / SPEC.dirname()))
    assert sorted(files) == ["chunk-0000.safetensors", "chunk-0000.seconds.json"]
    assert files["chunk-0000.safetensors"] == serial["chunk-0000.safetensors"]
    assert not (tmp_path / "elsewhere").exists()  # it trained in a scratch folder of its own
    b = ZooBuilder(SPEC, tmp_path / "local", threads=1)
    b.dir.mkdir(parents=True)
    for name, data in serial.items():
        if name != "chunk-0000.safetensors":
            (b.dir / name).write_bytes(data)
    assert executors.run_shards(b, "local", threads=1) == [0]
    assert chunk_bytes(b) == serial
    assert b.load().train_seconds > 0  # the time each chunk took is beside it, not in it


def _kill_when_started(zoo_dir: Path, shard: str, killed: list[int], stop: threading.Event) -> None:
    """Kill (SIGKILL) the process running ``shard`` as soon as the attempts log says it started."""
    while not stop.is_set():
        for a in executors.attempts(zoo_dir):
            if a["shard"] == shard and a["event"] == "started":
                os.kill(a["pid"], signal.SIGKILL)
                killed.append(a["pid"])
                return
        time.sleep(0.005)


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_a_two_worker_cluster_writes_the_serial_build_and_survives_a_killed_worker(engine, serial, tmp_path):
    pytest.importorskip("distributed" if engine == "dask" else "ray")
    b = ZooBuilder(SPEC, tmp_path / engine)
    b.dir.mkdir(parents=True)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_started, args=(b.dir, "4/4", killed, stop), daemon=True)
    killer.start()
    lines: list[str] = []
    try:
        written = executors.run_shards(b, engine, workers=2, threads=1, say=lines.append)
    finally:
        stop.set()
        killer.join()
    assert written == [0, 1, 2, 3] and not b.missing()
    assert chunk_bytes(b) == serial
    log = executors.attempts(b.dir)
    assert len(killed) == 1
    # the killed shard started again and trained its chunk; every chunk was trained once, and a shard that
    # started again (its result was on the killed worker) found its chunk there and trained nothing
    starts = [a["shard"] for a in log if a["event"] == "started"]
    assert starts.count("4/4") == 2 and set(starts) == {"1/4", "2/4", "3/4", "4/4"}, starts
    assert sorted(a["chunk"] for a in log if a["event"] == "trained") == [0, 1, 2, 3], log
    assert [a["pid"] for a in log if a.get("chunk") == 3] != killed  # trained by the process that took over
    assert len({a["pid"] for a in log}) >= 2  # two workers took part
    index = json.loads((b.dir / "index.json").read_text())
    assert index["complete"] and len(index["chunks"]) == 4
    assert any(f"{engine}:" in line for line in lines) and any("shard 4/4 done" in line for line in lines)


def test_a_finished_zoo_starts_no_task(serial, tmp_path):
    b = ZooBuilder(SPEC, tmp_path / "done", threads=1)
    b.dir.mkdir(parents=True)
    for name, data in serial.items():
        (b.dir / name).write_bytes(data)
    assert executors.run_shards(b, "dask", workers=2) == []  # nothing missing: no cluster is even started
    assert executors.attempts(b.dir) == []


def test_the_command_line_says_what_does_not_go_together(tmp_path):
    from click.testing import CliRunner

    from talkgen.cli import cli

    for args, says in ((["--executor", "ray", "--shard", "1/2"], "--shard names one job"),
                       (["--address", "tcp://x:8786"], "go with --executor ray or dask"),
                       (["--executor", "dask", "--workers", "0"], "--workers must be at least 1"),
                       (["--executor", "spark"], "Invalid value for '--executor'")):
        r = CliRunner().invoke(cli, ["zoo", "build", "--n", "4", "--out", str(tmp_path / "b"), *args])
        assert r.exit_code != 0 and says in r.output, r.output
        assert not (tmp_path / "b").exists()
    with pytest.raises(TalkgenError, match="--executor must be one of"):
        executors.run_shards(ZooBuilder(SPEC, tmp_path), "spark")
