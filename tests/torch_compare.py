"""Comparing lepton_nn with PyTorch in float64, forward and every gradient: the helper of the
against-PyTorch tests (test_edge_cases.py, test_sequence_ops.py). Not a test module itself."""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import kernels


def assert_same(ours, theirs, what, tolerance=1e-10):
    """Equal to float64 rounding, NaN where PyTorch has NaN and ±inf where it has ±inf."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, PyTorch {theirs.shape}"
    scale = max(1.0, float(np.abs(theirs[np.isfinite(theirs)]).max(initial=0.0)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=tolerance * scale, err_msg=what)


def compare_with_torch(backend, ours_fn, torch_fn, inputs, upstream, tolerance=1e-10):
    """ours_fn on `backend` and torch_fn, each on float64 copies of `inputs`: the forward, then
    the gradient of every input for the upstream gradient upstream(shape of the output)."""
    torch = pytest.importorskip("torch")
    ours_in = [ln.tensor(a, requires_grad=True) for a in inputs]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in inputs]
    with kernels.backend(backend):
        y = ours_fn(*ours_in)
        g = upstream(y.shape)
        y.backward(g)
    y_t = torch_fn(*theirs_in)
    y_t.backward(torch.tensor(g))
    assert_same(y.data, y_t, "forward", tolerance)
    for i, (a, b) in enumerate(zip(ours_in, theirs_in)):
        ours_grad = a.grad if a.grad is not None else np.zeros_like(a.data)
        theirs_grad = b.grad if b.grad is not None else torch.zeros_like(b)
        assert_same(ours_grad, theirs_grad, f"gradient of input {i}", tolerance)
