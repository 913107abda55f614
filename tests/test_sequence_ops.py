"""The sequence-model ops (issue 13): embedding, layer_norm, gelu, masked_fill, tril/triu,
cat/stack/split/chunk and 4-D matmul. Each is compared with PyTorch in float64, forward and
every gradient, on every available backend, on odd shapes, an empty batch and NaN (which must
come out where PyTorch's does, never hidden); those tests skip without torch, the rest of the
file (worked examples by hand, argument errors) runs anyway. Gradient checks: lepton_nn/tour.py.
"""
import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import kernels

import torch_compare  # tests/torch_compare.py

BACKENDS = kernels.available_backends()


def assert_same(ours, theirs, what):
    torch_compare.assert_same(ours, theirs, what, tolerance=1e-12)


def compare_with_torch(backend, ours_fn, torch_fn, inputs, upstream_nan=True, seed=0):
    """torch_compare.compare_with_torch with a random upstream gradient (one NaN in it, if asked)."""
    def upstream(shape):
        g = np.random.default_rng(seed).standard_normal(shape)
        if upstream_nan and g.size:
            g.flat[g.size // 2] = np.nan
        return g
    torch_compare.compare_with_torch(backend, ours_fn, torch_fn, inputs, upstream, tolerance=1e-12)


def normal_with_nan(rng, shape, *specials):
    """Normal values, with `specials` (NaN, ±inf, ...) written at the first positions."""
    x = rng.standard_normal(shape)
    for i, value in enumerate(specials[:x.size]):
        x.flat[(i * 7) % x.size] = value
    return x


# --------------------------------------------------------------------------- embedding
EMBEDDING_CASES = [  # indices shape, V, D, padding_idx
    ((2, 5), 7, 3, None),
    ((2, 2, 3), 5, 4, -1),
    ((3,), 4, 1, 1),
    ((), 6, 3, None),
    ((0, 4), 5, 2, 0),  # an empty batch
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=str)
def test_embedding_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    shape, v, d, padding_idx = case
    rng = np.random.default_rng(1)
    indices = rng.integers(0, v, size=shape)
    if indices.size > 2:
        indices.flat[:3] = indices.flat[-1]  # repeated rows: their gradients must add up
    weight = normal_with_nan(rng, (v, d), np.nan)  # row 0 holds a NaN: it shows where row 0 is used
    compare_with_torch(backend, lambda w: F.embedding(indices, w, padding_idx=padding_idx),
                       lambda w: torch.nn.functional.embedding(torch.tensor(indices), w, padding_idx=padding_idx),
                       [weight])


def test_embedding_backward_sums_repeated_rows_and_skips_the_padding_row():
    weight = ln.tensor(np.zeros((4, 2)), requires_grad=True)
    y = F.embedding(np.array([[1, 1], [3, 1]]), weight)
    y.backward(np.ones((2, 2, 2)))
    np.testing.assert_array_equal(weight.grad, [[0, 0], [3, 3], [0, 0], [1, 1]])  # row 1 used three times
    weight.zero_grad()
    F.embedding(ln.tensor(np.array([1, 2, 1])), weight, padding_idx=1).backward(np.full((3, 2), np.nan))
    np.testing.assert_array_equal(weight.grad[[0, 1, 3]], 0)  # the padding row: no gradient, not even NaN
    assert np.isnan(weight.grad[2]).all()  # NaN is never hidden elsewhere


# --------------------------------------------------------------------------- layer norm
LAYER_NORM_CASES = [  # x shape, normalized_shape, affine ("both", "weight", "none"), eps
    ((2, 5, 7), (7,), "both", 1e-5),
    ((3, 4, 5), (4, 5), "both", 1e-5),
    ((4, 3), (3,), "weight", 1e-3),
    ((2, 3), (2, 3), "none", 0.1),
    ((5, 1), (1,), "both", 1e-5),  # one element per row: x̂ = 0, y = β
    ((0, 6), (6,), "both", 1e-5),  # an empty batch
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LAYER_NORM_CASES, ids=str)
def test_layer_norm_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    shape, normalized_shape, affine, eps = case
    rng = np.random.default_rng(2)
    x = 3 + 2 * normal_with_nan(rng, shape, np.nan)  # a NaN makes its whole row NaN, as in PyTorch
    params = {"both": 2, "weight": 1, "none": 0}[affine]
    inputs = [x] + [rng.standard_normal(normalized_shape) for _ in range(params)]
    compare_with_torch(backend, lambda x, *p: F.layer_norm(x, normalized_shape, *p, eps=eps),
                       lambda x, *p: torch.nn.functional.layer_norm(x, normalized_shape, *p, eps=eps), inputs)


def test_layer_norm_by_hand_and_in_float32():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])  # μ = 2.5, σ² = 1.25 (biased: divided by 4, not 3)
    y = F.layer_norm(x, 4, eps=1e-5)
    np.testing.assert_allclose(y.data, (x - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-15)
    x32 = ln.tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    y32 = F.layer_norm(x32, (5,), np.ones(5, np.float32), np.zeros(5, np.float32))
    y32.backward(np.ones((3, 5), np.float32))
    assert y32.dtype == np.float32 and x32.grad.dtype == np.float32


def test_layer_norm_is_stable_far_from_zero():
    """σ² from the squared deviations, not E[x²] − μ²: with μ = 10⁸ and σ ≈ 1 the latter loses
    every digit in float64."""
    x = 1e8 + np.array([[-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(F.layer_norm(x, 3, eps=1e-12).data, [[-math.sqrt(1.5), 0, math.sqrt(1.5)]],
                               rtol=1e-9)


# --------------------------------------------------------------------------- GELU
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # ±inf·0 = NaN, meant here
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), (0, 4)], ids=str)
def test_gelu_matches_pytorch(backend, approximate, shape):
    torch = pytest.importorskip("torch")
    x = 3 * normal_with_nan(np.random.default_rng(3), shape, np.nan, np.inf, -np.inf, 0.0, 30.0, -30.0)
    compare_with_torch(backend, lambda t: F.gelu(t, approximate=approximate),
                       lambda t: torch.nn.functional.gelu(t, approximate=approximate), [x])


def test_gelu_by_hand():
    x = ln.tensor(np.array([0.0, 1.0, -1.0]), requires_grad=True)
    y = F.gelu(x)
    phi_1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # Φ(1)
    np.testing.assert_allclose(y.data, [0.0, phi_1, -(1 - phi_1)], rtol=1e-15)
    y.backward(np.ones(3))
    density_1 = math.exp(-0.5) / math.sqrt(2 * math.pi)  # φ(1)
    np.testing.assert_allclose(x.grad, [0.5, phi_1 + density_1, 1 - phi_1 - density_1], rtol=1e-15)
    u = math.sqrt(2 / math.pi) * (1 + 0.044715)
    np.testing.assert_allclose(F.gelu(np.array([1.0]), approximate="tanh").data, [0.5 * (1 + math.tanh(u))],
                               rtol=1e-15)
    assert F.gelu(np.ones(3, np.float32)).dtype == np.float32


# --------------------------------------------------------------------------- masks
MASK = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 1]], dtype=bool)
MASKED_FILL_CASES = [  # x shape, mask, value
    ((2, 3, 5), MASK, -np.inf),
    ((2, 3, 5), MASK[1:2], 2.5),
    ((4,), MASK[:, :4], 2.0),  # x broadcast up to the mask's shape; its gradient summed back
    ((0, 5), MASK[0], -1.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MASKED_FILL_CASES, ids=lambda c: f"x{c[0]} mask{c[1].shape} {c[2]}")
def test_masked_fill_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    shape, mask, value = case
    x = normal_with_nan(np.random.default_rng(4), shape, np.nan, np.nan)  # at a filled and a kept position
    compare_with_torch(backend, lambda t: F.masked_fill(t, mask, value),
                       lambda t: torch.masked_fill(t, torch.tensor(mask), value), [x])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["tril", "triu"])
@pytest.mark.parametrize("diagonal", [-1, 0, 2])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (5, 2), (0, 3, 3)], ids=str)
def test_tril_and_triu_match_pytorch(backend, which, diagonal, shape):
    torch = pytest.importorskip("torch")
    x = normal_with_nan(np.random.default_rng(5), shape, np.nan, np.nan)
    compare_with_torch(backend, lambda t: getattr(F, which)(t, diagonal),
                       lambda t: getattr(torch, which)(t, diagonal), [x])
    ones = np.ones(shape, bool)
    np.testing.assert_array_equal(getattr(F, which)(ones, diagonal).data,
                                  getattr(torch, which)(torch.tensor(ones), diagonal).numpy())


def test_triu_makes_the_causal_mask():
    mask = F.triu(np.ones((3, 3), bool), 1)  # True where key j > query i: the future
    np.testing.assert_array_equal(mask.data, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    weights = F.softmax(F.masked_fill(np.zeros((3, 3)), mask, -np.inf))
    np.testing.assert_allclose(weights.data, [[1, 0, 0], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]])


# --------------------------------------------------------------------------- cat, stack, split, chunk
CAT_CASES = [  # shapes, axis
    ([(2, 1, 4), (2, 3, 4), (2, 2, 4)], 1),
    ([(3, 2), (3, 5)], -1),
    ([(2, 3), (0, 3), (1, 3)], 0),  # an empty piece
    ([(0, 3), (0, 3)], 1),
    ([(5,)], 0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CAT_CASES, ids=str)
def test_cat_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    shapes, axis = case
    rng = np.random.default_rng(6)
    inputs = [normal_with_nan(rng, s, np.nan) for s in shapes]
    compare_with_torch(backend, lambda *ts: F.cat(list(ts), axis=axis), lambda *ts: torch.cat(ts, dim=axis), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [((3, 4), 3, -1), ((2, 3), 2, 0), ((0, 2), 2, 1), ((), 3, 0)], ids=str)
def test_stack_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    shape, count, axis = case
    rng = np.random.default_rng(7)
    inputs = [normal_with_nan(rng, shape, np.nan) for _ in range(count)]
    compare_with_torch(backend, lambda *ts: F.stack(list(ts), axis=axis), lambda *ts: torch.stack(ts, dim=axis),
                       inputs)


SPLIT_CASES = [  # function, x shape, size / sections / chunks, axis
    ("split", (5, 3), 2, 0),
    ("split", (2, 4), [1, 0, 3], -1),
    ("split", (0, 3), 2, 0),
    ("chunk", (7, 2), 3, 0),
    ("chunk", (2, 6), 4, 1),
    ("chunk", (0, 2), 3, 0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SPLIT_CASES, ids=str)
def test_split_and_chunk_match_pytorch(backend, case):
    """Every piece's values, and the gradient of x through a weighted sum of all pieces."""
    torch = pytest.importorskip("torch")
    name, shape, arg, axis = case
    rng = np.random.default_rng(8)
    x = normal_with_nan(rng, shape, np.nan)
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs = getattr(torch, name)(theirs_x, arg, axis)
    weights = [rng.standard_normal(tuple(p.shape)) for p in theirs]
    sum(((p * torch.tensor(w)).sum() for p, w in zip(theirs, weights)), torch.zeros((), dtype=torch.float64)).backward()
    ours_x = ln.tensor(x, requires_grad=True)
    with kernels.backend(backend):
        ours = getattr(F, name)(ours_x, arg, axis)
        assert len(ours) == len(theirs)
        sum((p * w).sum() for p, w in zip(ours, weights)).backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_same(a.data, b, f"piece {i}")
    assert_same(ours_x.grad if ours_x.grad is not None else np.zeros_like(x), theirs_x.grad, "gradient of x")


def test_split_and_chunk_sizes_follow_pytorch():
    x = np.arange(6.0)
    assert [p.shape[0] for p in F.split(np.arange(5.0), 2)] == [2, 2, 1]
    assert [p.shape[0] for p in F.chunk(x, 4)] == [2, 2, 2]  # ⌈6/4⌉ = 2: three pieces fill the axis
    assert [p.shape for p in F.chunk(np.zeros((0, 2)), 3)] == [(0, 2)] * 3
    np.testing.assert_array_equal(F.cat(F.split(x, [1, 2, 3])).data, x)


# --------------------------------------------------------------------------- batched matmul
MATMUL_CASES = [
    ((2, 3, 4, 5), (2, 3, 5, 6)),
    ((2, 1, 4, 5), (3, 5, 2)),  # leading axes broadcast: the gradient is summed back over them
    ((1, 3, 4, 5), (2, 1, 5, 1)),
    ((0, 3, 4, 5), (3, 5, 2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shapes", MATMUL_CASES, ids=str)
def test_4d_matmul_matches_pytorch(backend, shapes):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    a, b = (normal_with_nan(rng, s, np.nan) for s in shapes)
    compare_with_torch(backend, lambda x, y: x @ y, lambda x, y: x @ y, [a, b])


# --------------------------------------------------------------------------- bad arguments
W = np.zeros((5, 3))
X = np.zeros((2, 3, 4))
BAD_ARGUMENTS = [
    (lambda: F.embedding(np.array([0, 5]), W), r"embedding: indices must lie in \[0, 5\), got values from 0 to 5"),
    (lambda: F.embedding(np.array([[-1, 2]]), W), r"embedding: indices must lie in \[0, 5\)"),
    (lambda: F.embedding(np.array([0.0, 1.0]), W), "embedding: indices must be integers, got dtype float64"),
    (lambda: F.embedding(np.array([True]), W), "embedding: indices must be integers, got dtype bool"),
    (lambda: F.embedding(np.array([0]), W, padding_idx=5), r"embedding: padding_idx must be an int in \[-5, 5\)"),
    (lambda: F.embedding(np.array([0]), np.zeros(5)), "embedding: weight must be 2-D"),
    (lambda: F.layer_norm(X, (3,)), r"layer_norm: normalized_shape \(3,\) must equal the input's trailing "
                                    r"dimensions, got input shape \(2, 3, 4\)"),
    (lambda: F.layer_norm(X, (1, 2, 3, 4)), "must equal the input's trailing dimensions"),
    (lambda: F.layer_norm(X, ()), "layer_norm: normalized_shape must be an int or a non-empty tuple"),
    (lambda: F.layer_norm(X, (3, 0)), "layer_norm: every dimension of normalized_shape"),
    (lambda: F.layer_norm(X, 4, np.ones(3)), r"layer_norm: weight must have shape \(4,\) and dtype float64"),
    (lambda: F.layer_norm(X, 4, None, np.ones(4, np.float32)), r"layer_norm: bias must have shape \(4,\)"),
    (lambda: F.layer_norm(X, 4, eps=0), "layer_norm: eps must be a finite number > 0, got 0"),
    (lambda: F.layer_norm(X, 4, eps=-1e-5), "layer_norm: eps must be a finite number > 0"),
    (lambda: F.layer_norm(X, 4, eps=float("nan")), "layer_norm: eps must be a finite number, got nan"),
    (lambda: F.layer_norm(X, 4, eps=float("inf")), "layer_norm: eps must be a finite number, got inf"),
    (lambda: F.gelu(X, approximate="exact"), "gelu: approximate must be 'none' or 'tanh', got 'exact'"),
    (lambda: F.gelu(X, approximate=None), "gelu: approximate must be 'none' or 'tanh', got None"),
    (lambda: F.gelu(X.astype(np.float16)), "gelu: input must be float32 or float64"),
    (lambda: F.masked_fill(X, np.ones(4, int), 0.0), "masked_fill: mask must be boolean, got dtype int64"),
    (lambda: F.masked_fill(X, np.ones(3, bool), 0.0),
     r"masked_fill: shapes \(2, 3, 4\) and \(3,\) cannot be broadcast"),
    (lambda: F.masked_fill(X, np.ones(4, bool), "-inf"), "masked_fill: value must be a number"),
    (lambda: F.tril(np.zeros(3)), r"tril: input must be at least 2-D, got shape \(3,\)"),
    (lambda: F.triu(X, 1.5), "triu: diagonal must be an int, got 1.5"),
    (lambda: F.cat([]), "cat: expected a non-empty list or tuple of tensors"),
    (lambda: F.cat(np.zeros((2, 3))), "cat: expected a non-empty list or tuple of tensors, got ndarray"),
    (lambda: F.cat([X, np.zeros((2, 3, 5))], axis=1), r"cat: tensor 1 is \(2, 3, 5\) float64 but tensor 0 is"),
    (lambda: F.cat([X, X.astype(np.float32)]), "cat: tensor 1 is .* float32 but tensor 0 is .* float64"),
    (lambda: F.cat([X, X], axis=3), r"cat: axis must be an int in \[-3, 3\) for a 3-D input, got 3"),
    (lambda: F.stack([X, X[:1]]), r"stack: every tensor must have tensor 0's shape \(2, 3, 4\)"),
    (lambda: F.stack([X], axis=-5), r"stack: axis must be an int in \[-4, 4\)"),
    (lambda: F.split(X, [1, 2]), r"split: split_size_or_sections must be .* adding up to the axis length 2"),
    (lambda: F.split(X, 0), "split: split size must be a positive int"),
    (lambda: F.split(X, 1.5), "split: split_size_or_sections must be an int or a list"),
    (lambda: F.chunk(X, 0), "chunk: chunks must be a positive int, got 0"),
    (lambda: F.chunk(X, 2, axis=-4), r"chunk: axis must be an int in \[-3, 3\)"),
]


@pytest.mark.parametrize("call, message", BAD_ARGUMENTS, ids=[m[:40] for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_with_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
