"""Scratch arrays that the fast backends reuse from call to call, one set per thread.

A kernel's multi-MB temporaries (im2col columns, a zero-padded input, gradient tiles) are
asked for by purpose. The array of a purpose is kept and only grows, so a training loop
allocates it once instead of faulting in fresh pages at every step (docs/benchmarks.md, "Freed
memory is reused"). Its contents are undefined on entry, and it must never be returned to the
caller: the next call that asks for the same purpose overwrites it. One set per thread,
because BLAS and the compiled loops release the GIL while they read these arrays.
"""
import math
import threading

import numpy as np

_local = threading.local()


def scratch(purpose, shape, dtype):
    """An array of `shape` and `dtype` for `purpose`, contents undefined (see the module docstring)."""
    size = math.prod(shape)
    buffers = _local.__dict__.setdefault("buffers", {})
    key = (purpose, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)


def zero_padded(x, padding):
    """x (N, C, H, W) with `padding` = (ph, pw) zeros on each side, in the "padded input" scratch
    array; x itself (C-contiguous) when there is no padding. So a compiled loop needs no bounds checks."""
    (ph, pw), (n, c, h, w) = padding, x.shape
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(x)
    x_pad = scratch("padded input", (n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    x_pad.fill(0)
    x_pad[:, :, ph:ph + h, pw:pw + w] = x
    return x_pad
