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

Weights keep lepton_nn's layout, not Keras's: a Conv2D kernel is (filters, C_in, kH, kW)
(Keras: (kH, kW, C_in, filters)) and a Dense kernel (units, in_features) (Keras: (in, units)).
get_weights / set_weights use this layout.
"""
import functools
import re
from collections import Counter

import numpy as np

from lepton_nn import checks, nn
from lepton_nn.nn import init
from lepton_nn.tensor import Tensor

_name_counts = Counter()


def _unique_name(base):
    """conv2d, conv2d_1, conv2d_2, ... per process, as Keras names layers."""
    count = _name_counts[base]
    _name_counts[base] += 1
    return base if count == 0 else f"{base}_{count}"


def _snake(class_name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", class_name).lower()


def _padding(value, layer):
    padding = str(value).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {value!r}")
    return padding


# --------------------------------------------------------------------------- activations
# name → (its nn module, whether it acts on each element alone, so that any layout will do)
ACTIVATIONS = {"relu": (nn.ReLU, True), "sigmoid": (nn.Sigmoid, True), "tanh": (nn.Tanh, True),
               "leaky_relu": (functools.partial(nn.LeakyReLU, 0.2), True),  # Keras's activation: slope 0.2
               "softmax": (nn.Softmax, False)}
LAYERS = {}  # class name → class, for deserialize: every Layer subclass registers itself


def get_activation(identifier):
    """(name, callable or None) for 'relu', 'sigmoid', 'tanh', 'softmax', 'linear'/None, or a
    callable on Tensors (which cannot be saved). Softmax is over the last axis."""
    if identifier is None or identifier == "linear":
        return "linear", None
    if isinstance(identifier, str):
        if identifier not in ACTIVATIONS:
            raise ValueError(f"unknown activation {identifier!r}; known: linear, {', '.join(ACTIVATIONS)}")
        return identifier, ACTIVATIONS[identifier][0]()
    if callable(identifier):
        return getattr(identifier, "__name__", type(identifier).__name__), identifier
    raise ValueError(f"activation must be a name or a callable, got {identifier!r}")


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
    cross-entropy, see models.py).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            LAYERS[cls.__name__] = cls

    def __init__(self, activation=None, name=None, trainable=True, dtype=None, input_shape=None):
        self.name = name or _unique_name(_snake(type(self).__name__))
        self.dtype = np.dtype(dtype or "float32")
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"{self.name}: dtype must be a float type, got {self.dtype}")
        self.input_shape_arg = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.activation_name, self.activation = get_activation(activation)
        self.built = False
        self.output_shape = None  # (None, ...), set when the model builds
        self._trainable = bool(trainable)

    # ------------------------------------------------------------------ calling
    def build(self, input_shape):
        pass

    def forward(self, x, training=False):
        raise NotImplementedError

    def __call__(self, x, training=False, activation=True):
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x, dtype=self.dtype))
        if not self.built:
            self.build(x.shape)
            self.built = True
            self.trainable = self._trainable  # apply the flag to the weights just made
        return self._forward_and_activate(x, training, self.activation if activation else None)

    def _forward_and_activate(self, x, training, activation):
        y = self.forward(x, training)
        return activation(y) if activation is not None else y

    def fused_with(self, following):
        """(fn, k) when this layer and the first k of `following` can run as one fused op fn
        on built layers, else None (the default). Used by Sequential; see Conv2D."""
        return None

    def _expect_rank(self, shape, rank, layout):
        if len(shape) != rank:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expected input {layout}, got shape {tuple(shape)}")

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
        """False freezes the layer: its weights stop requiring gradients, so fit leaves them alone."""
        self._trainable = bool(value)
        for p in self.weights:
            p.requires_grad = self._trainable

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

    def _activation_config(self):
        if self.activation is not None and self.activation_name not in ACTIVATIONS:
            raise ValueError(f"{self.name}: a custom activation ({self.activation_name}) cannot be saved")
        return self.activation_name

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


# --------------------------------------------------------------------------- layers
class InputLayer(Layer):
    """The input's shape without the batch axis; made by keras.Input(shape=...)."""

    def __init__(self, shape=None, batch_size=None, name=None, dtype=None, input_shape=None):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input: shape is required, e.g. Input(shape=(28, 28, 1))")
        super().__init__(name=name, dtype=dtype, input_shape=shape)
        self.shape = (batch_size,) + self.input_shape_arg

    def forward(self, x, training=False):
        return x


def Input(shape=None, batch_size=None, name=None, dtype=None):
    """keras.Input(shape=(28, 28, 1)): declares a Sequential model's input shape."""
    return InputLayer(shape=shape, batch_size=batch_size, name=name, dtype=dtype)


class Conv2D(Layer):
    """2-D convolution of channels-last images: (N, H, W, C) → (N, H', W', filters).

    H' = ⌈H / stride⌉ with padding='same', ⌊(H − kH)/stride⌋ + 1 with 'valid'.
    Wraps nn.Conv2d (→ functional.conv2d; equation in kernels/reference.py).
    Parameters: filters·(kH·kW·C + 1) with a bias.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.filters = int(filters)
        self.kernel_size = checks.pair(kernel_size, self.name, "kernel_size", minimum=1)
        self.strides = checks.pair(strides, self.name, "strides", minimum=1)
        self.padding = _padding(padding, self.name)
        self.use_bias = bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        init.get(kernel_initializer), init.get(bias_initializer)  # fail early on unknown names

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
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


class Dense(Layer):
    """y = activation(x·W + b) on the last axis: (..., in) → (..., units). Wraps nn.Linear.
    Parameters: units·(in + 1) with a bias."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.units, self.use_bias = int(units), bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        init.get(kernel_initializer), init.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Dense {self.name!r}: expected input (batch, ..., features), got shape {input_shape}")
        self.module = nn.Linear(input_shape[-1], self.units, bias=self.use_bias, dtype=self.dtype,
                                weight_init=init.get(self.kernel_initializer),
                                bias_init=init.get(self.bias_initializer))

    def forward(self, x, training=False):
        return self.module(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self._activation_config(),
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = checks.pair(pool_size, self.name, "pool_size", minimum=1)
        self.strides = self.pool_size if strides is None else checks.pair(strides, self.name, "strides", minimum=1)
        self.padding = _padding(padding, self.name)

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

    def build(self, input_shape):
        self.flatten = nn.Flatten(1)

    def forward(self, x, training=False):
        return self.flatten(x)


class Dropout(Layer):
    """During fit, zero each input with probability `rate` and scale the rest by 1/(1 − rate);
    the identity in evaluate and predict. Wraps nn.Dropout (→ functional.dropout)."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def build(self, input_shape):
        self.dropout = nn.Dropout(self.rate)

    def forward(self, x, training=False):
        self.dropout.train(training)
        return self.dropout(x)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class Activation(Layer):
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


class LeakyReLU(Layer):
    """x where x > 0, negative_slope·x elsewhere, elementwise; Keras's default slope 0.3.
    Wraps nn.LeakyReLU (→ functional.leaky_relu). No parameters."""

    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

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


def deserialize(config):
    """A layer from {'class_name': ..., 'config': {...}} (what models save)."""
    name = config.get("class_name")
    if name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r}; known: {', '.join(LAYERS)}")
    return LAYERS[name].from_config(dict(config.get("config", {})))


def serialize(layer):
    return {"class_name": type(layer).__name__, "config": layer.get_config()}
