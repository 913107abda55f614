"""Differentiable ops: each one's forward and backward side by side, on plain NumPy arrays.

An op is a `Function` subclass with two static methods:

    forward(ctx, *inputs, **options) -> output array
    backward(ctx, grad_output)       -> a tuple with one gradient per input (None where the
                                        input needs no gradient), even for a single input

Inputs are the arrays of the op's tensors, passed positionally (None for an optional tensor
that is absent, such as a bias); everything else (an axis, a stride, class labels) is an
option, passed by keyword, and gets no gradient.

`ctx.save(...)` keeps what backward needs; `ctx.needs_input_grad[i]` says whether input i wants
a gradient, so backward can skip work (the first conv layer needs no input gradient).
The autograd engine (`lepton_nn.tensor`) builds the graph and calls these; nothing here knows
about Tensor. Ops with a hot loop (conv, pooling, relu, softmax + cross-entropy) call the
active kernel backend, remembered at forward time so backward runs on the same one.

Broadcasting. Elementwise ops follow NumPy's broadcasting rules. The backward of a broadcast is
a sum: if input a of shape (3, 1) was stretched to (2, 3, 4), every copy of a[i, 0] received
a gradient, and ∂L/∂a[i, 0] is the sum of them. `unbroadcast` sums over the axes that were
added on the left and over the axes where a had length 1, returning a gradient of a's shape.
"""
import numpy as np

from lepton_nn import kernels


class Context:
    """What one application of an op keeps for its backward pass."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save(self, *values):
        self.saved = values

    save_for_backward = save  # PyTorch's names, for those who know them (arrays here, not tensors)
    saved_tensors = property(lambda self: self.saved)


class Function:
    @staticmethod
    def forward(ctx, *inputs, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of NumPy broadcasting (see the module docstring)."""
    if grad.shape == shape:
        return grad
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    kept_ones = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=kept_ones, keepdims=True) if kept_ones else grad


def broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


# --------------------------------------------------------------------------- elementwise arithmetic
class Add(Function):
    """y = a + b (broadcasting);  ∂y/∂a = ∂y/∂b = 1."""

    @staticmethod
    def forward(ctx, a, b):
        broadcast_shape("add", a, b)
        ctx.save(a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.saved
        return unbroadcast(grad, a_shape), unbroadcast(grad, b_shape)


class Mul(Function):
    """y = a · b (broadcasting);  ∂y/∂a = b,  ∂y/∂b = a."""

    @staticmethod
    def forward(ctx, a, b):
        broadcast_shape("mul", a, b)
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        grad_a = unbroadcast(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    """y = −a;  ∂y/∂a = −1."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return (-grad,)


class Pow(Function):
    """y = aᶜ for a constant exponent c;  ∂y/∂a = c·aᶜ⁻¹."""

    @staticmethod
    def forward(ctx, a, *, exponent):
        ctx.save(a, exponent)
        return a ** exponent

    @staticmethod
    def backward(ctx, grad):
        a, exponent = ctx.saved
        return (grad * exponent * a ** (exponent - 1),)


class Exp(Function):
    """y = eᵃ;  ∂y/∂a = eᵃ = y."""

    @staticmethod
    def forward(ctx, a):
        y = np.exp(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return (grad * y,)


class Log(Function):
    """y = ln a;  ∂y/∂a = 1/a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return (grad / a,)


class Sqrt(Function):
    """y = √a;  ∂y/∂a = 1/(2√a) = 1/(2y)."""

    @staticmethod
    def forward(ctx, a):
        y = np.sqrt(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return (grad / (2 * y),)


# --------------------------------------------------------------------------- activations
class Relu(Function):
    """y = max(a, 0);  ∂y/∂a = [a > 0]. Kernel: relu_forward / relu_backward."""

    @staticmethod
    def forward(ctx, a):
        backend = kernels.active()
        ctx.save(backend, a)
        return backend.relu_forward(a)

    @staticmethod
    def backward(ctx, grad):
        backend, a = ctx.saved
        return (backend.relu_backward(grad, a),)


class LeakyRelu(Function):
    """y = a if a > 0 else s·a;  ∂y/∂a = 1 if a > 0 else s. Kernel: leaky_relu_forward / _backward."""

    @staticmethod
    def forward(ctx, a, *, negative_slope):
        backend = kernels.active()
        ctx.save(backend, a, negative_slope)
        return backend.leaky_relu_forward(a, negative_slope)

    @staticmethod
    def backward(ctx, grad):
        backend, a, negative_slope = ctx.saved
        return (backend.leaky_relu_backward(grad, a, negative_slope),)


class Sigmoid(Function):
    """y = 1/(1 + e⁻ᵃ) = (1 + tanh(a/2))/2;  ∂y/∂a = y·(1 − y).

    The tanh form never overflows (e⁻ᵃ does for a < −709 in float64, −88 in float32).
    """

    @staticmethod
    def forward(ctx, a):
        y = 0.5 * (1 + np.tanh(0.5 * a))
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return (grad * y * (1 - y),)


class Tanh(Function):
    """y = tanh a;  ∂y/∂a = 1 − y². (np.tanh saturates cleanly to ±1 for large |a|.)"""

    @staticmethod
    def forward(ctx, a):
        y = np.tanh(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return (grad * (1 - y * y),)


class Softmax(Function):
    """yᵢ = e^(aᵢ − m) / Σⱼ e^(aⱼ − m), m = maxⱼ aⱼ, along `axis`.

    ∂yᵢ/∂aₖ = yᵢ(δᵢₖ − yₖ), so ∂L/∂aₖ = yₖ·(gₖ − Σᵢ gᵢyᵢ).
    """

    @staticmethod
    def forward(ctx, a, *, axis):
        e = np.exp(a - a.max(axis=axis, keepdims=True, initial=-np.inf))  # initial: an empty axis is fine
        y = e / e.sum(axis=axis, keepdims=True)
        ctx.save(y, axis)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, axis = ctx.saved
        return (y * (grad - (grad * y).sum(axis=axis, keepdims=True)),)


class LogSoftmax(Function):
    """yᵢ = (aᵢ − m) − log Σⱼ e^(aⱼ − m), m = maxⱼ aⱼ, along `axis`.

    ∂yᵢ/∂aₖ = δᵢₖ − softmax(a)ₖ, so ∂L/∂aₖ = gₖ − softmax(a)ₖ·Σᵢ gᵢ.
    """

    @staticmethod
    def forward(ctx, a, *, axis):
        shifted = a - a.max(axis=axis, keepdims=True, initial=-np.inf)
        y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save(y, axis)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, axis = ctx.saved
        return (grad - np.exp(y) * grad.sum(axis=axis, keepdims=True),)


# --------------------------------------------------------------------------- linear algebra
class MatMul(Function):
    """Y = A·B, batched over leading axes (NumPy matmul, both ≥ 2-D).

    ∂L/∂A = G·Bᵀ,  ∂L/∂B = Aᵀ·G, each summed over broadcast batch axes.
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: expected (..., n, k) @ (..., k, m), got {a.shape} @ {b.shape}")
        ctx.save(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        grad_a = unbroadcast(grad @ b.swapaxes(-1, -2), a.shape) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(a.swapaxes(-1, -2) @ grad, b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Linear(Function):
    """Dense layer Y = X·Wᵀ + b for X (..., in), W (out, in), b (out,) or None; with relu=True,
    Y = max(X·Wᵀ + b, 0), the ReLU that follows a layer folded into it.

    With the leading axes of X flattened into M rows:
    ∂L/∂X = G·W,  ∂L/∂W = Gᵀ·X,  ∂L/∂b = Σ_rows G, where with relu G is first the incoming
    gradient where Y > 0 and 0 elsewhere (relu_backward on Y: Y ≤ 0 exactly where the sum is
    ≤ 0). One op rather than matmul + transpose + add (+ relu), so that backward is three GEMMs
    straight into the layouts the parameters have. Kernel: gemm (the bias is its addend, the
    ReLU its epilogue; transposes are strides, never copies).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, relu=False):
        backend = kernels.active()
        rows = x.reshape(-1, x.shape[-1])
        y = backend.gemm(rows, weight, trans_b=True, c=bias, relu=relu)
        ctx.save(backend, rows, weight, x.shape, y if relu else None)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        backend, rows, weight, x_shape, relu_output = ctx.saved
        grad = grad.reshape(-1, weight.shape[0])
        if relu_output is not None:
            grad = backend.relu_backward(grad, relu_output)
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = backend.gemm(grad, weight).reshape(x_shape) if need_x else None
        grad_weight = backend.gemm(grad, rows, trans_a=True) if need_weight else None
        grad_bias = grad.sum(axis=0) if need_bias else None
        return grad_x, grad_weight, grad_bias


# --------------------------------------------------------------------------- reductions
def _expand_reduced(grad, shape, axis, keepdims):
    """Put back the axes a reduction removed, so grad broadcasts against the input."""
    if axis is None:
        axis = tuple(range(len(shape)))
    if not keepdims:
        grad = np.expand_dims(grad, axis)
    return grad


class Sum(Function):
    """y = Σ a over `axis` (None: all);  ∂y/∂a = 1 everywhere, so the gradient is broadcast back."""

    @staticmethod
    def forward(ctx, a, *, axis=None, keepdims=False):
        ctx.save(a.shape, axis, keepdims)
        return np.asarray(a.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        shape, axis, keepdims = ctx.saved
        return (np.broadcast_to(_expand_reduced(grad, shape, axis, keepdims), shape),)


class Max(Function):
    """y = max a over `axis`. The gradient goes to the maximal elements; with ties it is split
    equally among them (a valid subgradient, and the mean of every tie-breaking choice)."""

    @staticmethod
    def forward(ctx, a, *, axis=None, keepdims=False):
        reduced = range(a.ndim) if axis is None else np.atleast_1d(axis)
        if any(a.shape[i] == 0 for i in reduced):  # as PyTorch: an empty set has no maximum
            raise ValueError(f"max: cannot reduce over an empty axis (input shape {a.shape}, axis {axis})")
        y = a.max(axis=axis, keepdims=True)
        ctx.save(a, y, axis, keepdims)
        return y if keepdims else np.asarray(np.squeeze(y, axis=axis))

    @staticmethod
    def backward(ctx, grad):
        a, y, axis, keepdims = ctx.saved
        winners = a == y
        share = winners / winners.sum(axis=axis, keepdims=True)
        return (_expand_reduced(grad, a.shape, axis, keepdims) * share,)


# --------------------------------------------------------------------------- shape
class Reshape(Function):
    """Same elements, new shape; the gradient is reshaped back."""

    @staticmethod
    def forward(ctx, a, *, shape):
        ctx.save(a.shape)
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        (shape,) = ctx.saved
        return (grad.reshape(shape),)


class Permute(Function):
    """Reorder axes; the gradient is permuted by the inverse permutation."""

    @staticmethod
    def forward(ctx, a, *, axes):
        ctx.save(axes)
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, grad):
        (axes,) = ctx.saved
        return (grad.transpose(np.argsort(axes)),)


class GetItem(Function):
    """y = a[index] (basic or integer-array indexing). Backward scatters the gradient into
    zeros of a's shape: an assignment where the index is basic (slices, ints: every element is
    picked at most once), np.add.at where an integer array may pick one twice and the
    gradients must add up (add.at is many times slower: docs/benchmarks.md, "Measurements behind
    the code")."""

    @staticmethod
    def forward(ctx, a, *, index):
        ctx.save(a.shape, a.dtype, index)
        return np.asarray(a[index])

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, index = ctx.saved
        grad_a = np.zeros(shape, dtype=dtype)
        parts = index if isinstance(index, tuple) else (index,)
        if all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts):
            grad_a[index] = grad
        else:
            np.add.at(grad_a, index, grad)
        return (grad_a,)


# --------------------------------------------------------------------------- convolution and pooling
class Conv2d(Function):
    """Kernels: conv2d_forward / conv2d_backward (equations in kernels/reference.py)."""

    @staticmethod
    def forward(ctx, x, weight, bias, *, stride, padding):
        backend = kernels.active()
        ctx.save(backend, x, weight, stride, padding)
        return backend.conv2d_forward(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        backend, x, weight, stride, padding = ctx.saved
        return backend.conv2d_backward(grad, x, weight, stride, padding, *ctx.needs_input_grad)


class Conv2dReluMaxPool2d(Function):
    """conv2d → relu → max_pool2d (no pool padding) as one op, for speed: the conv output is
    never stored. Kernels: conv2d_relu_max_pool2d_forward / _backward. The model containers
    (nn.Sequential, keras Sequential) use it where the user wrote those three steps in a row;
    tests/test_functional.py proves it equal to the composition, forward and every gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, stride, padding, pool_kernel, pool_stride):
        backend = kernels.active()
        y, argmax = backend.conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride)
        ctx.save(backend, y, argmax, x, weight, stride, padding)
        return y

    @staticmethod
    def backward(ctx, grad):
        backend, y, argmax, x, weight, stride, padding = ctx.saved
        if not (np.isfinite(x).all() and np.isfinite(weight).all()):
            # The fast kernels sum over the pooling winners alone, skipping terms 0·x; with NaN or
            # inf in x or w those are NaN, and the composition's answer (PyTorch's) needs them.
            backend = kernels.get("numpy")
        return backend.conv2d_relu_max_pool2d_backward(grad, y, argmax, x, weight, stride, padding,
                                                       *ctx.needs_input_grad)


class MaxPool2d(Function):
    """Kernels: max_pool2d_forward / max_pool2d_backward."""

    @staticmethod
    def forward(ctx, x, *, kernel, stride, padding):
        backend = kernels.active()
        y, argmax = backend.max_pool2d_forward(x, kernel, stride, padding)
        ctx.save(backend, argmax, x.shape)
        return y

    @staticmethod
    def backward(ctx, grad):
        backend, argmax, x_shape = ctx.saved
        return (backend.max_pool2d_backward(grad, argmax, x_shape),)


class AvgPool2d(Function):
    """Kernels: avg_pool2d_forward / avg_pool2d_backward."""

    @staticmethod
    def forward(ctx, x, *, kernel, stride, padding, count_include_pad):
        backend = kernels.active()
        ctx.save(backend, x.shape, kernel, stride, padding, count_include_pad)
        return backend.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad)

    @staticmethod
    def backward(ctx, grad):
        backend, x_shape, *options = ctx.saved
        return (backend.avg_pool2d_backward(grad, x_shape, *options),)


class SoftmaxCrossEntropy(Function):
    """Per-sample −log softmax(z)[y], fused: ∂loss/∂z = softmax(z) − onehot(y).

    Kernels: softmax_cross_entropy_forward / _backward. Proven equal to the composition
    −log_softmax(z)[y] by tests/test_functional.py.
    """

    @staticmethod
    def forward(ctx, logits, *, labels):
        backend = kernels.active()
        loss, probs = backend.softmax_cross_entropy_forward(logits, labels)
        ctx.save(backend, probs, labels)
        return loss

    @staticmethod
    def backward(ctx, grad):
        backend, probs, labels = ctx.saved
        return (backend.softmax_cross_entropy_backward(grad, probs, labels),)


class Pad2d(Function):
    """Constant padding of the last two axes by (top, bottom, left, right); backward crops."""

    @staticmethod
    def forward(ctx, x, *, pads, value=0.0):
        top, bottom, left, right = pads
        ctx.save(x.shape, pads)
        widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
        return np.pad(x, widths, constant_values=value)

    @staticmethod
    def backward(ctx, grad):
        (*_, h, w), (top, _, left, _) = ctx.saved
        return (grad[..., top:top + h, left:left + w],)


# --------------------------------------------------------------------------- sequence models
# Embedding, LayerNorm, BatchNorm, Gelu, MaskedFill, Cat (split is GetItem; stack and tril/triu are compositions)
class Embedding(Function):
    """y = W[indices] (a gather); ∂L/∂W = scatter-add of G into W's rows, repeated indices summed.
    The indices are an option (no gradient); the row `padding_idx` (if any) gets none, as in
    PyTorch. Kernels: embedding_forward / embedding_backward."""

    @staticmethod
    def forward(ctx, weight, *, indices, padding_idx=None):
        backend = kernels.active()
        ctx.save(backend, indices, weight.shape[0], padding_idx)
        return backend.embedding_forward(indices, weight)

    @staticmethod
    def backward(ctx, grad):
        backend, indices, num_embeddings, padding_idx = ctx.saved
        grad_weight = backend.embedding_backward(grad, indices, num_embeddings)
        if padding_idx is not None:
            grad_weight[padding_idx] = 0  # a padding row stays as it is (all zeros, as nn.Embedding makes it)
        return (grad_weight,)


class LayerNorm(Function):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the trailing normalized_shape axes, per position.
    Kernels: layer_norm_forward / layer_norm_backward (equations there)."""

    @staticmethod
    def forward(ctx, x, weight, bias, *, normalized_shape, eps):
        backend = kernels.active()
        y, mean, rstd = backend.layer_norm_forward(x, normalized_shape, weight, bias, eps)
        ctx.save(backend, x, normalized_shape, mean, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        backend, x, normalized_shape, mean, rstd, weight = ctx.saved
        return backend.layer_norm_backward(grad, x, normalized_shape, mean, rstd, weight, *ctx.needs_input_grad)


class BatchNorm(Function):
    """y = γ_c·(x − μ_c)/√(σ²_c + ε) + β_c with the batch's statistics of each channel (axis 1),
    over every other axis. Given running arrays (options: no gradient), it updates them in place,
    as PyTorch's kernel does: running ← (1 − momentum)·running + momentum·batch, where the
    batch's variance is σ²·m/(m − correction) over its m values: correction 1 (PyTorch's unbiased
    estimate, though y uses the biased σ²) or 0 (Keras's). Kernels: batch_norm_forward / _backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, *, eps, running_mean=None, running_var=None, momentum=0.1, correction=1):
        backend = kernels.active()
        y, mean, rstd, var = backend.batch_norm_forward(x, weight, bias, eps)
        if running_mean is not None:
            m = x.size // x.shape[1]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * (var if correction == 0 else
                                                                          var * (m / (m - correction)))
        ctx.save(backend, x, mean, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        backend, x, mean, rstd, weight = ctx.saved
        return backend.batch_norm_backward(grad, x, mean, rstd, weight, *ctx.needs_input_grad)


class Gelu(Function):
    """y = x·Φ(x) (or its tanh approximation); ∂y/∂x = Φ(x) + x·φ(x). Kernels: gelu_forward / _backward."""

    @staticmethod
    def forward(ctx, a, *, approximate="none"):
        backend = kernels.active()
        ctx.save(backend, a, approximate)
        return backend.gelu_forward(a, approximate)

    @staticmethod
    def backward(ctx, grad):
        backend, a, approximate = ctx.saved
        return (backend.gelu_backward(grad, a, approximate),)


class MaskedFill(Function):
    """y = value where mask, a elsewhere (mask: booleans, broadcast against a);
    ∂y/∂a = 0 where mask, 1 elsewhere. A select, as PyTorch's: a masked position passes no
    gradient, even a NaN one; and its NaN input is replaced, as the fill means."""

    @staticmethod
    def forward(ctx, a, *, mask, value):
        if mask.dtype != np.bool_:
            raise ValueError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
        broadcast_shape("masked_fill", a, mask)
        ctx.save(a.shape, mask)
        return np.where(mask, np.asarray(value, a.dtype), a)

    @staticmethod
    def backward(ctx, grad):
        shape, mask = ctx.saved
        return (unbroadcast(np.where(mask, np.zeros((), grad.dtype), grad), shape),)


class Cat(Function):
    """y = the inputs joined along `axis` (all passed positionally, one tensor each);
    backward cuts G at the same boundaries, one piece per input."""

    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.save(axis, np.cumsum([a.shape[axis] for a in arrays])[:-1])
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        axis, cuts = ctx.saved
        return tuple(np.split(grad, cuts, axis=axis))


def split_bounds(op, size, split_size_or_sections):
    """(start, stop) of each piece when an axis of length `size` is split as torch.split does:
    an int s gives pieces of s (the last one shorter); a list gives pieces of those sizes,
    which must add up to `size`. Raises ValueError naming `op`."""
    if isinstance(split_size_or_sections, (int, np.integer)) and not isinstance(split_size_or_sections, bool):
        step = int(split_size_or_sections)
        if step < 0 or (step == 0 and size > 0):
            raise ValueError(f"{op}: split size must be a positive int (0 only for an axis of length 0), "
                             f"got {step} for an axis of length {size}")
        starts = range(0, size, step) if size else [0]  # an empty axis gives one empty piece, as PyTorch
        return [(start, min(start + step, size)) for start in starts]
    sizes = split_size_or_sections
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in sizes) \
            or sum(sizes) != size:
        raise ValueError(f"{op}: split_size_or_sections must be an int or a list of ints ≥ 0 adding up to "
                         f"the axis length {size}, got {sizes!r}")
    stops = np.cumsum(sizes, dtype=np.int64).tolist()
    return list(zip([0] + stops[:-1], stops))


def normalize_axis(op, axis, ndim):
    """An axis in [−ndim, ndim) as an index in [0, ndim) (−1 is the last); ValueError naming op otherwise."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis must be an int in [{-ndim}, {ndim}) for a {ndim}-D input, got {axis!r}")
    return int(axis) % ndim


# --------------------------------------------------------------------------- attention
class MaskedSoftmax(Function):
    """Softmax over the last axis with masked keys (mask: True = takes part; causal: j ≤ i); a
    fully masked row gives 0. ∂L/∂s = y·(g − Σ g·y). Kernels: masked_softmax_forward / _backward."""

    @staticmethod
    def forward(ctx, scores, *, mask=None, causal=False):
        backend = kernels.active()
        y = backend.masked_softmax_forward(scores, mask, causal)
        ctx.save(backend, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        backend, y = ctx.saved
        return (backend.masked_softmax_backward(grad, y),)
