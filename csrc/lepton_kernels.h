/* lepton_kernels.h — the C kernels of lepton_nn and their contract.
 *
 * The specification is lepton_nn/kernels/reference.py (NumPy): every kernel here computes the
 * same equation, stated in the docstring of the reference function of the same name. The
 * Python wrapper lepton_nn/kernels/c_backend.py is the only caller; it validates arguments,
 * so these functions check nothing.
 *
 * Conventions for every kernel:
 *   - Layout is NCHW. Every array is C-contiguous (row-major, no gaps), float32 or float64.
 *   - Each kernel exists twice: suffix _f32 takes float*, suffix _f64 takes double*. Both are
 *     compiled from the same source, lepton_kernels_generic.inc.
 *   - Python (NumPy) allocates every output and workspace; C never allocates memory.
 *     A kernel that needs one buffer per thread gets `slots` of them and runs on at most
 *     `slots` threads; lepton_max_threads() says how many slots make every thread busy.
 *     An output argument is fully overwritten (no need to zero it first).
 *   - Inputs (const) and outputs never overlap, except adam_steps, which updates in place.
 *   - With OpenMP, loops over (sample, channel) planes or over elements run in parallel;
 *     each thread writes a disjoint part of the output, so results do not depend on the
 *     number of threads.
 *
 * Sliding windows (conv, pooling) are described by `lepton_window`:
 *   H_out = (H + 2*ph - kh) / sh + 1, W_out likewise (the wrapper computes and checks them).
 *   Output pixel (i, j), tap (p, q) reads input row i*sh - ph + p, column j*sw - pw + q;
 *   rows/columns outside [0, H) x [0, W) are padding.
 *
 * The text between the cffi markers is fed to cffi's cdef as is (build_ffi.py), so it may
 * hold only plain declarations, comments and integer #defines.
 */
#ifndef LEPTON_KERNELS_H
#define LEPTON_KERNELS_H

#include <stdint.h>

/* cffi-cdef-begin */

/* Bumped whenever a signature below changes, so the wrapper can refuse a stale build. */
#define LEPTON_KERNELS_ABI 13

typedef struct {
    int64_t n, c;          /* samples and channels of the input                     */
    int64_t h, w;          /* input plane                                           */
    int64_t kh, kw;        /* window (kernel) size                                  */
    int64_t sh, sw;        /* stride                                                */
    int64_t ph, pw;        /* zero (conv, avg) or -inf (max) padding on each side   */
    int64_t h_out, w_out;  /* output plane                                          */
} lepton_window;

/* Adam hyper-parameters, computed in Python double precision exactly as reference.py writes
 * them (e.g. one_minus_beta1 = 1 - beta1, bias_correction1 = 1 - beta1**step); the _f32
 * kernel rounds each to float once, as NumPy does with a Python scalar. */
typedef struct {
    double lr, beta1, one_minus_beta1, beta2, one_minus_beta2;
    double bias_correction1, bias_correction2, eps, weight_decay;
} lepton_adam_hyper;

/* The most threads a parallel region of these kernels uses (1 when built without OpenMP). */
int64_t lepton_max_threads(void);

/* ---- conv2d: im2col / col2im, for the "blas" algorithm (its GEMMs run in NumPy) ----------
 * im2col: x (n, c, h, w) -> cols (n, c*kh*kw, h_out*w_out),
 *   cols[s, (ci*kh + p)*kw + q, i*w_out + j] = x_pad[s, ci, i*sh + p, j*sw + q]  (0 in padding)
 *   so that conv2d is y[s] = weight.reshape(c_out, c*kh*kw) @ cols[s].
 * col2im: the adjoint: x (n, c, h, w) = sum of every cols entry into the input pixel it was
 *   copied from (entries from padding are dropped). Overwrites x.
 */
void lepton_im2col_f32(const float *x, const lepton_window *g, float *cols);
void lepton_im2col_f64(const double *x, const lepton_window *g, double *cols);
void lepton_col2im_f32(const float *cols, const lepton_window *g, float *x);
void lepton_col2im_f64(const double *cols, const lepton_window *g, double *x);

/* bias gradient: grad_y (n, c, hw) -> grad_b (c), grad_b[o] = sum over n and hw. */
void lepton_bias_grad_f32(const float *grad_y, int64_t n, int64_t c, int64_t hw, float *grad_b);
void lepton_bias_grad_f64(const double *grad_y, int64_t n, int64_t c, int64_t hw, double *grad_b);

/* ---- conv2d, direct, for few taps ---------------------------------------------------------
 * For c_in*kh*kw <= LEPTON_FUSED_MAX_TAPS (defined below), where a GEMM of so few rows is
 * bound by memory, not arithmetic. conv (n, c_in, h, w -> h_out, w_out) describes the
 * convolution with conv->ph = conv->pw = 0 (the wrapper pads x first).
 * forward: y (n, c_out, h_out, w_out) = conv2d(x, weight) + bias (bias may be NULL), each
 *   (sample, channel) plane computed directly, one line of outputs at a time.
 *   workspace: slots x h_out x w values, a plane with rows of w (used with stride 1).
 */
void lepton_conv2d_direct_forward_f32(const float *x, const float *weight, const float *bias,
                                      const lepton_window *conv, int64_t c_out,
                                      int64_t slots, float *workspace, float *y);
void lepton_conv2d_direct_forward_f64(const double *x, const double *weight, const double *bias,
                                      const lepton_window *conv, int64_t c_out,
                                      int64_t slots, double *workspace, double *y);

/* ---- conv2d as GEMMs of our own (the packed GEMM's blocks, below) -----------------------
 * rows = c * kh * kw, P = h_out * w_out; im2col as above, but never stored whole: each kernel
 * packs the blocks of it that its GEMM needs straight from x.
 * forward: y (n, c_out, P) = weight (c_out, rows) . im2col(x[s]) + bias (bias may be NULL).
 * backward_weight: grad_w (c_out, rows) = sum over s of grad_y[s] . im2col(x[s])ᵀ, the samples summed
 *   in `groups` runs of consecutive ones, runs 1.. into partials (groups - 1, c_out, rows), then added.
 * backward_input: grad_x = col2im(weightᵀ . grad_y[s]) per sample. Overwrites grad_x.
 * workspace: conv2d_gemm_workspace_size(g, c_out, slots) values (slots per-thread slots, then the
 *   packed weights). Results do not depend on slots. */
int64_t lepton_conv2d_gemm_workspace_size_f32(const lepton_window *g, int64_t c_out, int64_t slots);
int64_t lepton_conv2d_gemm_workspace_size_f64(const lepton_window *g, int64_t c_out, int64_t slots);
void lepton_conv2d_gemm_forward_f32(const float *x, const float *weight, const float *bias, const lepton_window *g,
                                    int64_t c_out, int64_t slots, float *workspace, float *y);
void lepton_conv2d_gemm_forward_f64(const double *x, const double *weight, const double *bias, const lepton_window *g,
                                    int64_t c_out, int64_t slots, double *workspace, double *y);
void lepton_conv2d_gemm_backward_weight_f32(const float *grad_y, const float *x, const lepton_window *g,
                                            int64_t c_out, int64_t groups, float *partials, int64_t slots, float *workspace, float *grad_w);
void lepton_conv2d_gemm_backward_weight_f64(const double *grad_y, const double *x, const lepton_window *g,
                                            int64_t c_out, int64_t groups, double *partials, int64_t slots, double *workspace, double *grad_w);
void lepton_conv2d_gemm_backward_input_f32(const float *grad_y, const float *weight, const lepton_window *g,
                                           int64_t c_out, int64_t slots, float *workspace, float *grad_x);
void lepton_conv2d_gemm_backward_input_f64(const double *grad_y, const double *weight, const lepton_window *g,
                                           int64_t c_out, int64_t slots, double *workspace, double *grad_x);

/* ---- conv2d, direct and channel-blocked, any number of taps --------------------------------
 * forward: y (n, c_out, h_out, w_out) = conv2d(x, weight) + bias (bias may be NULL), summed in
 *   registers per NR output channels x MR pixels of a row, over every tap, from the padded image.
 *   workspace: conv2d_direct_blocked_workspace_size(g, c_out, slots) values. */
int64_t lepton_conv2d_direct_blocked_workspace_size_f32(const lepton_window *g, int64_t c_out, int64_t slots);
int64_t lepton_conv2d_direct_blocked_workspace_size_f64(const lepton_window *g, int64_t c_out, int64_t slots);
void lepton_conv2d_direct_blocked_forward_f32(const float *x, const float *weight, const float *bias,
                                              const lepton_window *g, int64_t c_out, int64_t slots,
                                              float *workspace, float *y);
void lepton_conv2d_direct_blocked_forward_f64(const double *x, const double *weight, const double *bias,
                                              const lepton_window *g, int64_t c_out, int64_t slots,
                                              double *workspace, double *y);

/* ---- conv2d, direct weight gradient, stride 1 ---------------------------------------------
 * backward_weight: grad_w (c_out, c kh kw) as conv2d_gemm_backward_weight (the same runs of
 *   samples and partials), by dot products along the rows of grad_y and of the padded input;
 *   g->sh = g->sw = 1. workspace: conv2d_direct_weight_workspace_size(g, c_out, slots) values. */
int64_t lepton_vector_lanes_f32(void);  /* the lanes of its vectors: 16 floats with AVX-512 */
int64_t lepton_vector_lanes_f64(void);
int64_t lepton_conv2d_direct_weight_workspace_size_f32(const lepton_window *g, int64_t c_out, int64_t slots);
int64_t lepton_conv2d_direct_weight_workspace_size_f64(const lepton_window *g, int64_t c_out, int64_t slots);
void lepton_conv2d_direct_backward_weight_f32(const float *grad_y, const float *x, const lepton_window *g,
                                              int64_t c_out, int64_t groups, float *partials, int64_t slots,
                                              float *workspace, float *grad_w);
void lepton_conv2d_direct_backward_weight_f64(const double *grad_y, const double *x, const lepton_window *g,
                                              int64_t c_out, int64_t groups, double *partials, int64_t slots,
                                              double *workspace, double *grad_w);

/* ---- conv2d, Winograd F(2x2, 3x3): 3x3 kernels, stride 1 --------------------------------
 * winograd_filter_transform: u (16, c_out, c) = G g Gᵀ of each filter of weight (c_out, c, 3, 3).
 * forward: y (n, c_out, h_out, w_out) = conv2d(x, weight) + bias (bias may be NULL), from u;
 *   g->kh = g->kw = 3, g->sh = g->sw = 1. workspace: conv2d_winograd_workspace_size(c, c_out, slots) values. */
void lepton_winograd_filter_transform_f32(const float *weight, int64_t c_out, int64_t c, float *u);
void lepton_winograd_filter_transform_f64(const double *weight, int64_t c_out, int64_t c, double *u);
int64_t lepton_conv2d_winograd_workspace_size_f32(int64_t c, int64_t c_out, int64_t slots);
int64_t lepton_conv2d_winograd_workspace_size_f64(int64_t c, int64_t c_out, int64_t slots);
void lepton_conv2d_winograd_forward_f32(const float *x, const float *u, const float *bias, const lepton_window *g,
                                        int64_t c_out, int64_t slots, float *workspace, float *y);
void lepton_conv2d_winograd_forward_f64(const double *x, const double *u, const double *bias, const lepton_window *g,
                                        int64_t c_out, int64_t slots, double *workspace, double *y);

/* ---- max_pool2d ---------------------------------------------------------------------------
 * forward: x (n, c, h, w) -> y, argmax (n, c, h_out, w_out). argmax is the flat index h*W + w
 *   of the winner in its unpadded input plane. Ties: first in row-major window order; NaN
 *   wins over numbers, the last NaN over earlier ones (PyTorch's rule). Padding never wins; a window made only
 *   of padding gives y = -inf and the index of its top-left corner, as the reference does.
 * backward: grad_x (planes, in_size) = scatter-add of grad_y (planes, out_size) into
 *   argmax; indices outside [0, in_size) are ignored. Overwrites grad_x.
 */
void lepton_max_pool2d_forward_f32(const float *x, const lepton_window *g, float *y, int64_t *argmax);
void lepton_max_pool2d_forward_f64(const double *x, const lepton_window *g, double *y, int64_t *argmax);
void lepton_max_pool2d_backward_f32(const float *grad_y, const int64_t *argmax, int64_t planes,
                                    int64_t out_size, int64_t in_size, float *grad_x);
void lepton_max_pool2d_backward_f64(const double *grad_y, const int64_t *argmax, int64_t planes,
                                    int64_t out_size, int64_t in_size, double *grad_x);

/* ---- conv2d -> relu -> max_pool2d, fused, for few taps ------------------------------------
 * conv (n, c_in, h, w -> h_out, w_out) describes the convolution of x with weight
 *   (c_out, c_in, conv->kh, conv->kw), conv->ph = conv->pw = 0 (the wrapper pads x first),
 *   c_in*kh*kw <= LEPTON_FUSED_MAX_TAPS; pool (n, c_out, conv->h_out, conv->w_out -> h_out,
 *   w_out) describes the pooling of its output, pool->ph = pool->pw = 0. y, argmax and grad_y
 *   are stored channels-last, (n, pool->h_out, pool->w_out, c_out) in memory: the exception to NCHW.
 * forward: y = relu(max_pool2d(conv2d(x) + bias)), argmax (int32) the flat index h*W_c + w of
 *   each winner in its conv output plane; max-pool's rules for ties and NaN; bias may be NULL.
 *   workspace: slots x pool->kh x cols x LEPTON_FUSED_CHANNEL_BLOCK values,
 *   cols = (pool->w_out - 1)*pool->sw + pool->kw. The conv output is never stored.
 * backward: with g = grad_y * (y > 0) and the winner (hc, wc) = divmod(argmax, W_c):
 *     grad_b[o] += g,  grad_w[o, c, p, q] += g * x[s, c, hc*sh + p, wc*sw + q],
 *     grad_x[s, c, hc*sh + p, wc*sw + q] += g * weight[o, c, p, q]
 *   grad_y, y, argmax hold n * pooled * c_out values. Each of grad_x, grad_w, grad_b may be NULL
 *   (not computed) and is otherwise overwritten; an argmax outside [0, conv->h_out*conv->w_out)
 *   is ignored. tiles: slots x conv->h_out*conv->w_out x LEPTON_FUSED_CHANNEL_BLOCK values;
 *   sums: slots x (taps + 1) x ceil(c_out / LEPTON_FUSED_CHANNEL_BLOCK)*LEPTON_FUSED_CHANNEL_BLOCK
 *   doubles. How the two kernels work, and why so: docs/benchmarks.md, "The fused conv kernels".
 */
#define LEPTON_FUSED_MAX_TAPS 64
#define LEPTON_FUSED_CHANNEL_BLOCK 16
void lepton_conv2d_relu_max_pool2d_forward_f32(const float *x, const float *weight, const float *bias,
                                               const lepton_window *conv, const lepton_window *pool,
                                               int64_t slots, float *workspace, float *y, int32_t *argmax);
void lepton_conv2d_relu_max_pool2d_forward_f64(const double *x, const double *weight, const double *bias,
                                               const lepton_window *conv, const lepton_window *pool,
                                               int64_t slots, double *workspace, double *y, int32_t *argmax);
void lepton_conv2d_relu_max_pool2d_backward_f32(const float *grad_y, const float *y, const int32_t *argmax,
                                                int64_t c_out, int64_t pooled, const float *x,
                                                const float *weight, const lepton_window *conv,
                                                int64_t slots, float *tiles, double *sums,
                                                float *grad_x, float *grad_w, float *grad_b);
void lepton_conv2d_relu_max_pool2d_backward_f64(const double *grad_y, const double *y, const int32_t *argmax,
                                                int64_t c_out, int64_t pooled, const double *x,
                                                const double *weight, const lepton_window *conv,
                                                int64_t slots, double *tiles, double *sums,
                                                double *grad_x, double *grad_w, double *grad_b);

/* ---- avg_pool2d ---------------------------------------------------------------------------
 * forward: y (n, c, h_out, w_out) = window sum / D, D = kh*kw if count_include_pad else the
 *   number of unpadded elements in the window.
 * backward: grad_x (n, c, h, w) = every g/D added to each unpadded pixel of its window.
 *   Overwrites grad_x.
 */
void lepton_avg_pool2d_forward_f32(const float *x, const lepton_window *g, int count_include_pad, float *y);
void lepton_avg_pool2d_forward_f64(const double *x, const lepton_window *g, int count_include_pad, double *y);
void lepton_avg_pool2d_backward_f32(const float *grad_y, const lepton_window *g, int count_include_pad,
                                    float *grad_x);
void lepton_avg_pool2d_backward_f64(const double *grad_y, const lepton_window *g, int count_include_pad,
                                    double *grad_x);

/* ---- relu (any shape, `size` elements) ------------------------------------------------------
 * forward: y = x < 0 ? 0 : x (NaN passes through, as np.maximum).
 * backward: grad_x = grad_y * (x > 0), a product so that NaN/inf in grad_y behave as in NumPy.
 */
void lepton_relu_forward_f32(const float *x, int64_t size, float *y);
void lepton_relu_forward_f64(const double *x, int64_t size, double *y);
void lepton_relu_backward_f32(const float *grad_y, const float *x, int64_t size, float *grad_x);
void lepton_relu_backward_f64(const double *grad_y, const double *x, int64_t size, double *grad_x);

/* ---- leaky relu (any shape, `size` elements; slope rounded to T, as NumPy does) ------------
 * forward: y = x > 0 ? x : x * slope (NaN passes through).
 * backward: grad_x = grad_y * (x > 0 ? 1 : slope), a product so that NaN/inf in grad_y stay.
 */
void lepton_leaky_relu_forward_f32(const float *x, int64_t size, float slope, float *y);
void lepton_leaky_relu_forward_f64(const double *x, int64_t size, double slope, double *y);
void lepton_leaky_relu_backward_f32(const float *grad_y, const float *x, int64_t size, float slope, float *grad_x);
void lepton_leaky_relu_backward_f64(const double *grad_y, const double *x, int64_t size, double slope,
                                    double *grad_x);

/* ---- softmax + cross-entropy --------------------------------------------------------------
 * forward: logits (n, k), labels (n) in [0, k) -> loss (n), probs (n, k); max-shifted.
 * backward: grad_logits (n, k) = grad_loss[r] * (probs[r, j] - [j == labels[r]]).
 * Labels must be in range: the wrapper checks them.
 */
void lepton_softmax_xent_forward_f32(const float *logits, const int64_t *labels, int64_t n, int64_t k,
                                     float *loss, float *probs);
void lepton_softmax_xent_forward_f64(const double *logits, const int64_t *labels, int64_t n, int64_t k,
                                     double *loss, double *probs);
void lepton_softmax_xent_backward_f32(const float *grad_loss, const float *probs, const int64_t *labels,
                                      int64_t n, int64_t k, float *grad_logits);
void lepton_softmax_xent_backward_f64(const double *grad_loss, const double *probs, const int64_t *labels,
                                      int64_t n, int64_t k, double *grad_logits);

/* ---- adam ---------------------------------------------------------------------------------
 * One AdamW step over `count` arrays (a model's parameters), array a of sizes[a] elements, in
 * place on params[a], ms[a] and vs[a], in a single pass, with the reference's operations in
 * the reference's order (bit-identical results). No two arrays may overlap (the loop is
 * vectorised on that promise).
 */
void lepton_adam_steps_f32(float *const *params, const float *const *grads, float *const *ms, float *const *vs,
                           const int64_t *sizes, int64_t count, const lepton_adam_hyper *hp);
void lepton_adam_steps_f64(double *const *params, const double *const *grads, double *const *ms,
                           double *const *vs, const int64_t *sizes, int64_t count, const lepton_adam_hyper *hp);

/* ---- sequence models: embedding, layer norm, GELU, attention's masked softmax ------------
 * gelu (any shape, `size` elements): tanh_approx 0 is approximate='none' (erf), 1 'tanh'.
 *   forward: y = x * Phi(x);  backward: grad_x = grad_y * dy/dx (a product: NaN/inf stay).
 * layer_norm: x (rows, cols), each row normalised over its cols values; weight and bias
 *   (cols) may be NULL (gamma = 1, beta = 0); eps is rounded to T, as NumPy does.
 *   forward: y (rows, cols), mean and rstd (rows) = mu and 1/sqrt(var + eps), kept for backward.
 *   backward: grad_x (rows, cols), grad_w and grad_b (cols), each NULL when not needed and
 *   otherwise overwritten; mean and rstd are the forward's.
 * masked_softmax: scores (rows, t_k), row r being query r % t_q. Key j takes part where
 *   keep[r*t_k + j] != 0 (keep may be NULL: every key) and, if causal, j <= r % t_q.
 *   forward: y = the softmax of each row over its kept keys, 0 at masked keys; a row with no
 *   kept key, or only -inf ones, is 0; a NaN or +inf anywhere in a row (masked or not) makes
 *   it NaN, as the reference's added -inf mask does.
 *   backward: grad_s (rows, t_k) = y * (grad_y - sum_k grad_y * y), per row.
 * embedding_backward: grad_w (num_embeddings, dim) = for each position p in order,
 *   grad_w[indices[p]] += grad_y[p] (positions x dim): the reference's np.add.at, with its
 *   sums in its order, so equal to it bit for bit. Every index must lie in [0, num_embeddings)
 *   (the wrapper checks them). Overwrites grad_w.
 */
void lepton_embedding_backward_f32(const float *grad_y, const int64_t *indices, int64_t positions, int64_t dim,
                                   int64_t num_embeddings, float *grad_w);
void lepton_embedding_backward_f64(const double *grad_y, const int64_t *indices, int64_t positions, int64_t dim,
                                   int64_t num_embeddings, double *grad_w);
void lepton_gelu_forward_f32(const float *x, int64_t size, int tanh_approx, float *y);
void lepton_gelu_forward_f64(const double *x, int64_t size, int tanh_approx, double *y);
void lepton_gelu_backward_f32(const float *grad_y, const float *x, int64_t size, int tanh_approx, float *grad_x);
void lepton_gelu_backward_f64(const double *grad_y, const double *x, int64_t size, int tanh_approx,
                              double *grad_x);
void lepton_layer_norm_forward_f32(const float *x, int64_t rows, int64_t cols, const float *weight,
                                   const float *bias, double eps, float *y, float *mean, float *rstd);
void lepton_layer_norm_forward_f64(const double *x, int64_t rows, int64_t cols, const double *weight,
                                   const double *bias, double eps, double *y, double *mean, double *rstd);
void lepton_layer_norm_backward_f32(const float *grad_y, const float *x, int64_t rows, int64_t cols,
                                    const float *mean, const float *rstd, const float *weight,
                                    float *grad_x, float *grad_w, float *grad_b);
void lepton_layer_norm_backward_f64(const double *grad_y, const double *x, int64_t rows, int64_t cols,
                                    const double *mean, const double *rstd, const double *weight,
                                    double *grad_x, double *grad_w, double *grad_b);
void lepton_masked_softmax_forward_f32(const float *scores, const uint8_t *keep, int64_t rows, int64_t t_q,
                                       int64_t t_k, int causal, float *y);
void lepton_masked_softmax_forward_f64(const double *scores, const uint8_t *keep, int64_t rows, int64_t t_q,
                                       int64_t t_k, int causal, double *y);
void lepton_masked_softmax_backward_f32(const float *grad_y, const float *y, int64_t rows, int64_t t_k,
                                        float *grad_s);
void lepton_masked_softmax_backward_f64(const double *grad_y, const double *y, int64_t rows, int64_t t_k,
                                        double *grad_s);

/* ---- gemm: C (m, n) = op(A) (m, k) · op(B) (k, n), plus C itself if accumulate -------------
 * Operands through strides (in elements, any sign; the arrays need not be contiguous):
 *   op(A)[i, p] = a[i*a_rs + p*a_cs],  op(B)[p, j] = b[p*b_rs + j*b_cs],  C[i, j] = c[i*ldc + j]
 * so op(A) = Aᵀ is the same call with the two strides swapped. accumulate 0 overwrites C
 * without reading it. Every product is computed (no zero is skipped), so NaN and inf propagate
 * as IEEE arithmetic says. c must not overlap a or b.
 * Three algorithms, the steps of docs/benchmarks.md "Our GEMM, step by step":
 *   naive    the triple loop of the definition;
 *   blocked  loops reordered (i, p, j) in cache blocks;
 *   packed   BLIS's loops: packed panels and a register-blocked micro-kernel, on up to `slots`
 *            threads, with workspace slots x lepton_gemm_workspace_size() values (one slot each);
 *            results do not depend on the number of threads.
 * relu: C = max(C, 0) once the sums are complete, as relu_forward (NaN stays NaN): the
 * dense layer's activation folded into its GEMM.
 */
void lepton_gemm_naive_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t a_rs, int64_t a_cs,
                           const float *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, float *c, int64_t ldc);
void lepton_gemm_naive_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t a_rs, int64_t a_cs,
                           const double *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, double *c, int64_t ldc);
void lepton_gemm_blocked_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t a_rs, int64_t a_cs,
                             const float *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, float *c, int64_t ldc);
void lepton_gemm_blocked_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t a_rs, int64_t a_cs,
                             const double *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, double *c, int64_t ldc);
void lepton_gemm_packed_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t a_rs, int64_t a_cs,
                            const float *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, float *c, int64_t ldc,
                            int64_t slots, float *workspace);
void lepton_gemm_packed_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t a_rs, int64_t a_cs,
                            const double *b, int64_t b_rs, int64_t b_cs, int accumulate, int relu, double *c, int64_t ldc,
                            int64_t slots, double *workspace);
/* dot: C (m, n) (+)= A (m, k) . B (n, k)^T for rows of A and B contiguous (lda, ldb apart): dot
 * products in vector registers, no packing (for a small C over a long depth). */
void lepton_gemm_dot_f32(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                         int accumulate, int relu, float *c, int64_t ldc, int64_t slots);
void lepton_gemm_dot_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                         int accumulate, int relu, double *c, int64_t ldc, int64_t slots);
/* Values of one workspace slot of gemm_packed (the same for both dtypes). */
int64_t lepton_gemm_workspace_size(void);
/* Rows of one block of packed op(A) (MC): with at most these, gemm_packed packs op(B) a panel at a time. */
int64_t lepton_gemm_block_rows(void);

/* cffi-cdef-end */

#endif /* LEPTON_KERNELS_H */
