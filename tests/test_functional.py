"""lepton_nn.functional: results against hand computations and naive loops, the tie and padding
rules, numerical stability, and the errors bad input gets."""
import itertools

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F


def naive_conv2d(x, w, b, stride, pad):
    """The convolution equation as seven nested loops: independent of the reference's tensordot."""
    n, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.zeros((n, c_in, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    h_out, w_out = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, c_out, h_out, w_out))
    for i_n, o, i, j in itertools.product(range(n), range(c_out), range(h_out), range(w_out)):
        y[i_n, o, i, j] = b[o] + sum(xp[i_n, c, i * stride + p, j * stride + q] * w[o, c, p, q]
                                     for c in range(c_in) for p in range(kh) for q in range(kw))
    return y


@pytest.mark.parametrize("n, c_in, c_out, h, w, k, stride, pad", [
    (1, 1, 2, 5, 5, 3, 1, 0), (2, 3, 2, 7, 6, 3, 2, 1), (1, 2, 1, 6, 7, 5, 1, 2), (2, 2, 3, 4, 5, 1, 2, 0)])
def test_conv2d_matches_the_equation_and_the_shape_formula(n, c_in, c_out, h, w, k, stride, pad):
    rng = np.random.default_rng(0)
    x, wt, b = rng.standard_normal((n, c_in, h, w)), rng.standard_normal((c_out, c_in, k, k)), rng.standard_normal(c_out)
    y = F.conv2d(x, wt, b, stride=stride, padding=pad)
    assert y.shape == (n, c_out, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
    np.testing.assert_allclose(y.data, naive_conv2d(x, wt, b, stride, pad), rtol=1e-12, atol=1e-12)


def test_conv2d_rectangular_stride_and_padding_pairs():
    x = np.random.default_rng(1).standard_normal((1, 1, 6, 7))
    y = F.conv2d(x, np.ones((1, 1, 3, 3)), stride=(1, 2), padding=(0, 1))
    assert y.shape == (1, 1, 4, 4)
    assert y.data[0, 0, 0, 1] == pytest.approx(x[0, 0, 0:3, 1:4].sum())


def test_first_layer_computes_no_input_gradient():
    x = ln.tensor(np.ones((1, 1, 4, 4)))  # data: requires no gradient
    w = ln.tensor(np.ones((2, 1, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, np.full((2, 1, 3, 3), 4.0))


def test_max_pool_tie_goes_to_the_first_maximum_in_row_major_order():
    x = ln.tensor(np.array([[[[5.0, 5.0, 1.0, 2.0],
                              [5.0, 0.0, 2.0, 2.0]]]]), requires_grad=True)
    y = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y.data, [[[[5.0, 2.0]]]])
    y.backward(np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(x.grad, [[[[10.0, 0.0, 0.0, 20.0],
                                             [0.0, 0.0, 0.0, 0.0]]]])


def test_max_pool_padding_never_wins_and_overlaps_add_up():
    x = ln.tensor(-np.arange(1.0, 10.0).reshape(1, 1, 3, 3), requires_grad=True)  # all negative
    y = F.max_pool2d(x, 3, stride=1, padding=1)
    assert y.shape == (1, 1, 3, 3)
    assert np.all(y.data < 0)  # a zero from the padding would have won otherwise
    y.sum().backward()
    # x[0,0] = −1 is the maximum of the four windows that contain it
    assert x.grad[0, 0, 0, 0] == 4.0 and x.grad.sum() == 9.0


def test_avg_pool_border_divisor():
    x = np.ones((1, 1, 3, 3))
    with_pad = F.avg_pool2d(x, 3, stride=1, padding=1).data[0, 0]
    without = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).data[0, 0]
    assert with_pad[0, 0] == pytest.approx(4 / 9) and with_pad[1, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(without, np.ones((3, 3)))


def test_cross_entropy_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]
    z = ln.tensor(np.array([[0.0, np.log(3.0)], [0.0, np.log(3.0)]]), requires_grad=True)
    loss = F.cross_entropy(z, np.array([1, 0]))
    assert loss.item() == pytest.approx((-np.log(0.75) - np.log(0.25)) / 2)
    loss.backward()
    np.testing.assert_allclose(z.grad, np.array([[0.25, -0.25], [-0.75, 0.75]]) / 2)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_is_finite_for_huge_logits(scale):
    z = ln.tensor(np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.cross_entropy(z, np.array([1, 1]))
        loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(z.grad))
    if scale == 1e4:  # sample 0 is wrong by 2e4 nats, sample 1 right with certainty
        assert loss.item() == pytest.approx(1e4, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_cross_entropy_equals_the_composition(dtype):
    """The fused kernel's loss and gradient are those of −log_softmax(z)[y], averaged."""
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((6, 5)).astype(dtype), rng.integers(0, 5, 6)
    fused_in = ln.tensor(logits, requires_grad=True)
    composed_in = ln.tensor(logits, requires_grad=True)
    fused = F.cross_entropy(fused_in, labels)
    composed = -(composed_in.log_softmax()[np.arange(6), labels]).mean()
    fused.backward()
    composed.backward()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(fused.item(), composed.item(), rtol=tol)
    np.testing.assert_allclose(fused_in.grad, composed_in.grad, rtol=tol, atol=tol)
    # and both are (softmax(z) − onehot(y)) / N
    expected = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True) - np.eye(5)[labels]) / 6
    np.testing.assert_allclose(fused_in.grad, expected, rtol=10 * tol, atol=10 * tol)


def test_cross_entropy_gradient_wrt_probabilities_is_minus_y_over_yhat():
    """A common derivation (docs/tutorial.md) writes ∂CE/∂ŷ_i = −1/ŷ_i; the correct derivative of CE = −Σ y_i log ŷ_i is
    −y_i/ŷ_i: zero for every class the target gives no weight. Composed through softmax it
    becomes ŷ − y."""
    y = np.array([[0.0, 1.0, 0.0], [0.2, 0.0, 0.8]])
    z = ln.tensor(np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.4]]), requires_grad=True)
    y_hat = z.softmax()
    y_hat_leaf = ln.tensor(y_hat.data.copy(), requires_grad=True)
    (-(ln.tensor(y) * y_hat_leaf.log()).sum()).backward()
    np.testing.assert_allclose(y_hat_leaf.grad, -y / y_hat.data, rtol=1e-14)
    assert y_hat_leaf.grad[0, 0] == 0.0 and y_hat_leaf.grad[0, 0] != -1 / y_hat.data[0, 0]
    (-(ln.tensor(y) * y_hat.log()).sum()).backward()
    np.testing.assert_allclose(z.grad, y_hat.data - y, rtol=1e-12, atol=1e-15)


def test_probability_targets_match_label_targets_when_one_hot():
    z = np.random.default_rng(5).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    np.testing.assert_allclose(F.cross_entropy(z, np.eye(3)[labels]).item(), F.cross_entropy(z, labels).item(),
                               rtol=1e-12)


@pytest.mark.parametrize("backend", ln.kernels.available_backends())
@pytest.mark.parametrize("n, c_in, c_out, h, w, k, stride, pad, pool, pool_stride", [
    (4, 1, 3, 28, 28, 3, 1, 0, 2, 2),   # the MNIST CNN's first block, smaller
    (1, 3, 2, 9, 8, 3, 1, 1, 2, 2),     # batch 1, odd size, padding
    (2, 2, 3, 11, 10, 5, 2, 2, 3, 2),   # stride 2, overlapping pool windows that do not tile
    (2, 9, 2, 8, 8, 3, 1, 1, 2, 1),     # 81 taps: the fast kernels take their GEMM path
])
def test_fused_conv_relu_max_pool_equals_the_composition(backend, n, c_in, c_out, h, w, k, stride, pad, pool, pool_stride):
    rng = np.random.default_rng(7)
    x, wt, b = rng.standard_normal((n, c_in, h, w)), rng.standard_normal((c_out, c_in, k, k)), rng.standard_normal(c_out)
    fused, composed = ([ln.tensor(a, requires_grad=True) for a in (x, wt, b)] for _ in range(2))
    with ln.backend(backend):
        y_fused = F.conv2d_relu_max_pool2d(*fused, stride=stride, padding=pad, pool_size=pool, pool_stride=pool_stride)
        y_composed = F.max_pool2d(F.relu(F.conv2d(*composed, stride=stride, padding=pad)), pool, pool_stride)
        upstream = rng.standard_normal(y_fused.shape)
        y_fused.backward(upstream)
        y_composed.backward(upstream)
    np.testing.assert_allclose(y_fused.data, y_composed.data, rtol=1e-12, atol=1e-12)
    for f, c in zip(fused, composed):
        np.testing.assert_allclose(f.grad, c.grad, rtol=1e-10, atol=1e-10)


def test_linear_op_equals_the_composition():
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s) for s in [(2, 3, 5), (4, 5), (4,)])
    fused = [ln.tensor(a, requires_grad=True) for a in (x, w, b)]
    composed = [ln.tensor(a, requires_grad=True) for a in (x, w, b)]
    upstream = rng.standard_normal((2, 3, 4))
    F.linear(*fused).backward(upstream)
    y = composed[0] @ composed[1].T + composed[2]
    y.backward(upstream)
    np.testing.assert_allclose(F.linear(x, w, b).data, y.data, rtol=1e-13)
    for f, c in zip(fused, composed):
        np.testing.assert_allclose(f.grad, c.grad, rtol=1e-13)


def test_nll_and_mse_by_hand():
    log_probs = np.log(np.array([[0.5, 0.5], [0.1, 0.9]]))
    assert F.nll_loss(log_probs, np.array([0, 1])).item() == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)
    assert F.mse_loss(np.array([1.0, 2.0]), np.array([3.0, 2.0])).item() == pytest.approx(2.0)


def test_dropout():
    x = np.ones((200, 100))
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False).data, x)
    ln.seed(0)
    y = F.dropout(x, 0.25).data
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.01
    with pytest.raises(ValueError, match="dropout: p"):
        F.dropout(x, 1.0)


def test_float32_stays_float32_through_a_small_network():
    rng = np.random.default_rng(0)
    x = ln.tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    w = ln.tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), requires_grad=True)
    d = ln.tensor(rng.standard_normal((10, 36)).astype(np.float32), requires_grad=True)
    h = F.max_pool2d(F.relu(F.conv2d(x, w)), 2).flatten()
    loss = F.cross_entropy(F.linear(h, d), np.array([3, 7]))
    loss.backward()
    assert loss.dtype == np.float32 and w.grad.dtype == np.float32 and d.grad.dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(np.ones((1, 3, 5, 5)), np.ones((4, 2, 3, 3))),
     r"conv2d: input has 3 channels \(shape \(1, 3, 5, 5\)\) but weight expects C_in = 2"),
    (lambda: F.conv2d(np.ones((3, 5, 5)), np.ones((4, 3, 3, 3))), r"conv2d: input must be 4-D .* got shape \(3, 5, 5\)"),
    (lambda: F.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))), r"conv2d: input height 2 .* smaller than the kernel 3"),
    (lambda: F.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), bias=np.ones(3)), r"conv2d: bias must have shape \(2,\)"),
    (lambda: F.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((2, 1, 3, 3))), r"conv2d: input dtype float32 differs"),
    (lambda: F.linear(np.ones((2, 5)), np.ones((3, 4))), r"linear: input has 5 features .* in_features = 4"),
    (lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 3])), r"cross_entropy: labels must lie in \[0, 3\), got values from 0 to 3"),
    (lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 1, 2])), r"cross_entropy: labels must have shape \(2,\)"),
    (lambda: F.cross_entropy(np.ones((2, 3)), np.array([0.5, 0.5])), r"cross_entropy: probability targets must have"),
    (lambda: F.mse_loss(np.ones((2, 1)), np.ones(2)), r"mse_loss: prediction shape \(2, 1\) differs from target shape \(2,\)"),
    (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2), r"max_pool2d: padding \(2, 2\) must be at most half"),
    (lambda: F.max_pool2d(np.ones((1, 4, 4)), 2), r"max_pool2d: input must be 4-D"),
    (lambda: F.conv2d(np.ones((1, 1, 4, 4), np.int64), np.ones((1, 1, 3, 3))), r"conv2d: input must be float32 or float64, got dtype int64"),
])
def test_bad_input_names_the_op_and_the_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()
