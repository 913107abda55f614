"""Symbolic tensors and the graph of a Keras functional model (keras.Model(inputs, outputs)).

    inputs = keras.Input(shape=(784,))               # a KerasTensor: shape (None, 784), no data
    x = keras.layers.Dense(64, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)

Calling a layer (or a whole model) on KerasTensors computes nothing: the layer is built for
their shapes, and the call is recorded as a Node (layer, the call's arguments with the
KerasTensors in them, its output KerasTensors), whose outputs carry the shapes the layer's
compute_output_shape gives. A layer called twice has two nodes and one set of weights.
keras.Model walks back from the outputs to the inputs (topological_nodes) and runs the nodes in
that order on real Tensors (keras/functional_model.py, Functional).

What a node may record: tensors as positional arguments (or a list of them, as Add([a, b])
takes), keyword arguments that are True, False, None, numbers or strings (training=False,
use_causal_mask=True), and nothing else, so that a graph can be saved as JSON. `training`
given at the call is kept (base(x, training=False) runs base in inference mode even in fit);
left out, the node takes the mode of the model that runs it.

The graph in a file (graph_config, parse_graph): each node as its layer's name, its tensor
arguments as references to a model input or to an output of an earlier node, and its keyword
arguments; graph_shapes computes every call's shapes and weights from that without building
anything (load_model checks a file with it), and replay calls the layers again on KerasTensors.
"""
import inspect

import numpy as np

PRIMITIVES = (bool, int, float, str, type(None))


class KerasTensor:
    """A symbolic tensor: a shape with the batch axis (None when any batch will do), a dtype
    name, and the node that makes it (`node`, output number `index`). It holds no data."""

    def __init__(self, shape, dtype, node, index=0):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype).name
        self.node, self.index = node, index

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def is_input(self):
        """True for a tensor made by keras.Input (a node with no inputs)."""
        return not self.node.input_tensors

    def __repr__(self):
        made_by = f"Input {self.node.layer.name!r}" if self.is_input else f"layer {self.node.layer.name!r}"
        output = f" output {self.index}" if len(self.node.outputs) > 1 else ""
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, from {made_by}{output}>"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is symbolic (it holds no data): call a model on arrays, or build one "
                        f"with keras.Model(inputs, outputs) and call model.predict(x)")


class Node:
    """One call of a layer in a graph: layer(*args, **kwargs) → outputs (KerasTensors)."""

    def __init__(self, layer, args, kwargs):
        self.layer, self.args, self.kwargs = layer, tuple(args), dict(kwargs)
        self.input_tensors = flatten(self.args)
        self.outputs = []

    @property
    def training(self):
        """The mode the call fixed (True or False), or None: the mode of the model that runs it."""
        return self.kwargs.get("training")


def flatten(structure):
    """The KerasTensors in args: each positional argument is a tensor, a list of them, or a value."""
    found = []
    for item in structure:
        if isinstance(item, KerasTensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found += [t for t in item if isinstance(t, KerasTensor)]
    return found


def replace_tensors(args, value_of):
    """args with every KerasTensor t replaced by value_of(t) (lists of tensors kept as lists)."""
    def one(item):
        if isinstance(item, KerasTensor):
            return value_of(item)
        if isinstance(item, (list, tuple)):
            return [one(t) for t in item]
        return item
    return [one(item) for item in args]


def is_symbolic(*values):
    """True when any value is a KerasTensor, or a list or tuple holding one."""
    return any(isinstance(v, KerasTensor) or (isinstance(v, (list, tuple)) and any(
        isinstance(t, KerasTensor) for t in v)) for v in values)


def input_tensor(input_layer):
    """The KerasTensor of an InputLayer (keras.Input makes both): shape (batch_size, *shape)."""
    node = Node(input_layer, (), {})
    node.outputs = [KerasTensor(input_layer.shape, input_layer.dtype, node)]
    input_layer._inbound_nodes.append(node)
    return node.outputs[0]


def symbolic_call(layer, args, kwargs):
    """Record layer(*args, **kwargs) on KerasTensors: build the layer for their shapes, and
    return the output KerasTensor (a list of them for a model with several outputs)."""
    owner = layer._owner
    args, kwargs = _tensors_first(layer, args, kwargs)
    for name, value in kwargs.items():
        if not isinstance(value, PRIMITIVES) or isinstance(value, KerasTensor):
            raise ValueError(f"{owner}: in a functional graph a call takes tensors as positional arguments and "
                             f"True, False, None, numbers or strings as keyword arguments; got {name}={value!r:.80}")
    if kwargs.get("training") not in (None, True, False):
        raise ValueError(f"{owner}: training must be True, False or None, got {kwargs['training']!r}")
    for item in args:
        if isinstance(item, (list, tuple)) and not all(isinstance(t, KerasTensor) for t in item):
            raise ValueError(f"{owner}: a list argument must hold only symbolic tensors (KerasTensors), got "
                             f"{[type(t).__name__ for t in item]}")
        if not isinstance(item, (KerasTensor, list, tuple)):
            raise ValueError(f"{owner}: in a functional graph the positional arguments are tensors, got {item!r:.80}")
    shapes = replace_tensors(args, lambda t: t.shape)
    if layer.built:  # a second call (a shared layer) must fit the weights the first one made
        planned = [tuple(s) for _, s in layer.weight_shapes(*shapes)]
        if [tuple(p.shape) for p in layer.weights] != planned:
            raise ValueError(f"{owner} was built for another input; its weights cannot take input "
                             f"{_shapes_text(shapes)}")
    layer._build_once(*shapes)
    out_shapes = layer.compute_output_shape(*shapes)
    several = isinstance(out_shapes, list)
    node = Node(layer, args, kwargs)
    dtype = layer.output_dtype([t.dtype for t in node.input_tensors])
    node.outputs = [KerasTensor(shape, dtype, node, i) for i, shape in enumerate(out_shapes if several
                                                                                 else [out_shapes])]
    layer._inbound_nodes.append(node)
    return list(node.outputs) if several else node.outputs[0]


def _tensors_first(layer, args, kwargs):
    """(args, kwargs) bound to the layer's call signature, the tensors positional and in its
    order (mha(q, value=v) is mha(q, v)), everything else by keyword (layer(x, False) is
    layer(x, training=False)): how a node keeps them, and how the graph calls the layer again."""
    signature = inspect.signature(layer.__call__)
    bound = signature.bind(*args, **kwargs)
    positional, rest, gap = [], {}, None
    for name in signature.parameters:
        if name not in bound.arguments:
            gap = gap or name
            continue
        value = bound.arguments[name]
        if is_symbolic(value):
            if gap is not None:
                raise ValueError(f"{layer._owner}: tensor argument {name} comes after {gap}, which is not a "
                                 f"tensor; in a functional graph the tensors come first, in order")
            positional.append(value)
        else:
            gap = gap or name
            rest[name] = value
    return positional, rest


def _shapes_text(shapes):
    return ", ".join(str(tuple(s)) if not isinstance(s, list) else str([tuple(x) for x in s]) for s in shapes)


def topological_nodes(inputs, outputs, owner):
    """The nodes between inputs and outputs (not the inputs' own), each after the nodes making
    its inputs: a depth-first walk back from each output, iterative (no recursion limit on deep
    graphs). ValueError naming the output when one depends on an Input not in `inputs`."""
    given = {id(t) for t in inputs}
    order, done = [], set()
    for output in outputs:
        stack = [(output.node, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            if not node.input_tensors:  # an Input
                if id(node.outputs[0]) not in given:
                    names = ", ".join(repr(t.node.layer.name) for t in inputs)
                    raise ValueError(f"{owner}: output {output!r} is not connected to the inputs: it depends on "
                                     f"{node.outputs[0]!r}, which is not among the model's inputs ({names})")
                done.add(id(node))
                continue
            stack.append((node, True))
            stack += [(t.node, False) for t in reversed(node.input_tensors)]
    return order


# --------------------------------------------------------------------------- the graph in a file
def graph_config(inputs, outputs, nodes):
    """The graph as JSON (model.save): the InputLayers' names, each node in running order as
    {"layer": name, "args": [...], "kwargs": {...}}, and the outputs; a tensor is written as a
    reference, {"input": i} or {"node": k, "output": j} (output j of node k)."""
    node_index, input_index = {id(node): k for k, node in enumerate(nodes)}, {id(t): i for i, t in enumerate(inputs)}

    def ref(t):
        return {"input": input_index[id(t)]} if id(t) in input_index else \
            {"node": node_index[id(t.node)], "output": t.index}
    return {"inputs": [t.node.layer.name for t in inputs],
            "nodes": [{"layer": node.layer.name, "args": replace_tensors(node.args, ref), "kwargs": dict(node.kwargs)}
                      for node in nodes],
            "outputs": [ref(t) for t in outputs]}


def parse_graph(config, by_name, is_input_layer, where):
    """(input layers, [(layer, args, kwargs)], output references) of a graph_config, checked:
    names of the model's layers (InputLayers for the inputs, others for the nodes), JSON
    primitives as keyword arguments, and references to an input or to an earlier node only, so
    a file cannot hold a cycle. A reference becomes ('input', i) or ('node', k, j)."""
    names = _entry(config, "inputs", list, where)
    if not names or not all(isinstance(n, str) and is_input_layer(by_name.get(n)) for n in names) \
            or len(set(names)) != len(names):
        raise ValueError(f"{where}: inputs must name distinct InputLayers of 'layers', got {names!r:.100}")
    inputs, nodes = [by_name[name] for name in names], []
    for k, entry in enumerate(_entry(config, "nodes", list, where)):
        at = f"{where}: node {k}"
        layer = by_name.get(_entry(entry, "layer", str, at))
        if layer is None or is_input_layer(layer):
            raise ValueError(f"{at} names {entry['layer']!r}, which is not a layer of the model (InputLayers start "
                             f"the graph; they are not called)")
        args = [[_reference(r, k, len(inputs), at) for r in a] if isinstance(a, list) and a else
                _reference(a, k, len(inputs), at) for a in _entry(entry, "args", list, at)]
        if not args:
            raise ValueError(f"{at}: a call needs at least one tensor argument")
        kwargs = _entry(entry, "kwargs", dict, at)
        for name, value in kwargs.items():
            if not isinstance(value, PRIMITIVES):
                raise ValueError(f"{at}: keyword argument {name} must be true, false, null, a number or a string, "
                                 f"got {value!r:.80}")
        nodes.append((layer, args, kwargs))
    outputs = [_reference(r, len(nodes), len(inputs), f"{where}: outputs") for r in _entry(config, "outputs", list,
                                                                                           where)]
    if not outputs:
        raise ValueError(f"{where}: outputs is empty")
    return inputs, nodes, outputs


def _entry(mapping, key, kind, where):
    """mapping[key], which must be a `kind`; ValueError saying where otherwise."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind):
        raise ValueError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r:.100}")
    return value


def _reference(ref, nodes_before, n_inputs, where):
    if isinstance(ref, dict) and set(ref) == {"input"}:
        i = ref["input"]
        if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_inputs:
            return ("input", i)
    elif isinstance(ref, dict) and set(ref) == {"node", "output"}:
        k, j = ref["node"], ref["output"]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (k, j)) and 0 <= k < nodes_before and j >= 0:
            return ("node", k, j)
    raise ValueError(f"{where}: a tensor reference must be {{\"input\": i}} with i < {n_inputs} or "
                     f"{{\"node\": k, \"output\": j}} with k < {nodes_before}, got {ref!r:.100}")


def graph_shapes(spec, weight_entries):
    """({layer: its weight_entries(*input shapes)}, [output shapes]) of a parsed graph, computed
    call by call (compute_output_shape) without building anything. A layer called twice must
    take both inputs with the same weights."""
    inputs, nodes, outputs = spec
    made, plans = [], {}

    def shape_of(ref):
        if ref[0] == "input":
            return inputs[ref[1]].shape
        _, k, j = ref
        if j >= len(made[k]):
            raise ValueError(f"a reference to output {j} of node {k}, which has {len(made[k])} output(s)")
        return made[k][j]

    for layer, args, _ in nodes:
        shapes = [shape_of(a) if isinstance(a, tuple) else [shape_of(r) for r in a] for a in args]
        out = layer.compute_output_shape(*shapes)
        entries = weight_entries(layer, *shapes)
        if layer in plans and [e[1] for e in plans[layer]] != [e[1] for e in entries]:
            raise ValueError(f"{layer._owner} is called on inputs its weights (made by an earlier call) cannot take: "
                             f"{_shapes_text(shapes)}")
        plans.setdefault(layer, entries)
        made.append([tuple(s) for s in out] if isinstance(out, list) else [tuple(out)])
    return plans, [shape_of(r) for r in outputs]


def replay(spec):
    """(input KerasTensors, output KerasTensors) of a parsed graph: each call made again on
    KerasTensors, as the user's code made it (which builds the layers)."""
    inputs, nodes, outputs = spec
    tensors, made = [input_tensor(layer) for layer in inputs], []

    def value(ref):
        return tensors[ref[1]] if ref[0] == "input" else made[ref[1]][ref[2]]

    for layer, args, kwargs in nodes:
        out = layer(*[value(a) if isinstance(a, tuple) else [value(r) for r in a] for a in args], **kwargs)
        made.append(out if isinstance(out, list) else [out])
    return tensors, [value(r) for r in outputs]
