"""The library's random generator (weight initialisation, dropout, shuffling).

`seed(n)` makes a run repeatable: same seed, same backend ⇒ same weights after training.
"""
import numpy as np

_generator = np.random.default_rng()


def seed(value):
    global _generator
    _generator = np.random.default_rng(value)


def generator():
    return _generator
