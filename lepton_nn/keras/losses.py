"""Keras losses, composed from lepton_nn.functional and Tensor ops. A loss object maps
(y_true, y_pred) to the scalar mean over the batch; the functions give per-sample values.

On probabilities (from_logits=False, the default) cross-entropy is composed as

    p ← p / Σ_k p_k,   p ← clip(p, ε, 1 − ε)  (ε = 1e-7),   loss_n = −Σ_k t_nk · log p_nk

(sparse: t is the one-hot of the label, so loss_n = −log p_n,y). The clip keeps log finite
when a probability underflows to 0, at the price of a zero gradient there. With
from_logits=True the loss is functional.cross_entropy on the logits: log-sum-exp, exact and
stable, gradient softmax(z) − t.

When a model's last activation is softmax, Sequential uses that logits form even for
from_logits=False: see models.py and docs/equations.md ("Softmax + cross-entropy in the Keras
API").
"""
import numpy as np

from lepton_nn import checks
from lepton_nn import functional as F
from lepton_nn.tensor import Tensor

EPSILON = 1e-7


def _clip(t, low, high):
    """clip(t, low, high) from relu, so its gradient is 1 inside and 0 outside:
    max(t, low) = low + relu(t − low),  min(u, high) = high − relu(high − u)."""
    t = low + (t - low).relu()
    return high - (high - t).relu()


def _labels(y_true, n, num_classes):
    """Keras accepts labels as (N,) or (N, 1), integers or whole floats; checks.class_labels does the rest."""
    owner = "sparse_categorical_crossentropy"
    labels = np.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    labels = labels.reshape(-1) if labels.size == n else labels
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise ValueError(f"{owner}: labels must be whole numbers (class indices)")
        labels = labels.astype(np.int64)
    return checks.class_labels(labels, n, num_classes, owner)


def _targets(y_true, like):
    t = np.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    if t.shape != like.shape:
        raise ValueError(f"categorical_crossentropy: targets must have the predictions' shape {like.shape} "
                         f"(one-hot or probabilities), got {t.shape}; for integer labels use "
                         f"sparse_categorical_crossentropy")
    return t.astype(like.dtype, copy=False)


def _probabilities(y_pred):
    """y_pred renormalised and clipped (the from_logits=False composition above)."""
    return _clip(y_pred / y_pred.sum(axis=-1, keepdims=True), EPSILON, 1 - EPSILON)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample −log p[n, y_n] for integer labels y_true (N,) and y_pred (N, K)."""
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    labels = _labels(y_true, y_pred.shape[0], y_pred.shape[-1])
    if from_logits:
        return F.cross_entropy(y_pred, labels, reduction="none")
    rows = np.arange(y_pred.shape[0])
    return -_probabilities(y_pred)[rows, labels].log()


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample −Σ_k t_nk·log p_nk for one-hot (or probability) targets y_true (N, K)."""
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    t = _targets(y_true, y_pred)
    if from_logits:
        return F.cross_entropy(y_pred, t, reduction="none")
    return -(Tensor(t) * _probabilities(y_pred).log()).sum(axis=-1)


def mean_squared_error(y_true, y_pred):
    """Per-sample mean over the last axis of (y_pred − y_true)²."""
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    t = np.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    if t.shape != y_pred.shape and t.size == y_pred.size:
        t = t.reshape(y_pred.shape)  # e.g. targets (N,) for predictions (N, 1)
    squared = F.mse_loss(y_pred, t.astype(y_pred.dtype, copy=False), reduction="none")
    return squared.mean(axis=-1) if squared.ndim > 1 else squared


mse = mean_squared_error


class Loss:
    """Callable (y_true, y_pred) → scalar Tensor: the batch mean of the per-sample loss."""
    fusable = False  # may Sequential compute it from pre-softmax logits? (cross-entropies only)

    def per_sample(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred):
        loss = self.per_sample(y_true, y_pred)
        return loss.mean() if loss.ndim else loss

    def get_config(self):
        return {}


class SparseCategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False):
        self.from_logits = checks.flag(from_logits, type(self).__name__, "from_logits")
        self.fusable = not self.from_logits

    def per_sample(self, y_true, y_pred):
        return sparse_categorical_crossentropy(y_true, y_pred, self.from_logits)

    def logits_loss(self, y_true, logits):
        """The same loss computed from the logits of a final softmax (fused, stable)."""
        return sparse_categorical_crossentropy(y_true, logits, from_logits=True).mean()

    def get_config(self):
        return {"from_logits": self.from_logits}


class CategoricalCrossentropy(SparseCategoricalCrossentropy):
    def per_sample(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, self.from_logits)

    def logits_loss(self, y_true, logits):
        return categorical_crossentropy(y_true, logits, from_logits=True).mean()


class MeanSquaredError(Loss):
    def per_sample(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)


class _FunctionLoss(Loss):
    """A user's function (y_true, y_pred) → per-sample or scalar Tensor. Cannot be saved."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def per_sample(self, y_true, y_pred):
        loss = self.fn(y_true, y_pred)
        return loss if isinstance(loss, Tensor) else Tensor(loss)


_BY_NAME = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
            "categorical_crossentropy": CategoricalCrossentropy,
            "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError}
CLASSES = {cls.__name__: cls for cls in (SparseCategoricalCrossentropy, CategoricalCrossentropy, MeanSquaredError)}


def get(identifier):
    """A Loss from a name ('sparse_categorical_crossentropy', 'categorical_crossentropy', 'mse'),
    a Loss object, or a function (y_true, y_pred) → Tensor."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        if identifier in CLASSES:
            return CLASSES[identifier]()
        raise ValueError(f"unknown loss {identifier!r}; known: {', '.join(_BY_NAME)}")
    if identifier in (sparse_categorical_crossentropy, categorical_crossentropy, mean_squared_error):
        return get(identifier.__name__)
    if callable(identifier):
        return _FunctionLoss(identifier)
    raise ValueError(f"loss must be a name, a Loss or a function, got {identifier!r}")


def serialize(loss):
    """{'class_name', 'config'}, or None for a user's function (which cannot be saved)."""
    if type(loss).__name__ not in CLASSES:
        return None
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config):
    """A Loss from serialize()'s dict; ValueError for an unknown class or arguments its constructor refuses."""
    name = config.get("class_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or name not in CLASSES:
        raise ValueError(f"unknown loss class {name!r} in {config!r:.200}; known: {', '.join(CLASSES)}")
    arguments = config.get("config", {})
    checks.constructor_arguments(CLASSES[name], arguments, f"loss {name}")
    return CLASSES[name](**arguments)
