"""conv2d in the Numba backend by our own packed GEMM (numba_backend's algorithms "gemm" and
"winograd") and with no columns at all ("direct"): the C backend's conv2d_gemm_*,
conv2d_winograd_forward and conv2d_direct_blocked_forward kernels (csrc/lepton_kernels_generic.inc),
in Numba.

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

Winograd F(2×2, 3×3), for 3×3 kernels at stride 1, padding ≤ 2 (docs/equations.md, "Winograd
convolution"): each 2×2 tile of outputs from the 4×4 input d under it as Y = Aᵀ [U ⊙ (Bᵀ d B)] A,
U = G g Gᵀ per filter; the sum over input channels moves between the transforms, so per
position ξ of the 4×4 tiles, M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) · V[ξ] (C_in, tiles):

    forward   y = Aᵀ M A + b, the batch's tiles in blocks of WINOGRAD_TILES, each one thread's:
              Bᵀ d B written straight into the packed op(B) of 16 _gemm_packed_block products
    input     grad_x = the same of grad_y, each filter turned 180°, C_in and C_out swapped,
              padding 2 − p
    weight    grad_w by dot products along rows, as "direct"'s (below)

Direct, channel-blocked: per (sample, output row), NR output channels × MR pixels summed in
registers over every tap straight from the zero-padded sample; its input gradient at stride 1
(padding < kernel) is the same kernel on grad_y (filters turned 180°, padding k − 1 − p); its
weight gradient at stride 1, dot products along the rows of grad_y and the padded sample
(rows_weight_gradient); the rest by the packed GEMM.

A window geometry `geo` travels as one tuple (kH, kW, sh, sw, ph, pw, W_out), as C's lepton_window.
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from lepton_nn.kernels.numba_gemm import _TILE_VALUES, KC, MC, MR, NC, NR, _gemm_packed_block, _pack, _rank1_update
from lepton_nn.kernels.numba_stack import stack_array as _stack_array
from lepton_nn.kernels.reference import adjoint_convolution, conv_weight_groups, output_size
from lepton_nn.kernels.workspace import scratch

PIXEL_BLOCK = 512  # output pixels at most per block: KC rows of it, packed, stay in L2 (as C's CONV_GEMM_PIXELS)
PARALLEL_MIN_MACS = 1 << 21  # below this many multiply-adds, waking a thread costs more than it saves
# Tiles (2×2 outputs each) per block of the Winograd convolution: its 16 transformed inputs and 16
# products, (C_in + C_out)·16·WINOGRAD_TILES values, stay in L2 for 32 → 64 channels (as C's).
WINOGRAD_TILES = 64


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


@njit(cache=True)
def _add_runs(partials, groups, o_lo, o_hi, grad_w):
    """grad_w[o] += partials[run − 1, o] for runs 1 … groups − 1 in order, rows o in [o_lo, o_hi):
    the last step of both weight gradients (the runs of samples of conv_weight_groups)."""
    for o in range(o_lo, o_hi):
        total = grad_w[o]
        for run in range(1, groups):
            part = partials[run - 1, o]
            for j in range(total.shape[0]):
                total[j] += part[j]


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
        _add_runs(partials, groups, c_out * t // threads, c_out * (t + 1) // threads, grad_w)


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


# --------------------------------------------------------------------------- Winograd F(2×2, 3×3)
# Tile t of the batch is the 2×2 outputs at (2i, 2j) of sample s, t = s·plane_tiles + i·tiles_w + j;
# it reads the 4×4 input d at rows 2i − ph …, columns 2j − pw … (zeros in the padding). The
# loops below write `patch` (16, WINOGRAD_TILES): row 4a + b holds d[a, b] of each tile of a
# block side by side, then Bᵀ d, then the outputs Y[a, b] in row 2a + b.
@njit(cache=True)
def _winograd_gather(x, ci, t0, nt, ph, pw, tiles_w, plane_tiles, patch):
    """patch[4a + b, jt] = d[a, b] of tile t0 + jt (jt < nt), input channel ci of x (N, C_in, H, W)."""
    h, w = x.shape[2], x.shape[3]
    jt = 0
    while jt < nt:  # tiles [jt, jt + run) lie side by side in one row of tiles of one sample
        t = t0 + jt
        s, r = t // plane_tiles, t % plane_tiles
        tj = r % tiles_w
        run = min(tiles_w - tj, nt - jt)
        top, left = r // tiles_w * 2 - ph, tj * 2 - pw
        for a in range(4):  # row a of the tiles' d: columns b = 0 … 3 into patch rows 4a + b
            row = top + a
            d0, d1, d2, d3 = (patch[4 * a, jt:jt + run], patch[4 * a + 1, jt:jt + run],
                              patch[4 * a + 2, jt:jt + run], patch[4 * a + 3, jt:jt + run])
            if row < 0 or row >= h:
                for k in range(run):
                    d0[k], d1[k], d2[k], d3[k] = 0, 0, 0, 0
                continue
            line = x[s, ci, row]
            # tile k reads columns left + 2k … left + 2k + 3: all inside the plane for k in [lo, hi),
            # one 4-value loop; the few tiles at the plane's edges (lo ≤ 1 ≤ run, as padding ≤ 2) value by value
            lo, hi = _inside_outputs(left, 2, w - 3, run)
            src = line[left + 2 * lo:]
            e0, e1, e2, e3 = d0[lo:hi], d1[lo:hi], d2[lo:hi], d3[lo:hi]
            for k in range(hi - lo):
                e0[k], e1[k], e2[k], e3[k] = src[2 * k], src[2 * k + 1], src[2 * k + 2], src[2 * k + 3]
            for k in range(run):
                if lo <= k < hi:
                    continue
                for b in range(4):
                    col = left + 2 * k + b
                    patch[4 * a + b, jt + k] = line[col] if 0 <= col < w else 0
        jt += run


@njit(cache=True)
def _winograd_input_transform(patch, padded, row, v, blk):
    """V = Bᵀ d B of tiles [0, padded) (their d in patch, which is overwritten), each of its 16
    values written into its GEMM's packed op(B) as row `row` of depth block `blk`:
    v[4a + b, blk, u, row·NR + jj] = V[a, b] of tile u·NR + jj. Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
    combines the 4 rows of d, then the 4 columns of Bᵀ d, the same way."""
    for b in range(4):  # Bᵀ d, column b
        for jt in range(padded):
            d0, d1, d2, d3 = patch[b, jt], patch[4 + b, jt], patch[8 + b, jt], patch[12 + b, jt]
            patch[b, jt] = d0 - d2
            patch[4 + b, jt] = d1 + d2
            patch[8 + b, jt] = d2 - d1
            patch[12 + b, jt] = d1 - d3
    at = row * NR
    for u in range(padded // NR):  # (Bᵀ d) B, row a, straight into the panels
        q = u * NR
        for a in range(4):
            e0, e1, e2, e3 = (patch[4 * a, q:q + NR], patch[4 * a + 1, q:q + NR], patch[4 * a + 2, q:q + NR],
                              patch[4 * a + 3, q:q + NR])
            v0, v1, v2, v3 = (v[4 * a, blk, u, at:at + NR], v[4 * a + 1, blk, u, at:at + NR],
                              v[4 * a + 2, blk, u, at:at + NR], v[4 * a + 3, blk, u, at:at + NR])
            for jj in range(NR):
                v0[jj] = e0[jj] - e2[jj]
                v1[jj] = e1[jj] + e2[jj]
                v2[jj] = e2[jj] - e1[jj]
                v3[jj] = e1[jj] - e3[jj]


@njit(cache=True)
def _winograd_output_transform(m, o, nt, b, patch):
    """patch[2a + c, jt] = Y[a, c] = (Aᵀ M A)[a, c] + b of tile jt < nt, output channel o, from
    m[ξ, o, jt] = M[ξ] (ξ = 4a + c). Aᵀ = [1 1 1 0; 0 1 −1 −1]."""
    for jt in range(nt):
        r00 = m[0, o, jt] + m[4, o, jt] + m[8, o, jt]  # Aᵀ M: row a, column c in r_ac
        r01 = m[1, o, jt] + m[5, o, jt] + m[9, o, jt]
        r02 = m[2, o, jt] + m[6, o, jt] + m[10, o, jt]
        r03 = m[3, o, jt] + m[7, o, jt] + m[11, o, jt]
        r10 = m[4, o, jt] - m[8, o, jt] - m[12, o, jt]
        r11 = m[5, o, jt] - m[9, o, jt] - m[13, o, jt]
        r12 = m[6, o, jt] - m[10, o, jt] - m[14, o, jt]
        r13 = m[7, o, jt] - m[11, o, jt] - m[15, o, jt]
        patch[0, jt] = r00 + r01 + r02 + b  # (Aᵀ M) A
        patch[1, jt] = r01 - r02 - r03 + b
        patch[2, jt] = r10 + r11 + r12 + b
        patch[3, jt] = r11 - r12 - r13 + b


@njit(cache=True)
def _winograd_store(patch, t0, nt, o, tiles_w, plane_tiles, y):
    """Y of tiles t0 + jt (jt < nt), output channel o, in patch (_winograd_output_transform),
    stored where they lie in y (N, C_out, H_out, W_out): the last row or column of tiles of an odd
    size is half outside, and that half is dropped."""
    h_out, w_out = y.shape[2], y.shape[3]
    jt = 0
    while jt < nt:  # a run of tiles in one row of tiles
        t = t0 + jt
        s, r = t // plane_tiles, t % plane_tiles
        tj = r % tiles_w
        run = min(tiles_w - tj, nt - jt)
        i0, j0 = r // tiles_w * 2, tj * 2
        whole = run if j0 + 2 * run <= w_out else run - 1  # the tiles whose 2 columns are inside
        for row in range(min(2, h_out - i0)):
            out = y[s, o, i0 + row, j0:]
            left, right = patch[2 * row, jt:jt + run], patch[2 * row + 1, jt:jt + run]
            for k in range(whole):
                out[2 * k] = left[k]
                out[2 * k + 1] = right[k]
            if whole < run:
                out[2 * whole] = left[whole]
        jt += run


@njit(parallel=True, cache=True)
def _winograd_forward(x, u, bias, ph, pw, depth, threads, y):
    """y = conv2d(x, weight) + bias, 3×3 kernel, stride 1, from u (16, C_out·C_in) = the filters'
    G g Gᵀ (winograd_filters). The batch's tiles in blocks of WINOGRAD_TILES, each one thread's:
    per input channel, its 4×4 inputs gathered and transformed into the packed V[ξ] (C_in, tiles);
    16 GEMMs M[ξ] (C_out, tiles) = U[ξ] · V[ξ] (depth in blocks of `depth` channels); each output
    channel's Aᵀ M A + b stored in y. Each output is one thread's: the same bits on any number."""
    c = x.shape[1]
    c_out, h_out, w_out = y.shape[1], y.shape[2], y.shape[3]
    tiles_w = (w_out + 1) // 2
    plane_tiles = (h_out + 1) // 2 * tiles_w
    tiles = x.shape[0] * plane_tiles
    blocks = (tiles + WINOGRAD_TILES - 1) // WINOGRAD_TILES
    for t in prange(threads):
        a_panels = np.empty((MC // MR, KC * MR), y.dtype)
        patch = np.empty((16, WINOGRAD_TILES), y.dtype)
        v = np.empty((16, (c + depth - 1) // depth, WINOGRAD_TILES // NR, depth * NR), y.dtype)
        m = np.empty((16, c_out, WINOGRAD_TILES), y.dtype)
        for blk in range(blocks * t // threads, blocks * (t + 1) // threads):
            t0 = blk * WINOGRAD_TILES
            nt = min(WINOGRAD_TILES, tiles - t0)
            padded = (nt + NR - 1) // NR * NR
            patch[:, nt:padded] = 0  # tiles past nt: zero columns of V (their M is never stored)
            for ci in range(c):
                _winograd_gather(x, ci, t0, nt, ph, pw, tiles_w, plane_tiles, patch)
                _winograd_input_transform(patch, padded, ci % depth, v, ci // depth)
            for xi in range(16):
                for pc in range(0, c, depth):
                    _gemm_packed_block(0, c_out, nt, pc, min(depth, c - pc), u[xi], c, 1, v[xi, pc // depth],
                                       pc > 0, m[xi], 0, a_panels)
            for o in range(c_out):
                _winograd_output_transform(m, o, nt, bias[o], patch)
                _winograd_store(patch, t0, nt, o, tiles_w, plane_tiles, y)


# --------------------------------------------------------------------------- direct, channel-blocked
# No columns at all (C's conv2d_direct_blocked_forward): NR output channels by MR pixels of an output
# row summed in registers over every tap t = (ci·kH + p)·kW + q, as the GEMM micro-kernel's tile
# with the padded image itself as op(B):
#
#     y[s, o0 + c, i, j0 + u] = Σ_t packed[o0 / NR, t·NR + c] · x_pad[s, ci, i·sh + p, (j0 + u)·sw + q] + b
#
# Weights packed once per call (direct_weights), per block of NR output channels, tap-major.
@njit(cache=True, fastmath={"contract"})
def _direct_tile(xp, start, w_block, tap_at, sw, out, o_count, j0, u_lo, u_hi, bias, o0):
    """One MR × NR tile: acc[u·NR + c] = Σ_t w_block[t·NR + c] · xp[start + tap_at[t] + u·sw],
    in a _stack_array (kept in registers, as numba_gemm._micro_kernel's), then
    out[c, j0 + u] = acc[u·NR + c] + bias[o0 + c] for u in [u_lo, u_hi), c < o_count (out: the
    output row of channels o0 …, as (C_out, W_out) rows). Each tap is one numba_gemm._rank1_update
    of the MR pixels' values by the tap's NR weights."""
    acc = _stack_array(_TILE_VALUES, out.dtype)  # [u·NR + c]
    for k in range(_TILE_VALUES):
        acc[k] = 0
    # unsigned offsets: numba adds no negative-index wrap-around to each load
    s1, s2, s3, s4 = np.uint64(sw), np.uint64(2 * sw), np.uint64(3 * sw), np.uint64(4 * sw)
    s5, s6, s7 = np.uint64(5 * sw), np.uint64(6 * sw), np.uint64(7 * sw)
    for t in range(tap_at.shape[0]):
        at = np.uint64(start + tap_at[t])
        _rank1_update(acc, xp[at], xp[at + s1], xp[at + s2], xp[at + s3], xp[at + s4], xp[at + s5], xp[at + s6],
                      xp[at + s7], w_block[t * NR:t * NR + NR])
    for col in range(o_count):
        dst = out[o0 + col]
        b = bias[o0 + col]
        for u in range(u_lo, u_hi):
            dst[j0 + u] = acc[u * NR + col] + b


@njit(parallel=True, cache=True)
def _direct_forward(x, packed, bias, geo, slot, threads, y):
    """y = conv2d(x, weight) + bias from the packed weights (blocks, taps·NR). Work: (sample, output
    row) units, each one thread's; per thread, the sample zero-padded once into xp (with `slot`
    values: room for a tile's reads past the last row). A row's MR-pixel tiles start every MR
    pixels, the last one moved back to end at the row's end (recomputing a few outputs, with the
    same sums)."""
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw, w_out = geo
    c_out, h_out = y.shape[1], y.shape[2]
    hp, wp = h + 2 * ph, w + 2 * pw
    plane = hp * wp
    tap_at = np.empty(c * kh * kw, np.int64)  # tap t = (ci·kH + p)·kW + q at xp offset ci·plane + p·wp + q
    for ci in range(c):
        for p in range(kh):
            for q in range(kw):
                tap_at[(ci * kh + p) * kw + q] = ci * plane + p * wp + q
    units = n * h_out
    for t in prange(threads):
        xp = np.empty(slot, y.dtype)
        padded_sample = -1
        for unit in range(units * t // threads, units * (t + 1) // threads):
            s, i = unit // h_out, unit % h_out
            if padded_sample != s:  # xp = x[s] with its zero border (and zeros past its end)
                xp[:] = 0
                for ci in range(c):
                    for r in range(h):
                        at = ci * plane + (r + ph) * wp + pw
                        xp[at:at + w] = x[s, ci, r]
                padded_sample = s
            out = y[s, :, i]  # (C_out, W_out): output row i of every channel
            for blk in range(packed.shape[0]):
                o0 = blk * NR
                for j in range(0, w_out, MR):
                    j0 = j if j + MR <= w_out or w_out < MR else w_out - MR
                    end = min(j0 + MR, w_out)
                    _direct_tile(xp, i * sh * wp + j0 * sw, packed[blk], tap_at, sw, out,
                                 min(NR, c_out - o0), j0, j - j0, end - j0, bias, o0)


# --------------------------------------------------------------------------- direct weight gradient
# C's conv2d_direct_backward_weight at stride 1: dot products along the rows of grad_y and of the
# padded sample, no columns, no packing:
#
#     grad_w[o, t] = Σ_s Σ_{i < H_out, j < W_out} g[s, o, i, j] · x_pad[s, ci, i + p, j + q],  t = (ci, p, q)
#
# Each row of g is widened to `chunks` vectors of LANES (zeros past W_out); the input is read at
# the same lanes shifted by the tap, its lanes past W_out replaced by 0, so every product that is
# not the reference's is 0·0 and NaN/inf reach exactly the sums they reach in the reference. A
# register tile of ROWS_CO output channels × ROWS_TAPS taps sums a batch of samples in its lanes.
ROWS_LANES = 16  # one AVX-512 vector of floats; _rows_weight_tile's offsets are written for 16
ROWS_CO, ROWS_TAPS = 4, 6
_ROWS_TILE = ROWS_CO * ROWS_TAPS * ROWS_LANES  # a global: a constant for _stack_array
ROWS_BATCH_BYTES, ROWS_BATCH_MAX = 4 << 20, 8  # as C's DIRECT_WEIGHT_BATCH_*


@njit(cache=True, fastmath={"contract"})
def _rows_weight_tile(gw, xw, count, g_size, x_size, go, xo, h_out, chunks, wp, w_out, sums):
    """sums[o, t] = Σ over `count` samples, H_out rows, `chunks` vectors per row of the lanes of
    gw[k·g_size + go[o] + v·LANES + l] · xw[k·x_size + xo[t] + i·wp + c·LANES + l] (0 past W_out).
    The lane loop does 24 multiply-adds, a body LLVM vectorises along the lanes."""
    acc = _stack_array(_ROWS_TILE, sums.dtype)  # [(o·TAPS + t)·LANES + l]
    for k in range(_ROWS_TILE):
        acc[k] = 0
    lanes, zero = np.uint64(ROWS_LANES), sums.dtype.type(0)
    for k in range(count):
        gk = np.uint64(k * g_size)
        x0, x1, x2 = np.uint64(k * x_size + xo[0]), np.uint64(k * x_size + xo[1]), np.uint64(k * x_size + xo[2])
        x3, x4, x5 = np.uint64(k * x_size + xo[3]), np.uint64(k * x_size + xo[4]), np.uint64(k * x_size + xo[5])
        v = np.uint64(0)
        for i in range(h_out):
            for c in range(chunks):
                at = np.uint64(i * wp + c * ROWS_LANES)
                valid = w_out - c * ROWS_LANES  # lanes l < valid are pixels
                for l in range(ROWS_LANES):
                    ul = np.uint64(l)
                    keep = l < valid
                    a0 = xw[x0 + at + ul]
                    a1 = xw[x1 + at + ul]
                    a2 = xw[x2 + at + ul]
                    a3 = xw[x3 + at + ul]
                    a4 = xw[x4 + at + ul]
                    a5 = xw[x5 + at + ul]
                    if not keep:  # lanes past W_out: 0, not the next row's values (0·inf is NaN)
                        a0 = a1 = a2 = a3 = a4 = a5 = zero
                    for o in range(ROWS_CO):  # unrolled by LLVM: 24 multiply-adds per lane
                        b = gw[gk + np.uint64(go[o]) + v + ul]
                        at_o = o * ROWS_TAPS * ROWS_LANES + l
                        acc[at_o] += b * a0
                        acc[at_o + ROWS_LANES] += b * a1
                        acc[at_o + 2 * ROWS_LANES] += b * a2
                        acc[at_o + 3 * ROWS_LANES] += b * a3
                        acc[at_o + 4 * ROWS_LANES] += b * a4
                        acc[at_o + 5 * ROWS_LANES] += b * a5
                v += lanes
    for o in range(ROWS_CO):
        for t in range(ROWS_TAPS):
            total = sums.dtype.type(0)
            for l in range(ROWS_LANES):
                total += acc[(o * ROWS_TAPS + t) * ROWS_LANES + l]
            sums[o, t] = total


@njit(parallel=True, cache=True)
def _rows_backward_weight(g, x, kh, kw, ph, pw, groups, batch, threads, partials, slots, grad_w):
    """grad_w (C_out, rows) at stride 1 by _rows_weight_tile; the samples in `groups` runs as
    _backward_weight's (runs 1.. into partials, added in run order), each run in batches of
    `batch` samples (a count fixed by the shape): the same sums on any number of threads. Thread
    t keeps its batch's widened gradients and padded samples in slots[t]."""
    n, c, h, w = x.shape
    c_out, h_out, w_out = g.shape[1], g.shape[2], g.shape[3]
    rows = c * kh * kw
    hp, wp = h + 2 * ph, w + 2 * pw
    chunks = (w_out + ROWS_LANES - 1) // ROWS_LANES
    g_row = chunks * ROWS_LANES
    g_size = c_out * h_out * g_row
    x_size = c * hp * wp + g_row + kw  # room for the lanes read past the last row
    for th in prange(threads):
        gw, xw = slots[th, :batch * g_size], slots[th, batch * g_size:]
        go = np.empty(ROWS_CO, np.int64)
        xo = np.empty(ROWS_TAPS, np.int64)
        tile = np.empty((ROWS_CO, ROWS_TAPS), grad_w.dtype)
        for run in range(groups * th // threads, groups * (th + 1) // threads):
            sums = grad_w if run == 0 else partials[run - 1]
            first, end = n * run // groups, n * (run + 1) // groups
            for s0 in range(first, end, batch):
                count = min(batch, end - s0)
                for k in range(count):  # the batch's padded samples and widened gradients
                    xk = xw[k * x_size:(k + 1) * x_size]
                    xk[:] = 0
                    for ci in range(c):
                        for r in range(h):
                            at = (ci * hp + r + ph) * wp + pw
                            xk[at:at + w] = x[s0 + k, ci, r]
                    for o in range(c_out):
                        for i in range(h_out):
                            at = k * g_size + (o * h_out + i) * g_row
                            gw[at:at + w_out] = g[s0 + k, o, i]
                            gw[at + w_out:at + g_row] = 0
                for o0 in range(0, c_out, ROWS_CO):
                    for o in range(ROWS_CO):  # past C_out: the last channel again, its sums dropped
                        go[o] = min(o0 + o, c_out - 1) * h_out * g_row
                    for t0 in range(0, rows, ROWS_TAPS):
                        for t in range(ROWS_TAPS):
                            r = min(t0 + t, rows - 1)
                            xo[t] = (r // (kh * kw) * hp + r % (kh * kw) // kw) * wp + r % kw
                        _rows_weight_tile(gw, xw, count, g_size, x_size, go, xo, h_out, chunks, wp, w_out, tile)
                        for o in range(min(ROWS_CO, c_out - o0)):
                            for t in range(min(ROWS_TAPS, rows - t0)):
                                if s0 == first:
                                    sums[o0 + o, t0 + t] = tile[o, t]
                                else:
                                    sums[o0 + o, t0 + t] += tile[o, t]
    for th in prange(threads):  # the runs' sums, in run order, by bands of rows of grad_w
        _add_runs(partials, groups, c_out * th // threads, c_out * (th + 1) // threads, grad_w)


def rows_weight_gradient(grad_y, x, weight, padding, threads=None):
    """grad_w of reference.conv2d_backward at stride 1 by _rows_backward_weight, on up to `threads`
    threads (default: numba's thread count)."""
    threads = get_num_threads() if threads is None else threads
    grad_y, x = np.ascontiguousarray(grad_y), np.ascontiguousarray(x)
    (n, c, h, w), (c_out, _, kh, kw), (ph, pw) = x.shape, weight.shape, padding
    h_out, w_out = grad_y.shape[2:]
    grad_w = np.empty(weight.shape, x.dtype)
    rows, pixels = c * kh * kw, h_out * w_out
    if n * c_out * rows * pixels == 0:  # an empty sum
        grad_w[...] = 0
        return grad_w
    chunks = -(-w_out // ROWS_LANES)
    per_sample = (c_out * h_out * chunks * ROWS_LANES + c * (h + 2 * ph) * (w + 2 * pw) + chunks * ROWS_LANES + kw)
    batch = max(1, min(ROWS_BATCH_MAX, ROWS_BATCH_BYTES // (per_sample * x.dtype.itemsize)))
    groups = conv_weight_groups(n, grad_w.size)
    partials = scratch("conv weight partial sums", (max(groups - 1, 1), c_out, rows), x.dtype)
    threads = _threads(threads, groups, n * c_out * rows * pixels)
    slots = scratch("conv direct weight rows", (threads, batch * per_sample), x.dtype)
    _rows_backward_weight(grad_y, x, int(kh), int(kw), int(ph), int(pw), groups, batch, threads, partials, slots,
                          grad_w.reshape(c_out, rows))
    return grad_w


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
            groups = conv_weight_groups(n, grad_w.size)
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


def winograd_filters(weight):
    """U (16, C_out, C_in): U[4a + b, o, ci] = (G g Gᵀ)[a, b] of each 3×3 filter g = weight[o, ci],
    G = [1 0 0; 1/2 1/2 1/2; 1/2 −1/2 1/2; 0 0 1]; the sums of C's winograd_filter_transform."""
    half = weight.dtype.type(0.5)

    def times_g(l0, l1, l2):  # G applied to 3 lines of filters: its 4 lines
        return l0, (l0 + l1 + l2) * half, (l0 - l1 + l2) * half, l2

    u = np.empty((4, 4) + weight.shape[:2], weight.dtype)
    for a, line in enumerate(times_g(weight[:, :, 0], weight[:, :, 1], weight[:, :, 2])):  # G g: its rows
        u[a] = times_g(line[..., 0], line[..., 1], line[..., 2])  # (G g) Gᵀ: the columns of each row
    return u.reshape((16,) + weight.shape[:2])


def winograd_forward(x, weight, bias, padding, threads=None):
    """reference.conv2d_forward of a 3×3 kernel at stride 1 by Winograd F(2×2, 3×3)
    (docs/equations.md, "Winograd convolution"), on up to `threads` threads (default: numba's
    thread count). Arguments as checked by numba_backend.conv2d_forward (padding ≤ 2)."""
    threads = get_num_threads() if threads is None else threads
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    (n, c), c_out, (ph, pw) = x.shape[:2], weight.shape[0], padding
    h_out, w_out = output_size(x.shape[2], 3, 1, ph), output_size(x.shape[3], 3, 1, pw)
    y = np.empty((n, c_out, h_out, w_out), x.dtype)
    if y.size == 0 or c == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    bias = np.zeros(c_out, x.dtype) if bias is None else np.ascontiguousarray(bias)  # + 0, as C's
    tiles = n * ((h_out + 1) // 2) * ((w_out + 1) // 2)
    blocks = (tiles + WINOGRAD_TILES - 1) // WINOGRAD_TILES
    _winograd_forward(x, winograd_filters(weight).reshape(16, c_out * c), bias, int(ph), int(pw), _depth_block(c),
                      _threads(threads, blocks, 16 * tiles * c * c_out), y)
    return y


def winograd_backward(grad_y, x, weight, padding, need_x=True, need_weight=True, threads=None):
    """(grad_x, grad_w) of reference.conv2d_backward (None where not needed) for a 3×3 kernel at
    stride 1. grad_x by Winograd: the full correlation of grad_y with each filter turned 180° and
    C_in, C_out swapped, a 3×3 stride-1 convolution padded by 2 − padding whose output is x's plane
    (docs/equations.md); grad_w by rows_weight_gradient, as direct_backward."""
    grad_x = None
    grad_w = rows_weight_gradient(grad_y, x, weight, padding, threads) if need_weight else None
    if need_x:
        flipped, adjoint_padding = adjoint_convolution(weight, (1, 1), padding)
        grad_x = winograd_forward(grad_y, flipped, None, adjoint_padding, threads)
    return grad_x, grad_w


def direct_weights(weight):
    """The weights (C_out, C_in, kH, kW) packed per block of NR output channels, tap-major:
    packed[o // NR, t·NR + o % NR] = weight[o] as (taps,) at tap t, the lanes past C_out zero."""
    c_out, taps = weight.shape[0], math.prod(weight.shape[1:])
    blocks = (c_out + NR - 1) // NR
    packed = np.zeros((blocks * NR, taps), weight.dtype)
    packed[:c_out] = weight.reshape(c_out, taps)
    return np.ascontiguousarray(packed.reshape(blocks, NR, taps).transpose(0, 2, 1)).reshape(blocks, taps * NR)


def direct_forward(x, weight, bias, stride, padding, threads=None):
    """reference.conv2d_forward by the channel-blocked direct kernel, on up to `threads` threads
    (default: numba's thread count). Arguments as checked by numba_backend.conv2d_forward."""
    threads = get_num_threads() if threads is None else threads
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    (n, c, h, w), c_out, rows = x.shape, weight.shape[0], math.prod(weight.shape[1:])
    geo, h_out, w_out = _geometry(x.shape, weight.shape[2:], stride, padding)
    y = np.empty((n, c_out, h_out, w_out), x.dtype)
    if y.size == 0 or rows == 0:  # nothing to compute, or an empty sum: the bias alone
        y[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return y
    bias = np.zeros(c_out, x.dtype) if bias is None else np.ascontiguousarray(bias)  # + 0, as C's
    (ph, pw), sw = padding, stride[1]
    slot = c * (h + 2 * ph) * (w + 2 * pw) + MR * sw + weight.shape[3]  # as C's conv_direct_slot_size
    _direct_forward(x, direct_weights(weight), bias, geo, int(slot),
                    _threads(threads, n * h_out, n * c_out * rows * h_out * w_out), y)
    return y


def direct_backward(grad_y, x, weight, stride, padding, need_x=True, need_weight=True, threads=None):
    """(grad_x, grad_w) of reference.conv2d_backward (None where not needed). grad_x at stride 1
    with padding < kernel by the direct kernel: the full correlation of grad_y with each filter
    turned 180° and C_in, C_out swapped, a stride-1 convolution padded by k − 1 − padding whose
    output is x's plane (as winograd_backward); grad_w at stride 1 by rows_weight_gradient;
    otherwise by the packed GEMM."""
    adjoint = adjoint_convolution(weight, stride, padding)
    by_rows = need_weight and tuple(stride) == (1, 1)
    grad_x, grad_w = conv2d_backward(grad_y, x, weight, stride, padding, need_x and adjoint is None,
                                     need_weight and not by_rows, threads)
    if by_rows:
        grad_w = rows_weight_gradient(grad_y, x, weight, padding, threads)
    if need_x and adjoint is not None:
        flipped, adjoint_padding = adjoint
        grad_x = direct_forward(grad_y, flipped, None, (1, 1), adjoint_padding, threads)
    return grad_x, grad_w
