"""What is specific to the c backend: its build, its argument checks, its workspaces.

Agreement with the reference on the grid of shapes is tests/test_kernels.py's job, for every
backend. Here: the extension was built and loads; when it is missing, the error says how to
fix it; wrong dtypes fail loudly instead of being reinterpreted by C; adam_step really is
bit-identical (including its vectorised, multi-threaded path); conv2d gives the same result
however the batch is split across its cached workspace; the fast paths that only the c backend
has (conv2d's direct and GEMM paths, unpadded max-pool, the fused conv → relu → max-pool's direct
and GEMM paths) keep the reference's rules for ties, NaN, padding and bias.
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
    lambda c: c.gelu_backward(np.ones(3, np.float32), np.ones(3, np.float64)),
    lambda c: c.layer_norm_forward(np.ones((2, 3), np.float32), (3,), np.ones(3), None, 1e-5),
    lambda c: c.masked_softmax_backward(np.ones((2, 3)), np.ones((2, 3), np.float32)),
], ids=["relu", "conv-weight", "conv-bias", "xent", "gelu", "layer-norm-weight", "masked-softmax"])
def test_mixed_dtypes_raise_a_clear_type_error(c, call):
    with pytest.raises(TypeError, match="float32 or float64 arrays, all of one dtype; got ") as err:
        call(c)
    assert "=float32" in str(err.value) and "=float64" in str(err.value)  # names each array's dtype


def test_non_float_arrays_are_refused(c):
    with pytest.raises(TypeError, match="x=int64"):
        c.relu_forward(np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError, match="integer class labels expected"):
        c.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_labels_out_of_range_are_refused_before_c_reads_them(c):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        c.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
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
    monkeypatch.setattr(kernels.get("c").module, "WORKSPACE_BYTES", workspace_bytes)
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


CONV_CASES = [  # x shape, C_out, kernel, stride, padding
    ((2, 3, 9, 8), 4, (3, 3), (1, 1), (0, 0)),  # stride 1: the one-line plane, rows copied into y
    ((2, 2, 5, 75), 3, (2, 3), (1, 1), (1, 0)),  # lines of several blocks of outputs at once
    ((3, 2, 10, 11), 5, (3, 2), (2, 1), (1, 2)),  # strides and padding: a line per row
    ((1, 3, 6, 7), 2, (1, 1), (1, 1), (0, 0)),  # 1x1: the plane already has rows of w_out
]


@pytest.mark.parametrize("path", ["direct", "gemm"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda case: "x{}-k{}-s{}-p{}".format(*(
    "x".join(map(str, v)) for v in (case[0], case[2], case[3], case[4]))))
def test_conv2d_paths_match_reference(c, monkeypatch, case, path):
    """Few taps run conv2d_forward as a direct C convolution, many taps as im2col + GEMM; force each."""
    x_shape, c_out, kernel, stride, padding = case
    if path == "gemm":
        monkeypatch.setattr(kernels.get("c").module, "DIRECT_MAX_TAPS", 0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal((c_out, x_shape[1]) + kernel)
    for bias in (None, rng.standard_normal(c_out)):
        y = c.conv2d_forward(x, weight, bias, stride, padding)
        np.testing.assert_allclose(y, reference.conv2d_forward(x, weight, bias, stride, padding),
                                   rtol=1e-10, atol=1e-12)
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


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))],
                         ids=["2x2-s2", "3x3-s2-overlap", "2x3-s1x2"])
def test_unpadded_max_pool_keeps_nan_and_tie_rules(c, kernel, stride):
    """Unpadded pooling runs a faster loop, with the NaN test only in planes that hold a NaN."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 8))
    x[0, 0, 2, 3] = x[0, 0, 2, 4] = x[0, 0, 3, 3] = np.nan  # several NaNs: the first one wins
    x[0, 1, 0, 1] = np.nan
    x[1, 0] = np.round(x[1, 0])  # many ties: the first maximum wins
    x[1, 1, 4] = np.inf
    x[1, 2, :3] = -np.inf
    y, argmax = c.max_pool2d_forward(x, kernel, stride, (0, 0))
    y_ref, argmax_ref = reference.max_pool2d_forward(x, kernel, stride, (0, 0))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)


FUSED_CASES = [  # x shape, C_out, kernel, stride, padding, pool kernel, pool stride
    ((3, 2, 11, 9), 4, (3, 3), (1, 1), (0, 0), (2, 2), (2, 2)),  # stride 1: the one-line plane
    ((2, 3, 10, 11), 5, (3, 2), (2, 1), (1, 2), (3, 3), (2, 2)),  # strides, padding, overlapping pools
    ((2, 1, 9, 9), 3, (5, 5), (1, 2), (2, 1), (2, 2), (1, 1)),
    ((1, 3, 13, 12), 2, (1, 1), (2, 2), (0, 0), (3, 2), (3, 2)),  # pools that do not tile the plane
]


@pytest.mark.parametrize("path", ["direct", "gemm"])
@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda case: "x{}-k{}-s{}-p{}-pool{}s{}".format(*(
    "x".join(map(str, v)) for v in (case[0], case[2], case[3], case[4], case[5], case[6]))))
def test_fused_conv_relu_pool_paths_match_reference(c, monkeypatch, case, path):
    """Few taps run a direct C convolution, many taps conv2d (GEMM) + max-pool; force each in turn.

    float64, so argmax must match exactly (float32 rounding could swap two near-equal values).
    """
    x_shape, c_out, kernel, stride, padding, pool_kernel, pool_stride = case
    if path == "gemm":
        monkeypatch.setattr(kernels.get("c").module, "DIRECT_MAX_TAPS", 0)
        monkeypatch.setattr(kernels.get("c").module, "WORKSPACE_BYTES", 3000)  # a few samples per chunk
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal((c_out, x_shape[1]) + kernel)
    for bias in (None, rng.standard_normal(c_out)):
        y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride)
        y_ref, argmax_ref = reference.conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding,
                                                                     pool_kernel, pool_stride)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(argmax, argmax_ref)
        grad_y = rng.standard_normal(y.shape)
        for need in ((True, True, True), (False, True, True), (True, False, False), (False, False, True)):
            ours = c.conv2d_relu_max_pool2d_backward(grad_y, y_ref, argmax_ref, x, weight, stride, padding, *need)
            theirs = reference.conv2d_relu_max_pool2d_backward(grad_y, y_ref, argmax_ref, x, weight, stride,
                                                               padding, *need)
            for wanted, a, b in zip(need, ours, theirs):
                assert (a is None) == (not wanted)
                if wanted:
                    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fused_conv_relu_pool_ties_and_nan_match_reference(c):
    """Blank regions give equal conv outputs (the first wins) and a NaN pixel gives NaN outputs
    (the first NaN wins, relu keeps it), as in the reference's separate conv, max-pool and relu."""
    x = np.zeros((2, 1, 12, 12), np.float32)
    x[0, 0, 6:, 6:] = 1.0  # a flat patch: ties inside and at its edge
    x[1, 0, 3, 4] = np.nan
    weight = np.random.default_rng(6).standard_normal((3, 1, 3, 3)).astype(np.float32)
    bias = np.array([0.5, -0.5, 0.0], np.float32)
    y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, bias, (1, 1), (1, 1), (2, 2), (2, 2))
    y_ref, argmax_ref = reference.conv2d_relu_max_pool2d_forward(x, weight, bias, (1, 1), (1, 1), (2, 2), (2, 2))
    assert np.isnan(y_ref).any()
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)  # NaNs in the same places
    np.testing.assert_array_equal(argmax, argmax_ref)


def test_fused_conv_relu_pool_float32_sums_stay_accurate(c):
    """The MNIST first layer: the weight gradient sums 64·169 terms per value, in double."""
    rng = np.random.default_rng(7)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    weight = (0.3 * rng.standard_normal((32, 1, 3, 3))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(32)).astype(np.float32)
    y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, bias, (1, 1), (0, 0), (2, 2), (2, 2))
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    y_ref, _ = reference.conv2d_relu_max_pool2d_forward(x64, w64, bias.astype(np.float64), (1, 1), (0, 0),
                                                        (2, 2), (2, 2))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    _, grad_w, grad_b = c.conv2d_relu_max_pool2d_backward(grad_y, y, argmax, x, weight, (1, 1), (0, 0), need_x=False)
    _, grad_w_ref, grad_b_ref = reference.conv2d_relu_max_pool2d_backward(
        grad_y.astype(np.float64), y.astype(np.float64), argmax, x64, w64, (1, 1), (0, 0), need_x=False)
    assert grad_w.dtype == grad_b.dtype == np.float32
    np.testing.assert_allclose(grad_w, grad_w_ref, rtol=1e-5)
    np.testing.assert_allclose(grad_b, grad_b_ref, rtol=1e-5)


def test_fused_conv_relu_pool_output_is_channels_last_memory(c):
    """The direct kernel works along channels and stores (N, H, W, C); the NCHW-shaped results
    are views of that memory, so a channels-last model's Flatten is a view, not a copy; and
    the backward takes either layout."""
    rng = np.random.default_rng(8)
    x, weight = rng.standard_normal((3, 1, 10, 10)), rng.standard_normal((20, 1, 3, 3))
    y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, None, (1, 1), (0, 0), (2, 2), (2, 2))
    assert y.shape == argmax.shape == (3, 20, 4, 4)
    for a in (y, argmax):
        assert a.transpose(0, 2, 3, 1).flags.c_contiguous
        assert np.shares_memory(a.transpose(0, 2, 3, 1).reshape(3, -1), a)
    grad_y = rng.standard_normal(y.shape)
    channels_last = c.conv2d_relu_max_pool2d_backward(
        np.ascontiguousarray(grad_y.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), y, argmax, x, weight, (1, 1), (0, 0))
    nchw = c.conv2d_relu_max_pool2d_backward(np.ascontiguousarray(grad_y), np.ascontiguousarray(y),
                                             np.ascontiguousarray(argmax), x, weight, (1, 1), (0, 0))
    for got, want in zip(channels_last, nchw):
        np.testing.assert_array_equal(got, want)


def test_fused_conv_relu_pool_backward_ignores_an_argmax_outside_the_conv_plane(c):
    """The kernel reads argmax as int32; an int64 index 2^32 + 5 must be dropped, not wrap to 5."""
    rng = np.random.default_rng(9)
    x, weight = rng.standard_normal((2, 1, 8, 8)), rng.standard_normal((17, 1, 3, 3))
    y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, None, (1, 1), (0, 0), (2, 2), (2, 2))
    grad_y = rng.standard_normal(y.shape)
    y[0, 3, 1, 2] = 1.0  # so that the dropped window would have passed its gradient on
    bad = argmax.astype(np.int64)
    bad[0, 3, 1, 2] = 2 ** 32 + 5
    dropped = grad_y.copy()
    dropped[0, 3, 1, 2] = 0
    got = c.conv2d_relu_max_pool2d_backward(grad_y, y, bad, x, weight, (1, 1), (0, 0))
    want = c.conv2d_relu_max_pool2d_backward(dropped, y, argmax, x, weight, (1, 1), (0, 0))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_fused_conv_relu_pool_checks_its_arguments(c):
    x, weight = np.ones((2, 1, 8, 8)), np.ones((3, 1, 3, 3))
    with pytest.raises(TypeError, match="all of one dtype"):
        c.conv2d_relu_max_pool2d_forward(x, weight.astype(np.float32), None, (1, 1), (0, 0), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="do not fit"):  # a 7x7 pool over a 6x6 conv output
        c.conv2d_relu_max_pool2d_forward(x, weight, None, (1, 1), (0, 0), (7, 7), (1, 1))
    y, argmax = c.conv2d_relu_max_pool2d_forward(x, weight, None, (1, 1), (0, 0), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="must be equal"):
        c.conv2d_relu_max_pool2d_backward(y[:, :2], y, argmax, x, weight, (1, 1), (0, 0))


def test_a_build_older_than_its_wrapper_names_the_missing_function(c):
    from lepton_nn.kernels import c_backend
    with pytest.raises(RuntimeError, match="no lepton_no_such_kernel_f32: it was built from older sources"):
        c_backend._kernel("no_such_kernel", np.dtype(np.float32))


def test_sequence_kernels_refuse_shapes_that_c_would_read_past(c):
    """The C loops read as many values as the shapes say: a weight, a gradient or a mask that
    does not fit is refused before C runs."""
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="weight has 5 values"):
        c.layer_norm_forward(x, (6,), np.ones(5), None, 1e-5)
    with pytest.raises(ValueError, match="trailing axes"):
        c.layer_norm_forward(x, (4,), None, None, 1e-5)
    y, mean, rstd = c.layer_norm_forward(x, (6,), None, None, 1e-5)
    with pytest.raises(ValueError, match="one value per position"):
        c.layer_norm_backward(x, x, (6,), mean[:2], rstd, None)
    with pytest.raises(ValueError, match="same shape"):
        c.gelu_backward(x[:2], x)
    with pytest.raises(ValueError):  # NumPy's own: the mask does not broadcast
        c.masked_softmax_forward(x, np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="same shape"):
        c.masked_softmax_backward(x[:, :5], x)
