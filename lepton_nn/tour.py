"""The gradient-check tour: every op at several shapes, checked by lepton_nn.gradcheck.

`lepton-nn gradcheck [--op NAME] [--backend NAME|all]` prints one row per case and input.
The same cases are the parametrization of tests/test_gradcheck.py.

Most inputs are drawn away from kinks: ReLU inputs keep |x| ≥ 0.1, max-pool and max inputs
are distinct values at least 0.01 apart (so no ±ε step changes a winner), log/sqrt/div inputs
are positive. The cases labelled "kinks" put inputs exactly on them (zeros for ReLU, tied
maxima for pooling and max), where the checker tests that the gradient is a valid subgradient.
"""
from dataclasses import dataclass

import numpy as np

from lepton_nn import functional as F


@dataclass
class Case:
    op: str          # the op family, for --op
    label: str       # the configuration, e.g. "b1 c3 7x9 k3 s2 p1"
    fn: callable
    make_inputs: callable  # rng -> list of inputs
    smooth: bool = True    # smooth ops must reach relative error ≤ 1e-6


def _normal(rng, *shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, *shape):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


def _positive(rng, *shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _distinct(rng, *shape):
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0


def _with_zeros(rng, *shape):
    """Normal values with every third one exactly 0: ReLU's kink."""
    x = rng.standard_normal(shape)
    x.reshape(-1)[::3] = 0.0
    return x


def _ties(rng, *shape):
    """Values from {−1, 0, 1}: most pooling windows hold two or more equal maxima."""
    return rng.integers(-1, 2, size=shape).astype(np.float64)


def _conv_case(batch, c_in, c_out, h, w, k, stride, padding):
    return Case("conv2d", f"b{batch} {c_in}->{c_out} {h}x{w} k{k} s{stride} p{padding}",
                lambda x, wt, b: F.conv2d(x, wt, b, stride=stride, padding=padding),
                lambda r: [_normal(r, batch, c_in, h, w), _normal(r, c_out, c_in, k, k), _normal(r, c_out)])


def _pool_case(op, batch, c, h, w, k, stride, padding, draw=_distinct, **options):
    fn = getattr(F, op)
    extra = "".join(f" {key}={value}" for key, value in options.items()) + (" kinks" if draw is _ties else "")
    return Case(op, f"b{batch} c{c} {h}x{w} k{k} s{stride} p{padding}{extra}",
                lambda x: fn(x, k, stride, padding, **options),
                lambda r: [draw(r, batch, c, h, w)], smooth=op != "max_pool2d")


def _ce_probability_targets(r):
    t = r.uniform(size=(5, 4))
    return [_normal(r, 5, 4), t / t.sum(axis=1, keepdims=True)]


def _dropout(x):
    from lepton_nn import rng
    rng.seed(1)  # the same mask on every call, as the checker calls fn many times
    return F.dropout(x, p=0.3, training=True)


# Sequence models. Token ids with repeats, so the embedding's scatter-add must sum rows; a mask
# for masked_fill (True = filled). No padding_idx case: that row's gradient is 0 by decree, not
# the derivative (tests/test_sequence_ops.py checks it against PyTorch).
_TOKENS = np.array([[0, 3, 3, 6, 1], [3, 0, 5, 5, 5]])
_TOKENS_3D = np.array([[[2, 0, 4], [1, 2, 2]], [[4, 4, 3], [0, 2, 1]]])
_MASK_3x5 = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 1]], dtype=bool)
# Batch norm's eval mode: running mean and variance per channel (constants; training mode, which
# would update them, gets none, as the checker calls fn many times).
_RUNNING_STATS = (np.array([0.5, -1.0, 2.0]), np.array([0.5, 2.0, 1.5]))


def _batch_norm_inputs(shape, params, mean=0.0):
    """rng -> [x, then `params` of γ, β (C,)], x drawn after them. The checker's upstream gradient
    is seed 0's first normal draw, so an x drawn first would be the upstream itself; and batch norm
    turns an upstream that is affine in x, channel by channel, into a gradient ≈ 0 (docs/equations.md,
    "Batch normalisation"), which checks nothing."""
    def make(r):
        per_channel = [_normal(r, shape[1]) for _ in range(params)]
        return [mean + 2 * _normal(r, *shape)] + per_channel
    return make


def _weighted_pieces(a):
    """Σ_i (i + 1)·(piece i summed over the last axis), pieces of split(a, 2, axis=-1): every
    piece reaches the output with its own weight, so a gradient routed to the wrong piece shows."""
    return sum((i + 1) * piece.sum(axis=-1) for i, piece in enumerate(F.split(a, 2, axis=-1)))


# True = the key takes part; query 1 sees no key at all (its output is 0, its gradients 0).
_ATTENTION_MASK = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=bool)


def _attention_case(q_shape, s, ev, **options):
    *batch, l, e = q_shape
    label = f"b{'x'.join(map(str, batch))} L{l} S{s} E{e} Ev{ev}" + "".join(
        " bool mask" if k == "attn_mask" else " causal" if k == "is_causal" else f" {k} {v}"
        for k, v in options.items())
    return Case("scaled_dot_product_attention", label,
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **options),
                lambda r: [_normal(r, *batch, l, e), _normal(r, *batch, s, e), _normal(r, *batch, s, ev)])


CASES = [
    Case("add", "(3,4) + (4,) broadcast", lambda a, b: a + b, lambda r: [_normal(r, 3, 4), _normal(r, 4)]),
    Case("sub", "(2,3,1) - (3,4) broadcast", lambda a, b: a - b, lambda r: [_normal(r, 2, 3, 1), _normal(r, 3, 4)]),
    Case("mul", "(2,3,4) * (3,1) broadcast", lambda a, b: a * b, lambda r: [_normal(r, 2, 3, 4), _normal(r, 3, 1)]),
    Case("div", "(3,4) / (3,4)", lambda a, b: a / b, lambda r: [_normal(r, 3, 4), _positive(r, 3, 4)]),
    Case("neg", "(5,)", lambda a: -a, lambda r: [_normal(r, 5)]),
    Case("pow", "x^3 (2,3)", lambda a: a ** 3, lambda r: [_normal(r, 2, 3)]),
    Case("pow", "x^-1.5 (2,3)", lambda a: a ** -1.5, lambda r: [_positive(r, 2, 3)]),
    Case("exp", "(3,4)", lambda a: a.exp(), lambda r: [_normal(r, 3, 4)]),
    Case("log", "(3,4)", lambda a: a.log(), lambda r: [_positive(r, 3, 4)]),
    Case("sqrt", "(3,4)", lambda a: a.sqrt(), lambda r: [_positive(r, 3, 4)]),
    Case("matmul", "(3,4) @ (4,5)", lambda a, b: a @ b, lambda r: [_normal(r, 3, 4), _normal(r, 4, 5)]),
    Case("matmul", "(2,3,4) @ (4,5) batched", lambda a, b: a @ b, lambda r: [_normal(r, 2, 3, 4), _normal(r, 4, 5)]),
    Case("matmul", "(4,) @ (4,3) vector", lambda a, b: a @ b, lambda r: [_normal(r, 4), _normal(r, 4, 3)]),
    Case("sum", "axis=None", lambda a: a.sum(), lambda r: [_normal(r, 3, 4)]),
    Case("sum", "axis=1 keepdims", lambda a: a.sum(axis=1, keepdims=True), lambda r: [_normal(r, 2, 3, 4)]),
    Case("mean", "axis=(0,2)", lambda a: a.mean(axis=(0, 2)), lambda r: [_normal(r, 2, 3, 4)]),
    Case("max", "axis=-1", lambda a: a.max(axis=-1), lambda r: [_distinct(r, 3, 5)], smooth=False),
    Case("max", "axis=None", lambda a: a.max(), lambda r: [_distinct(r, 3, 5)], smooth=False),
    Case("max", "axis=-1 kinks", lambda a: a.max(axis=-1), lambda r: [_ties(r, 4, 5)], smooth=False),
    Case("reshape", "(2,6) -> (3,4)", lambda a: a.reshape(3, 4), lambda r: [_normal(r, 2, 6)]),
    Case("permute", "(2,3,4) -> (2,0,1)", lambda a: a.permute(2, 0, 1), lambda r: [_normal(r, 2, 3, 4)]),
    Case("flatten", "(2,3,4,5) -> (2,60)", lambda a: a.flatten(), lambda r: [_normal(r, 2, 3, 4, 5)]),
    Case("getitem", "slice [1:, ::2]", lambda a: a[1:, ::2], lambda r: [_normal(r, 4, 5)]),
    Case("getitem", "repeated index [[0,2,0]]", lambda a: a[np.array([0, 2, 0])], lambda r: [_normal(r, 3, 4)]),
    Case("pad2d", "(1,2,3,0)", lambda a: F.pad2d(a, (1, 2, 3, 0)), lambda r: [_normal(r, 2, 1, 3, 4)]),
    Case("relu", "(4,6)", F.relu, lambda r: [_away_from_zero(r, 4, 6)], smooth=False),
    Case("relu", "(4,6) kinks", F.relu, lambda r: [_with_zeros(r, 4, 6)], smooth=False),
    Case("leaky_relu", "(4,6) slope 0.1 kinks", lambda a: F.leaky_relu(a, 0.1), lambda r: [_with_zeros(r, 4, 6)],
         smooth=False),
    Case("leaky_relu", "(4,6) slope 0.01", F.leaky_relu, lambda r: [_away_from_zero(r, 4, 6)], smooth=False),
    Case("leaky_relu", "(2,3,5) slope -0.5", lambda a: F.leaky_relu(a, -0.5), lambda r: [_away_from_zero(r, 2, 3, 5)],
         smooth=False),
    Case("sigmoid", "(4,6)", F.sigmoid, lambda r: [3 * _normal(r, 4, 6)]),
    Case("tanh", "(4,6)", F.tanh, lambda r: [2 * _normal(r, 4, 6)]),
    Case("softmax", "axis=-1", lambda a: F.softmax(a), lambda r: [_normal(r, 3, 5)]),
    Case("softmax", "axis=0", lambda a: F.softmax(a, axis=0), lambda r: [_normal(r, 3, 5)]),
    Case("log_softmax", "axis=-1", lambda a: F.log_softmax(a), lambda r: [_normal(r, 3, 5)]),
    _conv_case(1, 1, 2, 5, 5, 3, 1, 0),
    _conv_case(2, 3, 4, 7, 9, 3, 1, 1),
    _conv_case(2, 3, 2, 7, 8, 3, 2, 1),
    _conv_case(1, 2, 3, 6, 5, 5, 2, 2),
    _conv_case(3, 2, 3, 4, 5, 1, 1, 0),
    Case("conv2d_relu_max_pool2d", "b2 1->3 8x9 k3 pool 2", lambda x, w, b: F.conv2d_relu_max_pool2d(x, w, b),
         lambda r: [_normal(r, 2, 1, 8, 9), _normal(r, 3, 1, 3, 3), _normal(r, 3)], smooth=False),
    Case("conv2d_relu_max_pool2d", "b1 2->2 7x7 k3 s2 p1 pool 3/2",
         lambda x, w, b: F.conv2d_relu_max_pool2d(x, w, b, stride=2, padding=1, pool_size=3, pool_stride=2),
         lambda r: [_normal(r, 1, 2, 7, 7), _normal(r, 2, 2, 3, 3), _normal(r, 2)], smooth=False),
    _pool_case("max_pool2d", 1, 1, 4, 4, 2, 2, 0),
    _pool_case("max_pool2d", 2, 3, 7, 9, 2, 2, 0),
    _pool_case("max_pool2d", 2, 2, 7, 7, 3, 2, 1),
    _pool_case("max_pool2d", 1, 2, 5, 6, 3, 1, 0),
    _pool_case("max_pool2d", 2, 2, 6, 6, 2, 2, 0, draw=_ties),
    _pool_case("max_pool2d", 1, 2, 7, 7, 3, 2, 1, draw=_ties),
    _pool_case("avg_pool2d", 2, 3, 7, 9, 2, 2, 0),
    _pool_case("avg_pool2d", 1, 2, 7, 7, 3, 2, 1),
    _pool_case("avg_pool2d", 1, 2, 7, 7, 3, 2, 1, count_include_pad=False),
    Case("linear", "(5,7) -> 3", lambda x, w, b: F.linear(x, w, b),
         lambda r: [_normal(r, 5, 7), _normal(r, 3, 7), _normal(r, 3)]),
    Case("linear", "(2,4,7) -> 3, no bias", lambda x, w: F.linear(x, w),
         lambda r: [_normal(r, 2, 4, 7), _normal(r, 3, 7)]),
    Case("linear_relu", "(6,7) -> 5", lambda x, w, b: F.linear_relu(x, w, b),
         lambda r: [_normal(r, 6, 7), _normal(r, 5, 7), _normal(r, 5)]),
    Case("dropout", "p=0.3", _dropout, lambda r: [_normal(r, 4, 6)]),
    Case("cross_entropy", "labels, mean", lambda z: F.cross_entropy(z, np.array([0, 3, 1, 1, 2])),
         lambda r: [_normal(r, 5, 4)]),
    Case("cross_entropy", "labels, none", lambda z: F.cross_entropy(z, np.array([2, 0]), reduction="none"),
         lambda r: [_normal(r, 2, 3)]),
    Case("cross_entropy", "probability targets", F.cross_entropy, _ce_probability_targets),
    Case("nll_loss", "sum", lambda lp: F.nll_loss(lp, np.array([1, 0, 2]), reduction="sum"),
         lambda r: [_normal(r, 3, 4)]),
    Case("mse_loss", "mean", F.mse_loss, lambda r: [_normal(r, 3, 4), _normal(r, 3, 4)]),
    # ---- sequence models: embedding, layer norm, GELU, masks, cat/stack/split, 4-D matmul
    Case("embedding", "V7 D3 (2,5) repeated rows", lambda w: F.embedding(_TOKENS, w), lambda r: [_normal(r, 7, 3)]),
    Case("embedding", "V5 D4 (2,2,3) indices", lambda w: F.embedding(_TOKENS_3D, w),
         lambda r: [_normal(r, 5, 4)]),
    Case("embedding", "V4 D1 scalar index", lambda w: F.embedding(np.array(3), w), lambda r: [_normal(r, 4, 1)]),
    Case("layer_norm", "(2,5,7) over (7,) affine", lambda x, w, b: F.layer_norm(x, 7, w, b),
         lambda r: [_normal(r, 2, 5, 7), _normal(r, 7), _normal(r, 7)]),
    Case("layer_norm", "(3,4,5) over (4,5) affine", lambda x, w, b: F.layer_norm(x, (4, 5), w, b),
         lambda r: [3 + 2 * _normal(r, 3, 4, 5), _normal(r, 4, 5), _normal(r, 4, 5)]),
    Case("layer_norm", "(6,3) no affine eps 0.1", lambda x: F.layer_norm(x, (3,), eps=0.1),
         lambda r: [_normal(r, 6, 3)]),
    Case("layer_norm", "(1,2) weight only", lambda x, w: F.layer_norm(x, (2,), w),
         lambda r: [_normal(r, 1, 2), _normal(r, 2)]),
    Case("batch_norm", "(5,3) training affine", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
         _batch_norm_inputs((5, 3), 2)),
    Case("batch_norm", "(3,2,5,7) training affine mean 3",
         lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), _batch_norm_inputs((3, 2, 5, 7), 2, 3.0)),
    Case("batch_norm", "(2,3,5) training no affine eps 0.1",
         lambda x: F.batch_norm(x, None, None, training=True, eps=0.1), _batch_norm_inputs((2, 3, 5), 0)),
    # two values per channel: x̂ = ±d/√(d² + ε), whose slope is of order ε, so ε is large enough to see
    Case("batch_norm", "(2,4) two per channel eps 0.5",
         lambda x, w: F.batch_norm(x, None, None, w, training=True, eps=0.5),
         _batch_norm_inputs((2, 4), 1)),
    Case("batch_norm", "(4,3,3,2) eval running stats", lambda x, w, b: F.batch_norm(x, *_RUNNING_STATS, w, b),
         lambda r: [_normal(r, 4, 3, 3, 2), _normal(r, 3), _normal(r, 3)]),
    Case("gelu", "(4,7) exact", F.gelu, lambda r: [3 * _normal(r, 4, 7)]),
    Case("gelu", "(2,3,5) tanh", lambda x: F.gelu(x, approximate="tanh"), lambda r: [3 * _normal(r, 2, 3, 5)]),
    Case("masked_fill", "(2,3,5) mask (3,5) value 2.5", lambda x: F.masked_fill(x, _MASK_3x5, 2.5),
         lambda r: [_normal(r, 2, 3, 5)]),
    Case("masked_fill", "(4,) mask (3,4) broadcast", lambda x: F.masked_fill(x, _MASK_3x5[:, :4], -1.0),
         lambda r: [_normal(r, 4)]),
    Case("tril", "(2,4,5) diagonal -1", lambda x: F.tril(x, -1), lambda r: [_normal(r, 2, 4, 5)]),
    Case("triu", "(5,3) diagonal 1", lambda x: F.triu(x, 1), lambda r: [_normal(r, 5, 3)]),
    Case("cat", "(2,1,4) (2,3,4) (2,2,4) axis 1", lambda a, b, c: F.cat([a, b, c], axis=1),
         lambda r: [_normal(r, 2, 1, 4), _normal(r, 2, 3, 4), _normal(r, 2, 2, 4)]),
    Case("stack", "two (3,4) axis -1", lambda a, b: F.stack([a, b], axis=-1),
         lambda r: [_normal(r, 3, 4), _normal(r, 3, 4)]),
    Case("split", "(3,5) size 2 axis -1, pieces weighted", _weighted_pieces, lambda r: [_normal(r, 3, 5)]),
    Case("chunk", "(7,2) 3 chunks, reversed", lambda a: F.cat(F.chunk(a, 3)[::-1]), lambda r: [_normal(r, 7, 2)]),
    Case("matmul", "(2,1,4,5) @ (3,5,2) 4-D broadcast", lambda a, b: a @ b,
         lambda r: [_normal(r, 2, 1, 4, 5), _normal(r, 3, 5, 2)]),
    Case("matmul", "(2,3,4,5) @ (2,3,5,6) 4-D", lambda a, b: a @ b,
         lambda r: [_normal(r, 2, 3, 4, 5), _normal(r, 2, 3, 5, 6)]),
    # ---- attention: q (..., L, E), k (..., S, E), v (..., S, Ev)
    _attention_case((2, 5, 3), 7, 4),
    _attention_case((1, 2, 5, 3), 5, 2, is_causal=True),
    _attention_case((2, 1, 6, 3), 4, 3, is_causal=True, scale=0.5),
    _attention_case((2, 2, 4, 3), 5, 2, attn_mask=_ATTENTION_MASK),
]

SMOOTH_REL_TOLERANCE = 1e-6


def run(cases, backend_names, out=print, seed=0, method="central"):
    """Gradcheck every case on every backend; print the table (and each failure's report);
    return True when all pass. Smooth cases must also reach SMOOTH_REL_TOLERANCE (central)."""
    from lepton_nn import gradcheck, kernels
    measure = "order" if method == "taylor" else "max rel err"
    out(f"{'backend':7s} {'op':28s} {'case':34s} {'input':>5s} {'shape':14s} {measure:>11s} {'kinks':>5s} result")
    all_passed = True
    for name in backend_names:
        with kernels.backend(name):
            for case in cases:
                if method == "taylor" and "kinks" in case.label:
                    out(f"{name:7s} {case.op:28s} {case.label:34s} skipped: the Taylor test needs f smooth at x")
                    continue
                report = gradcheck(case.fn, *case.make_inputs(np.random.default_rng(seed)), method=method)
                for r in report.inputs:
                    passed = r.passed and (method == "taylor" or not case.smooth
                                           or r.max_rel_error <= SMOOTH_REL_TOLERANCE)
                    all_passed &= passed
                    figure = r.order if method == "taylor" else r.max_rel_error
                    out(f"{name:7s} {case.op:28s} {case.label:34s} {r.position:5d} {str(r.shape):14s} "
                        f"{figure:11.2e} {r.kinks:5d} {'PASS' if passed else 'FAIL'}")
                if not all(r.passed for r in report.inputs):
                    out(str(report))
    return all_passed
