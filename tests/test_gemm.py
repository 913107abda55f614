"""Our GEMMs (the c and numba backends' gemm: naive, blocked, packed) against NumPy's @, the
specification.

C = op(A)·op(B) (+ c) is checked in float32 and float64 on shapes that reach every edge of the
packed GEMM's blocking (a partial MR×NR tile, several KC passes over the depth, more than one
MC block of rows and NC block of columns), with either operand transposed and with operands
that are strided views, read in place.

Tolerance. A dot product of K terms computed in another order differs by at most about
K·u·Σ|a_ip·b_pj| (u: unit roundoff, 6e-8 in float32, 1e-16 in float64), and by ~√K·u·Σ|…| in
practice; so each element is compared relative to its own Σ_p |op(A)[i, p]|·|op(B)[p, j]| (the
"K-scaled magnitude"), with 1e-5 for float32 and 1e-12 for float64. An indexing mistake is an
error of order 1 of that scale.
"""
import numpy as np
import pytest

from lepton_nn import kernels
from lepton_nn.kernels import reference

# the backends with a GEMM of their own, each skipped where it cannot load
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(name not in kernels.available_backends(),
                                                        reason=f"backend {name} unavailable"))
            for name in ("c", "numba")]
ALGORITHMS = ("naive", "blocked", "packed")
DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

# (M, K, N): trivial; odd; a partial micro-tile in every direction; empty ones; K over several KC
# passes (KC = 256 in C, 1024 in numba); M over two MC blocks (MC = 128 in C, 64 in numba); N over
# two NC blocks (NC = 2048 in C, 64 in numba); K on both sides of numba's SHORT_DEPTH (256); few
# rows over more than NC columns (C packs op(B) a panel at a time when M ≤ MC).
SHAPES = [(1, 1, 1), (7, 13, 5), (65, 129, 33), (0, 4, 3), (3, 4, 0), (0, 0, 0), (17, 600, 40),
          (131, 9, 19), (3, 5, 2100), (140, 300, 70), (5, 300, 150), (9, 2100, 7), (6, 40, 2300)]


def gemm_of(backend):
    return kernels.get(backend).module.gemm  # the module's own, whether or not the engine runs it


def op(x, trans):
    return x.T if trans else x


def operands(rng, m, k, n, dtype, trans_a=False, trans_b=False):
    """a and b, stored so that op(a) is (m, k) and op(b) is (k, n)."""
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def assert_gemm_close(got, a, b, trans_a=False, trans_b=False, c=None):
    """got equals NumPy's op(a) @ op(b) (+ c), in a's dtype, within RTOL of the K-scaled magnitude."""
    a_op, b_op = op(a, trans_a), op(b, trans_b)
    want = a_op @ b_op if c is None else a_op @ b_op + c
    assert isinstance(got, np.ndarray) and got.dtype == a.dtype and got.shape == want.shape
    magnitude = np.abs(a_op).astype(np.float64) @ np.abs(b_op).astype(np.float64)
    if c is not None:
        magnitude = magnitude + np.abs(c)
    error = np.abs(got.astype(np.float64) - want)
    bound = RTOL[a.dtype] * magnitude + np.finfo(a.dtype).tiny
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert np.all(error <= bound), f"worst at {worst}: got {got[worst]}, want {want[worst]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m, k, n", SHAPES, ids=lambda s: str(s))
def test_gemm_matches_numpy(backend, algorithm, dtype, m, k, n):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    a, b = operands(rng, m, k, n, dtype)
    got = gemm_of(backend)(a, b, algorithm=algorithm)
    assert_gemm_close(got, a, b)
    if k == 0:  # an empty sum, written as such (the output buffer is not zeroed beforehand)
        np.testing.assert_array_equal(got, np.zeros((m, n), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trans_a, trans_b", [(False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m, k, n", [(65, 129, 33), (17, 600, 40)], ids=lambda s: str(s))
def test_transposed_operands(backend, algorithm, dtype, trans_a, trans_b, m, k, n):
    rng = np.random.default_rng(3)
    a, b = operands(rng, m, k, n, dtype, trans_a, trans_b)
    assert_gemm_close(gemm_of(backend)(a, b, trans_a, trans_b, algorithm=algorithm), a, b, trans_a, trans_b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_dense_layers_three_products(backend, algorithm):
    """y = x·Wᵀ, ∂x = g·W and ∂W = gᵀ·x, at the MNIST dense layer's shapes with batch 5."""
    rng = np.random.default_rng(4)
    x, w, g = (rng.standard_normal(s).astype(np.float32) for s in ((5, 5408), (128, 5408), (5, 128)))
    assert_gemm_close(gemm_of(backend)(x, w, trans_b=True, algorithm=algorithm), x, w, trans_b=True)
    assert_gemm_close(gemm_of(backend)(g, w, algorithm=algorithm), g, w)
    assert_gemm_close(gemm_of(backend)(g, x, trans_a=True, algorithm=algorithm), g, x, trans_a=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_views_are_read_in_place(backend, algorithm, dtype):
    """Slices with steps, a reversed axis, a column of a Fortran-ordered array and a broadcast
    (zero-stride) operand: read through their strides, and equal to NumPy's result."""
    rng = np.random.default_rng(5)
    big_a = rng.standard_normal((40, 90)).astype(dtype)
    big_b = rng.standard_normal((70, 60)).astype(dtype)
    a = big_a[1::2, ::3]                 # (20, 30), both strides > 1
    b = big_b[::-2, 5:55][:30]           # (30, 50), negative row stride
    assert_gemm_close(gemm_of(backend)(a, b, algorithm=algorithm), a, b)
    a_t, b_t = big_a.T[::3, 1::2], big_b.T[:50, ::-2][:, :30]  # the same kind of views, transposed
    assert_gemm_close(gemm_of(backend)(a_t, b_t, True, True, algorithm=algorithm), a_t, b_t, True, True)
    fortran = np.asfortranarray(rng.standard_normal((30, 25)).astype(dtype))
    assert_gemm_close(gemm_of(backend)(a, fortran, algorithm=algorithm), a, fortran)
    row = np.broadcast_to(rng.standard_normal(30).astype(dtype), (20, 30))  # strides (0, itemsize)
    assert_gemm_close(gemm_of(backend)(row, b, algorithm=algorithm), row, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_misaligned_byte_view_is_copied_not_misread(backend):
    raw = np.zeros(4 * 6 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(4, 6)  # aligned to 1 byte
    raw[...] = np.arange(24, dtype=np.float32).reshape(4, 6)
    b = np.ones((6, 3), np.float32)
    np.testing.assert_array_equal(gemm_of(backend)(raw, b), raw @ b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_addend_c_is_added_and_never_changed(backend, algorithm, dtype):
    rng = np.random.default_rng(6)
    a, b = operands(rng, 9, 300, 37, dtype)
    bias = rng.standard_normal(37).astype(dtype)
    assert_gemm_close(gemm_of(backend)(a, b, c=bias, algorithm=algorithm), a, b, c=bias)  # broadcast (N,)
    full = rng.standard_normal((9, 37)).astype(dtype)
    kept = full.copy()
    assert_gemm_close(gemm_of(backend)(a, b, c=full, algorithm=algorithm), a, b, c=full)
    np.testing.assert_array_equal(full, kept)
    empty_a, empty_b = np.zeros((9, 0), dtype), np.zeros((0, 37), dtype)
    np.testing.assert_array_equal(gemm_of(backend)(empty_a, empty_b, c=full, algorithm=algorithm), full)
    with pytest.raises(ValueError, match=rf"gemm \({backend}\): c of shape \(36,\) does not broadcast to .* \(9, 37\)"):
        gemm_of(backend)(a, b, c=bias[:36], algorithm=algorithm)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # NumPy's 0·inf
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_propagate_as_numpy(backend, algorithm, dtype):
    """Every product is computed: a NaN in row i of A makes row i of C NaN, an inf times 0 is NaN,
    an inf times numbers is ±inf; NumPy's @ (OpenBLAS) gives the same, element by element."""
    rng = np.random.default_rng(7)
    a, b = operands(rng, 19, 300, 40, dtype)
    a[2, 7] = np.nan
    b[:, 5] = 0  # column 5 of B is zero except an inf: row r of C gets a[r, 280]·inf
    b[280, 5] = np.inf
    a[4, 280] = 0  # … which is 0·inf = NaN in row 4
    b[11, 33] = -np.inf
    got, want = gemm_of(backend)(a, b, algorithm=algorithm), a @ b
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    assert np.isnan(got[2]).all() and np.isnan(got[4, 5]) and np.isinf(got[:, 5]).sum() == 17
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_packed_gemm_gives_the_same_bits_on_any_number_of_threads(backend):
    """Each thread owns a band of C and every sum runs in the same order: no thread-count drift."""
    rng = np.random.default_rng(8)
    # split by columns, then by rows, then along the depth (a small C, a long depth)
    for (m, k, n) in [(70, 300, 530), (530, 300, 70), (30, 1300, 50)]:
        a, b = operands(rng, m, k, n, np.float32)
        one = gemm_of(backend)(a, b, threads=1)
        for threads in (2, 3):
            np.testing.assert_array_equal(gemm_of(backend)(a, b, threads=threads), one)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_algorithm_sums_in_float64_to_the_exact_product_of_small_integers(backend):
    """Integer-valued operands: every partial sum is exact, so all three are bit-identical to @."""
    rng = np.random.default_rng(9)
    a = rng.integers(-8, 9, (33, 70)).astype(np.float64)
    b = rng.integers(-8, 9, (70, 45)).astype(np.float64)
    for algorithm in ALGORITHMS:
        np.testing.assert_array_equal(gemm_of(backend)(a, b, algorithm=algorithm), a @ b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_arguments_are_checked(backend):
    a32, b32 = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match=rf"gemm \({backend}\): a and b must both be float32 or both float64, got float32 an"):
        gemm_of(backend)(a32, b32.astype(np.float64))
    with pytest.raises(TypeError, match="got int64 and int64"):
        gemm_of(backend)(np.ones((3, 4), np.int64), np.ones((4, 5), np.int64))
    with pytest.raises(ValueError, match=r"op\(a\) is 3×4 and op\(b\) is 5×4: op\(b\) needs 4 rows"):
        gemm_of(backend)(a32, b32, trans_b=True)
    with pytest.raises(ValueError, match=r"b must be a matrix \(2-D\), got shape \(4,\)"):
        gemm_of(backend)(a32, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="algorithm must be one of naive, blocked, packed, dot(, blas)? or None, got 'fast'"):
        gemm_of(backend)(a32, b32, algorithm="fast")
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        gemm_of(backend)(a32, b32, threads=0)


def test_the_reference_is_the_textbook_product():
    """reference.gemm on numbers small enough to check by hand, and its K = 0 and addend cases."""
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(reference.gemm(a, b), [[4.0, 5.0], [10.0, 11.0]])
    np.testing.assert_array_equal(reference.gemm(b, a, True, True), [[4.0, 10.0], [5.0, 11.0]])
    np.testing.assert_array_equal(reference.gemm(a, b, c=np.array([10.0, 20.0])), [[14.0, 25.0], [20.0, 31.0]])
    np.testing.assert_array_equal(reference.gemm(np.zeros((2, 0)), np.zeros((0, 3))), np.zeros((2, 3)))
    assert reference.gemm(a.astype(np.float32), b.astype(np.float32), c=np.ones(2)).dtype == np.float32


# --------------------------------------------------------------------------- the dot-product GEMM
# (M, K, N) for A (M, K) · B (N, K)ᵀ: the dense layer's forward; K not a multiple of the vector's
# lanes (a scalar tail); M and N not multiples of the tile (clamped rows and columns);
# fewer rows than a tile; empty ones; the automatic choice's threshold depth. (Tiles: 5 × 5 in C
# with AVX-512, 4 × 4 in numba.)
DOT_SHAPES = [(64, 5408, 128), (7, 2053, 11), (3, 37, 2), (1, 1, 1), (12, 2048, 6), (0, 9, 4), (4, 0, 3), (4, 9, 0)]


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m, k, n", DOT_SHAPES, ids=lambda s: str(s))
def test_dot_products_match_numpy(backend, dtype, m, k, n):
    """algorithm="dot": the same product as NumPy's @ (within the K-scaled tolerance), with an
    addend and with relu; the same bits on 1, 2 and 3 threads; NaN and inf reach their row and
    column of C as in NumPy; rows read through a row stride larger than the row (a slice)."""
    gemm = gemm_of(backend)
    rng = np.random.default_rng(m * 7 + k + n)
    a = rng.standard_normal((m, k + 3)).astype(dtype)[:, 2:k + 2]  # contiguous rows, row stride k + 3
    b = rng.standard_normal((n, k)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    got = gemm(a, b, trans_b=True, c=bias, algorithm="dot", threads=1)
    assert_gemm_close(got, a, b, trans_b=True, c=bias)
    for threads in (2, 3):
        np.testing.assert_array_equal(gemm(a, b, trans_b=True, c=bias, algorithm="dot", threads=threads), got)
    np.testing.assert_array_equal(gemm(a, b, trans_b=True, c=bias, relu=True, algorithm="dot"), np.where(got < 0, 0, got))
    if m > 2 and n > 2 and k > 3:
        a[1, k - 1], b[2, 0], a[2, 3], b[0, 3] = np.nan, np.inf, 0, -np.inf  # the tail; a lane; 0·(-inf)
        got, want = gemm(a, b, trans_b=True, algorithm="dot"), a @ b.T
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_dot_is_the_automatic_choice_only_where_it_applies(backend):
    """algorithm=None takes dot products for the dense layer's forward (a small C over a long
    depth, both operands contiguous along it), packed panels for ≤ 128 rows and ≥ 2048 columns,
    and in C NumPy's @ otherwise (reference.gemm_algorithm); "dot" by name on operands not
    contiguous along the depth is refused, naming the layout."""
    gemm = gemm_of(backend)
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((64, 5408)).astype(np.float32), rng.standard_normal((128, 5408)).astype(np.float32)
    auto = gemm(x, w, trans_b=True)
    np.testing.assert_array_equal(auto, gemm(x, w, trans_b=True, algorithm="dot"))
    assert not np.array_equal(auto, gemm(x, w, trans_b=True, algorithm="packed"))  # other sums, other bits
    g = rng.standard_normal((64, 128)).astype(np.float32)
    np.testing.assert_array_equal(gemm(g, w), gemm(g, w, algorithm="packed"))  # ∂x: 64 rows, 5408 columns
    if backend == "c":  # more rows than one block of packed op(A), or few columns: NumPy's @, as measured
        few = w[:10, :128].T.copy()
        np.testing.assert_array_equal(gemm(g, few), g @ few)
        many = rng.standard_normal((300, 40)).astype(np.float32)
        np.testing.assert_array_equal(gemm(many, w[:, :40], trans_b=True, c=w[0, :128], relu=True),
                                      reference.gemm(many, w[:, :40], trans_b=True, c=w[0, :128], relu=True))
        np.testing.assert_array_equal(gemm(many, w[:, :40], trans_b=True, algorithm="blas"), many @ w[:, :40].T)
    with pytest.raises(ValueError, match=rf"gemm \({backend}\): algorithm 'dot' needs op\(a\)'s rows .* got "
                                         r"(64 and 1|trans_a=True, trans_b=True)"):
        gemm(x.T.copy(), w, trans_a=True, trans_b=True, algorithm="dot")


def test_the_references_relu_is_relu_forward_on_the_product():
    a = np.array([[1.0, -2.0], [np.nan, 1.0], [-np.inf, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0]])
    with np.errstate(invalid="ignore"):  # -inf · 0
        got = reference.gemm(a, b, c=np.array([0.5, 1.0]), relu=True)
    np.testing.assert_array_equal(got, [[1.5, 0.0], [np.nan, np.nan], [0.0, np.nan]])
    np.testing.assert_array_equal(reference.gemm(np.zeros((2, 0)), np.zeros((0, 2)), c=np.array([-1.0, 2.0]),
                                                 relu=True), [[0.0, 2.0], [0.0, 2.0]])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m, k, n", [(7, 13, 5), (65, 129, 33), (3, 5, 2100), (140, 300, 70), (64, 600, 40),
                                     (4, 0, 3), (0, 3, 4)], ids=lambda s: str(s))
def test_relu_is_the_epilogue_of_the_same_sums(backend, algorithm, dtype, m, k, n):
    """gemm(..., relu=True) is max(·, 0) of gemm without it, bit for bit (the same sums, then
    relu_forward's select: NaN stays NaN, -inf becomes 0), with an addend, transposed operands,
    NaN and ±inf in op(A), on one and two threads (packed: every thread its own band)."""
    rng = np.random.default_rng(m * 31 + k * 7 + n)
    a, b = operands(rng, m, k, n, dtype, trans_a=True, trans_b=True)
    if m > 2 and k > 0:
        a[0, 1], a[1, 2] = np.nan, -np.inf  # op(A)[1, 0] and op(A)[2, 1]: a NaN row and a ±inf row of C
    c = rng.standard_normal(n).astype(dtype)
    gemm = gemm_of(backend)
    options = [{}] if algorithm != "packed" else [{"threads": 1}, {"threads": 2}]
    for extra in options:
        plain = gemm(a, b, True, True, c, algorithm=algorithm, **extra)
        got = gemm(a, b, True, True, c, relu=True, algorithm=algorithm, **extra)
        np.testing.assert_array_equal(got, np.where(plain < 0, 0, plain))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(reference.gemm(a, b, True, True, c, relu=True)))
    if m > 2 and k > 0:
        assert np.isnan(got[1]).all() and (got >= 0)[~np.isnan(got)].all() and (got == 0).any()


@pytest.mark.parametrize("backend", ["c", "numba", "numpy"])
def test_dense_layer_with_folded_relu_equals_linear_then_relu(backend):
    """functional.linear_relu (the ReLU in the GEMM's epilogue, its backward in the layer's) gives
    what F.linear then F.relu give, forward and every gradient, in float64, on each backend."""
    import lepton_nn as ln
    from lepton_nn import functional as F
    if backend not in kernels.available_backends():
        pytest.skip(f"backend {backend} unavailable")
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 9, 13)), rng.standard_normal((6, 13)), rng.standard_normal(6)
    g = rng.standard_normal((2, 9, 6))
    results = []
    with ln.backend(backend):
        for fused in (True, False):
            tx, tw, tb = (ln.tensor(v, requires_grad=True) for v in (x, w, b))
            y = F.linear_relu(tx, tw, tb) if fused else F.relu(F.linear(tx, tw, tb))
            y.backward(g)
            results.append((y.data, tx.grad, tw.grad, tb.grad))
    assert (results[0][0] == 0).mean() > 0.3  # the ReLU is switched off for a good share of units
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reference_kernels_from_the_environment(monkeypatch):
    """LEPTON_NN_REFERENCE_KERNELS=gemm runs the dense layer's products by the reference on a fast
    backend (to measure what our GEMM buys in a step); an unknown name is refused, naming it."""
    import types
    module = types.SimpleNamespace(relu_forward=lambda x: x + 1, gemm=lambda *a, **k: None)
    monkeypatch.setenv("LEPTON_NN_REFERENCE_KERNELS", "gemm")
    backend = kernels.Backend("fake", module)
    assert backend.native == ("relu_forward",) and backend.gemm is reference.gemm
    monkeypatch.setenv("LEPTON_NN_REFERENCE_KERNELS", "gemm, gem")
    with pytest.raises(ValueError, match="LEPTON_NN_REFERENCE_KERNELS: unknown kernel\\(s\\) 'gem'"):
        kernels.Backend("fake", module)


def test_a_kernel_not_used_yet_is_served_by_the_reference():
    """A backend module's NOT_USED_YET keeps a kernel it has out of the engine (the c backend's
    gemm, slower than OpenBLAS in a training step): the engine calls the reference's instead."""
    import types
    module = types.SimpleNamespace(relu_forward=lambda x: x + 1, gemm=lambda *a, **k: None,
                                   NOT_USED_YET=("gemm",))
    backend = kernels.Backend("fake", module)
    assert backend.native == ("relu_forward",) and "gemm" in backend.fallback
    assert backend.gemm is reference.gemm and backend.relu_forward is module.relu_forward


@pytest.mark.parametrize("backend", BACKENDS)
def test_gemm_matches_pytorch_in_float64(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    a, b = operands(rng, 65, 129, 33, np.float64, trans_a=True)
    want = torch.matmul(torch.from_numpy(a).T, torch.from_numpy(b)).numpy()
    for algorithm in ALGORITHMS:
        np.testing.assert_allclose(gemm_of(backend)(a, b, trans_a=True, algorithm=algorithm), want,
                                   rtol=1e-12, atol=1e-12 * np.abs(want).max())



@pytest.mark.parametrize("backend", BACKENDS)
def test_use_all_kernels_puts_our_gemm_into_the_dense_layer(backend, monkeypatch):
    """LEPTON_NN_USE_ALL_KERNELS=1, for measuring a step on our GEMM: the dense layer's forward
    and both gradients then run the backend's own gemm, and equal NumPy's."""
    from lepton_nn import ops
    module = kernels.get(backend).module
    monkeypatch.setenv("LEPTON_NN_USE_ALL_KERNELS", "1")
    engine = kernels.Backend(backend, module)
    assert "gemm" in engine.native and engine.gemm is module.gemm
    monkeypatch.setattr(kernels, "active", lambda: engine)
    rng = np.random.default_rng(11)
    x, w, b, g = (rng.standard_normal(s) for s in ((2, 5, 7), (3, 7), (3,), (2, 5, 3)))
    ctx = ops.Context((True, True, True))
    np.testing.assert_allclose(ops.Linear.forward(ctx, x, w, b), x @ w.T + b, rtol=1e-12, atol=1e-12)
    grad_x, grad_w, grad_b = ops.Linear.backward(ctx, g)
    rows_g, rows_x = g.reshape(-1, 3), x.reshape(-1, 7)
    np.testing.assert_allclose(grad_x, (rows_g @ w).reshape(x.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_w, rows_g.T @ rows_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_b, rows_g.sum(axis=0), rtol=1e-12, atol=1e-12)
