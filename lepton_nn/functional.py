"""Functional API: the layers and losses as functions of tensors (NCHW, PyTorch-compatible
signatures, so results can be compared one to one with torch.nn.functional).

Each function checks its inputs and raises ValueError naming itself, what it expected and
what it got; then it applies one op (kernels in lepton_nn/kernels, backward in lepton_nn/ops)
or composes a few. Nothing is broadcast silently where shapes should match.
"""
import numpy as np

from lepton_nn import checks, ops, rng
from lepton_nn.kernels.reference import output_size
from lepton_nn.tensor import Tensor, apply, from_numpy


def _as_tensor(x):
    """A Tensor for x; an array is wrapped without a copy (these functions never write to it)."""
    return x if isinstance(x, Tensor) else from_numpy(x) if isinstance(x, np.ndarray) else Tensor(x)


def _check_float(op, name, t, ndim=None, layout=""):
    checks.compute_dtype(t.dtype, op, name)
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {t.shape}")


def _check_dtype_and_bias(op, x, weight, bias):
    """The input's dtype must be the weight's; a bias must be (out,) of that dtype. Returns bias as a Tensor."""
    if x.dtype != weight.dtype:
        raise ValueError(f"{op}: input dtype {x.dtype} differs from weight dtype {weight.dtype}")
    if bias is None:
        return None
    bias = _as_tensor(bias)
    if bias.shape != (weight.shape[0],) or bias.dtype != weight.dtype:
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},) and dtype {weight.dtype}, "
                         f"got {bias.shape} {bias.dtype}")
    return bias


def _check_window(op, x, kernel, stride, padding):
    for axis, k, s, p in zip(("height", "width"), kernel, stride, padding):
        size = x.shape[2 if axis == "height" else 3]
        if k < 1 or s < 1 or p < 0:
            raise ValueError(f"{op}: kernel and stride must be ≥ 1 and padding ≥ 0, got "
                             f"kernel {kernel}, stride {stride}, padding {padding}")
        if output_size(size, k, s, p) < 1:
            raise ValueError(f"{op}: input {axis} {size} with padding {p} is smaller than the kernel {k} "
                             f"(input shape {x.shape})")


# --------------------------------------------------------------------------- layers
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C_in, H, W) with weight (C_out, C_in, kH, kW).

    Output (N, C_out, H_out, W_out), H_out = ⌊(H + 2·padding − kH)/stride⌋ + 1.
    Equation: lepton_nn.kernels.reference.conv2d_forward; derivation: docs/equations.md.
    """
    x, weight, bias, stride, padding = _conv_args("conv2d", x, weight, bias, stride, padding)
    return apply(ops.Conv2d, x, weight, bias, stride=stride, padding=padding)


def conv2d_relu_max_pool2d(x, weight, bias=None, stride=1, padding=0, pool_size=2, pool_stride=None):
    """max_pool2d(relu(conv2d(x, weight, bias, stride, padding)), pool_size, pool_stride), fused.

    The same function as the three calls (pool without padding), computed without storing the
    convolution's output: what nn.Sequential and keras.Sequential run when a model has
    conv → relu → max-pool in a row. Shapes: conv2d's output, then max_pool2d's formula.
    """
    op = "conv2d_relu_max_pool2d"
    x, weight, bias, stride, padding = _conv_args(op, x, weight, bias, stride, padding)
    pool_kernel = checks.pair(pool_size, op, "pool_size")
    pool_stride = pool_kernel if pool_stride is None else checks.pair(pool_stride, op, "pool_stride")
    conv_hw = [output_size(x.shape[2 + a], weight.shape[2 + a], stride[a], padding[a]) for a in (0, 1)]
    if any(k < 1 or s < 1 or k > size for k, s, size in zip(pool_kernel, pool_stride, conv_hw)):
        raise ValueError(f"{op}: pool window {pool_kernel} stride {pool_stride} does not fit the convolution's "
                         f"output {tuple(conv_hw)}")
    return apply(ops.Conv2dReluMaxPool2d, x, weight, bias, stride=stride, padding=padding,
                 pool_kernel=pool_kernel, pool_stride=pool_stride)


def _conv_args(op, x, weight, bias, stride, padding):
    """Check and normalise conv2d's arguments; errors name `op`."""
    x, weight = _as_tensor(x), _as_tensor(weight)
    _check_float(op, "input", x, 4, "(N, C_in, H, W)")
    _check_float(op, "weight", weight, 4, "(C_out, C_in, kH, kW)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: input has {x.shape[1]} channels (shape {x.shape}) but weight expects "
                         f"C_in = {weight.shape[1]} (weight shape {weight.shape})")
    bias = _check_dtype_and_bias(op, x, weight, bias)
    stride, padding = checks.pair(stride, op, "stride"), checks.pair(padding, op, "padding")
    _check_window(op, x, weight.shape[2:], stride, padding)
    return x, weight, bias, stride, padding


def _pool_args(op, x, kernel_size, stride, padding):
    x = _as_tensor(x)
    _check_float(op, "input", x, 4, "(N, C, H, W)")
    kernel = checks.pair(kernel_size, op, "kernel_size")
    stride = kernel if stride is None else checks.pair(stride, op, "stride")
    padding = checks.pair(padding, op, "padding")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel {kernel}")
    _check_window(op, x, kernel, stride, padding)
    return x, kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows of x (N, C, H, W); stride defaults to kernel_size.

    Output (N, C, H_out, W_out), H_out = ⌊(H + 2·padding − kH)/stride⌋ + 1. Padding never wins.
    Backward: each window's gradient goes to its maximum; ties go to the first maximum in
    row-major order within the window, and a window holding NaN gives NaN, its gradient going
    to its last NaN (both as in PyTorch).
    """
    x, kernel, stride, padding = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return apply(ops.MaxPool2d, x, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over kernel_size windows of x (N, C, H, W); shapes as max_pool2d.

    count_include_pad=True divides by kH·kW (PyTorch's default); False by the number of
    unpadded elements in the window (Keras's padding='same').
    """
    x, kernel, stride, padding = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return apply(ops.AvgPool2d, x, kernel=kernel, stride=stride, padding=padding,
                 count_include_pad=bool(count_include_pad))


def pad2d(x, pads, value=0.0):
    """Pad the last two axes by pads = (top, bottom, left, right) with a constant."""
    x = _as_tensor(x)
    if len(pads) != 4 or any(p < 0 for p in pads):
        raise ValueError(f"pad2d: pads must be four non-negative ints (top, bottom, left, right), got {pads}")
    return apply(ops.Pad2d, x, pads=tuple(int(p) for p in pads), value=value)


def linear(x, weight, bias=None):
    """y = x·Wᵀ + b for x (..., in), weight (out, in), bias (out,) → y (..., out)."""
    x, weight = _as_tensor(x), _as_tensor(weight)
    _check_float("linear", "weight", weight, 2, "(out_features, in_features)")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
                         f"but weight expects in_features = {weight.shape[1]} (weight shape {weight.shape})")
    bias = _check_dtype_and_bias("linear", x, weight, bias)
    return apply(ops.Linear, x, weight, bias)


def relu(x):
    return _as_tensor(x).relu()


def leaky_relu(x, negative_slope=0.01):
    """y = x where x > 0, negative_slope·x elsewhere (PyTorch's default slope 0.01; Keras's
    LeakyReLU uses 0.3). Equation: kernels/reference.py; derivation: docs/equations.md."""
    x = _as_tensor(x)
    _check_float("leaky_relu", "input", x)
    return apply(ops.LeakyRelu, x, negative_slope=checks.finite_number(negative_slope, "leaky_relu", "negative_slope"))


def sigmoid(x):
    return _as_tensor(x).sigmoid()


def tanh(x):
    return _as_tensor(x).tanh()


def softmax(x, axis=-1):
    return _as_tensor(x).softmax(axis)


def log_softmax(x, axis=-1):
    return _as_tensor(x).log_softmax(axis)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1 − p),
    so the expected value is unchanged and evaluation (training=False) is the identity."""
    x = _as_tensor(x)
    p = checks.fraction(p, "dropout", "p")
    if not training or p == 0:
        return x
    keep = rng.generator().random(x.shape) >= p
    return x * (keep / (1 - p)).astype(x.dtype)


# --------------------------------------------------------------------------- losses
def _reduce(op, loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy between softmax(logits) and the target, per sample then reduced.

    logits (N, K). target: integer class labels (N,) — the fused, stable kernel
    (loss = logsumexp(z) − z_y, gradient softmax(z) − onehot(y)); or probabilities / one-hot
    (N, K) — composed as −Σ_k t_k·log_softmax(z)_k, gradient softmax(z)·Σt − t.
    """
    logits = _as_tensor(logits)
    _check_float("cross_entropy", "logits", logits, 2, "(N, num_classes)")
    target_array = np.asarray(target.data if isinstance(target, Tensor) else target)
    if np.issubdtype(target_array.dtype, np.floating):
        if target_array.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape {logits.shape}, "
                             f"got {target_array.shape}")
        loss = -(_as_tensor(target) * logits.log_softmax(-1)).sum(axis=-1)
    else:
        labels = checks.class_labels(target_array, *logits.shape, "cross_entropy")
        loss = apply(ops.SoftmaxCrossEntropy, logits, labels=labels)
    return _reduce("cross_entropy", loss, reduction)


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log-likelihood: loss_n = −log_probs[n, y_n], for log_probs (N, K), labels (N,)."""
    log_probs = _as_tensor(log_probs)
    _check_float("nll_loss", "log_probs", log_probs, 2, "(N, num_classes)")
    labels = checks.class_labels(target.data if isinstance(target, Tensor) else target, *log_probs.shape,
                                 "nll_loss")
    return _reduce("nll_loss", -log_probs[np.arange(len(labels)), labels], reduction)


def mse_loss(prediction, target, reduction="mean"):
    """Mean squared error: (prediction − target)², elementwise, then reduced. Shapes must match."""
    prediction, target = _as_tensor(prediction), _as_tensor(target)
    if prediction.shape != target.shape:
        raise ValueError(f"mse_loss: prediction shape {prediction.shape} differs from target shape "
                         f"{target.shape} (broadcasting here is almost always a bug)")
    return _reduce("mse_loss", (prediction - target) ** 2, reduction)
