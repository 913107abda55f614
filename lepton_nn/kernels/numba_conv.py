"""conv2d in the Numba backend by our own packed GEMM (numba_backend's algorithm "gemm"): the C
backend's conv2d_gemm_* kernels (csrc/lepton_kernels_generic.inc), in Numba.

For a sample s, cols = im2col(x[s]) is the (rows, P) matrix of its windows, rows = C_in·kH·kW
(one per tap t = (c·kH + p)·kW + q), P = H_out·W_out (one per output pixel i·W_out + j):

    cols[t, i·W_out + j] = x_pad[s, c, i·sh + p, j·sw + q]

and with W = weight as (C_out, rows), g[s] = grad_y[s] as (C_out, P):

    forward   y[s]      (C_out, P)    = W · cols + b
    weight    grad_w    (C_out, rows) = Σ_s g[s] · colsᵀ
    input     grad_x[s] (C_in, H, W)  = col2im(Wᵀ · g[s])    (col2im: the adjoint of im2col)

Design: the columns are never stored whole. Each product runs numba_gemm's packed loops
(_gemm_packed_block and its micro-kernel) over B blocks packed straight from the image, one row
of cols (a tap over a run of output pixels) at a time through a short line. Threads split
(sample, pixel block) units, runs of samples, or samples; each output is one thread's, summed in
an order that depends on the shape alone, so the bits are the same on any number of threads.
Block sizes and timings: docs/benchmarks.md, "General convolution".

A window geometry `geo` travels as one tuple (kH, kW, sh, sw, ph, pw, W_out), as C's lepton_window.
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from lepton_nn.kernels.numba_gemm import KC, MC, MR, NC, NR, _gemm_packed_block, _pack
from lepton_nn.kernels.reference import output_size
from lepton_nn.kernels.workspace import scratch

PIXEL_BLOCK = 512  # output pixels at most per block: KC rows of it, packed, stay in L2 (as C's CONV_GEMM_PIXELS)
# The weight gradient sums the batch in up to WEIGHT_GROUPS runs of samples, one thread's each, then
# adds the runs' sums: as many runs whatever the thread count, so the same bits; fewer when the
# partial sums would pass WEIGHT_PARTIALS_MAX values. The same rule as c_backend._weight_groups.
WEIGHT_GROUPS, WEIGHT_PARTIALS_MAX = 8, 1 << 22
PARALLEL_MIN_MACS = 1 << 21  # below this many multiply-adds, waking a thread costs more than it saves


@njit(cache=True)
def _inside_outputs(offset, stride, size, n_out):
    """The outputs j in [0, n_out) whose input position j·stride + offset lies in [0, size).

    For a fixed kernel tap, these are the outputs that read real input rather than padding.
    Returned as a range [lo, hi); empty (lo == hi) when every output reads padding.
    """
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride  # ⌈−offset / stride⌉
    last_inside = size - 1 - offset
    hi = 0 if last_inside < 0 else min(n_out, last_inside // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _im2col_line(sample, geo, tap, j0, count, line):
    """line[0:count] = row `tap` of im2col(sample) at output pixels [j0, j0 + count): the plane
    of input channel tap // (kH·kW) shifted by the tap's (p, q), 0 where it reads padding.
    sample is one image (C_in, H, W); the pixels run along output rows, one row segment at a time."""
    kh, kw, sh, sw, ph, pw, w_out = geo
    h, w = sample.shape[1], sample.shape[2]
    p, q = tap % (kh * kw) // kw, tap % kw
    plane = sample[tap // (kh * kw)]
    c_lo, c_hi = _inside_outputs(q - pw, sw, w, w_out)
    i, j, done = j0 // w_out, j0 % w_out, 0
    while done < count:
        run = min(w_out - j, count - done)  # output columns [j, j + run) of output row i, at line[done:]
        r = i * sh + p - ph
        lo, hi = max(c_lo, j), min(c_hi, j + run)  # the columns that read the input
        if r < 0 or r >= h or lo >= hi:  # the whole segment reads padding
            dst = line[done:done + run]
            for o in range(run):
                dst[o] = 0
        else:
            # the padding on either side is a few values: plain index loops, cheaper than slices
            for o in range(done, done + lo - j):
                line[o] = 0
            first, count_in = done + lo - j, hi - lo
            out = line[first:first + count_in]
            start = lo * sw + q - pw  # the input column of output column lo
            if sw == 1:  # a contiguous copy
                src = plane[r, start:start + count_in]
                for o in range(count_in):
                    out[o] = src[o]
            else:
                src = plane[r]
                for o in range(count_in):
                    out[o] = src[start + o * sw]
            for o in range(first + count_in, done + run):
                line[o] = 0
        done += run
        i, j = i + 1, 0


@njit(cache=True)
def _col2im_line(line, geo, tap, j0, count, sample):
    """The adjoint of _im2col_line: line[0:count] added back into sample (C_in, H, W), each value
    onto the input pixel it was read from; values read from padding are dropped."""
    kh, kw, sh, sw, ph, pw, w_out = geo
    h, w = sample.shape[1], sample.shape[2]
    p, q = tap % (kh * kw) // kw, tap % kw
    plane = sample[tap // (kh * kw)]
    c_lo, c_hi = _inside_outputs(q - pw, sw, w, w_out)
    i, j, done = j0 // w_out, j0 % w_out, 0
    while done < count:
        run = min(w_out - j, count - done)
        r = i * sh + p - ph
        lo, hi = max(c_lo, j), min(c_hi, j + run)
        if 0 <= r < h and lo < hi:
            src = line[done + lo - j:done + hi - j]
            start = lo * sw + q - pw
            if sw == 1:
                dst = plane[r, start:start + hi - lo]
                for o in range(hi - lo):
                    dst[o] += src[o]
            else:
                dst = plane[r]
                for o in range(hi - lo):
                    dst[start + o * sw] += src[o]
        done += run
        i, j = i + 1, 0


@njit(cache=True)
def _pack_im2col(sample, geo, p0, kc, j0, nc, line, panels):
    """Rows [p0, p0 + kc) × output pixels [j0, j0 + nc) of im2col(sample) as a packed op(B) block
    of numba_gemm (_pack's layout): panels[u, p·NR + jj] = cols[p0 + p, j0 + u·NR + jj], zeros
    past nc. `panels` has ⌈nc / NR⌉ panels, `line` at least as many·NR values."""
    padded = panels.shape[0] * NR
    tail = line[nc:padded]  # pixels past nc: zero columns
    for o in range(tail.shape[0]):
        tail[o] = 0
    for p in range(kc):
        _im2col_line(sample, geo, p0 + p, j0, nc, line)
        for u in range(panels.shape[0]):
            dst = panels[u, p * NR:p * NR + NR]
            src = line[u * NR:u * NR + NR]
            for jj in range(NR):
                dst[jj] = src[jj]


@njit(cache=True)
def _pack_im2col_transposed(sample, geo, p0, kc, t0, nc, line, panels):
    """Output pixels [p0, p0 + kc) × rows [t0, t0 + nc) of im2col(sample), i.e. of colsᵀ, as the
    packed op(B) block of the weight gradient: panels[u, p·NR + r] = cols[t0 + u·NR + r, p0 + p],
    zeros past nc."""
    if nc % NR:
        panels[nc // NR] = 0
    for t in range(nc):
        _im2col_line(sample, geo, t0 + t, p0, kc, line)
        column = panels[t // NR, t % NR:]  # column[p·NR] = cols[t0 + t, p0 + p]
        for p in range(kc):
            column[p * NR] = line[p]


@njit(parallel=True, cache=True)
def _forward(x, w_flat, bias, has_bias, geo, block, depth, threads, y):
    """y (N, C_out, P) = W · im2col(x[s]) (+ b, added after the sum), by units of (sample, block
    of `block` output pixels), each one thread's; depth in blocks of `depth` taps."""
    n, c_out, pixels = y.shape
    rows = w_flat.shape[0] // c_out
    blocks = (pixels + block - 1) // block
    units = n * blocks
    for t in prange(threads):
        a_panels = np.empty((MC // MR, KC * MR), y.dtype)
        b_panels = np.empty((block // NR, KC * NR), y.dtype)
        line = np.empty(block, y.dtype)
        for unit in range(units * t // threads, units * (t + 1) // threads):
            s, j0 = unit // blocks, unit % blocks * block
            nc = min(block, pixels - j0)
            out = y[s]
            b_used = b_panels[:(nc + NR - 1) // NR]
            for pc in range(0, rows, depth):
                kc = min(depth, rows - pc)
                _pack_im2col(x[s], geo, pc, kc, j0, nc, line, b_used)
                _gemm_packed_block(0, c_out, nc, pc, kc, w_flat, rows, 1, b_used, pc > 0, out, j0, a_panels)
            if has_bias:
                for o in range(c_out):
                    dst = out[o, j0:j0 + nc]
                    b = bias[o]
                    for j in range(nc):
                        dst[j] += b


@njit(parallel=True, cache=True)
def _backward_weight(g_flat, x, geo, depth, groups, threads, partials, grad_w):
    """grad_w (C_out, rows) = Σ_s g[s] · im2col(x[s])ᵀ, depth (pixels) in blocks of `depth`. Run r
    of `groups` runs of consecutive samples is summed in order by one thread into grad_w (r = 0)
    or partials[r − 1]; then the runs are added to grad_w in order."""
    n = x.shape[0]
    c_out, rows = grad_w.shape
    pixels = g_flat.shape[0] // (n * c_out)
    for t in prange(threads):
        a_panels = np.empty((MC // MR, KC * MR), grad_w.dtype)
        b_panels = np.empty(((min(rows, NC) + NR - 1) // NR, KC * NR), grad_w.dtype)
        line = np.empty(depth, grad_w.dtype)
        for run in range(groups * t // threads, groups * (t + 1) // threads):
            sums = grad_w if run == 0 else partials[run - 1]
            first = n * run // groups
            for s in range(first, n * (run + 1) // groups):
                g_s = g_flat[s * c_out * pixels:(s + 1) * c_out * pixels]
                for jc in range(0, rows, NC):
                    nc = min(NC, rows - jc)
                    b_used = b_panels[:(nc + NR - 1) // NR]
                    for pc in range(0, pixels, depth):
                        kc = min(depth, pixels - pc)
                        _pack_im2col_transposed(x[s], geo, pc, kc, jc, nc, line, b_used)
                        _gemm_packed_block(0, c_out, nc, pc, kc, g_s, pixels, 1, b_used, s > first or pc > 0,
                                           sums, jc, a_panels)
    for t in prange(threads):  # the runs' sums, in run order, by bands of rows of grad_w
        for o in range(c_out * t // threads, c_out * (t + 1) // threads):
            total = grad_w[o]
            for run in range(1, groups):
                part = partials[run - 1, o]
                for j in range(rows):
                    total[j] += part[j]


@njit(parallel=True, cache=True)
def _backward_input(g_flat, w_flat, geo, block, threads, grad_x):
    """grad_x[s] = col2im(Wᵀ · g[s]), each sample one thread's: per block of `block` output
    pixels, the block's gradient columns (rows, block) by the packed GEMM (depth C_out), then
    each row of them added back into the image by _col2im_line."""
    n, c_in, kh, kw = grad_x.shape[0], grad_x.shape[1], geo[0], geo[1]
    rows = c_in * kh * kw
    c_out = w_flat.shape[0] // rows
    pixels = g_flat.shape[0] // (n * c_out)
    for t in prange(threads):
        a_panels = np.empty((MC // MR, KC * MR), grad_x.dtype)
        b_panels = np.empty((block // NR, KC * NR), grad_x.dtype)
        cols = np.empty((rows, block), grad_x.dtype)
        for s in range(n * t // threads, n * (t + 1) // threads):
            sample = grad_x[s]
            sample[...] = 0
            g_s = g_flat[s * c_out * pixels:(s + 1) * c_out * pixels]
            for j0 in range(0, pixels, block):
                nc = min(block, pixels - j0)
                b_used = b_panels[:(nc + NR - 1) // NR]
                for pc in range(0, c_out, KC):
                    kc = min(KC, c_out - pc)
                    _pack(g_s, 1, pixels, j0, nc, pc, kc, NR, b_used)  # op(B) = g[s][:, j0:j0 + nc]
                    _gemm_packed_block(0, rows, nc, pc, kc, w_flat, 1, rows, b_used, pc > 0, cols, 0, a_panels)
                for tap in range(rows):
                    _col2im_line(cols[tap], geo, tap, j0, nc, sample)


# --------------------------------------------------------------------------- the wrappers
def _pixel_block(pixels):
    """Output pixels per block: at most PIXEL_BLOCK, the blocks of a plane of equal size rounded
    up to NR (a plane of 784 is 2 blocks of 416 and 368, with NR = 32)."""
    blocks = max(1, (pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK)
    size = (pixels + blocks - 1) // blocks
    return max(NR, (size + NR - 1) // NR * NR)


def _depth_block(k):
    """The depth of each pass when a depth of k is cut into passes of at most KC of equal size
    (288 = 2 × 144, not 256 + 32: a micro-kernel call over a short depth is mostly its tile's
    loads and stores)."""
    blocks = max(1, (k + KC - 1) // KC)
    return max(1, (k + blocks - 1) // blocks)


def _geometry(x_shape, kernel, stride, padding):
    """(geo, H_out, W_out): the kernels' window tuple (kH, kW, sh, sw, ph, pw, W_out) and the output size."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h_out, w_out = output_size(x_shape[2], kh, sh, ph), output_size(x_shape[3], kw, sw, pw)
    return tuple(int(v) for v in (kh, kw, sh, sw, ph, pw, w_out)), h_out, w_out


def _threads(threads, units, macs):
    """How many of `threads` to use over `units` independent units of `macs` multiply-adds in all."""
    return max(1, min(threads, units)) if macs >= PARALLEL_MIN_MACS else 1


def _weight_groups(n, weight_size):
    """The number of runs of samples the weight gradient sums separately (WEIGHT_GROUPS above):
    a function of the shape alone, never of the thread count."""
    return max(1, min(n, WEIGHT_GROUPS, WEIGHT_PARTIALS_MAX // max(1, weight_size) + 1))


def conv2d_forward(x, weight, bias, stride, padding, threads=None):
    """reference.conv2d_forward by the packed GEMM, on up to `threads` threads (default: numba's
    thread count). Arguments as checked by numba_backend.conv2d_forward."""
    threads = get_num_threads() if threads is None else threads
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    n, c_out, rows = x.shape[0], weight.shape[0], math.prod(weight.shape[1:])
    geo, h_out, w_out = _geometry(x.shape, weight.shape[2:], stride, padding)
    pixels = h_out * w_out
    y = np.empty((n, c_out, h_out, w_out), x.dtype)
    if y.size == 0 or rows == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    block = _pixel_block(pixels)
    units = n * ((pixels + block - 1) // block)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros(0, x.dtype)
    _forward(x, weight.reshape(-1), bias, has_bias, geo, block, _depth_block(rows),
             _threads(threads, units, n * c_out * rows * pixels), y.reshape(n, c_out, pixels))
    return y


def conv2d_backward(grad_y, x, weight, stride, padding, need_x=True, need_weight=True, threads=None):
    """(grad_x, grad_w) of reference.conv2d_backward (None where not needed) by the packed GEMM,
    on up to `threads` threads (default: numba's thread count)."""
    threads = get_num_threads() if threads is None else threads
    grad_y, x, weight = (np.ascontiguousarray(a) for a in (grad_y, x, weight))
    n, c_out, rows = x.shape[0], weight.shape[0], math.prod(weight.shape[1:])
    geo, h_out, w_out = _geometry(x.shape, weight.shape[2:], stride, padding)
    pixels = h_out * w_out
    macs = n * c_out * rows * pixels
    grad_x = grad_w = None
    if need_weight:
        grad_w = np.empty_like(weight)
        if macs == 0:  # an empty sum
            grad_w[...] = 0
        else:
            groups = _weight_groups(n, grad_w.size)
            partials = scratch("conv weight partial sums", (max(groups - 1, 1), c_out, rows), x.dtype)
            _backward_weight(grad_y.reshape(-1), x, geo, _depth_block(pixels), groups,
                             _threads(threads, groups, macs), partials, grad_w.reshape(c_out, rows))
    if need_x:
        grad_x = np.empty_like(x)
        if macs == 0:
            grad_x[...] = 0
        else:
            _backward_input(grad_y.reshape(-1), weight.reshape(-1), geo, _pixel_block(pixels),
                            _threads(threads, n, macs), grad_x)
    return grad_x, grad_w
