"""talkgen.attribution against answers worked out by hand: a linear model (every method has a
closed form), a piecewise-linear model (Integrated Gradients of a ReLU kink), Grad-CAM of a
global-average-pool head, and the integration rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from talkgen import attribution as A


def _linear():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    return model, x


def test_linear_model_closed_forms():
    model, x = _linear()
    w = model.weight.detach()
    t = torch.tensor([0, 2, 1, 2])
    wt = w[t]
    torch.testing.assert_close(A.saliency(model, x, t, abs=False), wt)
    torch.testing.assert_close(A.saliency(model, x, t), wt.abs())
    torch.testing.assert_close(A.input_x_gradient(model, x, t), x * wt)
    for method in ("gausslegendre", "riemann_left", "riemann_trapezoid"):
        attr, gap = A.integrated_gradients(model, x, t, n_steps=7, method=method, return_convergence_delta=True)
        torch.testing.assert_close(attr, x * wt)  # constant gradient: every rule is exact
        assert gap.abs().max() < 1e-5
    base = torch.full_like(x, 0.5)
    torch.testing.assert_close(A.integrated_gradients(model, x, t, baselines=base), (x - 0.5) * wt)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(A.smoothgrad(model, x, t, n_samples=5, stdev=0.3, generator=g), wt)
    torch.testing.assert_close(A.smoothgrad(model, x, t, n_samples=5, variant="smoothgrad_sq", generator=g), wt ** 2)
    assert A.smoothgrad(model, x, t, n_samples=5, variant="vargrad", generator=g).abs().max() < 1e-6
    # window of one element: the drop is exactly w_i x_i
    torch.testing.assert_close(A.occlusion(model, x, t, window=(1,)), x * wt)


class Kink(nn.Module):
    """score 0 = relu(x1 - 1) + 2 relu(x2); score 1 = 0."""

    def forward(self, x):
        s = torch.relu(x[:, 0] - 1) + 2 * torch.relu(x[:, 1])
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_integrated_gradients_of_a_relu_kink():
    x = torch.tensor([[3.0, 2.0]])
    # along a*x the first term switches on at a = 1/3: IG_1 = 3 * (2/3) = 2 = relu(3 - 1); IG_2 = 2 * 2 = 4
    exact = torch.tensor([[2.0, 4.0]])
    mid = A.integrated_gradients(Kink(), x, 0, n_steps=300, method="riemann_middle")
    torch.testing.assert_close(mid, exact)
    gl, gap = A.integrated_gradients(Kink(), x, 0, n_steps=50, return_convergence_delta=True)
    assert torch.allclose(gl, exact, rtol=0.03)  # a step in the integrand: Gauss-Legendre is only O(1/n) here
    assert abs(float(gap)) < 0.1  # the step at a = 1/3 is what Gauss-Legendre cannot integrate exactly
    torch.testing.assert_close(A.saliency(Kink(), x, 0, abs=False), torch.tensor([[1.0, 2.0]]))
    # occluding x1 removes relu(3-1) = 2; occluding x2 removes 4
    torch.testing.assert_close(A.occlusion(Kink(), x, 0, window=(1,)), exact)


def test_internal_batch_size_does_not_change_the_answer():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(5, 6)
    full = A.integrated_gradients(model, x, n_steps=20)
    chunked = A.integrated_gradients(model, x, n_steps=20, internal_batch_size=7)
    torch.testing.assert_close(full, chunked)
    s1 = A.smoothgrad(model, x, n_samples=6, generator=torch.Generator().manual_seed(3))
    s2 = A.smoothgrad(model, x, n_samples=6, internal_batch_size=4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s1, s2)
    o1 = A.occlusion(model, x, window=(2,))
    o2 = A.occlusion(model, x, window=(2,), internal_batch_size=5)
    torch.testing.assert_close(o1, o2)


def test_quadrature_rules():
    for method in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        nodes, weights = A.quadrature(method, 9)
        assert weights.sum() == pytest.approx(1.0)
        assert nodes.min() >= 0 and nodes.max() <= 1
    nodes, weights = A.quadrature("gausslegendre", 3)  # exact up to degree 5
    assert float(weights @ nodes ** 5) == pytest.approx(1 / 6, rel=1e-12)
    with pytest.raises(ValueError, match="unknown integration method"):
        A.quadrature("simpson", 5)


class GapHead(nn.Module):
    """conv (1x1) -> global average pool -> linear: Grad-CAM has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_grad_cam_closed_form():
    torch.manual_seed(0)
    model = GapHead()
    x = torch.randn(2, 1, 4, 4)
    acts = model.conv(x).detach()
    # d score_c / d A_k(i, j) = w_ck / 16, so alpha_k = w_ck / 16 and the map is relu(sum_k alpha_k A_k)
    w = model.fc.weight.detach()[1]
    expected = torch.relu((w.view(1, 2, 1, 1) / 16 * acts).sum(1, keepdim=True))
    torch.testing.assert_close(A.grad_cam(model, x, 1), expected)
    assert A.last_conv_layer(model, x) is model.conv
    assert A.grad_cam(model, x, 1, layer="conv").shape == x.shape


def test_methods_leave_the_model_alone_and_check_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4))
    x = torch.rand(3, 1, 4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outs = [A.saliency(model, x), A.input_x_gradient(model, x), A.integrated_gradients(model, x, n_steps=5),
            A.smoothgrad(model, x, n_samples=3), A.occlusion(model, x, window=(1, 2, 2)), A.grad_cam(model, x)]
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    predicted = model(x).argmax(1)
    torch.testing.assert_close(A.saliency(model, x), A.saliency(model, x, predicted))
    with pytest.raises(ValueError, match="target must be"):
        A.saliency(model, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="window"):
        A.occlusion(model, x, window=(1, 9, 9))
    assert not np.isnan(A.integrated_gradients(model, x, 2, n_steps=4).numpy()).any()
