/* lepton_kernels.c — C99 kernels of lepton_nn; the contract is in lepton_kernels.h.
 *
 * Every kernel is written once, in lepton_kernels_generic.inc, in terms of a scalar type T.
 * This file includes it twice: once with T = float (names ending _f32) and once with
 * T = double (_f64). <tgmath.h> makes exp/log/sqrt pick expf/logf/sqrtf for float.
 *
 * Reductions (sums over a window, a channel, a row of logits) accumulate in double for both
 * types: cheap, and it keeps float32 results close to the float64 ones. The exception is the
 * embedding's scatter-add, which adds in T in the reference's order, equal to np.add.at.
 */
#include <math.h>
#include <string.h>
#include <tgmath.h>

#include "lepton_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>  /* the GEMM micro-kernel's fused multiply-add */
#endif

/* Vector math. Where glibc's libmvec links (build_ffi.py probes it and defines
 * LEPTON_VECTOR_MATH), these declarations tell the compiler that it has SIMD versions of
 * these C99 functions: a vectorised loop calling erf, exp or tanh then calls them on 4-16
 * elements at once instead of running scalar (20x for GELU's erf: docs/benchmarks.md, "The
 * baby GPT's kernels"). glibc documents them as accurate to a few ulp (its scalar ones to 1),
 * far inside the tolerances of tests/test_kernels.py; NaN and +-inf give what the scalar
 * functions give. The double names are in parentheses, out of reach of <tgmath.h>'s macros. */
#ifdef LEPTON_VECTOR_MATH
#pragma omp declare simd notinbranch
float erff(float);
#pragma omp declare simd notinbranch
double (erf)(double);
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double (exp)(double);
#pragma omp declare simd notinbranch
float tanhf(float);
#pragma omp declare simd notinbranch
double (tanh)(double);
#endif

/* `#pragma omp parallel for` when the work is large enough to pay for waking the threads;
 * without -fopenmp the pragma is ignored and the loop runs serially. */
#define LEPTON_PRAGMA(text) _Pragma(#text)
#define PARALLEL_FOR_IF(cond) LEPTON_PRAGMA(omp parallel for schedule(static) if (cond))
/* The same for an elementwise loop that must vectorise: gcc keeps a data-dependent branch
 * in a scalar loop otherwise (it may not run a product that could trap on every element). */
/* `if (parallel: …)`: a bare `if` on a combined construct applies to `simd` too (OpenMP 5.0), so
 * below the threshold the loop ran scalar (docs/benchmarks.md, "Measurements behind the code"). */
#define PARALLEL_FOR_SIMD_IF(cond) LEPTON_PRAGMA(omp parallel for simd schedule(static) if (parallel: cond))

/* The same for a region with one workspace slot per thread (see thread_slot). */
#define PARALLEL_SLOTS_IF(cond, slots) LEPTON_PRAGMA(omp parallel if (cond) num_threads(slots))
#define FOR_STATIC LEPTON_PRAGMA(omp for schedule(static))
/* A parallel region whose loops share the work out themselves, with FOR_STATIC_NOWAIT. */
#define PARALLEL_IF(cond) LEPTON_PRAGMA(omp parallel if (cond))
#define FOR_STATIC_NOWAIT LEPTON_PRAGMA(omp for schedule(static) nowait)
/* Vectorise this loop (needs -fopenmp or -fopenmp-simd; else ignored). */
#define OMP_SIMD LEPTON_PRAGMA(omp simd)
/* The same for a running maximum (of values that hold no NaN): each SIMD lane keeps its own. */
#define SIMD_MAX(top) LEPTON_PRAGMA(omp simd reduction(max:top))

/* Outputs the direct conv kernels sum at once, in registers: 16 floats fill one AVX-512
 * register or two AVX2 ones. CONV_WAYS such blocks go side by side, so that their chains of
 * dependent adds overlap (one block alone waits on add latency; docs/benchmarks.md). */
#define CONV_BLOCK 16
#define CONV_WAYS 4

/* Output channels the fused conv kernels compute side by side, in SIMD lanes (16 floats: one
 * AVX-512 register), and conv pixels per step of their inner loop: PIXEL_BLOCK independent
 * chains of multiply-adds, so that one does not wait on the latency of the previous. */
#define CHANNEL_BLOCK LEPTON_FUSED_CHANNEL_BLOCK
#define PIXEL_BLOCK 4
/* Conv pixels the fused backward correlates at a time: whole conv rows, this many or a
 * few more, so that their gradient tile stays in L1 cache and each chain of float sums
 * stays short before it is added into a double. */
#define CORRELATION_PIXELS 128

/* a*b + c in one fused multiply-add where the target has the instruction (FP_FAST_FMA*: e.g.
 * -march=native on a CPU with FMA), else as a product and a sum: without the instruction,
 * fma() is a call into libm per element, which would make the conv loops many times slower.
 * The build forbids the compiler to contract a*b + c on its own (see build_ffi.py), so the
 * kernels that want a fused multiply-add say so with this. */
#if defined(FP_FAST_FMA) && defined(FP_FAST_FMAF)
#define MUL_ADD(a, b, c) fma(a, b, c)
#else
#define MUL_ADD(a, b, c) ((a) * (b) + (c))
#endif

/* Elements below which a kernel stays single-threaded. */
#define PARALLEL_MIN_WORK 32768
/* The same for a loop that only streams memory (relu): waking the second thread costs more than it
 * saves below about a million elements (docs/benchmarks.md, "Measurements behind the code"). */
#define STREAMING_MIN_WORK (1 << 20)
/* An element that calls erf, tanh or exp counts as this many in that threshold: such a call
 * costs several plain operations (vectorised) to tens (libm's scalar ones), so fewer elements
 * pay for waking the threads. */
#define TRANSCENDENTAL_COST 8

/* Columns that one thread owns where threads split sums over rows by columns (layer norm's
 * grad_w and grad_b, an embedding's gradient): 16 floats, a 64-byte cache line of each row.
 * Each thread owns its outputs, so results do not depend on the number of threads. */
#define COLUMN_BLOCK 16

/* GELU's constants (reference.py): sqrt 2, sqrt(2/pi), sqrt(2 pi) and the cubic coefficient. */
#define GELU_SQRT_2 1.4142135623730951
#define GELU_SQRT_2_OVER_PI 0.7978845608028654
#define GELU_SQRT_2PI 2.5066282746310002
#define GELU_CUBIC 0.044715

int64_t lepton_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* This thread's number in the current parallel region, in [0, team size): the index of its
 * workspace slot. The region's num_threads(slots) clause keeps it below slots. */
static int64_t thread_slot(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The outputs o in [*lo, *hi) whose input index o*stride + offset lies in [0, in_len).
 * Used for rows (offset = p - ph) and columns (offset = q - pw) of a sliding window: outside
 * that range the tap reads padding. */
static void valid_range(int64_t out_len, int64_t in_len, int64_t stride, int64_t offset,
                        int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;  /* ceil(-offset/stride) */
    int64_t last = in_len - 1 - offset;                                  /* o*stride <= last    */
    int64_t end = last < 0 ? 0 : last / stride + 1;
    if (end > out_len) end = out_len;
    if (first > end) first = end;
    *lo = first;
    *hi = end;
}

/* The window of output (i, j) clipped to the input plane: rows [*r0, *r1), cols [*c0, *c1). */
static void window_bounds(const lepton_window *g, int64_t i, int64_t j,
                          int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1)
{
    int64_t top = i * g->sh - g->ph, left = j * g->sw - g->pw;
    *r0 = top < 0 ? 0 : top;
    *r1 = top + g->kh > g->h ? g->h : top + g->kh;
    *c0 = left < 0 ? 0 : left;
    *c1 = left + g->kw > g->w ? g->w : left + g->kw;
}

/* tap_at[t] = offset in a sample of x (c, h, w) of the value that tap t = (ci*kh + p)*kw + q of
 * a convolution without padding reads for output (0, 0): x[ci, p, q]. Output (i, j) reads it
 * at tap_at[t] + i*sh*w + j*sw. At most LEPTON_FUSED_MAX_TAPS taps. */
static void conv_tap_offsets(const lepton_window *conv, int64_t *tap_at)
{
    for (int64_t ci = 0, t = 0; ci < conv->c; ci++) {
        for (int64_t p = 0; p < conv->kh; p++) {
            for (int64_t q = 0; q < conv->kw; q++, t++) tap_at[t] = (ci * conv->h + p) * conv->w + q;
        }
    }
}

/* ---- GEMM (gemm_naive, gemm_blocked, gemm_packed in lepton_kernels_generic.inc) ----------
 * The packed GEMM's micro-kernel keeps an MR x NR tile of C in vector registers: NR = two
 * vectors of GEMM_VEC_BYTES, MR rows, so that MR * 2 accumulators + 2 rows of B + 1 broadcast
 * fit the register file (32 registers with AVX-512: MR = 8; 16 otherwise: MR = 6).
 * Why each block size: docs/benchmarks.md, "Our GEMM, step by step". */
#if defined(__AVX512F__)
#define GEMM_VEC_BYTES 64
#define GEMM_MR 8
#elif defined(__AVX__)
#define GEMM_VEC_BYTES 32
#define GEMM_MR 6
#else
#define GEMM_VEC_BYTES 16
#define GEMM_MR 6
#endif
/* KC: the depth of one pass; a KC x NR panel of packed B (32 KB, L1's size here) is reused by
 * the MC/MR panels of A that stream past it. MC x KC of packed A (128 KB in float) stays in L2, KC x NC of B
 * in L2/L3. The same counts for float and double: NR (in elements) halves for double. */
#define GEMM_KC 256
#define GEMM_MC 128
#define GEMM_NC 2048
/* The blocked (unpacked) GEMM's blocks: KC x NC of B (128 KB in float) stays in L2. */
#define BLOCKED_KC 128
#define BLOCKED_MC 64
#define BLOCKED_NC 256
/* The dot-product GEMM's register tile: DOT_M x DOT_N vector sums plus DOT_M + 1 loaded vectors
 * fill the register file (5 x 5 + 6 = 31 of AVX-512's 32; 3 x 4 + 4 = 16 otherwise). */
#if GEMM_VEC_BYTES == 64
#define DOT_M 5
#define DOT_N 5
#else
#define DOT_M 3
#define DOT_N 4
#endif
/* Outputs up to which a long-depth packed GEMM splits its depth between two threads, and the
 * values each workspace slot keeps for the second half's C. */
#define GEMM_SPLIT_MAX_OUTPUTS (64 * 256)
/* Output pixels at most per block of the convolutions by GEMM (conv2d_gemm_*): a block of
 * KC rows of im2col, packed, stays in L2 (docs/benchmarks.md, "General convolution"). */
#define CONV_GEMM_PIXELS 512
/* Tiles (2x2 outputs each) per block of the Winograd convolution: its 16 transformed inputs
 * and 16 products, (c + c_out) x 16 x WINOGRAD_TILES values, stay in L2 for 32 -> 64 channels. */
#define WINOGRAD_TILES 64
/* The direct weight gradient (conv2d_direct_backward_weight): its register tile of
 * DIRECT_WEIGHT_CO output channels x DIRECT_WEIGHT_TAPS taps (with AVX-512, 24 accumulators + 6
 * inputs + 1 gradient of the 32 vector registers; 8 + 4 + 1 of 16 otherwise), and the bytes of
 * padded inputs and widened gradients each thread keeps for a batch of samples. Why 4 x 6:
 * docs/benchmarks.md, "General convolution". */
#if GEMM_VEC_BYTES == 64
#define DIRECT_WEIGHT_CO 4
#define DIRECT_WEIGHT_TAPS 6
#else
#define DIRECT_WEIGHT_CO 2
#define DIRECT_WEIGHT_TAPS 4
#endif
#define DIRECT_WEIGHT_BATCH_BYTES (4 << 20)
#define DIRECT_WEIGHT_BATCH_MAX 8
/* Multiply-adds below which the packed GEMM stays on one thread. */
#define GEMM_PARALLEL_MIN_MACS (1 << 21)

typedef float lepton_vec_f32 __attribute__((vector_size(GEMM_VEC_BYTES)));
typedef double lepton_vec_f64 __attribute__((vector_size(GEMM_VEC_BYTES)));
/* Integer vectors of the same lanes, for masks: v & mask zeroes lanes bit for bit. */
typedef int32_t lepton_ivec_f32 __attribute__((vector_size(GEMM_VEC_BYTES)));
typedef int64_t lepton_ivec_f64 __attribute__((vector_size(GEMM_VEC_BYTES)));

/* a * b + c, one fused multiply-add per lane where the CPU has them (the build forbids the
 * compiler to fuse on its own, see MUL_ADD); else a product and a sum. */
static inline lepton_vec_f32 lepton_vec_fma_f32(lepton_vec_f32 a, lepton_vec_f32 b, lepton_vec_f32 c)
{
#if GEMM_VEC_BYTES == 64
    return (lepton_vec_f32)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif GEMM_VEC_BYTES == 32 && defined(__FMA__)
    return (lepton_vec_f32)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

static inline lepton_vec_f64 lepton_vec_fma_f64(lepton_vec_f64 a, lepton_vec_f64 b, lepton_vec_f64 c)
{
#if GEMM_VEC_BYTES == 64
    return (lepton_vec_f64)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif GEMM_VEC_BYTES == 32 && defined(__FMA__)
    return (lepton_vec_f64)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    return a * b + c;
#endif
}

/* The number of threads in the current parallel region (1 outside one, or without OpenMP). */
static int64_t thread_count(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

int64_t lepton_gemm_workspace_size(void)
{
    return GEMM_MC * GEMM_KC + GEMM_KC * GEMM_NC + GEMM_SPLIT_MAX_OUTPUTS;
}

int64_t lepton_gemm_block_rows(void)
{
    return GEMM_MC;
}

/* FN(relu_forward) -> lepton_relu_forward_f32 while SUFFIX is f32. */
#define FN(name) FN_EXPAND(name, SUFFIX)
#define FN_EXPAND(name, suffix) FN_PASTE(name, suffix)
#define FN_PASTE(name, suffix) lepton_##name##_##suffix

#define T float
#define SUFFIX f32
#include "lepton_kernels_generic.inc"
#undef T
#undef SUFFIX

#define T double
#define SUFFIX f64
#include "lepton_kernels_generic.inc"
#undef T
#undef SUFFIX
