"""Each way a fast backend computes conv2d (its CONV_ALGORITHMS: "direct", "gemm", "blas",
"winograd") against the reference, the specification, forward and every gradient.

The engine runs each backend's automatic choice (algorithm=None), checked here with the others
and in tests/test_kernels.py; every algorithm is also run by name, on shapes that reach the edges of the "gemm"
algorithm's blocking: several blocks of output pixels (a plane of more than 512 pixels), a depth
C_in·kH·kW over two GEMM passes (> 256), output channels that leave a partial MR×NR tile, a
batch whose weight gradient is summed in several runs of samples, stride, padding, a kernel
1×1 and rectangular kernels, empty batches and channels; for Winograd F(2×2, 3×3), planes of odd
size (their last tiles half outside) and every padding it takes (0, 1, 2).

Tolerance: as tests/test_kernels.py (1e-4 in float32, 1e-10 in float64, relative to the largest
output): the algorithms differ from the reference only in the order of their sums.
"""
import numpy as np
import pytest

from lepton_nn import kernels
from lepton_nn.kernels import reference

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(name not in kernels.available_backends(),
                                                        reason=f"backend {name} unavailable"))
            for name in ("c", "numba")]
DTYPES = [np.float32, np.float64]
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

# (N, C_in, H, W), C_out, kernel, stride, padding
SHAPES = [
    ((2, 3, 7, 9), 5, (3, 3), (1, 1), (1, 1)),
    ((3, 32, 28, 28), 64, (3, 3), (1, 1), (1, 1)),      # the benchmark's layer, batch 3
    ((2, 4, 11, 13), 70, (5, 3), (2, 3), (2, 0)),      # rectangular kernel, unequal strides
    ((1, 1, 5, 5), 9, (1, 1), (1, 1), (0, 0)),          # 1×1, one input channel
    ((5, 17, 30, 31), 33, (3, 3), (2, 2), (1, 1)),      # odd everything, stride 2
    ((9, 40, 9, 9), 10, (3, 3), (1, 1), (2, 2)),        # depth 360: two GEMM passes; 9 samples
    ((2, 2, 40, 50), 3, (3, 3), (1, 1), (1, 1)),        # 2000 pixels: four pixel blocks
    ((0, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1)),          # no sample
    ((2, 3, 6, 6), 0, (3, 3), (1, 1), (0, 0)),          # no output channel
    ((2, 5, 8, 11), 6, (3, 3), (1, 1), (0, 0)),         # no padding, a 6×9 output
    ((3, 4, 5, 6), 7, (3, 3), (1, 1), (0, 0)),          # rows too short for C's "wide rows" forward
    ((2, 1, 28, 28), 64, (3, 3), (1, 1), (1, 1)),       # few taps, many output channels
    ((3, 5, 10, 37), 11, (5, 3), (1, 1), (2, 1)),       # rectangular at stride 1: 3 vectors a row, 75 taps
    ((72, 2, 5, 6), 3, (3, 3), (1, 1), (1, 1)),         # runs of 9 samples: a batch of 8 and 1
    ((5, 32, 64, 64), 64, (3, 3), (1, 1), (1, 1)),      # large planes: batches of 2 samples
]


def module(backend):
    return kernels.get(backend).module  # the backend's own functions, whatever the engine runs


def algorithms(backend):
    return [None, *module(backend).CONV_ALGORITHMS]  # None: the automatic choice


def takes(conv, algorithm, weight, stride, padding):
    """Whether `algorithm` of module `conv` computes this convolution (the others refuse it)."""
    if algorithm == "winograd":
        return weight.shape[2:] == (3, 3) and tuple(stride) == (1, 1) and max(padding) <= 2
    return True


def assert_matches(actual, expected, dtype):
    assert isinstance(actual, np.ndarray) and actual.shape == expected.shape and actual.dtype == dtype
    tol = TOLERANCE[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def case(shape, dtype, seed=0):
    x_shape, c_out, kernel, stride, padding = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((c_out, x_shape[1]) + kernel).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    y_shape = reference.conv2d_forward(x, weight, bias, stride, padding).shape
    grad_y = rng.standard_normal(y_shape).astype(dtype)
    return x, weight, bias, stride, padding, grad_y


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_fast_backends_offer_the_gemm_algorithm(backend):
    assert "gemm" in module(backend).CONV_ALGORITHMS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x{}-co{}-k{}-s{}-p{}".format(*s))
def test_every_algorithm_matches_the_reference(backend, dtype, shape):
    x, weight, bias, stride, padding, grad_y = case(shape, dtype)
    conv = module(backend)
    want_y = reference.conv2d_forward(x, weight, bias, stride, padding)
    want_grads = reference.conv2d_backward(grad_y, x, weight, stride, padding)
    for algorithm in algorithms(backend):
        if not takes(conv, algorithm, weight, stride, padding):
            continue
        for b in (bias, None):
            y = conv.conv2d_forward(x, weight, b, stride, padding, algorithm=algorithm)
            assert_matches(y, want_y if b is not None else reference.conv2d_forward(x, weight, None, stride, padding),
                           dtype)
    for algorithm in algorithms(backend):
        if not takes(conv, algorithm, weight, stride, padding):
            continue
        got = conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm)
        for name, g, w in zip(("grad_x", "grad_w", "grad_b"), got, want_grads):
            assert_matches(g, w, dtype), f"{algorithm}: {name}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True)])
def test_each_gradient_alone(backend, need):
    x, weight, bias, stride, padding, grad_y = case(SHAPES[0], np.float64)
    want = reference.conv2d_backward(grad_y, x, weight, stride, padding)
    for algorithm in algorithms(backend):
        got = module(backend).conv2d_backward(grad_y, x, weight, stride, padding, *need, algorithm=algorithm)
        for wanted, g, w in zip(need, got, want):
            if wanted:
                assert_matches(g, w, np.float64)
            else:
                assert g is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_reach_the_outputs_the_reference_says(backend):
    x, weight, bias, stride, padding, grad_y = case(SHAPES[0], np.float64)
    x[0, 1, 3, 4] = np.nan
    x[1, 2, 0, 0] = np.inf
    grad_y[1, 3, 2, 2] = np.nan
    want = (reference.conv2d_forward(x, weight, bias, stride, padding),
            *reference.conv2d_backward(grad_y, x, weight, stride, padding))
    conv = module(backend)
    for algorithm in algorithms(backend):
        got = (conv.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm),
               *conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm))
        for g, w in zip(got, want):
            assert np.isnan(w).any()
            if algorithm == "winograd":
                # its transforms subtract inputs (inf − inf is NaN) and mix a tile's 4×4 inputs into all
                # its 2×2 outputs: non-finite wherever the reference is, and maybe at a tile's neighbours
                assert not np.isfinite(g[~np.isfinite(w)]).any()
                finite = np.isfinite(g) & np.isfinite(w)
                assert finite.any()
            else:
                np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
                np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
                finite = np.isfinite(w)
            assert_matches(g[finite], w[finite], np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_infinite_weight(backend):
    # the input gradient of "direct" and "winograd" is a convolution of grad_y padded with zeros,
    # and 0·inf is NaN: non-finite wherever the reference is, maybe NaN where it has ±inf; the
    # engine's choice (None: "gemm" for non-finite weights) gives the reference's exactly
    x, weight, bias, stride, padding, grad_y = case(SHAPES[0], np.float64)
    weight[2, 1, 0, 1] = np.inf
    want = (reference.conv2d_forward(x, weight, bias, stride, padding),
            *reference.conv2d_backward(grad_y, x, weight, stride, padding))
    conv = module(backend)
    for algorithm in algorithms(backend):
        got = (conv.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm),
               *conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm))
        for name, g, w in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
            exact = algorithm in (None, "gemm", "blas") or name != "grad_x"
            if algorithm == "winograd" and name == "y":
                exact = False  # inf − inf in its transforms, as above
            if exact:
                np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{algorithm} {name}")
                np.testing.assert_array_equal(np.isinf(g), np.isinf(w), err_msg=f"{algorithm} {name}")
            else:
                assert not np.isfinite(g[~np.isfinite(w)]).any(), f"{algorithm} {name}"
            finite = np.isfinite(g) & np.isfinite(w)
            assert_matches(g[finite], w[finite], np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("infinite_weight", [False, True])
def test_the_automatic_choice_keeps_the_references_nan_and_inf(backend, infinite_weight):
    # 32 → 64 channels on 14×14 planes: where C picks "direct" for both gradients when the weights
    # are finite (its weight gradient masks the lanes past a row, which read the next row: an
    # inf there, at column 0, would give 0·inf = NaN), and "gemm" for the input gradient when not
    x, weight, bias, stride, padding, grad_y = case(((2, 32, 14, 14), 64, (3, 3), (1, 1), (1, 1)), np.float64)
    x[0, 3, 5, 0] = np.inf
    x[1, 7, 0, 13] = -np.inf
    x[1, 31, 13, 13] = np.nan
    grad_y[0, 9, 4, 13] = np.inf
    grad_y[1, 60, 0, 0] = np.nan
    if infinite_weight:
        weight[5, 30, 2, 0] = np.inf
    want = (reference.conv2d_forward(x, weight, bias, stride, padding),
            *reference.conv2d_backward(grad_y, x, weight, stride, padding))
    conv = module(backend)
    got = (conv.conv2d_forward(x, weight, bias, stride, padding),
           *conv.conv2d_backward(grad_y, x, weight, stride, padding))
    for name, g, w in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
        assert not np.isfinite(w).all(), name
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        np.testing.assert_array_equal(g[np.isinf(w)], w[np.isinf(w)], err_msg=name)
        finite = np.isfinite(w)
        assert finite.any(), name
        assert_matches(g[finite], w[finite], np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_same_bits_on_any_number_of_threads(backend, dtype):
    # 9 samples: the weight gradient's runs of samples do not split evenly over 2 or 3 threads
    x, weight, bias, stride, padding, grad_y = case(((9, 40, 23, 23), 10, (3, 3), (1, 1), (1, 1)), dtype)
    conv = module(backend)
    for algorithm in [a for a in algorithms(backend) if a in (None, "direct", "gemm", "winograd")]:
        def run(threads):
            return (conv.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm, threads=threads),
                    *conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm, threads=threads))
        one = run(1)
        for threads in (2, 3):
            for got, want in zip(run(threads), one):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unknown_or_unfitting_algorithm_is_refused(backend):
    x, weight, bias, stride, padding, grad_y = case(SHAPES[1], np.float32)
    conv = module(backend)
    with pytest.raises(ValueError, match="algorithm must be None or one of .*gemm.*got 'fft'"):
        conv.conv2d_forward(x, weight, bias, stride, padding, algorithm="fft")
    with pytest.raises(ValueError, match="algorithm must be None or one of .*got 'im2col'"):
        conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm="im2col")
    if "winograd" in conv.CONV_ALGORITHMS:
        for args in ((x, weight[:, :, :2], bias, stride, padding), (x, weight, bias, (2, 1), padding),
                     (x, weight, bias, stride, (3, 1))):
            with pytest.raises(ValueError, match="winograd algorithm takes 3×3 kernels, stride 1 and padding ≤ 2"):
                conv.conv2d_forward(*args, algorithm="winograd")
    for algorithm in algorithms(backend):  # whichever runs, before any work
        with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
            conv.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm, threads=0)
        with pytest.raises(ValueError, match="threads must be a positive int, got -1"):
            conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm, threads=-1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [SHAPES[2], SHAPES[5]], ids=["k5x3-stride2", "k3x3-pad2"])
def test_every_algorithm_equals_pytorch_in_float64(backend, shape):
    torch = pytest.importorskip("torch")
    x, weight, bias, stride, padding, grad_y = case(shape, np.float64, seed=3)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, weight, bias))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
    yt.backward(torch.from_numpy(grad_y))
    conv = module(backend)
    for algorithm in algorithms(backend):
        if not takes(conv, algorithm, weight, stride, padding):
            continue
        y = conv.conv2d_forward(x, weight, bias, stride, padding, algorithm=algorithm)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
        grads = conv.conv2d_backward(grad_y, x, weight, stride, padding, algorithm=algorithm)
        for got, want in zip(grads, (xt.grad, wt.grad, bt.grad)):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)
