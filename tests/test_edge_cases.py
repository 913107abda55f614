"""Every backend gives the same answer as PyTorch on the edge cases, as a class: hypothesis draws
shapes (odd sizes, an empty batch N = 0), window configurations (stride, padding) and where
NaN, +inf and −inf sit in the input and in the upstream gradient; each op's forward and every
gradient must then equal PyTorch's in float64, NaN for NaN, on every backend. The numpy
reference is checked the same way, so the specification itself agrees with PyTorch.

Skipped where torch is not installed; tests/test_kernels.py checks the fast kernels against
the reference without it, including NaN (test_kernels_propagate_nan_as_the_reference).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import kernels

from torch_compare import compare_with_torch  # tests/torch_compare.py

torch = pytest.importorskip("torch")
TF = torch.nn.functional

BACKENDS = kernels.available_backends()
SPECIAL = [np.nan, np.inf, -np.inf]


@st.composite
def arrays(draw, shape, special=SPECIAL):
    """A float64 array of `shape`, normal values with, sometimes, some of `special` (NaN, ±inf)
    at drawn positions."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if special and x.size and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(special))
    return x


@st.composite
def window_cases(draw):
    """(x shape, kernel, stride, padding) for a pooling or conv window that fits its input."""
    n, c = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    h, w = (draw(st.integers(max(1, k - 2 * p), 7)) for k, p in zip(kernel, padding))
    return (n, c, h, w), kernel, stride, padding


def compare(backend, ours_fn, theirs_fn, inputs, upstream_special=SPECIAL, data=None):
    """Forward and the gradient of every input, ours on `backend` against PyTorch's, for an
    upstream gradient drawn by hypothesis (with NaN/±inf, unless told otherwise)."""
    compare_with_torch(backend, ours_fn, theirs_fn, inputs,
                       lambda shape: data.draw(arrays(shape, special=upstream_special), label="upstream"))


edge = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("backend", BACKENDS)
@edge
@given(case=window_cases(), data=st.data())
def test_max_pool2d(backend, case, data):
    shape, kernel, stride, padding = case
    x = data.draw(arrays(shape), label="x")
    if data.draw(st.booleans(), label="all -inf"):
        x[:] = -np.inf  # the windows where a padding cell could wrongly win
    compare(backend, lambda t: F.max_pool2d(t, kernel, stride, padding),
            lambda t: TF.max_pool2d(t, kernel, stride, padding), [x], data=data)


@pytest.mark.parametrize("backend", BACKENDS)
@edge
@given(case=window_cases(), count_include_pad=st.booleans(), data=st.data())
def test_avg_pool2d(backend, case, count_include_pad, data):
    shape, kernel, stride, padding = case
    x = data.draw(arrays(shape), label="x")
    compare(backend, lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad),
            lambda t: TF.avg_pool2d(t, kernel, stride, padding, count_include_pad=count_include_pad),
            [x], data=data)


@pytest.mark.parametrize("backend", BACKENDS)
@edge
@given(case=window_cases(), c_out=st.integers(1, 3), data=st.data())
def test_conv2d(backend, case, c_out, data):
    shape, kernel, stride, padding = case
    x = data.draw(arrays(shape), label="x")
    w = data.draw(arrays((c_out, shape[1]) + kernel, special=()), label="w")
    b = data.draw(arrays((c_out,), special=()), label="b")
    compare(backend, lambda t, u, v: F.conv2d(t, u, v, stride, padding),
            lambda t, u, v: TF.conv2d(t, u, v, stride, padding), [x, w, b], data=data)


@pytest.mark.parametrize("backend", BACKENDS)
@edge
@given(case=window_cases(), c_out=st.integers(1, 3), pool=st.integers(1, 2), data=st.data())
def test_conv2d_relu_max_pool2d_is_the_three_ops(backend, case, c_out, pool, data):
    shape, kernel, stride, padding = case
    conv_hw = [(s + 2 * p - k) // st_ + 1 for s, k, st_, p in zip(shape[2:], kernel, stride, padding)]
    pool = min(pool, *conv_hw)
    x = data.draw(arrays(shape), label="x")
    w = data.draw(arrays((c_out, shape[1]) + kernel, special=()), label="w")
    b = data.draw(arrays((c_out,), special=()), label="b")
    compare(backend, lambda t, u, v: F.conv2d_relu_max_pool2d(t, u, v, stride, padding, pool),
            lambda t, u, v: TF.max_pool2d(TF.relu(TF.conv2d(t, u, v, stride, padding)), pool),
            [x, w, b], data=data)


ELEMENTWISE = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.1), lambda t: TF.leaky_relu(t, 0.1)),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "softmax": (lambda t: F.softmax(t, -1), lambda t: torch.softmax(t, -1)),
    "log_softmax": (lambda t: F.log_softmax(t, -1), lambda t: torch.log_softmax(t, -1)),
    "exp": (lambda t: t.exp(), torch.exp),
    "sum": (lambda t: t.sum(axis=-1), lambda t: t.sum(dim=-1)),
    "mean": (lambda t: t.mean(), lambda t: t.mean()),
    "mean_axis": (lambda t: t.mean(axis=0), lambda t: t.mean(dim=0)),
    "max": (lambda t: t.max(axis=-1), lambda t: t.amax(dim=-1)),
}
EMPTY_AXIS_REFUSED = {"max"}  # PyTorch too: "Expected reduction dim -1 to have non-zero size"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(ELEMENTWISE))
@edge
@given(shape=st.sampled_from([(0, 4), (3, 0), (1, 1), (3, 5), (2, 3, 7)]), data=st.data())
def test_elementwise_and_reductions(backend, op, shape, data):
    ours, theirs = ELEMENTWISE[op]
    x = data.draw(arrays(shape), label="x")
    if op in EMPTY_AXIS_REFUSED and shape[-1] == 0:
        with pytest.raises(ValueError, match=f"{op}: cannot reduce over an empty axis"):
            ours(ln.tensor(x))
        return
    compare(backend, ours, theirs, [x], data=data)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@edge
@given(n=st.integers(0, 4), k=st.integers(1, 5), data=st.data())
def test_cross_entropy(backend, reduction, n, k, data):
    logits = data.draw(arrays((n, k)), label="logits")
    labels = np.asarray(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    compare(backend, lambda t: F.cross_entropy(t, labels, reduction=reduction),
            lambda t: TF.cross_entropy(t, torch.tensor(labels), reduction=reduction), [logits],
            # not ±inf from above: (p − onehot)·inf is −inf at the label, where PyTorch's longer
            # formula (log_softmax's backward) gives inf − inf = NaN; both are IEEE-correct
            upstream_special=[np.nan], data=data)


@pytest.mark.parametrize("backend", BACKENDS)
@edge
@given(n=st.integers(0, 3), data=st.data())
def test_linear(backend, n, data):
    x = data.draw(arrays((n, 5)), label="x")
    w = data.draw(arrays((3, 5), special=()), label="w")
    b = data.draw(arrays((3,), special=()), label="b")
    compare(backend, F.linear, TF.linear, [x, w, b], data=data)
