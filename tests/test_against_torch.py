"""lepton_nn's ops against PyTorch's in float64, forward and every gradient, on every backend
(skipped where torch is not installed). Shapes include odd sizes, 0-size and NaN."""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import kernels

torch = pytest.importorskip("torch")


def torch_grad(fn, x, g):
    t = torch.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


def ours_grad(fn, x, g):
    t = ln.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward(g)
    return y.data, t.grad


@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), (0, 4)], ids=str)
@pytest.mark.parametrize("slope", [0.01, 0.3, -0.5])
def test_leaky_relu_matches_pytorch(backend, shape, slope):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    if x.size:
        x.flat[0], x.flat[-1] = 0.0, np.nan  # the kink and a NaN
    with kernels.backend(backend):
        ours = ours_grad(lambda t: F.leaky_relu(t, slope), x, g)
    theirs = torch_grad(lambda t: torch.nn.functional.leaky_relu(t, slope), x, g)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)  # NaN where PyTorch has NaN
