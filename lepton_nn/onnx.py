"""ONNX export and import: lepton_nn models as standard ONNX graphs, and ONNX graphs (lepton_nn's or
PyTorch's torch.onnx.export) as lepton_nn.nn modules. Needs the extra `pip install -e ".[onnx]"`.

    from lepton_nn import onnx
    onnx.export(model, "model.onnx", x_sample)   # a Keras model (Sequential or functional) or an nn.Module
    module = onnx.load("model.onnx")             # an nn.Module running the graph: gradcheck it, time it

Export walks the model layer by layer, running each on the sample input as it goes (so every
shape, and the padding of padding='same', is known), and writes each as standard ONNX ops of
opset 20, the batch axis left free. A Keras model keeps Keras's channels-last input
(N, H, W, C); Conv2D and the pools are ONNX's NCHW ops, so the graph transposes once before the
first of them and once after the last (before Flatten, Dense or the output), never between:

    input (N, 28, 28, 1) → Transpose → Conv → Relu → MaxPool → Transpose → Flatten → Gemm → ...

Sequential's fused conv → relu → max-pool (one lepton_nn op) is written as the three ONNX ops
Conv, Relu and MaxPool. Dropout is left out (inference), BatchNormalization uses its moving
statistics. A layer or module with no ONNX form here (Embedding, LSTM, attention, a custom
Module or activation) raises NotSupportedError naming it. The file is checked by onnx.checker.

Import maps each node to an nn module in NCHW (PyTorch's layout): Conv → nn.Conv2d, Gemm or
MatMul + Add → nn.Linear, BatchNormalization → nn.BatchNorm1d/2d in eval mode, and so on
(IMPORTERS lists them); Transpose, Reshape, Add and Concat become the small modules below. A
chain of nodes becomes an nn.Sequential; a graph with branches, a Graph module. An op or an
attribute outside that set raises NotSupportedError naming the op and the node.
"""
import math
from collections import Counter, namedtuple

import numpy as np

from lepton_nn import fileio
from lepton_nn import functional as F
from lepton_nn import nn
from lepton_nn.keras import layers as klayers
from lepton_nn.keras import models as kmodels
from lepton_nn.tensor import Tensor, no_grad

OPSET = 20        # Gelu and LayerNormalization are standard ops from here
IR_VERSION = 9    # the IR of opset 20 (onnx 1.23 would write IR 14, which onnxruntime 1.31 cannot read)
EXTRA = 'pip install -e ".[onnx]"'


class NotSupportedError(ValueError):
    """A layer, module or ONNX op lepton_nn cannot export or import (yet)."""


def _onnx():
    """The onnx package (the real one: this module is lepton_nn.onnx, imports are absolute)."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
    except ImportError as err:
        # ModuleNotFoundError (an ImportError) naming onnx: tests/test_docs.py skips on it as on a missing peer
        raise ModuleNotFoundError(f"lepton_nn.onnx needs the onnx package, the extra: {EXTRA}", name="onnx") from err
    return onnx


# =========================================================================== export
# A value of the graph: its ONNX name, the array lepton_nn computes for it on the sample input
# (in the model's own layout) and `perm`, None when the ONNX tensor has that layout, else the
# axes order it is stored in: (0, 3, 1, 2) for a Keras NHWC tensor kept as NCHW.
_Value = namedtuple("_Value", "name array perm")
NCHW = (0, 3, 1, 2)


class _Graph:
    """The nodes and initialisers being written, each name unique."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers, self.used = onnx, [], [], Counter()

    def fresh(self, base):
        base = base.replace("/", ".")
        count = self.used[base]
        self.used[base] += 1
        return base if count == 0 else f"{base}_{count}"

    def constant(self, name, array):
        name = self.fresh(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, name, **attributes):
        """Add one node; returns its output's name (the node's name)."""
        out = self.fresh(name)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attributes))
        return out

    def layout(self, v, perm, name):
        """v stored with axes order perm (None: its own layout), through a Transpose if needed."""
        have = v.perm or tuple(range(v.array.ndim))
        want = perm or tuple(range(v.array.ndim))
        if have == want:
            return v
        # stored = own.transpose(have); wanted = own.transpose(want) = stored.transpose(q)
        q = [have.index(axis) for axis in want]
        return _Value(self.op("Transpose", [v.name], f"{name}.transpose", perm=q), v.array, perm)


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _pads(input_shape, kernel, stride, padding):
    """ONNX pads [top, left, bottom, right] of an NCHW window op: padding 'valid', 'same' (the extra
    pixel at the bottom/right, nn.same_padding) or a pair (ph, pw)."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        (top, bottom), (left, right) = (nn.same_padding(input_shape[2 + a], kernel[a], stride[a]) for a in (0, 1))
        return [top, left, bottom, right]
    ph, pw = padding
    return [ph, pw, ph, pw]


def _activation(g, v, name, kind, array):
    """kind ('relu', 'sigmoid', 'tanh', 'leaky_relu', 'softmax'; Keras's names) on v, whatever
    layout it is stored in: softmax is over the model's last axis, wherever that is stored."""
    if kind == "linear":
        return _Value(v.name, array, v.perm)
    simple = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
              "leaky_relu": ("LeakyRelu", {"alpha": 0.2}),  # Keras's activation='leaky_relu' slope
              "softmax": ("Softmax", {"axis": (v.perm or range(array.ndim)).index(array.ndim - 1)})}
    if kind not in simple:
        raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: activation {kind!r} of {name}")
    op_type, attributes = simple[kind]
    return _Value(g.op(op_type, [v.name], f"{name}.{kind}", **attributes), array, v.perm)


def _conv(g, v, name, weight, bias, stride, padding):
    inputs = [v.name, g.constant(f"{name}.weight", weight)] + ([g.constant(f"{name}.bias", bias)] if bias is not None
                                                               else [])
    return g.op("Conv", inputs, name, kernel_shape=list(weight.shape[2:]), strides=list(stride),
                pads=_pads(v.array.shape if v.perm is None else v.array.transpose(v.perm).shape,
                           weight.shape[2:], stride, padding))


def _linear(g, v, name, weight, bias):
    """y = x·Wᵀ + b on the last axis: Gemm for (N, in), MatMul then Add for more axes."""
    if v.array.ndim == 2:
        inputs = [v.name, g.constant(f"{name}.weight", weight)]
        return g.op("Gemm", inputs + ([g.constant(f"{name}.bias", bias)] if bias is not None else []), name, transB=1)
    y = g.op("MatMul", [v.name, g.constant(f"{name}.weight_t", weight.T)], f"{name}.matmul")
    return y if bias is None else g.op("Add", [y, g.constant(f"{name}.bias", bias)], name)


def _batch_norm(g, v, name, axis, gamma, beta, mean, var, eps):
    """ONNX BatchNormalization normalises axis 1 of what it is given: move the channel axis there."""
    stored = v.perm or tuple(range(v.array.ndim))
    if stored[1] != axis:
        order = (0, axis) + tuple(a for a in range(1, v.array.ndim) if a != axis)
        v = g.layout(v, order, name)
    c = mean.shape[0]
    gamma = np.ones(c, mean.dtype) if gamma is None else gamma
    beta = np.zeros(c, mean.dtype) if beta is None else beta
    inputs = [v.name] + [g.constant(f"{name}.{n}", a) for n, a in
                         (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
    return g.op("BatchNormalization", inputs, name, epsilon=float(eps)), v.perm


def _pool(g, v, name, kind, kernel, stride, pads, count_include_pad):
    attributes = {"kernel_shape": list(kernel), "strides": list(stride), "pads": pads}
    if kind == "AveragePool":
        attributes["count_include_pad"] = int(count_include_pad)
    return g.op(kind, [v.name], name, **attributes)


# --------------------------------------------------------------------------- Keras layers
def _keras(g, layer, inputs):
    """Write one Keras layer (or a nested model) called on inputs (_Values); returns its _Value."""
    if isinstance(layer, kmodels.Sequential):
        v = inputs[0]
        for inner in layer.layers:
            v = _keras(g, inner, [v])
        return v
    if isinstance(layer, kmodels.Functional):
        return _keras_graph(g, layer, inputs)
    name = layer.name
    if not isinstance(layer, KERAS_LAYERS):
        raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: {type(layer).__name__} layer {name!r} "
                                f"(supported: {', '.join(c.__name__ for c in KERAS_LAYERS)} and nested models)")
    arg = [v.array for v in inputs] if isinstance(layer, klayers._Merge) else inputs[0].array
    with no_grad():  # what lepton_nn computes, with and without the layer's activation
        array = _array(layer(arg, training=False))
        before = _array(layer(arg, training=False, activation=False))
    weights = {n: p.data for n, p in layer.named_weights()}
    v = inputs[0]
    if isinstance(layer, klayers.InputLayer):
        return v
    if isinstance(layer, (klayers.Conv2D, klayers.MaxPooling2D, klayers.AveragePooling2D)):
        v = g.layout(v, NCHW, name)
        if isinstance(layer, klayers.Conv2D):
            out = _conv(g, v, name, weights["kernel"], weights.get("bias"), layer.strides, layer.padding)
        else:
            nchw = v.array.transpose(NCHW).shape
            pads = _pads(nchw, layer.pool_size, layer.strides, layer.padding)
            kind = "MaxPool" if isinstance(layer, klayers.MaxPooling2D) else "AveragePool"
            out = _pool(g, v, name, kind, layer.pool_size, layer.strides, pads, count_include_pad=False)
        v = _Value(out, before, NCHW)
    elif isinstance(layer, klayers.Flatten):
        v = _Value(g.op("Flatten", [g.layout(v, None, name).name], name, axis=1), before, None)
    elif isinstance(layer, klayers.Dense):
        v = _Value(_linear(g, g.layout(v, None, name), name, weights["kernel"], weights.get("bias")), before, None)
    elif isinstance(layer, (klayers.Dropout, klayers.Activation)):  # ReLU, Softmax: Activation's subclasses
        v = _Value(v.name, before, v.perm)
    elif isinstance(layer, klayers.LeakyReLU):
        v = _Value(g.op("LeakyRelu", [v.name], name, alpha=float(layer.negative_slope)), before, v.perm)
    elif isinstance(layer, klayers.BatchNormalization):
        out, perm = _batch_norm(g, v, name, layer._channel_axis(v.array.shape), weights.get("gamma"),
                                weights.get("beta"), weights["moving_mean"], weights["moving_variance"], layer.epsilon)
        v = _Value(out, before, perm)
    elif isinstance(layer, klayers.LayerNormalization):
        if not _trailing(layer._axes(v.array.shape), v.array.ndim):
            raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: {layer._owner} over axes "
                                    f"{layer.axis} (only the last ones are)")
        v = _layer_norm(g, g.layout(v, None, name), name, len(layer._axes(v.array.shape)),
                        weights.get("gamma"), weights.get("beta"), layer.epsilon, before)
    elif isinstance(layer, klayers.Add):
        same = [g.layout(u, inputs[0].perm, name) for u in inputs]
        out = same[0].name
        for u in same[1:]:
            out = g.op("Add", [out, u.name], name)
        v = _Value(out, before, inputs[0].perm)
    elif isinstance(layer, klayers.Concatenate):
        same = [g.layout(u, inputs[0].perm, name) for u in inputs]
        axis = layer._axis(v.array.ndim)
        v = _Value(g.op("Concat", [u.name for u in same], name, axis=(v.perm or range(v.array.ndim)).index(axis)),
                   before, v.perm)
    if not callable(layer.activation) or layer.activation_name in klayers.ACTIVATIONS:
        return _activation(g, v, name, layer.activation_name, array)
    raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: the custom activation "
                            f"{layer.activation_name!r} of layer {name!r}")


KERAS_LAYERS = (klayers.InputLayer, klayers.Conv2D, klayers.MaxPooling2D, klayers.AveragePooling2D, klayers.Flatten,
                klayers.Dense, klayers.Dropout, klayers.Activation, klayers.LeakyReLU, klayers.BatchNormalization,
                klayers.LayerNormalization, klayers.Add, klayers.Concatenate)  # Activation: ReLU and Softmax too


def _trailing(axes, rank):
    return list(axes) == list(range(rank - len(axes), rank))


def _layer_norm(g, v, name, n_axes, gamma, beta, eps, array):
    shape = v.array.shape[v.array.ndim - n_axes:]
    dtype = v.array.dtype
    inputs = [v.name, g.constant(f"{name}.scale", np.ones(shape, dtype) if gamma is None else gamma)]
    if beta is not None:
        inputs.append(g.constant(f"{name}.bias", beta))
    return _Value(g.op("LayerNormalization", inputs, name, axis=-n_axes, epsilon=float(eps)), array, None)


def _keras_graph(g, model, inputs):
    """A functional model's nodes in order, its inputs bound to `inputs`; returns its output(s)."""
    values = {id(t): v for t, v in zip(model.inputs, inputs)}
    for node in model._nodes:
        args = [values[id(t)] for t in node.input_tensors]
        out = _keras(g, node.layer, args)
        outs = out if isinstance(out, list) else [out]
        if len(outs) != len(node.outputs):
            raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: layer {node.layer.name!r} with "
                                    f"{len(node.outputs)} outputs")
        for t, value in zip(node.outputs, outs):
            values[id(t)] = value
    outputs = [values[id(t)] for t in model.outputs]
    return outputs[0] if len(outputs) == 1 else outputs


# --------------------------------------------------------------------------- nn modules
def _module(g, module, v, name):
    """Write one nn module (a Sequential: each of its modules, unfused) on v; returns its _Value."""
    if isinstance(module, nn.Sequential):
        for key, inner in module._modules.items():
            v = _module(g, inner, v, f"{name}.{key}" if name else key)
        return v
    kind = type(module).__name__
    name = name or kind.lower()
    if not isinstance(module, NN_MODULES) and not hasattr(module, "export"):
        raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: {kind} module {name!r} (supported: "
                                f"Sequential, {', '.join(c.__name__ for c in NN_MODULES)})")
    with no_grad():
        array = _array(module(Tensor(v.array)))
    x = v.name
    if isinstance(module, nn.Conv2d):
        out = _conv(g, v, name, module.weight.data, None if module.bias is None else module.bias.data,
                    module.stride, module.padding)
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        pads = _pads(v.array.shape, module.kernel_size, module.stride, module.padding)
        maximum = isinstance(module, nn.MaxPool2d)
        out = _pool(g, v, name, "MaxPool" if maximum else "AveragePool", module.kernel_size, module.stride, pads,
                    count_include_pad=not maximum and module.count_include_pad)
    elif isinstance(module, nn.Flatten):
        start = module.start_dim % v.array.ndim
        out = g.op("Flatten", [x], name, axis=1) if start == 1 else \
            g.op("Reshape", [x, g.constant(f"{name}.shape", np.array([0] * start + [-1], np.int64))], name)
    elif isinstance(module, nn.Linear):
        out = _linear(g, v, name, module.weight.data, None if module.bias is None else module.bias.data)
    elif isinstance(module, nn.LeakyReLU):
        out = g.op("LeakyRelu", [x], name, alpha=float(module.negative_slope))
    elif isinstance(module, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        out = g.op(kind if kind != "ReLU" else "Relu", [x], name)
    elif isinstance(module, nn.Softmax):
        out = g.op("Softmax", [x], name, axis=int(module.dim))
    elif isinstance(module, nn.GELU):
        out = g.op("Gelu", [x], name, approximate=module.approximate)
    elif isinstance(module, nn.Dropout):
        return _Value(x, array, None)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.track_running_stats:
            raise NotSupportedError(f"lepton_nn.onnx.export: not supported yet: {kind} {name!r} with "
                                    f"track_running_stats=False (it normalises with each batch's statistics)")
        out, _ = _batch_norm(g, v, name, 1, None if module.weight is None else module.weight.data,
                             None if module.bias is None else module.bias.data, module.running_mean,
                             module.running_var, module.eps)
    elif isinstance(module, nn.LayerNorm):
        return _layer_norm(g, v, name, len(module.normalized_shape), None if module.weight is None else
                           module.weight.data, None if module.bias is None else module.bias.data, module.eps, array)
    else:  # one of the modules load() makes
        out = module.export(g, v, name)
    return _Value(out, array, None)


NN_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh,
              nn.Softmax, nn.GELU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


# --------------------------------------------------------------------------- export
def export(model, path, sample_input=None):
    """Write model (a Keras Sequential or functional model, or an nn.Module) to path as ONNX, and
    return the onnx.ModelProto (checked by onnx.checker).

    sample_input: an input the model takes (a list, one per input, for a functional model with
    several); its batch size does not matter, the graph's batch axis is free. A Keras model that
    knows its input shape needs none (a batch of one zero image is used). The model runs in
    inference mode (dropout off, batch normalisation on its running statistics); an nn.Module's
    train/eval flags are restored afterwards.
    """
    onnx = _onnx()
    is_keras = isinstance(model, kmodels.Model)
    if not is_keras and not isinstance(model, nn.Module):
        raise TypeError(f"lepton_nn.onnx.export: expected a Keras model or an nn.Module, got {type(model).__name__}")
    if sample_input is None:
        if not is_keras or not model._can_build():
            raise ValueError("lepton_nn.onnx.export: give sample_input, an input the model takes (its input shape "
                             "is not known)")
        sample_input = [np.zeros((1,) + tuple(s), dtype=model.dtype) for s in model._sample_shapes()]
    samples = list(sample_input) if is_keras and isinstance(sample_input, (list, tuple)) else [sample_input]
    dtype = np.dtype(model.dtype) if is_keras else next((p.dtype for p in model.parameters()), np.dtype("float32"))
    samples = [np.asarray(_array(s), dtype=dtype) for s in samples]
    g = _Graph(onnx)
    if is_keras:
        model._ensure_built([Tensor(s) for s in samples])
        names = [layer.name for layer in model._input_layers()] if isinstance(model, kmodels.Functional) \
            else ["input"]
        inputs = [_Value(g.fresh(n), s, None) for n, s in zip(names, samples)]
        out = _keras(g, model, inputs)
    else:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            inputs = [_Value(g.fresh("input"), samples[0], None)]
            out = _module(g, model, inputs[0], "")
        finally:
            for m, training in modes:
                object.__setattr__(m, "training", training)
    outs = [g.layout(o, None, "output") for o in (out if isinstance(out, list) else [out])]
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph_outputs = []
    for i, o in enumerate(outs):  # "output": the last node's output renamed, else through an Identity
        name = "output" if len(outs) == 1 else f"output_{i}"
        producer = next((node for node in g.nodes if node.output[0] == o.name), None)
        if producer is None or g.used[name] or any(o.name in node.input for node in g.nodes) \
                or [u.name for u in outs].count(o.name) > 1:
            name = g.op("Identity", [o.name], name)
        else:
            producer.output[0] = g.fresh(name)
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, elem, ["batch", *o.array.shape[1:]]))
    graph = onnx.helper.make_graph(
        g.nodes, getattr(model, "name", type(model).__name__),
        [onnx.helper.make_tensor_value_info(v.name, elem, ["batch", *v.array.shape[1:]]) for v in inputs],
        graph_outputs, g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION, producer_name="lepton_nn")
    onnx.checker.check_model(proto, full_check=True)
    with fileio.atomic_write(path) as f:  # a crash never leaves half a file
        f.write(proto.SerializeToString())
    return proto


# =========================================================================== import
class _Imported(nn.Module):
    """The modules an imported graph needs beyond nn's; those with `export` write themselves back."""


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


class Permute(_Imported):
    """ONNX Transpose: x.permute(perm)."""

    def __init__(self, perm):
        super().__init__()
        self.perm = tuple(int(a) for a in perm)

    def forward(self, x):
        return _tensor(x).permute(*self.perm)

    def export(self, g, v, name):
        return g.op("Transpose", [v.name], name, perm=list(self.perm))

    def extra_repr(self):
        return f"perm={self.perm}"


class Reshape(_Imported):
    """ONNX Reshape (and Flatten at an axis other than 1): a 0 keeps the input's size there, one -1
    takes what is left."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)]
        if -1 in target:  # sized here, not left to -1, so that an empty batch reshapes too
            known = math.prod(s for s in target if s != -1)
            target[target.index(-1)] = x.size // known if known else 0
        return _tensor(x).reshape(*target)

    def export(self, g, v, name):
        return g.op("Reshape", [v.name, g.constant(f"{name}.shape", np.array(self.shape, np.int64))], name)

    def extra_repr(self):
        return f"shape={self.shape}"


class FlattenAt(_Imported):
    """ONNX Flatten at an axis other than 1: (d0, ..., dk−1, dk, ...) → (d0·...·dk−1, dk·...)."""

    def __init__(self, axis):
        super().__init__()
        self.axis = int(axis)

    def forward(self, x):
        return _tensor(x).reshape(math.prod(x.shape[:self.axis]), math.prod(x.shape[self.axis:]))

    def export(self, g, v, name):
        return g.op("Flatten", [v.name], name, axis=self.axis)


class Pad2d(_Imported):
    """Constant padding (top, bottom, left, right) of the last two axes, before a Conv or pool whose
    ONNX pads are asymmetric (nn's take symmetric ones); -inf before a max-pool."""

    def __init__(self, pads, value=0.0):
        super().__init__()
        self.pads, self.value = tuple(int(p) for p in pads), float(value)

    def forward(self, x):
        return F.pad2d(x, self.pads, value=self.value)

    def export(self, g, v, name):
        top, bottom, left, right = self.pads
        pads = g.constant(f"{name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        return g.op("Pad", [v.name, pads, g.constant(f"{name}.value", np.array(self.value, v.array.dtype))], name)


class AvgPool2dPadded(_Imported):
    """ONNX AveragePool with asymmetric pads not counted (count_include_pad=0, Keras's 'same'): the
    mean over the zero-padded window divided by the share of the window that is real input."""

    def __init__(self, kernel_size, stride, pads):
        super().__init__()
        self.kernel_size, self.stride, self.pads = tuple(kernel_size), tuple(stride), tuple(pads)

    def forward(self, x):
        ones = np.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
        real = F.avg_pool2d(F.pad2d(ones, self.pads), self.kernel_size, self.stride).data
        return F.avg_pool2d(F.pad2d(x, self.pads), self.kernel_size, self.stride) / real

    def export(self, g, v, name):
        top, bottom, left, right = self.pads
        return _pool(g, v, name, "AveragePool", self.kernel_size, self.stride, [top, left, bottom, right], False)


class Add(_Imported):
    """ONNX Add of graph values, plus a constant (broadcast) when the node had one."""

    def __init__(self, constant=None):
        super().__init__()
        self.constant = constant

    def forward(self, *xs):
        y = _tensor(xs[0])
        for x in xs[1:]:
            y = y + x
        return y if self.constant is None else y + Tensor(self.constant.astype(y.dtype, copy=False))


class Concat(_Imported):
    def __init__(self, axis):
        super().__init__()
        self.axis = int(axis)

    def forward(self, *xs):
        return F.cat(list(xs), self.axis)


class Graph(nn.Module):
    """An imported graph with branches: `steps` (ModuleList) run in order, step i reading the
    values named inputs[i] and writing the value outputs[i]; forward(*graph inputs) returns the
    graph's output (a list for several)."""

    def __init__(self, input_names, steps, output_names):
        super().__init__()
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.steps = nn.ModuleList([module for module, _, _ in steps])
        self.wiring = [(list(ins), out) for _, ins, out in steps]

    def forward(self, *xs):
        if len(xs) != len(self.input_names):
            raise ValueError(f"Graph: expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(xs)}")
        values = {n: (x if isinstance(x, Tensor) else Tensor(x)) for n, x in zip(self.input_names, xs)}
        for module, (ins, out) in zip(self.steps, self.wiring):
            values[out] = module(*(values[n] for n in ins))
        outs = [values[n] for n in self.output_names]
        return outs[0] if len(outs) == 1 else outs


class _Importer:
    """Turns nodes into (module, input names, output name) steps; constants fold into modules."""

    def __init__(self, onnx, proto, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        graph = proto.graph
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.ranks = {}
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            if info.type.tensor_type.HasField("shape"):
                self.ranks[info.name] = len(info.type.tensor_type.shape.dim)
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), OPSET)
        self.steps, self.alias = [], {}
        self.uses = Counter(name for node in graph.node for name in node.input)

    def name(self, n):
        while n in self.alias:
            n = self.alias[n]
        return n

    def const(self, node, n, what):
        if n not in self.constants:
            raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: {node.op_type} node {node.name!r} "
                                    f"with {what} computed in the graph (only a constant, an initializer, is)")
        return self.constants[n]

    def param(self, module, attribute, array):
        getattr(module, attribute).data[...] = np.asarray(array, dtype=self.dtype)

    def step(self, module, inputs, output):
        self.steps.append((module, [self.name(n) for n in inputs], output))


def _attributes(onnx, node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_attributes(node, attrs, allowed):
    """Refuse an attribute whose value changes the op's meaning away from what the module does."""
    for key, value in attrs.items():
        ok = allowed.get(key)
        if ok is None or not ok(value):
            raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: {node.op_type} node {node.name!r} with "
                                    f"{key}={value!r}")


def _ones(v):
    return all(int(a) == 1 for a in v)


def _pads_module(imp, node, x, pads, value, output):
    """Symmetric ONNX pads [top, left, bottom, right] as (ph, pw); asymmetric ones as a Pad2d step first."""
    top, left, bottom, right = pads
    if (top, left) == (bottom, right):
        return x, (top, left)
    imp.step(Pad2d((top, bottom, left, right), value), [x], f"{output}.pad")
    return f"{output}.pad", (0, 0)


def _import_conv(imp, node, attrs):
    kernel = attrs.get("kernel_shape")
    _check_attributes(node, attrs, {"kernel_shape": lambda v: len(v) == 2, "strides": lambda v: len(v) == 2,
                                    "pads": lambda v: len(v) == 4, "dilations": _ones, "group": lambda v: v == 1,
                                    "auto_pad": lambda v: v in (b"NOTSET", b"VALID", b"SAME_UPPER")})
    weight = imp.const(node, node.input[1], "weights")
    kernel = tuple(weight.shape[2:]) if kernel is None else tuple(kernel)
    x, padding = _pads_module(imp, node, node.input[0], attrs.get("pads", [0, 0, 0, 0]), 0.0, node.output[0])
    if attrs.get("auto_pad") == b"SAME_UPPER":
        padding = "same"  # nn's 'same' also puts an odd pixel at the bottom/right
    bias = imp.const(node, node.input[2], "a bias") if len(node.input) > 2 and node.input[2] else None
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], kernel, attrs.get("strides", (1, 1)), padding,
                     bias=bias is not None, dtype=imp.dtype)
    imp.param(conv, "weight", weight)
    if bias is not None:
        imp.param(conv, "bias", bias)
    imp.step(conv, [x], node.output[0])


def _import_pool(imp, node, attrs):
    maximum = node.op_type == "MaxPool"
    if len(node.output) > 1 and node.output[1]:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: MaxPool node {node.name!r} with Indices")
    _check_attributes(node, attrs, {"kernel_shape": lambda v: len(v) == 2, "strides": lambda v: len(v) == 2,
                                    "pads": lambda v: len(v) == 4, "dilations": _ones, "ceil_mode": lambda v: v == 0,
                                    "storage_order": lambda v: v == 0, "count_include_pad": lambda v: v in (0, 1),
                                    "auto_pad": lambda v: v in (b"NOTSET", b"VALID")})
    kernel, stride = tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", (1, 1)))
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    include = bool(attrs.get("count_include_pad", 0))
    if (top, left) == (bottom, right):
        pool = nn.MaxPool2d(kernel, stride, (top, left)) if maximum else \
            nn.AvgPool2d(kernel, stride, (top, left), count_include_pad=include)
        imp.step(pool, [node.input[0]], node.output[0])
    elif maximum or include:  # padded cells never win a max; counted ones are zeros in a mean
        x, _ = _pads_module(imp, node, node.input[0], (top, left, bottom, right), -np.inf if maximum else 0.0,
                            node.output[0])
        imp.step(nn.MaxPool2d(kernel, stride) if maximum else nn.AvgPool2d(kernel, stride), [x], node.output[0])
    else:
        imp.step(AvgPool2dPadded(kernel, stride, (top, bottom, left, right)), [node.input[0]], node.output[0])


def _linear_module(imp, weight, bias):
    """nn.Linear computing x·weight + bias (weight (in, out), as MatMul and Gemm without transB take it)."""
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, dtype=imp.dtype)
    imp.param(linear, "weight", weight.T)
    if bias is not None:
        imp.param(linear, "bias", np.broadcast_to(bias, (weight.shape[1],)))
    return linear


def _import_gemm(imp, node, attrs):
    _check_attributes(node, attrs, {"alpha": math.isfinite, "beta": math.isfinite, "transA": lambda v: v == 0,
                                    "transB": lambda v: v in (0, 1)})
    weight = imp.const(node, node.input[1], "B") * attrs.get("alpha", 1.0)
    weight = weight.T if attrs.get("transB", 0) else weight
    bias = imp.const(node, node.input[2], "C") * attrs.get("beta", 1.0) if len(node.input) > 2 and node.input[2] \
        else None
    imp.step(_linear_module(imp, weight, bias), [node.input[0]], node.output[0])


def _import_matmul(imp, node, attrs):
    """MatMul by a constant (in, out) matrix, as nn.Linear; a following Add of a constant bias (the
    only reader of the product) is merged into it by _import_add."""
    weight = imp.const(node, node.input[1], "the second matrix")
    if weight.ndim != 2:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: MatMul node {node.name!r} by a "
                                f"{weight.ndim}-d constant")
    imp.step(_linear_module(imp, weight, None), [node.input[0]], node.output[0])


def _import_add(imp, node, attrs):
    names = [n for n in node.input if n not in imp.constants]
    constants = [imp.constants[n] for n in node.input if n in imp.constants]
    if len(constants) > 1 or not names:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: Add node {node.name!r} of constants only")
    constant = constants[0] if constants else None
    last = imp.steps[-1] if imp.steps else None
    if constant is not None and len(names) == 1 and last is not None and last[2] == imp.name(names[0]) \
            and isinstance(last[0], nn.Linear) and last[0].bias is None and imp.uses[names[0]] == 1 \
            and constant.size == last[0].out_features:  # MatMul + Add: one nn.Linear with its bias
        linear = last[0]
        with_bias = nn.Linear(linear.in_features, linear.out_features, dtype=imp.dtype)
        with_bias.weight.data[...] = linear.weight.data
        imp.param(with_bias, "bias", constant.reshape(-1))
        imp.steps[-1] = (with_bias, last[1], node.output[0])
        return
    imp.step(Add(None if constant is None else np.asarray(constant, imp.dtype)), names, node.output[0])


def _import_batch_norm(imp, node, attrs):
    _check_attributes(node, attrs, {"epsilon": math.isfinite, "momentum": math.isfinite,
                                    "training_mode": lambda v: v == 0, "spatial": lambda v: v == 1})
    scale, bias, mean, var = (imp.const(node, n, what) for n, what in zip(node.input[1:5],
                                                                          ("scale", "B", "mean", "var")))
    rank = imp.ranks.get(node.input[0])
    if rank not in (2, 3, 4):
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: BatchNormalization node {node.name!r} on "
                                f"an input of rank {rank if rank is not None else 'unknown'} (2, 3 or 4 are)")
    module = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(mean.shape[0], eps=attrs.get("epsilon", 1e-5),
                                                               dtype=imp.dtype)
    imp.param(module, "weight", scale)
    imp.param(module, "bias", bias)
    module.running_mean[...], module.running_var[...] = mean, var
    imp.step(module.eval(), [node.input[0]], node.output[0])


def _import_layer_norm(imp, node, attrs):
    _check_attributes(node, attrs, {"axis": lambda v: True, "epsilon": math.isfinite, "stash_type": lambda v: v == 1})
    scale = imp.const(node, node.input[1], "scale")
    if attrs.get("axis", -1) not in (-scale.ndim, imp.ranks.get(node.input[0], -1) - scale.ndim):
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: LayerNormalization node {node.name!r} "
                                f"whose scale {scale.shape} is not the size of the axes from axis {attrs['axis']} on")
    bias = imp.const(node, node.input[2], "B") if len(node.input) > 2 and node.input[2] else None
    module = nn.LayerNorm(scale.shape, eps=attrs.get("epsilon", 1e-5), bias=bias is not None, dtype=imp.dtype)
    imp.param(module, "weight", scale)
    if bias is not None:
        imp.param(module, "bias", bias)
    imp.step(module, [node.input[0]], node.output[0])


def _import_flatten(imp, node, attrs):
    axis = attrs.get("axis", 1)
    rank = imp.ranks.get(node.input[0])
    if axis < 0 and rank is None:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: Flatten node {node.name!r} with axis "
                                f"{axis} on an input of unknown rank")
    axis = axis % rank if axis < 0 else axis
    imp.step(nn.Flatten(1) if axis == 1 else FlattenAt(axis), [node.input[0]], node.output[0])


def _import_softmax(imp, node, attrs):
    axis = attrs.get("axis", -1 if imp.opset >= 13 else 1)
    rank = imp.ranks.get(node.input[0])
    if imp.opset < 13 and (rank is None or axis % rank != rank - 1):  # before 13 it flattened to 2-D first
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: Softmax node {node.name!r} of opset "
                                f"{imp.opset} over axes {axis}.. (only the last axis is)")
    imp.step(nn.Softmax(axis), [node.input[0]], node.output[0])


def _import_reshape(imp, node, attrs):
    _check_attributes(node, attrs, {"allowzero": lambda v: v == 0})
    imp.step(Reshape(imp.const(node, node.input[1], "the shape")), [node.input[0]], node.output[0])


def _import_simple(make):
    def importer(imp, node, attrs):
        imp.step(make(node, attrs), [node.input[0]], node.output[0])
    return importer


def _import_alias(imp, node, attrs):
    """Identity and Dropout (inference): the output is the input, no step."""
    if len(node.output) > 1 and node.output[1]:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: Dropout node {node.name!r} with a mask")
    imp.alias[node.output[0]] = node.input[0]


def _import_constant(imp, node, attrs):
    if "value" not in attrs:
        raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: Constant node {node.name!r} without "
                                f"a tensor value")
    imp.constants[node.output[0]] = imp.onnx.numpy_helper.to_array(attrs["value"])


def _import_concat(imp, node, attrs):
    imp.step(Concat(attrs["axis"]), list(node.input), node.output[0])


IMPORTERS = {
    "Conv": _import_conv, "MaxPool": _import_pool, "AveragePool": _import_pool, "Gemm": _import_gemm,
    "MatMul": _import_matmul, "Add": _import_add, "BatchNormalization": _import_batch_norm,
    "LayerNormalization": _import_layer_norm, "Flatten": _import_flatten, "Softmax": _import_softmax,
    "Reshape": _import_reshape, "Concat": _import_concat, "Constant": _import_constant,
    "Identity": _import_alias, "Dropout": _import_alias,
    "Relu": _import_simple(lambda node, a: nn.ReLU()), "Sigmoid": _import_simple(lambda node, a: nn.Sigmoid()),
    "Tanh": _import_simple(lambda node, a: nn.Tanh()),
    "LeakyRelu": _import_simple(lambda node, a: nn.LeakyReLU(a.get("alpha", 0.01))),
    "Gelu": _import_simple(lambda node, a: nn.GELU(a.get("approximate", b"none").decode()
                                                   if isinstance(a.get("approximate"), bytes) else "none")),
    "Transpose": _import_simple(lambda node, a: Permute(a["perm"])),
}


def load(path, dtype=np.float32):
    """An nn.Module running the ONNX model at path (or an onnx.ModelProto), its parameters in dtype
    (float64 to gradcheck it). A chain of ops comes back as an nn.Sequential, a graph with
    branches as a Graph; BatchNorm modules come in eval mode. The input layout is the graph's
    (a lepton_nn Keras export takes NHWC, a PyTorch one NCHW)."""
    onnx = _onnx()
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto)  # the ranks BatchNormalization and Flatten need
    imp = _Importer(onnx, proto, dtype)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in IMPORTERS:
            raise NotSupportedError(f"lepton_nn.onnx.load: not supported yet: op {node.op_type} (node "
                                    f"{node.name!r}); supported: {', '.join(sorted(IMPORTERS))}")
        IMPORTERS[node.op_type](imp, node, _attributes(onnx, node))
    inputs = [i.name for i in proto.graph.input if i.name not in imp.constants]
    outputs = [imp.name(o.name) for o in proto.graph.output]
    chain = len(inputs) == 1 and len(outputs) == 1 and imp.steps and imp.steps[-1][2] == outputs[0] and all(
        ins == [inputs[0] if i == 0 else imp.steps[i - 1][2]] for i, (_, ins, _) in enumerate(imp.steps))
    if chain:
        return nn.Sequential(*(module for module, _, _ in imp.steps))
    return Graph(inputs, imp.steps, outputs)
