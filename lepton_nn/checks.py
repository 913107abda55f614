"""Argument checks that several layers of lepton_nn share: one place for each rule and its
message. Every error names its owner (the function or layer that was called), what it
expected and what it got. Imports nothing of lepton_nn, so any layer may use it.
"""
import numpy as np


def pair(value, owner, name, minimum=None):
    """An int or a pair of ints as a pair (h, w) of Python ints, each ≥ `minimum` (if given)."""
    try:
        values = (value, value) if np.ndim(value) == 0 else tuple(np.ravel(value).tolist())
    except (TypeError, ValueError):
        values = ()
    if len(values) != 2 or not all(_whole(v) and (minimum is None or v >= minimum) for v in values):
        kind = "an int" if minimum is None else "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ValueError(f"{owner}: {name} must be {kind} or a pair of them, got {value!r}")
    return int(values[0]), int(values[1])


def _whole(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and float(v).is_integer()


def class_labels(labels, n, num_classes, owner):
    """Integer class labels of shape (n,), each in [0, num_classes), as int64 (C-contiguous)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{owner}: integer class labels expected, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{owner}: labels must have shape ({n},) to match the batch, got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{owner}: labels must lie in [0, {num_classes}), got values from "
                         f"{labels.min()} to {labels.max()}")
    return np.ascontiguousarray(labels, dtype=np.int64)
