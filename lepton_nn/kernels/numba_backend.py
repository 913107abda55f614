"""Numba kernels: the reference equations written as explicit loops and compiled to machine code.

Same functions, signatures and results as `lepton_nn.kernels.reference`; read that module
first, since its docstrings state each equation and shape. Here is only how it is computed.

How this file is organised:

* Every public kernel is a plain-Python wrapper that makes its inputs C-contiguous, allocates
  the outputs and hands both to a small `@njit` loop (named with a leading underscore) that
  fills them in. Outputs keep the input dtype: numba compiles one specialisation per dtype.
* Nothing compiles at import. Each loop compiles on its first call and is cached on disk
  (`cache=True`, files in `__pycache__`), so later processes load it in milliseconds.
* `NUMBA_DISABLE_JIT=1` turns each loop back into the Python function you read here and
  `prange` into `range`: you can step through a kernel in a debugger (use small inputs).
* `prange` splits work over independent (sample, channel) planes or array elements. Each
  output element is written by exactly one thread, so there are no races and no locks.
  The cross-entropy loops over (N, K) logits stay serial: waking threads costs more than
  the work at classifier sizes.
* Convolution has four algorithms (CONV_ALGORITHMS). "gemm" is our own packed GEMM
  (numba_gemm) over blocks of im2col packed straight from the image, never stored whole
  (lepton_nn/kernels/numba_conv.py). "direct" is C's channel-blocked direct convolution, with
  its weight gradient as dot products along rows (numba_conv.py, as the C backend's). The
  automatic choice (algorithm=None) takes "direct" or "gemm" per pass, as measured (see
  CONV_ALGORITHMS below). "blas" is im2col of the whole batch (a numba loop gathering every
  window into a column) followed by one `np.matmul` (OpenBLAS); its backward reuses the same
  im2col for the weight gradient and the adjoint col2im for the input one. "winograd", by name
  only, is Winograd F(2×2, 3×3) for 3×3 kernels at stride 1.

What it checks and what it trusts: the fast backends' contract in lepton_nn/kernels/__init__.py.
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from lepton_nn.checks import class_labels, indices as valid_indices, int_at_least
from lepton_nn.kernels import numba_conv
from lepton_nn.kernels.numba_conv import _inside_outputs
from lepton_nn.kernels.numba_gemm import GEMM_ALGORITHMS, gemm  # noqa: F401 (this backend's GEMM)
from lepton_nn.kernels.reference import check_winograd, conv_gradient_algorithms, output_size
from lepton_nn.kernels.workspace import scratch, zero_padded

# The engine's dense layer keeps NumPy's @ (OpenBLAS) until this GEMM beats it in a training
# step: it is still 8–15 % slower there, its weight gradient and small products most
# (docs/benchmarks.md, "Inside a training step"). The C backend's GEMM is the engine's.
NOT_USED_YET = ("gemm",)

# --------------------------------------------------------------------------- shared helpers
# The reference's formula ⌊(size + 2·pad − kernel) / stride⌋ + 1, compiled so loops can call it.
_output_size = njit(cache=True)(output_size)


@njit(cache=True)
def _window_span(start, kernel, size):
    """The part [lo, hi) of the window [start, start + kernel) that lies inside [0, size).

    Positions outside are padding: max-pool ignores them, avg-pool counts them as zeros.
    """
    return max(start, 0), min(start + kernel, size)


# --------------------------------------------------------------------------- conv2d
# How conv2d_forward and conv2d_backward compute:
#   "direct"   no columns: NR output channels by MR pixels of a row summed in registers over every
#              tap, from the padded image (numba_conv.py); its input gradient at stride 1 is the
#              same convolution of grad_y (flipped filters); its weight gradient at stride 1, dot
#              products along the rows of grad_y and the padded image; otherwise "gemm";
#   "gemm"     our packed GEMM over im2col blocks packed straight from the image (numba_conv.py);
#   "blas"     im2col of the whole batch, then one np.matmul (OpenBLAS), as below;
#   "winograd" Winograd F(2×2, 3×3), for 3×3 kernels, stride 1, padding ≤ 2: 16 GEMMs over
#              transformed tiles, 2.25× fewer multiplications (the weight gradient as "direct"'s).
# algorithm=None: the forward "direct" where C_out fills its NR lanes and taps are many (more
# than _DIRECT_CONV_MAX_TAPS), else "gemm"; each gradient
# as reference.conv_gradient_algorithms says ("direct" where it is exact and fills its vectors).
CONV_ALGORITHMS = ("direct", "gemm", "blas", "winograd")


def _conv_options(algorithm, threads, owner, weight, stride, padding):
    """The algorithm named (None: the automatic choice) and the thread count (None: numba's), checked."""
    if algorithm is not None and algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"{owner}: algorithm must be None or one of {', '.join(CONV_ALGORITHMS)}, "
                         f"got {algorithm!r}")
    if algorithm == "winograd":
        check_winograd(weight.shape, stride, padding, owner)
    threads = get_num_threads() if threads is None else int_at_least(threads, owner, "threads", 1)
    return algorithm, threads


# "blas": layout of the im2col matrix, for the whole batch at once:
#
#     cols[(c·kH + p)·kW + q,  n,  i·W_out + j]  =  x_pad[n, c, i·sh + p, j·sw + q]
#
# i.e. one row per kernel tap (c, p, q) and one column per output position (n, i, j). As a
# (C_in·kH·kW, N·H_out·W_out) matrix it turns each pass of the convolution into ONE GEMM:
#
#     forward   y      = w2d   @ cols            w2d = w.reshape(C_out, C_in·kH·kW)
#     weight    grad_w = g2d   @ colsᵀ           g2d = grad_y as (C_out, N·H_out·W_out)
#     input     grad_x = col2im(w2dᵀ @ g2d)
#
# One large GEMM rather than one per sample, which on shared cores each wait for a descheduled
# BLAS thread (docs/benchmarks.md, "Measurements behind the code"). The price is a transpose
# between this (C_out, N, ...) layout and NCHW, one pass over y or grad_y.
@njit(parallel=True, cache=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, cols):
    """Fill cols (C_in·kH·kW, N, H_out·W_out) from x (N, C_in, H, W) as laid out above; padding reads as 0."""
    n, c, h, w = x.shape
    h_out, w_out = _output_size(h, kh, sh, ph), _output_size(w, kw, sw, pw)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for p in range(kh):
            for q in range(kw):
                segment = cols[(ch * kh + p) * kw + q, b]  # this tap's values at every output of sample b
                j_lo, j_hi = _inside_outputs(q - pw, sw, w, w_out)
                for i in range(h_out):
                    dst = segment[i * w_out:(i + 1) * w_out]
                    r = i * sh + p - ph
                    if r < 0 or r >= h:  # this whole output row reads a padding row
                        dst[:] = 0
                        continue
                    dst[:j_lo] = 0
                    dst[j_hi:] = 0
                    for j in range(j_lo, j_hi):
                        dst[j] = x[b, ch, r, j * sw + q - pw]


@njit(parallel=True, cache=True)
def _col2im(cols, kh, kw, sh, sw, ph, pw, grad_x):
    """The adjoint of _im2col: every entry of cols is added back to the input pixel it was copied from.

        grad_x[n, c, i·sh + p − ph, j·sw + q − pw] += cols[(c·kH + p)·kW + q, n, i·W_out + j]

    Entries that came from padding are dropped. grad_x is overwritten, not accumulated into.
    """
    n, c, h, w = grad_x.shape
    h_out, w_out = _output_size(h, kh, sh, ph), _output_size(w, kw, sw, pw)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        grad_x[b, ch] = 0
        for p in range(kh):
            for q in range(kw):
                segment = cols[(ch * kh + p) * kw + q, b]
                j_lo, j_hi = _inside_outputs(q - pw, sw, w, w_out)
                for i in range(h_out):
                    r = i * sh + p - ph
                    if r < 0 or r >= h:
                        continue
                    for j in range(j_lo, j_hi):
                        grad_x[b, ch, r, j * sw + q - pw] += segment[i * w_out + j]


def _columns_shape(x_shape, kernel, stride, padding):
    n, c, h, w = x_shape
    h_out = output_size(h, kernel[0], stride[0], padding[0])
    w_out = output_size(w, kernel[1], stride[1], padding[1])
    return c * kernel[0] * kernel[1], n, h_out * w_out


def conv2d_forward(x, weight, bias, stride, padding, *, algorithm=None, threads=None):
    """reference.conv2d_forward by one of CONV_ALGORITHMS ("direct", "gemm" and "winograd" on up to `threads`
    threads, default numba's count; numba_conv.py). "blas": y = w2d @ im2col(x) (+ b), then reordered from
    (C_out, N, H_out·W_out) to NCHW."""
    algorithm, threads = _conv_options(algorithm, threads, "conv2d_forward (numba)", weight, stride, padding)
    if algorithm is None:  # few taps: a tile's few multiply-adds per store; few channels: idle lanes
        taps = math.prod(weight.shape[1:])
        algorithm = "direct" if weight.shape[0] >= numba_conv.NR and taps > _DIRECT_CONV_MAX_TAPS else "gemm"
    if algorithm == "gemm":
        return numba_conv.conv2d_forward(x, weight, bias, stride, padding, threads)
    if algorithm == "winograd":
        return numba_conv.winograd_forward(x, weight, bias, padding, threads)
    if algorithm == "direct":
        return numba_conv.direct_forward(x, weight, bias, stride, padding, threads)
    x = np.ascontiguousarray(x)
    c_out = weight.shape[0]
    cols = scratch("columns", _columns_shape(x.shape, weight.shape[2:], stride, padding), x.dtype)
    _im2col(x, *weight.shape[2:], *stride, *padding, cols)
    k, n, hw_out = cols.shape
    y_by_channel = scratch("by channel", (c_out, n, hw_out), x.dtype)
    np.matmul(weight.reshape(c_out, k), cols.reshape(k, n * hw_out), out=y_by_channel.reshape(c_out, n * hw_out))
    y = np.empty((n, c_out, hw_out), dtype=x.dtype)
    if bias is None:
        y[...] = y_by_channel.transpose(1, 0, 2)
    else:  # reorder and add the bias in one pass
        np.add(y_by_channel.transpose(1, 0, 2), bias[:, None], out=y)
    h_out, w_out = (output_size(x.shape[2 + a], weight.shape[2 + a], stride[a], padding[a]) for a in (0, 1))
    return y.reshape(n, c_out, h_out, w_out)  # sizes spelled out: reshape cannot infer -1 when N = 0


def conv2d_backward(grad_y, x, weight, stride, padding, need_x=True, need_weight=True, need_bias=True, *,
                    algorithm=None, threads=None):
    """reference.conv2d_backward by one of CONV_ALGORITHMS ("direct", "gemm" and "winograd" on up to `threads`
    threads, default numba's count; numba_conv.py). "blas", with g2d = grad_y reordered to (C_out, N·H_out·W_out):

        grad_w = g2d @ im2col(x)ᵀ      grad_b = g2d summed over its columns
        grad_x = col2im(w2dᵀ @ g2d)    (each column's gradient scattered back over its window)
    """
    algorithm, threads = _conv_options(algorithm, threads, "conv2d_backward (numba)", weight, stride, padding)
    if algorithm is None:
        w_out = output_size(x.shape[3], weight.shape[3], stride[1], padding[1])
        by_x, by_w = conv_gradient_algorithms(weight, stride, padding, w_out, numba_conv.ROWS_LANES, numba_conv.NR)
        ways = {"direct": numba_conv.direct_backward, "gemm": numba_conv.conv2d_backward}
        grad_x = ways[by_x](grad_y, x, weight, stride, padding, True, False, threads)[0] if need_x else None
        grad_w = ways[by_w](grad_y, x, weight, stride, padding, False, True, threads)[1] if need_weight else None
        return grad_x, grad_w, np.asarray(grad_y).sum(axis=(0, 2, 3)) if need_bias else None
    if algorithm == "gemm":
        grad_x, grad_w = numba_conv.conv2d_backward(grad_y, x, weight, stride, padding, need_x, need_weight,
                                                    threads)
        return grad_x, grad_w, np.asarray(grad_y).sum(axis=(0, 2, 3)) if need_bias else None
    if algorithm == "winograd":
        grad_x, grad_w = numba_conv.winograd_backward(grad_y, x, weight, padding, need_x, need_weight, threads)
        return grad_x, grad_w, np.asarray(grad_y).sum(axis=(0, 2, 3)) if need_bias else None
    if algorithm == "direct":
        grad_x, grad_w = numba_conv.direct_backward(grad_y, x, weight, stride, padding, need_x, need_weight,
                                                    threads)
        return grad_x, grad_w, np.asarray(grad_y).sum(axis=(0, 2, 3)) if need_bias else None
    x = np.ascontiguousarray(x)
    n, c_out = x.shape[0], weight.shape[0]
    cols_shape = _columns_shape(x.shape, weight.shape[2:], stride, padding)
    k, _, hw_out = cols_shape
    g_by_channel = scratch("by channel", (c_out, n, hw_out), grad_y.dtype)
    g_by_channel[...] = grad_y.reshape(n, c_out, hw_out).transpose(1, 0, 2)
    g2d = g_by_channel.reshape(c_out, n * hw_out)
    grad_x = grad_w = grad_b = None
    if need_weight:
        cols = scratch("columns", cols_shape, x.dtype)
        _im2col(x, *weight.shape[2:], *stride, *padding, cols)
        grad_w = np.matmul(g2d, cols.reshape(k, n * hw_out).T).reshape(weight.shape).astype(x.dtype, copy=False)
    if need_bias:
        grad_b = g2d.sum(axis=1)
    if need_x:
        # The im2col columns are dead by now, so the same scratch buffer takes their gradients.
        grad_cols = scratch("columns", cols_shape, x.dtype)
        np.matmul(weight.reshape(c_out, k).T, g2d, out=grad_cols.reshape(k, n * hw_out))
        grad_x = np.empty_like(x)
        _col2im(grad_cols, *weight.shape[2:], *stride, *padding, grad_x)
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- max_pool2d
@njit(cache=True)
def _last_nan(x_plane, r_lo, r_hi, c_lo, c_hi):
    """Row-major position (r, c) of the last NaN in x_plane[r_lo:r_hi, c_lo:c_hi], or (−1, −1)."""
    for r in range(r_hi - 1, r_lo - 1, -1):
        for col in range(c_hi - 1, c_lo - 1, -1):
            if x_plane[r, col] != x_plane[r, col]:
                return r, col
    return -1, -1


@njit(parallel=True, cache=True)
def _max_pool(x, kh, kw, sh, sw, ph, pw, y, argmax):
    """y = the largest element of each window, argmax = its flat index r·W + c in the unpadded plane."""
    n, c, h, w = x.shape
    h_out, w_out = y.shape[2:]
    for plane in prange(n * c):
        x_plane = x[plane // c, plane % c]
        y_plane, argmax_plane = y[plane // c, plane % c], argmax[plane // c, plane % c]
        for i in range(h_out):
            r_lo, r_hi = _window_span(i * sh - ph, kh, h)
            for j in range(w_out):
                # Only the part of the window inside the input is searched: padding never wins.
                c_lo, c_hi = _window_span(j * sw - pw, kw, w)
                best, best_r, best_c = x_plane[r_lo, c_lo], r_lo, c_lo
                nan_probe = 0.0  # the window's sum: NaN if it holds a NaN (or both +inf and −inf)
                for r in range(r_lo, r_hi):
                    for col in range(c_lo, c_hi):
                        v = x_plane[r, col]
                        nan_probe += v
                        if v > best:  # strict: the first maximum in row-major order wins ties
                            best, best_r, best_c = v, r, col
                if nan_probe != nan_probe:
                    # NaN propagates, the last one winning (PyTorch's rule). Checked once per
                    # window, not per element: a branch per element is costly (docs/benchmarks.md).
                    nan_r, nan_c = _last_nan(x_plane, r_lo, r_hi, c_lo, c_hi)
                    if nan_r >= 0:
                        best, best_r, best_c = x_plane[nan_r, nan_c], nan_r, nan_c
                y_plane[i, j] = best
                argmax_plane[i, j] = best_r * w + best_c


@njit(parallel=True, cache=True)
def _max_pool_2x2(x, w, h_out, w_out, y, argmax):
    """_max_pool for 2×2 windows at stride 2 without padding, the usual pooling, on flat planes
    (x (planes, H·W), y and argmax (planes, H_out·W_out)): each window's values in row-major order,
    each taken if larger or, in a plane that holds a NaN, if NaN (the last NaN wins, as in
    _max_pool). Selects, not branches, along a row of windows, which LLVM vectorises."""
    for plane in prange(x.shape[0]):
        xp, yp, ap = x[plane], y[plane], argmax[plane]
        nan_rule = False
        for k in range(xp.shape[0]):
            nan_rule |= xp[k] != xp[k]
        for i in range(h_out):
            top, out = 2 * i * w, i * w_out
            for j in range(w_out):
                best, at = xp[top + 2 * j], 0
                v = xp[top + 2 * j + 1]
                take = (v > best) | (nan_rule & (v != v))
                best, at = v if take else best, 1 if take else at
                v = xp[top + w + 2 * j]
                take = (v > best) | (nan_rule & (v != v))
                best, at = v if take else best, w if take else at
                v = xp[top + w + 2 * j + 1]
                take = (v > best) | (nan_rule & (v != v))
                best, at = v if take else best, w + 1 if take else at
                yp[out + j] = best
                ap[out + j] = top + 2 * j + at


@njit(parallel=True, cache=True)
def _max_pool_backward(grad_y, argmax, grad_x):
    """Per plane: grad_x[argmax[k]] += grad_y[k]. Arrays are (planes, positions)."""
    for plane in prange(grad_x.shape[0]):
        grad_x[plane] = 0
        for k in range(grad_y.shape[1]):
            grad_x[plane, argmax[plane, k]] += grad_y[plane, k]  # '+=': overlapping windows can share a winner


def max_pool2d_forward(x, kernel, stride, padding):
    """(y, argmax) of every window; see reference.max_pool2d_forward."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    out_shape = (n, c, output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1]))
    y = np.empty(out_shape, dtype=x.dtype)
    argmax = np.empty(out_shape, dtype=np.int64)
    if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(padding) == (0, 0):
        flat = (n * c, out_shape[2] * out_shape[3])
        _max_pool_2x2(x.reshape(n * c, h * w), w, *out_shape[2:], y.reshape(flat), argmax.reshape(flat))
    else:
        _max_pool(x, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], y, argmax)
    return y, argmax


def max_pool2d_backward(grad_y, argmax, x_shape):
    """Each output's gradient goes to its window's winner; see reference.max_pool2d_backward."""
    n, c, h, w = x_shape
    grad_x = np.empty((n * c, h * w), dtype=grad_y.dtype)
    planes = (n * c, grad_y.shape[2] * grad_y.shape[3])  # not (n·c, -1): that fails for an empty batch
    _max_pool_backward(np.ascontiguousarray(grad_y).reshape(planes),
                       np.ascontiguousarray(argmax, dtype=np.int64).reshape(planes), grad_x)
    return grad_x.reshape(x_shape)


# --------------------------------------------------------------------------- avg_pool2d
@njit(cache=True)
def _avg_divisor(r_lo, r_hi, c_lo, c_hi, kh, kw, count_include_pad):
    """How many elements a window averages: all kH·kW, or only those inside the input."""
    return kh * kw if count_include_pad else (r_hi - r_lo) * (c_hi - c_lo)


@njit(parallel=True, cache=True)
def _avg_pool(x, kh, kw, sh, sw, ph, pw, count_include_pad, y):
    """y = (sum of the window's real elements) / D; padding adds zeros, so it is skipped."""
    n, c, h, w = x.shape
    h_out, w_out = y.shape[2:]
    for plane in prange(n * c):
        x_plane, y_plane = x[plane // c, plane % c], y[plane // c, plane % c]
        for i in range(h_out):
            r_lo, r_hi = _window_span(i * sh - ph, kh, h)
            for j in range(w_out):
                c_lo, c_hi = _window_span(j * sw - pw, kw, w)
                total = 0.0  # a float64 accumulator, also for float32 inputs
                for r in range(r_lo, r_hi):
                    for col in range(c_lo, c_hi):
                        total += x_plane[r, col]
                y_plane[i, j] = total / _avg_divisor(r_lo, r_hi, c_lo, c_hi, kh, kw, count_include_pad)


@njit(parallel=True, cache=True)
def _avg_pool_backward(grad_y, kh, kw, sh, sw, ph, pw, count_include_pad, grad_x):
    """Each window hands g / D to every real element it averaged; gradients of overlapping windows add."""
    n, c, h, w = grad_x.shape
    h_out, w_out = grad_y.shape[2:]
    for plane in prange(n * c):
        grad_y_plane, grad_x_plane = grad_y[plane // c, plane % c], grad_x[plane // c, plane % c]
        grad_x_plane[:] = 0
        for i in range(h_out):
            r_lo, r_hi = _window_span(i * sh - ph, kh, h)
            for j in range(w_out):
                c_lo, c_hi = _window_span(j * sw - pw, kw, w)
                share = grad_y_plane[i, j] / _avg_divisor(r_lo, r_hi, c_lo, c_hi, kh, kw, count_include_pad)
                for r in range(r_lo, r_hi):
                    for col in range(c_lo, c_hi):
                        grad_x_plane[r, col] += share


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad=True):
    """Mean of every window; see reference.avg_pool2d_forward."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = np.empty((n, c, output_size(h, kernel[0], stride[0], padding[0]),
                  output_size(w, kernel[1], stride[1], padding[1])), dtype=x.dtype)
    _avg_pool(x, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], bool(count_include_pad), y)
    return y


def avg_pool2d_backward(grad_y, x_shape, kernel, stride, padding, count_include_pad=True):
    """Each output's gradient shared equally over its window; see reference.avg_pool2d_backward."""
    grad_x = np.empty(x_shape, dtype=grad_y.dtype)
    _avg_pool_backward(np.ascontiguousarray(grad_y), kernel[0], kernel[1], stride[0], stride[1],
                       padding[0], padding[1], bool(count_include_pad), grad_x)
    return grad_x


# --------------------------------------------------------------------------- relu
@njit(parallel=True, cache=True)
def _relu(x, y):
    for k in prange(x.size):
        # Written as "0 if v < 0" rather than "v if v > 0" so that NaN passes through, as in np.maximum.
        y[k] = 0 if x[k] < 0 else x[k]


@njit(parallel=True, cache=True)
def _relu_backward(grad_y, x, grad_x):
    for k in prange(x.size):
        grad_x[k] = 0 if x[k] <= 0 else grad_y[k]  # a select: see reference.relu_backward for NaN


def relu_forward(x):
    """max(x, 0) elementwise, any shape."""
    x = np.asarray(x, order="C")  # any shape, 0-d included; flattened for the loop
    y = np.empty_like(x)
    _relu(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(grad_y, x):
    """grad_y where x > 0, else 0; elementwise, any shape."""
    grad_y, x = np.asarray(grad_y, order="C"), np.asarray(x, order="C")
    grad_x = np.empty_like(grad_y)
    _relu_backward(grad_y.reshape(-1), x.reshape(-1), grad_x.reshape(-1))
    return grad_x


@njit(parallel=True, cache=True)
def _leaky_relu(x, slope, y):
    for k in prange(x.size):
        y[k] = x[k] if x[k] > 0 else x[k] * slope


@njit(parallel=True, cache=True)
def _leaky_relu_backward(grad_y, x, slope, grad_x):
    for k in prange(x.size):
        grad_x[k] = grad_y[k] * (1 if x[k] > 0 else slope)  # a product: NaN or inf in grad_y stays


def leaky_relu_forward(x, negative_slope):
    """x where x > 0, negative_slope·x elsewhere; any shape."""
    x = np.asarray(x, order="C")
    y = np.empty_like(x)
    _leaky_relu(x.reshape(-1), x.dtype.type(negative_slope), y.reshape(-1))
    return y


def leaky_relu_backward(grad_y, x, negative_slope):
    """grad_y where x > 0, negative_slope·grad_y elsewhere; any shape."""
    grad_y, x = np.asarray(grad_y, order="C"), np.asarray(x, order="C")
    grad_x = np.empty_like(grad_y)
    _leaky_relu_backward(grad_y.reshape(-1), x.reshape(-1), grad_y.dtype.type(negative_slope), grad_x.reshape(-1))
    return grad_x


# --------------------------------------------------------------------------- softmax + cross-entropy
@njit(cache=True)
def _softmax_cross_entropy(logits, labels, loss, probs):
    """Row by row: shift by the row max, log-sum-exp, then loss and probabilities from log p."""
    n, k = logits.shape
    for s in range(n):
        row = logits[s]
        # Shifting by the max keeps every exp(z − m) in (0, 1]: no overflow at logits of ±1e4.
        m = row[0]
        for c in range(1, k):
            m = max(m, row[c])
        total = 0.0
        for c in range(k):
            total += np.exp(row[c] - m)
        log_norm = np.log(total)
        for c in range(k):
            probs[s, c] = np.exp(row[c] - m - log_norm)
        loss[s] = log_norm - (row[labels[s]] - m)


@njit(cache=True)
def _softmax_cross_entropy_backward(grad_loss, probs, labels, grad_logits):
    n, k = probs.shape
    for s in range(n):
        for c in range(k):
            one_hot = 1 if c == labels[s] else 0
            grad_logits[s, c] = (probs[s, c] - one_hot) * grad_loss[s]


def softmax_cross_entropy_forward(logits, labels):
    """(loss (N,), probs (N, K)); see reference.softmax_cross_entropy_forward."""
    logits = np.ascontiguousarray(logits)
    labels = class_labels(labels, *logits.shape, "softmax_cross_entropy (numba)")  # int64: one compiled variant
    loss = np.empty(logits.shape[0], dtype=logits.dtype)
    probs = np.empty_like(logits)
    _softmax_cross_entropy(logits, labels, loss, probs)
    return loss, probs


def softmax_cross_entropy_backward(grad_loss, probs, labels):
    """grad_loss[n] · (probs − onehot(labels)); see reference.softmax_cross_entropy_backward."""
    grad_loss, probs = np.ascontiguousarray(grad_loss), np.ascontiguousarray(probs)
    grad_logits = np.empty(probs.shape, dtype=np.result_type(probs, grad_loss))
    labels = class_labels(labels, *probs.shape, "softmax_cross_entropy (numba)")
    _softmax_cross_entropy_backward(grad_loss, probs, labels, grad_logits)
    return grad_logits


# --------------------------------------------------------------------------- adam
# All of a model's parameter arrays in one parallel kernel, as in the C backend: the threads
# start once per optimizer step instead of once per array (docs/benchmarks.md, "Measurements
# behind the code"). The arrays arrive as tuples, since numba has no arrays of arrays; the
# threads share a table of jobs (array, start, stop). A tuple's length is part of its type, and
# numba's compile time grows steeply with it (0.4 s for 6 arrays, 557 s for 50), so the arrays go
# in groups of _ADAM_GROUP, the last one padded with empty arrays: one compilation, cached on
# disk, serves every model, and a model of up to _ADAM_GROUP arrays takes one call.
_ADAM_JOB = 16384  # elements per job: enough to pay for handing it out, few enough to share out well
_ADAM_GROUP = 8    # the MNIST CNN's 6 arrays in one call


@njit(cache=True, error_model="numpy")
def _adam_update(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                 bias_correction1, bias_correction2, eps, weight_decay):
    """One pass over flat arrays; the same operations in the same order as the reference.
    error_model="numpy": numba's default checks every divisor for zero, and the loop would not vectorise."""
    for k in range(param.size):
        g = grad[k]
        m[k] = beta1 * m[k] + one_minus_beta1 * g
        v[k] = beta2 * v[k] + one_minus_beta2 * g * g
        m_hat = m[k] / bias_correction1
        v_hat = v[k] / bias_correction2
        param[k] = param[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * param[k])


@njit(parallel=True, cache=True)
def _adam(params, grads, ms, vs, jobs, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
          bias_correction1, bias_correction2, eps, weight_decay):
    """_adam_update on every job: jobs[j] = (index into the tuples, start, stop)."""
    for j in prange(jobs.shape[0]):
        a, start, stop = jobs[j, 0], jobs[j, 1], jobs[j, 2]
        # slices from start: _adam_update's index then counts from 0, and numba needs no
        # negative-index check, which would keep the loop scalar
        _adam_update(params[a][start:stop], grads[a][start:stop], ms[a][start:stop], vs[a][start:stop],
                     lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                     bias_correction1, bias_correction2, eps, weight_decay)


_adam_job_tables = {}  # by array sizes: a model's are the same at every step


def _adam_jobs(sizes):
    """The job table of arrays of these sizes: (array, start, stop) rows of at most _ADAM_JOB elements."""
    jobs = _adam_job_tables.get(sizes)
    if jobs is None:
        rows = [(a, start, min(start + _ADAM_JOB, size)) for a, size in enumerate(sizes)
                for start in range(0, size, _ADAM_JOB)]
        if len(_adam_job_tables) >= 64:  # many models in one process (the tests): start again
            _adam_job_tables.clear()
        jobs = _adam_job_tables[sizes] = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
    return jobs


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """One AdamW update in place on param, m and v (C-contiguous); see reference.adam_step."""
    adam_steps([param], [grad], [m], [v], lr, beta1, beta2, eps, step, weight_decay)


def adam_steps(params, grads, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """reference.adam_steps: every array in one parallel kernel call (one per dtype)."""
    if not len(params) == len(grads) == len(ms) == len(vs):
        raise ValueError(f"adam_steps: {len(params)} params, {len(grads)} grads, {len(ms)} m and {len(vs)} v")
    by_dtype = {}
    for param, grad, m, v in zip(params, grads, ms, vs):
        for name, array in (("param", param), ("m", m), ("v", v)):
            # reshape(-1) of a strided array would copy, and the update would be lost
            if not (array.flags.c_contiguous and array.flags.writeable):
                raise ValueError(f"adam_step: {name} is updated in place and must be writable and C-contiguous")
            if array.dtype != param.dtype:
                raise TypeError(f"adam_step: {name} is {array.dtype}, param is {param.dtype}")
        if not param.size == np.size(grad) == m.size == v.size:
            raise ValueError(f"adam_step: param, grad, m and v must have one size, got "
                             f"{param.size}, {np.size(grad)}, {m.size} and {v.size}")
        grad = np.ascontiguousarray(grad, dtype=param.dtype)
        if not grad.flags.writeable:  # a read-only array is another numba type, and a tuple holds one type
            grad = grad.copy()
        group = by_dtype.setdefault(param.dtype, ([], [], [], []))
        for arrays, array in zip(group, (param, grad, m, v)):
            arrays.append(array.reshape(-1))
    for dtype, arrays in by_dtype.items():
        # The reference mixes Python floats into float32 arrays, which NumPy rounds to float32
        # first; rounding the scalars here the same way makes float32 results match it exactly.
        real = dtype.type
        count, padding = len(arrays[0]), [np.empty(0, dtype)] * _ADAM_GROUP
        for start in range(0, count, _ADAM_GROUP):
            params_, grads_, ms_, vs_ = (tuple((group[start:start + _ADAM_GROUP] + padding)[:_ADAM_GROUP])
                                         for group in arrays)
            _adam(params_, grads_, ms_, vs_, _adam_jobs(tuple(p.size for p in params_)),
                  real(lr), real(beta1), real(beta2), real(1 - beta1), real(1 - beta2),
                  real(1 - beta1 ** step), real(1 - beta2 ** step), real(eps), real(weight_decay))


# --------------------------------------------------------------------------- fused conv → relu → max-pool
# With few taps (C_in·kH·kW ≤ _DIRECT_CONV_MAX_TAPS; 9 in the first layer of an MNIST CNN) a
# direct convolution beats im2col + GEMM. These are the C backend's kernels (how they work:
# c_backend.py's comment on them) in numba. They run along output channels, _CHANNEL_BLOCK of
# them side by side in the lanes of a SIMD vector, so each input value is loaded once and
# broadcast to all of them, and pooling compares whole vectors of channels. The forward computes
# the few conv rows a row of pooling windows reads into a small buffer, pools and clamps them
# there, and never stores the conv output; it stores y and argmax (int32) channels-last and
# returns NCHW-shaped views of that memory, as the C backend does. With many taps the GEMM
# wins, and the op runs as its composition.
#
# Making numba vectorise them: numba turns LLVM's SLP vectoriser off, and LLVM unrolls a loop of
# 16 short iterations completely before its loop vectoriser sees it. So each loop over the lanes
# (`for c in range(_CHANNEL_BLOCK)`) does the work of a block of pixels or windows, a body long
# enough to stay a loop, which becomes a few vector instructions; its accumulators are
# _stack_array()s, which LLVM keeps in vector registers (it must assume that an np.empty array
# on the heap may alias the inputs, and keeps that in memory). docs/benchmarks.md, "The fused
# conv kernels", has the measurements.
from lepton_nn.kernels.numba_stack import stack_array as _stack_array  # noqa: E402 (this section's tool)

_DIRECT_CONV_MAX_TAPS = 64
_CHANNEL_BLOCK = 16  # output channels side by side, as in C for both dtypes: one AVX-512 vector of float32
_PIXEL_BLOCK = 8  # conv pixels per step: independent chains of multiply-adds, each weight vector loaded once
_PIXEL_BLOCK_VALUES = _PIXEL_BLOCK * _CHANNEL_BLOCK  # a global, so that numba sees a constant (_stack_array)
_WINDOW_BLOCK = 4  # pooling windows per step
_CORRELATION_PIXELS = 128  # conv pixels whose weight-gradient terms are summed in the array's type, then in float64


def _pack_channel_blocks(weight, bias, dtype):
    """weight (C_out, C_in, kH, kW) → (blocks, taps, _CHANNEL_BLOCK): [b, t, c] = weight of output
    channel b·_CHANNEL_BLOCK + c at tap t (tap-major, as the lanes read it), and the bias as
    (blocks, _CHANNEL_BLOCK); lanes past C_out are zero."""
    c_out, taps = weight.shape[0], math.prod(weight.shape[1:])
    blocks = -(-c_out // _CHANNEL_BLOCK)
    lanes = np.zeros((blocks * _CHANNEL_BLOCK, taps), dtype)
    lanes[:c_out] = weight.reshape(c_out, taps)
    biases = np.zeros(blocks * _CHANNEL_BLOCK, dtype)
    if bias is not None:
        biases[:c_out] = bias
    packed = lanes.reshape(blocks, _CHANNEL_BLOCK, taps).transpose(0, 2, 1)
    return np.ascontiguousarray(packed), biases.reshape(blocks, _CHANNEL_BLOCK)


def _tap_offsets(c_in, kh, kw, h, w):
    """Offset of tap (c, p, q) from a window's origin in a flattened (C_in, H, W) sample: c·H·W + p·W + q."""
    return (np.arange(c_in)[:, None, None] * (h * w) + np.arange(kh)[:, None] * w + np.arange(kw)).reshape(-1)


@njit(cache=True, fastmath={"contract"})
def _conv_row(x, s, start, step, weights, biases, tap_at, count, rows, out):
    """rows[out + u·_CHANNEL_BLOCK + c] = biases[c] + Σ_t weights[t, c] · x[s, start + u·step + tap_at[t]]
    for u < count: a row of conv outputs of one channel block, _PIXEL_BLOCK pixels at a time.
    fastmath "contract" allows fused multiply-adds (MUL_ADD in the C kernels) and nothing else."""
    taps = tap_at.size
    if count < _PIXEL_BLOCK:  # a row narrower than a block, one pixel at a time
        for u in range(count):
            for c in range(_CHANNEL_BLOCK):
                total = biases[c]
                for t in range(taps):
                    total += weights[t, c] * x[s, start + u * step + tap_at[t]]
                rows[out + u * _CHANNEL_BLOCK + c] = total
        return
    acc = _stack_array(_PIXEL_BLOCK_VALUES, rows.dtype)  # [u·_CHANNEL_BLOCK + c]: pixel u, lane c
    values = _stack_array(_PIXEL_BLOCK, rows.dtype)
    u0 = 0
    while u0 < count:
        u0 = min(u0, count - _PIXEL_BLOCK)  # a last, partial block starts earlier, recomputing a few pixels
        first = start + u0 * step
        # indices cast to unsigned: numba checks a signed index for a negative value, a step per load
        for u in range(_PIXEL_BLOCK):
            values[u] = x[s, np.uint64(first + u * step + tap_at[0])]
        for c in range(_CHANNEL_BLOCK):  # the first tap sets the accumulators
            w = weights[0, c]
            for u in range(_PIXEL_BLOCK):
                acc[u * _CHANNEL_BLOCK + c] = biases[c] + w * values[u]
        for t in range(1, taps):
            for u in range(_PIXEL_BLOCK):
                values[u] = x[s, np.uint64(first + u * step + tap_at[t])]
            for c in range(_CHANNEL_BLOCK):
                w = weights[t, c]
                for u in range(_PIXEL_BLOCK):
                    acc[u * _CHANNEL_BLOCK + c] += w * values[u]
        at = out + u0 * _CHANNEL_BLOCK
        for k in range(_PIXEL_BLOCK_VALUES):  # a copy of constant size: a few vector moves, not a call to memcpy
            rows[np.uint64(at + k)] = acc[k]
        u0 += _PIXEL_BLOCK


@njit(cache=True)
def _relu_max_pool_row(rows, room, pkh, pkw, psw, w_c, top_at, y, argmax, out, w_p, c_out, c0):
    """y[out + j·C_out + c] = max(0, largest of window j of rows), argmax[...] its flat index in the
    conv plane, for lanes c < C_out - c0; rows holds pkh conv rows of `room` pixels (room for a
    block of windows even where W_p is narrower), top_at is the plane index of its first pixel.
    _WINDOW_BLOCK windows at a time."""
    width = min(_CHANNEL_BLOCK, c_out - c0)
    best = _stack_array((_WINDOW_BLOCK, _CHANNEL_BLOCK), rows.dtype)
    best_at = _stack_array((_WINDOW_BLOCK, _CHANNEL_BLOCK), np.int32)
    j0 = 0
    while j0 < w_p:
        j0 = max(min(j0, w_p - _WINDOW_BLOCK), 0)  # a last, partial block starts earlier
        for c in range(_CHANNEL_BLOCK):
            for u in range(_WINDOW_BLOCK):
                left = (j0 + u) * psw
                best[u, c] = rows[np.uint64(left * _CHANNEL_BLOCK + c)]
                best_at[u, c] = top_at + left
        for r in range(pkh):
            for q in range(pkw):
                if r == 0 and q == 0:
                    continue
                for c in range(_CHANNEL_BLOCK):
                    for u in range(_WINDOW_BLOCK):
                        col = (j0 + u) * psw + q
                        v = rows[np.uint64((r * room + col) * _CHANNEL_BLOCK + c)]
                        # max-pool's rules lane by lane: strict > keeps the first of equal values,
                        # and every NaN is taken, so the last NaN wins (PyTorch's rule)
                        take = (v > best[u, c]) | (v != v)
                        best[u, c] = v if take else best[u, c]
                        best_at[u, c] = top_at + r * w_c + col if take else best_at[u, c]
        # relu is monotone: max_pool(relu(c)) = relu(max_pool(c)), so clamp after pooling; not
        # with max(): NaN passes. A whole block of lanes and windows is stored by a loop like those
        # above (a runtime count of lanes makes a call to memcpy of each window's argmax).
        at = out + j0 * c_out
        if width == _CHANNEL_BLOCK and j0 + _WINDOW_BLOCK <= w_p:
            for c in range(_CHANNEL_BLOCK):
                for u in range(_WINDOW_BLOCK):
                    y[np.uint64(at + u * c_out + c)] = 0 if best[u, c] < 0 else best[u, c]
                    argmax[np.uint64(at + u * c_out + c)] = best_at[u, c]
        else:
            for u in range(min(_WINDOW_BLOCK, w_p - j0)):
                for c in range(width):
                    y[np.uint64(at + u * c_out + c)] = 0 if best[u, c] < 0 else best[u, c]
                    argmax[np.uint64(at + u * c_out + c)] = best_at[u, c]
        j0 += _WINDOW_BLOCK


@njit(parallel=True, cache=True)
def _conv_relu_max_pool(x, weight_blocks, bias_blocks, tap_at, sh, sw, w_in, w_c, pkh, pkw, psh, psw, y, argmax):
    """x (N, C_in·H·W) zero-padded; weights and biases from _pack_channel_blocks; y, argmax (N, H_p, W_p, C_out).
    A job is (channel block, sample), block-major as in C. The helpers index flat arrays, with
    offsets LLVM knows: a multi-dimensional index multiplies by the array's strides at each access."""
    n, h_p, w_p, c_out = y.shape
    blocks = weight_blocks.shape[0]
    cols = (w_p - 1) * psw + pkw  # the conv columns some pooling window reads
    room = max(cols, (_WINDOW_BLOCK - 1) * psw + pkw)
    for job in prange(blocks * n):
        block, s = job // n, job % n
        weights, biases = weight_blocks[block], bias_blocks[block]
        y_flat, argmax_flat = y.reshape(-1), argmax.reshape(-1)
        rows = np.empty(pkh * room * _CHANNEL_BLOCK, y.dtype)  # the conv rows that one row of windows reads
        for i in range(h_p):
            for r in range(pkh):
                _conv_row(x, s, (i * psh + r) * sh * w_in, sw, weights, biases, tap_at, cols,
                          rows, r * room * _CHANNEL_BLOCK)
            _relu_max_pool_row(rows, room, pkh, pkw, psw, w_c, i * psh * w_c, y_flat, argmax_flat,
                               (s * h_p + i) * w_p * c_out + block * _CHANNEL_BLOCK, w_p, c_out, block * _CHANNEL_BLOCK)


def _fused_is_direct(weight_shape, conv_hw):
    """Whether the fused op runs the direct kernels: few taps, and conv planes that int32 indexes."""
    return math.prod(weight_shape[1:]) <= _DIRECT_CONV_MAX_TAPS and math.prod(conv_hw) < 2 ** 31


def conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride):
    """(relu(max_pool2d(conv2d(x))), argmax in the conv plane); see reference.conv2d_relu_max_pool2d_forward.
    The direct kernels return views of channels-last memory and an int32 argmax, as the C backend."""
    c_out, c_in, kh, kw = weight.shape
    n, _, h, w = x.shape
    h_c, w_c = output_size(h, kh, stride[0], padding[0]), output_size(w, kw, stride[1], padding[1])
    if not _fused_is_direct(weight.shape, (h_c, w_c)):
        pooled, argmax = max_pool2d_forward(conv2d_forward(x, weight, bias, stride, padding),
                                            pool_kernel, pool_stride, (0, 0))
        return relu_forward(pooled), argmax
    x_pad = zero_padded(x, padding)
    h_pad, w_pad = x_pad.shape[2:]
    h_p, w_p = output_size(h_c, pool_kernel[0], pool_stride[0], 0), output_size(w_c, pool_kernel[1], pool_stride[1], 0)
    y = np.empty((n, h_p, w_p, c_out), dtype=x.dtype)
    argmax = np.empty((n, h_p, w_p, c_out), dtype=np.int32)
    weight_blocks, bias_blocks = _pack_channel_blocks(weight, bias, x.dtype)
    _conv_relu_max_pool(x_pad.reshape(n, c_in * h_pad * w_pad), weight_blocks, bias_blocks,
                        _tap_offsets(c_in, kh, kw, h_pad, w_pad), *stride, w_pad, w_c,
                        *pool_kernel, *pool_stride, y, argmax)
    return y.transpose(0, 3, 1, 2), argmax.transpose(0, 3, 1, 2)


# Backward, from the winners: pooled value (s, o, i, j) with g = grad_y·[¬(y ≤ 0)] (relu's
# backward, a select) came from conv position (hc, wc) = divmod(argmax, W_c), which read
# x_pad[s, c, hc·sh + p, wc·sw + q] with weight w[o, c, p, q]. Weight and bias: a job (channel
# block, sample) scatters each g to its winner in a conv-shaped tile[hc, wc, lane] (max-pool's
# backward), then correlates the tile with x, every x value broadcast to the block's lanes. Sums
# run in the array's type over _CORRELATION_PIXELS or so (a few conv rows, in registers), then
# in float64: in float32 a whole plane's sum drifts by ~1e-5. Each job keeps its own float64
# sums, added over the samples in order afterwards, so the result does not depend on the
# threads. Input: threads split the samples, each owning grad_x[s]; only the winners are visited.
@njit(cache=True)
def _conv_row_of(at, w_c, inv_w_c):
    """at // w_c, without an integer division (the slowest step of the loops below): (at + 0.5)/W_c
    is 0.5/W_c away from any integer, far more than rounding in float64 moves it (at < 2³¹)."""
    return int((at + 0.5) * inv_w_c)


@njit(cache=True)
def _scatter_to_tile(grad_y, y, argmax, s, c0, plane, tile, bias_sums):
    """Max-pool's and relu's backward for one job: tile[at·_CHANNEL_BLOCK + c] += g for every
    pooled value of sample s and channel c0 + c, at its winner at (none outside the conv plane),
    and bias_sums[c] += g, in float64: a bias's terms often cancel. All read flat, as below."""
    pooled, c_out = grad_y.shape[1], grad_y.shape[2]
    grad_flat, y_flat, at_flat = grad_y.reshape(-1), y.reshape(-1), argmax.reshape(-1)
    for k in range(pooled):
        first = (s * pooled + k) * c_out + c0
        for c in range(min(_CHANNEL_BLOCK, c_out - c0)):
            at = at_flat[np.uint64(first + c)]
            if y_flat[np.uint64(first + c)] <= 0 or at < 0 or at >= plane:  # g = 0, or no winner
                continue
            g = grad_flat[np.uint64(first + c)]
            tile[np.uint64(at * _CHANNEL_BLOCK + c)] += g
            bias_sums[c] += g


@njit(cache=True, fastmath={"contract"})
def _correlate_tile(tile, x, s, tap_at, sh, sw, w_in, h_c, w_c, sums):
    """sums[t, c] += Σ_hc Σ_wc tile[(hc·W_c + wc)·_CHANNEL_BLOCK + c] · x[s, hc·sh·w_in + wc·sw + tap_at[t]]:
    one job's weight gradient, _PIXEL_BLOCK pixels at a time, summed in the tile's type over
    groups of conv rows, then in float64. The tile has a block of spare pixels at its end."""
    lanes = sums.shape[1]  # = _CHANNEL_BLOCK, unknown to LLVM: the loop summing over it stays a vector loop
    acc = _stack_array((_PIXEL_BLOCK, _CHANNEL_BLOCK), tile.dtype)
    values = _stack_array(_PIXEL_BLOCK, tile.dtype)
    group = max(1, -(-_CORRELATION_PIXELS // w_c))
    for h0 in range(0, h_c, group):
        for t in range(tap_at.size):
            acc[:, :] = 0  # a constant size: a few vector stores
            for hc in range(h0, min(h0 + group, h_c)):
                row = hc * sh * w_in + tap_at[t]
                for wc0 in range(0, w_c, _PIXEL_BLOCK):
                    at = (hc * w_c + wc0) * _CHANNEL_BLOCK  # tile read flat: offsets LLVM knows, not strides
                    inside = w_c - wc0
                    if inside >= _PIXEL_BLOCK:
                        for u in range(_PIXEL_BLOCK):
                            values[u] = x[s, np.uint64(row + (wc0 + u) * sw)]
                        for c in range(_CHANNEL_BLOCK):
                            for u in range(_PIXEL_BLOCK):
                                acc[u, c] += tile[np.uint64(at + u * _CHANNEL_BLOCK + c)] * values[u]
                    else:  # the row's last block: the tile past the row is left out, not times 0 (inf·0 is NaN)
                        for u in range(_PIXEL_BLOCK):
                            values[u] = x[s, np.uint64(row + (wc0 + u) * sw)] if u < inside else 0
                        zero = tile.dtype.type(0)  # a literal 0 would make the sums float64
                        for c in range(_CHANNEL_BLOCK):
                            for u in range(_PIXEL_BLOCK):
                                term = tile[np.uint64(at + u * _CHANNEL_BLOCK + c)] * values[u]
                                acc[u, c] += term if u < inside else zero
            for c in range(lanes):
                group_sum = acc[0, c]
                for u in range(1, _PIXEL_BLOCK):
                    group_sum += acc[u, c]
                sums[t, c] += group_sum


@njit(parallel=True, cache=True)
def _conv_relu_max_pool_grad_params(grad_y, y, argmax, x, tap_at, sh, sw, w_in, h_c, w_c, sums):
    """sums[b, s, t, c] = Σ over sample s's conv positions of g_conv · x at tap t, for output channel
    b·_CHANNEL_BLOCK + c, and sums[b, s, taps, c] = Σ g_conv (the bias); grad_y, y, argmax (N, H_p·W_p, C_out)."""
    n = grad_y.shape[0]
    blocks, taps = sums.shape[0], tap_at.size
    for job in prange(blocks * n):
        block, s = job // n, job % n
        job_sums = sums[block, s]
        job_sums[:, :] = 0
        tile = np.zeros((h_c * w_c + _PIXEL_BLOCK) * _CHANNEL_BLOCK, grad_y.dtype)
        _scatter_to_tile(grad_y, y, argmax, s, block * _CHANNEL_BLOCK, h_c * w_c, tile, job_sums[taps])
        _correlate_tile(tile, x, s, tap_at, sh, sw, w_in, h_c, w_c, job_sums)


@njit(parallel=True, cache=True)
def _conv_relu_max_pool_grad_input(grad_y, y, argmax, weight, tap_at, sh, sw, w_in, h_c, w_c, grad_x):
    """grad_x (N, C_in·H·W) of the zero-padded input; weight (C_out, taps); the rest as above."""
    n, pooled, c_out = grad_y.shape
    taps = tap_at.size
    plane, inv_w_c = h_c * w_c, 1.0 / w_c
    for s in prange(n):
        grad_x[s] = 0
        for k in range(pooled):
            for o in range(c_out):
                at = argmax[s, k, o]
                if y[s, k, o] <= 0 or at < 0 or at >= plane:
                    continue
                g = grad_y[s, k, o]
                hc = _conv_row_of(at, w_c, inv_w_c)
                origin = hc * sh * w_in + (at - hc * w_c) * sw
                for t in range(taps):
                    grad_x[s, np.uint64(origin + tap_at[t])] += g * weight[o, t]


def conv2d_relu_max_pool2d_backward(grad_y, y, argmax, x, weight, stride, padding,
                                    need_x=True, need_weight=True, need_bias=True):
    """(grad_x, grad_w, grad_b), None where not needed; see reference.conv2d_relu_max_pool2d_backward.
    y and argmax may come from this backend's forward (channels-last views, int32) or any other."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    h_c, w_c = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    grad_y, y, argmax = np.asarray(grad_y), np.asarray(y), np.asarray(argmax)
    if not (grad_y.shape == y.shape == argmax.shape and grad_y.ndim == 4 and grad_y.shape[:2] == (n, c_out)):
        raise ValueError(f"grad_y {grad_y.shape}, y {y.shape} and argmax {argmax.shape} must be equal "
                         f"and start with (N, C_out) = {(n, c_out)}")
    if not _fused_is_direct(weight.shape, (h_c, w_c)):  # the composition, as the forward
        grad_conv = max_pool2d_backward(relu_backward(grad_y, y), argmax, (n, c_out, h_c, w_c))
        return conv2d_backward(grad_conv, x, weight, stride, padding, need_x, need_weight, need_bias)
    # channels-last, as the kernels read them: no copy for what this backend's forward returned
    pooled = grad_y.shape[2] * grad_y.shape[3]
    grad_y, y, argmax = (np.ascontiguousarray(a.transpose(0, 2, 3, 1), dtype).reshape(n, pooled, c_out)
                         for a, dtype in ((grad_y, x.dtype), (y, None), (argmax, None)))
    x_pad = zero_padded(x, padding)
    h_pad, w_pad = x_pad.shape[2:]
    tap_at, taps = _tap_offsets(c_in, kh, kw, h_pad, w_pad), c_in * kh * kw
    grad_x = grad_w = grad_b = None
    if need_weight or need_bias:
        blocks = -(-c_out // _CHANNEL_BLOCK)
        sums = np.empty((blocks, n, taps + 1, _CHANNEL_BLOCK))
        _conv_relu_max_pool_grad_params(grad_y, y, argmax, x_pad.reshape(n, c_in * h_pad * w_pad), tap_at,
                                        sh, sw, w_pad, h_c, w_c, sums)
        totals = sums.sum(axis=1)  # over the samples, in order: the same for any number of threads
        if need_weight:
            by_channel = totals[:, :taps].transpose(0, 2, 1).reshape(blocks * _CHANNEL_BLOCK, taps)
            grad_w = by_channel[:c_out].reshape(weight.shape).astype(x.dtype)
        if need_bias:
            grad_b = totals[:, taps].reshape(blocks * _CHANNEL_BLOCK)[:c_out].astype(x.dtype)
    if need_x:
        grad_x_pad = np.empty((n, c_in, h_pad, w_pad), x.dtype)
        _conv_relu_max_pool_grad_input(grad_y, y, argmax, np.ascontiguousarray(weight, x.dtype).reshape(c_out, taps),
                                       tap_at, sh, sw, w_pad, h_c, w_c, grad_x_pad.reshape(n, c_in * h_pad * w_pad))
        grad_x = grad_x_pad if (ph, pw) == (0, 0) else np.ascontiguousarray(grad_x_pad[:, :, ph:ph + h, pw:pw + w])
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- sequence models
# The embedding's gradient, GELU, layer norm and attention's masked softmax. Threads split
# elements or rows; where a sum runs over rows (the embedding's scatter-add, layer norm's ∂γ
# and ∂β) they split the columns instead, so each owns its outputs. Constants reach the loops
# rounded to the array's dtype (an argument of that type), so float32 arrays are computed in
# float32 as in the reference; sums run in float64. error_model="numpy": a division by zero
# gives inf or NaN, as in NumPy, instead of raising. math.erf, np.exp and np.tanh are one
# libm call per element: numba vectorises them only with Intel's SVML, which is not a dependency.
_COLUMN_BLOCK = 16  # columns per thread where threads split sums over rows (one cache line of a float32 row)


@njit(parallel=True, cache=True)
def _embedding_backward(grad_y, indices, grad_w):
    """grad_w[indices[p]] += grad_y[p] for each position p in order. Threads split the columns:
    each owns its columns of every row, so repeated indices never race."""
    positions, dim = grad_y.shape
    for block in prange((dim + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK):
        c0 = block * _COLUMN_BLOCK
        c1 = min(dim, c0 + _COLUMN_BLOCK)
        grad_w[:, c0:c1] = 0
        for p in range(positions):
            row = indices[p]
            for c in range(c0, c1):
                grad_w[row, c] += grad_y[p, c]


def embedding_backward(grad_y, indices, num_embeddings):
    """Scatter-add of grad_y's rows into (V, D); the same sums in the same order as the
    reference's np.add.at, so bit-identical. See reference.embedding_backward."""
    indices = valid_indices(indices, num_embeddings, "embedding_backward (numba)").reshape(-1)  # written at
    dim = grad_y.shape[-1]
    grad_w = np.empty((num_embeddings, dim), dtype=grad_y.dtype)
    _embedding_backward(np.ascontiguousarray(grad_y).reshape(indices.size, dim), indices, grad_w)
    return grad_w


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_erf(x, half, one, sqrt2, y):
    for k in prange(x.size):
        v = x[k]
        y[k] = v * (half * (one + math.erf(v / sqrt2)))


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_erf_backward(grad_y, x, half, one, sqrt2, sqrt_2pi, grad_x):
    for k in prange(x.size):
        v = x[k]
        cdf = half * (one + math.erf(v / sqrt2))
        grad_x[k] = grad_y[k] * (cdf + v * np.exp(-half * v * v) / sqrt_2pi)


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_tanh(x, half, one, scale, cubic, y):
    for k in prange(x.size):
        v = x[k]
        y[k] = half * v * (one + np.tanh(scale * (v + cubic * (v * v * v))))


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_tanh_backward(grad_y, x, half, one, scale, cubic, cubic3, grad_x):
    for k in prange(x.size):
        v = x[k]
        t = np.tanh(scale * (v + cubic * (v * v * v)))
        slope = half * (one + t) + half * v * (one - t * t) * scale * (one + cubic3 * v * v)
        grad_x[k] = grad_y[k] * slope


def _gelu_constants(dtype, approximate):
    real = dtype.type
    if approximate == "tanh":
        return real(0.5), real(1), real(math.sqrt(2 / math.pi)), real(0.044715)
    return real(0.5), real(1), real(math.sqrt(2))


def gelu_forward(x, approximate="none"):
    """x·Φ(x) (erf) or its tanh approximation, elementwise; see reference.gelu_forward."""
    x = np.asarray(x, order="C")
    y = np.empty_like(x)
    loop = _gelu_tanh if approximate == "tanh" else _gelu_erf
    loop(x.reshape(-1), *_gelu_constants(x.dtype, approximate), y.reshape(-1))
    return y


def gelu_backward(grad_y, x, approximate="none"):
    """grad_y · ∂y/∂x, elementwise; see reference.gelu_backward."""
    grad_y, x = np.asarray(grad_y, order="C"), np.asarray(x, order="C")
    grad_x = np.empty_like(grad_y)
    constants = _gelu_constants(x.dtype, approximate)
    if approximate == "tanh":
        _gelu_tanh_backward(grad_y.reshape(-1), x.reshape(-1), *constants, x.dtype.type(3 * 0.044715),
                            grad_x.reshape(-1))
    else:
        _gelu_erf_backward(grad_y.reshape(-1), x.reshape(-1), *constants, x.dtype.type(math.sqrt(2 * math.pi)),
                           grad_x.reshape(-1))
    return grad_x


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm(x, weight, bias, eps, y, mean, rstd):
    """Per row: μ and σ² in two passes (float64 sums), then y = (x − μ)·r·γ + β."""
    m, k = x.shape
    for r in prange(m):
        row = x[r]
        total = 0.0
        for c in range(k):
            total += row[c]
        mean[r] = total / k
        mu = mean[r]  # read back: μ rounded to the dtype, as the reference centres with it
        squares = 0.0
        for c in range(k):
            d = row[c] - mu
            squares += d * d
        rstd[r] = 1.0 / np.sqrt(squares / k + eps)
        rs = rstd[r]
        for c in range(k):
            v = (row[c] - mu) * rs
            if weight is not None:  # resolved when numba compiles: None is a type of its own
                v = v * weight[c]
            if bias is not None:
                v = v + bias[c]
            y[r, c] = v


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_backward_x(g, x, mean, rstd, weight, grad_x):
    """Per row: r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)), ĝ = g ⊙ γ, x̂ = (x − μ)·r."""
    m, k = x.shape
    for r in prange(m):
        mu, rs = mean[r], rstd[r]
        sum_g, sum_gx = 0.0, 0.0
        for c in range(k):
            gh = g[r, c]
            if weight is not None:
                gh = gh * weight[c]
            sum_g += gh
            sum_gx += gh * ((x[r, c] - mu) * rs)
        mean_g, mean_gx = sum_g / k, sum_gx / k
        for c in range(k):
            gh = g[r, c]
            if weight is not None:
                gh = gh * weight[c]
            grad_x[r, c] = rs * ((gh - mean_g) - (x[r, c] - mu) * rs * mean_gx)


@njit(parallel=True, cache=True)
def _layer_norm_backward_params(g, x, mean, rstd, grad_w, grad_b):
    """∂γ = Σ_rows g ⊙ x̂, ∂β = Σ_rows g: threads split the columns, so none writes another's."""
    m, k = x.shape
    width = _COLUMN_BLOCK
    for block in prange((k + width - 1) // width):
        c0 = block * width
        c1 = min(k, c0 + width)
        acc_w, acc_b = np.zeros(width), np.zeros(width)
        for r in range(m):
            mu, rs = mean[r], rstd[r]
            for c in range(c0, c1):
                acc_w[c - c0] += g[r, c] * ((x[r, c] - mu) * rs)
                acc_b[c - c0] += g[r, c]
        for c in range(c0, c1):
            grad_w[c] = acc_w[c - c0]
            grad_b[c] = acc_b[c - c0]


def _as_rows(a, normalized_shape):
    """a C-contiguous as (M, K), K = Π normalized_shape (reference._rows)."""
    k = math.prod(normalized_shape)
    return np.ascontiguousarray(a).reshape(math.prod(a.shape[:a.ndim - len(normalized_shape)]), k)


def layer_norm_forward(x, normalized_shape, weight, bias, eps):
    """(y, mean, rstd) per row of the trailing normalized_shape; see reference.layer_norm_forward."""
    rows = _as_rows(x, normalized_shape)
    y, mean, rstd = np.empty_like(rows), np.empty(rows.shape[0], x.dtype), np.empty(rows.shape[0], x.dtype)
    weight, bias = (None if p is None else np.ascontiguousarray(p).reshape(-1) for p in (weight, bias))
    _layer_norm(rows, weight, bias, float(eps), y, mean, rstd)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad_y, x, normalized_shape, mean, rstd, weight,
                        need_x=True, need_weight=True, need_bias=True):
    """(grad_x, grad_weight, grad_bias), None where not needed; see reference.layer_norm_backward."""
    rows, g = _as_rows(x, normalized_shape), _as_rows(grad_y, normalized_shape)
    mean, rstd = np.ascontiguousarray(mean), np.ascontiguousarray(rstd)
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x = np.empty_like(g)
        weight = None if weight is None else np.ascontiguousarray(weight).reshape(-1)
        _layer_norm_backward_x(g, rows, mean, rstd, weight, grad_x)
        grad_x = grad_x.reshape(x.shape)
    if need_weight or need_bias:
        grad_w, grad_b = np.empty(rows.shape[1], g.dtype), np.empty(rows.shape[1], g.dtype)
        _layer_norm_backward_params(g, rows, mean, rstd, grad_w, grad_b)
        grad_w, grad_b = grad_w.reshape(normalized_shape), grad_b.reshape(normalized_shape)
    return grad_x, grad_w if need_weight else None, grad_b if need_bias else None


@njit(parallel=True, cache=True, error_model="numpy")
def _masked_softmax(s, keep, t_q, causal, minus_inf, y):
    """Row r of s (rows, T_k) is query r mod T_q; key j takes part where keep[r, j] (if a mask is
    given) and, if causal, where j ≤ r mod T_q. The reference adds −∞ to the masked scores, so a
    NaN or +∞ anywhere in the row, masked or not, makes the whole row NaN; otherwise only the
    kept keys have e^(s − m) ≠ 0, and a row with none (or only −∞) gives 0."""
    rows, t_k = s.shape
    for r in prange(rows):
        limit = min(t_k, r % t_q + 1) if causal else t_k  # keys j ≥ limit are masked
        row, out = s[r], y[r]
        poisoned = False
        for j in range(t_k):
            poisoned |= not row[j] < np.inf  # NaN or +∞
        if poisoned:
            out[:] = np.nan
            continue
        top = minus_inf
        for j in range(limit):
            if (keep is None or keep[r, j]) and row[j] > top:
                top = row[j]
        out[:] = 0
        if top == minus_inf:  # no key, or only −∞: e = 0 everywhere (the reference shifts by 0)
            continue
        total = 0.0
        for j in range(limit):
            if keep is None or keep[r, j]:
                out[j] = np.exp(row[j] - top)
                total += out[j]
        for j in range(limit):
            out[j] = out[j] / total  # total ≥ 1: the maximum contributes e^0


@njit(parallel=True, cache=True)
def _masked_softmax_backward(grad_y, y, grad_s):
    """Per row: y ⊙ (g − Σ g ⊙ y), the sum in float64."""
    rows, t_k = y.shape
    for r in prange(rows):
        dot = 0.0
        for j in range(t_k):
            dot += grad_y[r, j] * y[r, j]
        for j in range(t_k):
            grad_s[r, j] = y[r, j] * (grad_y[r, j] - dot)


def _softmax_rows(scores):
    """scores C-contiguous as (rows, T_k), and T_q (1 for a 1-D input)."""
    scores = np.asarray(scores, order="C")
    t_k = scores.shape[-1]
    return scores.reshape(scores.size // t_k if t_k else 0, t_k), scores.shape[-2] if scores.ndim >= 2 else 1


def masked_softmax_forward(scores, mask=None, causal=False):
    """Softmax over the last axis, masked keys left out, max-shifted; see reference.masked_softmax_forward.

    A boolean mask is broadcast to the scores' shape (one byte per score) and read row by row."""
    rows, t_q = _softmax_rows(scores)
    if causal and np.ndim(scores) < 2:
        raise ValueError(f"masked_softmax: causal needs (..., T_q, T_k) scores, got shape {np.shape(scores)}")
    keep = None
    if mask is not None:
        keep = np.ascontiguousarray(np.broadcast_to(np.asarray(mask, dtype=bool), np.shape(scores))).reshape(rows.shape)
    y = np.empty_like(rows)
    _masked_softmax(rows, keep, t_q, bool(causal), rows.dtype.type(-np.inf), y)
    return y.reshape(np.shape(scores))


def masked_softmax_backward(grad_y, y):
    """y ⊙ (g − Σ_k g ⊙ y) per row; see reference.masked_softmax_backward."""
    (g, _), (y_rows, _) = _softmax_rows(grad_y), _softmax_rows(y)
    grad_s = np.empty_like(y_rows)
    _masked_softmax_backward(g, y_rows, grad_s)
    return grad_s.reshape(np.shape(y))
