"""lepton_nn.nn's sequence layers (LSTM, LSTMCell, Embedding, LayerNorm, GELU, CausalSelfAttention,
MultiheadAttention) and ModuleList: PyTorch's (nanoGPT's) names and shapes, so a torch state_dict
loads unchanged; then forward and every gradient against PyTorch in float64 (each such test skips
without torch), gradchecks of the recurrence and of attention, and the argument checks."""
import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import nn
from lepton_nn.gradcheck import gradcheck
from lepton_nn.nn.sequence import lstm_cell


def load_from_torch(ours, theirs):
    """Copy a torch module's state_dict into ours: the keys must be the same."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=what)


def assert_same_parameter_grads(ours, theirs):
    named = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(named)
    for name, p in ours.named_parameters():
        assert_close(p.grad, named[name].grad, f"gradient of {name}")


def flat(outputs):
    """The tensors of a nested tuple such as LSTM's (output, (h_n, c_n)), without the Nones."""
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flat(o)]
    return [] if outputs is None else [outputs]


def compare_with_torch(torch, ours, theirs, arrays, call=lambda module, *xs: module(*xs)):
    """Load theirs' weights into ours, call both on the same arrays (float ones get gradients), contract
    every output y with the same random G, backpropagate L = Σ G·y, and compare every output and
    the gradient of every float input and every parameter, in float64."""
    load_from_torch(ours, theirs)
    wants_grad = [a.dtype == np.float64 for a in arrays]
    t_in = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, wants_grad)]
    l_in = [ln.tensor(a, requires_grad=g) for a, g in zip(arrays, wants_grad)]
    t_out, l_out = flat(call(theirs, *t_in)), flat(call(ours, *l_in))
    assert [o.shape for o in l_out] == [tuple(o.shape) for o in t_out]
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=o.shape) for o in l_out]
    sum((o * torch.tensor(g)).sum() for o, g in zip(t_out, weights)).backward()
    sum((o * g).sum() for o, g in zip(l_out, weights)).backward()
    for i, (a, b) in enumerate(zip(l_out, t_out)):
        assert_close(a.data, b, f"output {i}")
    for i, (a, b) in enumerate(zip(l_in, t_in)):
        if b.requires_grad:
            assert_close(a.grad, b.grad, f"gradient of input {i}")
    assert_same_parameter_grads(ours, theirs)


# --------------------------------------------------------------------------- LSTM
def test_lstm_parameters_have_pytorchs_names_shapes_and_init():
    lstm = nn.LSTM(3, 5, num_layers=2)
    shapes = {name: p.shape for name, p in lstm.named_parameters()}
    assert shapes == {"weight_ih_l0": (20, 3), "weight_hh_l0": (20, 5), "bias_ih_l0": (20,), "bias_hh_l0": (20,),
                      "weight_ih_l1": (20, 5), "weight_hh_l1": (20, 5), "bias_ih_l1": (20,), "bias_hh_l1": (20,)}
    for name, p in lstm.named_parameters():  # U(−1/√H, 1/√H): within the bound, and not all near 0
        assert np.abs(p.data).max() <= 1 / math.sqrt(5) and p.data.std() > 0.1, name
    assert [n for n, _ in nn.LSTM(3, 5, bias=False).named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]


# (input_size, hidden_size, num_layers, bias, batch_first, T, N): odd sizes, one step, one sequence
LSTM_CASES = [(3, 5, 1, True, False, 4, 2), (3, 5, 2, True, True, 4, 2), (7, 3, 2, False, False, 5, 3),
              (2, 4, 3, True, True, 1, 1), (1, 1, 1, True, False, 6, 1)]


@pytest.mark.parametrize("input_size, hidden, layers, bias, batch_first, steps, n", LSTM_CASES, ids=str)
@pytest.mark.parametrize("given_state", [True, False], ids=["h0_c0", "zeros"])
def test_lstm_matches_pytorch_forward_and_every_gradient(input_size, hidden, layers, bias, batch_first, steps, n,
                                                         given_state):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(input_size, hidden, layers, bias=bias, batch_first=batch_first).double()
    ours = nn.LSTM(input_size, hidden, layers, bias=bias, batch_first=batch_first, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, steps, input_size) if batch_first else (steps, n, input_size))
    if given_state:
        h0, c0 = rng.normal(size=(2, layers, n, hidden))
        compare_with_torch(torch, ours, theirs, [x, h0, c0], lambda lstm, x, h0, c0: lstm(x, (h0, c0)))
    else:
        compare_with_torch(torch, ours, theirs, [x])


def test_lstm_unbatched_input_matches_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2).double()
    ours = nn.LSTM(3, 4, num_layers=2, dtype=np.float64)
    load_from_torch(ours, theirs)
    x = np.random.default_rng(0).normal(size=(5, 3))  # (T, input_size): no batch axis
    t_out, (t_h, t_c) = theirs(torch.tensor(x))
    out, (h, c) = ours(x)
    assert out.shape == (5, 4) and h.shape == c.shape == (2, 4)
    for a, b, what in ((out.data, t_out, "output"), (h.data, t_h, "h_n"), (c.data, t_c, "c_n")):
        assert_close(a, b, what)


def test_lstm_in_eval_mode_ignores_dropout():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5).double().eval()
    ours = nn.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64).eval()
    load_from_torch(ours, theirs)
    x = np.random.default_rng(0).normal(size=(3, 2, 3))
    assert_close(ours(x)[0].data, theirs(torch.tensor(x))[0], "output in eval mode")


def test_lstm_cell_matches_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    compare_with_torch(torch, nn.LSTMCell(3, 5, dtype=np.float64), torch.nn.LSTMCell(3, 5).double(), [x, h, c],
                       lambda cell, x, h, c: cell(x, (h, c)))
    compare_with_torch(torch, nn.LSTMCell(3, 5, bias=False, dtype=np.float64),
                       torch.nn.LSTMCell(3, 5, bias=False).double(), [x[0]])  # unbatched, zero state


def test_lstm_cell_gradcheck_every_input():
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    w_ih, w_hh = rng.normal(size=(16, 3)), rng.normal(size=(16, 4))
    b_ih, b_hh = rng.normal(size=(2, 16))

    def h_and_c(*args):
        h, c = lstm_cell(*args)
        return h + 2 * c  # weights 1 and 2: a mistake in either shows
    assert gradcheck(h_and_c, x, h, c, w_ih, w_hh, b_ih, b_hh)


def test_lstm_backward_through_time_gradcheck():
    ln.seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, h0, c0 = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 2, 4)), rng.normal(size=(2, 2, 4))

    def everything(x, h0, c0):  # every output step and both final states, each with its own weight
        out, (h, c) = lstm(x, (h0, c0))
        return out.sum(axis=0) + 2 * h[0] + 3 * c[1]
    assert gradcheck(everything, x, h0, c0)


def test_lstm_argument_errors_name_the_layer():
    with pytest.raises(ValueError, match="LSTM: hidden_size must be a positive int"):
        nn.LSTM(3, 0)
    with pytest.raises(ValueError, match="LSTM: num_layers must be a positive int"):
        nn.LSTM(3, 4, num_layers=1.0)
    with pytest.raises(ValueError, match="LSTM: dropout must be a number in"):
        nn.LSTM(3, 4, dropout=1.5)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match=r"LSTM: input must be \(N, T, input_size\).*got shape \(2, 5, 7\)"):
        lstm(np.zeros((2, 5, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="T ≥ 1"):
        lstm(np.zeros((2, 0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"LSTM: h0 must have shape \(2, 2, 4\)"):
        lstm(np.zeros((2, 5, 3), dtype=np.float32), (np.zeros((1, 2, 4), dtype=np.float32), None))
    with pytest.raises(ValueError, match="LSTMCell: input must be"):
        nn.LSTMCell(3, 4)(np.zeros((2, 4), dtype=np.float32))


def test_lstm_trains_to_remember_the_first_input():
    """A worked example: the answer (the sign of x at step 0) must be carried through 6 steps."""
    from lepton_nn import functional as F
    from lepton_nn import optim
    ln.seed(0)
    lstm, head = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 2)
    opt = optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(60):
        x = rng.normal(size=(32, 6, 1)).astype(np.float32)
        labels = (x[:, 0, 0] > 0).astype(np.int64)
        opt.zero_grad()
        out, (h, c) = lstm(x)
        loss = F.cross_entropy(head(h[0]), labels)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2


# --------------------------------------------------------------------------- Embedding, LayerNorm, GELU
def test_embedding_init_and_padding_row():
    ln.seed(0)
    emb = nn.Embedding(1000, 16, padding_idx=-1)
    assert emb.padding_idx == 999 and not emb.weight.data[999].any()
    assert abs(emb.weight.data[:999].mean()) < 0.02 and abs(emb.weight.data[:999].std() - 1) < 0.02  # N(0, 1)
    with pytest.raises(ValueError, match=r"Embedding: padding_idx must be an int in \[-10, 10\)"):
        nn.Embedding(10, 4, padding_idx=10)
    with pytest.raises(ValueError, match="Embedding: embedding_dim must be a positive int"):
        nn.Embedding(10, 0)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_pytorch(padding_idx):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    indices = np.array([[0, 2, 4], [2, 2, 1]])  # repeats: their gradients add up in the row
    ours, theirs = nn.Embedding(5, 3, padding_idx, dtype=np.float64), torch.nn.Embedding(5, 3, padding_idx).double()
    compare_with_torch(torch, ours, theirs, [indices])


@pytest.mark.parametrize("shape, normalized_shape, affine, bias", [
    ((2, 3, 5), 5, True, True), ((2, 3, 5), (3, 5), True, True), ((4, 7), 7, False, True), ((3, 6), 6, True, False)],
    ids=str)
def test_layer_norm_matches_pytorch(shape, normalized_shape, affine, bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ours = nn.LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias, dtype=np.float64)
    theirs = torch.nn.LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias).double()
    with torch.no_grad():  # away from the initial ones and zeros, so a swapped weight and bias shows
        for p in theirs.parameters():
            p.normal_()
    compare_with_torch(torch, ours, theirs, [np.random.default_rng(0).normal(size=shape)])


def test_layer_norm_parameters_and_errors():
    norm = nn.LayerNorm((3, 4))
    assert {n: (p.shape, p.data.mean()) for n, p in norm.named_parameters()} == {"weight": ((3, 4), 1.0),
                                                                                 "bias": ((3, 4), 0.0)}
    with pytest.raises(ValueError, match="LayerNorm: every dimension of normalized_shape"):
        nn.LayerNorm((3, 0))
    with pytest.raises(ValueError, match="LayerNorm: eps must be a finite number ≥ 0"):
        nn.LayerNorm(3, eps=-1)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_pytorch(approximate):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(3, 7)) * 3
    compare_with_torch(torch, nn.GELU(approximate), torch.nn.GELU(approximate), [x])


def test_gelu_refuses_an_unknown_approximation():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")


# --------------------------------------------------------------------------- attention
def torch_nanogpt_attention(torch, embed_dim, num_heads, bias):
    """nanoGPT's CausalSelfAttention (its flash path, dropout 0), the reference for ours."""
    class CausalSelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = torch.nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
            self.c_proj = torch.nn.Linear(embed_dim, embed_dim, bias=bias)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = (t.view(B, T, num_heads, C // num_heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    return CausalSelfAttention().double()


@pytest.mark.parametrize("embed_dim, num_heads, bias, n, steps", [(8, 2, True, 2, 5), (6, 3, False, 1, 1),
                                                                   (5, 1, True, 3, 4)], ids=str)
def test_causal_self_attention_matches_nanogpt(embed_dim, num_heads, bias, n, steps):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ours = nn.CausalSelfAttention(embed_dim, num_heads, bias=bias, dtype=np.float64)
    theirs = torch_nanogpt_attention(torch, embed_dim, num_heads, bias)
    compare_with_torch(torch, ours, theirs, [np.random.default_rng(0).normal(size=(n, steps, embed_dim))])


def test_causal_self_attention_never_looks_ahead_and_gradchecks():
    ln.seed(0)
    attention = nn.CausalSelfAttention(6, 2, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(2, 4, 6))
    later_changed = x.copy()
    later_changed[:, 2:] += 1.0
    np.testing.assert_array_equal(attention(x).data[:, :2], attention(later_changed).data[:, :2])
    assert gradcheck(attention, x)


def test_causal_self_attention_argument_errors():
    with pytest.raises(ValueError, match=r"CausalSelfAttention: embed_dim \(6\) must be divisible by num_heads \(4\)"):
        nn.CausalSelfAttention(6, 4)
    with pytest.raises(ValueError, match=r"CausalSelfAttention: input must be \(N, T, 6\), got shape \(4, 6\)"):
        nn.CausalSelfAttention(6, 2)(np.zeros((4, 6), dtype=np.float32))


def test_multihead_attention_has_pytorchs_parameters():
    attention = nn.MultiheadAttention(6, 2)
    assert {n: p.shape for n, p in attention.named_parameters()} == {
        "in_proj_weight": (18, 6), "in_proj_bias": (18,), "out_proj.weight": (6, 6), "out_proj.bias": (6,)}
    assert not attention.in_proj_bias.data.any() and not attention.out_proj.bias.data.any()
    assert np.abs(attention.in_proj_weight.data).max() <= math.sqrt(6 / (6 + 18))  # Glorot: fan_in E, fan_out 3E


def _mha_case(rng, batch_first, batched, length=4, source=5, n=3, embed=6):
    def shape(steps):
        return (n, steps, embed) if batch_first else (steps, n, embed) if batched else (steps, embed)
    return rng.normal(size=shape(length)), rng.normal(size=shape(source)), rng.normal(size=shape(source))


@pytest.mark.parametrize("batch_first, batched", [(False, True), (True, True), (False, False)],
                         ids=["LNE", "batch_first", "unbatched"])
@pytest.mark.parametrize("masks", ["none", "bool", "float", "per_head"])
@pytest.mark.parametrize("need_weights, average", [(True, True), (True, False), (False, True)],
                         ids=["averaged", "per_head_weights", "no_weights"])
def test_multihead_attention_matches_pytorch(batch_first, batched, masks, need_weights, average):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    query, key, value = _mha_case(rng, batch_first, batched)
    n, heads, length, source = 3 if batched else 1, 2, 4, 5
    attn_mask = key_padding_mask = None
    if masks == "bool":  # True: this key is not attended to; key 0 stays visible, so no row is all masked
        attn_mask = rng.random((length, source)) < 0.3
        key_padding_mask = rng.random((n, source) if batched else (source,)) < 0.3
        attn_mask[:, 0] = key_padding_mask[..., 0] = False
    elif masks == "float":
        attn_mask = rng.normal(size=(length, source))
        key_padding_mask = rng.normal(size=(n, source) if batched else source)
    elif masks == "per_head":
        attn_mask = rng.normal(size=(n * heads, length, source))

    def call(module, q, k, v):
        theirs = isinstance(module, torch.nn.Module)
        to = (lambda mask: torch.tensor(mask) if theirs and mask is not None else mask)
        return module(q, k, v, key_padding_mask=to(key_padding_mask), attn_mask=to(attn_mask),
                      need_weights=need_weights, average_attn_weights=average)

    ours = nn.MultiheadAttention(6, heads, batch_first=batch_first, dtype=np.float64)
    theirs = torch.nn.MultiheadAttention(6, heads, batch_first=batch_first).double()
    with torch.no_grad():  # nonzero biases, so a bias applied to the wrong projection shows
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    compare_with_torch(torch, ours, theirs, [query, key, value], call)


def test_multihead_attention_self_attention_without_bias_and_causal():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(2, 5, 4))
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)
    ours = nn.MultiheadAttention(4, 2, bias=False, batch_first=True, dtype=np.float64)
    theirs = torch.nn.MultiheadAttention(4, 2, bias=False, batch_first=True).double()

    def call(module, x):  # PyTorch takes is_causal as a hint and wants the mask too; ours builds it
        mask = torch.tensor(causal) if module is theirs else None
        return module(x, x, x, attn_mask=mask, is_causal=True)
    compare_with_torch(torch, ours, theirs, [x], call)


def test_multihead_attention_gradcheck():
    ln.seed(0)
    attention = nn.MultiheadAttention(4, 2, dtype=np.float64)
    query, key, value = _mha_case(np.random.default_rng(0), False, True, length=3, source=4, n=2, embed=4)
    assert gradcheck(lambda q, k, v: attention(q, k, v)[0], query, key, value)


def test_multihead_attention_argument_errors():
    attention = nn.MultiheadAttention(4, 2)
    x = np.zeros((3, 2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"MultiheadAttention: query, key and value .*got \(3, 2, 4\), \(3, 5, 4\)"):
        attention(x, np.zeros((3, 5, 4), dtype=np.float32), x)
    with pytest.raises(ValueError, match=r"MultiheadAttention: attn_mask must be boolean or float32 of shape \(3, 3\)"):
        attention(x, x, x, attn_mask=np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="MultiheadAttention: embed_dim .* must be divisible by num_heads"):
        nn.MultiheadAttention(5, 2)


@pytest.mark.parametrize("make, call", [
    (lambda: nn.LSTM(4, 4, num_layers=2, dropout=0.5), lambda m, x: m(x)[0]),
    (lambda: nn.CausalSelfAttention(4, 2, dropout=0.5), lambda m, x: m(x)),
    (lambda: nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True), lambda m, x: m(x, x, x)[0])],
    ids=["LSTM", "CausalSelfAttention", "MultiheadAttention"])
def test_dropout_acts_only_while_training(make, call):
    ln.seed(0)
    module, x = make(), np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    evaluated = call(module.eval(), x).data
    np.testing.assert_array_equal(call(module, x).data, evaluated)
    assert not np.allclose(call(module.train(), x).data, evaluated)


# --------------------------------------------------------------------------- ModuleList
def test_module_list_registers_indexes_and_iterates():
    layers = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 1)])
    layers.append(nn.ReLU())
    assert len(layers) == 3 and isinstance(layers[-1], nn.ReLU) and list(layers)[1] is layers[1]
    assert list(layers.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [type(m).__name__ for m in layers[:2]] == ["Linear", "Linear"]
    layers[0] = nn.Linear(2, 3, bias=False)  # replaced in place: the order stays
    assert list(layers.state_dict()) == ["0.weight", "1.weight", "1.bias"]
    with pytest.raises(IndexError, match="ModuleList: index 3"):
        layers[3]
    with pytest.raises(TypeError, match="ModuleList: expected a Module"):
        layers.append(lambda x: x)


def test_module_list_inside_a_module_gives_nested_names():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x):
            for block in self.blocks:
                x = block(x).relu()
            return x

    model = Stack()
    assert [n for n, _ in model.named_parameters()] == ["blocks.0.weight", "blocks.0.bias",
                                                         "blocks.1.weight", "blocks.1.bias"]
    model(np.ones((2, 4), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
