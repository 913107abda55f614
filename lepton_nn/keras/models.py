"""Sequential: a stack of Keras layers with compile, fit, evaluate, predict, summary and save.

    model = keras.Sequential([keras.layers.Dense(10, activation='softmax', input_shape=(784,))])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x, y, epochs=5, batch_size=64)
    loss, accuracy = model.evaluate(x_test, y_test)

Fused softmax + cross-entropy. When the last layer's activation is softmax (Dense(...,
activation='softmax'), Activation('softmax') or Softmax()) over a (batch, classes) output and
the loss is (sparse_)categorical_crossentropy on probabilities, the model stops before that
softmax and computes the loss from the logits z with functional.cross_entropy:

    loss = mean_n [ log Σ_k e^{z_nk} − z_n,y ],   ∂loss/∂z = (softmax(z) − onehot(y)) / N

That is the same function as the graph the user wrote, −log softmax(z)_y, but stable (no log
of an underflowed probability) and with the simple gradient ŷ − y instead of the softmax
Jacobian times 1/p. predict and the metrics still see the softmax probabilities.
`model.uses_fused_softmax_cross_entropy` says whether it applies; compile(...,
fuse_softmax_cross_entropy=False) turns it off (tests/test_keras.py proves both agree).
Derivation: docs/equations.md, "Softmax + cross-entropy in the Keras API".

Arguments are checked as Keras 3 checks them, before any work starts: batch_size a positive int
(None: 32), epochs and initial_epoch ints ≥ 0, verbose 'auto', 0, 1 or 2, validation_split in
[0, 1) leaving at least one sample on each side, shuffle True or False, x and y as many samples
(at least one), callbacks Callback objects, metrics a list (compile(metrics='accuracy') is an
error, as in Keras 3: write metrics=['accuracy']). Errors are ValueErrors naming the method.
"""
import math
import sys
import time

import numpy as np

from lepton_nn import checks, optim, rng
from lepton_nn import metrics as metrics_module
from lepton_nn.keras import callbacks as callbacks_module
from lepton_nn.keras import layers as layers_module
from lepton_nn.keras import losses, optimizers, saving
from lepton_nn.nn.module import run_in_order
from lepton_nn.tensor import Tensor, no_grad


def _batch_size(value, method):
    """Keras's default 32 for None, else a positive int (0 is not 32, and -4 does not mean none)."""
    return 32 if value is None else checks.int_at_least(value, method, "batch_size", 1)


def _verbose(value, method):
    """'auto' (1 here), 0 silent, 1 progress bar, 2 one line per epoch; True and False are 1 and 0."""
    if isinstance(value, str) and value == "auto":
        return 1
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= 2:
        raise ValueError(f"{method}: verbose must be 'auto', 0, 1 or 2, got {value!r}")
    return int(value)


def _callbacks(value, method):
    """None, a Callback or a list of them (Keras too takes a lone callback as a list of one)."""
    items = [] if value is None else [value] if isinstance(value, callbacks_module.Callback) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(c, callbacks_module.Callback) for c in items):
        raise ValueError(f"{method}: callbacks must be a list of keras.callbacks.Callback objects, got {value!r}")
    return list(items)


class _Running:
    """Epoch-to-date loss (mean weighted by batch size) and metrics (on all predictions so far)."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.loss_sum, self.count, self.trues, self.preds = 0.0, 0, [], []

    def add(self, loss, y_true, y_pred):
        self.loss_sum += loss * len(y_true)
        self.count += len(y_true)
        if self.metrics:
            self.trues.append(y_true)
            self.preds.append(y_pred)

    @property
    def loss(self):
        return self.loss_sum / max(self.count, 1)

    def logs(self, prefix=""):
        logs = {prefix + "loss": self.loss}
        if self.metrics and self.count:
            y_true, y_pred = np.concatenate(self.trues), np.concatenate(self.preds)
            self.trues, self.preds = [y_true], [y_pred]
            for name, fn in self.metrics:
                logs[prefix + name] = float(fn(y_true, y_pred))
        return logs


def _format_size(n_bytes):
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024


class Sequential:
    def __init__(self, layers=None, name=None):
        if name is not None and not isinstance(name, str):
            raise ValueError(f"Sequential: name must be a string, got {name!r}")
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise ValueError(f"Sequential: layers must be a list of layers, got {type(layers).__name__}")
        self.name = name or layers_module._unique_name("sequential")
        self.layers = []
        self._input_shape = None  # without the batch axis
        self.built = False
        self.compiled = False
        self.optimizer = self.loss = None
        self._metrics = []
        self._optim = None  # the lepton_nn.optim optimizer, made on first use
        self.fuse_softmax_cross_entropy = True
        self.fuse_layers = True
        self.stop_training = False
        self.history = None
        for layer in layers or ():
            self.add(layer)

    # ------------------------------------------------------------------ building
    def add(self, layer, rebuild=True):
        """Append a layer; the model is rebuilt when its input shape is known (unless rebuild=False)."""
        if isinstance(layer, layers_module.InputLayer):
            if self.layers:
                raise ValueError("Sequential.add: an Input must come before every other layer")
            self._input_shape = layer.input_shape_arg
            return
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"Sequential.add: expected a keras layer, got {type(layer).__name__}")
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        layer.check_place_in_sequential(first=not self.layers)  # e.g. an Embedding only first
        if not self.layers and self._input_shape is None and layer.input_shape_arg is not None:
            self._input_shape = layer.input_shape_arg
        self.layers.append(layer)
        self.built = False
        if rebuild and self._input_shape is not None:
            self.build()

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
            shape = layer.output_shape = (None,) + tuple(layer.compute_output_shape(shape)[1:])
        self.built = True

    def _input_batch_shape(self):
        """(None, *input_shape): where build starts, and the plan load_model checks a file with."""
        if self._input_shape is None:
            raise ValueError(f"model {self.name!r} is not built: give the first layer input_shape=..., start "
                             f"with keras.Input(shape=...), call build((None, ...)) or fit it on data")
        if not self.layers:
            raise ValueError(f"model {self.name!r} has no layers")
        return (None,) + self._input_shape

    def _weight_plan(self):
        """[(weight name, shape, dtype)] that build() makes, computed without making any (load_model
        compares them with a file's arrays before allocating)."""
        shape, plan = self._input_batch_shape(), []
        for layer in self.layers:
            plan += [(f"{layer.name}/{name}", tuple(s), layer.dtype) for name, s in layer.weight_shapes(shape)]
            shape = layer.compute_output_shape(shape)
        return plan

    def _ensure_built(self, x):
        if not self.built:
            if self._input_shape is None:
                self._input_shape = checks.shape(tuple(x.shape[1:]), f"model {self.name!r}", "input shape of x")
            self.build()
        if tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(f"model {self.name!r} expects input of shape (batch, "
                             f"{', '.join(map(str, self._input_shape))}), got {tuple(x.shape)}")

    @property
    def dtype(self):
        return self.layers[0].dtype if self.layers else np.dtype("float32")

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + self._input_shape

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    # ------------------------------------------------------------------ weights
    @property
    def weights(self):
        return [p for layer in self.layers for p in layer.weights]

    @property
    def trainable_weights(self):
        return [p for layer in self.layers for p in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [p for layer in self.layers for p in layer.non_trainable_weights]

    @property
    def trainable(self):
        return any(layer.trainable for layer in self.layers)

    @trainable.setter
    def trainable(self, value):
        for layer in self.layers:
            layer.trainable = value

    def count_params(self):
        return int(sum(layer.count_params() for layer in self.layers))

    def get_weights(self):
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, arrays):
        arrays = list(arrays)
        if len(arrays) != len(self.weights):
            raise ValueError(f"set_weights: got {len(arrays)} arrays for {len(self.weights)} weights")
        for layer in self.layers:
            k = len(layer.weights)
            layer.set_weights(arrays[:k])
            arrays = arrays[k:]

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None, fuse_softmax_cross_entropy=True):
        """optimizer: 'adam' | 'sgd' | 'adamw' | a keras.optimizers object | a lepton_nn.optim
        optimizer; loss: a name, a keras.losses object or a function (y_true, y_pred) → Tensor;
        metrics: names from lepton_nn.metrics.METRICS ('accuracy', 'precision', 'recall', 'f1')
        or functions (y_true, y_pred) → float."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(f"compile: metrics must be a list, e.g. metrics=[{metrics!r}], got "
                             f"{type(metrics).__name__} {metrics!r} (Keras 3 refuses it too)")
        fuse_softmax_cross_entropy = checks.flag(fuse_softmax_cross_entropy, "compile", "fuse_softmax_cross_entropy")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self._metrics = []
        for metric in metrics or ():
            if isinstance(metric, str):
                fn = metrics_module.by_name(metric)
                if fn is None:
                    raise ValueError(f"compile: unknown metric {metric!r}; known: "
                                     f"{', '.join(metrics_module.METRICS)} or a function (y_true, y_pred) -> float")
                self._metrics.append((metric, fn))
            elif callable(metric):
                self._metrics.append((getattr(metric, "__name__", "metric"), metric))
            else:
                raise ValueError(f"compile: a metric must be a name or a function, got {metric!r}")
        self._optim = self.optimizer if isinstance(self.optimizer, optim.Optimizer) else None
        self.fuse_softmax_cross_entropy = fuse_softmax_cross_entropy
        self.compiled = True

    @property
    def metrics_names(self):
        return ["loss"] + [name for name, _ in self._metrics]

    def _require_compiled(self, method):
        if not self.compiled:
            raise RuntimeError(f"{method}: compile the model first (model.compile(optimizer=..., loss=...))")

    def _bound_optimizer(self):
        if self._optim is None:
            self._optim = self.optimizer.build(self.weights)
        return self._optim

    # ------------------------------------------------------------------ forward and loss
    @property
    def uses_fused_softmax_cross_entropy(self):
        """True when the loss is computed from the logits before the final softmax (module docstring)."""
        if not (self.compiled and self.fuse_softmax_cross_entropy and self.loss.fusable and self.built):
            return False
        last = self.layers[-1]
        return last.activation_name == "softmax" and len(last.output_shape) == 2

    def _tensor(self, x):
        """x as the first layer takes it: cast to its dtype, or integer indices for an Embedding."""
        return self.layers[0].as_input(x) if self.layers else Tensor(np.asarray(x, dtype=self.dtype))

    def _forward(self, x, training=False, stop_before_last_activation=False):
        """Run the layers in order; where a layer can run together with the next ones as one
        fused op (Layer.fused_with: Conv2D(relu) → MaxPooling2D), run that instead: the same
        function, faster. `model.fuse_layers = False` runs every layer on its own."""
        last = len(self.layers) - 1

        def call(i, layer, x):
            return layer(x, training=training, activation=not (stop_before_last_activation and i == last))
        return run_in_order(self.layers, x, self.fuse_layers, call)

    def __call__(self, x, training=False):
        x = x if isinstance(x, Tensor) else self._tensor(x)
        self._ensure_built(x)
        return self._forward(x, training)

    def _loss_and_predictions(self, x, y, training):
        fused = self.uses_fused_softmax_cross_entropy
        out = self._forward(x, training, stop_before_last_activation=fused)
        if not fused:
            return self.loss(y, out), out
        with no_grad():
            probabilities = self.layers[-1].activation(out.detach())
        return self.loss.logits_loss(y, out), probabilities

    def compute_loss(self, x, y, training=False):
        """The compiled loss of the model on (x, y) as a Tensor, ready for backward()."""
        self._require_compiled("compute_loss")
        x = np.asarray(x)
        self._ensure_built(x)
        return self._loss_and_predictions(self._tensor(x), y, training)[0]

    # ------------------------------------------------------------------ fit / evaluate / predict
    @staticmethod
    def _check_xy(x, y, method):
        if x is None or y is None:
            raise ValueError(f"{method}: both x and y are required")
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"{method}: x and y must be arrays of samples, got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{method}: x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError(f"{method}: x and y are empty; need at least one sample")
        return x, y

    def _train_step(self, x, y):
        opt = self._optim
        opt.zero_grad()
        loss, y_pred = self._loss_and_predictions(self._tensor(x), y, training=True)
        loss.backward()
        opt.step()
        return float(loss.item()), y_pred.data

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0):
        """Train for `epochs` passes over (x, y) in shuffled mini-batches; returns a History whose
        .history maps 'loss', each metric and their 'val_' versions to per-epoch lists.

        validation_split takes the last fraction of x and y (before shuffling), as Keras does.
        verbose: 'auto' or 1 progress bar per epoch, 2 one line per epoch, 0 silent.
        """
        self._require_compiled("fit")
        x, y = self._check_xy(x, y, "fit")
        batch_size = _batch_size(batch_size, "fit")
        epochs = checks.int_at_least(epochs, "fit", "epochs", 0)
        initial_epoch = checks.int_at_least(initial_epoch, "fit", "initial_epoch", 0)
        verbose = _verbose(verbose, "fit")
        shuffle = checks.flag(shuffle, "fit", "shuffle")
        validation_split = checks.fraction(validation_split, "fit", "validation_split")
        user_callbacks = _callbacks(callbacks, "fit")
        x_val = y_val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            x_val, y_val = self._check_xy(*validation_data, "fit (validation_data)")
        elif validation_split:
            split = int(len(x) * (1 - validation_split))
            if split in (0, len(x)):  # Keras's rule: both sides need a sample
                raise ValueError(f"fit: {len(x)} samples are too few to split into training and validation "
                                 f"sets with validation_split={validation_split}; give more data or another split")
            x, x_val, y, y_val = x[:split], x[split:], y[:split], y[split:]
        self._ensure_built(x)
        if x_val is not None:
            self._ensure_built(x_val)  # a wrong validation shape fails now, not after an epoch
        if not any(p.requires_grad for p in self.weights):
            raise ValueError("fit: the model has no trainable weights (every layer is frozen)")
        self._bound_optimizer()

        n = len(x)
        steps = math.ceil(n / batch_size)
        self.history = callbacks_module.History()
        callback_list = ([callbacks_module.ProgbarLogger(verbose)] if verbose else []) + [self.history]
        callback_list += user_callbacks
        cbs = callbacks_module.CallbackList(callback_list, self, {
            "epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size, "samples": n})
        self.stop_training = False
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            order = rng.generator().permutation(n) if shuffle else np.arange(n)
            running, logs, last_full = _Running(self._metrics), {}, -math.inf
            for step in range(steps):
                batch = order[step * batch_size:(step + 1) * batch_size]
                cbs.on_train_batch_begin(step)
                loss, y_pred = self._train_step(x[batch], y[batch])
                running.add(loss, y[batch], y_pred)
                # The loss is always current; metrics over the epoch so far are recomputed at
                # most every 0.2 s (they need every prediction of the epoch).
                now = time.perf_counter()
                if now - last_full >= 0.2 or step == steps - 1:
                    logs, last_full = running.logs(), now
                else:
                    logs["loss"] = running.loss
                cbs.on_train_batch_end(step, dict(logs))
            epoch_logs = running.logs()
            if x_val is not None:
                epoch_logs.update(self._evaluate(x_val, y_val, batch_size, prefix="val_"))
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        cbs.on_train_end()
        return self.history

    def _evaluate(self, x, y, batch_size, prefix="", bar=None):
        running = _Running(self._metrics)
        with no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                loss, y_pred = self._loss_and_predictions(self._tensor(xb), yb, training=False)
                running.add(float(loss.item()), yb, y_pred.data)
                if bar is not None:
                    bar.update(1)
        return running.logs(prefix)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """Loss and metrics on (x, y): [loss, *metrics], or the loss alone when there are no
        metrics (a dict with return_dict=True). verbose: 'auto'/1 progress bar, 2 one line, 0 silent."""
        self._require_compiled("evaluate")
        x, y = self._check_xy(x, y, "evaluate")
        batch_size = _batch_size(batch_size, "evaluate")
        verbose = _verbose(verbose, "evaluate")
        return_dict = checks.flag(return_dict, "evaluate", "return_dict")
        self._ensure_built(x)
        bar = None
        if verbose == 1:
            bar = callbacks_module.progress_bar(math.ceil(len(x) / batch_size), "evaluate")
        logs = self._evaluate(x, y, batch_size, bar=bar)
        if bar is not None:
            bar.set_postfix_str(callbacks_module.format_logs(logs), refresh=False)
            bar.close()
        elif verbose == 2:
            print(f"evaluate - {callbacks_module.format_logs(logs)}", file=sys.stdout, flush=True)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0):
        """The model's outputs as a NumPy array (eval mode: no dropout).

        x is a batch (N, *input_shape), or one sample shaped exactly input_shape, whose output is
        returned without the batch axis (e.g. (10,) instead of (1, 10)). x is cast to what the
        first layer takes (the model's dtype, not rescaled; integer indices for an Embedding).
        """
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"predict: x must be an array of samples, got {x!r:.80}")
        batch_size = _batch_size(batch_size, "predict")
        verbose = _verbose(verbose, "predict")
        single = self._input_shape is not None and tuple(x.shape) == self._input_shape
        if single:
            x = x[None]
        self._ensure_built(x)
        starts = range(0, len(x), batch_size)
        bar = callbacks_module.progress_bar(len(starts), "predict") if verbose == 1 else None
        outputs = []
        with no_grad():
            for start in starts:
                outputs.append(self._forward(self._tensor(x[start:start + batch_size])).data)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        if not outputs:
            return np.empty((0,) + self.output_shape[1:], dtype=self.dtype)
        out = np.concatenate(outputs)
        return out[0] if single else out

    # ------------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        """Print each layer's name, type, output shape and parameter count, then the totals."""
        print_fn = print_fn or print
        widths = (31, 26, 12)
        rule = "_" * sum(widths)

        def row(*cells):
            return " " + "".join(f"{str(c):<{w}}" for c, w in zip(cells, widths)).rstrip()

        lines = [f'Model: "{self.name}"', rule, row("Layer (type)", "Output Shape", "Param #"), "=" * sum(widths)]
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape if layer.output_shape is not None else "? (unbuilt)"
            lines.append(row(f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"))
            if i < len(self.layers) - 1:
                lines.append(rule)

        def total(params):
            count = int(sum(p.size for p in params))
            return f"{count:,} ({_format_size(sum(p.size * p.dtype.itemsize for p in params))})"

        lines += ["=" * sum(widths), f"Total params: {total(self.weights)}",
                  f"Trainable params: {total(self.trainable_weights)}",
                  f"Non-trainable params: {total(self.non_trainable_weights)}", rule]
        for line in lines:
            print_fn(line)

    # ------------------------------------------------------------------ config and saving
    def get_config(self):
        return {"name": self.name,
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [layers_module.serialize(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """The model get_config() describes, built when the config gives its input shape."""
        model = cls._unbuilt_from_config(config)
        if model._input_shape is not None:
            model.build()
        return model

    @classmethod
    def _unbuilt_from_config(cls, config):
        """from_config without building: its layers made and their arguments checked, no weights."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"Sequential.from_config: expected a dict with a list of 'layers', got {config!r:.200}")
        model = cls(name=config.get("name"))
        if config.get("input_shape") is not None:
            model._input_shape = checks.shape(config["input_shape"], f"model {model.name!r}", "input_shape")
        for layer_config in config["layers"]:
            model.add(layers_module.deserialize(layer_config), rebuild=False)
        return model

    def save(self, filepath, include_optimizer=True):
        """Write architecture, weights, compile settings and (optionally) the optimizer's state to
        one .lnn file, atomically. Format: lepton_nn/keras/saving.py."""
        include_optimizer = checks.flag(include_optimizer, "save", "include_optimizer")
        if not self.built:
            raise ValueError(f"save {filepath}: the model is not built yet (no input shape); build or fit it first")
        weights, arrays = [], {}
        for layer in self.layers:
            for name, p in layer.named_weights():
                member = f"weights/{len(weights):03d}.npy"
                weights.append({"name": f"{layer.name}/{name}", "shape": list(p.shape), "dtype": p.dtype.name,
                                "file": member})
                arrays[member] = p.data
        compile_config, opt_state, opt_arrays = self._compile_config(include_optimizer)
        arrays.update(opt_arrays)
        config = {"model": self.get_config(), "compile": compile_config, "weights": weights,
                  "optimizer_state": opt_state}
        saving.write(filepath, config, arrays, _library_version())

    def _compile_config(self, include_optimizer):
        """(compile config or None, optimizer state entries or None, {member: array}) for save."""
        if not self.compiled:
            return None, None, {}
        loss = losses.serialize(self.loss)
        if loss is None:  # a custom loss function: saved uncompiled
            return None, None, {}
        opt = self._bound_optimizer()
        opt_config = None
        if type(opt).__name__ in _SAVABLE_OPTIMIZERS:
            opt_config = {"class_name": type(opt).__name__, "hyper": opt.state_dict()["hyper"]}
        names = [name for name, fn in self._metrics if isinstance(name, str) and metrics_module.by_name(name) is fn]
        compile_config = {"optimizer": opt_config, "loss": loss, "metrics": names,
                          "fuse_softmax_cross_entropy": self.fuse_softmax_cross_entropy}
        if not include_optimizer or opt_config is None:
            return compile_config, None, {}
        state, arrays = [], {}
        for i, param_state in enumerate(opt.state_dict()["state"]):
            entry = {}
            for key, value in param_state.items():
                if isinstance(value, np.ndarray):
                    entry[key] = f"optimizer/{i:03d}.{key}.npy"
                    arrays[entry[key]] = value
                else:
                    entry[key] = value
            state.append(entry)
        return compile_config, state, arrays

    def __repr__(self):
        return f"<Sequential name={self.name!r}, {len(self.layers)} layers>"


_SAVABLE_OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW)}
# The per-weight state each optimizer keeps once it has stepped (none before): lepton_nn.optim.
_OPTIMIZER_STATE = {"SGD": {"momentum_buffer"}, "Adam": {"step", "m", "v"}, "AdamW": {"step", "m", "v"}}


def _library_version():
    import lepton_nn  # the package above this module: imported at call time, not at import
    return lepton_nn.__version__


def load_model(filepath, compile=True):
    """Rebuild the model saved at filepath by model.save: architecture, weights, and
    (compile=True) its compile settings and optimizer state.

    Raises saving.ModelFileError naming the path for any file model.save did not write, before
    allocating anything but what the file holds: saving.read checks the bytes; here every layer's
    and the loss's arguments pass the constructors' signatures and checks (the same as in Python
    code), the weight shapes the architecture implies (computed, not built) must be the file's,
    and the optimizer's settings and state must be what lepton_nn.optim keeps.
    """
    compile = checks.flag(compile, "load_model", "compile")
    config, arrays = saving.read(filepath)
    try:
        model = Sequential._unbuilt_from_config(_field(config, "model", dict, "config.json"))
        plan = model._weight_plan()
        weights = _checked_arrays(_field(config, "weights", list, "config.json"), plan, arrays, "weights")
        compile_config = config.get("compile") if compile else None
        if compile_config is not None:
            loss = losses.deserialize(_field(compile_config, "loss", dict, "compile"))
            opt_class, hyper, opt_state = _optimizer_settings(config, compile_config, plan, arrays)
        model.build()
        for p, array in zip(model.weights, weights):
            np.copyto(p.data, array)
        if compile_config is not None:
            optimizer = opt_class(model.weights, **hyper) if opt_class is not None else "adam"
            model.compile(optimizer=optimizer, loss=loss, metrics=compile_config.get("metrics"),
                          fuse_softmax_cross_entropy=compile_config.get("fuse_softmax_cross_entropy", True))
            if opt_state is not None:
                optimizer.load_state_dict({"state": opt_state})
    except saving.ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        # The checks above raise ValueError; the rest guard the config's structure.
        raise saving.ModelFileError(filepath, f"not a model lepton_nn saved: {err}") from err
    return model


def _field(mapping, key, kind, where):
    """mapping[key], which must be a `kind`; ValueError saying where otherwise."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where}: {key!r} is missing")
    if not isinstance(mapping[key], kind):
        raise ValueError(f"{where}: {key!r} must be a {kind.__name__}, got {mapping[key]!r:.100}")
    return mapping[key]


def _checked_arrays(entries, plan, arrays, what):
    """The arrays `entries` name ({'file': member, 'shape': ...} each), checked one by one against
    `plan`, [(name, shape, dtype)] of what the architecture implies."""
    if len(entries) != len(plan):
        raise ValueError(f"the architecture has {len(plan)} {what} but the file holds {len(entries)}")
    found = []
    for (name, shape, dtype), entry in zip(plan, entries):
        member = _field(entry, "file", str, f"{what} entry for {name}")
        if member not in arrays:
            raise ValueError(f"{what} entry for {name} names {member!r}, which is not in the archive")
        array = arrays[member]
        if array.shape != shape:
            raise ValueError(f"weight {entry.get('name', member)} has shape {array.shape} but the architecture "
                             f"implies {shape} for {name}")
        if entry.get("shape", list(shape)) != list(shape):
            raise ValueError(f"config.json declares shape {entry['shape']} for weight {name}, whose array and "
                             f"architecture have {shape}")
        if array.dtype != dtype:
            raise ValueError(f"weight {entry.get('name', member)} has dtype {array.dtype}, the architecture "
                             f"says {dtype}")
        found.append(array)
    return found


def _optimizer_settings(config, compile_config, plan, arrays):
    """(optimizer class or None for Keras's default 'adam', its hyperparameters, its state or None),
    checked against the optimizer's signature and the weights before anything is built."""
    opt_config = compile_config.get("optimizer")
    if opt_config is None:
        return None, {}, None
    name = _field(opt_config, "class_name", str, "compile optimizer")
    if name not in _SAVABLE_OPTIMIZERS:
        raise ValueError(f"unknown optimizer class {name!r}; known: {', '.join(_SAVABLE_OPTIMIZERS)}")
    opt_class, hyper = _SAVABLE_OPTIMIZERS[name], _field(opt_config, "hyper", dict, "compile optimizer")
    checks.constructor_arguments(opt_class, hyper, f"optimizer {name}", skip=("params",))
    opt_class.check(**hyper)  # the optimizer's own rules (NaN, ranges), without making it
    entries = config.get("optimizer_state")
    if entries is None:
        return opt_class, hyper, None
    if not isinstance(entries, list) or len(entries) != len(plan):
        raise ValueError(f"optimizer_state must hold one entry per weight ({len(plan)}), got {entries!r:.100}")
    state = []
    for (weight, shape, dtype), entry in zip(plan, entries):
        if not isinstance(entry, dict) or entry and set(entry) != _OPTIMIZER_STATE[name]:
            raise ValueError(f"optimizer state of {weight} must be empty or hold {sorted(_OPTIMIZER_STATE[name])}, "
                             f"got {entry!r:.100}")
        keys = sorted(set(entry) - {"step"})
        found = _checked_arrays([{"file": entry[k]} for k in keys], [(weight, shape, dtype)] * len(keys), arrays,
                                "optimizer arrays")
        if "step" in entry:
            checks.int_at_least(entry["step"], f"optimizer state of {weight}", "step", 1)
        state.append({**entry, **dict(zip(keys, found))})
    return opt_class, hyper, state
