"""Keras's sequence layers on (batch, time, features) inputs: Embedding, LSTM, MultiHeadAttention,
LayerNormalization and GlobalAveragePooling1D, with Keras 3's arguments and defaults
(exported by keras/layers.py: keras.layers.LSTM, ...).

Weights keep Keras's names, shapes and order, so `layer.set_weights(keras_layer.get_weights())`
takes a Keras layer's weights unchanged (Dense and Conv2D keep lepton_nn's layout instead; these
layers have no single nn layout to keep: Keras's LSTM has one bias where nn.LSTM has two, and
its attention kernels are 3-D):

    Embedding           embeddings (input_dim, output_dim)             = nn.Embedding.weight
    LayerNormalization  gamma, beta: the normalised axes' sizes        = nn.LayerNorm's weight, bias
    LSTM                kernel (in, 4U), recurrent_kernel (U, 4U), bias (4U,); columns in blocks
                        of U for the gates i, f, c, o
    MultiHeadAttention  query/kernel (dim, heads, key_dim), query/bias (heads, key_dim), key/...
                        the same, value/kernel (dim_v, heads, value_dim), value/bias (heads,
                        value_dim), attention_output/kernel (heads, value_dim, out), .../bias (out,)

LSTM ↔ nn.LSTM (PyTorch's layout, weight_ih (4U, in) with gates i, f, g, o): the same gate order
(Keras's c is PyTorch's g), each matrix transposed, and Keras's one bias the sum of PyTorch's two:

    weight_ih_l0 = kernel.T,  weight_hh_l0 = recurrent_kernel.T,  bias_ih_l0 + bias_hh_l0 = bias
    (e.g. bias_ih_l0 = bias, bias_hh_l0 = 0; back: kernel = weight_ih_l0.T, bias = bias_ih + bias_hh)

Initialisation is Keras's: embeddings U(−0.05, 0.05); LSTM kernel Glorot-uniform, recurrent
kernel orthogonal, bias zeros but the forget gate's block ones (unit_forget_bias: f = σ(1) ≈ 0.73
at the start, so the cell keeps what it holds while training begins; Jozefowicz et al. 2015);
attention kernels Glorot-uniform, biases zeros; gamma ones, beta zeros. Fans are Keras's, read
from its layout (…, in, out): see _initialise.

Masks do not travel from layer to layer (Keras's mask_zero): give MultiHeadAttention an
attention_mask instead. Each layer is composed of functional and Tensor ops, so none needs a
backward of its own; the LSTM is unrolled in Python, and backpropagation through time is autograd
walking the unrolled steps back (as nn.LSTM, lepton_nn/nn/sequence.py).
"""
import math

import numpy as np

from lepton_nn import checks, nn
from lepton_nn import functional as F
from lepton_nn.keras.functional import is_symbolic, symbolic_call
from lepton_nn.keras.layers import Layer, _initializer, _initializers_config, get_activation
from lepton_nn.nn import init
from lepton_nn.nn.module import Parameter
from lepton_nn.tensor import Tensor

MASKED_SCORE = -1e9  # Keras's softmax puts this where a mask is False: a query that sees no key averages all


def _initialise(param, initializer):
    """Fill param, in Keras's layout, by an initialiser name or function, with Keras's fans.
    nn.init reads fans from lepton_nn's (out, in, k1, ...) layout, which is Keras's (k1, ..., in,
    out) with the axes reversed: so the initialiser fills the reversed shape, transposed back.
    (For MultiHeadAttention's (dim, heads, key_dim) kernel that gives Keras's fan_in = heads·dim
    and fan_out = key_dim·dim.)"""
    scratch = Tensor(np.empty(param.shape[::-1], dtype=param.dtype))
    init.get(initializer)(scratch)
    param.data[...] = scratch.data.T
    return param


def _activation(value, owner, name):
    """(name, function) of an LSTM activation: a name get_activation knows (None is 'linear'),
    or a function on Tensors, whose name is None (it cannot be saved)."""
    label, fn = get_activation(value, f"{owner}: {name}")
    return (label if isinstance(value, str) or value is None else None), fn if fn is not None else (lambda t: t)


class _KerasWeights(Layer):
    """A layer that holds its Parameters itself, by their Keras names, in Keras's order."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._params = {}  # Keras's name → Parameter, made by build

    def named_weights(self):
        return list(self._params.items())

    def _new(self, name, shape, initializer):
        self._params[name] = _initialise(Parameter(np.empty(shape, dtype=self.dtype)), initializer)
        return self._params[name]


# --------------------------------------------------------------------------- Embedding
class Embedding(Layer):
    """Integer indices (batch, ...) → their rows of `embeddings`, (batch, ..., output_dim).
    Wraps nn.Embedding (→ functional.embedding). Parameters: input_dim·output_dim.

    Each index must lie in [0, input_dim); whole floats (3.0) are taken as indices, as Keras
    casts them. mask_zero=True is refused: masks do not travel from layer to layer here.
    Only a model's first layer can be an Embedding (it takes indices, not features).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        self.input_dim = checks.int_at_least(input_dim, owner, "input_dim", 1)
        self.output_dim = checks.int_at_least(output_dim, owner, "output_dim", 1)
        self.embeddings_initializer = _initializer(embeddings_initializer, owner, "embeddings_initializer")
        if checks.flag(mask_zero, owner, "mask_zero"):
            raise ValueError(f"{owner}: mask_zero=True is not supported (lepton_nn's layers pass no masks on, so "
                             f"the layers after would still read the padding); leave it False, and give "
                             f"MultiHeadAttention an attention_mask to ignore padded positions")
        self.mask_zero = False

    def as_input(self, x):
        return Tensor(self._indices(x))

    def _indices(self, x):
        """x as int64 indices in [0, input_dim), checked, naming this layer."""
        values = np.asarray(x.data if isinstance(x, Tensor) else x)
        if values.dtype.kind == "f":  # Keras casts to int; here only whole numbers are taken
            if not np.all(np.isfinite(values) & (values == np.round(values))):
                raise ValueError(f"{self._owner}: input must be integer indices in [0, {self.input_dim}), got "
                                 f"dtype {values.dtype} with values that are not whole numbers")
            values = values.astype(np.int64)
        return checks.indices(values, self.input_dim, self._owner, "input")

    def check_place_in_sequential(self, first):
        if not first:
            raise ValueError(f"{self._owner} looks up integer indices, so it can only be a Sequential model's first "
                             f"layer (after an Input), not after another layer")

    def compute_output_shape(self, input_shape):
        self._expect_batch(input_shape)
        return tuple(input_shape) + (self.output_dim,)

    def weight_shapes(self, input_shape):
        self._expect_batch(input_shape)
        return [("embeddings", (self.input_dim, self.output_dim))]

    def _expect_batch(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"{self._owner}: expected input (batch, ...) of indices, got shape {tuple(input_shape)}")

    def build(self, input_shape):
        self._expect_batch(input_shape)
        self.module = nn.Embedding(self.input_dim, self.output_dim, dtype=self.dtype)
        _initialise(self.module.weight, self.embeddings_initializer)

    def named_weights(self):
        module = getattr(self, "module", None)
        return [] if module is None else [("embeddings", module.weight)]

    def forward(self, x, training=False):
        return self.module(self._indices(x))

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                **_initializers_config(self, ("embeddings_initializer",)), "mask_zero": self.mask_zero}


# --------------------------------------------------------------------------- LayerNormalization
class LayerNormalization(_KerasWeights):
    """Normalise each sample over `axis` (default the last), then scale and shift, as Keras:

        y = (x − mean) / √(var + epsilon) · gamma + beta      var biased (divided by the count)

    gamma and beta have the normalised axes' sizes (ones and zeros at the start; none with
    scale=False / center=False). Over trailing axes (axis=-1, [-2, -1], ...) this is
    functional.layer_norm, the fused kernel (nn.LayerNorm with eps = epsilon); over others a
    composition of mean, subtraction and square root. Keras's epsilon default is 1e-3
    (PyTorch's 1e-5). The batch axis cannot be normalised over.
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if not axes or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes):
            raise ValueError(f"{owner}: axis must be an int or a non-empty list of ints, got {axis!r}")
        self.axis = int(axis) if not isinstance(axis, (list, tuple)) else [int(a) for a in axis]
        self.epsilon = checks.finite_number(epsilon, owner, "epsilon", minimum=0)
        if self.epsilon <= 0:
            raise ValueError(f"{owner}: epsilon must be a finite number > 0, got {epsilon!r}")
        self.center = checks.flag(center, owner, "center")
        self.scale = checks.flag(scale, owner, "scale")
        self.beta_initializer = _initializer(beta_initializer, owner, "beta_initializer")
        self.gamma_initializer = _initializer(gamma_initializer, owner, "gamma_initializer")

    def _axes(self, input_shape):
        """The normalised axes of an input of this rank, ≥ 1 and sorted."""
        rank, given = len(input_shape), self.axis if isinstance(self.axis, list) else [self.axis]
        axes = sorted(a % rank for a in given if -rank <= a < rank)
        if len(axes) != len(given) or len(set(axes)) != len(axes) or 0 in axes:
            raise ValueError(f"{self._owner}: axis {self.axis!r} must name distinct axes of the input other than "
                             f"the batch axis 0, got input shape {tuple(input_shape)}")
        return axes

    def compute_output_shape(self, input_shape):
        self._axes(input_shape)
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        shape = tuple(input_shape[a] for a in self._axes(input_shape))
        return [(name, shape) for name, used in (("gamma", self.scale), ("beta", self.center)) if used]

    def build(self, input_shape):
        for name, shape in self.weight_shapes(input_shape):
            self._new(name, shape, self.gamma_initializer if name == "gamma" else self.beta_initializer)

    def forward(self, x, training=False):
        axes = self._axes(x.shape)
        shape = tuple(x.shape[a] for a in axes)
        built = [p.shape for p in self._params.values()]
        if built and built[0] != shape:
            raise ValueError(f"{self._owner}: built for normalised axes of sizes {built[0]}, got input shape {x.shape}")
        gamma, beta = self._params.get("gamma"), self._params.get("beta")
        if axes == list(range(x.ndim - len(axes), x.ndim)):  # trailing axes: the fused kernel
            return F.layer_norm(x, shape, gamma, beta, self.epsilon)
        keep = tuple(axes)
        mean = x.mean(axis=keep, keepdims=True)
        centred = x - mean
        y = centred / ((centred * centred).mean(axis=keep, keepdims=True) + self.epsilon).sqrt()
        broadcast = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        if gamma is not None:
            y = y * gamma.reshape(broadcast)
        return y + beta.reshape(broadcast) if beta is not None else y

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, **_initializers_config(self, ("beta_initializer", "gamma_initializer"))}


# --------------------------------------------------------------------------- LSTM
class LSTM(_KerasWeights):
    """An LSTM over (batch, timesteps, features) → the last h (batch, units), or every step's h
    (batch, timesteps, units) with return_sequences=True; with return_state=True the list
    [output, h, c] (not inside a Sequential, which passes one tensor on). Keras's equations, at
    each step t from h and c (zeros, or initial_state=[h0, c0]):

        z = x_t·kernel + h·recurrent_kernel + bias          (batch, 4·units): blocks z_i, z_f, z_c, z_o
        i = σ(z_i),  f = σ(z_f),  o = σ(z_o)                 σ = recurrent_activation ('sigmoid')
        c = f ⊙ c + i ⊙ act(z_c)                             act = activation ('tanh')
        h = o ⊙ act(c)

    With the default activations this is nn.LSTM's cell (lstm_cell) with the weights transposed
    (module docstring). dropout drops input features and recurrent_dropout h's features, one mask
    per sequence for all its steps (Keras's), while training. go_backwards reads the steps last to
    first and returns the sequence in that (reversed) order, as Keras. Parameters: 4·units·(in + units + 1).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, return_sequences=False,
                 return_state=False, go_backwards=False, **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        self.units = checks.int_at_least(units, owner, "units", 1)
        self.cell_activation = _activation(activation, owner, "activation")
        self.cell_recurrent_activation = _activation(recurrent_activation, owner, "recurrent_activation")
        self.use_bias = checks.flag(use_bias, owner, "use_bias")
        self.kernel_initializer = _initializer(kernel_initializer, owner, "kernel_initializer")
        self.recurrent_initializer = _initializer(recurrent_initializer, owner, "recurrent_initializer")
        self.bias_initializer = _initializer(bias_initializer, owner, "bias_initializer")
        self.unit_forget_bias = checks.flag(unit_forget_bias, owner, "unit_forget_bias")
        self.dropout = checks.fraction(dropout, owner, "dropout")
        self.recurrent_dropout = checks.fraction(recurrent_dropout, owner, "recurrent_dropout")
        self.return_sequences = checks.flag(return_sequences, owner, "return_sequences")
        self.return_state = checks.flag(return_state, owner, "return_state")
        self.go_backwards = checks.flag(go_backwards, owner, "go_backwards")

    def check_place_in_sequential(self, first):
        if self.return_state:
            raise ValueError(f"{self._owner}: return_state=True gives three outputs [output, h, c], but a "
                             f"Sequential model passes one tensor from layer to layer; call the layer directly")

    def _expect_sequences(self, shape):
        if len(shape) != 3 or shape[1] == 0:
            raise ValueError(f"{self._owner}: expected input (batch, timesteps ≥ 1, features), got shape "
                             f"{tuple(shape)}")

    def compute_output_shape(self, input_shape):
        self._expect_sequences(input_shape)
        n, steps, _ = input_shape
        return (n, steps, self.units) if self.return_sequences else (n, self.units)

    def weight_shapes(self, input_shape):
        self._expect_sequences(input_shape)
        four = 4 * self.units
        shapes = [("kernel", (input_shape[-1], four)), ("recurrent_kernel", (self.units, four))]
        return shapes + [("bias", (four,))] if self.use_bias else shapes

    def build(self, input_shape):
        self._expect_sequences(input_shape)
        four = 4 * self.units
        self._new("kernel", (input_shape[-1], four), self.kernel_initializer)
        self._new("recurrent_kernel", (self.units, four), self.recurrent_initializer)
        if self.use_bias:
            bias = self._new("bias", (four,), self.bias_initializer)
            if self.unit_forget_bias:
                bias.data[self.units:2 * self.units] = 1  # the forget gate's block

    def __call__(self, x, initial_state=None, training=None, activation=True):
        """lstm(x) or lstm(x, initial_state=[h0, c0]), as Keras; activation is Sequential's
        argument, with nothing to do here (the activations are inside the cell)."""
        if is_symbolic(x, initial_state):
            if initial_state is not None or self.return_state:
                raise ValueError(f"{self._owner}: in a functional graph initial_state and return_state=True are "
                                 f"not supported; call the layer on Tensors for them")
            return symbolic_call(self, (x,), {"training": training})
        if not isinstance(x, Tensor):
            x = self.as_input(x)
        self._build_once(x.shape)
        return self.forward(x, bool(training), initial_state)

    def forward(self, x, training=False, initial_state=None):
        self._expect_sequences(x.shape)
        kernel, recurrent_kernel, bias = (self._params.get(k) for k in ("kernel", "recurrent_kernel", "bias"))
        if x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"{self._owner}: built for {kernel.shape[0]} features, got input shape {x.shape}")
        n, steps, features = x.shape
        h, c = self._initial_state(initial_state, n)
        act, sigma = self.cell_activation[1], self.cell_recurrent_activation[1]
        if training and self.dropout:  # one mask per sequence, for all its steps (Keras's)
            x = x * F.dropout(np.ones((n, 1, features), dtype=x.dtype), self.dropout).data
        h_mask = F.dropout(np.ones((n, self.units), dtype=x.dtype), self.recurrent_dropout).data \
            if training and self.recurrent_dropout else None
        outputs = []
        for t in (reversed(range(steps)) if self.go_backwards else range(steps)):
            # x[:, t] rather than one matmul over all steps then slicing: each slice's backward
            # writes a gradient of its whole source, and x is narrower than x·kernel (in < 4·units).
            z = x[:, t] @ kernel + (h if h_mask is None else h * h_mask) @ recurrent_kernel
            z_i, z_f, z_c, z_o = (z + bias if bias is not None else z).split(self.units, axis=1)
            c = sigma(z_f) * c + sigma(z_i) * act(z_c)
            h = sigma(z_o) * act(c)
            outputs.append(h)
        output = F.stack(outputs, axis=1) if self.return_sequences else h
        return [output, h, c] if self.return_state else output

    def _initial_state(self, initial_state, n):
        shape = (n, self.units)
        if initial_state is None:
            return Tensor(np.zeros(shape, self.dtype)), Tensor(np.zeros(shape, self.dtype))
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            raise ValueError(f"{self._owner}: initial_state must be a list [h0, c0], got "
                             f"{type(initial_state).__name__}")
        states = [s if isinstance(s, Tensor) else Tensor(np.asarray(s, dtype=self.dtype)) for s in initial_state]
        for name, s in zip(("h0", "c0"), states):
            if s.shape != shape or s.dtype != self.dtype:
                raise ValueError(f"{self._owner}: initial_state {name} must be {self.dtype} of shape {shape}, got "
                                 f"{s.dtype} {s.shape}")
        return states

    def get_config(self):
        for (label, fn), name in ((self.cell_activation, "activation"),
                                  (self.cell_recurrent_activation, "recurrent_activation")):
            if label is None:
                raise ValueError(f"{self._owner}: a custom {name} ({getattr(fn, '__name__', fn)}) cannot be saved")
        return {**super().get_config(), "units": self.units, "activation": self.cell_activation[0],
                "recurrent_activation": self.cell_recurrent_activation[0], "use_bias": self.use_bias,
                **_initializers_config(self, ("kernel_initializer", "recurrent_initializer", "bias_initializer")),
                "unit_forget_bias": self.unit_forget_bias, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards}


# --------------------------------------------------------------------------- MultiHeadAttention
class MultiHeadAttention(_KerasWeights):
    """Keras's multi-head attention: mha(query, value, key=None, attention_mask=None,
    return_attention_scores=False, training=False, use_causal_mask=False) on query (B, T, dim),
    value (B, S, dim_v) and key (B, S, dim_k) (value when not given) → (B, T, out).

        q = query·W_q + b_q  (B, T, heads, key_dim)      W_q = query/kernel (dim, heads, key_dim)
        k = key·W_k + b_k    (B, S, heads, key_dim)
        v = value·W_v + b_v  (B, S, heads, value_dim)
        head h: A_h = softmax(q_h·k_hᵀ / √key_dim, where masked: −1e9),  o_h = dropout(A_h)·v_h
        output = Σ_h o_h·W_o[h] + b_o                     W_o = attention_output/kernel (heads, value_dim, out)

    out is the query's last dimension unless output_shape is given. attention_mask (B, T, S)
    (or (T, S)): True (or nonzero) where query t may attend to key s; use_causal_mask=True adds
    s ≤ t. A query with every key masked averages all values, as Keras's softmax does with its −1e9.
    return_attention_scores=True returns (output, A) with A (B, heads, T, S) before dropout.
    Inside a Sequential it is self-attention: mha(x) is mha(x, x). No Keras masks
    (query_mask, ...) and only 3-D inputs (no attention_axes).
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        self.num_heads = checks.int_at_least(num_heads, owner, "num_heads", 1)
        self.key_dim = checks.int_at_least(key_dim, owner, "key_dim", 1)
        self.value_dim = self.key_dim if value_dim is None else checks.int_at_least(value_dim, owner, "value_dim", 1)
        self.dropout = checks.fraction(dropout, owner, "dropout")
        self.use_bias = checks.flag(use_bias, owner, "use_bias")
        if output_shape is not None and not isinstance(output_shape, (list, tuple)):
            output_shape = (checks.int_at_least(output_shape, owner, "output_shape", 1),)
        self.attention_output_shape = None if output_shape is None else checks.shape(output_shape, owner,
                                                                                      "output_shape")
        if self.attention_output_shape == ():
            raise ValueError(f"{owner}: output_shape must be a positive int or a non-empty tuple of them, got "
                             f"{output_shape!r}")
        self.kernel_initializer = _initializer(kernel_initializer, owner, "kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, owner, "bias_initializer")

    def _shapes(self, query_shape, value_shape, key_shape):
        value_shape = query_shape if value_shape is None else tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3:
                raise ValueError(f"{self._owner}: {name} must be (batch, time, features), got shape {tuple(shape)}")
        if key_shape[1] != value_shape[1]:
            raise ValueError(f"{self._owner}: key and value must have as many steps, got shapes {tuple(key_shape)} "
                             f"and {tuple(value_shape)}")
        return tuple(query_shape), value_shape, key_shape

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        query_shape, _, _ = self._shapes(query_shape, value_shape, key_shape)
        return query_shape[:2] + (self.attention_output_shape or query_shape[2:])

    def weight_shapes(self, query_shape, value_shape=None, key_shape=None):
        query_shape, value_shape, key_shape = self._shapes(query_shape, value_shape, key_shape)
        heads, out = self.num_heads, self.attention_output_shape or query_shape[2:]
        shapes = []
        for name, dim, size in (("query", query_shape[-1], self.key_dim), ("key", key_shape[-1], self.key_dim),
                                ("value", value_shape[-1], self.value_dim)):
            shapes.append((f"{name}/kernel", (dim, heads, size)))
            if self.use_bias:
                shapes.append((f"{name}/bias", (heads, size)))
        shapes.append(("attention_output/kernel", (heads, self.value_dim) + out))
        return shapes + [("attention_output/bias", out)] if self.use_bias else shapes

    def build(self, query_shape, value_shape=None, key_shape=None):
        for name, shape in self.weight_shapes(query_shape, value_shape, key_shape):
            self._new(name, shape, self.kernel_initializer if name.endswith("kernel") else self.bias_initializer)

    def __call__(self, query, value=None, key=None, attention_mask=None, return_attention_scores=False,
                 training=None, use_causal_mask=False, activation=True):
        """Keras's call; value=None is self-attention (how a Sequential calls it), key=None uses value."""
        if is_symbolic(query, value, key, attention_mask):
            if attention_mask is not None or return_attention_scores:
                raise ValueError(f"{self._owner}: in a functional graph attention_mask and return_attention_scores "
                                 f"are not supported (use_causal_mask=True is); call the layer on Tensors for them")
            tensors = {name: t for name, t in (("value", value), ("key", key)) if t is not None}
            return symbolic_call(self, (query,), {**tensors, "training": training, "use_causal_mask": use_causal_mask})
        query = query if isinstance(query, Tensor) else self.as_input(query)
        value = query if value is None else value if isinstance(value, Tensor) else self.as_input(value)
        key = value if key is None else key if isinstance(key, Tensor) else self.as_input(key)
        self._shapes(query.shape, value.shape, key.shape)
        self._build_once(query.shape, value.shape, key.shape)
        planned = [s for _, s in self.weight_shapes(query.shape, value.shape, key.shape)]
        if [p.shape for p in self._params.values()] != planned:
            raise ValueError(f"{self._owner} was built for other feature sizes; got query, value, key shapes "
                             f"{query.shape}, {value.shape}, {key.shape}")
        mask = self._mask(attention_mask, checks.flag(use_causal_mask, self._owner, "use_causal_mask"),
                          query.shape, key.shape)
        output, weights = self._attend(query, value, key, mask, bool(training))
        return (output, weights) if checks.flag(return_attention_scores, self._owner,
                                                "return_attention_scores") else output

    def forward(self, x, training=False):  # Layer's interface: self-attention
        return self._attend(x, x, x, None, training)[0]

    def _project(self, x, name):
        """x (B, T, dim) → (B, heads, T, size) with the (dim, heads, size) kernel `name`: one 2-D matmul."""
        kernel, bias = self._params[f"{name}/kernel"], self._params.get(f"{name}/bias")
        (b, steps, dim), (_, heads, size) = x.shape, kernel.shape
        y = x.reshape(b * steps, dim) @ kernel.reshape(dim, heads * size)
        if bias is not None:
            y = y + bias.reshape(heads * size)
        return y.reshape(b, steps, heads, size).permute(0, 2, 1, 3)

    def _attend(self, query, value, key, mask, training):
        q = self._project(query, "query") * (1.0 / math.sqrt(self.key_dim))  # Keras scales q first
        k, v = self._project(key, "key"), self._project(value, "value")
        scores = q @ k.transpose(-2, -1)  # (B, heads, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, MASKED_SCORE)
        weights = F.softmax(scores, -1)
        dropped = F.dropout(weights, self.dropout, training) if self.dropout else weights
        b, heads, steps, _ = weights.shape
        merged = (dropped @ v).permute(0, 2, 1, 3).reshape(b * steps, heads * self.value_dim)
        kernel, bias = self._params["attention_output/kernel"], self._params.get("attention_output/bias")
        out = kernel.shape[2:]
        y = merged @ kernel.reshape(heads * self.value_dim, math.prod(out))
        if bias is not None:
            y = y + bias.reshape(math.prod(out))
        return y.reshape((b, steps) + out), weights

    def _mask(self, attention_mask, causal, query_shape, key_shape):
        """The boolean mask (B or 1, 1, T, S), True where a query may attend to a key, or None."""
        b, steps, source = query_shape[0], query_shape[1], key_shape[1]
        mask = None
        if attention_mask is not None:
            given = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
            if given.ndim not in (2, 3) or given.shape[-2:] != (steps, source) or \
                    (given.ndim == 3 and given.shape[0] not in (1, b)):
                raise ValueError(f"{self._owner}: attention_mask must be of shape ({b}, {steps}, {source}) (batch, "
                                 f"query steps, key steps) or ({steps}, {source}), got {given.shape}")
            mask = given.astype(bool).reshape((-1, 1, steps, source))
        if causal:  # key s ≤ query t (Keras's, also when T ≠ S)
            lower = np.tri(steps, source, dtype=bool).reshape(1, 1, steps, source)
            mask = lower if mask is None else mask & lower
        return mask

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": None if self.attention_output_shape is None else list(self.attention_output_shape),
                **_initializers_config(self)}


# --------------------------------------------------------------------------- GlobalAveragePooling1D
class GlobalAveragePooling1D(Layer):
    """The mean over the time axis: (batch, steps, features) → (batch, features), or
    (batch, 1, features) with keepdims=True; data_format='channels_first' takes (batch, features,
    steps). No parameters."""

    def __init__(self, data_format="channels_last", keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"{self._owner}: data_format must be 'channels_last' or 'channels_first', "
                             f"got {data_format!r}")
        self.data_format = data_format
        self.keepdims = checks.flag(keepdims, self._owner, "keepdims")

    @property
    def _time_axis(self):
        return 1 if self.data_format == "channels_last" else 2

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 3, "(batch, steps, features)" if self._time_axis == 1 else
                          "(batch, features, steps)")
        shape = list(input_shape)
        if self.keepdims:
            shape[self._time_axis] = 1
        else:
            del shape[self._time_axis]
        return tuple(shape)

    def forward(self, x, training=False):
        self.compute_output_shape(x.shape)
        return x.mean(axis=self._time_axis, keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}
