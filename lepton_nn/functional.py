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


def _linear_inputs(owner, x, weight, bias):
    """(x, weight, bias) as tensors, checked for a dense layer: weight (out, in), x (..., in)."""
    x, weight = _as_tensor(x), _as_tensor(weight)
    _check_float(owner, "weight", weight, 2, "(out_features, in_features)")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{owner}: input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
                         f"but weight expects in_features = {weight.shape[1]} (weight shape {weight.shape})")
    return x, weight, _check_dtype_and_bias(owner, x, weight, bias)


def linear(x, weight, bias=None):
    """y = x·Wᵀ + b for x (..., in), weight (out, in), bias (out,) → y (..., out)."""
    return apply(ops.Linear, *_linear_inputs("linear", x, weight, bias))


def linear_relu(x, weight, bias=None):
    """relu(x·Wᵀ + b) as one op: the ReLU runs in the GEMM's epilogue, on each block of the
    output while it is in cache, and its backward in the layer's (nn.Linear → nn.ReLU and Keras's
    Dense(activation="relu") run this)."""
    return apply(ops.Linear, *_linear_inputs("linear_relu", x, weight, bias), relu=True)


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


# --------------------------------------------------------------------------- sequence models
# embedding, layer_norm, gelu, masked_fill, tril/triu, cat/stack/split/chunk
def embedding(indices, weight, padding_idx=None):
    """Rows of weight (V, D) looked up by integer indices of any shape → (*indices.shape, D), as
    torch.nn.functional.embedding. Every index must lie in [0, V); the row padding_idx
    (−V ≤ padding_idx < V) gets no gradient. PyTorch's max_norm, scale_grad_by_freq and sparse
    are not offered. Equations: kernels/reference.py embedding_*; docs/equations.md, "Embedding".
    """
    weight = _as_tensor(weight)
    _check_float("embedding", "weight", weight, 2, "(num_embeddings, embedding_dim)")
    num_embeddings = weight.shape[0]
    indices = checks.indices(indices.data if isinstance(indices, Tensor) else indices, num_embeddings, "embedding")
    padding_idx = checks.padding_index(padding_idx, num_embeddings, "embedding")
    return apply(ops.Embedding, weight, indices=indices, padding_idx=padding_idx)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x over its trailing axes, which must equal normalized_shape, then scale by weight
    and shift by bias (both of normalized_shape, each optional), as
    torch.nn.functional.layer_norm: biased variance, ε inside the square root. An axis of size 0
    is refused (PyTorch returns an empty tensor). Equations: kernels/reference.py layer_norm_*;
    derivation: docs/equations.md, "Layer normalisation".
    """
    op = "layer_norm"
    x = _as_tensor(x)
    _check_float(op, "input", x)
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
    if not isinstance(shape, (tuple, list)) or not shape:
        raise ValueError(f"{op}: normalized_shape must be an int or a non-empty tuple of ints, "
                         f"got {normalized_shape!r}")
    shape = tuple(checks.int_at_least(d, op, f"every dimension of normalized_shape {tuple(shape)}", 1) for d in shape)
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"{op}: normalized_shape {shape} must equal the input's trailing dimensions, "
                         f"got input shape {x.shape}")
    weight, bias = (None if t is None else _as_tensor(t) for t in (weight, bias))
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.shape != shape or t.dtype != x.dtype):
            raise ValueError(f"{op}: {name} must have shape {shape} and dtype {x.dtype}, got {t.shape} {t.dtype}")
    eps = checks.finite_number(eps, op, "eps")
    if eps <= 0:
        raise ValueError(f"{op}: eps must be a finite number > 0, got {eps!r}")
    return apply(ops.LayerNorm, x, weight, bias, normalized_shape=shape, eps=eps)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (axis 1) of x (N, C) or (N, C, *), then scale by weight and shift by
    bias (both (C,), each optional), as torch.nn.functional.batch_norm:

        training:  y = (x − μ_B)/√(σ²_B + ε)·γ + β, μ_B and σ²_B (biased) the batch's, per channel
                   over every axis but 1; running_mean and running_var (C,), if given, are updated
                   in place: running ← (1 − momentum)·running + momentum·batch, σ²_B unbiased there
        eval:      y = (x − running_mean)/√(running_var + ε)·γ + β, an affine map (a composition)

    running_mean / running_var are arrays or Tensors of x's dtype, both or neither (eval needs
    both); they get no gradient. Training needs more than one value per channel (N·H·W… > 1);
    an empty batch is fine in eval mode. momentum is in [0, 1], eps > 0.
    Equations: kernels/reference.py batch_norm_*; derivation: docs/equations.md, "Batch normalisation".
    """
    op = "batch_norm"
    x = _as_tensor(x)
    _check_float(op, "input", x)
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C) or (N, C, *), got shape {x.shape}")
    channels = x.shape[1]
    if channels == 0:  # nothing to normalise, and m = x.size / C would divide by zero
        raise ValueError(f"{op}: input must have at least one channel (axis 1), got shape {x.shape}")
    training = checks.flag(training, op, "training")
    momentum = checks.finite_number(momentum, op, "momentum", minimum=0)
    if momentum > 1:
        raise ValueError(f"{op}: momentum must be a number in [0, 1], got {momentum!r}")
    eps = checks.finite_number(eps, op, "eps")
    if eps <= 0:
        raise ValueError(f"{op}: eps must be a finite number > 0, got {eps!r}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if running_mean is None and not training:
        raise ValueError(f"{op}: running_mean and running_var are required in eval mode (training=False)")
    stats = [None if s is None else s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    for name, s in zip(("running_mean", "running_var"), stats):
        if s is not None and (not isinstance(s, np.ndarray) or s.shape != (channels,) or s.dtype != x.dtype):
            raise ValueError(f"{op}: {name} must be an array of shape ({channels},) and dtype {x.dtype} (one per "
                             f"channel of input {x.shape}), got {getattr(s, 'shape', type(s).__name__)} "
                             f"{getattr(s, 'dtype', '')}".rstrip())
        if s is not None and training and not s.flags.writeable:
            raise ValueError(f"{op}: {name} must be writable: training updates it in place")
    weight, bias = (None if t is None else _as_tensor(t) for t in (weight, bias))
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.shape != (channels,) or t.dtype != x.dtype):
            raise ValueError(f"{op}: {name} must have shape ({channels},) and dtype {x.dtype}, got {t.shape} {t.dtype}")
    if training:
        if x.shape[0] * int(np.prod(x.shape[2:])) <= 1:  # one value per channel: σ² = 0, nothing learnt
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got input shape {x.shape}")
        return apply(ops.BatchNorm, x, weight, bias, eps=eps, running_mean=stats[0], running_var=stats[1],
                     momentum=momentum)
    # Eval: the running statistics are constants, so y is an affine map of x, composed of Tensor ops.
    shape = (1, channels) + (1,) * (x.ndim - 2)
    mean, rstd = stats[0].reshape(shape), (1 / np.sqrt(stats[1] + x.dtype.type(eps))).reshape(shape)
    y = (x - mean) * rstd
    if weight is not None:
        y = y * weight.reshape(shape)
    return y + bias.reshape(shape) if bias is not None else y


def gelu(x, approximate="none"):
    """GELU, y = x·Φ(x) with Φ the standard normal CDF, or with approximate='tanh'
    y = ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as torch.nn.functional.gelu.
    Equations: kernels/reference.py gelu_*; docs/equations.md, "GELU"."""
    x = _as_tensor(x)
    _check_float("gelu", "input", x)
    if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(ops.Gelu, x, approximate=approximate)


def masked_fill(x, mask, value):
    """value where mask (booleans, broadcast against x) is True, x elsewhere; no gradient flows
    to the filled positions. E.g. scores.masked_fill(triu(ones((T, T), bool), 1), -inf)."""
    return _as_tensor(x).masked_fill(mask, value)


def tril(x, diagonal=0):
    """The lower triangle of x's last two axes (zeros above diagonal `diagonal`), as torch.tril.
    Differentiable through masked_fill; on booleans it builds a mask (Tensor.tril)."""
    return _as_tensor(x).tril(diagonal)


def triu(x, diagonal=0):
    """The upper triangle of x's last two axes (zeros below diagonal `diagonal`), as torch.triu;
    triu(ones((T, T), bool), 1) is the causal attention mask (True where key j > query i)."""
    return _as_tensor(x).triu(diagonal)


def _tensor_list(op, tensors):
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{op}: expected a non-empty list or tuple of tensors, got {type(tensors).__name__}")
    return [_as_tensor(t) for t in tensors]


def cat(tensors, axis=0):
    """Join tensors along an existing axis, as torch.cat (whose `dim` is our `axis`): one dtype,
    one ndim, equal dimensions but along `axis`. Backward cuts the gradient at the same
    boundaries (ops.Cat)."""
    tensors = _tensor_list("cat", tensors)
    first = tensors[0]
    axis = ops.normalize_axis("cat", axis, first.ndim)
    for i, t in enumerate(tensors):
        if t.dtype != first.dtype or t.ndim != first.ndim or \
                t.shape[:axis] + t.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(f"cat: tensor {i} is {t.shape} {t.dtype} but tensor 0 is {first.shape} {first.dtype}; "
                             f"all must share the dtype and every dimension but axis {axis}")
    return apply(ops.Cat, *tensors, axis=axis)


def stack(tensors, axis=0):
    """Join equal-shaped tensors along a new axis, as torch.stack: composed as cat of each one
    with a length-1 axis inserted at `axis` (so its gradient needs no code of its own)."""
    tensors = _tensor_list("stack", tensors)
    shape = tensors[0].shape
    axis = ops.normalize_axis("stack", axis, len(shape) + 1)
    for i, t in enumerate(tensors):
        if t.shape != shape:
            raise ValueError(f"stack: every tensor must have tensor 0's shape {shape}; tensor {i} has {t.shape}")
    return cat([t.reshape(shape[:axis] + (1,) + shape[axis:]) for t in tensors], axis)


def split(x, split_size_or_sections, axis=0):
    """Pieces of x along `axis`, as torch.split: of split_size each (the last shorter) or of the
    listed sizes; each piece is a differentiable slice (Tensor.split)."""
    return _as_tensor(x).split(split_size_or_sections, axis)


def chunk(x, chunks, axis=0):
    """At most `chunks` pieces of x along `axis`, each ⌈n/chunks⌉ long, as torch.chunk (Tensor.chunk)."""
    return _as_tensor(x).chunk(chunks, axis)


# --------------------------------------------------------------------------- attention
def _broadcast(*shapes):
    """The shape that `shapes` broadcast to, or None where they do not."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(Q·Kᵀ·scale, keys masked)·V, with PyTorch's signature and semantics.

    query (..., L, E), key (..., S, E), value (..., S, Ev) → (..., L, Ev); leading axes broadcast.
    scale defaults to 1/√E. attn_mask, broadcastable to (..., L, S): boolean (True = the key
    takes part) or float (added to the scores); is_causal: query i sees keys j ≤ i (not with
    attn_mask, as PyTorch). A query that sees no key gets 0, as in PyTorch 2.5+. dropout_p > 0
    drops attention weights on every call, as PyTorch's function does: pass 0 to evaluate.
    Composed of matmul, MaskedSoftmax and matmul: docs/equations.md, "Attention".
    """
    op = "scaled_dot_product_attention"
    query, key, value = _as_tensor(query), _as_tensor(key), _as_tensor(value)
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_float(op, name, t)
        if t.ndim < 2 or t.dtype != query.dtype:
            raise ValueError(f"{op}: {name} must be at least 2-D, of the query's dtype {query.dtype}; "
                             f"got shape {t.shape} {t.dtype}")
    E, S = query.shape[-1], key.shape[-2]  # query (..., L, E), key (..., S, E)
    if key.shape[-1] != E or value.shape[-2] != S or E == 0 or \
            _broadcast(query.shape[:-2], key.shape[:-2], value.shape[:-2]) is None:
        raise ValueError(f"{op}: expected query (..., L, E ≥ 1), key (..., S, E), value (..., S, Ev) with "
                         f"batch axes that broadcast, got {query.shape}, {key.shape}, {value.shape}")
    scale = 1.0 / float(np.sqrt(E)) if scale is None else checks.finite_number(scale, op, "scale")
    scores = (query * scale) @ key.transpose(-2, -1)  # scaling q costs L·E products, the scores L·S
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{op}: give attn_mask or is_causal=True, not both (as PyTorch)")
        attn_mask = _as_tensor(attn_mask)
        if _broadcast(attn_mask.shape, scores.shape) != scores.shape:
            raise ValueError(f"{op}: attn_mask of shape {attn_mask.shape} does not broadcast to the scores' "
                             f"(..., L, S) = {scores.shape}")
        if attn_mask.dtype == bool:
            mask = attn_mask.data
        elif attn_mask.dtype == query.dtype:
            scores = scores + attn_mask
        else:
            raise ValueError(f"{op}: attn_mask must be boolean or of the query's dtype {query.dtype}, "
                             f"got {attn_mask.dtype}")
    weights = apply(ops.MaskedSoftmax, scores, mask=mask, causal=checks.flag(is_causal, op, "is_causal"))
    if dropout_p:
        weights = dropout(weights, dropout_p)
    return weights @ value
