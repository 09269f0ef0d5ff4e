"""Content-addressed result cache with atomic writes.

Key = sha256 of canonical JSON of (analysis name, hand-bumped version, params, seed,
model tensor hash, data hash). Tensors are hashed by bytes + dtype + shape, never pickled.
An entry is a directory written under a temporary name and renamed into place, so a
killed build leaves either a whole entry or none.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from talkgen.results import Result
from talkgen.hashing import hash_json

CACHE_FORMAT = 3  # 3: results carry their trust checks; 2: result.json keeps the analysis's key order


def cache_key(analysis: str, version: int, params: Mapping[str, Any], seed: int,
              model_hash: str, data_hash: str) -> str:
    return hash_json({"format": CACHE_FORMAT, "analysis": analysis, "version": version,
                      "params": dict(params), "seed": seed, "model": model_hash, "data": data_hash})


class Cache:
    """Results on disk under ``root/<analysis>/<key>/`` (arrays.npz, result.json, cost.json)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _dir(self, analysis: str, key: str) -> Path:
        return self.root / analysis / key

    def get(self, analysis: str, key: str) -> tuple[Result, dict[str, Any]] | None:
        d = self._dir(analysis, key)
        if not (d / "result.json").is_file():
            return None
        try:
            result = Result.load(str(d))
            cost = json.loads((d / "cost.json").read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - a damaged entry (any shape of damage) is a miss, overwritten by the next put
            return None
        return result, cost

    def put(self, analysis: str, key: str, result: Result, cost: Mapping[str, Any]) -> None:
        final = self._dir(analysis, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            result.save(str(tmp))
            (tmp / "cost.json").write_text(json.dumps(dict(cost), sort_keys=True), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
