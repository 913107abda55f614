"""Sequence layers: LSTMCell and LSTM, CausalSelfAttention (nanoGPT's) and MultiheadAttention,
with PyTorch's (or nanoGPT's) parameter names and shapes, so their state_dicts load unchanged.

All are compositions of existing functional calls, so none needs a backward of its own. The LSTM
recurrence (linear, slicing, sigmoid, tanh, *, +) is unrolled in Python, one step after another:
backpropagation through time is then autograd walking the unrolled graph back from the last step
to the first, summing each weight's gradient over the steps.
"""
import math

import numpy as np

from lepton_nn import checks
from lepton_nn import functional as F
from lepton_nn.nn import init
from lepton_nn.nn.layers import Linear
from lepton_nn.nn.module import Module, Parameter
from lepton_nn.tensor import Tensor


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step (equations in LSTM's docstring): x (N, in), h and c (N, H) → (h', c'), each (N, H)."""
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # (N, 4H): all four at once
    size = weight_hh.shape[1]
    i, f, g, o = (gates[..., k * size:(k + 1) * size] for k in range(4))  # PyTorch's order: i, f, g, o
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _uniform_init(module, hidden_size):
    """PyTorch's default for recurrent layers: every weight and bias U(−1/√H, 1/√H)."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        init.uniform(p, -bound, bound)


def _zeros_or(state, shape, dtype, owner, name):
    """The given state, checked against `shape`, or zeros (a constant) when it is None."""
    if state is None:
        return Tensor(np.zeros(shape, dtype=dtype))
    state = _as_tensor(state)
    if state.shape != shape or state.dtype != dtype:
        raise ValueError(f"{owner}: {name} must have shape {shape} and dtype {np.dtype(dtype)}, "
                         f"got {state.shape} {state.dtype}")
    return state


class LSTMCell(Module):
    """One step of an LSTM (the equations are LSTM's): forward(x, (h, c)=None) → (h', c').

    x (N, input_size) or (input_size,); h and c (N, hidden_size) or (hidden_size,), zeros if not
    given. weight_ih (4H, input_size), weight_hh (4H, H), bias_ih and bias_hh (4H,), gates stacked
    in the order i, f, g, o; all U(−1/√H, 1/√H), as PyTorch's.
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32):
        super().__init__()
        self.input_size = checks.int_at_least(input_size, "LSTMCell", "input_size", 1)
        self.hidden_size = checks.int_at_least(hidden_size, "LSTMCell", "hidden_size", 1)
        self.weight_ih = Parameter(np.empty((4 * hidden_size, input_size), dtype=dtype))
        self.weight_hh = Parameter(np.empty((4 * hidden_size, hidden_size), dtype=dtype))
        self.bias_ih = Parameter(np.empty(4 * hidden_size, dtype=dtype)) if bias else None
        self.bias_hh = Parameter(np.empty(4 * hidden_size, dtype=dtype)) if bias else None
        _uniform_init(self, hidden_size)

    def forward(self, x, hx=None):
        x = _as_tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTMCell: input must be (N, {self.input_size}) or ({self.input_size},), "
                             f"got shape {x.shape}")
        h, c = (None, None) if hx is None else hx
        shape, dtype = x.shape[:-1] + (self.hidden_size,), self.weight_ih.dtype
        h, c = _zeros_or(h, shape, dtype, "LSTMCell", "h"), _zeros_or(c, shape, dtype, "LSTMCell", "c")
        return lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class LSTM(Module):
    """A stack of LSTM layers run over a sequence: forward(x, (h0, c0)=None) → output, (h_n, c_n).

    At each step t, from the input x_t and the previous h, c (zeros before the first step):

        i = σ(W_ii x_t + b_ii + W_hi h + b_hi)     input gate: how much of g to write
        f = σ(W_if x_t + b_if + W_hf h + b_hf)     forget gate: how much of c to keep
        g = tanh(W_ig x_t + b_ig + W_hg h + b_hg)  the candidate cell content
        o = σ(W_io x_t + b_io + W_ho h + b_ho)     output gate: how much of the cell to show
        c = f ⊙ c + i ⊙ g
        h = o ⊙ tanh(c)

    Layer k > 0 takes layer k−1's h as its x (with dropout between layers while training).
    Shapes (T steps, N sequences, H = hidden_size, L = num_layers):
        x       (T, N, input_size), or (N, T, input_size) with batch_first, or (T, input_size) unbatched
        output  the last layer's h at every step: (T, N, H), (N, T, H) with batch_first, or (T, H)
        h0, c0, h_n, c_n   (L, N, H), or (L, H) unbatched; batch_first does not change them (as PyTorch)
    Parameters of layer k: weight_ih_l{k} (4H, in_k), weight_hh_l{k} (4H, H), bias_ih_l{k} and
    bias_hh_l{k} (4H,), rows stacked as [W_i; W_f; W_g; W_o]; all U(−1/√H, 1/√H), as PyTorch's.
    Not (yet) PyTorch's bidirectional and proj_size.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 dtype=np.float32):
        super().__init__()
        self.input_size = checks.int_at_least(input_size, "LSTM", "input_size", 1)
        self.hidden_size = checks.int_at_least(hidden_size, "LSTM", "hidden_size", 1)
        self.num_layers = checks.int_at_least(num_layers, "LSTM", "num_layers", 1)
        self.bias = checks.flag(bias, "LSTM", "bias")
        self.batch_first = checks.flag(batch_first, "LSTM", "batch_first")
        self.dropout = checks.fraction(dropout, "LSTM", "dropout")
        four_h = 4 * hidden_size
        for k in range(num_layers):  # PyTorch's names, in PyTorch's order
            setattr(self, f"weight_ih_l{k}", Parameter(np.empty((four_h, input_size if k == 0 else hidden_size),
                                                                dtype=dtype)))
            setattr(self, f"weight_hh_l{k}", Parameter(np.empty((four_h, hidden_size), dtype=dtype)))
            if bias:
                setattr(self, f"bias_ih_l{k}", Parameter(np.empty(four_h, dtype=dtype)))
                setattr(self, f"bias_hh_l{k}", Parameter(np.empty(four_h, dtype=dtype)))
        _uniform_init(self, hidden_size)

    def layer_weights(self, k):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k; the biases are None without bias."""
        return tuple(getattr(self, f"{name}_l{k}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, x, hx=None):
        x = _as_tensor(x)
        batched = x.ndim == 3
        time_axis = 1 if batched and self.batch_first else 0
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size or x.shape[time_axis] == 0:
            layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
            raise ValueError(f"LSTM: input must be {layout} or (T, input_size) with input_size = "
                             f"{self.input_size} and T ≥ 1, got shape {x.shape}")
        if not batched:
            x = x.reshape(x.shape[0], 1, x.shape[1])
        elif self.batch_first:
            x = x.permute(1, 0, 2)  # time first, so that step t is x[t]
        steps, n = x.shape[:2]
        state_shape = (self.num_layers, n, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
        h0, c0 = (None, None) if hx is None else hx
        h0, c0 = (_zeros_or(s, state_shape, self.weight_ih_l0.dtype, "LSTM", name).reshape(self.num_layers, n, -1)
                  for s, name in ((h0, "h0"), (c0, "c0")))
        # Steps as a list: layer k > 0 takes layer k−1's h's as they are. (Slicing a stacked
        # (T, N, ·) tensor instead would cost a full-size gradient array per step in backward.)
        outputs, h_n, c_n = [x[t] for t in range(steps)], [], []
        for k in range(self.num_layers):
            inputs = outputs if k == 0 else [F.dropout(h, self.dropout, self.training) for h in outputs]
            h, c, outputs = h0[k], c0[k], []
            for x_t in inputs:
                h, c = lstm_cell(x_t, h, c, *self.layer_weights(k))
                outputs.append(h)
            h_n.append(h)
            c_n.append(c)
        output, h_n, c_n = F.stack(outputs), F.stack(h_n), F.stack(c_n)
        if not batched:
            return output[:, 0], (h_n[:, 0], c_n[:, 0])
        return (output.permute(1, 0, 2) if self.batch_first else output), (h_n, c_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}" + (f", dropout={self.dropout}" if self.dropout else ""))


def _split_heads(x, num_heads):
    """(N, T, E) → (N, heads, T, E/heads): each head attends with its own slice of the features."""
    n, steps, embed = x.shape
    return x.reshape(n, steps, num_heads, embed // num_heads).permute(0, 2, 1, 3)


def _merge_heads(x):
    """(N, heads, T, d) → (N, T, heads·d): the heads' outputs side by side, as they were split."""
    n, heads, steps, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(n, steps, heads * d)


def _check_heads(owner, embed_dim, num_heads):
    embed_dim = checks.int_at_least(embed_dim, owner, "embed_dim", 1)
    num_heads = checks.int_at_least(num_heads, owner, "num_heads", 1)
    if embed_dim % num_heads:
        raise ValueError(f"{owner}: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    return embed_dim, num_heads


class CausalSelfAttention(Module):
    """Masked multi-head self-attention as in nanoGPT: x (N, T, E) → (N, T, E), position t
    attending to positions ≤ t only.

        q, k, v = split(c_attn(x))                    c_attn: Linear(E, 3E), q, k, v each (N, T, E)
        head h: softmax(q_h k_hᵀ / √d + causal mask) v_h   d = E / num_heads (F.scaled_dot_product_attention)
        y = c_proj(the heads side by side)            c_proj: Linear(E, E), then dropout

    nanoGPT's names (c_attn.weight (3E, E), rows [W_q; W_k; W_v]; c_proj.weight (E, E)), so its
    state_dict loads unchanged. dropout applies to the attention weights and to the output while training.
    """

    def __init__(self, embed_dim, num_heads, bias=True, dropout=0.0, dtype=np.float32):
        super().__init__()
        self.embed_dim, self.num_heads = _check_heads("CausalSelfAttention", embed_dim, num_heads)
        self.dropout = checks.fraction(dropout, "CausalSelfAttention", "dropout")
        self.c_attn = Linear(embed_dim, 3 * embed_dim, bias=bias, dtype=dtype)
        self.c_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)

    def forward(self, x):
        x = _as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"CausalSelfAttention: input must be (N, T, {self.embed_dim}), got shape {x.shape}")
        q, k, v = (_split_heads(t, self.num_heads) for t in self.c_attn(x).split(self.embed_dim, axis=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return F.dropout(self.c_proj(_merge_heads(y)), self.dropout, self.training)

    def extra_repr(self):
        return f"{self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


class MultiheadAttention(Module):
    """PyTorch's nn.MultiheadAttention (same parameters, masks and outputs):
    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) → (output, weights or None).

        q = query·W_qᵀ + b_q,  k = key·W_kᵀ + b_k,  v = value·W_vᵀ + b_v    [W_q; W_k; W_v] = in_proj_weight
        head h: A_h = softmax(q_h k_hᵀ / √d + mask),  out_h = A_h v_h        d = embed_dim / num_heads
        output = out_proj(the heads side by side)

    Shapes (L queries, S keys, N sequences, E = embed_dim): query (L, N, E), key and value
    (S, N, E); (N, L, E) and (N, S, E) with batch_first; (L, E) and (S, E) unbatched. output
    like query. weights: A averaged over the heads, (N, L, S), or (N, heads, L, S) with
    average_attn_weights=False (the dropped-out A while training, as PyTorch's).
    Masks: attn_mask (L, S) or (N·heads, L, S), key_padding_mask (N, S): boolean (True = this key
    is not attended to, the opposite of scaled_dot_product_attention's) or float (added to the
    scores). is_causal=True without attn_mask masks the keys after each query (PyTorch requires
    the mask and takes is_causal as a hint that it is causal). A query that sees no key gives NaN,
    as PyTorch's does here. Parameters: in_proj_weight (3E, E) Glorot-uniform, in_proj_bias (3E,)
    zeros, out_proj (Linear(E, E), its bias zeros), as PyTorch's. Not PyTorch's kdim, vdim,
    add_bias_kv and add_zero_attn.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False, dtype=np.float32):
        super().__init__()
        self.embed_dim, self.num_heads = _check_heads("MultiheadAttention", embed_dim, num_heads)
        self.dropout = checks.fraction(dropout, "MultiheadAttention", "dropout")
        self.batch_first = checks.flag(batch_first, "MultiheadAttention", "batch_first")
        self.in_proj_weight = init.glorot_uniform(Parameter(np.empty((3 * embed_dim, embed_dim), dtype=dtype)))
        self.in_proj_bias = init.zeros(Parameter(np.empty(3 * embed_dim, dtype=dtype))) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if bias:
            init.zeros(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        query, key, value = (_as_tensor(t) for t in (query, key, value))
        batched, e = query.ndim == 3, self.embed_dim
        batch_axis = 0 if self.batch_first else 1
        if query.ndim not in (2, 3) or any(t.ndim != query.ndim or t.shape[-1] != e for t in (key, value)) \
                or key.shape != value.shape or (batched and key.shape[batch_axis] != query.shape[batch_axis]):
            raise ValueError(f"MultiheadAttention: query, key and value must be (L, N, {e}), (S, N, {e}), (S, N, {e}) "
                             f"(N first with batch_first, or without N unbatched), got {query.shape}, {key.shape}, "
                             f"{value.shape}")

        def batch_first(t):  # (N, T, E) inside
            if not batched:
                return t.reshape(1, *t.shape)
            return t if self.batch_first else t.permute(1, 0, 2)

        def project(i, t):  # rows i·E to (i+1)·E of in_proj hold W_q, W_k or W_v
            rows, w, b = slice(i * e, (i + 1) * e), self.in_proj_weight, self.in_proj_bias
            return _split_heads(F.linear(batch_first(t), w[rows], None if b is None else b[rows]), self.num_heads)

        q, k, v = project(0, query), project(1, key), project(2, value)
        (n, _, length, _), source = q.shape, k.shape[2]
        # The softmax is written out rather than left to scaled_dot_product_attention, to return the weights.
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(e // self.num_heads))  # (N, heads, L, S)
        mask = self._additive_mask(attn_mask, key_padding_mask, is_causal, batched, n, length, source, query.dtype)
        weights = F.dropout(F.softmax(scores if mask is None else scores + mask, -1), self.dropout, self.training)
        output = self.out_proj(_merge_heads(weights @ v))
        if not batched:
            output, weights = output[0], weights[0]
        elif not self.batch_first:
            output = output.permute(1, 0, 2)
        if not need_weights:
            return output, None
        return output, (weights.mean(axis=-3) if average_attn_weights else weights)

    def _additive_mask(self, attn_mask, key_padding_mask, is_causal, batched, n, length, source, dtype):
        """All masks as one array added to the scores, broadcastable to (N, heads, L, S): 0 where a
        query may attend to a key, −inf where not (a boolean True), a float mask's own values."""
        def additive(mask, name, shapes):
            mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
            if mask.shape not in shapes or not (mask.dtype == bool or mask.dtype == dtype):
                raise ValueError(f"MultiheadAttention: {name} must be boolean or {np.dtype(dtype)} of shape "
                                 f"{' or '.join(map(str, shapes))}, got {mask.dtype} {mask.shape}")
            return np.where(mask, -np.inf, 0).astype(dtype) if mask.dtype == bool else mask

        total = None
        if attn_mask is None and is_causal:
            attn_mask = np.triu(np.ones((length, source), dtype=bool), 1)  # key j > query i
        if attn_mask is not None:
            total = additive(attn_mask, "attn_mask", [(length, source), (n * self.num_heads, length, source)])
            total = total.reshape(-1, self.num_heads, length, source) if total.ndim == 3 else total
        if key_padding_mask is not None:
            pad = additive(key_padding_mask, "key_padding_mask", [(n, source) if batched else (source,)])
            pad = pad.reshape(n, 1, 1, source)
            total = pad if total is None else total + pad
        return None if total is None else Tensor(total)

    def extra_repr(self):
        return f"{self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, batch_first={self.batch_first}"
