"""keras.Model(inputs, outputs): the functional model, a graph of layer calls — a Model
(keras/models.py: compile, fit, evaluate, predict, summary, save) that runs the calls recorded on
symbolic tensors (keras/functional.py) in order.
"""
from collections import Counter

import numpy as np

from lepton_nn import checks
from lepton_nn.keras import functional
from lepton_nn.keras import layers as layers_module
from lepton_nn.keras.models import Model, _field, _weight_entries
from lepton_nn.tensor import Tensor


class Functional(Model):
    """keras.Model(inputs, outputs): the layer calls between keras.Input tensors and outputs.

    inputs and outputs are a KerasTensor or a list of them; model.layers lists the InputLayers
    first, then each layer (a nested model as one) in the order the graph runs them. Every layer
    name must be unique in the model (weights and the saved graph refer to layers by name).
    """

    def __init__(self, inputs, outputs, name=None, trainable=True):
        self._init_model(name, trainable, "functional")
        self._init_graph(inputs, outputs)

    def _init_graph(self, inputs, outputs, layer_order=None):
        owner = self._owner
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        inputs = [inputs] if self._single_input else list(inputs)
        outputs = [outputs] if self._single_output else list(outputs)
        if not inputs or not outputs:
            raise ValueError(f"{owner}: needs at least one input and one output, got {len(inputs)} and {len(outputs)}")
        for t in inputs:
            if not isinstance(t, functional.KerasTensor) or not t.is_input:
                raise ValueError(f"{owner}: inputs must be tensors made by keras.Input(...), got {t!r:.120}")
        if len({id(t) for t in inputs}) != len(inputs):
            raise ValueError(f"{owner}: an input is listed twice in inputs")
        for t in outputs:
            if not isinstance(t, functional.KerasTensor):
                raise ValueError(f"{owner}: outputs must be symbolic tensors (what layers return when called on "
                                 f"keras.Input(...)), got {type(t).__name__} {t!r:.80}")
        nodes = functional.topological_nodes(inputs, outputs, owner)
        layers, seen = [], set()
        for layer in [t.node.layer for t in inputs] + [node.layer for node in nodes]:
            if id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
        twice = [name for name, count in Counter(layer.name for layer in layers).items() if count > 1]
        if twice:
            raise ValueError(f"{owner}: layer names must be unique in a model; {', '.join(map(repr, twice))} "
                             f"name more than one layer (give each a name=...)")
        if layer_order is not None:  # a loaded model keeps its file's order, which is its weights' order
            if {id(layer) for layer in layer_order} != seen:
                raise ValueError(f"{owner}: the listed layers are not those the graph calls")
            layers = list(layer_order)
        self.inputs, self.outputs, self._nodes, self.layers = inputs, outputs, nodes, layers
        consumers = {}  # input → the first layer reading it, which casts it (Layer.as_input)
        for node in nodes:
            for t in node.input_tensors:
                consumers.setdefault(id(t), node.layer)
        self._input_consumers = [consumers.get(id(t)) for t in inputs]
        self._fusable = None  # the node whose activation the fused softmax + cross-entropy skips
        out = outputs[0]
        if len(outputs) == 1 and not out.is_input and len(out.node.outputs) == 1 and out.ndim == 2 \
                and id(out) not in consumers and not isinstance(out.node.layer, (Model, layers_module._Merge)):
            self._fusable = out.node
        self.built = True

    # ------------------------------------------------------------------ shapes
    @property
    def _input_count(self):
        return len(self.inputs) if self.built else len(self._spec[0])

    @property
    def _output_count(self):
        return len(self.outputs) if self.built else len(self._spec[2])

    @staticmethod
    def _one_or_list(values, single):
        """values[0] for a model given one tensor (not a list), else the list: what calls return."""
        return values[0] if single else list(values)

    @property
    def input_shape(self):
        return self._one_or_list([t.shape for t in self.inputs], self._single_input)

    @property
    def output_shape(self):
        return self._one_or_list([t.shape for t in self.outputs], self._single_output)

    @property
    def input_shape_arg(self):
        return self.inputs[0].shape[1:] if self.built and len(self.inputs) == 1 else None

    def _input_shapes(self):
        """Each input's shape, batch axis included."""
        return [t.shape for t in self.inputs] if self.built else [layer.shape for layer in self._spec[0]]

    def _sample_shapes(self):
        return [shape[1:] for shape in self._input_shapes()]

    def _checked_inputs(self, shapes):
        """shapes (one per input) if the model takes them (any batch); ValueError naming the model otherwise."""
        expected = self._input_shapes()
        if len(shapes) != len(expected):
            raise ValueError(f"model {self.name!r} has {len(expected)} inputs, got {len(shapes)}")
        for i, (shape, want) in enumerate(zip(shapes, expected)):
            if tuple(shape[1:]) != tuple(want[1:]):
                which = f" {i} ({self._input_layers()[i].name!r})" if len(expected) > 1 else ""
                raise ValueError(f"model {self.name!r} expects input{which} of shape (batch, "
                                 f"{', '.join(map(str, want[1:]))}), got {tuple(shape)}")
        return [tuple(s) for s in shapes]

    def _input_layers(self):
        return [t.node.layer for t in self.inputs] if self.built else self._spec[0]

    def _as_shapes(self, input_shape):
        """The one shape, or list of shapes, a call gives, as a list of one per input."""
        return list(input_shape) if self._input_count > 1 or (
            isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list))) \
            else [input_shape]

    def _ensure_built(self, xs):
        self._checked_inputs([x.shape for x in xs])

    # the model as a layer of another
    def compute_output_shape(self, input_shape):
        shapes = self._checked_inputs(self._as_shapes(input_shape))
        batch = shapes[0][0]
        outputs = [(batch,) + tuple(t.shape[1:]) for t in self.outputs] if self.built else \
            [(batch,) + tuple(s[1:]) for s in self._spec_walk()[1]]
        return self._one_or_list(outputs, self._single_output)

    def weight_shapes(self, input_shape):
        return [(name, shape) for name, shape, _ in self._weight_plan(input_shape)]

    def _build_once(self, input_shape, *more_shapes):
        if more_shapes:
            raise ValueError(f"{self._owner} takes its inputs as one list, got {len(more_shapes) + 1} arguments")
        self._checked_inputs(self._as_shapes(input_shape))
        if not self.built:
            self.build()

    def _weight_plan(self, input_shape=None):
        """[(weight name, shape, dtype)] of the model's weights, in model.weights order; computed
        from the graph's shapes when the model is not built yet (a file's, being checked)."""
        if input_shape is not None:
            self._checked_inputs(self._as_shapes(input_shape))
        if self.built:
            return [(name, tuple(p.shape), p.dtype) for name, p in self.named_weights()]
        plans = self._spec_walk()[0]
        return [(f"{layer.name}/{name}", shape, dtype) for layer in self.layers
                for name, shape, dtype in plans.get(layer, [])]

    # ------------------------------------------------------------------ running
    def _cast(self, items):
        """Each input as the first layer reading it takes it (Layer.as_input: its dtype, integer
        indices for an Embedding), or in the Input's dtype when no layer reads it."""
        return [x if isinstance(x, Tensor) else consumer.as_input(x) if consumer is not None else
                Tensor(np.asarray(x, dtype=t.dtype))
                for x, t, consumer in zip(items, self.inputs, self._input_consumers)]

    def _run(self, tensors, training=False, stop_before_last_activation=False):
        """The nodes in graph order on real Tensors. A node's training, when its call gave one
        (base(x, training=False)), overrides the model's."""
        values = {id(t): x for t, x in zip(self.inputs, tensors)}
        skip = self._fusable if stop_before_last_activation else None
        for node in self._nodes:
            args = functional.replace_tensors(node.args, lambda t: values[id(t)])
            kwargs = {**node.kwargs, "training": training if node.training is None else node.training}
            if node is skip:
                kwargs["activation"] = False
            out = node.layer(*args, **kwargs)
            for t, value in zip(node.outputs, out if len(node.outputs) > 1 else [out]):
                values[id(t)] = value
        return self._one_or_list([values[id(t)] for t in self.outputs], self._single_output)

    def _softmax_output(self):
        """The layer making the one output, when it ends in a softmax over (batch, classes) that
        no other layer reads (then skipping it for the loss changes nothing else); else None."""
        if self._fusable is None or self._fusable.layer.activation_name != "softmax":
            return None
        return self._fusable.layer

    # ------------------------------------------------------------------ summary
    def _summary_rows(self):
        """One row per layer: its call's output shape in this model, and the tensors it reads
        as 'layer[call][output]' (Keras's "Connected to")."""
        ours = {id(node) for node in self._nodes} | {id(t.node) for t in self.inputs}
        rows = []
        for layer in self.layers:
            calls = [node for node in layer._inbound_nodes if id(node) in ours]
            shapes = [t.shape for t in calls[0].outputs]
            sources = [f"{t.node.layer.name}[{t.node.layer._inbound_nodes.index(t.node)}][{t.index}]"
                       for node in calls for t in node.input_tensors]
            rows.append((f"{layer.name} ({type(layer).__name__})", shapes[0] if len(shapes) == 1 else shapes,
                         f"{layer.count_params():,}", ", ".join(sources) or "-"))
        return ("Layer (type)", "Output Shape", "Param #", "Connected to"), (31, 26, 12, 30), rows

    # ------------------------------------------------------------------ config
    def get_config(self):
        """The layers (InputLayers first) and the graph (functional.graph_config: each call in
        running order, its tensor arguments as references to an input or an earlier call)."""
        return {"name": self.name, "trainable": self._trainable,
                "layers": [layers_module.serialize(layer) for layer in self.layers],
                **functional.graph_config(self.inputs, self.outputs, self._nodes),
                "single_input": self._single_input, "single_output": self._single_output}

    @classmethod
    def _unbuilt_from_config(cls, config, depth=0):
        """The model get_config() describes, its layers made and every argument and reference
        checked, but nothing built: _weight_plan computes the weights' shapes from the graph,
        build() makes them (by calling the layers on KerasTensors, as the user's code did)."""
        where = "Functional.from_config"
        if not isinstance(config, dict):
            raise ValueError(f"{where}: expected a dict, got {config!r:.100}")
        model = cls.__new__(cls)
        model._init_model(config.get("name"), config.get("trainable", True), "functional")
        layers = [layers_module.deserialize(c, depth) for c in _field(config, "layers", list, where)]
        by_name = {}
        for layer in layers:
            if layer.name in by_name:
                raise ValueError(f"{where}: two layers are named {layer.name!r}")
            by_name[layer.name] = layer
        inputs, nodes, outputs = spec = functional.parse_graph(
            config, by_name, lambda layer: isinstance(layer, layers_module.InputLayer), where)
        called = {id(layer) for layer, _, _ in nodes} | {id(layer) for layer in inputs}
        for layer in layers:
            if id(layer) not in called:
                raise ValueError(f"{where}: layer {layer.name!r} is listed but no node calls it")
        model._single_input = checks.flag(config.get("single_input", len(inputs) == 1), where, "single_input")
        model._single_output = checks.flag(config.get("single_output", len(outputs) == 1), where, "single_output")
        if (model._single_input and len(inputs) != 1) or (model._single_output and len(outputs) != 1):
            raise ValueError(f"{where}: single_input / single_output need exactly one input / output")
        model.layers, model._spec = layers, spec
        return model

    def _spec_walk(self):
        """({layer: [(name, shape, dtype)] of its weights}, [output shapes]) of an unbuilt model."""
        return functional.graph_shapes(self._spec, _weight_entries)

    def build(self, input_shape=None):
        """Make the weights of a model read from a config: call each layer on KerasTensors, as
        the user's code did (a model made by keras.Model(inputs, outputs) is built already)."""
        if input_shape is not None:
            self._checked_inputs(self._as_shapes(input_shape))
        if self.built:
            return
        inputs, outputs = functional.replay(self._spec)
        self._init_graph(self._one_or_list(inputs, self._single_input),
                         self._one_or_list(outputs, self._single_output), layer_order=self.layers)
        del self._spec
