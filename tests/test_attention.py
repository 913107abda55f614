"""Attention: F.scaled_dot_product_attention and its masked softmax, against PyTorch's in float64
(forward and the gradients of q, k and v), fully masked rows, NaN, 0-size batches, and the
fused masked softmax against the plain softmax it stands for. Gradcheck cases: lepton_nn/tour.py."""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import kernels, ops
from lepton_nn.kernels import reference
from lepton_nn.tensor import apply

torch = pytest.importorskip("torch")


def both(q, k, v, g, mask=None, **options):
    """(output, grad q, grad k, grad v) from lepton_nn and from torch, for the same arrays."""
    ours = [ln.tensor(a, requires_grad=True) for a in (q, k, v)]
    y = F.scaled_dot_product_attention(*ours, attn_mask=mask, **options)
    y.backward(g)
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    y_t = torch.nn.functional.scaled_dot_product_attention(
        *theirs, attn_mask=None if mask is None else torch.tensor(mask), **options)
    y_t.backward(torch.tensor(g))
    return [y.data] + [t.grad for t in ours], [y_t.detach().numpy()] + [t.grad.numpy() for t in theirs]


def draw(rng, batch, L, S, E, Ev):
    q, k, v = (rng.standard_normal((*batch, n, e)) for n, e in ((L, E), (S, E), (S, Ev)))
    return q, k, v, rng.standard_normal((*batch, L, Ev))


def assert_same(ours, theirs, rtol=1e-12):
    for name, a, b in zip(("output", "grad q", "grad k", "grad v"), ours, theirs):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-14, err_msg=name)  # NaN where torch has NaN


CASES = {  # batch, L, S, E, Ev, options
    "3-D": ((2,), 5, 7, 3, 4, {}),
    "4-D heads": ((2, 3), 6, 6, 8, 8, {}),
    "causal": ((2, 2), 5, 5, 4, 3, {"is_causal": True}),
    "causal L>S": ((1, 2), 7, 4, 3, 5, {"is_causal": True}),
    "causal L<S": ((3,), 3, 6, 2, 2, {"is_causal": True}),
    "scale": ((2, 1), 4, 5, 6, 2, {"scale": 0.37}),
    "one key": ((2,), 3, 1, 4, 4, {}),
}


@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_in_float64(backend, case):
    batch, L, S, E, Ev, options = CASES[case]
    rng = np.random.default_rng(0)
    with kernels.backend(backend):
        ours, theirs = both(*draw(rng, batch, L, S, E, Ev), **options)
    assert_same(ours, theirs)


@pytest.mark.parametrize("mask_shape", [(4, 5), (2, 1, 4, 5), (1, 5)], ids=str)
def test_boolean_and_float_masks_match_torch(mask_shape):
    rng = np.random.default_rng(1)
    q, k, v, g = draw(rng, (2, 3), 4, 5, 3, 2)
    mask = rng.random(mask_shape) > 0.4
    mask[..., 0] = True  # every query sees a key here; fully masked rows: the next test
    assert_same(*both(q, k, v, g, mask))
    additive = np.where(mask, 0.0, -np.inf) + 0.1 * rng.standard_normal(mask_shape)
    assert_same(*both(q, k, v, g, additive))


def test_broadcast_batch_axes_match_torch():
    """Keys and values shared by every head (batch axis 1): their gradients are summed over it."""
    rng = np.random.default_rng(2)
    q, _, _, g = draw(rng, (2, 3), 4, 5, 3, 2)
    k, v = rng.standard_normal((2, 1, 5, 3)), rng.standard_normal((2, 1, 5, 2))
    assert_same(*both(q, k, v, g))


def test_a_fully_masked_row_gives_zero_and_no_gradient():
    """A query that may see no key: PyTorch (2.5+) outputs 0 there, and so do we; the plain
    softmax of a row of −∞ would be NaN, spreading into every gradient of k and v."""
    rng = np.random.default_rng(3)
    q, k, v, g = draw(rng, (2,), 3, 4, 3, 2)
    mask = np.ones((3, 4), bool)
    mask[1] = False
    with np.errstate(all="raise"):  # and no 0/0 or ∞ − ∞ on the way
        ours, theirs = both(q, k, v, g, mask)
    assert_same(ours, theirs)
    y, grad_q, grad_k, grad_v = ours
    assert (y[:, 1] == 0).all() and (grad_q[:, 1] == 0).all() and np.isfinite(grad_k).all()
    additive = np.where(mask, 0.0, -np.inf)  # the same with a float mask
    assert_same(*both(q, k, v, g, additive))
    # the kernel itself: every key masked, or every score −∞
    s = rng.standard_normal((2, 3))
    s[1] = -np.inf
    np.testing.assert_array_equal(reference.masked_softmax_forward(s)[1], 0)
    np.testing.assert_array_equal(reference.masked_softmax_forward(s, np.zeros((2, 3), bool)), 0)


@pytest.mark.parametrize("where", ["q", "k masked", "v"])
def test_nan_is_never_hidden(where):
    """NaN in q spoils its own query's row; NaN in k spoils every row, even where that key is
    masked (the mask is added, as PyTorch's); NaN in v spoils that column of every output, the
    fully masked row included (0·NaN). All as PyTorch, gradients too."""
    rng = np.random.default_rng(4)
    q, k, v, g = draw(rng, (1,), 3, 5, 4, 2)
    mask = np.ones((3, 5), bool)
    mask[1], mask[0, 2] = False, False
    {"q": q, "k masked": k, "v": v}[where][0, {"q": 0, "k masked": 2, "v": 2}[where], 0] = np.nan
    ours, theirs = both(q, k, v, g, mask)
    assert_same(ours, theirs)
    y = ours[0][0]
    expected_nan = {"q": [[1, 1], [0, 0], [0, 0]], "k masked": [[1, 1]] * 3, "v": [[1, 0]] * 3}[where]
    np.testing.assert_array_equal(np.isnan(y), expected_nan)


@pytest.mark.parametrize("shapes", [
    ((0, 2, 5, 4), (0, 2, 7, 4), (0, 2, 7, 3)),   # no batch
    ((2, 0, 4), (2, 3, 4), (2, 3, 3)),            # no queries
    ((2, 5, 4), (2, 0, 4), (2, 0, 3)),            # no keys: the output is 0, as PyTorch's
], ids=["batch 0", "L 0", "S 0"])
def test_zero_sizes(shapes):
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal(s) for s in shapes)
    g = rng.standard_normal((*shapes[0][:-1], shapes[2][-1]))
    assert_same(*both(q, k, v, g, is_causal=True))


def test_the_fused_masked_softmax_is_the_softmax_of_the_masked_scores():
    """MaskedSoftmax = softmax(s + (0 or −∞)) wherever a row keeps a key: forward and gradient."""
    rng = np.random.default_rng(6)
    s, g = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6))
    mask = rng.random((4, 6)) > 0.5
    mask[:, 0] = True
    for options, additive in (({"mask": mask}, np.where(mask, 0.0, -np.inf)),
                              ({"causal": True}, np.where(np.tri(4, 6, dtype=bool), 0.0, -np.inf)),
                              ({}, 0.0)):
        fused, composed = ln.tensor(s, requires_grad=True), ln.tensor(s, requires_grad=True)
        y = apply(ops.MaskedSoftmax, fused, **options)
        y.backward(g)
        y_ref = F.softmax(composed + additive)
        y_ref.backward(g)
        np.testing.assert_allclose(y.data, y_ref.data, rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(fused.grad, composed.grad, rtol=1e-13, atol=1e-16)


def test_float32_stays_float32_and_large_scores_do_not_overflow():
    rng = np.random.default_rng(7)
    q, k, v, _ = (a.astype(np.float32) for a in draw(rng, (2,), 3, 4, 2, 2))
    y = F.scaled_dot_product_attention(q * 1e4, k * 1e4, v, is_causal=True)  # scores ~1e8
    assert y.dtype == np.float32 and np.isfinite(y.data).all()


def test_dropout_drops_attention_weights():
    rng = np.random.default_rng(8)
    q, k, v, _ = draw(rng, (2,), 3, 4, 2, 2)
    ln.seed(3)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    scores = ln.tensor(q) * (1 / np.sqrt(2)) @ ln.tensor(k).transpose()
    ln.seed(3)
    weights = F.dropout(F.softmax(scores), 0.5)  # the same draw of the mask
    np.testing.assert_allclose(y.data, (weights @ ln.tensor(v)).data, rtol=1e-14)
    assert not np.allclose(y.data, F.scaled_dot_product_attention(q, k, v).data)


def test_bad_arguments_are_refused():
    q, k, v = np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 6))
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match=r"expected query \(\.\.\., L, E ≥ 1\), key"):
        sdpa(q, np.ones((2, 5, 3)), v)
    with pytest.raises(ValueError, match="expected query"):
        sdpa(q, k, np.ones((2, 4, 6)))
    with pytest.raises(ValueError, match="batch axes that broadcast"):
        sdpa(q, np.ones((3, 5, 4)), np.ones((3, 5, 6)))
    with pytest.raises(ValueError, match="not both"):
        sdpa(q, k, v, attn_mask=np.ones((3, 5), bool), is_causal=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa(q, k, v, attn_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="boolean or of the query's dtype"):
        sdpa(q, k, v, attn_mask=np.ones((3, 5), np.int64))
    with pytest.raises(ValueError, match="dtype"):
        sdpa(q, k.astype(np.float32), v)
    with pytest.raises(ValueError, match="at least 2-D"):
        sdpa(q, k, np.ones(6))
    with pytest.raises(ValueError, match="scale"):
        sdpa(q, k, v, scale=np.nan)
