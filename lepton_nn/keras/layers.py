"""Keras layers as thin wrappers over lepton_nn.nn (which calls lepton_nn.functional).

Keras is channels-last: images are (batch, height, width, channels). lepton_nn's kernels are
NCHW, so Conv2D and the pooling layers transpose at their boundary,

    (N, H, W, C) --permute(0, 3, 1, 2)--> nn module --permute(0, 2, 3, 1)--> (N, H', W', C')

The permutes are views and their backward is the inverse permute, but the compiled kernels
(C, Numba) want C-contiguous NCHW arrays and copy a strided view first. So Conv2D applies an
elementwise activation (relu, sigmoid, tanh) before permuting back, and a pooling layer right
after a Conv2D gets its NCHW input contiguous again (the two permutes cancel). What remains in
the classic MNIST CNN: Flatten copies the (N, 13, 13, 32) pooled output into Keras's (H, W, C)
order, and max-pool backward copies its permuted gradient. A softmax on Conv2D stays
channels-last (it normalises over the channel axis).

A layer is built on first call (or when the model knows its input shape): `build` reads the
input's shape and creates the nn module, initialised as Keras does (Glorot-uniform kernels,
zero biases, from lepton_nn.rng — seed it with lepton_nn.seed or keras.utils.set_random_seed).

Dense and Conv2D keep lepton_nn's layout, not Keras's: a Conv2D kernel is (filters, C_in, kH, kW)
(Keras: (kH, kW, C_in, filters)) and a Dense kernel (units, in_features) (Keras: (in, units)).
get_weights / set_weights use this layout. The sequence layers (Embedding, LSTM,
MultiHeadAttention, LayerNormalization, GlobalAveragePooling1D: keras/sequence.py, exported here)
keep Keras's names, shapes and order instead; their docstring says why and how they map onto nn's.

Every constructor argument is checked when the layer is made (lepton_nn/checks.py: a positive
int, a fraction in [0, 1), a flag, a shape...), so a bad value fails at once, naming the layer,
the argument, what was expected and what was given; load_model runs the same checks on a file.
compute_output_shape and weight_shapes give a layer's shapes without building it, so a model
(and load_model's check of a file) allocates nothing but its weights.

Called on a KerasTensor (keras.Input(...) or another call's output), a layer computes nothing:
it is built for the shape and the call is recorded for a functional model (keras/functional.py).
Add and Concatenate take a list of tensors, so they belong in functional models only.
"""
import functools
import math
import operator
import re
from collections import Counter

import numpy as np

from lepton_nn import checks, nn
from lepton_nn import functional as F
from lepton_nn.keras import functional
from lepton_nn.nn import init
from lepton_nn.tensor import Tensor, no_grad

_name_counts = Counter()


def _unique_name(base):
    """conv2d, conv2d_1, conv2d_2, ... per process, as Keras names layers."""
    count = _name_counts[base]
    _name_counts[base] += 1
    return base if count == 0 else f"{base}_{count}"


def _snake(class_name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", class_name).lower()


def _padding(value, layer):
    padding = value.lower() if isinstance(value, str) else None
    if padding not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {value!r}")
    return padding


def _initializer(value, layer, name):
    """A name lepton_nn.nn.init knows, or a function (which cannot be saved)."""
    if not callable(value) and not (isinstance(value, str) and value in init.BY_NAME):
        raise ValueError(f"{layer}: {name} must be one of {', '.join(init.BY_NAME)} or a function, got {value!r}")
    return value


def _initializers_config(layer, names=("kernel_initializer", "bias_initializer")):
    """A layer's initialisers (the attributes `names`) for get_config; a function cannot be saved."""
    config = {name: getattr(layer, name) for name in names}
    for name, value in config.items():
        if callable(value):  # else json fails mid-save with "function is not JSON serializable"
            raise ValueError(f"{layer._owner}: a custom {name} ({getattr(value, '__name__', value)}) cannot be saved")
    return config


def _window_output(layer, input_shape, window, strides, padding, kind):
    """(N, H', W', C) of a conv or pooling window: H' = ⌈H/stride⌉ with 'same', ⌊(H − k)/stride⌋ + 1
    with 'valid' (the formulas of nn.layers)."""
    n, h, w, c = input_shape
    if padding == "valid" and (h < window[0] or w < window[1]):
        raise ValueError(f"{layer}: input {h}×{w} is smaller than the {kind} {window[0]}×{window[1]} "
                         f"(padding='valid'), input shape {tuple(input_shape)}")
    if padding == "same":
        return n, -(-h // strides[0]), -(-w // strides[1]), c
    return n, (h - window[0]) // strides[0] + 1, (w - window[1]) // strides[1] + 1, c


# --------------------------------------------------------------------------- activations
# name → (its nn module, whether it acts on each element alone, so that any layout will do)
ACTIVATIONS = {"relu": (nn.ReLU, True), "sigmoid": (nn.Sigmoid, True), "tanh": (nn.Tanh, True),
               "leaky_relu": (functools.partial(nn.LeakyReLU, 0.2), True),  # Keras's activation: slope 0.2
               "softmax": (nn.Softmax, False)}
LAYERS = {}  # class name → class, for deserialize: every Layer subclass registers itself


def get_activation(identifier, owner="get_activation"):
    """(name, callable or None) for 'relu', 'sigmoid', 'tanh', 'softmax', 'linear'/None, or a
    callable on Tensors (which cannot be saved). Softmax is over the last axis."""
    if identifier is None or identifier == "linear":
        return "linear", None
    if isinstance(identifier, str):
        if identifier not in ACTIVATIONS:
            raise ValueError(f"{owner}: unknown activation {identifier!r}; known: linear, {', '.join(ACTIVATIONS)}")
        return identifier, ACTIVATIONS[identifier][0]()
    if callable(identifier):
        return getattr(identifier, "__name__", type(identifier).__name__), identifier
    raise ValueError(f"{owner}: activation must be a name or a callable, got {identifier!r}")


def nhwc_to_nchw(x):
    return x.permute(0, 3, 1, 2)


def nchw_to_nhwc(x):
    return x.permute(0, 2, 3, 1)


# --------------------------------------------------------------------------- base
class Layer:
    """Base: naming, dtype, lazy build, the optional activation, weights and freezing.

    Subclasses define `build(input_shape)` (create the nn module, input_shape with the batch axis)
    and `forward(x, training)`, the part before the activation. Calling the layer applies both;
    `layer(x, activation=False)` stops before the activation (used by the fused softmax +
    cross-entropy, see models.py). Called on a KerasTensor (keras.Input's), a layer computes
    nothing: it is built for the shape and the call is recorded in a graph (keras/functional.py).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            LAYERS[cls.__name__] = cls

    def __init__(self, activation=None, name=None, trainable=True, dtype=None, input_shape=None):
        if name is not None and (not isinstance(name, str) or not name or "/" in name):  # '/' joins weight names
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string without '/', got {name!r}")
        self.name = name or _unique_name(_snake(type(self).__name__))
        owner = self._owner
        try:
            self.dtype = np.dtype("float32" if dtype is None else dtype)
        except (TypeError, ValueError):
            raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype!r}") from None
        checks.compute_dtype(self.dtype, owner, "dtype")  # what every kernel computes in
        self.input_shape_arg = None if input_shape is None else checks.shape(input_shape, owner, "input_shape")
        self.activation_name, self.activation = get_activation(activation, owner)
        self.built = False
        self.output_shape = None  # (None, ...), set when the model builds
        self._trainable = checks.flag(trainable, owner, "trainable")
        self._inbound_nodes = []  # its calls on KerasTensors (functional.Node), in order

    @property
    def _owner(self):
        """How errors name this layer: "Dense 'dense_1'"."""
        return f"{type(self).__name__} {self.name!r}"

    # ------------------------------------------------------------------ calling
    def build(self, input_shape):
        pass

    def forward(self, x, training=False):
        raise NotImplementedError

    def __call__(self, x, training=None, activation=True):
        """The layer on x (an array or Tensor), or on a KerasTensor: a node of a functional graph.
        training: True in fit (dropout on), False or None otherwise."""
        if functional.is_symbolic(x):
            return functional.symbolic_call(self, (x,), {"training": training})
        if not isinstance(x, Tensor):
            x = self.as_input(x)
        self._build_once(x.shape)
        return self._forward_and_activate(x, bool(training), self.activation if activation else None)

    def as_input(self, x):
        """x (an array or nested lists) as the Tensor this layer takes: cast to the layer's dtype.
        Sequential casts its input with its first layer's as_input (Embedding keeps integers)."""
        return Tensor(np.asarray(x, dtype=self.dtype))

    def check_place_in_sequential(self, first):
        """Raise ValueError if this layer cannot be a Sequential's layer there (`first`: the first
        one). Any place will do for most; not for Embedding (only first) or LSTM(return_state=True)."""

    def _build_once(self, input_shape, *more_shapes):
        if not self.built:
            self.build(tuple(input_shape), *more_shapes)  # more: MultiHeadAttention's value and key
            self.built = True
            self.trainable = self._trainable  # apply the flag to the weights just made

    def output_dtype(self, input_dtypes):
        """The dtype name of what the layer returns, for a KerasTensor: its own (it computes in it)."""
        return self.dtype.name

    @property
    def output(self):
        """The KerasTensor this layer returned when it was called on one (once only; Keras's)."""
        return self._only_node("output").outputs[0]

    @property
    def input(self):
        """The KerasTensor this layer was called on (once only; Keras's)."""
        node = self._only_node("input")
        return node.input_tensors[0] if len(node.input_tensors) == 1 else node.input_tensors

    def _only_node(self, what):
        if len(self._inbound_nodes) != 1 or (what == "output" and len(self._inbound_nodes[0].outputs) != 1):
            raise ValueError(f"{self._owner}: layer.{what} needs a layer called exactly once on KerasTensors "
                             f"(keras.Input(...) or a layer's output), with one output; this one has "
                             f"{len(self._inbound_nodes)} such call(s)")
        return self._inbound_nodes[0]

    def compute_output_shape(self, input_shape):
        """The output's shape, batch axis included, for an input of input_shape (batch may be None).
        This default runs a zero batch of one through the layer; the built-in layers compute it,
        so a model (and load_model's check of a file) allocates nothing but its weights."""
        with no_grad():
            y = self(np.zeros((1,) + tuple(input_shape[1:]), dtype=self.dtype))
        return (input_shape[0],) + tuple(y.shape[1:])

    def weight_shapes(self, input_shape):
        """[(name, shape)] of the weights build(input_shape) makes. This default builds the layer
        to see them; Dense and Conv2D compute them, so load_model checks a file before allocating."""
        self._build_once(input_shape)
        return [(name, tuple(p.shape)) for name, p in self.named_weights()]

    def _forward_and_activate(self, x, training, activation):
        y = self.forward(x, training)
        return activation(y) if activation is not None else y

    def fused_with(self, following):
        """(fn, k) when this layer and the first k of `following` can run as one fused op fn
        on built layers, else None (the default). Used by Sequential; see Conv2D."""
        return None

    def _expect_rank(self, shape, rank, layout):
        if len(shape) != rank:
            raise ValueError(f"{self._owner}: expected input {layout}, got shape {tuple(shape)}")

    # ------------------------------------------------------------------ weights
    def named_weights(self):
        """[(name, Parameter)] with Keras's names: 'kernel' and 'bias'."""
        module = getattr(self, "module", None)
        if module is None:
            return []
        names = {"weight": "kernel", "bias": "bias"}
        return [(names.get(n, n), p) for n, p in module.named_parameters()]

    @property
    def weights(self):
        return [p for _, p in self.named_weights()]

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """False freezes the layer: its weights move to non_trainable_weights and stop requiring
        gradients. fit follows the flags as they were at compile (Keras's rule: compile again after
        changing them; keras/models.py, Model.compile)."""
        self._trainable = bool(value)
        self._sync_requires_grad()

    def _sync_requires_grad(self):
        """requires_grad = whether the weight is in trainable_weights now (a layer with weights
        that are never trained, such as moving statistics, keeps them False)."""
        trainable = {id(p) for p in self.trainable_weights}
        for p in self.weights:
            p.requires_grad = id(p) in trainable

    @property
    def trainable_weights(self):
        return self.weights if self._trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self._trainable else self.weights

    def count_params(self):
        return int(sum(p.size for p in self.weights))

    def get_weights(self):
        return [p.data.copy() for p in self.weights]

    def set_weights(self, arrays):
        weights = self.weights
        if len(arrays) != len(weights):
            raise ValueError(f"{self.name}: set_weights got {len(arrays)} arrays for {len(weights)} weights")
        for p, a in zip(weights, arrays):
            a = np.asarray(a)
            if a.shape != p.shape:
                raise ValueError(f"{self.name}: weight of shape {p.shape} cannot take an array of shape {a.shape}")
            np.copyto(p.data, a, casting="same_kind")

    # ------------------------------------------------------------------ config
    def get_config(self):
        """The constructor's arguments (JSON-able), enough to rebuild the layer."""
        config = {"name": self.name, "trainable": self._trainable, "dtype": self.dtype.name}
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def _from_checked_config(cls, arguments, depth):
        """from_config once the arguments fit the constructor's signature (load_model's path)."""
        checks.constructor_arguments(cls, arguments, f"layer {cls.__name__}")
        return cls.from_config(dict(arguments))

    def _activation_config(self):
        if self.activation is not None and self.activation_name not in ACTIVATIONS:
            raise ValueError(f"{self.name}: a custom activation ({self.activation_name}) cannot be saved")
        return self.activation_name

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


class _SameShape(Layer):
    """A layer whose output has its input's shape (elementwise, or the identity)."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


# --------------------------------------------------------------------------- layers
class InputLayer(_SameShape):
    """The input's shape without the batch axis; made by keras.Input(shape=...). dtype may be an
    integer type too, as Keras's Input(shape=(T,), dtype='int32') of token ids for an Embedding:
    the model casts its input for its first layer (Layer.as_input) whatever the Input says."""

    def __init__(self, shape=None, batch_size=None, name=None, dtype=None, input_shape=None):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input: shape is required, e.g. Input(shape=(28, 28, 1))")
        integer = dtype is not None and _is_integer_dtype(dtype)
        super().__init__(name=name, dtype=None if integer else dtype, input_shape=shape)
        if integer:
            self.dtype = np.dtype(dtype)
        if batch_size is not None:
            batch_size = checks.int_at_least(batch_size, self._owner, "batch_size", 1)
        self.batch_size = batch_size
        self.shape = (batch_size,) + self.input_shape_arg
        self.built = True

    def forward(self, x, training=False):
        return x

    def get_config(self):
        return {"name": self.name, "shape": list(self.input_shape_arg), "batch_size": self.batch_size,
                "dtype": self.dtype.name}


def _is_integer_dtype(dtype):
    try:
        return np.dtype(dtype).kind in "iu"
    except (TypeError, ValueError):
        return False


def Input(shape=None, batch_size=None, name=None, dtype=None):
    """keras.Input(shape=(28, 28, 1)): a KerasTensor of shape (None, 28, 28, 1) (batch_size, if
    given, in place of None) and dtype 'float32' unless given, made by an InputLayer. It starts a
    functional graph (keras.Model(inputs, outputs)) or, first in a Sequential, declares its input
    shape."""
    return functional.input_tensor(InputLayer(shape=shape, batch_size=batch_size, name=name, dtype=dtype))


class Conv2D(Layer):
    """2-D convolution of channels-last images: (N, H, W, C) → (N, H', W', filters).

    H' = ⌈H / stride⌉ with padding='same', ⌊(H − kH)/stride⌋ + 1 with 'valid'.
    Wraps nn.Conv2d (→ functional.conv2d; equation in kernels/reference.py).
    Parameters: filters·(kH·kW·C + 1) with a bias.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        owner = self._owner
        self.filters = checks.int_at_least(filters, owner, "filters", 1)
        self.kernel_size = checks.pair(kernel_size, owner, "kernel_size", minimum=1)
        self.strides = checks.pair(strides, owner, "strides", minimum=1)
        self.padding = _padding(padding, owner)
        self.use_bias = checks.flag(use_bias, owner, "use_bias")
        self.kernel_initializer = _initializer(kernel_initializer, owner, "kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, owner, "bias_initializer")

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        return _window_output(self._owner, input_shape, self.kernel_size, self.strides, self.padding,
                              "kernel")[:3] + (self.filters,)

    def weight_shapes(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        kernel = ("kernel", (self.filters, input_shape[-1]) + self.kernel_size)
        return [kernel, ("bias", (self.filters,))] if self.use_bias else [kernel]

    def build(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        self.module = nn.Conv2d(input_shape[-1], self.filters, self.kernel_size, self.strides, self.padding,
                                bias=self.use_bias, dtype=self.dtype, weight_init=init.get(self.kernel_initializer),
                                bias_init=init.get(self.bias_initializer))

    def forward(self, x, training=False):
        self._expect_rank(x.shape, 4, "(batch, height, width, channels)")
        return nchw_to_nhwc(self.module(nhwc_to_nchw(x)))

    def _forward_and_activate(self, x, training, activation):
        if not ACTIVATIONS.get(self.activation_name, (None, False))[1] or activation is None:
            return super()._forward_and_activate(x, training, activation)
        # An elementwise activation commutes with the permute, so apply it while the output is
        # still contiguous NCHW: on the permuted view it would force transposing copies (forward
        # and backward) on the compiled backends.
        self._expect_rank(x.shape, 4, "(batch, height, width, channels)")
        return nchw_to_nhwc(activation(self.module(nhwc_to_nchw(x))))

    def fused_with(self, following):
        """This layer and a MaxPooling2D after it, as the nn modules they run (conv, activation,
        pool), fused where nn.Conv2d.fused_with says they can be (conv → relu → max-pool
        without padding: functional.conv2d_relu_max_pool2d, the conv output never stored)."""
        if self.activation is None or not following or not isinstance(following[0], MaxPooling2D) \
                or following[0].activation is not None:
            return None
        fused = self.module.fused_with([self.activation, following[0].pool])
        if fused is None or fused[1] != 2:
            return None
        fn = fused[0]
        return (lambda x: nchw_to_nhwc(fn(nhwc_to_nchw(x)))), 1

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "activation": self._activation_config(),
                "use_bias": self.use_bias, **_initializers_config(self)}


class Dense(Layer):
    """y = activation(x·W + b) on the last axis: (..., in) → (..., units). Wraps nn.Linear.
    Parameters: units·(in + 1) with a bias."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        owner = self._owner
        self.units = checks.int_at_least(units, owner, "units", 1)
        self.use_bias = checks.flag(use_bias, owner, "use_bias")
        self.kernel_initializer = _initializer(kernel_initializer, owner, "kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, owner, "bias_initializer")

    def compute_output_shape(self, input_shape):
        self._expect_features(input_shape)
        return tuple(input_shape[:-1]) + (self.units,)

    def weight_shapes(self, input_shape):
        self._expect_features(input_shape)
        kernel = ("kernel", (self.units, input_shape[-1]))
        return [kernel, ("bias", (self.units,))] if self.use_bias else [kernel]

    def _expect_features(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self._owner}: expected input (batch, ..., features), got shape {tuple(input_shape)}")

    def build(self, input_shape):
        self._expect_features(input_shape)
        self.module = nn.Linear(input_shape[-1], self.units, bias=self.use_bias, dtype=self.dtype,
                                weight_init=init.get(self.kernel_initializer),
                                bias_init=init.get(self.bias_initializer))

    def forward(self, x, training=False):
        return self.module(x)

    def _forward_and_activate(self, x, training, activation):
        if isinstance(activation, nn.ReLU):  # folded into the layer's GEMM (functional.linear_relu)
            return F.linear_relu(x, self.module.weight, self.module.bias)
        return super()._forward_and_activate(x, training, activation)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self._activation_config(),
                "use_bias": self.use_bias, **_initializers_config(self)}


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        self.pool_size = checks.pair(pool_size, owner, "pool_size", minimum=1)
        self.strides = self.pool_size if strides is None else checks.pair(strides, owner, "strides", minimum=1)
        self.padding = _padding(padding, owner)

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        return _window_output(self._owner, input_shape, self.pool_size, self.strides, self.padding, "pool")

    def forward(self, x, training=False):
        self._expect_rank(x.shape, 4, "(batch, height, width, channels)")
        return nchw_to_nhwc(self.pool(nhwc_to_nchw(x)))

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    """Max over pool_size windows of channels-last images; strides default to pool_size.
    Wraps nn.MaxPool2d (→ functional.max_pool2d). No parameters."""

    def build(self, input_shape):
        self.pool = nn.MaxPool2d(self.pool_size, self.strides, self.padding)


class AveragePooling2D(_Pooling2D):
    """Mean over pool_size windows; with padding='same' padded cells are not counted (Keras).
    Wraps nn.AvgPool2d (→ functional.avg_pool2d). No parameters."""

    def build(self, input_shape):
        self.pool = nn.AvgPool2d(self.pool_size, self.strides, self.padding, count_include_pad=False)


class Flatten(Layer):
    """(N, d1, d2, ...) → (N, d1·d2·...), row-major: for (N, H, W, C), the channel varies fastest
    (Keras's order, which is why a Dense after Flatten differs from PyTorch's (C, H, W) order)."""

    def compute_output_shape(self, input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))

    def build(self, input_shape):
        self.flatten = nn.Flatten(1)

    def forward(self, x, training=False):
        return self.flatten(x)


class Dropout(_SameShape):
    """During fit, zero each input with probability `rate` and scale the rest by 1/(1 − rate);
    the identity in evaluate and predict. Wraps nn.Dropout (→ functional.dropout)."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = checks.fraction(rate, self._owner, "rate")

    def build(self, input_shape):
        self.dropout = nn.Dropout(self.rate)

    def forward(self, x, training=False):
        self.dropout.train(training)
        return self.dropout(x)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class Activation(_SameShape):
    """Apply an activation by name: Activation('relu'), Activation('softmax'), ..."""

    def __init__(self, activation, **kwargs):
        super().__init__(activation=activation, **kwargs)

    def forward(self, x, training=False):
        return x

    def get_config(self):
        return {**super().get_config(), "activation": self._activation_config()}


class ReLU(Activation):
    def __init__(self, **kwargs):
        kwargs.pop("activation", None)
        super().__init__("relu", **kwargs)

    def get_config(self):
        return Layer.get_config(self)


class LeakyReLU(_SameShape):
    """x where x > 0, negative_slope·x elsewhere, elementwise; Keras's default slope 0.3.
    Wraps nn.LeakyReLU (→ functional.leaky_relu). No parameters."""

    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = checks.finite_number(negative_slope, self._owner, "negative_slope", minimum=0)

    def build(self, input_shape):
        self.leaky_relu = nn.LeakyReLU(self.negative_slope)

    def forward(self, x, training=False):
        return self.leaky_relu(x)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class Softmax(Activation):
    """Softmax over the last axis (the only axis supported)."""

    def __init__(self, axis=-1, **kwargs):
        if axis != -1:
            raise ValueError(f"Softmax: only axis=-1 is supported, got {axis}")
        kwargs.pop("activation", None)
        super().__init__("softmax", **kwargs)

    def get_config(self):
        return Layer.get_config(self)


# --------------------------------------------------------------------------- merging layers
class _Merge(Layer):
    """A layer of a list of at least two tensors, as Keras's: layer([a, b, ...]). Only in
    functional models (a Sequential passes one tensor on). No parameters; the output has the
    inputs' dtype."""

    def __call__(self, inputs, training=None, activation=True):
        if functional.is_symbolic(inputs):
            return functional.symbolic_call(self, (inputs,), {"training": training})
        self._expect_list(inputs)
        tensors = [t if isinstance(t, Tensor) else self.as_input(t) for t in inputs]
        self.compute_output_shape([t.shape for t in tensors])
        self._build_once([t.shape for t in tensors])
        return self._forward_and_activate(tensors, bool(training), self.activation if activation else None)

    def _expect_list(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{self._owner}: expected a list of at least 2 tensors, e.g. "
                             f"{type(self).__name__}()([a, b]), got {type(inputs).__name__}")

    def check_place_in_sequential(self, first):
        raise ValueError(f"{self._owner} takes a list of tensors, but a Sequential model passes one tensor from layer "
                         f"to layer; use it in a functional model: keras.Model(inputs, outputs)")

    def weight_shapes(self, input_shapes):
        return []

    def output_dtype(self, input_dtypes):
        return input_dtypes[0]


class Add(_Merge):
    """The elementwise sum of equally shaped tensors: Add()([a, b]) = a + b, (batch, ...) each.
    Its gradient reaches every input unchanged (a residual connection's skip path)."""

    def compute_output_shape(self, input_shapes):
        self._expect_list(input_shapes)
        first = tuple(input_shapes[0])
        for shape in input_shapes[1:]:
            if len(shape) != len(first) or any(a != b and None not in (a, b) for a, b in zip(first, shape)):
                raise ValueError(f"{self._owner}: inputs must have the same shape, got "
                                 f"{', '.join(str(tuple(s)) for s in input_shapes)}")
        return first

    def forward(self, inputs, training=False):
        return functools.reduce(operator.add, inputs)


class Concatenate(_Merge):
    """Join tensors along `axis` (default the last): (batch, ..., d_i, ...) → (batch, ..., Σ d_i, ...),
    every other dimension equal. functional.cat, whose backward cuts the gradient at the same
    boundaries. The batch axis cannot be the axis."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"{self._owner}: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def _axis(self, rank):
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._owner}: axis {self.axis} must name an axis of the inputs other than the "
                             f"batch axis 0; the inputs have {rank} axes")
        return self.axis % rank

    def compute_output_shape(self, input_shapes):
        self._expect_list(input_shapes)
        first = tuple(input_shapes[0])
        axis = self._axis(len(first))
        for shape in input_shapes[1:]:
            if len(shape) != len(first) or any(a != b and None not in (a, b) for i, (a, b) in
                                               enumerate(zip(first, shape)) if i != axis):
                raise ValueError(f"{self._owner}: inputs must have equal dimensions but along axis {self.axis}, "
                                 f"got {', '.join(str(tuple(s)) for s in input_shapes)}")
        return first[:axis] + (sum(s[axis] for s in input_shapes),) + first[axis + 1:]

    def forward(self, inputs, training=False):
        return F.cat(inputs, self._axis(inputs[0].ndim))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def deserialize(config, depth=0):
    """A layer (or a model: keras/models.py) from {'class_name': ..., 'config': {...}} (what
    models save). The arguments must fit the constructor's signature, and then pass its checks:
    ValueError otherwise. depth: how many models the config sits in (models nest)."""
    name = config.get("class_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r} in {config!r:.200}; known: {', '.join(LAYERS)}")
    return LAYERS[name]._from_checked_config(config.get("config", {}), depth)


def serialize(layer):
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


# The sequence and normalisation layers live in their own files; imported last, as they subclass Layer.
from lepton_nn.keras.normalization import BatchNormalization  # noqa: E402,F401
from lepton_nn.keras.sequence import (  # noqa: E402,F401
    LSTM, Embedding, GlobalAveragePooling1D, LayerNormalization, MultiHeadAttention)
