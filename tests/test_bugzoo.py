"""The bug zoo (lepton_nn/bugzoo.py): gradcheck must fail every bug and pass its correct twin on
the same inputs, which proves both that the inputs expose the slip and that the checker tells
right from wrong."""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.bugzoo import BUGS, find


def _inputs(bug):
    return bug.make_inputs(np.random.default_rng(0))


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_gradcheck_catches_the_bug(bug):
    report = ln.gradcheck(bug.fn, *_inputs(bug))
    assert not report.passed, f"{bug.name} slipped through:\n{report}"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_the_correct_twin_passes_on_the_same_inputs(bug):
    report = ln.gradcheck(bug.correct, *_inputs(bug))
    assert report.passed, f"{bug.name}'s twin failed, so its inputs prove nothing:\n{report}"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_only_the_backward_is_wrong(bug):
    args = [ln.tensor(a) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a for a in _inputs(bug)]
    assert all(a.dtype == np.float64 for a in args if isinstance(a, ln.Tensor))
    np.testing.assert_allclose(bug.fn(*args).data, bug.correct(*args).data, rtol=1e-12, atol=1e-12)


def test_the_zoo_is_documented():
    assert len(BUGS) >= 12 and len({b.name for b in BUGS}) == len(BUGS)
    for bug in BUGS:  # what a student reads: the op, the right gradient, the slip, the symptom
        assert all(f"{part}:" in bug.explanation for part in ("Op", "Correct", "Slip", "Symptom")), bug.name


def test_the_tie_bug_shows_only_along_directions():
    """Stepped alone, each tied maximum sees the wrong value as a one-sided slope; only a step
    that moves both (a random direction) exposes it (see MaxPool2dEveryTieWins)."""
    bug = find("max_pool_every_tie_gets_all")
    (report,) = ln.gradcheck(bug.fn, *_inputs(bug)).inputs
    assert report.failing and all(isinstance(check.where[0], str) for check in report.failing), str(report)
