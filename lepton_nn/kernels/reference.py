"""NumPy reference kernels: the specification every fast backend is checked against.

Each kernel is written straight from its equation, which its docstring states together with
the shapes. Layout is NCHW: x (N, C, H, W), conv weight (C_out, C_in, kH, kW).
`stride` and `padding` are always pairs here; the op layer normalises ints to pairs.

KERNELS names every kernel; this module defines each one. A fast backend (numba, c)
implements any of them with the same signature and return values, and the ones it does not
are served by this module (lepton_nn/kernels/__init__.py); `tests/test_kernels.py` checks
every native one against this module.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

KERNELS = (
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "adam_step", "adam_steps",
    "conv2d_relu_max_pool2d_forward", "conv2d_relu_max_pool2d_backward",
    "embedding_forward", "embedding_backward",
    "layer_norm_forward", "layer_norm_backward",
    "batch_norm_forward", "batch_norm_backward",
    "gelu_forward", "gelu_backward",
    "masked_softmax_forward", "masked_softmax_backward",
    "gemm",
)


def output_size(size, kernel, stride, pad):
    """Output length of a sliding window: ⌊(size + 2·pad − kernel) / stride⌋ + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def _pad_hw(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(x_padded, kernel, stride):
    """View (N, C, H_out, W_out, kH, kW) of every window the kernel visits; no copy."""
    (kh, kw), (sh, sw) = kernel, stride
    return sliding_window_view(x_padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


# --------------------------------------------------------------------------- conv2d
def conv2d_forward(x, weight, bias, stride, padding):
    """Cross-correlation, as every deep-learning library calls "convolution".

        y[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q  x_pad[n, c, i·sh + p, j·sw + q] · w[o, c, p, q]

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None
    → y (N, C_out, H_out, W_out),  H_out = ⌊(H + 2·ph − kH)/sh⌋ + 1,  W_out likewise.
    """
    windows = _windows(_pad_hw(x, padding), weight.shape[2:], stride)
    y = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, H_out, W_out, C_out)
    if bias is not None:
        y = y + bias
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def conv2d_backward(grad_y, x, weight, stride, padding, need_x=True, need_weight=True, need_bias=True):
    """Gradients of conv2d_forward; each is computed only if asked for (else None).

        ∂L/∂w[o, c, p, q] = Σ_n Σ_i Σ_j  g[n, o, i, j] · x_pad[n, c, i·sh + p, j·sw + q]
        ∂L/∂b[o]          = Σ_n Σ_i Σ_j  g[n, o, i, j]
        ∂L/∂x_pad[n, c, i·sh + p, j·sw + q]  +=  Σ_o g[n, o, i, j] · w[o, c, p, q]

    The last line scatters each output's gradient back over the window it read; for stride 1
    it is the "full" convolution of g with the kernel flipped in both axes. The padded border
    is then cropped off. Shapes: grad_y like y; results like x, weight and (C_out,).
    """
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    grad_x = grad_w = grad_b = None
    if need_weight:
        windows = _windows(_pad_hw(x, padding), (kh, kw), stride)
        if np.isfinite(x).all():
            grad_w = np.tensordot(grad_y, windows, axes=([0, 2, 3], [0, 2, 3])).astype(x.dtype, copy=False)
        else:  # BLAS may skip a zero g, where 0·inf must give NaN (IEEE, PyTorch): einsum multiplies every term
            grad_w = np.einsum("nohw,nchwpq->ocpq", grad_y, windows).astype(x.dtype, copy=False)
    if need_bias:
        grad_b = grad_y.sum(axis=(0, 2, 3))
    if need_x:
        n, c, h, w = x.shape
        h_out, w_out = grad_y.shape[2:]
        grad_x_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        for p in range(kh):
            for q in range(kw):
                grad_x_pad[:, :, p:p + sh * h_out:sh, q:q + sw * w_out:sw] += np.einsum(
                    "nohw,oc->nchw", grad_y, weight[:, :, p, q])
        grad_x = grad_x_pad[:, :, ph:ph + h, pw:pw + w].copy()
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- max_pool2d
def max_pool2d_forward(x, kernel, stride, padding):
    """Max over each window; padding counts as −∞ and never wins, not even against −∞.

        y[n, c, i, j] = max_{p, q}  x_pad[n, c, i·sh + p, j·sw + q]

    x (N, C, H, W) → y (N, C, H_out, W_out), H_out = ⌊(H + 2·ph − kH)/sh⌋ + 1.
    Also returns `argmax` (N, C, H_out, W_out), int64: the winner's flat index h·W + w in the
    unpadded (H, W) plane, which is all that backward needs. The winner is the first cell of
    the window, in row-major order, that lies inside the input and holds the maximum. A window
    holding NaN gives NaN, and its winner is its last NaN: PyTorch's rule (its loop takes any
    value that is larger or NaN), so that gradients agree with PyTorch's even then.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    w_in = x.shape[3]
    flat = _windows(_pad_hw(x, padding, -np.inf), kernel, stride)
    flat = flat.reshape(*flat.shape[:4], kh * kw)
    y = flat.max(axis=-1)  # np.max propagates NaN
    inside = _windows(_pad_hw(np.ones((1, 1) + x.shape[2:], bool), padding, False), kernel, stride)
    inside = inside.reshape(*inside.shape[:4], kh * kw)
    first_max = np.argmax((flat == y[..., None]) & inside, axis=-1)  # argmax of booleans: the first True
    last_nan = kh * kw - 1 - np.argmax((np.isnan(flat) & inside)[..., ::-1], axis=-1)
    pos = np.where(np.isnan(y), last_nan, first_max)
    rows = np.arange(flat.shape[2])[:, None] * sh - ph + pos // kw
    cols = np.arange(flat.shape[3])[None, :] * sw - pw + pos % kw
    return np.ascontiguousarray(y), (rows * w_in + cols).astype(np.int64)


def max_pool2d_backward(grad_y, argmax, x_shape):
    """∂L/∂x[n, c, h, w] = Σ over the windows whose winner is (h, w) of g[n, c, i, j].

    Overlapping windows (stride < kernel) can share a winner, so gradients are summed.
    grad_y, argmax (N, C, H_out, W_out) → grad_x of shape x_shape = (N, C, H, W).
    """
    n, c, h, w = x_shape
    grad_x = np.zeros((n * c, h * w), dtype=grad_y.dtype)
    planes = np.arange(n * c)[:, None]
    per_plane = grad_y.shape[2] * grad_y.shape[3]  # spelled out: reshape cannot infer -1 when N = 0
    np.add.at(grad_x, (planes, argmax.reshape(n * c, per_plane)), grad_y.reshape(n * c, per_plane))
    return grad_x.reshape(x_shape)


# --------------------------------------------------------------------------- avg_pool2d
def _avg_divisor(x_shape, kernel, stride, padding, count_include_pad, dtype):
    """How many elements each window averages: kH·kW, or only the unpadded ones."""
    if count_include_pad:
        return np.asarray(kernel[0] * kernel[1], dtype=dtype)
    ones = np.ones((1, 1) + tuple(x_shape[2:]), dtype=dtype)
    return _windows(_pad_hw(ones, padding), kernel, stride).sum(axis=(-2, -1))


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad=True):
    """Mean over each window.

        y[n, c, i, j] = (1/D[i, j]) · Σ_{p, q} x_pad[n, c, i·sh + p, j·sw + q]

    D = kH·kW when count_include_pad (PyTorch's default), else the number of unpadded elements
    in the window (Keras's 'same'). x (N, C, H, W) → y (N, C, H_out, W_out).
    """
    windows = _windows(_pad_hw(x, padding), kernel, stride)
    divisor = _avg_divisor(x.shape, kernel, stride, padding, count_include_pad, x.dtype)
    return np.ascontiguousarray(windows.sum(axis=(-2, -1)) / divisor)


def avg_pool2d_backward(grad_y, x_shape, kernel, stride, padding, count_include_pad=True):
    """∂L/∂x_pad[n, c, i·sh + p, j·sw + q] += g[n, c, i, j] / D[i, j]; padding cropped off."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    h_out, w_out = grad_y.shape[2:]
    share = grad_y / _avg_divisor(x_shape, kernel, stride, padding, count_include_pad, grad_y.dtype)
    grad_x_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_y.dtype)
    for p in range(kh):
        for q in range(kw):
            grad_x_pad[:, :, p:p + sh * h_out:sh, q:q + sw * w_out:sw] += share
    return grad_x_pad[:, :, ph:ph + h, pw:pw + w].copy()


# --------------------------------------------------------------------------- relu
def relu_forward(x):
    """y = max(x, 0), elementwise, any shape."""
    return np.maximum(x, 0)


def relu_backward(grad_y, x):
    """∂L/∂x = g where x > 0, 0 where x ≤ 0 (at exactly 0 the subgradient 0, as PyTorch takes it).

    A select, not a product g·[x > 0], as PyTorch's: a unit that is off passes no gradient even
    when g is NaN or inf, and at x = NaN (where y is NaN) g passes, since NaN ≤ 0 is false."""
    return np.where(x <= 0, np.zeros((), grad_y.dtype), grad_y)


# --------------------------------------------------------------------------- leaky relu
def leaky_relu_forward(x, negative_slope):
    """y = x where x > 0, negative_slope·x elsewhere; elementwise, any shape (NaN passes through)."""
    return np.where(x > 0, x, x * np.asarray(negative_slope, x.dtype))


def leaky_relu_backward(grad_y, x, negative_slope):
    """∂L/∂x = g where x > 0, negative_slope·g elsewhere (at exactly 0 the slope on the left, as
    PyTorch takes it). A product with the slope, so NaN or inf in g stays NaN or inf."""
    return grad_y * np.where(x > 0, np.asarray(1, x.dtype), np.asarray(negative_slope, x.dtype))


# --------------------------------------------------------------------------- softmax + cross-entropy
def softmax_cross_entropy_forward(logits, labels):
    """Per-sample cross-entropy of softmax(logits) against integer class labels.

        p[n, k] = exp(z[n, k] − m_n) / Σ_j exp(z[n, j] − m_n),   m_n = max_j z[n, j]
        loss[n] = −log p[n, y_n] = log Σ_j exp(z[n, j] − m_n) − (z[n, y_n] − m_n)

    Shifting by m_n changes nothing mathematically and keeps exp from overflowing.
    logits (N, K) float, labels (N,) int in [0, K) → loss (N,), probs (N, K) (kept for backward).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    loss = -log_probs[np.arange(len(labels)), labels]
    return loss, np.exp(log_probs)


def softmax_cross_entropy_backward(grad_loss, probs, labels):
    """∂loss[n]/∂z[n, k] = p[n, k] − [k = y_n], so ∂L/∂z = g[n] · (p − onehot(y)).

    grad_loss (N,), probs (N, K), labels (N,) → grad_logits (N, K).
    """
    grad = probs.copy()
    grad[np.arange(len(labels)), labels] -= 1
    return grad * grad_loss[:, None]


# --------------------------------------------------------------------------- adam
def adam_step(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """One Adam(W) update, in place on param, m and v (all the same shape); returns None.

        m ← β₁·m + (1 − β₁)·g
        v ← β₂·v + (1 − β₂)·g²
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)        (t = step, counting from 1)
        θ ← θ − lr·(m̂ / (√v̂ + ε) + λ·θ)               (λ = weight_decay, decoupled as in AdamW)
    """
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param -= lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * param)


def adam_steps(params, grads, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """adam_step on each (param, grad, m, v) of equal-length lists: a model's parameters, all
    at the same step. One call per optimizer step, so a fast backend starts its threads once."""
    for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
        adam_step(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay)


# --------------------------------------------------------------------------- fused conv → relu → max-pool
def conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride):
    """The block every small CNN starts with, as one kernel: y = max_pool2d(relu(conv2d(x))).

    Since relu is monotone, max_pool(relu(c)) = relu(max_pool(c)): the fast kernels pool the
    raw convolution and clamp once per pooled value, without ever storing the conv output.
    Pooling has no padding here.

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None →
    y (N, C_out, H_p, W_p), with the conv output (N, C_out, H_c, W_c):
        H_c = ⌊(H + 2·ph − kH)/sh⌋ + 1,   H_p = ⌊(H_c − pool_kH)/pool_sh⌋ + 1   (W likewise)
    Also returns argmax (N, C_out, H_p, W_p), integers (int64 here; the C kernel stores int32,
    half the memory traffic): the flat index h·W_c + w of each window's maximum in the conv
    output plane, as max_pool2d_forward picks it (the first maximum, or the last NaN).
    """
    conv = conv2d_forward(x, weight, bias, stride, padding)
    pooled, argmax = max_pool2d_forward(conv, pool_kernel, pool_stride, (0, 0))
    return relu_forward(pooled), argmax


def conv2d_relu_max_pool2d_backward(grad_y, y, argmax, x, weight, stride, padding,
                                    need_x=True, need_weight=True, need_bias=True):
    """Gradients of conv2d_relu_max_pool2d_forward, by the chain rule through its three steps:

        g_pool = g where y > 0, else 0                         (relu)
        g_conv[n, o, h, w] = Σ_{windows won by (h, w)} g_pool  (max-pool: only winners)
        (∂L/∂x, ∂L/∂w, ∂L/∂b) = conv2d_backward(g_conv, ...)

    g_conv is non-zero at one position per pooling window at most, so a fast kernel can
    accumulate ∂L/∂w, ∂L/∂b and ∂L/∂x from the winners alone (a quarter of the work of the
    dense conv backward for 2×2 pooling). Returns (grad_x, grad_w, grad_b), None where not needed.
    """
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    n, _, h, w = x.shape
    conv_shape = (n, weight.shape[0], output_size(h, kh, sh, ph), output_size(w, kw, sw, pw))
    grad_conv = max_pool2d_backward(relu_backward(grad_y, y), argmax, conv_shape)
    return conv2d_backward(grad_conv, x, weight, stride, padding, need_x, need_weight, need_bias)


# --------------------------------------------------------------------------- sequence models
# embedding, layer norm, GELU
def embedding_forward(indices, weight):
    """Gather: the table's row for every index.

        y[p, :] = W[i[p], :]        for every position p of `indices`

    indices (...) integers in [0, V) (the op layer checks them), weight (V, D) → y (..., D).
    """
    return weight[indices]


def embedding_backward(grad_y, indices, num_embeddings):
    """Scatter-add, the transpose of the gather:

        ∂L/∂W[v, :] = Σ_{p : i[p] = v} g[p, :]          (0 for a row no position used)

    A row used at several positions gets the sum of their gradients: np.add.at accumulates
    repeated indices, where `grad_w[indices] += g` would keep only one of them.
    grad_y (..., D), indices (...) → grad_weight (V, D).
    """
    dim = grad_y.shape[-1]
    grad_w = np.zeros((num_embeddings, dim), dtype=grad_y.dtype)
    np.add.at(grad_w, indices.reshape(-1), grad_y.reshape(indices.size, dim))  # sizes spelled out: may be 0
    return grad_w


def _rows(x, normalized_shape):
    """x as (M, K): one row per position, its K = Π normalized_shape trailing elements."""
    lead = x.shape[:x.ndim - len(normalized_shape)]
    return x.reshape(math.prod(lead), math.prod(normalized_shape))


def layer_norm_forward(x, normalized_shape, weight, bias, eps):
    """Normalise each position over its last len(normalized_shape) axes, then scale and shift.

    For each row x (the K trailing elements of one position):
        μ = (1/K)·Σ_k x_k,   σ² = (1/K)·Σ_k (x_k − μ)²      (biased, as PyTorch)
        r = 1/√(σ² + ε),     x̂ = (x − μ)·r,     y = γ ⊙ x̂ + β

    x (..., *normalized_shape), weight γ and bias β of normalized_shape, or None (γ = 1, β = 0)
    → y like x, and mean μ and rstd r (M,), one per row, kept for backward.
    σ² is the mean of the squared deviations (two passes), not E[x²] − μ², which cancels
    catastrophically when |μ| ≫ σ.
    """
    rows = _rows(x, normalized_shape)
    mean = rows.mean(axis=1)
    centered = rows - mean[:, None]
    rstd = 1 / np.sqrt((centered * centered).mean(axis=1) + eps)
    y = centered * rstd[:, None]
    if weight is not None:
        y = y * weight.reshape(-1)
    if bias is not None:
        y = y + bias.reshape(-1)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad_y, x, normalized_shape, mean, rstd, weight,
                        need_x=True, need_weight=True, need_bias=True):
    """Gradients of layer_norm_forward; each is computed only if asked for (else None).

    Per row, with x̂ = (x − μ)·r and ĝ = g ⊙ γ (ĝ = g without γ):
        ∂L/∂γ = Σ_rows g ⊙ x̂,      ∂L/∂β = Σ_rows g
        ∂L/∂x = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))
    Subtracting μ removes ĝ's mean; r, which depends on x too, removes ĝ's component along x̂
    (docs/equations.md, "Layer normalisation"). grad_y like x, mean and rstd (M,) →
    (grad_x like x, grad_weight and grad_bias of normalized_shape).
    """
    rows, g = _rows(x, normalized_shape), _rows(grad_y, normalized_shape)
    x_hat = (rows - mean[:, None]) * rstd[:, None]
    grad_x = grad_w = grad_b = None
    if need_x:
        g_hat = g if weight is None else g * weight.reshape(-1)
        grad_x = rstd[:, None] * (g_hat - g_hat.mean(axis=1, keepdims=True)
                                  - x_hat * (g_hat * x_hat).mean(axis=1, keepdims=True))
        grad_x = grad_x.reshape(x.shape)
    if need_weight:
        grad_w = (g * x_hat).sum(axis=0).reshape(normalized_shape)
    if need_bias:
        grad_b = g.sum(axis=0).reshape(normalized_shape)
    return grad_x, grad_w, grad_b


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715
_erf_of_each = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    """erf elementwise via math.erf (NumPy has none, SciPy is not a dependency): correctly
    rounded in float64, at the price of a Python call per element (~0.1 µs)."""
    return np.asarray(_erf_of_each(x), dtype=x.dtype)


def gelu_forward(x, approximate="none"):
    """GELU: x weighted by the probability that a standard normal variable lies below it.

        'none':  y = x·Φ(x),             Φ(x) = ½·(1 + erf(x/√2))
        'tanh':  y = ½·x·(1 + tanh u),   u = √(2/π)·(x + 0.044715·x³)

    Elementwise, any shape; NaN gives NaN (and so does −∞: −∞·0).
    """
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * x ** 3)))
    return x * (0.5 * (1 + _erf(x / math.sqrt(2))))


def gelu_backward(grad_y, x, approximate="none"):
    """∂L/∂x = g·∂y/∂x, a product, so NaN or inf in g is never hidden:

        'none':  ∂y/∂x = Φ(x) + x·φ(x),        φ(x) = e^(−x²/2)/√(2π)
        'tanh':  ∂y/∂x = ½·(1 + tanh u) + ½·x·(1 − tanh²u)·√(2/π)·(1 + 3·0.044715·x²)
    """
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * x ** 3))
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_CUBIC * x * x)
    else:
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
        slope = cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return grad_y * slope


# --------------------------------------------------------------------------- masked softmax (attention)
def masked_softmax_forward(scores, mask=None, causal=False):
    """Softmax over the keys (last axis) of attention scores, each query seeing only the keys kept.

        a[..., i, j] = s[..., i, j] + (0 where keep[..., i, j], else −∞)
        y[..., i, j] = e^(a_ij − m_i) / Σ_k e^(a_ik − m_i),   m_i = max_k a_ik

    keep = mask (boolean, True = takes part, as PyTorch's attn_mask), and j ≤ i where causal
    (the lower triangle from the top-left corner, as PyTorch's is_causal). A row where every
    a_ij is −∞ (every key masked) has no softmax: its output is 0, as PyTorch's since 2.5,
    instead of the NaN that e^(−∞ − (−∞)) would give. The mask is added, not selected, so a NaN
    score stays NaN even where it is masked (as in PyTorch): NaN is never hidden.
    scores (..., T_q, T_k) float, mask broadcastable to it or None → y (..., T_q, T_k).
    """
    if causal:
        lower = np.tri(*scores.shape[-2:], dtype=bool)
        mask = lower if mask is None else mask & lower
    a = scores if mask is None else scores + np.where(mask, scores.dtype.type(0), scores.dtype.type(-np.inf))
    m = a.max(axis=-1, keepdims=True, initial=-np.inf)
    e = np.exp(a - np.where(m == -np.inf, 0, m))  # a row of −∞ is shifted by 0: e = 0, not e^NaN
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)     # 0 / 1 = 0 for that row


def masked_softmax_backward(grad_y, y):
    """∂L/∂s_ij = y_ij·(g_ij − Σ_k g_ik·y_ik), softmax's Jacobian-vector product.

    A masked key, and every key of a fully masked row, has y_ij = 0 and so gets 0: backward
    needs no mask. grad_y, y (..., T_q, T_k) → grad_scores (..., T_q, T_k).
    """
    return y * (grad_y - (grad_y * y).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- batch normalisation
def _channel_axes(x):
    """Every axis of x (N, C, *) but the channel axis 1: the axes batch norm reduces over."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    """A (C,) vector shaped (1, C, 1, ...) to broadcast along axis 1 of an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(x, weight, bias, eps):
    """Normalise each channel over the batch (and every spatial position), then scale and shift.

    For channel c, over its m = N·H·W… values x (every axis but 1):
        μ = (1/m)·Σ x,   σ² = (1/m)·Σ (x − μ)²          (biased, as PyTorch normalises with)
        r = 1/√(σ² + ε),  x̂ = (x − μ)·r,   y = γ_c·x̂ + β_c

    x (N, C) or (N, C, *), weight γ and bias β (C,) or None (γ = 1, β = 0)
    → y like x, mean μ and rstd r (C,) kept for backward, and var σ² (C,) for the running
    statistics. σ² is the mean of squared deviations (two passes), as in layer_norm_forward.
    """
    axes = _channel_axes(x)
    mean = x.mean(axis=axes)
    centered = x - _per_channel(mean, x.ndim)
    var = (centered * centered).mean(axis=axes)
    rstd = 1 / np.sqrt(var + eps)
    y = centered * _per_channel(rstd, x.ndim)
    if weight is not None:
        y = y * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y, mean, rstd, var


def batch_norm_backward(grad_y, x, mean, rstd, weight, need_x=True, need_weight=True, need_bias=True):
    """Gradients of batch_norm_forward; each is computed only if asked for (else None).

    Per channel c, Σ over its m values (every axis but 1), with x̂ = (x − μ)·r:
        ∂L/∂γ_c = Σ g·x̂,      ∂L/∂β_c = Σ g
        ∂L/∂x   = (γ_c·r / m) · (m·g − Σ g − x̂·Σ(g·x̂))
    layer norm's rule with rows and columns swapped: the statistics are shared by the batch, so
    every sample's gradient depends on every other's (docs/equations.md, "Batch normalisation").
    grad_y like x, mean and rstd (C,) → (grad_x like x, grad_weight (C,), grad_bias (C,)).
    """
    axes, m = _channel_axes(x), x.size // x.shape[1]
    x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(rstd, x.ndim)
    sum_g = grad_y.sum(axis=axes)
    sum_g_x_hat = (grad_y * x_hat).sum(axis=axes)
    grad_x = grad_w = grad_b = None
    if need_x:
        scale = rstd / m if weight is None else weight * rstd / m
        grad_x = _per_channel(scale, x.ndim) * (m * grad_y - _per_channel(sum_g, x.ndim)
                                                 - x_hat * _per_channel(sum_g_x_hat, x.ndim))
    if need_weight:
        grad_w = sum_g_x_hat
    if need_bias:
        grad_b = sum_g
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- gemm
def gemm(a, b, trans_a=False, trans_b=False, c=None, relu=False):
    """General matrix multiply, with either operand transposed, an optional addend and ReLU:

        C[i, j] = Σ_p op(A)[i, p] · op(B)[p, j]  (+ c[i, j]),    op(X) = Xᵀ if trans_x else X
        C = max(C, 0) if relu (as relu_forward: NaN stays NaN)

    a (M, K) or (K, M) if trans_a, b (K, N) or (N, K) if trans_b, c None or broadcastable to
    (M, N) (e.g. a bias (N,)) → C (M, N), a new array of a's dtype. K = 0 gives zeros (or c).
    Every product counts, as IEEE arithmetic says: a NaN or ±inf in a row of op(A) or a column
    of op(B) reaches its row or column of C (0·inf is NaN), as NumPy's @ (OpenBLAS) does.
    The dense layer's three products are gemm(x, W, trans_b=True, c=b), gemm(g, W) and
    gemm(g, x, trans_a=True); relu=True folds the ReLU that follows a layer into its forward.
    """
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if c is not None:
        np.add(product, c, out=product)  # in C's dtype, as the fast GEMMs
    return np.maximum(product, 0, out=product) if relu else product


# How the fast backends' gemm(algorithm=None) computes C (m, n) over depth k, as measured in
# training steps (docs/benchmarks.md, "Inside a training step"):
# - "dot", dot products, for a small C over a long depth with both operands contiguous along it
#   (the CNN's dense forward, 64×128 over 5408, where packing would transpose both operands);
# - "packed", our packed GEMM, for at most `block_rows` rows (one block of packed op(A): op(B) is
#   then packed a panel at a time and used at once) and at least PACKED_MIN_COLUMNS columns (the
#   CNN's dense gradients, 5408 wide: there it was as fast as OpenBLAS or faster);
# - "blas", NumPy's @ (OpenBLAS), for the rest: the baby GPT's products (768 rows, or ≤ 512
#   columns), 15–25 % faster in OpenBLAS, whose threads share one packed op(B) where each of ours
#   packs all of it; and small products, where our call costs more than the arithmetic.
DOT_MIN_DEPTH, DOT_MAX_OUTPUTS, PACKED_MIN_COLUMNS = 2048, 64 * 256, 2048


def gemm_algorithm(m, n, k, along_depth, block_rows):
    """"dot", "packed" or "blas" for gemm(algorithm=None), as the comment above says; along_depth:
    op(A)'s rows and op(B)'s columns are contiguous. In one place for both backends."""
    if along_depth and k >= DOT_MIN_DEPTH and m * n <= DOT_MAX_OUTPUTS:
        return "dot"
    return "packed" if m <= block_rows and n >= PACKED_MIN_COLUMNS else "blas"


def gemm_output(a, b, trans_a, trans_b, c, owner):
    """What a fast GEMM checks before it runs, in one place: a and b both float32 or both float64
    matrices whose inner sizes agree, c broadcastable to the product. Returns (m, n, k, out):
    out (M, N) of a's dtype holding c (its addend, so the GEMM adds into it), or uninitialised
    when c is None (the GEMM overwrites it)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: a and b must both be float32 or both float64, got {a.dtype} and {b.dtype}")
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2:
            raise ValueError(f"{owner}: {name} must be a matrix (2-D), got shape {x.shape}")
    (m, k), (k_b, n) = a.shape[::-1] if trans_a else a.shape, b.shape[::-1] if trans_b else b.shape
    if k_b != k:
        raise ValueError(f"{owner}: op(a) is {m}×{k} and op(b) is {k_b}×{n}: op(b) needs {k} rows "
                         f"(a {a.shape}, trans_a={trans_a}; b {b.shape}, trans_b={trans_b})")
    out = np.empty((m, n), a.dtype)
    if c is not None:
        try:
            np.copyto(out, c)
        except ValueError:
            raise ValueError(f"{owner}: c of shape {np.shape(c)} does not broadcast to the product's "
                             f"{(m, n)}") from None
    return m, n, k, out


def check_winograd(weight_shape, stride, padding, owner):
    """What the fast backends' Winograd F(2×2, 3×3) convolution (docs/equations.md) takes, checked
    in one place: a 3×3 kernel, stride 1, padding 0, 1 or 2 (its input gradient is the same
    convolution padded by 2 − padding). Raises ValueError otherwise."""
    kernel, stride, padding = tuple(weight_shape[2:]), tuple(stride), tuple(padding)
    if kernel != (3, 3) or stride != (1, 1) or not all(0 <= p <= 2 for p in padding):
        raise ValueError(f"{owner}: the winograd algorithm takes 3×3 kernels, stride 1 and padding ≤ 2; "
                         f"got kernel {kernel}, stride {stride}, padding {padding}")


# The fast backends' weight gradient (algorithm "gemm") sums the batch in up to CONV_WEIGHT_GROUPS
# runs of samples, one thread's each, then adds the runs' sums in order: as many runs whatever the
# thread count, so the same bits on any; fewer when the partial sums would pass
# CONV_WEIGHT_PARTIALS_MAX values.
CONV_WEIGHT_GROUPS, CONV_WEIGHT_PARTIALS_MAX = 8, 1 << 22


def conv_weight_groups(n, weight_size):
    """The number of runs of samples (see CONV_WEIGHT_GROUPS): a function of the shape alone."""
    return max(1, min(n, CONV_WEIGHT_GROUPS, CONV_WEIGHT_PARTIALS_MAX // max(1, weight_size) + 1))


def conv_gradient_algorithms(weight, stride, padding, w_out, lanes, tile_channels):
    """The fast backends' automatic choice for conv2d_backward, as measured (docs/benchmarks.md,
    "General convolution"): (input-gradient algorithm, weight-gradient algorithm), each "direct"
    or "gemm".

    ∂x "direct" (the adjoint convolution, adjoint_convolution) where it applies, where C_in fills
    the register tile's `tile_channels` lanes (fewer leave lanes idle: 3 input channels made it
    3× slower than "gemm"), and where it is exact: weights all finite, since it multiplies grad_y's
    zero padding by them (0·inf is NaN where the reference has ±inf).
    ∂W "direct" (dot products along the rows) at stride 1 where rows of w_out pixels, in whole
    vectors of `lanes`, are at least 3/4 pixels (14, 26 or 28 of 16 lanes; not 7 of 16)."""
    direct_x = (adjoint_convolution(weight, stride, padding) is not None and np.shape(weight)[1] >= tile_channels
                and bool(np.isfinite(weight).all()))
    direct_w = tuple(stride) == (1, 1) and 4 * w_out >= 3 * -(-w_out // lanes) * lanes
    return "direct" if direct_x else "gemm", "direct" if direct_w else "gemm"


def adjoint_convolution(weight, stride, padding):
    """At stride 1 with padding < kernel, conv2d's input gradient is itself a conv2d: the full
    correlation of grad_y with each filter turned 180° and C_in, C_out swapped, padded by
    k − 1 − padding, whose output is x's plane (docs/equations.md, "Convolution"). Returns that
    convolution's (weight (C_in, C_out, kH, kW), contiguous; padding), or None where it does not apply."""
    kernel = tuple(np.shape(weight)[2:])
    if tuple(stride) != (1, 1) or not all(p < k for p, k in zip(padding, kernel)):
        return None
    flipped = np.ascontiguousarray(np.asarray(weight).transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    return flipped, tuple(k - 1 - p for p, k in zip(padding, kernel))
