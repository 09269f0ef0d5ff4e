"""The cost ledger: wall time, peak extra memory, forward and backward passes per analysis.

Forward passes are counted by a forward hook on the subject's top module; backward passes
by a hook on that forward's output tensor, which fires when a gradient flows back through
it. Both hooks are removed when the meter closes. Peak memory is the highest resident set
size seen by a 5 ms sampler, minus the size when the analysis started.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
from torch import nn


@dataclass
class Cost:
    wall_s: float = 0.0
    peak_mem_mb: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0
    examples_forward: int = 0
    threads: int = 0  # torch's intra-op threads while it ran
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 4), "peak_mem_mb": round(self.peak_mem_mb, 2),
                "forward_passes": self.forward_passes, "backward_passes": self.backward_passes,
                "examples_forward": self.examples_forward, "threads": self.threads,
                **{k: round(float(v), 2) for k, v in self.extra.items() if k == "gpu_peak_mb"}}


class CostMeter:
    """Context manager that measures one analysis run on ``model``."""

    def __init__(self, model: nn.Module, sample_every_s: float = 0.005) -> None:
        self.model = model
        self.cost = Cost()
        self._every = sample_every_s
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._handle = None

    def _make_hook(self) -> Any:
        # A plain closure over the Cost record, not a bound method: an analysis may deep-copy the
        # model (hooks included), and the copy's passes are then counted too.
        cost = self.cost

        def on_backward(grad: torch.Tensor) -> None:
            cost.backward_passes += 1

        def on_forward(module: nn.Module, inputs: Any, output: Any) -> None:
            cost.forward_passes += 1
            first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            if isinstance(first, torch.Tensor) and first.ndim:
                cost.examples_forward += int(first.shape[0])
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(on_backward)

        return on_forward

    def _sample(self) -> None:
        peak = self._base
        while not self._stop.wait(self._every):
            peak = max(peak, self._proc.memory_info().rss)
        peak = max(peak, self._proc.memory_info().rss)
        self.cost.peak_mem_mb = (peak - self._base) / 2**20

    def __enter__(self) -> "CostMeter":
        self._base = self._proc.memory_info().rss
        self.cost.threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._handle = self.model.register_forward_hook(self._make_hook())
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cost.wall_s = time.perf_counter() - self._t0
        if self._handle is not None:
            self._handle.remove()
        self._stop.set()
        self._thread.join()
