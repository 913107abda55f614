"""The Numba backend's GEMM, C (m, n) = op(A) (m, k) · op(B) (k, n) (+ c), in the steps of the C
backend's (docs/benchmarks.md, "Our GEMM, step by step"): `naive`, `blocked`, and `packed`
(threaded), the same algorithms as csrc/lepton_kernels_generic.inc "gemm". reference.gemm is
the specification.

Operands are read as flat arrays through strides, op(A)[i, p] = a[i·a_rs + p·a_cs], so a
transpose is a swap of the strides and each loop compiles once per dtype, whatever the layout.
Loops that LLVM should vectorise start at 0: numba then knows the index is not negative and
drops its wrap-around check, without which nothing vectorises.
"""
import numpy as np
from llvmlite import binding as llvm
from numba import get_num_threads, njit, prange

from lepton_nn.checks import int_at_least
from lepton_nn.kernels.numba_prefetch import prefetch
from lepton_nn.kernels.numba_stack import stack_array as _stack_array
from lepton_nn.kernels.reference import gemm_algorithm, gemm_output

GEMM_ALGORITHMS = ("naive", "blocked", "packed", "dot")
# The micro-kernel's tile, MR × NR: with AVX-512, 8 rows of 2 vectors of 16 floats are 16 of its
# 32 registers (C's choice too); with 16 registers, 8 rows of one 8-float AVX vector. float64
# uses the same tile, twice the registers, so some accumulators spill: it is for checking, not speed.
MR, NR = 8, (32 if "avx512f" in llvm.get_host_cpu_features().flatten() else 16)
_TILE_VALUES = MR * NR       # a global, so that numba sees a constant (_stack_array)
KC, MC, NC = 256, 128, 2048   # a packed block: depth KC of MC rows of op(A) and NC columns of op(B), as in C
BLOCKED_KC, BLOCKED_NC = 128, 512


@njit(cache=True)
def _gemm_naive(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c):
    """Step 1, the definition: c[i, j] += Σ_p op(A)[i, p]·op(B)[p, j], one dot product per output."""
    zero = np.zeros(1, c.dtype)[0]  # sums run in c's dtype, as in C
    for i in range(m):
        for j in range(n):
            total = zero
            for p in range(k):
                total += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs]
            c[i, j] += total


@njit(cache=True, fastmath={"contract"})
def _gemm_blocked(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c):
    """Step 2: loops i, p, j, so the innermost runs along a row of C and a row of op(B), in blocks
    of BLOCKED_KC × BLOCKED_NC of op(B) that stay in cache while every row of C is updated."""
    for j0 in range(0, n, BLOCKED_NC):
        width = min(BLOCKED_NC, n - j0)
        for p0 in range(0, k, BLOCKED_KC):
            for i in range(m):
                c_row = c[i, j0:j0 + width]
                for p in range(p0, min(k, p0 + BLOCKED_KC)):
                    a_ip = a[i * a_rs + p * a_cs]
                    start = p * b_rs + j0 * b_cs
                    if b_cs == 1:  # contiguous: vectorised
                        b_row = b[start:start + width]
                        for j in range(width):
                            c_row[j] += a_ip * b_row[j]
                    else:
                        for j in range(width):
                            c_row[j] += a_ip * b[start + j * b_cs]


@njit(cache=True)
def _pack(x, rs, cs, first, count, p0, depth, width, panels):
    """Step 3, packing: `count` rows of op(A) (rs, cs = a's strides; width = MR) or columns of op(B)
    (rs, cs = b's swapped; width = NR) from `first`, depth [p0, p0 + depth), into panels of
    `width`: panels[q, p·width + r] = element (first + q·width + r, p0 + p), in the order the
    micro-kernel reads them, whatever the strides. Lines past `count` are zeros (they reach only
    outputs that are never stored). Each loop runs along the source's contiguous axis."""
    for q in range(panels.shape[0]):
        dst = panels[q]
        lines = min(width, count - q * width)
        if lines < width:
            dst[:] = 0
        # each source line is also asked for where the next panel reads it (numba_prefetch.py)
        if cs == 1:  # each line contiguous along the depth
            for r in range(lines):
                start = (first + q * width + r) * rs + p0
                prefetch(x, start + width * rs)
                src = x[start:start + depth]
                for p in range(depth):
                    dst[p * width + r] = src[p]
        else:  # lines side by side (rs == 1 when contiguous): a run of `width` per step of depth
            for p in range(depth):
                start = (p0 + p) * cs + (first + q * width) * rs
                prefetch(x, start + width * rs)
                prefetch(x, start + (2 * width - 1) * rs)
                out = dst[p * width:p * width + lines]
                if rs == 1:
                    src = x[start:start + lines]
                    for r in range(lines):
                        out[r] = src[r]
                else:
                    for r in range(lines):
                        out[r] = x[start + r * rs]


@njit(inline="always", fastmath={"contract"})
def _rank1_update(acc, a0, a1, a2, a3, a4, a5, a6, a7, b):
    """acc[r·NR + j] += a_r · b[j] for the MR = 8 rows r and NR columns j of the register tile: the
    step of _micro_kernel and of numba_conv's direct tile. The loop over j does MR multiply-adds
    per column, a body long enough that LLVM vectorises it along j instead of unrolling it."""
    for j in range(NR):
        v = b[j]
        acc[j] += a0 * v
        acc[NR + j] += a1 * v
        acc[2 * NR + j] += a2 * v
        acc[3 * NR + j] += a3 * v
        acc[4 * NR + j] += a4 * v
        acc[5 * NR + j] += a5 * v
        acc[6 * NR + j] += a6 * v
        acc[7 * NR + j] += a7 * v


@njit(cache=True, fastmath={"contract"})
def _micro_kernel(depth, a_panel, b_panel, c, i0, j0, rows, cols, add):
    """The MR × NR tile of C at (i0, j0) from a packed panel of A (depth × MR) and one of B
    (depth × NR), as `depth` rank-1 updates of an accumulator tile that LLVM keeps in vector
    registers (a _stack_array: on the heap, LLVM would have to assume it may alias the panels, and
    keep it in memory), each by _rank1_update. Only rows × cols of the tile are stored, added to
    C if add."""
    acc = _stack_array(_TILE_VALUES, c.dtype)  # [r·NR + j]
    for r in range(rows):  # the tile's lines of C, cold in a training step, fetched during the sums
        prefetch(c[i0 + r], j0)
        prefetch(c[i0 + r], j0 + NR - 1)
    for j in range(_TILE_VALUES):
        acc[j] = 0
    for p in range(depth):
        a = a_panel[p * MR:p * MR + MR]
        b = b_panel[p * NR:p * NR + NR]
        _rank1_update(acc, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b)
    if cols == NR:  # a loop of constant length: vector stores (a runtime length became a memcpy call)
        for r in range(rows):
            row = c[i0 + r, j0:j0 + NR]
            if add:
                for j in range(NR):
                    row[j] += acc[r * NR + j]
            else:
                for j in range(NR):
                    row[j] = acc[r * NR + j]
        return
    for r in range(rows):
        row = c[i0 + r, j0:j0 + cols]
        for j in range(cols):
            row[j] = row[j] + acc[r * NR + j] if add else acc[r * NR + j]


@njit(cache=True)
def _gemm_packed_block(m0, m1, nc, pc, kc, a, a_rs, a_cs, b_panels, add, c, c_col0, a_panels):
    """The loops inside one packed block of op(B) (kc × nc, in `b_panels` as _pack writes them):
    C[m0:m1, c_col0:c_col0 + nc] (+ if add)= op(A)[m0:m1, pc:pc + kc] · block. For each block of
    MC rows, op(A) is packed once into a_panels (MC/MR × KC·MR); then every MR × NR tile is one
    micro-kernel call. numba_conv packs its own B blocks, straight from the image."""
    for ic in range(m0, m1, MC):
        mc = min(MC, m1 - ic)
        a_used = a_panels[:(mc + MR - 1) // MR]
        _pack(a, a_rs, a_cs, ic, mc, pc, kc, MR, a_used)
        for jr in range(0, nc, NR):
            for ir in range(0, mc, MR):
                _micro_kernel(kc, a_used[ir // MR], b_panels[jr // NR], c, ic + ir, c_col0 + jr,
                              min(MR, mc - ir), min(NR, nc - jr), add)


@njit(cache=True)
def _relu_block(c, m0, m1, n0, n1):
    """The epilogue of a GEMM with relu: C[m0:m1, n0:n1] = max(C, 0), as relu_forward."""
    for i in range(m0, m1):
        row = c[i, n0:n1]
        for j in range(n1 - n0):
            if row[j] < 0:
                row[j] = 0


@njit(cache=True)
def _gemm_band(m0, m1, n0, n1, k, a, a_rs, a_cs, b, b_rs, b_cs, accumulate, relu, c):
    """C[m0:m1, n0:n1] (+)= op(A)[m0:m1] · op(B)[:, n0:n1] by BLIS's loops: for each block of NC
    columns and KC of depth, op(B) is packed once, then _gemm_packed_block runs the loops over it.
    The first depth block overwrites C (unless accumulate), later ones add to it. With at most MC
    rows, op(B) is packed one panel at a time instead, used at once by every row tile while it is
    in cache (as in C: the packed block never goes out to L3 and back)."""
    a_panels = np.empty((MC // MR, KC * MR), c.dtype)
    b_panels = np.empty((NC // NR, KC * NR), c.dtype)
    if m1 - m0 <= MC:
        a_used = a_panels[:(m1 - m0 + MR - 1) // MR]
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            add = accumulate or pc > 0
            _pack(a, a_rs, a_cs, m0, m1 - m0, pc, kc, MR, a_used)
            for jr in range(n0, n1, NR):
                cols = min(NR, n1 - jr)
                _pack(b, b_cs, b_rs, jr, cols, pc, kc, NR, b_panels[:1])
                for ir in range(0, m1 - m0, MR):
                    _micro_kernel(kc, a_used[ir // MR], b_panels[0], c, m0 + ir, jr, min(MR, m1 - m0 - ir), cols, add)
    else:
        for jc in range(n0, n1, NC):
            nc = min(NC, n1 - jc)
            for pc in range(0, k, KC):
                kc = min(KC, k - pc)
                add = accumulate or pc > 0
                b_used = b_panels[:(nc + NR - 1) // NR]
                _pack(b, b_cs, b_rs, jc, nc, pc, kc, NR, b_used)
                _gemm_packed_block(m0, m1, nc, pc, kc, a, a_rs, a_cs, b_used, add, c, jc, a_panels)
    if relu:  # this band, while it is in cache
        _relu_block(c, m0, m1, n0, n1)


@njit(parallel=True, cache=True)
def _gemm_packed(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, accumulate, relu, c, threads):
    """Steps 3 and 4: BLIS's loops around the micro-kernel (_gemm_band), as in the C backend.
    Threads split C into bands, of columns when m <= n and of rows otherwise; each packs into its
    own panels and writes its own band, so every sum runs in the same order on any number of threads."""
    by_columns = m <= n
    unit = NR if by_columns else MR
    extent = n if by_columns else m
    units = (extent + unit - 1) // unit
    for t in prange(threads):
        lo = units * t // threads * unit
        hi = min(units * (t + 1) // threads * unit, extent)
        m0, m1 = (0, m) if by_columns else (lo, hi)
        n0, n1 = (lo, hi) if by_columns else (0, n)
        _gemm_band(m0, m1, n0, n1, k, a, a_rs, a_cs, b, b_rs, b_cs, accumulate, relu, c)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dot_tile(a, lda, b, ldb, k, i0, j0, m, n, accumulate, c):
    """C[i0:i0 + 4, j0:j0 + 4] (+)= the 16 dot products of 4 rows of A and 4 of B, both contiguous
    along the depth (rows past m or n: the last one again, its sums dropped). `reassoc` lets LLVM
    keep each sum in a vector of partial sums along p (16 vector accumulators) and add the
    lanes at the end: the loop vectorises, and the order, fixed by the build, is the same on
    any number of threads."""
    r0, r1, r2, r3 = min(i0, m - 1) * lda, min(i0 + 1, m - 1) * lda, min(i0 + 2, m - 1) * lda, min(i0 + 3, m - 1) * lda
    q0, q1, q2, q3 = min(j0, n - 1) * ldb, min(j0 + 1, n - 1) * ldb, min(j0 + 2, n - 1) * ldb, min(j0 + 3, n - 1) * ldb
    a0, a1, a2, a3 = a[r0:r0 + k], a[r1:r1 + k], a[r2:r2 + k], a[r3:r3 + k]
    b0, b1, b2, b3 = b[q0:q0 + k], b[q1:q1 + k], b[q2:q2 + k], b[q3:q3 + k]
    zero = np.zeros(1, c.dtype)[0]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
    for p in range(k):
        x0, x1, x2, x3 = a0[p], a1[p], a2[p], a3[p]
        y0, y1, y2, y3 = b0[p], b1[p], b2[p], b3[p]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    sums = ((s00, s01, s02, s03), (s10, s11, s12, s13), (s20, s21, s22, s23), (s30, s31, s32, s33))
    for r in range(min(4, m - i0)):
        row = sums[r]
        for t in range(min(4, n - j0)):
            c[i0 + r, j0 + t] = c[i0 + r, j0 + t] + row[t] if accumulate else row[t]


@njit(parallel=True, cache=True)
def _gemm_dot(m, n, k, a, lda, b, ldb, accumulate, relu, c, threads):
    """C (m, n) (+)= A (m, k) · B (n, k)ᵀ by _dot_tile, each of `threads` threads taking a run of
    tiles of 4 rows; the C backend's "dot", for a small C over a long depth (no packing)."""
    tiles = (m + 3) // 4
    for t in prange(threads):
        for tile in range(tiles * t // threads, tiles * (t + 1) // threads):
            i0 = tile * 4
            for j0 in range(0, n, 4):
                _dot_tile(a, lda, b, ldb, k, i0, j0, m, n, accumulate, c)
            if relu:
                _relu_block(c, i0, min(i0 + 4, m), 0, n)


def gemm(a, b, trans_a=False, trans_b=False, c=None, relu=False, *, algorithm=None, threads=None):
    """reference.gemm in Numba, with one of GEMM_ALGORITHMS on up to `threads` threads (packed and
    dot; default: numba's thread count); algorithm=None chooses as the C backend does
    (reference.gemm_algorithm), "dot" needing op(A)'s rows and op(B)'s columns contiguous."""
    owner = "gemm (numba)"
    m, n, k, out = gemm_output(a, b, trans_a, trans_b, c, owner)
    if algorithm is not None and algorithm not in GEMM_ALGORITHMS:
        raise ValueError(f"{owner}: algorithm must be one of {', '.join(GEMM_ALGORITHMS)} or None, got {algorithm!r}")
    along_depth = not trans_a and trans_b  # a (m, k) and b (n, k), both made C-contiguous below
    if algorithm is None:  # as C chooses, but packed where C hands a product to NumPy's @
        algorithm = "dot" if gemm_algorithm(m, n, k, along_depth, MC) == "dot" else "packed"
    if algorithm == "dot" and not along_depth and m * n * k:
        raise ValueError(f"{owner}: algorithm 'dot' needs op(a)'s rows and op(b)'s columns contiguous "
                         f"(a not transposed, b transposed), got trans_a={trans_a}, trans_b={trans_b}")
    threads = get_num_threads() if threads is None else int_at_least(threads, owner, "threads", 1)
    if m == 0 or n == 0:
        return out
    if k == 0:  # an empty sum
        if c is None:
            out[...] = 0
        return np.maximum(out, 0, out=out) if relu else out
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if algorithm == "dot":
        _gemm_dot(m, n, k, a.reshape(-1), k, b.reshape(-1), k, c is not None, relu, out,
                  max(1, min(threads, (m + 3) // 4, m * n * k // (1 << 21))))
        return out
    a_rs, a_cs = (1, m) if trans_a else (k, 1)  # a is (k, m) if trans_a, else (m, k)
    b_rs, b_cs = (1, k) if trans_b else (n, 1)
    args = (m, n, k, a.reshape(-1), a_rs, a_cs, b.reshape(-1), b_rs, b_cs)
    if algorithm == "packed":
        # a thread gets at least ~2 M multiply-adds, or waking it costs more than it saves
        threads = max(1, min(threads, m * n * k // (1 << 21)))
        if threads == 1:  # no parallel region to enter: a small product costs its arithmetic, not the launch
            _gemm_band(0, m, 0, n, k, *args[3:], c is not None, relu, out)
        else:
            _gemm_packed(*args, c is not None, relu, out, threads)
    else:
        if c is None:
            out[...] = 0  # these two add into out
        (_gemm_naive if algorithm == "naive" else _gemm_blocked)(*args, out)
        if relu:
            _relu_block(out, 0, m, 0, n)
    return out
