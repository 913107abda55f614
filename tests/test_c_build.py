"""What is specific to the c backend: its build, its argument checks, its workspaces.

Agreement with the reference on the grid of shapes is tests/test_kernels.py's job, for every
backend. Here: the extension was built and loads; when it is missing, the error says how to
fix it; wrong dtypes fail loudly instead of being reinterpreted by C; adam_step really is
bit-identical (including its multi-threaded path); conv2d gives the same result however the
batch is split across its cached workspace.
"""
import importlib
import sys

import numpy as np
import pytest

from lepton_nn import kernels
from lepton_nn.kernels import reference

DTYPES = [np.float32, np.float64]


@pytest.fixture
def c():
    info = {i.name: i for i in kernels.backends()}["c"]
    if not info.available:
        pytest.skip(f"c backend unavailable: {info.reason}")
    return kernels.get("c")


def test_c_backend_is_built_and_available():
    """On our machines a C compiler is present, so a c backend that does not load is a bug."""
    info = {i.name: i for i in kernels.backends()}["c"]
    assert info.available, info.reason


def test_missing_extension_is_reported_with_the_fix(monkeypatch):
    monkeypatch.delitem(sys.modules, "lepton_nn.kernels.c_backend", raising=False)
    monkeypatch.setitem(sys.modules, "lepton_nn._lepton_c", None)  # makes its import fail
    with pytest.raises(ImportError, match=r"C extension not built: .*pip install -e \."):
        importlib.import_module("lepton_nn.kernels.c_backend")


@pytest.mark.parametrize("call", [
    lambda c: c.relu_backward(np.ones(3, np.float32), np.ones(3, np.float64)),
    lambda c: c.conv2d_forward(np.ones((1, 1, 4, 4), np.float32), np.ones((2, 1, 3, 3)), None, (1, 1), (0, 0)),
    lambda c: c.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)), np.ones(2, np.float32), (1, 1), (0, 0)),
    lambda c: c.softmax_cross_entropy_backward(np.ones(2, np.float32), np.ones((2, 3)), [0, 1]),
], ids=["relu", "conv-weight", "conv-bias", "xent"])
def test_mixed_dtypes_raise_a_clear_type_error(c, call):
    with pytest.raises(TypeError, match="float32 or float64 arrays, all of one dtype; got ") as err:
        call(c)
    assert "=float32" in str(err.value) and "=float64" in str(err.value)  # names each array's dtype


def test_non_float_arrays_are_refused(c):
    with pytest.raises(TypeError, match="x=int64"):
        c.relu_forward(np.arange(4, dtype=np.int64))
    with pytest.raises(TypeError, match="labels must be integers"):
        c.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_labels_out_of_range_raise_index_error(c):
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        c.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(IndexError):
        c.softmax_cross_entropy_backward(np.ones(2), np.full((2, 3), 1 / 3), np.array([-1, 0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("size", [7, 100_003], ids=["serial", "parallel"])
def test_adam_step_is_bit_identical_to_reference(c, dtype, size):
    rng = np.random.default_rng(0)
    param, grad, m = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(size)).astype(dtype)
    ours, theirs = [a.copy() for a in (param, grad, m, v)], [a.copy() for a in (param, grad, m, v)]
    for step in (1, 2, 3):
        assert c.adam_step(*ours, 1e-3, 0.9, 0.999, 1e-8, step, weight_decay=0.01) is None
        reference.adam_step(*theirs, 1e-3, 0.9, 0.999, 1e-8, step, weight_decay=0.01)
    for name, a, b in zip(("param", "grad", "m", "v"), ours, theirs):
        assert np.array_equal(a, b), f"{name} differs from the reference"


def test_adam_refuses_arrays_it_cannot_update_in_place(c):
    ok = np.zeros(4)
    strided = np.zeros(8)[::2]
    with pytest.raises(ValueError, match="param in place"):
        c.adam_step(strided, ok, ok.copy(), ok.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
    readonly = np.zeros(4)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="v in place"):
        c.adam_step(ok.copy(), ok, ok.copy(), readonly, 1e-3, 0.9, 0.999, 1e-8, 1)


@pytest.mark.parametrize("workspace_bytes", [1, 2000, 1 << 30], ids=["1-sample", "few-samples", "whole-batch"])
def test_conv2d_is_independent_of_workspace_chunking(c, monkeypatch, workspace_bytes):
    """Chunks of the batch go through a cached workspace; chunk size and reuse change nothing."""
    monkeypatch.setattr(kernels.get("c"), "WORKSPACE_BYTES", workspace_bytes)
    rng = np.random.default_rng(1)
    for x_shape, stride, padding in (((5, 3, 9, 7), (2, 1), (1, 2)), ((3, 2, 6, 6), (1, 1), (0, 0))):
        x = rng.standard_normal(x_shape)
        weight, bias = rng.standard_normal((4, x_shape[1], 3, 3)), rng.standard_normal(4)
        y = reference.conv2d_forward(x, weight, bias, stride, padding)
        np.testing.assert_allclose(c.conv2d_forward(x, weight, bias, stride, padding), y, rtol=1e-10, atol=1e-12)
        grad_y = rng.standard_normal(y.shape)
        for ours, theirs in zip(c.conv2d_backward(grad_y, x, weight, stride, padding),
                                reference.conv2d_backward(grad_y, x, weight, stride, padding)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_strided_inputs_are_made_contiguous(c):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 7, 3, 2)).transpose(3, 2, 1, 0)  # (2, 3, 7, 6), not C-contiguous
    weight = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(c.conv2d_forward(x, weight, None, (1, 1), (1, 1)),
                               reference.conv2d_forward(x, weight, None, (1, 1), (1, 1)), rtol=1e-10)
    np.testing.assert_array_equal(c.relu_forward(x), reference.relu_forward(x))


@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), (2, 2), (1, 1)), ((2, 2), (3, 3), (2, 2))],
                         ids=["overlapping", "all-padding-windows"])
def test_max_pool_nan_and_padding_rules_match_reference(c, kernel, stride, padding):
    """A NaN wins its window (as np.argmax); a window of padding only keeps -inf and the reference's index."""
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 5))
    x[0, 0, 1, 1] = np.nan
    x[1, 1, 2] = 7.0  # ties along a row: the first one wins
    y, argmax = c.max_pool2d_forward(x, kernel, stride, padding)
    y_ref, argmax_ref = reference.max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
