"""The c backend: the kernels of reference.py in C (csrc/), called through cffi.

Every function here has the signature and return values of its namesake in reference.py, the
specification, against which tests/test_kernels.py checks it. The C side (csrc/lepton_kernels.h)
checks nothing and allocates nothing: this wrapper does both.

What it checks and what it trusts: the fast backends' contract in lepton_nn/kernels/__init__.py.
Here: mixed or non-float dtypes raise TypeError; adam_step updates in place, so its param, m
and v must already be C-contiguous and writable (else ValueError).

- conv2d: by one of CONV_ALGORITHMS (below). By default the forward is a direct convolution
  (plane-wise for few taps, C_in·kH·kW ≤ DIRECT_MAX_TAPS; channel-blocked for more where C_out
  fills its lanes), else im2col packed block by block straight into the panels of our packed
  GEMM ("gemm"); each gradient "direct" (the input gradient as a
  convolution of grad_y, the weight gradient as dot products along rows) where that is exact
  and fills the vectors, else "gemm". By name: "direct" for any number of taps
  (channel-blocked), "blas" (im2col in C, then np.matmul per sample, in chunks of samples whose
  columns fit WORKSPACE_BYTES), "winograd" (F(2×2, 3×3)). Why: docs/benchmarks.md, "General
  convolution".
- gemm: three GEMMs of our own (naive, blocked, packed: the steps of docs/benchmarks.md, "Our
  GEMM, step by step"), reading their operands through strides, so transposes and sliced views
  are never copied; `packed` is the dense layer's, with its bias and ReLU folded in.
- gelu and the masked softmax call the C99 erf, exp and tanh. Where the build found glibc's
  vector math library (csrc/build_ffi.py), their loops vectorise and call its SIMD versions
  of these functions, several elements per call.

If the extension was not built (no C compiler at install), importing this module raises
ImportError, and lepton_nn.kernels.backends() shows why.
"""
import math

import numpy as np

from lepton_nn.checks import class_labels, int_at_least, indices as valid_indices
from lepton_nn.kernels.reference import (adjoint_convolution, check_winograd, conv_gradient_algorithms,
                                         conv_weight_groups, gemm as blas_gemm, gemm_algorithm,
                                         gemm_output, output_size)
from lepton_nn.kernels.workspace import scratch, zero_padded

try:
    from lepton_nn._lepton_c import ffi, lib
except ImportError as err:
    raise ImportError(f"C extension not built: {err}; reinstall with a C compiler: pip install -e .") from err

_ABI = 13  # must match LEPTON_KERNELS_ABI in csrc/lepton_kernels.h
if lib.LEPTON_KERNELS_ABI != _ABI:
    raise ImportError(f"C extension is stale (ABI {lib.LEPTON_KERNELS_ABI}, this wrapper needs {_ABI}); "
                      "rebuild it: pip install -e .")

# Upper bound on the im2col columns (per workspace slot and thread) of one chunk of samples.
# Larger chunks save only Python overhead; the GEMMs are per sample either way.
WORKSPACE_BYTES = 8 << 20

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_C_ARRAY = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]",
            np.dtype(np.int64): "int64_t[]", np.dtype(np.int32): "int32_t[]", np.dtype(np.uint8): "uint8_t[]"}
_C_POINTER = {np.dtype(np.float32): "float *", np.dtype(np.float64): "double *"}
_C_POINTER_ARRAY = {np.dtype(np.float32): "float *[]", np.dtype(np.float64): "double *[]"}


# --------------------------------------------------------------------------- helpers
def _floats(**arrays):
    """(dtype, *arrays): the named arrays C-contiguous, and their one dtype; None passes through.

    Raises TypeError unless every array is float32, or every one is float64.
    """
    arrays = {name: None if a is None else np.asarray(a, order="C") for name, a in arrays.items()}
    dtypes = {a.dtype for a in arrays.values() if a is not None}
    if len(dtypes) != 1 or not dtypes <= _SUFFIX.keys():
        found = ", ".join(f"{name}={a.dtype}" for name, a in arrays.items() if a is not None)
        raise TypeError(f"the c backend needs float32 or float64 arrays, all of one dtype; got {found}")
    return (dtypes.pop(), *arrays.values())


def _ptr(a):
    """A C pointer to the data of the C-contiguous array `a` (no copy)."""
    return ffi.from_buffer(_C_ARRAY[a.dtype], a)


def _kernel(name, dtype):
    """The C function of kernel `name` for `dtype`, e.g. lib.lepton_relu_forward_f32."""
    symbol = f"lepton_{name}_{_SUFFIX[dtype]}"
    try:
        return getattr(lib, symbol)
    except AttributeError:  # a wrapper newer than the build
        raise RuntimeError(f"the C extension has no {symbol}: it was built from older sources; "
                           "rebuild it: pip install -e .") from None


def _window(x_shape, kernel, stride, padding):
    """The C description of a sliding window over an input of shape x_shape (N, C, H, W)."""
    if len(x_shape) != 4:
        raise ValueError(f"expected an (N, C, H, W) input, got shape {tuple(x_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    (kh, kw), (sh, sw), (ph, pw) = ((int(a), int(b)) for a, b in (kernel, stride, padding))
    h_out, w_out = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or h_out < 1 or w_out < 1:
        raise ValueError(f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)} "
                         f"do not fit an input plane of {(h, w)}")
    return ffi.new("lepton_window *", dict(n=n, c=c, h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw,
                                           ph=ph, pw=pw, h_out=h_out, w_out=w_out))


def _slots(threads, owner):
    """Workspace slots for a kernel run on up to `threads` threads (default: lepton_max_threads())."""
    return int(lib.lepton_max_threads()) if threads is None else int_at_least(threads, owner, "threads", 1)


def _sample_chunks(n, bytes_per_sample):
    """[start, stop) ranges covering n samples, each needing at most WORKSPACE_BYTES (or 1 sample)."""
    step = max(1, WORKSPACE_BYTES // max(1, bytes_per_sample))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


# --------------------------------------------------------------------------- conv2d
def _conv_shapes(x, weight, stride, padding):
    if weight.ndim != 4 or x.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d needs x (N, C_in, H, W) and weight (C_out, C_in, kH, kW); "
                         f"got {x.shape} and {weight.shape}")
    window = _window(x.shape, weight.shape[2:], stride, padding)
    rows = weight.shape[1] * weight.shape[2] * weight.shape[3]  # C_in·kH·kW
    return window, rows, window.h_out * window.w_out


# How conv2d_forward and conv2d_backward compute (algorithm=None picks, as measured in
# docs/benchmarks.md, "General convolution"):
#   "direct"  no columns at all. Few taps (C_in·kH·kW ≤ DIRECT_MAX_TAPS): each output plane
#             summed tap by tap (a GEMM of so few rows is bound by memory); more: NR output channels
#             by MR pixels of a row summed in registers over every tap, from the padded image
#             (channel-blocked). Its input gradient at stride 1 is the same convolution of
#             grad_y (flipped filters); its weight gradient at stride 1, dot products along the
#             rows of grad_y and the padded image (conv2d_direct_backward_weight); otherwise "gemm";
#   "gemm"    im2col packed block by block straight into the panels of our packed GEMM (csrc,
#             conv2d_gemm_*): the columns are never stored whole;
#   "blas"    im2col into a workspace, then one np.matmul (OpenBLAS) per sample;
#   "winograd" Winograd F(2×2, 3×3), for 3×3 kernels, stride 1, padding ≤ 2: 16 GEMMs over
#             transformed tiles, 2.25× fewer multiplications (the weight gradient as "direct"'s).
# algorithm=None: the forward "direct" for few taps, and for more where C_out fills its NR lanes
# (_fills_direct_tile), else "gemm"; each gradient as reference.conv_gradient_algorithms says
# ("direct" where it is exact and fills its vectors).
CONV_ALGORITHMS = ("direct", "gemm", "blas", "winograd")


def _conv_algorithm(algorithm, weight, stride, padding, backward):
    owner = f"conv2d_{'backward' if backward else 'forward'} (c)"
    taps = math.prod(weight.shape[1:])
    if algorithm is None:  # the backward: None, each gradient its own
        return None if backward else "direct" if taps <= DIRECT_MAX_TAPS or _fills_direct_tile(weight) else "gemm"
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"{owner}: algorithm must be None or one of {', '.join(CONV_ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "winograd":
        check_winograd(weight.shape, stride, padding, owner)
    return algorithm


def _fills_direct_tile(weight):
    """Whether C_out fills the channel-blocked direct kernel's NR lanes (two vectors), where its
    forward is as fast as "gemm" or faster (docs/benchmarks.md, "The automatic choice")."""
    return weight.shape[0] >= 2 * int(_kernel("vector_lanes", weight.dtype)())


def _conv2d_winograd_into(x, weight, bias, window, y, threads, owner):
    """conv2d_forward by Winograd F(2×2, 3×3) of checked, contiguous arrays, written into y; returns y."""
    dtype, (c_out, c) = x.dtype, weight.shape[:2]
    slots = _slots(threads, owner)
    if y.size == 0 or c == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    u = np.empty((16, c_out, c), dtype)
    _kernel("winograd_filter_transform", dtype)(_ptr(weight), c_out, c, _ptr(u))
    workspace = scratch("winograd tiles", (int(_kernel("conv2d_winograd_workspace_size", dtype)(c, c_out, slots)),),
                        dtype)
    _kernel("conv2d_winograd_forward", dtype)(_ptr(x), _ptr(u), ffi.NULL if bias is None else _ptr(bias), window,
                                              c_out, slots, _ptr(workspace), _ptr(y))
    return y


def _conv_workspace(window, c_out, dtype, threads, owner):
    """The number of slots (threads at most) and the workspace of the conv2d_gemm_* kernels."""
    slots = _slots(threads, owner)
    size = int(_kernel("conv2d_gemm_workspace_size", dtype)(window, c_out, slots))
    return slots, scratch("conv gemm packing", (size,), dtype)


def conv2d_forward(x, weight, bias, stride, padding, *, algorithm=None, threads=None):
    """reference.conv2d_forward: y[n] = weight (C_out, C_in·kH·kW) @ im2col(x[n]) + bias, by one of
    CONV_ALGORITHMS (None: "direct" for few taps or where C_out fills its lanes, else "gemm"; on up
    to `threads` threads, default lepton_max_threads())."""
    dtype, x, weight, bias = _floats(x=x, weight=weight, bias=bias)
    window, taps, _ = _conv_shapes(x, weight, stride, padding)
    algorithm = _conv_algorithm(algorithm, weight, stride, padding, backward=False)
    if threads is not None:  # checked whichever algorithm runs
        int_at_least(threads, "conv2d_forward (c)", "threads", 1)
    y = np.empty((x.shape[0], weight.shape[0], window.h_out, window.w_out), dtype)
    if y.size == 0 or taps == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    if algorithm == "direct" and taps > DIRECT_MAX_TAPS:
        return _conv2d_blocked_into(x, weight, bias, window, y, threads)
    if algorithm == "direct":
        x_pad = zero_padded(x, padding)
        conv = _window(x_pad.shape, weight.shape[2:], stride, (0, 0))
        slots = int(lib.lepton_max_threads())
        planes = scratch("conv planes", (slots, conv.h_out * conv.w), dtype)
        _kernel("conv2d_direct_forward", dtype)(
            _ptr(x_pad), _ptr(weight), ffi.NULL if bias is None else _ptr(bias), conv, weight.shape[0],
            slots, _ptr(planes), _ptr(y))
        return y
    if algorithm == "gemm":
        return _conv2d_gemm_into(x, weight, bias, window, y, threads)
    if algorithm == "winograd":
        return _conv2d_winograd_into(x, weight, bias, window, y, threads, "conv2d_forward (c)")
    return _conv2d_into(x, weight, bias, stride, padding, y)


def _conv2d_blocked_into(x, weight, bias, window, y, threads=None):
    """conv2d_forward of checked, contiguous arrays, written into y, by the channel-blocked direct
    kernel; returns y."""
    if y.size == 0 or x.shape[1] == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    slots = _slots(threads, "conv2d (c)")
    size = int(_kernel("conv2d_direct_blocked_workspace_size", x.dtype)(window, weight.shape[0], slots))
    workspace = scratch("conv direct packing", (size,), x.dtype)
    _kernel("conv2d_direct_blocked_forward", x.dtype)(_ptr(x), _ptr(weight), ffi.NULL if bias is None else _ptr(bias),
                                                      window, weight.shape[0], slots, _ptr(workspace), _ptr(y))
    return y


def _conv2d_gemm_into(x, weight, bias, window, y, threads=None):
    """conv2d_forward of checked, contiguous arrays of one dtype, written into y, by "gemm"; returns y."""
    slots, workspace = _conv_workspace(window, weight.shape[0], x.dtype, threads, "conv2d_forward (c)")
    _kernel("conv2d_gemm_forward", x.dtype)(_ptr(x), _ptr(weight), ffi.NULL if bias is None else _ptr(bias),
                                            window, weight.shape[0], slots, _ptr(workspace), _ptr(y))
    return y


def _conv2d_into(x, weight, bias, stride, padding, y):
    """conv2d_forward of checked, contiguous arrays of one dtype, written into y, by im2col and
    np.matmul ("blas"); returns y."""
    dtype = x.dtype
    window, rows, pixels = _conv_shapes(x, weight, stride, padding)
    n, c_out = x.shape[0], weight.shape[0]
    y_mat, w_mat = y.reshape(n, c_out, pixels), weight.reshape(c_out, rows)
    im2col = _kernel("im2col", dtype)
    for start, stop in _sample_chunks(n, rows * pixels * dtype.itemsize):
        cols = scratch("columns", (stop - start, rows, pixels), dtype)
        window.n = stop - start
        im2col(_ptr(x[start:stop]), window, _ptr(cols))
        np.matmul(w_mat, cols, out=y_mat[start:stop])
    if bias is not None:
        y_mat += bias.reshape(c_out, 1)
    return y


def conv2d_backward(grad_y, x, weight, stride, padding, need_x=True, need_weight=True, need_bias=True, *,
                    algorithm=None, threads=None):
    """reference.conv2d_backward, per sample n with cols = im2col(x[n]), g = grad_y[n]:

        grad_w += g @ colsᵀ,   grad_x[n] = col2im(weightᵀ @ g),   grad_b = Σ over n, H_out, W_out of g

    by the algorithms CONV_ALGORITHMS names (None: each gradient's own choice, see there; on up to
    `threads` threads).
    """
    dtype, grad_y, x, weight = _floats(grad_y=grad_y, x=x, weight=weight)
    window, rows, pixels = _conv_shapes(x, weight, stride, padding)
    algorithm = _conv_algorithm(algorithm, weight, stride, padding, backward=True)
    if threads is not None:
        int_at_least(threads, "conv2d_backward (c)", "threads", 1)
    n, c_out = x.shape[0], weight.shape[0]
    if grad_y.shape != (n, c_out, window.h_out, window.w_out):
        raise ValueError(f"grad_y has shape {grad_y.shape}, the output of this conv2d has "
                         f"{(n, c_out, window.h_out, window.w_out)}")
    grad_x = np.empty_like(x) if need_x else None
    grad_w = np.empty_like(weight) if need_weight else None
    input_algorithm, weight_algorithm = algorithm, algorithm
    if algorithm is None:
        lanes = int(_kernel("vector_lanes", dtype)())
        input_algorithm, weight_algorithm = conv_gradient_algorithms(weight, stride, padding, window.w_out, lanes,
                                                                     2 * lanes)
    x_by_gemm = need_x and algorithm != "blas"
    adjoint = adjoint_convolution(weight, stride, padding) if need_x and input_algorithm in ("direct", "winograd") else None
    if adjoint is not None:  # ∂x as a forward convolution of grad_y
        flipped, adjoint_padding = adjoint
        adjoint_window = _window(grad_y.shape, flipped.shape[2:], (1, 1), adjoint_padding)
        if input_algorithm == "winograd":
            _conv2d_winograd_into(grad_y, flipped, None, adjoint_window, grad_x, threads, "conv2d_backward (c)")
        else:
            _conv2d_blocked_into(grad_y, flipped, None, adjoint_window, grad_x, threads)
        x_by_gemm = False
    weight_by_rows = need_weight and tuple(stride) == (1, 1) and weight_algorithm in ("direct", "winograd")
    if weight_by_rows:
        _conv2d_direct_weight_into(grad_y, x, window, grad_w, threads)
    if algorithm != "blas" and (x_by_gemm or (need_weight and not weight_by_rows)):
        slots, workspace = _conv_workspace(window, c_out, dtype, threads, "conv2d_backward (c)")
        if need_weight and not weight_by_rows:
            groups = conv_weight_groups(n, grad_w.size)
            partials = scratch("conv weight partial sums", (max(groups - 1, 1), grad_w.size), dtype)
            _kernel("conv2d_gemm_backward_weight", dtype)(_ptr(grad_y), _ptr(x), window, c_out, groups,
                                                          _ptr(partials), slots, _ptr(workspace), _ptr(grad_w))
        if x_by_gemm:
            _kernel("conv2d_gemm_backward_input", dtype)(_ptr(grad_y), _ptr(weight), window, c_out, slots,
                                                         _ptr(workspace), _ptr(grad_x))
    elif algorithm == "blas" and (need_x or need_weight):
        _conv2d_backward_blas(grad_y, x, weight, window, rows, grad_x, grad_w)
    grad_b = None
    if need_bias:
        grad_b = np.empty(c_out, dtype)
        _kernel("bias_grad", dtype)(_ptr(grad_y), n, c_out, pixels, _ptr(grad_b))
    return grad_x, grad_w, grad_b


def _conv2d_direct_weight_into(grad_y, x, window, grad_w, threads=None):
    """conv2d_backward's weight gradient at stride 1 by "direct" (dot products along the rows of
    grad_y and of the padded x, csrc), of checked, contiguous arrays, written into grad_w."""
    dtype, n = x.dtype, x.shape[0]
    slots = _slots(threads, "conv2d_backward (c)")
    groups = conv_weight_groups(n, grad_w.size)
    partials = scratch("conv weight partial sums", (max(groups - 1, 1), grad_w.size), dtype)
    size = int(_kernel("conv2d_direct_weight_workspace_size", dtype)(window, grad_w.shape[0], slots))
    workspace = scratch("conv direct weight rows", (size,), dtype)
    _kernel("conv2d_direct_backward_weight", dtype)(_ptr(grad_y), _ptr(x), window, grad_w.shape[0], groups,
                                                    _ptr(partials), slots, _ptr(workspace), _ptr(grad_w))


def _conv2d_backward_blas(grad_y, x, weight, window, rows, grad_x, grad_w):
    """conv2d_backward's grad_x and grad_w (those not None), by im2col and np.matmul, in place."""
    dtype, (n, c_out), pixels = x.dtype, grad_y.shape[:2], window.h_out * window.w_out
    g_mat, w_mat = grad_y.reshape(n, c_out, pixels), weight.reshape(c_out, rows)
    if grad_w is not None:
        grad_w_mat = grad_w.reshape(c_out, rows)
        grad_w_mat[...] = 0
    im2col, col2im = _kernel("im2col", dtype), _kernel("col2im", dtype)
    for start, stop in _sample_chunks(n, rows * pixels * dtype.itemsize):
        window.n = stop - start
        g = g_mat[start:stop]
        if grad_w is not None:
            cols = scratch("columns", (stop - start, rows, pixels), dtype)
            im2col(_ptr(x[start:stop]), window, _ptr(cols))
            # one GEMM per sample (g[s] @ cols[s]ᵀ), into a workspace: a single GEMM over all
            # samples would need g and cols transposed first, which costs more (docs/benchmarks.md)
            per_sample = scratch("per-sample weight gradients", (stop - start, c_out, rows), dtype)
            np.matmul(g, cols.transpose(0, 2, 1), out=per_sample)
            grad_w_mat += per_sample.sum(axis=0)
        if grad_x is not None:
            grad_cols = scratch("column gradients", (stop - start, rows, pixels), dtype)
            np.matmul(w_mat.T, g, out=grad_cols)
            col2im(_ptr(grad_cols), window, _ptr(grad_x[start:stop]))


# --------------------------------------------------------------------------- max_pool2d
def max_pool2d_forward(x, kernel, stride, padding):
    """reference.max_pool2d_forward: (y, argmax), argmax int64 flat h·W + w in the unpadded plane."""
    dtype, x = _floats(x=x)
    window = _window(x.shape, kernel, stride, padding)
    out_shape = x.shape[:2] + (window.h_out, window.w_out)
    y, argmax = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    _kernel("max_pool2d_forward", dtype)(_ptr(x), window, _ptr(y), _ptr(argmax))
    return y, argmax


def max_pool2d_backward(grad_y, argmax, x_shape):
    """reference.max_pool2d_backward: scatter-add of grad_y into the argmax positions."""
    dtype, grad_y = _floats(grad_y=grad_y)
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    n, c, h, w = x_shape
    if argmax.shape != grad_y.shape or grad_y.shape[:2] != (n, c):
        raise ValueError(f"grad_y {grad_y.shape} and argmax {argmax.shape} must be equal and "
                         f"start with (N, C) of x_shape {tuple(x_shape)}")
    grad_x = np.empty((n, c, h, w), dtype)
    out_size = grad_y.shape[2] * grad_y.shape[3]
    _kernel("max_pool2d_backward", dtype)(_ptr(grad_y), _ptr(argmax), n * c, out_size, h * w, _ptr(grad_x))
    return grad_x


# --------------------------------------------------------------------------- avg_pool2d
def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad=True):
    """reference.avg_pool2d_forward: window sums over D (kH·kW, or the unpadded count)."""
    dtype, x = _floats(x=x)
    window = _window(x.shape, kernel, stride, padding)
    y = np.empty(x.shape[:2] + (window.h_out, window.w_out), dtype)
    _kernel("avg_pool2d_forward", dtype)(_ptr(x), window, int(bool(count_include_pad)), _ptr(y))
    return y


def avg_pool2d_backward(grad_y, x_shape, kernel, stride, padding, count_include_pad=True):
    """reference.avg_pool2d_backward: each g/D spread over the unpadded part of its window."""
    dtype, grad_y = _floats(grad_y=grad_y)
    window = _window(x_shape, kernel, stride, padding)
    if grad_y.shape != tuple(x_shape[:2]) + (window.h_out, window.w_out):
        raise ValueError(f"grad_y has shape {grad_y.shape}, the output of this pooling has "
                         f"{tuple(x_shape[:2]) + (window.h_out, window.w_out)}")
    grad_x = np.empty(tuple(x_shape), dtype)
    _kernel("avg_pool2d_backward", dtype)(_ptr(grad_y), window, int(bool(count_include_pad)), _ptr(grad_x))
    return grad_x


# --------------------------------------------------------------------------- relu
def relu_forward(x):
    """reference.relu_forward: max(x, 0), any shape."""
    dtype, x = _floats(x=x)
    y = np.empty_like(x)
    _kernel("relu_forward", dtype)(_ptr(x), x.size, _ptr(y))
    return y


def relu_backward(grad_y, x):
    """reference.relu_backward: grad_y · [x > 0]."""
    dtype, grad_y, x = _floats(grad_y=grad_y, x=x)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y {grad_y.shape} and x {x.shape} must have the same shape")
    grad_x = np.empty_like(x)
    _kernel("relu_backward", dtype)(_ptr(grad_y), _ptr(x), x.size, _ptr(grad_x))
    return grad_x


# --------------------------------------------------------------------------- leaky relu
def leaky_relu_forward(x, negative_slope):
    """reference.leaky_relu_forward: x where x > 0, negative_slope·x elsewhere."""
    dtype, x = _floats(x=x)
    y = np.empty_like(x)
    _kernel("leaky_relu_forward", dtype)(_ptr(x), x.size, negative_slope, _ptr(y))
    return y


def leaky_relu_backward(grad_y, x, negative_slope):
    """reference.leaky_relu_backward: grad_y where x > 0, negative_slope·grad_y elsewhere."""
    dtype, grad_y, x = _floats(grad_y=grad_y, x=x)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y {grad_y.shape} and x {x.shape} must have the same shape")
    grad_x = np.empty_like(x)
    _kernel("leaky_relu_backward", dtype)(_ptr(grad_y), _ptr(x), x.size, negative_slope, _ptr(grad_x))
    return grad_x


# --------------------------------------------------------------------------- softmax + cross-entropy
def softmax_cross_entropy_forward(logits, labels):
    """reference.softmax_cross_entropy_forward: (loss (N,), probs (N, K)), max-shifted."""
    dtype, logits = _floats(logits=logits)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, K) with K >= 1, got {logits.shape}")
    n, k = logits.shape
    labels = class_labels(labels, n, k, "softmax_cross_entropy (c)")
    loss, probs = np.empty(n, dtype), np.empty((n, k), dtype)
    _kernel("softmax_xent_forward", dtype)(_ptr(logits), _ptr(labels), n, k, _ptr(loss), _ptr(probs))
    return loss, probs


def softmax_cross_entropy_backward(grad_loss, probs, labels):
    """reference.softmax_cross_entropy_backward: grad_loss[n] · (probs − onehot(labels))."""
    dtype, grad_loss, probs = _floats(grad_loss=grad_loss, probs=probs)
    if probs.ndim != 2 or grad_loss.shape != probs.shape[:1]:
        raise ValueError(f"need probs (N, K) and grad_loss (N,), got {probs.shape} and {grad_loss.shape}")
    n, k = probs.shape
    labels = class_labels(labels, n, k, "softmax_cross_entropy (c)")
    grad = np.empty((n, k), dtype)
    _kernel("softmax_xent_backward", dtype)(_ptr(grad_loss), _ptr(probs), _ptr(labels), n, k, _ptr(grad))
    return grad


# --------------------------------------------------------------------------- adam
def adam_step(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """reference.adam_step, in place on param, m and v in one pass; returns None."""
    adam_steps([param], [grad], [m], [v], lr, beta1, beta2, eps, step, weight_decay)


def adam_steps(params, grads, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0):
    """reference.adam_steps: every array in one C call, whose threads start once; returns None.

    The hyper-parameters are combined here exactly as the reference writes them (in Python,
    e.g. 1 − β₁ᵗ), so the C loop reproduces NumPy's results bit for bit.
    """
    if not len(params) == len(grads) == len(ms) == len(vs):
        raise ValueError(f"adam_steps: {len(params)} params, {len(grads)} grads, {len(ms)} m and {len(vs)} v")
    arrays = [_adam_arrays(*group) for group in zip(params, grads, ms, vs)]
    if not arrays:
        return
    dtypes = {param.dtype for param, _, _, _ in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"adam_steps: all arrays must have one dtype, got {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    pointers = [ffi.new(_C_POINTER_ARRAY[dtype], [_ptr(group[i]) for group in arrays]) for i in range(4)]
    hyper = ffi.new("lepton_adam_hyper *", dict(
        lr=lr, beta1=beta1, one_minus_beta1=1 - beta1, beta2=beta2, one_minus_beta2=1 - beta2,
        bias_correction1=1 - beta1 ** step, bias_correction2=1 - beta2 ** step,
        eps=eps, weight_decay=weight_decay))
    sizes = ffi.new("int64_t[]", [param.size for param, _, _, _ in arrays])
    _kernel("adam_steps", dtype)(*pointers, sizes, len(arrays), hyper)


def _adam_arrays(param, grad, m, v):
    """(param, grad, m, v) checked for an in-place update: grad C-contiguous, all of one dtype and shape."""
    _, _, grad, _, _ = _floats(param=param, grad=grad, m=m, v=v)
    for name, a in (("param", param), ("m", m), ("v", v)):
        if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable):
            raise ValueError(f"adam_step updates {name} in place: it must be a writable C-contiguous ndarray")
        if a.shape != param.shape:
            raise ValueError(f"{name} has shape {a.shape}, param has {param.shape}")
    if grad.shape != param.shape:
        raise ValueError(f"grad has shape {grad.shape}, param has {param.shape}")
    return param, grad, m, v


# --------------------------------------------------------------------------- fused conv → relu → max-pool
# With few taps (C_in·kH·kW; 9 in the first layer of an MNIST CNN), a direct convolution beats
# im2col + GEMM. The C kernels run along output channels, 16 in the SIMD lanes of a vector:
# the forward computes the few conv rows a row of pooling windows reads into a small
# per-thread buffer that stays in cache, pools and clamps them there, and never writes the
# conv output to memory; the backward scatters each window's gradient to its winner in a
# conv-shaped tile per (sample, 16 channels) and correlates that tile with x. Working along
# channels, they store y and argmax channels-last: NCHW-shaped views of that memory go back,
# which a channels-last model (Keras) flattens without a copy. x is zero-padded here first,
# so the C loops need no bounds checks. With many taps the GEMM wins: the fused op then runs
# as its composition (conv2d into a workspace, max-pool, relu; backward through a
# conv-shaped gradient and conv2d_backward).
DIRECT_MAX_TAPS = lib.LEPTON_FUSED_MAX_TAPS  # 64
CHANNEL_BLOCK = lib.LEPTON_FUSED_CHANNEL_BLOCK  # output channels side by side in the C loops


def conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride):
    """reference.conv2d_relu_max_pool2d_forward: (relu(max_pool2d(conv2d(x))), argmax in the conv plane)."""
    dtype, x, weight, bias = _floats(x=x, weight=weight, bias=bias)
    conv, taps, conv_plane = _conv_shapes(x, weight, stride, padding)
    n, c_out = x.shape[0], weight.shape[0]
    pool = _window((n, c_out, conv.h_out, conv.w_out), pool_kernel, pool_stride, (0, 0))
    out_shape = (n, c_out, pool.h_out, pool.w_out)
    if taps <= DIRECT_MAX_TAPS and conv_plane < 2 ** 31:  # argmax in int32
        y, argmax = (np.empty((n, pool.h_out, pool.w_out, c_out), t) for t in (dtype, np.int32))
        x_pad = zero_padded(x, padding)
        conv = _window(x_pad.shape, weight.shape[2:], stride, (0, 0))
        slots = int(lib.lepton_max_threads())
        cols = (pool.w_out - 1) * pool.sw + pool.kw  # the conv columns any window reads
        rows = scratch("conv rows", (slots, pool.kh * cols * CHANNEL_BLOCK), dtype)
        _kernel("conv2d_relu_max_pool2d_forward", dtype)(
            _ptr(x_pad), _ptr(weight), ffi.NULL if bias is None else _ptr(bias), conv, pool,
            slots, _ptr(rows), _ptr(y), _ptr(argmax))
        return y.transpose(0, 3, 1, 2), argmax.transpose(0, 3, 1, 2)
    y, argmax = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    max_pool = _kernel("max_pool2d_forward", dtype)
    for start, stop in _sample_chunks(n, c_out * conv_plane * dtype.itemsize):
        conv_out = scratch("conv output", (stop - start, c_out, conv.h_out, conv.w_out), dtype)
        conv.n = stop - start
        (_conv2d_blocked_into if _fills_direct_tile(weight) else _conv2d_gemm_into)(x[start:stop], weight, bias,
                                                                                    conv, conv_out)
        pool.n = stop - start
        max_pool(_ptr(conv_out), pool, _ptr(y[start:stop]), _ptr(argmax[start:stop]))
    np.maximum(y, 0, out=y)  # relu after pooling: the two commute
    return y, argmax


def conv2d_relu_max_pool2d_backward(grad_y, y, argmax, x, weight, stride, padding,
                                    need_x=True, need_weight=True, need_bias=True):
    """reference.conv2d_relu_max_pool2d_backward: (grad_x, grad_w, grad_b), None where not needed."""
    grad_y, y, argmax = np.asarray(grad_y), np.asarray(y), np.asarray(argmax)
    n, c_out = np.shape(x)[0], np.shape(weight)[0]
    if not (grad_y.shape == y.shape == argmax.shape and grad_y.ndim == 4 and grad_y.shape[:2] == (n, c_out)):
        raise ValueError(f"grad_y {grad_y.shape}, y {y.shape} and argmax {argmax.shape} must be equal "
                         f"and start with (N, C_out) = {(n, c_out)}")
    conv, taps, conv_plane = _conv_shapes(np.asarray(x), np.asarray(weight), stride, padding)
    direct = taps <= DIRECT_MAX_TAPS and conv_plane < 2 ** 31
    # the direct kernel reads channels-last memory and an int32 argmax: what its forward returned
    layout = (0, 2, 3, 1) if direct else (0, 1, 2, 3)
    dtype, grad_y, y, x, weight = _floats(grad_y=grad_y.transpose(layout), y=y.transpose(layout), x=x, weight=weight)
    argmax = argmax.transpose(layout)
    if direct and argmax.dtype != np.int32:  # e.g. the reference's int64: out of range stays out of range
        argmax = np.where((argmax >= 0) & (argmax < conv_plane), argmax, -1)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32 if direct else np.int64)
    pooled = math.prod(grad_y.shape[1:]) // c_out
    if not (need_x or need_weight or need_bias):
        return None, None, None
    if not direct:  # the composition, with the conv-shaped gradient in a workspace
        grad_conv = scratch("conv output gradient", (n, c_out, conv.h_out, conv.w_out), dtype)
        _kernel("max_pool2d_backward", dtype)(_ptr(relu_backward(grad_y, y)), _ptr(argmax), n * c_out, pooled,
                                              conv_plane, _ptr(grad_conv))
        return conv2d_backward(grad_conv, x, weight, stride, padding, need_x, need_weight, need_bias)
    x_pad = zero_padded(x, padding)
    conv = _window(x_pad.shape, weight.shape[2:], stride, (0, 0))
    grad_x_pad = np.empty_like(x_pad) if need_x else None
    grad_w = np.empty_like(weight) if need_weight else None
    grad_b = np.empty(c_out, dtype) if need_bias else None
    slots = int(lib.lepton_max_threads())
    tiles = scratch("gradient tiles", (slots, conv.h_out * conv.w_out * CHANNEL_BLOCK), dtype)
    sums = scratch("weight gradient sums", (slots, (taps + 1) * -(-c_out // CHANNEL_BLOCK) * CHANNEL_BLOCK), np.float64)
    _kernel("conv2d_relu_max_pool2d_backward", dtype)(
        _ptr(grad_y), _ptr(y), _ptr(argmax), c_out, pooled, _ptr(x_pad), _ptr(weight), conv,
        slots, _ptr(tiles), _ptr(sums),
        *(ffi.NULL if a is None else _ptr(a) for a in (grad_x_pad, grad_w, grad_b)))
    grad_x = grad_x_pad
    if need_x and x_pad is not x:  # crop the padding off
        (ph, pw), (h, w) = padding, x.shape[2:]
        grad_x = grad_x_pad[:, :, ph:ph + h, pw:pw + w].copy()
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- sequence models
def gelu_forward(x, approximate="none"):
    """reference.gelu_forward: x·Φ(x) (erf), or its tanh approximation; any shape."""
    dtype, x = _floats(x=x)
    y = np.empty_like(x)
    _kernel("gelu_forward", dtype)(_ptr(x), x.size, int(approximate == "tanh"), _ptr(y))
    return y


def gelu_backward(grad_y, x, approximate="none"):
    """reference.gelu_backward: grad_y · ∂y/∂x."""
    dtype, grad_y, x = _floats(grad_y=grad_y, x=x)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y {grad_y.shape} and x {x.shape} must have the same shape")
    grad_x = np.empty_like(x)
    _kernel("gelu_backward", dtype)(_ptr(grad_y), _ptr(x), x.size, int(approximate == "tanh"), _ptr(grad_x))
    return grad_x


def _layer_norm_rows(x_shape, normalized_shape, **params):
    """(M, K): positions and the values each is normalised over; checks that the trailing axes
    are normalized_shape and that every parameter given holds K values."""
    normalized_shape = tuple(normalized_shape)
    lead = len(x_shape) - len(normalized_shape)
    if lead < 0 or tuple(x_shape[lead:]) != normalized_shape:
        raise ValueError(f"normalized_shape {normalized_shape} must equal the trailing axes of x {tuple(x_shape)}")
    cols = math.prod(normalized_shape)
    for name, p in params.items():
        if p is not None and p.size != cols:
            raise ValueError(f"{name} has {p.size} values, normalized_shape {normalized_shape} needs {cols}")
    return math.prod(x_shape[:lead]), cols


def _or_null(a):
    return ffi.NULL if a is None else _ptr(a)


def layer_norm_forward(x, normalized_shape, weight, bias, eps):
    """reference.layer_norm_forward: (y like x, mean (M,), rstd (M,))."""
    dtype, x, weight, bias = _floats(x=x, weight=weight, bias=bias)
    rows, cols = _layer_norm_rows(x.shape, normalized_shape, weight=weight, bias=bias)
    y, mean, rstd = np.empty_like(x), np.empty(rows, dtype), np.empty(rows, dtype)
    _kernel("layer_norm_forward", dtype)(_ptr(x), rows, cols, _or_null(weight), _or_null(bias), float(eps),
                                         _ptr(y), _ptr(mean), _ptr(rstd))
    return y, mean, rstd


def layer_norm_backward(grad_y, x, normalized_shape, mean, rstd, weight,
                        need_x=True, need_weight=True, need_bias=True):
    """reference.layer_norm_backward: (grad_x, grad_weight, grad_bias), None where not needed."""
    dtype, grad_y, x, mean, rstd, weight = _floats(grad_y=grad_y, x=x, mean=mean, rstd=rstd, weight=weight)
    rows, cols = _layer_norm_rows(x.shape, normalized_shape, weight=weight)
    if grad_y.shape != x.shape or mean.size != rows or rstd.size != rows:
        raise ValueError(f"grad_y {grad_y.shape} must be x's shape {x.shape}, mean {mean.shape} and rstd "
                         f"{rstd.shape} hold one value per position ({rows})")
    grad_x = np.empty_like(x) if need_x else None
    grad_w, grad_b = (np.empty(tuple(normalized_shape), dtype) if need else None for need in (need_weight, need_bias))
    if need_x or need_weight or need_bias:
        _kernel("layer_norm_backward", dtype)(_ptr(grad_y), _ptr(x), rows, cols, _ptr(mean), _ptr(rstd),
                                              _or_null(weight), *(_or_null(a) for a in (grad_x, grad_w, grad_b)))
    return grad_x, grad_w, grad_b


def _softmax_rows(shape):
    """(rows, T_q, T_k) of scores of `shape` (..., T_q, T_k); T_q is 1 for a 1-D input."""
    if len(shape) < 1:
        raise ValueError("masked_softmax needs scores with at least one axis (the keys)")
    t_k = shape[-1]
    return (math.prod(shape) // t_k if t_k else 0), (shape[-2] if len(shape) >= 2 else 1), t_k


def masked_softmax_forward(scores, mask=None, causal=False):
    """reference.masked_softmax_forward: the softmax over the last axis of the kept keys.

    A boolean mask is broadcast to the scores' shape, one byte per score, which C reads row by row."""
    dtype, scores = _floats(scores=scores)
    if causal and scores.ndim < 2:
        raise ValueError(f"masked_softmax: causal needs (..., T_q, T_k) scores, got shape {scores.shape}")
    rows, t_q, t_k = _softmax_rows(scores.shape)
    keep = None
    if mask is not None:  # broadcast_to raises unless the mask broadcasts to the scores' shape
        keep = np.ascontiguousarray(np.broadcast_to(np.asarray(mask, dtype=bool), scores.shape)).view(np.uint8)
    y = np.empty_like(scores)
    if rows:
        _kernel("masked_softmax_forward", dtype)(_ptr(scores), _or_null(keep), rows, t_q, t_k, int(bool(causal)),
                                                 _ptr(y))
    return y


def masked_softmax_backward(grad_y, y):
    """reference.masked_softmax_backward: y ⊙ (g − Σ_k g ⊙ y) per row."""
    dtype, grad_y, y = _floats(grad_y=grad_y, y=y)
    if grad_y.shape != y.shape:
        raise ValueError(f"grad_y {grad_y.shape} and y {y.shape} must have the same shape")
    rows, _, t_k = _softmax_rows(y.shape)
    grad_s = np.empty_like(y)
    if rows:
        _kernel("masked_softmax_backward", dtype)(_ptr(grad_y), _ptr(y), rows, t_k, _ptr(grad_s))
    return grad_s


def embedding_backward(grad_y, indices, num_embeddings):
    """reference.embedding_backward: the scatter-add of grad_y's rows into (V, D), bit-identical
    to its np.add.at (the same sums in the same order)."""
    dtype, grad_y = _floats(grad_y=grad_y)
    indices = valid_indices(indices, num_embeddings, "embedding_backward (c)")  # C writes at these rows
    dim = grad_y.shape[-1] if grad_y.ndim else 0
    if grad_y.shape != indices.shape + (dim,):
        raise ValueError(f"grad_y {grad_y.shape} must be indices' shape {indices.shape} plus the embedding axis")
    grad_w = np.empty((num_embeddings, dim), dtype)
    _kernel("embedding_backward", dtype)(_ptr(grad_y), _ptr(indices), indices.size, dim, num_embeddings, _ptr(grad_w))
    return grad_w


# --------------------------------------------------------------------------- gemm
GEMM_ALGORITHMS = ("naive", "blocked", "packed", "dot", "blas")
_GEMM_SLOT_VALUES = int(lib.lepton_gemm_workspace_size())
_GEMM_BLOCK_ROWS = int(lib.lepton_gemm_block_rows())


def _strided(x, owner, name):
    """(x, pointer to x[0, 0], row stride, column stride) of the 2-D array x, strides in elements
    (any sign): C reads x where it lies, whatever its layout. A layout that no element stride
    describes (a misaligned byte view) is copied first; the caller keeps the returned x alive."""
    if x.ndim != 2:
        raise ValueError(f"{owner}: {name} must be a matrix (2-D), got shape {x.shape}")
    rows, cols = x.strides
    if rows % x.itemsize or cols % x.itemsize:
        x = np.ascontiguousarray(x)
        rows, cols = x.strides
    # from_buffer is the cheap way to a pointer but needs a contiguous buffer; a view of
    # another layout goes through its address (a few microseconds more per call)
    pointer = _ptr(x) if x.flags.c_contiguous else ffi.cast(_C_POINTER[x.dtype], x.ctypes.data)
    return x, pointer, rows // x.itemsize, cols // x.itemsize


def gemm(a, b, trans_a=False, trans_b=False, c=None, relu=False, *, algorithm=None, threads=None):
    """reference.gemm: op(A) @ op(B) (+ c), then max(·, 0) if relu, in C, with one of
    GEMM_ALGORITHMS on up to `threads` threads (packed and dot; default: lepton_max_threads()).
    algorithm=None: as reference.gemm_algorithm measured it ("dot", "packed", or "blas": NumPy's
    @, the reference). "dot" needs op(A)'s rows and op(B)'s columns contiguous (x·Wᵀ with both
    stored row-major).

    A transpose swaps the strides C reads the operand with: nothing is copied (docs/benchmarks.md,
    "Our GEMM, step by step", for the algorithms and their speed). The ReLU runs on each
    thread's rows or band of C as soon as its sums are complete, while it is in cache.
    """
    owner = "gemm (c)"
    if algorithm is not None and algorithm not in GEMM_ALGORITHMS:
        raise ValueError(f"{owner}: algorithm must be one of {', '.join(GEMM_ALGORITHMS)} or None, got {algorithm!r}")
    slots = _slots(threads, owner)
    m, n, k, out = gemm_output(a, b, trans_a, trans_b, c, owner)
    a, a_ptr, a_rs, a_cs = _strided(np.asarray(a), owner, "a")
    b, b_ptr, b_rs, b_cs = _strided(np.asarray(b), owner, "b")
    if trans_a:
        a_rs, a_cs = a_cs, a_rs
    if trans_b:
        b_rs, b_cs = b_cs, b_rs
    along_depth = a_cs == 1 and b_rs == 1  # op(A)[i, p] and op(B)[p, j] contiguous in p
    if algorithm is None:
        algorithm = gemm_algorithm(m, n, k, along_depth, _GEMM_BLOCK_ROWS)
    if algorithm == "blas":
        return blas_gemm(a, b, trans_a, trans_b, c, relu)
    if algorithm == "dot" and not along_depth and m * n * k:
        raise ValueError(f"{owner}: algorithm 'dot' needs op(a)'s rows and op(b)'s columns contiguous "
                         f"(element strides along the depth 1 and 1), got {a_cs} and {b_rs}")
    if m == 0 or n == 0:
        return out
    dtype = out.dtype
    accumulate, relu = int(c is not None), int(bool(relu))
    if algorithm == "dot":
        _kernel("gemm_dot", dtype)(m, n, k, a_ptr, a_rs, b_ptr, b_cs, accumulate, relu, _ptr(out), n, slots)
        return out
    args = (m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, b_cs, accumulate, relu, _ptr(out), n)
    if algorithm == "packed":
        workspace = scratch("gemm packing", (slots, _GEMM_SLOT_VALUES), dtype)
        _kernel("gemm_packed", dtype)(*args, slots, _ptr(workspace))
    else:
        _kernel(f"gemm_{algorithm}", dtype)(*args)
    return out
    dtype = out.dtype
    args = (m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, b_cs, int(c is not None), int(bool(relu)), _ptr(out), n)
    if algorithm == "packed":
        workspace = scratch("gemm packing", (slots, _GEMM_SLOT_VALUES), dtype)
        _kernel("gemm_packed", dtype)(*args, slots, _ptr(workspace))
    else:
        _kernel(f"gemm_{algorithm}", dtype)(*args)
    return out
    dtype = out.dtype
    args = (m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, b_cs, int(c is not None), _ptr(out), n)
    if algorithm == "packed":
        workspace = scratch("gemm packing", (slots, int(lib.lepton_gemm_workspace_size())), dtype)
        _kernel("gemm_packed", dtype)(*args, slots, _ptr(workspace))
    else:
        _kernel(f"gemm_{algorithm}", dtype)(*args)
    return out
