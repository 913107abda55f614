"""Argument checks that several layers of lepton_nn share: one place for each rule and its
message. Every error names its owner (the function or layer that was called), what it
expected and what it got. Imports nothing of lepton_nn, so any layer may use it.
"""
import numpy as np


def pair(value, owner, name, minimum=0):
    """An int or a pair of ints as a pair (h, w) of Python ints, each ≥ `minimum`."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(np.ravel(value).tolist()) \
        if isinstance(value, (tuple, list, np.ndarray)) else None
    if values is None or len(values) != 2 or any(isinstance(v, bool) or int(v) != v or v < minimum for v in values):
        kind = "a positive int" if minimum == 1 else f"an int ≥ {minimum}" if minimum else "an int"
        raise ValueError(f"{owner}: {name} must be {kind} or a pair of them, got {value!r}")
    return int(values[0]), int(values[1])


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
