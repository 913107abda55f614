"""Argument checks that several layers of lepton_nn share: one place for each rule and its
message. Every error names its owner (the function or layer that was called), what it
expected and what it got. Imports nothing of lepton_nn, so any layer may use it.
"""
import inspect
import math

import numpy as np

# What lepton_nn computes in: every kernel, on every backend, has a float32 and a float64 version.
COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def compute_dtype(dtype, owner, name):
    """Refuse any dtype but float32 and float64 (float16, longdouble, integers) for an array an
    op computes with: one rule for every backend, checked before any kernel runs."""
    if np.dtype(dtype) not in COMPUTE_DTYPES:
        raise ValueError(f"{owner}: {name} must be float32 or float64, got dtype {np.dtype(dtype)}"
                         + (" (convert it with .astype(np.float32))" if np.dtype(dtype).kind == "f" else ""))


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


def indices(values, size, owner, name="indices"):
    """Integer indices of any shape, each in [0, size), as int64 (C-contiguous): rows of an
    embedding table. Negative indices are refused, not wrapped (as PyTorch's embedding)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{owner}: {name} must be integers, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"{owner}: {name} must lie in [0, {size}), got values from {values.min()} to {values.max()}")
    return np.asarray(values, dtype=np.int64, order="C")  # not ascontiguousarray: it makes a 0-d index 1-d


# Keras-API argument rules (used by keras/layers.py, keras/models.py, and by load_model on a file's config).
def int_at_least(value, owner, name, minimum):
    """`value` as a Python int ≥ minimum. Bools, floats (even 2.0) and strings are refused, as
    Keras 3 refuses Dense(3.0); NumPy integers are accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")
    return int(value)


def finite_number(value, owner, name, minimum=None):
    """`value` as a finite float, ≥ minimum if given (bools, strings, NaN and ±inf are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or (minimum is not None and value < minimum):
        kind = "a finite number" + ("" if minimum is None else f" ≥ {minimum}")
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")
    return float(value)


def fraction(value, owner, name):
    """`value` as a float in [0, 1): a dropout rate, a validation split (NaN and bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def flag(value, owner, name):
    """`value` as a bool; only True or False: 0, 1 or the string 'false' are refused, not guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def shape(value, owner, name):
    """A shape without the batch axis, e.g. (28, 28, 1), as a tuple of positive ints."""
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{owner}: {name} must be a tuple of positive ints, e.g. (28, 28, 1), got {value!r}")
    return tuple(int_at_least(d, owner, f"every dimension of {name} {tuple(value)}", 1) for d in value)


def constructor_arguments(cls, arguments, owner, skip=()):
    """Check that cls(**arguments) binds: `arguments` (e.g. a saved config) is a dict naming only
    arguments cls's constructor takes (following **kwargs up to the base classes) and every one it
    requires; `skip` names those given separately. Raises ValueError naming owner and the arguments."""
    if not isinstance(arguments, dict):
        raise ValueError(f"{owner}: arguments must be a dict (a JSON object), got {type(arguments).__name__}")
    accepted, required = set(), None
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        accepted |= {p.name for p in named}
        if required is None:  # only the class's own constructor says what must be given
            required = {p.name for p in named if p.default is p.empty}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    accepted -= set(skip)
    unexpected = sorted(str(k) for k in arguments if k not in accepted)
    missing = sorted((required or set()) - set(skip) - set(arguments))
    if unexpected or missing:
        problem = f"unexpected argument {', '.join(unexpected)}" if unexpected else \
            f"missing required argument {', '.join(missing)}"
        raise ValueError(f"{owner}: {problem}; {cls.__name__} takes {', '.join(sorted(accepted)) or 'none'}")


def padding_index(value, size, owner):
    """An embedding's padding_idx: None, or an int in [−size, size) (negative counts from the
    end, as in PyTorch), returned in [0, size)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -size <= value < size:
        raise ValueError(f"{owner}: padding_idx must be an int in [{-size}, {size}) or None, got {value!r}")
    return int(value) % size
