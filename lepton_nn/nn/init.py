"""Weight initialisers. Each fills a tensor in place from `lepton_nn.rng` and returns it.

Fans are read from the tensor's shape in lepton_nn's layout: a Linear weight is
(out_features, in_features), a Conv2d weight (C_out, C_in, kH, kW). So

    fan_in  = in_features            or  C_in · kH · kW
    fan_out = out_features           or  C_out · kH · kW

which are the same numbers Keras computes from its (in, out) / (kH, kW, C_in, C_out) layouts.

    glorot_uniform   U(−a, a),  a = gain·√(6 / (fan_in + fan_out))   Keras's default for weights
    kaiming_uniform  U(−a, a),  a = gain(neg_slope)·√(3 / fan_in),  gain(s) = √(2 / (1 + s²))
                     (neg_slope = √5 gives PyTorch's default for Linear and Conv2d: a = 1/√fan_in)
    kaiming_normal   N(0, σ²),  σ = gain(neg_slope)/√fan_in   (not truncated; Keras's he_normal is)
    zeros            0                                        Keras's default for biases
    normal           N(mean, std²)                            PyTorch's default for Embedding (0, 1)
    orthogonal       Q of QR(a Gaussian matrix)               Keras's default for recurrent kernels
"""
import math

import numpy as np

from lepton_nn import rng


def fans(shape):
    """(fan_in, fan_out) of a weight of this shape (see the module docstring)."""
    if len(shape) < 2:
        raise ValueError(f"init: fans need a weight of at least 2 axes (out, in, ...), got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fill(tensor, values):
    tensor.data[...] = values.astype(tensor.dtype, copy=False)
    return tensor


def zeros(tensor):
    tensor.data[...] = 0
    return tensor


def ones(tensor):
    tensor.data[...] = 1
    return tensor


def uniform(tensor, low=-0.05, high=0.05):
    return _fill(tensor, rng.generator().uniform(low, high, tensor.shape))


def normal(tensor, mean=0.0, std=1.0):
    """N(mean, std²): PyTorch's default for Embedding weights (mean 0, std 1)."""
    return _fill(tensor, rng.generator().normal(mean, std, tensor.shape))


def glorot_uniform(tensor, gain=1.0):
    """Glorot & Bengio (2010): keeps the activation variance similar forward and backward."""
    fan_in, fan_out = fans(tensor.shape)
    limit = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(tensor, -limit, limit)


def _gain(neg_slope):
    return math.sqrt(2.0 / (1.0 + neg_slope ** 2))


def kaiming_uniform(tensor, neg_slope=0.0):
    """He et al. (2015), for ReLU layers: keeps the forward variance at 2/fan_in per layer."""
    fan_in, _ = fans(tensor.shape)
    limit = _gain(neg_slope) * math.sqrt(3.0 / fan_in)
    return uniform(tensor, -limit, limit)


def kaiming_normal(tensor, neg_slope=0.0):
    fan_in, _ = fans(tensor.shape)
    return _fill(tensor, rng.generator().normal(0.0, _gain(neg_slope) / math.sqrt(fan_in), tensor.shape))


def orthogonal(tensor, gain=1.0):
    """A random (semi-)orthogonal matrix times gain (Saxe et al. 2014): Keras's default for an
    LSTM's recurrent kernel, so that multiplying h by it step after step neither grows nor shrinks
    h at the start. The axes after the first are flattened to (rows, cols); the rows or the columns,
    whichever are fewer, come out orthonormal: Q of the QR factorisation of a Gaussian matrix,
    each column's sign set by diag(R) so that Q is uniformly distributed (as Keras and PyTorch)."""
    if tensor.ndim < 2:
        raise ValueError(f"init: orthogonal needs a weight of at least 2 axes, got shape {tuple(tensor.shape)}")
    rows = tensor.shape[0]
    cols = tensor.size // rows
    q, r = np.linalg.qr(rng.generator().normal(0.0, 1.0, (max(rows, cols), min(rows, cols))))
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    return _fill(tensor, gain * (q.T if rows < cols else q).reshape(tensor.shape))


# Keras's names for the same initialisers.
xavier_uniform = glorot_uniform
he_uniform = kaiming_uniform
he_normal = kaiming_normal

BY_NAME = {"glorot_uniform": glorot_uniform, "he_uniform": he_uniform, "he_normal": he_normal,
           "zeros": zeros, "ones": ones, "uniform": uniform, "orthogonal": orthogonal}


def get(name):
    """An initialiser by its Keras name ('glorot_uniform', 'he_uniform', 'zeros', ...)."""
    if callable(name):
        return name
    if name not in BY_NAME:
        raise ValueError(f"init: unknown initialiser {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def pytorch_default(weight, bias=None):
    """PyTorch's default for nn.Linear and nn.Conv2d: weight kaiming_uniform(√5) = U(±1/√fan_in),
    bias U(±1/√fan_in) with the weight's fan_in."""
    kaiming_uniform(weight, neg_slope=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(fans(weight.shape)[0])
        uniform(bias, -bound, bound)
