"""Small Keras utilities."""
import numpy as np

from lepton_nn import rng


def set_random_seed(seed):
    """Seed lepton_nn's generator (weight initialisation, shuffling, dropout)."""
    rng.seed(seed)


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer labels (N,) → one-hot (N, num_classes), for categorical_crossentropy."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out
