"""The Tensor and its autograd engine: dtypes, the gradient contract, graph depth, freeing."""
import numpy as np
import pytest

import lepton_nn as ln


def test_dtypes_float32_default_float64_preserved_ints_kept():
    assert ln.tensor([1.0, 2.0]).dtype == np.float32
    assert ln.tensor(np.zeros(3)).dtype == np.float64
    assert ln.tensor([1, 2]).dtype.kind == "i"
    assert ln.tensor([1.5], dtype=np.float64).dtype == np.float64
    x = ln.tensor(np.ones(3), requires_grad=True)
    (2 * x + 1).sum().backward()
    assert x.grad.dtype == np.float64
    y = ln.tensor([1.0, 2.0], requires_grad=True)
    (y * 3).sum().backward()
    assert y.grad.dtype == np.float32


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(ValueError, match="floating-point"):
        ln.tensor([1, 2], requires_grad=True)


def test_backward_needs_grad_for_non_scalar():
    x = ln.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        (x * 2).backward(np.ones(3))
    (x * 2).backward(np.full((2, 3), 0.5))
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_grad_is_none_until_backward_and_only_leaves_get_it():
    x = ln.tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden = x * x
    assert x.grad is None
    hidden.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    assert hidden.grad is None


def test_two_backward_passes_give_exactly_twice_the_gradient():
    x = ln.tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    loss = (x.exp() * x).sum()  # d/dx = e^x (1 + x)
    loss.backward(retain_graph=True)
    once = x.grad.copy()
    np.testing.assert_allclose(once, np.exp(x.data) * (1 + x.data), rtol=1e-14)
    loss.backward()
    np.testing.assert_array_equal(x.grad, 2 * once)


def test_rebuilding_the_graph_also_accumulates_and_zero_grad_resets():
    w = ln.tensor(np.array([1.0, 2.0]), requires_grad=True)
    for _ in range(3):
        (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, 3 * 2 * w.data)
    w.zero_grad()
    assert w.grad is None


def test_leaf_grads_share_memory_with_nothing_else():
    """.grad is kept without a copy when an op made it fresh, so check what must still be copied:
    one fresh array that Add passes to both of its inputs, a view (reshape), and the caller's
    own grad passed through unchanged."""
    a, b = (ln.tensor(np.ones((2, 3)), requires_grad=True) for _ in range(2))
    ((a + b) * 2.0).sum().backward()  # Mul makes a fresh array; Add hands that same array to a and b
    assert not np.shares_memory(a.grad, b.grad)
    a.grad += 1  # an optimizer may update a .grad in place
    np.testing.assert_array_equal(b.grad, np.full((2, 3), 2.0))

    flat = ln.tensor(np.ones(6), requires_grad=True)
    upstream = np.arange(6.0).reshape(2, 3)
    flat.reshape(2, 3).backward(upstream)
    assert not np.shares_memory(flat.grad, upstream)

    x = ln.tensor(np.ones(3), requires_grad=True)
    given = np.full(3, 2.0)
    (x + 1.0).backward(given)  # Add passes the caller's array through as it is
    assert not np.shares_memory(x.grad, given)
    given[:] = -1
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_a_freed_graph_refuses_a_second_pass():
    x = ln.tensor(np.ones(2), requires_grad=True)
    loss = (x.exp()).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_backward_frees_saved_buffers_of_intermediate_nodes():
    x = ln.tensor(np.ones((4, 4)), requires_grad=True)
    hidden = (x @ x).exp()
    loss = hidden.sum()
    assert hidden._node.ctx.saved  # exp saved its output for backward
    loss.backward()
    assert hidden._node.ctx is None and loss._node.ctx is None


def test_ten_thousand_op_chain():
    """d/dx (x·c^n) = c^n: an iterative topological sort handles any depth."""
    x = ln.tensor(np.array(1.0), requires_grad=True)
    y, c, n = x, 1.0001, 10_000
    for _ in range(n):
        y = y * c
    y.backward()
    assert x.grad == pytest.approx(c ** n, rel=1e-10)


def test_shared_subexpression_gets_both_contributions():
    x = ln.tensor(np.array(3.0), requires_grad=True)
    a = x * x          # used twice below
    (a + a * x).backward()  # d/dx (x² + x³) = 2x + 3x²
    assert x.grad == pytest.approx(2 * 3 + 3 * 9)


def test_broadcast_gradient_is_summed_back_to_the_input_shape():
    a = ln.tensor(np.ones((3, 1)), requires_grad=True)
    b = ln.tensor(np.ones((2, 3, 4)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (2, 3, 4)
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 8.0))  # each a[i] was copied 2·4 times


def test_incompatible_shapes_name_the_op():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        ln.tensor(np.ones((2, 3))) + ln.tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"matmul: expected .* got \(2, 3\) @ \(4, 5\)"):
        ln.tensor(np.ones((2, 3))) @ ln.tensor(np.ones((4, 5)))


def test_no_grad_and_detach_record_nothing():
    x = ln.tensor(np.ones(3), requires_grad=True)
    with ln.no_grad():
        y = x * 2
    assert not y.requires_grad and y._node is None
    z = (x * 2).detach()
    assert not z.requires_grad and z._node is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_are_stable_at_large_inputs(dtype):
    values = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        for name in ("sigmoid", "tanh", "softmax", "log_softmax"):
            x = ln.tensor(values, requires_grad=True)
            y = getattr(x, name)()
            (y * ln.tensor(np.linspace(-1, 1, 5).astype(dtype))).sum().backward()
            assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad)), name
    sig = ln.tensor(values).sigmoid().data
    np.testing.assert_allclose(sig[[0, 2, 4]], [0.0, 0.5, 1.0])


def test_indexing_and_reductions_match_numpy():
    data = np.arange(24.0).reshape(2, 3, 4)
    x = ln.tensor(data)
    np.testing.assert_array_equal(x[1, :, ::2].data, data[1, :, ::2])
    np.testing.assert_array_equal(x.sum(axis=(0, 2)).data, data.sum(axis=(0, 2)))
    np.testing.assert_array_equal(x.mean(axis=1, keepdims=True).data, data.mean(axis=1, keepdims=True))
    np.testing.assert_array_equal(x.max(axis=-1).data, data.max(axis=-1))
    np.testing.assert_array_equal(x.permute(2, 0, 1).data, data.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.flatten().data, data.reshape(2, 12))
    np.testing.assert_array_equal(x.T.data, data.T)


def test_max_splits_the_gradient_between_ties():
    x = ln.tensor(np.array([1.0, 3.0, 3.0, 2.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])


def test_options_go_by_keyword_and_backward_returns_a_gradient_per_tensor():
    from lepton_nn import ops
    from lepton_nn.tensor import apply
    x = ln.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(TypeError, match="Sum: input 1 is a int, not a Tensor; pass a non-tensor argument"):
        apply(ops.Sum, x, 1)
    y = apply(ops.Sum, x, axis=1)  # the option by keyword; backward returns (grad_x,) only
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_a_backward_that_returns_a_bare_array_is_named():
    from lepton_nn import ops
    from lepton_nn.tensor import apply

    class Double(ops.Function):
        @staticmethod
        def forward(ctx, a):
            return 2 * a

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad  # should be (2 * grad,)

    x = ln.tensor(np.ones((3, 4)), requires_grad=True)
    with pytest.raises(TypeError, match=r"Double.backward must return a tuple of 1 gradient\(s\).*returned ndarray"):
        apply(Double, x).sum().backward()
