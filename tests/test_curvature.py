"""Curvature against the exact Hessian of a tiny model (float64)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.functional import hessian

from talkgen.analyses.curvature import hutchinson_trace, lanczos_top_eigenvalues
from talkgen.analyses.loss import make_loss, parameter_copy


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    return model, x, y


def _exact(model, x, y):
    params = parameter_copy(model)
    names = list(params)
    shapes = [params[k].shape for k in names]
    flat = torch.cat([params[k].reshape(-1) for k in names]).detach()
    loss = make_loss(model, x, y)

    def f(v):
        out, i = {}, 0
        for k, s in zip(names, shapes):
            n = int(np.prod(s))
            out[k] = v[i:i + n].view(s)
            i += n
        return loss(out)

    return hessian(f, flat).numpy()


def test_top_eigenvalue_and_trace_match_the_exact_hessian():
    model, x, y = _tiny()
    h = _exact(model, x, y)
    exact = np.sort(np.linalg.eigvalsh(h))[::-1]
    params = parameter_copy(model)
    loss = make_loss(model, x, y)
    top = lanczos_top_eigenvalues(loss, params, 3, iterations=60, seed=0)
    assert abs(top[0] - exact[0]) / abs(exact[0]) < 1e-3, (top, exact[:3])
    trace, se = hutchinson_trace(loss, params, probes=2000, seed=0)
    assert abs(trace - np.trace(h)) / abs(np.trace(h)) < 0.05, (trace, np.trace(h), se)


def test_curvature_leaves_parameters_untouched():
    model, x, y = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = make_loss(model, x, y)
    lanczos_top_eigenvalues(loss, parameter_copy(model), 2, iterations=5, seed=0)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
