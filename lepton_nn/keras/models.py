"""Keras models: Model (compile, fit, evaluate, predict, summary, save) and its two kinds, as in
Keras: Sequential, a stack of layers, and the functional model, a graph of layer calls.

    model = keras.Sequential([keras.layers.Dense(10, activation='softmax', input_shape=(784,))])

    inputs = keras.Input(shape=(784,))                       # functional: a graph of layer calls
    hidden = keras.layers.Dense(64, activation='relu')(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation='softmax')(hidden))

    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x, y, epochs=5, batch_size=64)
    loss, accuracy = model.evaluate(x_test, y_test)

keras.Model(inputs, outputs) walks back from the outputs to the inputs (keras/functional.py)
and runs the layer calls in that order. A model is a layer too: called on a KerasTensor it is
one node of another graph, its weights are the outer model's (named 'base/dense/kernel'),
`model.layers` lists it as one layer, and `base(x, training=False)` runs it in inference mode
(dropout off, BatchNormalization on its moving statistics) whatever fit passes. A model with
several inputs takes x as a list of arrays, one per input, in fit, evaluate and predict;
several outputs are for predict and calls (fit and evaluate train and score one output).

Freezing, Keras's rule. `layer.trainable = False` (or `model.trainable = False`, which sets every
layer's flag, nested models' too) moves the layer's weights to non_trainable_weights at once
(count_params, summary), and a frozen layer's `training` mode is its own business (a frozen
BatchNormalization runs in inference mode). What fit trains is fixed by compile: fit updates the
weights that were trainable when the model was compiled, and a change of `trainable` after
compile takes effect at the next compile. That is Keras 3's documented behaviour (the
transfer-learning guide and Model.compile's docstring); Keras 3.15 added a warning when fit sees
flags changed since compile, and so do we, once per compile (its own call of that warning sits
after a `raise` in 3.15.1, so Keras itself does not print it yet). How: compile notes each layer's
flag; each training step sets requires_grad on exactly the weights trainable under those flags,
so a frozen weight gets no gradient, and an optimizer skips a weight without one (it stays bit
for bit the same); after fit, requires_grad follows the current flags again.

Fused softmax + cross-entropy. When the output layer's activation is softmax (Dense(...,
activation='softmax'), Activation('softmax') or Softmax()) over a (batch, classes) output and
the loss is (sparse_)categorical_crossentropy on probabilities, the model stops before that
softmax and computes the loss from the logits z with functional.cross_entropy:

    loss = mean_n [ log Σ_k e^{z_nk} − z_n,y ],   ∂loss/∂z = (softmax(z) − onehot(y)) / N

That is the same function as the graph the user wrote, −log softmax(z)_y, but stable (no log
of an underflowed probability) and with the simple gradient ŷ − y instead of the softmax
Jacobian times 1/p. predict and the metrics still see the softmax probabilities.
`model.uses_fused_softmax_cross_entropy` says whether it applies; compile(...,
fuse_softmax_cross_entropy=False) turns it off (tests/test_keras.py proves both agree).
Derivation: docs/equations.md, "Softmax + cross-entropy in the Keras API". In a functional
model it applies where it is trivially safe: the model's one output comes straight from such a
layer (not a nested model) and no other layer reads it. Conv2D(relu) → MaxPooling2D runs as one
fused op in a Sequential only (Layer.fused_with); a functional graph runs each layer on its own.

Arguments are checked as Keras 3 checks them, before any work starts: batch_size a positive int
(None: 32), epochs and initial_epoch ints ≥ 0, verbose 'auto', 0, 1 or 2, validation_split in
[0, 1) leaving at least one sample on each side, shuffle True or False, x and y as many samples
(at least one), callbacks Callback objects, metrics a list (compile(metrics='accuracy') is an
error, as in Keras 3: write metrics=['accuracy']). Errors are ValueErrors naming the method.
"""
import math
import sys
import time
import warnings

import numpy as np

from lepton_nn import checks, optim, rng
from lepton_nn import metrics as metrics_module
from lepton_nn.keras import callbacks as callbacks_module
from lepton_nn.keras import functional
from lepton_nn.keras import layers as layers_module
from lepton_nn.keras import losses, optimizers, saving
from lepton_nn.tensor import Tensor, no_grad

MAX_NESTING = 16  # models inside models, at most (a file's config is checked against it)


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


class Model(layers_module.Layer):
    """What every model does: weights, freezing, compile, fit, evaluate, predict, summary, save.

    Its kinds define how inputs become outputs: _as_list (x → one item per model input), _cast
    (items → Tensors), _ensure_built, _run (Tensors → output Tensor or list), _softmax_output,
    _weight_plan, get_config and _unbuilt_from_config. keras.Model(inputs, outputs) makes a
    functional model (Functional), as in Keras.
    """

    def __new__(cls, *args, **kwargs):
        return super().__new__(Functional if cls is Model else cls)

    def _init_model(self, name, trainable, base_name):
        """The state every model starts with (a model is a layer, but has no activation nor dtype of its own)."""
        kind = type(self).__name__
        if name is not None and (not isinstance(name, str) or not name or "/" in name):  # '/' joins weight names
            raise ValueError(f"{kind}: name must be a non-empty string without '/', got {name!r}")
        self.name = name or layers_module._unique_name(base_name)
        self._trainable = checks.flag(trainable, self._owner, "trainable")
        self.layers = []
        self.built = False
        self.activation_name, self.activation = "linear", None
        self._inbound_nodes = []
        self.compiled = False
        self.optimizer = self.loss = None
        self._metrics = []
        self._optim = None  # the lepton_nn.optim optimizer, made on first use
        self._compiled_trainable = {}  # layer → its trainable flag when compile ran
        self._warned_trainable = False
        self.fuse_softmax_cross_entropy = True
        self.fuse_layers = True
        self.stop_training = False
        self.history = None

    # ------------------------------------------------------------------ structure
    @property
    def dtype(self):
        """The dtype of the first layer with one (float32 for a model without layers)."""
        for layer in self.layers:
            if not isinstance(layer, layers_module.InputLayer):
                return layer.dtype
        return np.dtype("float32")

    def _flatten_layers(self):
        """This model and every layer in it, nested models' layers included, each once."""
        found, seen, stack = [], set(), [self]
        while stack:
            layer = stack.pop()
            if id(layer) not in seen:
                seen.add(id(layer))
                found.append(layer)
                stack += reversed(layer.layers) if isinstance(layer, Model) else []
        return found

    def get_layer(self, name=None, index=None):
        """A layer of this model (a nested model counts as one) by its name or its index in .layers."""
        owner = f"model {self.name!r}: get_layer"
        if name is not None and index is not None:
            raise ValueError(f"{owner}: give a layer's name or its index, not both (got {name!r} and {index!r})")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise ValueError(f"{owner}: index must be an int, got {index!r}")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"{owner}: index {index} is out of range; the model has {len(self.layers)} layers")
            return self.layers[index]
        if name is None:
            raise ValueError(f"{owner}: give a layer's name (or index=...)")
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{owner}: no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def check_place_in_sequential(self, first):
        if self._input_count != 1 or self._output_count != 1:
            raise ValueError(f"{self._owner} has {self._input_count} inputs and {self._output_count} outputs, but "
                             f"a Sequential model passes one tensor from layer to layer")

    # ------------------------------------------------------------------ weights
    def named_weights(self):
        """[(name, Parameter)]: every layer's weights as 'layer/weight' ('base/dense/kernel' in a
        nested model), each weight once (a layer called twice shares its weights)."""
        seen, named = set(), []
        for layer in self.layers:
            for name, p in layer.named_weights():
                if id(p) not in seen:
                    seen.add(id(p))
                    named.append((f"{layer.name}/{name}", p))
        return named

    @property
    def trainable_weights(self):
        """The layers' trainable weights, none when the model itself is frozen (Keras's)."""
        if not self._trainable:
            return []
        seen, found = set(), []
        for layer in self.layers:
            for p in layer.trainable_weights:
                if id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
        return found

    @property
    def non_trainable_weights(self):
        trainable = {id(p) for p in self.trainable_weights}
        return [p for p in self.weights if id(p) not in trainable]

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Set the flag of the model and of every layer in it, nested models' layers too (Keras's).
        fit follows it from the next compile on (module docstring)."""
        self._trainable = bool(value)
        for layer in self.layers:
            layer.trainable = value
        self._sync_requires_grad()

    def count_params(self):
        return int(sum(p.size for p in self.weights))

    def set_weights(self, arrays):
        """Copy arrays into the weights, in model.weights order (get_weights's)."""
        arrays, named = list(arrays), self.named_weights()
        if len(arrays) != len(named):
            raise ValueError(f"set_weights: got {len(arrays)} arrays for {len(named)} weights")
        for (name, p), a in zip(named, arrays):
            a = np.asarray(a)
            if a.shape != p.shape:
                raise ValueError(f"set_weights: weight {name} has shape {p.shape}, got an array of shape {a.shape}")
        for (_, p), a in zip(named, arrays):
            np.copyto(p.data, np.asarray(a), casting="same_kind")

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None, fuse_softmax_cross_entropy=True):
        """optimizer: 'adam' | 'sgd' | 'adamw' | a keras.optimizers object | a lepton_nn.optim
        optimizer; loss: a name, a keras.losses object or a function (y_true, y_pred) → Tensor;
        metrics: names from lepton_nn.metrics.METRICS ('accuracy', 'precision', 'recall', 'f1')
        or functions (y_true, y_pred) → float. Fixes what fit trains: the weights trainable now."""
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
        self._compiled_trainable = {layer: layer._trainable for layer in self._flatten_layers()}
        self._warned_trainable = False
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

    def _reset_optimizer(self):
        """After the weights change (a layer added or removed), fit makes its optimizer anew."""
        if not isinstance(self.optimizer, optim.Optimizer):
            self._optim = None

    def _compiled_trainable_weights(self):
        """trainable_weights as they were under the flags compile saw (a layer added since: its own)."""
        now = {layer: layer._trainable for layer in self._flatten_layers()}
        try:
            for layer in now:
                layer._trainable = self._compiled_trainable.get(layer, layer._trainable)
            return self.trainable_weights
        finally:
            for layer, flag in now.items():
                layer._trainable = flag

    def _warn_if_trainable_changed(self, method):
        changed = [layer.name for layer in self._flatten_layers()
                   if self._compiled_trainable.get(layer, layer._trainable) != layer._trainable]
        if changed and not self._warned_trainable:
            self._warned_trainable = True
            warnings.warn(f"{method}: the trainable flag of {', '.join(map(repr, changed))} changed since the model "
                          f"was compiled; {method} trains the weights that were trainable at compile time. Call "
                          f"compile() again for the change to take effect (Keras's rule)", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ inputs
    @property
    def _input_count(self):
        return 1

    @property
    def _output_count(self):
        return 1

    def _as_list(self, x, method):
        """x as one item per model input: [x] for one input, the list x itself for several."""
        n = self._input_count
        if n == 1:
            return [x]
        if not isinstance(x, (list, tuple)) or len(x) != n:
            got = f"{type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            raise ValueError(f"{method}: model {self.name!r} has {n} inputs, so x must be a list of {n} arrays (one "
                             f"per input, in the order of model.inputs), got {got}")
        return list(x)

    def _as_arrays(self, x, method):
        return [a if isinstance(a, Tensor) else np.asarray(a) for a in self._as_list(x, method)]

    @staticmethod
    def _shapes_text(arrays):
        shapes = [tuple(a.shape) for a in arrays]
        return shapes[0] if len(shapes) == 1 else shapes

    def _require_single_output(self, method):
        if self._output_count != 1:
            raise ValueError(f"{method}: model {self.name!r} has {self._output_count} outputs; compile's loss, fit "
                             f"and evaluate take a model with one output (predict takes any)")

    def as_input(self, x):
        """x as the model takes it (a one-input model used as a Sequential's first layer)."""
        return self._cast([x])[0]

    # ------------------------------------------------------------------ forward and loss
    def __call__(self, x, training=None, activation=True):
        """The model on x (arrays or Tensors), or on KerasTensors: one node of another graph.
        training: True (as fit runs it), False or None (inference)."""
        if functional.is_symbolic(x):
            return functional.symbolic_call(self, (x,), {"training": training})
        tensors = self._cast(self._as_list(x, f"model {self.name!r}"))
        self._ensure_built(tensors)
        return self._run(tensors, bool(training))

    def _forward(self, x, training=False, stop_before_last_activation=False):
        """The model on x (a Tensor, or a list of one per input), built already."""
        return self._run(self._cast(self._as_list(x, f"model {self.name!r}")), training, stop_before_last_activation)

    @property
    def uses_fused_softmax_cross_entropy(self):
        """True when the loss is computed from the logits before the final softmax (module docstring)."""
        if not (self.compiled and self.fuse_softmax_cross_entropy and self.loss.fusable and self.built):
            return False
        return self._softmax_output() is not None

    def _loss_and_predictions(self, tensors, y, training):
        fused = self.uses_fused_softmax_cross_entropy
        out = self._run(tensors, training, stop_before_last_activation=fused)
        if not fused:
            return self.loss(y, out), out
        with no_grad():
            probabilities = self._softmax_output().activation(out.detach())
        return self.loss.logits_loss(y, out), probabilities

    def compute_loss(self, x, y, training=False):
        """The compiled loss of the model on (x, y) as a Tensor, ready for backward()."""
        self._require_compiled("compute_loss")
        self._require_single_output("compute_loss")
        xs = self._as_arrays(x, "compute_loss")
        self._ensure_built(xs)
        return self._loss_and_predictions(self._cast(xs), y, training)[0]

    # ------------------------------------------------------------------ fit / evaluate / predict
    def _check_xy(self, x, y, method):
        """(x as a list of arrays, one per input; y), as many samples each, at least one."""
        if x is None or y is None:
            raise ValueError(f"{method}: both x and y are required")
        xs, y = self._as_arrays(x, method), np.asarray(y)
        if any(a.ndim == 0 for a in xs) or y.ndim == 0:
            raise ValueError(f"{method}: x and y must be arrays of samples, got shapes {self._shapes_text(xs)} and "
                             f"{y.shape}")
        for a in xs:
            if len(a) != len(y):
                raise ValueError(f"{method}: x has {len(a)} samples but y has {len(y)}")
        if len(y) == 0:
            raise ValueError(f"{method}: x and y are empty; need at least one sample")
        return xs, y

    def _train_step(self, xs, y, grad_flags):
        for p, flag in grad_flags:  # the weights trainable at compile, and only they, get gradients
            p.requires_grad = flag
        opt = self._optim
        opt.zero_grad()
        loss, y_pred = self._loss_and_predictions(self._cast(xs), y, training=True)
        loss.backward()
        opt.step()
        return float(loss.item()), y_pred.data

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0):
        """Train for `epochs` passes over (x, y) in shuffled mini-batches; returns a History whose
        .history maps 'loss', each metric and their 'val_' versions to per-epoch lists.

        Trains the weights that were trainable when the model was compiled (module docstring).
        validation_split takes the last fraction of x and y (before shuffling), as Keras does.
        verbose: 'auto' or 1 progress bar per epoch, 2 one line per epoch, 0 silent.
        """
        self._require_compiled("fit")
        self._require_single_output("fit")
        xs, y = self._check_xy(x, y, "fit")
        batch_size = _batch_size(batch_size, "fit")
        epochs = checks.int_at_least(epochs, "fit", "epochs", 0)
        initial_epoch = checks.int_at_least(initial_epoch, "fit", "initial_epoch", 0)
        verbose = _verbose(verbose, "fit")
        shuffle = checks.flag(shuffle, "fit", "shuffle")
        validation_split = checks.fraction(validation_split, "fit", "validation_split")
        user_callbacks = _callbacks(callbacks, "fit")
        xs_val = y_val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            xs_val, y_val = self._check_xy(*validation_data, "fit (validation_data)")
        elif validation_split:
            split = int(len(y) * (1 - validation_split))
            if split in (0, len(y)):  # Keras's rule: both sides need a sample
                raise ValueError(f"fit: {len(y)} samples are too few to split into training and validation "
                                 f"sets with validation_split={validation_split}; give more data or another split")
            xs, xs_val, y, y_val = [a[:split] for a in xs], [a[split:] for a in xs], y[:split], y[split:]
        self._ensure_built(xs)
        if xs_val is not None:
            self._ensure_built(xs_val)  # a wrong validation shape fails now, not after an epoch
        self._warn_if_trainable_changed("fit")
        trained = {id(p) for p in self._compiled_trainable_weights()}
        if not trained:
            raise ValueError("fit: the model has no trainable weights (every layer was frozen when it was compiled; "
                             "set trainable = True and compile again)")
        grad_flags = [(p, id(p) in trained) for p in self.weights]
        self._bound_optimizer()

        n = len(y)
        steps = math.ceil(n / batch_size)
        self.history = callbacks_module.History()
        callback_list = ([callbacks_module.ProgbarLogger(verbose)] if verbose else []) + [self.history]
        callback_list += user_callbacks
        cbs = callbacks_module.CallbackList(callback_list, self, {
            "epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size, "samples": n})
        self.stop_training = False
        try:
            cbs.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch)
                order = rng.generator().permutation(n) if shuffle else np.arange(n)
                running, logs, last_full = _Running(self._metrics), {}, -math.inf
                for step in range(steps):
                    batch = order[step * batch_size:(step + 1) * batch_size]
                    cbs.on_train_batch_begin(step)
                    loss, y_pred = self._train_step([a[batch] for a in xs], y[batch], grad_flags)
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
                if xs_val is not None:
                    epoch_logs.update(self._evaluate(xs_val, y_val, batch_size, prefix="val_"))
                cbs.on_epoch_end(epoch, epoch_logs)
                if self.stop_training:
                    break
            cbs.on_train_end()
        finally:
            self._sync_requires_grad()  # back to the current flags, for code that calls backward itself
        return self.history

    def _evaluate(self, xs, y, batch_size, prefix="", bar=None):
        running = _Running(self._metrics)
        with no_grad():
            for start in range(0, len(y), batch_size):
                xb, yb = [a[start:start + batch_size] for a in xs], y[start:start + batch_size]
                loss, y_pred = self._loss_and_predictions(self._cast(xb), yb, training=False)
                running.add(float(loss.item()), yb, y_pred.data)
                if bar is not None:
                    bar.update(1)
        return running.logs(prefix)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """Loss and metrics on (x, y): [loss, *metrics], or the loss alone when there are no
        metrics (a dict with return_dict=True). verbose: 'auto'/1 progress bar, 2 one line, 0 silent."""
        self._require_compiled("evaluate")
        self._require_single_output("evaluate")
        xs, y = self._check_xy(x, y, "evaluate")
        batch_size = _batch_size(batch_size, "evaluate")
        verbose = _verbose(verbose, "evaluate")
        return_dict = checks.flag(return_dict, "evaluate", "return_dict")
        self._ensure_built(xs)
        bar = None
        if verbose == 1:
            bar = callbacks_module.progress_bar(math.ceil(len(y) / batch_size), "evaluate")
        logs = self._evaluate(xs, y, batch_size, bar=bar)
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
        """The model's outputs as a NumPy array (a list of them for several outputs), in eval
        mode (no dropout).

        x is a batch (N, *input_shape) (a list of batches for several inputs), or, for a model
        with one input, one sample shaped exactly input_shape, whose output is returned without
        the batch axis (e.g. (10,) instead of (1, 10)). x is cast to what the first layer takes
        (the model's dtype, not rescaled; integer indices for an Embedding).
        """
        xs = self._as_arrays(x, "predict")
        if any(a.ndim == 0 for a in xs):
            raise ValueError(f"predict: x must be an array of samples, got {x!r:.80}")
        if len({len(a) for a in xs}) > 1:
            raise ValueError(f"predict: the inputs must have as many samples each, got shapes {self._shapes_text(xs)}")
        batch_size = _batch_size(batch_size, "predict")
        verbose = _verbose(verbose, "predict")
        sample = self._sample_shapes()
        single = len(xs) == 1 and sample is not None and tuple(xs[0].shape) == sample[0]
        if single:
            xs = [xs[0][None]]
        self._ensure_built(xs)
        starts = range(0, len(xs[0]), batch_size)
        bar = callbacks_module.progress_bar(len(starts), "predict") if verbose == 1 else None
        batches = []
        with no_grad():
            for start in starts:
                out = self._run(self._cast([a[start:start + batch_size] for a in xs]))
                batches.append([t.data for t in (out if isinstance(out, list) else [out])])
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        shapes = self.output_shape if isinstance(self.output_shape, list) else [self.output_shape]
        outputs = [np.concatenate([b[i] for b in batches]) if batches else
                   np.empty((0,) + tuple(shape[1:]), dtype=self.dtype) for i, shape in enumerate(shapes)]
        if single:
            outputs = [out[0] for out in outputs]
        return outputs if isinstance(self.output_shape, list) else outputs[0]

    # ------------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        """Print each layer's name, type, output shape and parameter count (a nested model is one
        row), then the totals: all weights, trainable ones, non-trainable ones (Keras's)."""
        print_fn = print_fn or print
        header, widths, rows = self._summary_rows()
        rule = "_" * sum(widths)

        def row(*cells):
            return " " + "".join(f"{str(c):<{w}}" for c, w in zip(cells, widths)).rstrip()

        lines = [f'Model: "{self.name}"', rule, row(*header), "=" * sum(widths)]
        for i, cells in enumerate(rows):
            lines.append(row(*cells))
            if i < len(rows) - 1:
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
    @classmethod
    def from_config(cls, config):
        """The model get_config() describes, built when the config gives its input shape."""
        model = cls._unbuilt_from_config(config)
        if model._can_build():
            model.build()
        return model

    @classmethod
    def _unbuilt_from_config(cls, config, depth=0):
        """keras.Model.from_config(config) reads a functional model's config, as in Keras."""
        return Functional._unbuilt_from_config(config, depth)

    @classmethod
    def _from_checked_config(cls, config, depth):
        """A model nested in another's config: made, its arguments checked, not built."""
        if depth >= MAX_NESTING:
            raise ValueError(f"models are nested more than {MAX_NESTING} deep")
        return cls._unbuilt_from_config(config, depth + 1)

    def _can_build(self):
        return True

    def save(self, filepath, include_optimizer=True):
        """Write architecture, weights, compile settings and (optionally) the optimizer's state to
        one .lnn file, atomically. Format: lepton_nn/keras/saving.py."""
        include_optimizer = checks.flag(include_optimizer, "save", "include_optimizer")
        if not self.built:
            raise ValueError(f"save {filepath}: the model is not built yet (no input shape); build or fit it first")
        weights, arrays = [], {}
        for name, p in self.named_weights():
            member = f"weights/{len(weights):03d}.npy"
            weights.append({"name": name, "shape": list(p.shape), "dtype": p.dtype.name, "file": member})
            arrays[member] = p.data
        compile_config, opt_state, opt_arrays = self._compile_config(include_optimizer)
        arrays.update(opt_arrays)
        config = {"model_class": type(self).__name__, "model": self.get_config(), "compile": compile_config,
                  "weights": weights, "optimizer_state": opt_state}
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
        return f"<{type(self).__name__} name={self.name!r}, {len(self.layers)} layers>"


def _weight_entries(layer, *input_shapes):
    """[(name, shape, dtype)] of the weights `layer` makes for these input shapes, computed."""
    if isinstance(layer, Model):
        return layer._weight_plan(*input_shapes)
    return [(name, tuple(shape), layer.dtype) for name, shape in layer.weight_shapes(*input_shapes)]


_SAVABLE_OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW)}
# The per-weight state each optimizer keeps once it has stepped (none before): lepton_nn.optim.
_OPTIMIZER_STATE = {"SGD": {"momentum_buffer"}, "Adam": {"step", "m", "v"}, "AdamW": {"step", "m", "v"}}


def _library_version():
    import lepton_nn  # the package above this module: imported at call time, not at import
    return lepton_nn.__version__


def load_model(filepath, compile=True):
    """Rebuild the model saved at filepath by model.save (a Sequential or a functional model,
    nested models included): architecture, weights, and (compile=True) its compile settings and
    optimizer state.

    Raises saving.ModelFileError naming the path for any file model.save did not write, before
    allocating anything but what the file holds: saving.read checks the bytes; here every layer's
    and the loss's arguments pass the constructors' signatures and checks (the same as in Python
    code), a functional model's graph references only its inputs and earlier calls, the weight
    shapes the architecture implies (computed, not built) must be the file's, and the optimizer's
    settings and state must be what lepton_nn.optim keeps.
    """
    compile = checks.flag(compile, "load_model", "compile")
    config, arrays = saving.read(filepath)
    try:
        model_class = config.get("model_class", "Sequential")  # files before functional models had none
        if model_class not in _MODEL_CLASSES:
            raise ValueError(f"unknown model class {model_class!r}; known: {', '.join(_MODEL_CLASSES)}")
        model = _MODEL_CLASSES[model_class]._unbuilt_from_config(_field(config, "model", dict, "config.json"))
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


# The two kinds of model live in their own files; imported last, as they subclass Model.
from lepton_nn.keras.functional_model import Functional  # noqa: E402
from lepton_nn.keras.sequential import Sequential  # noqa: E402

_MODEL_CLASSES = {"Sequential": Sequential, "Functional": Functional}
