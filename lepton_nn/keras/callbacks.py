"""Callbacks: objects whose hooks fit calls at the start and end of training, epochs and batches.

`logs` is a dict of floats: during an epoch the running (epoch-to-date) loss and metrics,
at the end of an epoch the epoch's values plus val_* ones when there is validation data.
Setting `model.stop_training = True` ends fit after the current epoch.
"""
import sys
import time

import numpy as np


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass


class History(Callback):
    """Records each epoch's logs: history.history = {'loss': [...], 'accuracy': [...], ...}."""

    def __init__(self):
        super().__init__()
        self.epoch, self.history = [], {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def plot(self, path, title=None, val_label="validation"):
        """Draw the loss and each metric per epoch, training and val_ lines, to a PNG (500×400
        pixels per panel) with matplotlib, the extra "plot"; returns path. (Keras has no such
        method: there one plots history.history by hand.)"""
        from lepton_nn import plots
        return plots.history(self.history, path, title=title, val_label=val_label)


class LambdaCallback(Callback):
    """A callback made of functions: LambdaCallback(on_train_batch_end=lambda batch, logs: ...).
    Any hook not given does nothing."""

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not (name.startswith("on_") and hasattr(Callback, name)):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    mode 'auto' minimises losses and maximises accuracy-like metrics (accuracy, precision,
    recall, f1). restore_best_weights=True puts back the weights of the best epoch at the end.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "precision", "recall", "f1")) else "min"
        self.monitor, self.patience, self.verbose, self.mode = monitor, int(patience), verbose, mode
        self.min_delta, self.baseline, self.restore_best_weights = abs(min_delta), baseline, restore_best_weights
        self.stopped_epoch = 0

    def _better(self, value, reference):
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch, self.best_weights = 0, 0, 0, None
        self.best = self.baseline if self.baseline is not None else (np.inf if self.mode == "min" else -np.inf)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping: metric {self.monitor!r} is not in the logs "
                             f"(available: {', '.join(logs or {})})")
        self.wait += 1
        if self._better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping (best {self.monitor} "
                  f"{self.best:.4f} at epoch {self.best_epoch + 1})")


def format_logs(logs):
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


class ProgbarLogger(Callback):
    """What fit prints. verbose=1: a progress bar per epoch (tqdm) with the step count, ETA,
    running loss and metrics; verbose=2: one line per epoch; verbose=0 (no logger): nothing."""

    def __init__(self, verbose=1, file=None):
        super().__init__()
        self.verbose = verbose
        self.file = file or sys.stdout
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.seen = 0
        label = f"Epoch {epoch + 1}/{self.params['epochs']}"
        if self.verbose == 1:
            self.bar = progress_bar(self.params["steps"], label, self.file)
        else:
            self.label = label

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        if self.bar is not None:
            self.bar.set_postfix_str(format_logs(logs or {}), refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(format_logs(logs or {}), refresh=False)
            self.bar.close()
            self.bar = None
        else:
            seconds = time.perf_counter() - self.start
            print(f"{self.label} - {self.seen}/{self.params['steps']} steps - {seconds:.0f}s "
                  f"- {format_logs(logs or {})}", file=self.file, flush=True)


def progress_bar(total, label, file=None):
    """A tqdm bar: "label: 45%|████▌     | 422/938 [00:21<00:26, 19.6step/s, loss: 0.1532 - ...]"."""
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="step", file=file or sys.stdout, mininterval=0.25,
                dynamic_ncols=True, leave=True)


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)
        return call
