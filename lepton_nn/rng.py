"""The library's random generator (weight initialisation, dropout, shuffling).

lepton_nn is deterministic by default: the generator starts from seed 0, so a program run
twice on the same backend trains to the same weights (a teaching engine should not make a
learner chase run-to-run noise). `seed(n)` restarts it from n; `seed(None)` from fresh OS
entropy, for when variation between runs is wanted.
"""
import numpy as np

DEFAULT_SEED = 0

_generator = np.random.default_rng(DEFAULT_SEED)


def seed(value):
    global _generator
    _generator = np.random.default_rng(value)


def generator():
    return _generator
