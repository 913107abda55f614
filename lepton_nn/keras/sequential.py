"""keras.Sequential: a stack of layers, each taking the output of the one before — a Model
(keras/models.py: compile, fit, evaluate, predict, summary, save) whose graph is a chain.
Conv2D(relu) → MaxPooling2D runs here as one fused op (Layer.fused_with).
"""
import numpy as np

from lepton_nn import checks
from lepton_nn.keras import functional
from lepton_nn.keras import layers as layers_module
from lepton_nn.keras.models import Model, _weight_entries
from lepton_nn.nn.module import run_in_order
from lepton_nn.tensor import Tensor


class Sequential(Model):
    """A stack of layers, each taking the output of the one before: a Model whose graph is a chain."""

    def __init__(self, layers=None, name=None, trainable=True):
        self._init_model(name, trainable, "sequential")
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise ValueError(f"Sequential: layers must be a list of layers, got {type(layers).__name__}")
        self._input_shape = None  # without the batch axis
        for layer in layers or ():
            self.add(layer)

    # ------------------------------------------------------------------ building
    def add(self, layer, rebuild=True):
        """Append a layer (or a model); the model is rebuilt when its input shape is known (unless
        rebuild=False). keras.Input(shape=...) first declares the input shape."""
        if isinstance(layer, functional.KerasTensor):
            if not layer.is_input:
                raise TypeError(f"Sequential.add: expected a keras layer or keras.Input(...), got {layer!r}")
            layer = layer.node.layer
        if isinstance(layer, layers_module.InputLayer):
            if self.layers:
                raise ValueError("Sequential.add: an Input must come before every other layer")
            self._input_shape = layer.input_shape_arg
            return
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"Sequential.add: expected a keras layer, got {type(layer).__name__}")
        if any(existing is layer for existing in self.layers) or layer is self:
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        layer.check_place_in_sequential(first=not self.layers)  # e.g. an Embedding only first
        if not self.layers and self._input_shape is None and layer.input_shape_arg is not None:
            self._input_shape = layer.input_shape_arg
        self.layers.append(layer)
        self.built = False
        self._reset_optimizer()
        if rebuild and self._input_shape is not None:
            self.build()

    def pop(self, rebuild=True):
        """Remove the last layer and return it (Keras 3's); the model is rebuilt without it."""
        if not self.layers:
            raise ValueError(f"Sequential.pop: model {self.name!r} has no layers to remove")
        layer = self.layers.pop()
        self.built = False
        self._reset_optimizer()
        if rebuild and self.layers and self._input_shape is not None:
            self.build()
        return layer

    def build(self, input_shape=None):
        """Create every layer's weights, each layer built for the output shape of the one before
        (Layer.compute_output_shape), and record each output_shape. input_shape includes the batch
        axis: (None, 28, 28, 1)."""
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)) or not input_shape:
                raise ValueError(f"model {self.name!r}: build takes a shape with the batch axis, e.g. "
                                 f"(None, 28, 28, 1), got {input_shape!r}")
            self._input_shape = checks.shape(tuple(input_shape)[1:], f"model {self.name!r}", "input_shape")
        shape = self._input_batch_shape()
        for layer in self.layers:
            if layer.built and [tuple(p.shape) for p in layer.weights] != [s for _, s in layer.weight_shapes(shape)]:
                raise ValueError(f"{layer._owner} was built for another input; its weights cannot take input {shape}")
            layer._build_once(shape)
            shape = (None,) + tuple(layer.compute_output_shape(shape)[1:])
            if not isinstance(layer, Model):  # a model's output_shape is its own layers'
                layer.output_shape = shape
        self.built = True

    def _input_batch_shape(self):
        """(None, *input_shape): where build starts, and the plan load_model checks a file with."""
        if self._input_shape is None:
            raise ValueError(f"model {self.name!r} is not built: give the first layer input_shape=..., start "
                             f"with keras.Input(shape=...), call build((None, ...)) or fit it on data")
        if not self.layers:
            raise ValueError(f"model {self.name!r} has no layers")
        return (None,) + self._input_shape

    def _weight_plan(self, input_shape=None):
        """[(weight name, shape, dtype)] that build() makes (for input_shape, with the batch axis,
        when given: the model as a layer), computed without making any (load_model compares them
        with a file's arrays before allocating)."""
        shape = self._input_batch_shape() if input_shape is None else self._checked_input(input_shape)
        plan = []
        for layer in self.layers:
            plan += [(f"{layer.name}/{name}", s, dtype) for name, s, dtype in _weight_entries(layer, shape)]
            shape = layer.compute_output_shape(shape)
        return plan

    def _checked_input(self, input_shape):
        """input_shape (batch axis included) if this model can take it; ValueError naming the model otherwise."""
        input_shape = tuple(input_shape)
        if self._input_shape is not None and tuple(input_shape[1:]) != self._input_shape:
            raise ValueError(f"model {self.name!r} expects input of shape (batch, "
                             f"{', '.join(map(str, self._input_shape))}), got {input_shape}")
        return input_shape

    # the model as a layer of another: shapes computed, built once
    def compute_output_shape(self, input_shape):
        shape = self._checked_input(input_shape)
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def weight_shapes(self, input_shape):
        return [(name, shape) for name, shape, _ in self._weight_plan(input_shape)]

    def _build_once(self, input_shape, *more_shapes):
        if more_shapes:
            raise ValueError(f"{self._owner} takes one input, got {len(more_shapes) + 1}")
        if not self.built:
            if self._input_shape is None:
                self._input_shape = checks.shape(tuple(input_shape[1:]), f"model {self.name!r}", "input shape of x")
            self.build()
        self._checked_input(input_shape)

    def _ensure_built(self, xs):
        self._build_once(xs[0].shape)

    def _can_build(self):
        return self._input_shape is not None

    def _sample_shapes(self):
        return None if self._input_shape is None else [self._input_shape]

    @property
    def input_shape_arg(self):
        """The input shape without the batch axis, when known (as a first layer's input_shape=...)."""
        return self._input_shape

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + self._input_shape

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    # ------------------------------------------------------------------ running
    def _cast(self, items):
        """x as the first layer takes it: cast to its dtype, or integer indices for an Embedding."""
        x = items[0]
        if isinstance(x, Tensor):
            return [x]
        return [self.layers[0].as_input(x) if self.layers else Tensor(np.asarray(x, dtype=self.dtype))]

    def _run(self, tensors, training=False, stop_before_last_activation=False):
        """Run the layers in order; where a layer can run together with the next ones as one
        fused op (Layer.fused_with: Conv2D(relu) → MaxPooling2D), run that instead: the same
        function, faster. `model.fuse_layers = False` runs every layer on its own."""
        last = len(self.layers) - 1

        def call(i, layer, x):
            return layer(x, training=training, activation=not (stop_before_last_activation and i == last))
        return run_in_order(self.layers, tensors[0], self.fuse_layers, call)

    def _softmax_output(self):
        """The last layer, when it ends in a softmax over a (batch, classes) output; else None."""
        last = self.layers[-1] if self.layers else None
        if last is None or isinstance(last, Model) or last.activation_name != "softmax":
            return None
        return last if len(last.output_shape) == 2 else None

    # ------------------------------------------------------------------ summary and config
    def _summary_rows(self):
        rows = []
        for layer in self.layers:
            shape = layer.output_shape if layer.output_shape is not None else "? (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"))
        return ("Layer (type)", "Output Shape", "Param #"), (31, 26, 12), rows

    def get_config(self):
        return {"name": self.name, "trainable": self._trainable,
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [layers_module.serialize(layer) for layer in self.layers]}

    @classmethod
    def _unbuilt_from_config(cls, config, depth=0):
        """from_config without building: its layers made and their arguments checked, no weights."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"Sequential.from_config: expected a dict with a list of 'layers', got {config!r:.200}")
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        if config.get("input_shape") is not None:
            model._input_shape = checks.shape(config["input_shape"], f"model {model.name!r}", "input_shape")
        for layer_config in config["layers"]:
            model.add(layers_module.deserialize(layer_config, depth), rebuild=False)
        return model
