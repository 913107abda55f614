"""Every fast kernel backend agrees with the NumPy reference, kernel by kernel.

`lepton_nn/kernels/reference.py` is the specification. Each backend that loads here (numba,
and c once it is built) runs every kernel forward and backward, in float32 and float64, on a
grid of shapes picked to reach the edge cases, and must return what the reference returns
for the same inputs: same shapes, same dtypes, same values up to rounding.

Tolerances. float64 must agree to 1e-10: both sides evaluate the same equation and differ
only in summation order, which costs a few ulps (~1e-15) per term. float32 gets 1e-4: its
unit roundoff is 6e-8, and a backend may sum in another order or in a wider accumulator than
NumPy, so two correct float32 results can differ by roughly (number of terms) × 6e-8 of the
largest term; our longest sums (weight gradients) have a few hundred terms, i.e. ~1e-5.
Rounding errors scale with the terms, not with the result, which may cancel to ~0, so the
absolute tolerance is scaled by the largest output. Any indexing mistake shows up as an
error of order 1, far above either tolerance.
"""
import importlib.util
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_nn import kernels
from lepton_nn.kernels import reference

DTYPES = [np.float32, np.float64]
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def native(*kernel_names):
    """The fast backends here that run every one of `kernel_names` natively: each test runs on
    those (backend, kernel) pairs only. The reference is compared with itself nowhere."""
    return [name for name in kernels.native_backends(*kernel_names) if name != "numpy"]


@pytest.fixture
def backend(request):
    return kernels.get(request.param)


@pytest.fixture(params=DTYPES, ids=lambda t: np.dtype(t).name)
def dtype(request):
    return np.dtype(request.param)


def assert_matches(actual, expected, dtype):
    """Same shape, both of `dtype`, equal within that dtype's tolerance (see the module docstring)."""
    assert isinstance(actual, np.ndarray), f"expected an ndarray, got {type(actual).__name__}"
    assert actual.shape == expected.shape
    assert expected.dtype == dtype and actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    tol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------- which backends run
def test_every_kernel_has_a_reference():
    """The reference defines every kernel: it is what a partial backend falls back to."""
    missing = [name for name in kernels.KERNELS if not callable(getattr(reference, name, None))]
    assert not missing


def test_a_partial_backend_falls_back_to_the_reference_kernel_by_kernel():
    import types
    fake = types.ModuleType("fake_backend")
    fake.relu_forward = lambda x: np.full_like(x, 7.0)  # "native", and recognisable
    backend = kernels.Backend("fake", fake)
    assert backend.native == ("relu_forward",)
    assert set(backend.fallback) == set(kernels.KERNELS) - {"relu_forward"}
    x = np.array([-1.0, 2.0])
    assert backend.relu_forward(x).tolist() == [7.0, 7.0]
    assert backend.relu_backward(np.ones(2), x).tolist() == [0.0, 1.0]  # the reference's
    fake.relu_backward = reference.relu_backward  # re-exporting the reference's own is not native
    assert kernels.Backend("fake", fake).native == ("relu_forward",)


def test_backends_report_their_coverage():
    for info in kernels.backends():
        if info.available:
            assert set(info.native) | set(info.fallback) == set(kernels.KERNELS)
            assert f"{len(info.native)} of {len(kernels.KERNELS)} kernels native" in str(info)


def test_backend_inventory():
    """numba must load whenever it is installed; any backend that did not load is reported as a skip."""
    infos = {info.name: info for info in kernels.backends()}
    assert infos["numpy"].available
    if importlib.util.find_spec("numba") is not None:
        assert infos["numba"].available, infos["numba"].reason
    missing = [str(info) for info in infos.values() if not info.available]
    if missing:
        pytest.skip("not tested here: " + "; ".join(missing))


# --------------------------------------------------------------------------- conv2d
def _conv_cases():
    """(x shape, C_out, kernel, stride, padding, bias?) for kernel 1/3/5 × stride 1/2 × padding 0/1/2.

    Two input groups: one sample with one channel and no bias, and a batch of two with three
    channels and a bias. H and W are odd or differ, so a swapped axis cannot pass.
    """
    cases = []
    for x_shape, with_bias in (((1, 1, 7, 9), False), ((2, 3, 6, 5), True)):
        for k, s, p in itertools.product((1, 3, 5), (1, 2), (0, 1, 2)):
            if min(x_shape[2:]) + 2 * p >= k:
                cases.append(pytest.param(x_shape, 4, (k, k), (s, s), (p, p), with_bias,
                                          id=f"x{'x'.join(map(str, x_shape))}-k{k}-s{s}-p{p}{'-bias' if with_bias else ''}"))
    # Non-square kernel, stride and padding: each axis must use its own.
    cases.append(pytest.param((2, 2, 8, 7), 3, (3, 1), (2, 1), (0, 1), True, id="k3x1-s2x1-p0x1"))
    cases.append(pytest.param((1, 2, 5, 9), 2, (2, 4), (1, 3), (1, 2), True, id="k2x4-s1x3-p1x2"))
    return cases


@pytest.mark.parametrize("backend", native('conv2d_forward', 'conv2d_backward'), indirect=True)
@pytest.mark.parametrize("x_shape, c_out, kernel, stride, padding, with_bias", _conv_cases())
def test_conv2d(backend, dtype, x_shape, c_out, kernel, stride, padding, with_bias):
    rng = np.random.default_rng(0)
    x = normal(rng, x_shape, dtype)
    weight = normal(rng, (c_out, x_shape[1], *kernel), dtype)
    bias = normal(rng, (c_out,), dtype) if with_bias else None

    y = backend.conv2d_forward(x, weight, bias, stride, padding)
    assert_matches(y, reference.conv2d_forward(x, weight, bias, stride, padding), dtype)

    grad_y = normal(rng, y.shape, dtype)
    grads = backend.conv2d_backward(grad_y, x, weight, stride, padding)
    expected = reference.conv2d_backward(grad_y, x, weight, stride, padding)
    for name, got, want in zip(("grad_x", "grad_w", "grad_b"), grads, expected):
        assert got is not None, name
        assert_matches(got, want, dtype)


@pytest.mark.parametrize("backend", native('conv2d_backward'), indirect=True)
@pytest.mark.parametrize("need_x, need_weight, need_bias", list(itertools.product((False, True), repeat=3)))
def test_conv2d_backward_computes_only_what_is_needed(backend, need_x, need_weight, need_bias):
    rng = np.random.default_rng(1)
    x, weight = normal(rng, (2, 3, 6, 5), np.float64), normal(rng, (4, 3, 3, 3), np.float64)
    grad_y = normal(rng, (2, 4, 3, 3), np.float64)  # stride 2, padding 1
    needs = (need_x, need_weight, need_bias)
    grads = backend.conv2d_backward(grad_y, x, weight, (2, 2), (1, 1), *needs)
    expected = reference.conv2d_backward(grad_y, x, weight, (2, 2), (1, 1))
    assert len(grads) == 3
    for needed, got, want in zip(needs, grads, expected):
        if needed:
            assert_matches(got, want, np.dtype(np.float64))
        else:
            assert got is None


# --------------------------------------------------------------------------- fused conv → relu → max-pool
FUSED_CASES = [  # x shape, C_out, kernel, stride, padding, pool kernel, pool stride, bias?
    pytest.param((8, 1, 28, 28), 6, (3, 3), (1, 1), (0, 0), (2, 2), (2, 2), True, id="mnist-block"),
    pytest.param((1, 3, 7, 9), 4, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), True, id="b1-padded-odd"),
    pytest.param((2, 1, 11, 10), 3, (5, 5), (2, 2), (2, 2), (3, 3), (2, 2), False, id="k5-s2-overlapping-pool"),
    pytest.param((2, 2, 9, 8), 3, (1, 1), (1, 1), (0, 0), (2, 2), (1, 1), True, id="k1-pool-s1"),
    pytest.param((2, 9, 8, 7), 2, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), True, id="81-taps-gemm-path"),
    # many taps and 40 output channels: the many-taps path's forward by the channel-blocked kernel
    pytest.param((2, 8, 9, 10), 40, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), True, id="72-taps-40-channels"),
    # more output channels than one SIMD block of the C kernels (16), the last block partial
    pytest.param((3, 2, 10, 11), 19, (3, 3), (1, 1), (0, 0), (2, 2), (2, 2), True, id="19-channels"),
    pytest.param((2, 1, 13, 12), 33, (2, 3), (2, 1), (1, 0), (3, 2), (1, 2), False, id="33-channels-non-square"),
]


@pytest.mark.parametrize("backend", native('conv2d_relu_max_pool2d_forward', 'conv2d_relu_max_pool2d_backward'), indirect=True)
@pytest.mark.parametrize("x_shape, c_out, kernel, stride, padding, pool, pool_stride, with_bias", FUSED_CASES)
def test_conv2d_relu_max_pool2d(backend, dtype, x_shape, c_out, kernel, stride, padding, pool, pool_stride, with_bias):
    rng = np.random.default_rng(2)
    x = normal(rng, x_shape, dtype)
    weight = normal(rng, (c_out, x_shape[1], *kernel), dtype)
    bias = normal(rng, (c_out,), dtype) if with_bias else None
    args = (x, weight, bias, stride, padding, pool, pool_stride)
    y, argmax = backend.conv2d_relu_max_pool2d_forward(*args)
    y_ref, argmax_ref = reference.conv2d_relu_max_pool2d_forward(*args)
    assert_matches(y, y_ref, dtype)
    np.testing.assert_array_equal(argmax, argmax_ref)  # continuous random inputs: no ties

    grad_y = normal(rng, y.shape, dtype)
    for needs in ((True, True, True), (False, True, True), (True, False, False)):
        grads = backend.conv2d_relu_max_pool2d_backward(grad_y, y, argmax, x, weight, stride, padding, *needs)
        expected = reference.conv2d_relu_max_pool2d_backward(grad_y, y_ref, argmax_ref, x, weight, stride, padding)
        for needed, got, want in zip(needs, grads, expected):
            if needed:
                assert_matches(got, want, dtype)
            else:
                assert got is None


# --------------------------------------------------------------------------- pooling
POOL_CASES = [  # x shape, kernel, stride, padding
    pytest.param((1, 1, 6, 6), (2, 2), (2, 2), (0, 0), id="tiles"),
    pytest.param((2, 3, 7, 9), (2, 2), (2, 2), (0, 0), id="leftover-row-and-column"),
    pytest.param((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), id="overlap-padded"),
    pytest.param((1, 2, 5, 8), (3, 3), (1, 1), (1, 1), id="stride1-padded"),
    pytest.param((2, 1, 9, 6), (2, 3), (1, 2), (1, 1), id="non-square"),
    pytest.param((1, 3, 8, 8), (5, 5), (3, 3), (2, 2), id="k5-s3-p2"),
    pytest.param((1, 1, 4, 4), (4, 4), (4, 4), (0, 0), id="one-window"),
]


def distinct_negative(rng, shape, dtype):
    """All different (so the maximum is unique) and all < 0 (so padding mistaken for 0 would win)."""
    size = int(np.prod(shape))
    return (-(1.0 + rng.permutation(size)) / size).reshape(shape).astype(dtype)


@pytest.mark.parametrize("backend", native('max_pool2d_forward', 'max_pool2d_backward'), indirect=True)
@pytest.mark.parametrize("x_shape, kernel, stride, padding", POOL_CASES)
def test_max_pool2d(backend, dtype, x_shape, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x = distinct_negative(rng, x_shape, dtype)
    y, argmax = backend.max_pool2d_forward(x, kernel, stride, padding)
    want_y, want_argmax = reference.max_pool2d_forward(x, kernel, stride, padding)
    assert_matches(y, want_y, dtype)
    assert argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, want_argmax)

    grad_y = normal(rng, y.shape, dtype)
    grad_x = backend.max_pool2d_backward(grad_y, argmax, x.shape)
    assert_matches(grad_x, reference.max_pool2d_backward(grad_y, want_argmax, x.shape), dtype)


@pytest.mark.parametrize("backend", native('max_pool2d_forward'), indirect=True)
def test_max_pool2d_2x2_stride_2_takes_nan_and_inf_as_the_reference(backend):
    # 2×2 windows at stride 2 have their own loop in both fast backends: NaN at every place of a
    # window, two in one (the last wins), ±inf, in a plane with a leftover row and column, and
    # a plane without NaN beside it, where the rule is not applied
    x = np.arange(2 * 5 * 7, dtype=np.float64).reshape(1, 2, 5, 7) % 5
    for r, c in ((0, 1), (1, 2), (1, 5), (2, 0), (3, 1), (3, 0), (2, 3), (2, 2)):
        x[0, 0, r, c] = np.nan
    x[0, 0, 0, 4], x[0, 0, 4, 6], x[0, 1, 1, 1], x[0, 1, 2, 5] = np.inf, np.nan, -np.inf, np.inf
    y, argmax = backend.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    want_y, want_argmax = reference.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, want_y)  # NaN where the reference has NaN, the rest equal
    np.testing.assert_array_equal(argmax, want_argmax)


@pytest.mark.parametrize("backend", native('max_pool2d_forward'), indirect=True)
def test_max_pool2d_ties_go_to_the_first_in_window(backend):
    x = np.array([[1, 1, 0, 2],
                  [1, 0, 2, 2],
                  [3, 0, 5, 5],
                  [0, 3, 5, 5]], dtype=np.float64).reshape(1, 1, 4, 4)
    y, argmax = backend.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y[0, 0], [[1, 2], [3, 5]])
    np.testing.assert_array_equal(argmax[0, 0], [[0, 3], [8, 10]])  # flat h·W + w: (0,0) (0,3) (2,0) (2,2)

    # A constant plane with padding: every element ties, and padding comes first in row-major
    # order for the border windows, yet the first real element must win.
    flat = -np.ones((1, 1, 3, 4))
    _, argmax = backend.max_pool2d_forward(flat, (3, 3), (1, 1), (1, 1))
    first_inside = [[max(i - 1, 0) * 4 + max(j - 1, 0) for j in range(4)] for i in range(3)]
    np.testing.assert_array_equal(argmax[0, 0], first_inside)
    np.testing.assert_array_equal(argmax, reference.max_pool2d_forward(flat, (3, 3), (1, 1), (1, 1))[1])


@pytest.mark.parametrize("backend", native('avg_pool2d_forward', 'avg_pool2d_backward'), indirect=True)
@pytest.mark.parametrize("count_include_pad", (True, False), ids=("include-pad", "exclude-pad"))
@pytest.mark.parametrize("x_shape, kernel, stride, padding", POOL_CASES)
def test_avg_pool2d(backend, dtype, x_shape, kernel, stride, padding, count_include_pad):
    rng = np.random.default_rng(3)
    x = normal(rng, x_shape, dtype)
    y = backend.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad)
    assert_matches(y, reference.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad), dtype)

    grad_y = normal(rng, y.shape, dtype)
    grad_x = backend.avg_pool2d_backward(grad_y, x.shape, kernel, stride, padding, count_include_pad)
    want = reference.avg_pool2d_backward(grad_y, x.shape, kernel, stride, padding, count_include_pad)
    assert_matches(grad_x, want, dtype)


# --------------------------------------------------------------------------- relu
@pytest.mark.parametrize("backend", native('relu_forward', 'relu_backward'), indirect=True)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 5, 7)], ids=str)
def test_relu(backend, dtype, shape):
    rng = np.random.default_rng(4)
    x = normal(rng, shape, dtype)
    x.reshape(-1)[::3] = 0  # exact zeros: the subgradient there is 0
    grad_y = normal(rng, shape, dtype)
    # ReLU does no arithmetic beyond a comparison, so results must be identical, not just close.
    y = backend.relu_forward(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, reference.relu_forward(x))
    grad_x = backend.relu_backward(grad_y, x)
    assert grad_x.dtype == dtype
    np.testing.assert_array_equal(grad_x, reference.relu_backward(grad_y, x))


@pytest.mark.parametrize("backend", native("leaky_relu_forward", "leaky_relu_backward"), indirect=True)
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 3, 5, 7)], ids=str)
@pytest.mark.parametrize("slope", [0.01, -0.5])
def test_leaky_relu(backend, dtype, shape, slope):
    rng = np.random.default_rng(5)
    x, grad_y = normal(rng, shape, dtype), normal(rng, shape, dtype)
    x.reshape(-1)[::3] = 0  # the kink: the left slope, as the reference
    if x.size > 1:
        x.reshape(-1)[1], grad_y.reshape(-1)[-1] = np.nan, np.inf  # passed through, never hidden
    y = backend.leaky_relu_forward(x, slope)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, reference.leaky_relu_forward(x, slope))  # one multiply: identical
    grad_x = backend.leaky_relu_backward(grad_y, x, slope)
    assert grad_x.dtype == dtype
    np.testing.assert_array_equal(grad_x, reference.leaky_relu_backward(grad_y, x, slope))


# --------------------------------------------------------------------------- softmax + cross-entropy
@pytest.mark.parametrize("backend", native('softmax_cross_entropy_forward', 'softmax_cross_entropy_backward'), indirect=True)
@pytest.mark.parametrize("n, k, scale, label_dtype", [
    pytest.param(1, 10, 1.0, np.int64, id="batch1"),
    pytest.param(64, 10, 3.0, np.int64, id="mnist-head"),
    pytest.param(7, 5, 1e4, np.int64, id="logits-1e4"),  # exp would overflow without the max shift
    pytest.param(6, 3, 1.0, np.int32, id="int32-labels"),
])
def test_softmax_cross_entropy(backend, dtype, n, k, scale, label_dtype):
    rng = np.random.default_rng(5)
    logits = normal(rng, (n, k), dtype, scale)
    labels = rng.integers(0, k, n).astype(label_dtype)
    loss, probs = backend.softmax_cross_entropy_forward(logits, labels)
    want_loss, want_probs = reference.softmax_cross_entropy_forward(logits, labels)
    assert_matches(loss, want_loss, dtype)
    assert_matches(probs, want_probs, dtype)
    assert np.isfinite(loss).all() and np.isfinite(probs).all()

    grad_loss = normal(rng, (n,), dtype)
    grad_logits = backend.softmax_cross_entropy_backward(grad_loss, probs, labels)
    assert_matches(grad_logits, reference.softmax_cross_entropy_backward(grad_loss, want_probs, labels), dtype)


# --------------------------------------------------------------------------- adam
@pytest.mark.parametrize("backend", native('adam_step'), indirect=True)
@pytest.mark.parametrize("weight_decay", (0.0, 0.01))
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5)], ids=str)
def test_adam_step(backend, dtype, shape, weight_decay):
    rng = np.random.default_rng(6)
    # lr = 0.1 makes each update large next to the parameters, so a wrong update cannot hide
    # inside the float32 tolerance.
    hyper = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
    param = normal(rng, shape, dtype)
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    want_param, want_m, want_v = param.copy(), m.copy(), v.copy()
    for step in (1, 2, 3):
        grad = normal(rng, shape, dtype)
        assert backend.adam_step(param, grad, m, v, step=step, **hyper) is None  # updates in place
        reference.adam_step(want_param, grad, want_m, want_v, step=step, **hyper)
        for got, want in ((param, want_param), (m, want_m), (v, want_v)):
            assert_matches(got, want, dtype)


@pytest.mark.parametrize("backend", native('adam_step', 'adam_steps'), indirect=True)
def test_adam_steps_updates_every_array_as_adam_step(backend, dtype):
    """Several arrays in one call (the largest above the threads' work threshold) give what
    adam_step gives on each."""
    rng = np.random.default_rng(9)
    hyper = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, step=3, weight_decay=0.01)
    shapes = [(7,), (3, 4, 5), (1,), (200, 300)]
    params, grads = ([normal(rng, shape, dtype) for shape in shapes] for _ in range(2))
    ms, vs = ([np.abs(normal(rng, shape, dtype)) for shape in shapes] for _ in range(2))
    want = [tuple(a.copy() for a in arrays) for arrays in zip(params, ms, vs)]
    assert backend.adam_steps(params, grads, ms, vs, **hyper) is None
    for (want_param, want_m, want_v), grad, *got in zip(want, grads, params, ms, vs):
        reference.adam_step(want_param, grad, want_m, want_v, **hyper)
        for g, w in zip(got, (want_param, want_m, want_v)):
            assert_matches(g, w, dtype)


# --------------------------------------------------------------------------- sequence models
def assert_matches_specials(actual, expected, dtype):
    """NaN, +inf and −inf exactly where the reference has them; the finite rest as assert_matches."""
    assert isinstance(actual, np.ndarray) and actual.shape == expected.shape
    assert expected.dtype == dtype and actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(actual), special(expected))
    finite = np.isfinite(expected)
    assert_matches(actual[finite], expected[finite], dtype)


@pytest.mark.parametrize("backend", native("embedding_backward"), indirect=True)
@pytest.mark.parametrize("indices_shape, num_embeddings, dim", [
    pytest.param((0,), 5, 3, id="no-position"),
    pytest.param((), 4, 6, id="one-index-0d"),
    pytest.param((7,), 3, 5, id="repeats"),  # 7 positions over 3 rows: rows are hit several times
    pytest.param((2, 9), 20, 37, id="unused-rows-37-columns"),  # rows no position uses stay 0
    pytest.param((12, 64), 65, 128, id="baby-gpt"),  # above the threads' threshold
])
def test_embedding_backward(backend, dtype, indices_shape, num_embeddings, dim):
    """The scatter-add adds each row's gradients in the reference's order (np.add.at's): equal bit for bit."""
    rng = np.random.default_rng(13)
    indices = rng.integers(0, num_embeddings, indices_shape)
    grad_y = normal(rng, indices_shape + (dim,), dtype)
    grad_w = backend.embedding_backward(grad_y, indices, num_embeddings)
    want = reference.embedding_backward(grad_y, indices, num_embeddings)
    assert grad_w.dtype == dtype and grad_w.shape == (num_embeddings, dim)
    np.testing.assert_array_equal(grad_w, want)


@pytest.mark.parametrize("backend", native("embedding_backward"), indirect=True)
def test_embedding_backward_refuses_an_index_it_would_write_outside_the_table(backend):
    grad_y = np.ones((3, 4))
    for bad in ([0, 3, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            backend.embedding_backward(grad_y, np.array(bad), 3)


@pytest.mark.parametrize("backend", native("gelu_forward", "gelu_backward"), indirect=True)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 3, 5, 7), (12, 64, 96)], ids=str)  # the last: threads
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "invalid value" on the −∞·0 made on purpose
def test_gelu(backend, dtype, approximate, shape):
    rng = np.random.default_rng(10)
    x, grad_y = normal(rng, shape, dtype, 3.0), normal(rng, shape, dtype)
    flat = x.reshape(-1)
    if flat.size > 9:  # the tails, where Φ saturates, and NaN/±inf (−∞·0 = NaN), from below and from above
        flat[:9] = [0.0, 6.0, -6.0, 12.0, -12.0, 40.0, np.nan, np.inf, -np.inf]
        grad_y.reshape(-1)[[0, -1]] = np.nan, np.inf
    y = backend.gelu_forward(x, approximate)
    assert_matches_specials(y, reference.gelu_forward(x, approximate), dtype)
    grad_x = backend.gelu_backward(grad_y, x, approximate)
    assert_matches_specials(grad_x, reference.gelu_backward(grad_y, x, approximate), dtype)


LAYER_NORM_CASES = [  # x shape, normalized_shape, weight and bias given
    pytest.param((0, 8), (8,), "both", id="empty-batch"),
    pytest.param((3, 1), (1,), "both", id="one-value"),  # σ² = 0: y = β
    pytest.param((3, 5), (5,), "none", id="no-affine"),
    pytest.param((2, 3, 7), (7,), "weight", id="weight-only"),
    pytest.param((4, 37), (37,), "bias", id="bias-only-37-columns"),  # not a multiple of the column blocks
    pytest.param((2, 3, 4, 5), (4, 5), "both", id="2d-normalized-shape"),
    pytest.param((12, 64, 128), (128,), "both", id="baby-gpt"),  # above the threads' threshold
]


@pytest.mark.parametrize("backend", native("layer_norm_forward", "layer_norm_backward"), indirect=True)
@pytest.mark.parametrize("x_shape, normalized_shape, affine", LAYER_NORM_CASES)
def test_layer_norm(backend, dtype, x_shape, normalized_shape, affine):
    rng = np.random.default_rng(11)
    x = normal(rng, x_shape, dtype, 2.0) + dtype.type(1)  # μ ≠ 0
    weight = normal(rng, normalized_shape, dtype) if affine in ("both", "weight") else None
    bias = normal(rng, normalized_shape, dtype) if affine in ("both", "bias") else None
    got = backend.layer_norm_forward(x, normalized_shape, weight, bias, 1e-5)
    want = reference.layer_norm_forward(x, normalized_shape, weight, bias, 1e-5)
    for g, w in zip(got, want):  # y, mean, rstd
        assert_matches(g, w, dtype)

    grad_y = normal(rng, x_shape, dtype)
    _, mean, rstd = want
    expected = reference.layer_norm_backward(grad_y, x, normalized_shape, mean, rstd, weight)
    for needs in ((True, True, True), (True, False, False), (False, True, True), (False, False, True)):
        grads = backend.layer_norm_backward(grad_y, x, normalized_shape, mean, rstd, weight, *needs)
        assert len(grads) == 3
        for needed, g, w in zip(needs, grads, expected):
            if needed:
                assert_matches(g, w, dtype)
            else:
                assert g is None


SOFTMAX_CASES = [  # scores shape, mask shape (None: no mask), causal
    pytest.param((2, 3, 5, 7), None, False, id="no-mask"),
    pytest.param((2, 3, 5, 7), None, True, id="causal-Tq<Tk"),
    pytest.param((2, 7, 5), None, True, id="causal-Tq>Tk"),
    pytest.param((2, 3, 5, 7), (2, 3, 5, 7), False, id="full-mask"),
    pytest.param((2, 3, 5, 7), (5, 7), True, id="broadcast-mask-and-causal"),
    pytest.param((2, 3, 5, 33), (2, 1, 1, 33), False, id="key-padding-mask"),
    pytest.param((3, 0, 4), None, True, id="no-query"),
    pytest.param((3, 4, 0), (4, 0), False, id="no-key"),
    pytest.param((6,), None, False, id="1d"),
    pytest.param((12, 4, 64, 64), None, True, id="baby-gpt"),  # above the threads' threshold
]


@pytest.mark.parametrize("backend", native("masked_softmax_forward", "masked_softmax_backward"), indirect=True)
@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["scores-3", "scores-1e4"])  # 1e4: e^s overflows unshifted
@pytest.mark.parametrize("shape, mask_shape, causal", SOFTMAX_CASES)
def test_masked_softmax(backend, dtype, shape, mask_shape, causal, scale):
    rng = np.random.default_rng(12)
    scores = normal(rng, shape, dtype, scale)
    mask = None
    if mask_shape is not None:
        mask = rng.random(mask_shape) < 0.6
        if mask_shape[-2] > 1:
            mask[..., 0, :] = False  # fully masked rows: 0, not NaN
    if scores.ndim >= 2 and scores.size:
        scores[..., -1, :] = -np.inf  # a row whose kept keys are all −∞: 0 too
        scores[..., 0, -1] = -np.inf  # one −∞ key among finite ones: weight 0
    y = backend.masked_softmax_forward(scores, mask, causal)
    want = reference.masked_softmax_forward(scores, mask, causal)
    assert_matches(y, want, dtype)
    grad_y = normal(rng, shape, dtype)
    assert_matches(backend.masked_softmax_backward(grad_y, want),
                   reference.masked_softmax_backward(grad_y, want), dtype)


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("backend", native(), indirect=True)
def test_strided_views_are_read_correctly(backend):
    """Slices and transposes (as the op layer may pass) give the reference's results (each
    kernel the backend lacks is the reference's own, and passes trivially)."""
    rng = np.random.default_rng(7)
    f64 = np.dtype(np.float64)
    x = normal(rng, (2, 3, 11, 13), f64)[:, :, ::2, 1::2]  # (2, 3, 6, 6), every axis strided
    weight = normal(rng, (3, 4, 3, 3), f64).transpose(1, 0, 3, 2)  # (4, 3, 3, 3)
    bias = normal(rng, (8,), f64)[::2]
    y = backend.conv2d_forward(x, weight, bias, (1, 1), (1, 1))
    assert_matches(y, reference.conv2d_forward(x, weight, bias, (1, 1), (1, 1)), f64)
    grad_y = normal(rng, (2, 4, 6, 6), f64).transpose(0, 1, 3, 2)
    for got, want in zip(backend.conv2d_backward(grad_y, x, weight, (1, 1), (1, 1)),
                         reference.conv2d_backward(grad_y, x, weight, (1, 1), (1, 1))):
        assert_matches(got, want, f64)

    y, argmax = backend.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    want_y, want_argmax = reference.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert_matches(y, want_y, f64)
    np.testing.assert_array_equal(argmax, want_argmax)
    grad_y = normal(rng, (2, 3, 3, 3), f64).transpose(0, 1, 3, 2)
    assert_matches(backend.max_pool2d_backward(grad_y, argmax, x.shape),
                   reference.max_pool2d_backward(grad_y, want_argmax, x.shape), f64)
    assert_matches(backend.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1)),
                   reference.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1)), f64)
    assert_matches(backend.avg_pool2d_backward(grad_y, x.shape, (3, 3), (2, 2), (1, 1)),
                   reference.avg_pool2d_backward(grad_y, x.shape, (3, 3), (2, 2), (1, 1)), f64)

    np.testing.assert_array_equal(backend.relu_forward(x.T), reference.relu_forward(x.T))
    grad_y = normal(rng, (2, 3, 6, 12), f64)[..., ::-2]
    np.testing.assert_array_equal(backend.relu_backward(grad_y, x), reference.relu_backward(grad_y, x))

    logits = normal(rng, (5, 4), f64).T  # (4, 5)
    labels = np.array([0, 4, 2, 1, 3, 3, 0, 1])[::2]
    loss, probs = backend.softmax_cross_entropy_forward(logits, labels)
    want_loss, want_probs = reference.softmax_cross_entropy_forward(logits, labels)
    assert_matches(loss, want_loss, f64)
    assert_matches(probs, want_probs, f64)
    grad_loss = normal(rng, (8,), f64)[::2]
    assert_matches(backend.softmax_cross_entropy_backward(grad_loss, np.asfortranarray(probs), labels),
                   reference.softmax_cross_entropy_backward(grad_loss, want_probs, labels), f64)

    for approximate in ("none", "tanh"):
        assert_matches(backend.gelu_forward(x.T, approximate), reference.gelu_forward(x.T, approximate), f64)
        assert_matches(backend.gelu_backward(grad_y, x, approximate),
                       reference.gelu_backward(grad_y, x, approximate), f64)
    weight, bias = normal(rng, (12,), f64)[::2], normal(rng, (6,), f64)
    y, mean, rstd = reference.layer_norm_forward(x, (6,), weight, bias, 1e-5)
    for got, want in zip(backend.layer_norm_forward(x, (6,), weight, bias, 1e-5), (y, mean, rstd)):
        assert_matches(got, want, f64)
    strided_mean = np.repeat(mean, 2)[::2]  # mean's values, not contiguous
    for got, want in zip(backend.layer_norm_backward(grad_y, x, (6,), strided_mean, rstd, weight),
                         reference.layer_norm_backward(grad_y, x, (6,), mean, rstd, weight)):
        assert_matches(got, want, f64)
    mask = np.ones((6, 12), bool)[:, ::2]
    mask[2] = False
    y = reference.masked_softmax_forward(x.transpose(0, 1, 3, 2), mask, True)
    assert_matches(backend.masked_softmax_forward(x.transpose(0, 1, 3, 2), mask, True), y, f64)
    assert_matches(backend.masked_softmax_backward(grad_y, y.transpose(0, 1, 3, 2)),
                   reference.masked_softmax_backward(grad_y, y.transpose(0, 1, 3, 2)), f64)


@pytest.mark.parametrize("backend", native('adam_step'), indirect=True)
def test_adam_step_never_loses_an_update_on_a_view(backend):
    """A strided param cannot be updated through a flat copy: either it is updated in place
    like the reference does, or the backend refuses with ValueError. Silence is the bug."""
    rng = np.random.default_rng(8)
    f64 = np.dtype(np.float64)
    param, m, v = (np.zeros((4, 6))[:, ::2] for _ in range(3))
    param[...] = normal(rng, param.shape, f64)
    grad = normal(rng, param.shape, f64)
    want_param, want_m, want_v = param.copy(), m.copy(), v.copy()
    reference.adam_step(want_param, grad, want_m, want_v, 0.1, 0.9, 0.999, 1e-8, 1)
    try:
        backend.adam_step(param, grad, m, v, 0.1, 0.9, 0.999, 1e-8, 1)
    except ValueError:
        return
    for got, want in ((param, want_param), (m, want_m), (v, want_v)):
        assert_matches(got, want, f64)


# --------------------------------------------------------------------------- NaN, inf, empty batch
@st.composite
def special_case(draw):
    """x (N, C, H, W) with N possibly 0 and NaN/±inf at drawn places, a window that fits, and
    a conv weight (finite: the weight never holds NaN in a model that trains)."""
    n, c, c_out = draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    h, w = (draw(st.integers(max(1, k - 2 * p), 6)) for k, p in zip(kernel, padding))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((c_out, c) + kernel)
    for _ in range(draw(st.integers(0, 4)) if x.size else 0):
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x, weight, kernel, stride, padding


def assert_same_specials(actual, expected):
    """NaN and ±inf exactly where the reference has them; the rest equal to float64 rounding."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    scale = max(1.0, float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("backend", native(*reference.KERNELS[:10]), indirect=True)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=special_case())
def test_kernels_propagate_nan_as_the_reference(backend, case):
    """Every window kernel and activation, forward and backward, on inputs holding NaN and ±inf
    and on an empty batch: NaN where the reference has NaN, the same winners (argmax)."""
    x, weight, kernel, stride, padding = case
    bias = np.linspace(-1, 1, weight.shape[0])
    y = backend.conv2d_forward(x, weight, bias, stride, padding)
    assert_same_specials(y, reference.conv2d_forward(x, weight, bias, stride, padding))
    grad_y = np.where(np.isnan(y), np.inf, 1.0)  # and inf from above
    for got, want in zip(backend.conv2d_backward(grad_y, x, weight, stride, padding),
                         reference.conv2d_backward(grad_y, x, weight, stride, padding)):
        assert_same_specials(got, want)

    (y, argmax), (want_y, want_argmax) = (k.max_pool2d_forward(x, kernel, stride, padding) for k in (backend, reference))
    assert_same_specials(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)  # the same winner, NaN or not, padding never
    grad_y = np.ones_like(y)
    assert_same_specials(backend.max_pool2d_backward(grad_y, argmax, x.shape),
                         reference.max_pool2d_backward(grad_y, want_argmax, x.shape))
    assert_same_specials(backend.avg_pool2d_forward(x, kernel, stride, padding, False),
                         reference.avg_pool2d_forward(x, kernel, stride, padding, False))

    grad = np.where(x > 0, np.nan, 1.0)  # NaN from above where the unit is on, and where it is off
    grad.flat[::2] = np.nan
    assert_same_specials(backend.relu_forward(x), reference.relu_forward(x))
    assert_same_specials(backend.relu_backward(grad, x), reference.relu_backward(grad, x))
    assert_same_specials(backend.leaky_relu_forward(x, 0.1), reference.leaky_relu_forward(x, 0.1))
    assert_same_specials(backend.leaky_relu_backward(grad, x, 0.1), reference.leaky_relu_backward(grad, x, 0.1))


@pytest.mark.parametrize("backend", native("conv2d_relu_max_pool2d_forward"), indirect=True)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=special_case())
def test_fused_conv_relu_max_pool_propagates_nan_as_the_reference(backend, case):
    """A NaN anywhere in a pooling window wins it, wherever it sits (the bug: numba's fused
    kernel kept it only when it came first), and the backward agrees from finite inputs with
    NaN or inf from above. (With NaN in x, the op layer takes the reference's backward.)"""
    x, weight, kernel, stride, padding = case
    conv_hw = [(s + 2 * p - k) // t + 1 for s, k, t, p in zip(x.shape[2:], kernel, stride, padding)]
    pool = (min(2, conv_hw[0]), min(2, conv_hw[1]))
    got = backend.conv2d_relu_max_pool2d_forward(x, weight, None, stride, padding, pool, pool)
    want = reference.conv2d_relu_max_pool2d_forward(x, weight, None, stride, padding, pool, pool)
    assert_same_specials(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    finite_x = np.nan_to_num(x, nan=0.5, posinf=2.0, neginf=-2.0)
    y, argmax = reference.conv2d_relu_max_pool2d_forward(finite_x, weight, None, stride, padding, pool, pool)
    grad_y = np.ones_like(y)
    grad_y.flat[::3] = np.nan
    for got, want in zip(backend.conv2d_relu_max_pool2d_backward(grad_y, y, argmax, finite_x, weight, stride, padding),
                         reference.conv2d_relu_max_pool2d_backward(grad_y, y, argmax, finite_x, weight, stride, padding)):
        assert_same_specials(got, want)


def with_specials(draw, a):
    """a with up to four of its values replaced by NaN, +inf or −inf at drawn places."""
    for _ in range(draw(st.integers(0, 4)) if a.size else 0):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


@st.composite
def sequence_case(draw):
    """Activations x (N, T, D) and attention scores (N, T_q, T_k), float64, N possibly 0, each with
    NaN/±inf at drawn places; a boolean mask (T_q, T_k) with some rows fully masked; and
    gradients from above, NaN or inf at drawn places."""
    n, t, d, t_k = draw(st.integers(0, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = with_specials(draw, 3 * rng.standard_normal((n, t, d)))
    scores = with_specials(draw, 3 * rng.standard_normal((n, t, t_k)))
    mask = rng.random((t, t_k)) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    grad_x, grad_scores = with_specials(draw, np.ones_like(x)), with_specials(draw, np.ones_like(scores))
    return x, grad_x, scores, grad_scores, mask


@pytest.mark.parametrize("backend", native("embedding_backward", "gelu_forward", "gelu_backward", "layer_norm_forward",
                                           "layer_norm_backward", "masked_softmax_forward", "masked_softmax_backward"),
                         indirect=True)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "invalid value" on the NaN made on purpose
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=sequence_case())
def test_sequence_kernels_propagate_nan_as_the_reference(backend, case):
    """GELU, layer norm and the masked softmax, forward and backward, and the embedding's
    scatter-add, on inputs and upstream gradients holding NaN and ±inf and on an empty batch:
    NaN and ±inf where the reference has them (a NaN or +inf score poisons its whole row, even
    where it is masked)."""
    x, grad_x, scores, grad_scores, mask = case
    for approximate in ("none", "tanh"):
        assert_same_specials(backend.gelu_forward(x, approximate), reference.gelu_forward(x, approximate))
        assert_same_specials(backend.gelu_backward(grad_x, x, approximate),
                             reference.gelu_backward(grad_x, x, approximate))

    d = x.shape[-1]
    weight, bias = np.linspace(0.5, 1.5, d), np.linspace(-1, 1, d)
    want = reference.layer_norm_forward(x, (d,), weight, bias, 1e-5)
    for got, expected in zip(backend.layer_norm_forward(x, (d,), weight, bias, 1e-5), want):
        assert_same_specials(got, expected)
    for got, expected in zip(backend.layer_norm_backward(grad_x, x, (d,), *want[1:], weight),
                             reference.layer_norm_backward(grad_x, x, (d,), *want[1:], weight)):
        assert_same_specials(got, expected)

    indices = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2]) % 3  # rows used several times
    np.testing.assert_array_equal(backend.embedding_backward(x, indices, 3),
                                  reference.embedding_backward(x, indices, 3))

    for m, causal in ((None, False), (None, True), (mask, False), (mask, True)):
        y = reference.masked_softmax_forward(scores, m, causal)
        assert_same_specials(backend.masked_softmax_forward(scores, m, causal), y)
        assert_same_specials(backend.masked_softmax_backward(grad_scores, y),
                             reference.masked_softmax_backward(grad_scores, y))


def test_numba_adam_compiles_once_for_any_number_of_parameter_arrays():
    """The numba Adam takes the arrays as tuples, whose length is part of the type: without the
    fixed-size groups a 50-array model (the baby GPT) compiled for ~9 minutes. Any number of
    arrays must reuse one compiled kernel per dtype, and still equal the reference."""
    if "numba" not in kernels.available_backends():
        pytest.skip("numba backend unavailable")
    nb = kernels.get("numba").module
    rng = np.random.default_rng(12)
    for count in (1, 3, 9, 20):
        params = [rng.standard_normal(17 + i) for i in range(count)]
        grads = [rng.standard_normal(17 + i) for i in range(count)]
        ours = [p.copy() for p in params], [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
        theirs = [p.copy() for p in params], [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
        nb.adam_steps(*ours[:1], grads, *ours[1:], 1e-3, 0.9, 0.999, 1e-8, 3, 0.01)
        reference.adam_steps(*theirs[:1], grads, *theirs[1:], 1e-3, 0.9, 0.999, 1e-8, 3, 0.01)
        for got, want in zip(ours[0] + ours[2], theirs[0] + theirs[2]):
            np.testing.assert_array_equal(got, want)
    float64_kernels = [sig for sig in nb._adam.signatures if str(sig[0].dtype.dtype) == "float64"]  # tuple of arrays
    assert len(float64_kernels) == 1, nb._adam.signatures
