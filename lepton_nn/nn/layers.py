"""The layers as Modules: each holds its parameters and calls one lepton_nn.functional function.

Layout is NCHW as in PyTorch. The equations, shapes and backward of each layer live with its
functional function and kernel (see the `functional` docstrings); nothing is computed here.

padding='same' (a lepton_nn extension for Conv2d and the pools, following TensorFlow/Keras):
the output has ⌈size / stride⌉ positions, and the total padding that takes,
max((⌈size/stride⌉ − 1)·stride + kernel − size, 0), is split with the extra pixel (if the
total is odd) at the bottom/right. Symmetric padding goes to the functional call; asymmetric
padding is applied first with functional.pad2d.
"""
import numpy as np

from lepton_nn import checks
from lepton_nn import functional as F
from lepton_nn.nn import init
from lepton_nn.nn.module import Module, Parameter
from lepton_nn.tensor import Tensor


def same_padding(size, kernel, stride):
    """(before, after) padding of one axis for padding='same' (see the module docstring)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _resolve_padding(padding, x, kernel, stride):
    """Padding as ((top, bottom), (left, right)) for this input; 'valid' means none."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple(same_padding(x.shape[2 + a], kernel[a], stride[a]) for a in (0, 1))
    ph, pw = padding  # a pair, from _check_padding
    return (ph, ph), (pw, pw)


def _check_padding(layer, padding):
    if isinstance(padding, str) and padding not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    return padding if isinstance(padding, str) else checks.pair(padding, layer, "padding")


def _symmetric(pads):
    (top, bottom), (left, right) = pads
    return top == bottom and left == right


class Linear(Module):
    """y = x·Wᵀ + b: x (..., in_features) → y (..., out_features).

    weight (out_features, in_features), bias (out_features,). Default initialisation is
    PyTorch's (U(±1/√in_features) for both); pass weight_init / bias_init (functions from
    lepton_nn.nn.init) to choose another, e.g. init.glorot_uniform and init.zeros (Keras's).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, weight_init=None, bias_init=None):
        super().__init__()
        self.in_features, self.out_features = (checks.int_at_least(v, "Linear", name, 1) for name, v in
                                               (("in_features", in_features), ("out_features", out_features)))
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        _initialise(self.weight, self.bias, weight_init, bias_init)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def fused_with(self, following):
        """Linear → ReLU runs as functional.linear_relu (the ReLU in the GEMM's epilogue)."""
        if following and isinstance(following[0], ReLU):
            return (lambda x: F.linear_relu(x, self.weight, self.bias)), 1
        return None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution: x (N, C_in, H, W) → (N, C_out, H_out, W_out) (see functional.conv2d).

    weight (C_out, C_in, kH, kW), bias (C_out,). padding: int, pair, 'valid' or 'same'.
    Initialisation as Linear (PyTorch's default unless weight_init / bias_init are given).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dtype=np.float32, weight_init=None, bias_init=None):
        super().__init__()
        self.in_channels, self.out_channels = (checks.int_at_least(v, "Conv2d", name, 1) for name, v in
                                               (("in_channels", in_channels), ("out_channels", out_channels)))
        self.kernel_size = checks.pair(kernel_size, "Conv2d", "kernel_size", minimum=1)
        self.stride = checks.pair(stride, "Conv2d", "stride", minimum=1)
        self.padding = _check_padding("Conv2d", padding)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        _initialise(self.weight, self.bias, weight_init, bias_init)

    def forward(self, x):
        x, padding = self._input_and_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding)

    def _input_and_padding(self, x):
        """(input, padding for the functional call): asymmetric padding is applied here."""
        pads = _resolve_padding(self.padding, x, self.kernel_size, self.stride)
        if _symmetric(pads):
            return x, (pads[0][0], pads[1][0])
        return F.pad2d(x, pads[0] + pads[1]), (0, 0)

    def fused_with(self, following):
        """Conv2d → ReLU → MaxPool2d (without pool padding) runs as functional.conv2d_relu_max_pool2d."""
        if len(following) >= 2 and isinstance(following[0], ReLU) and isinstance(following[1], MaxPool2d) \
                and following[1].has_no_padding():
            return (lambda x: self.relu_max_pool(x, following[1])), 2
        return None

    def relu_max_pool(self, x, pool):
        """pool(relu(self(x))) as one fused op."""
        x, padding = self._input_and_padding(x)
        return F.conv2d_relu_max_pool2d(x, self.weight, self.bias, self.stride, padding, pool.kernel_size, pool.stride)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, bias={self.bias is not None}")


def _initialise(weight, bias, weight_init, bias_init):
    if weight_init is None and bias_init is None:
        init.pytorch_default(weight, bias)
        return
    (weight_init or init.glorot_uniform)(weight)
    if bias is not None:
        (bias_init or init.zeros)(bias)


class MaxPool2d(Module):
    """Max over kernel_size windows: (N, C, H, W) → (N, C, H_out, W_out) (see functional.max_pool2d).

    stride defaults to kernel_size. padding: int, pair, 'valid' or 'same'; padded cells never win.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = checks.pair(kernel_size, "MaxPool2d", "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else checks.pair(stride, "MaxPool2d", "stride", minimum=1)
        self.padding = _check_padding("MaxPool2d", padding)

    def forward(self, x):
        pads = _resolve_padding(self.padding, x, self.kernel_size, self.stride)
        if _symmetric(pads):
            return F.max_pool2d(x, self.kernel_size, self.stride, (pads[0][0], pads[1][0]))
        return F.max_pool2d(F.pad2d(x, pads[0] + pads[1], value=-np.inf), self.kernel_size, self.stride, 0)

    def has_no_padding(self):
        return self.padding == "valid" or self.padding == (0, 0)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"


class AvgPool2d(Module):
    """Mean over kernel_size windows (see functional.avg_pool2d).

    With an int or pair padding, count_include_pad chooses the divisor (PyTorch's default True).
    With padding='same' the divisor is always the number of real (unpadded) cells, as in Keras.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__()
        self.kernel_size = checks.pair(kernel_size, "AvgPool2d", "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else checks.pair(stride, "AvgPool2d", "stride", minimum=1)
        self.padding = _check_padding("AvgPool2d", padding)
        self.count_include_pad = bool(count_include_pad) and self.padding != "same"

    def forward(self, x):
        pads = _resolve_padding(self.padding, x, self.kernel_size, self.stride)
        k, s = self.kernel_size, self.stride
        if _symmetric(pads):
            return F.avg_pool2d(x, k, s, (pads[0][0], pads[1][0]), self.count_include_pad)
        # Asymmetric 'same': the mean over the zero-padded window, divided by the fraction of the
        # window that is real input (the same pooling applied to a padded plane of ones).
        flat = pads[0] + pads[1]
        ones = np.ones((1, 1) + x.shape[2:], dtype=x.dtype)
        real_fraction = F.avg_pool2d(F.pad2d(ones, flat), k, s).data
        return F.avg_pool2d(F.pad2d(x, flat), k, s) / real_fraction

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"


class Flatten(Module):
    """Merge the axes from start_dim on: (N, C, H, W) → (N, C·H·W) in row-major order."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return (x if isinstance(x, Tensor) else Tensor(x)).flatten(self.start_dim)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """x where x > 0, negative_slope·x elsewhere (see functional.leaky_relu); PyTorch's default slope."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = checks.finite_number(negative_slope, "LeakyReLU", "negative_slope")

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Dropout(Module):
    """Inverted dropout with probability p while training; the identity in eval() mode."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = checks.fraction(p, "Dropout", "p")

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """x·Φ(x), or its tanh approximation with approximate='tanh' (see functional.gelu)."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Embedding(Module):
    """A lookup table: integer indices (any shape) → rows of weight, (..., embedding_dim).

    weight (num_embeddings, embedding_dim), N(0, 1) as PyTorch's. The row padding_idx (negative
    counts from the end) starts at zero and gets no gradient, so it stays a zero vector.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings = checks.int_at_least(num_embeddings, "Embedding", "num_embeddings", 1)
        self.embedding_dim = checks.int_at_least(embedding_dim, "Embedding", "embedding_dim", 1)
        self.padding_idx = checks.padding_index(padding_idx, self.num_embeddings, "Embedding")
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=dtype))
        init.normal(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, indices):
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}" + (
            "" if self.padding_idx is None else f", padding_idx={self.padding_idx}")


class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) axes, then scale and shift (see functional.layer_norm):
    y = (x − mean) / √(var + eps) · weight + bias, the variance biased (divided by the count).

    weight (normalized_shape) starts at ones, bias at zeros, as PyTorch's;
    elementwise_affine=False has neither, bias=False no bias.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        self.normalized_shape = checks.shape(shape, "LayerNorm", "normalized_shape")
        self.eps = checks.finite_number(eps, "LayerNorm", "eps", minimum=0)
        affine = checks.flag(elementwise_affine, "LayerNorm", "elementwise_affine")
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"
