"""The shared argument checks: one rule and one message each, whoever calls them."""
import numpy as np
import pytest

from lepton_nn import checks


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((2, 5), (2, 5)), ([1, 2], (1, 2)), (2.0, (2, 2)),
                                             (np.int64(4), (4, 4)), (np.array([1, 3]), (1, 3))])
def test_pair_accepts_an_int_or_two(value, expected):
    assert checks.pair(value, "conv2d", "stride") == expected


@pytest.mark.parametrize("value", ["ab", (1, "a"), True, (1, 2, 3), 2.5, None])
def test_pair_refuses_anything_else_with_a_value_error_naming_the_owner(value):
    with pytest.raises(ValueError, match=r"conv2d: stride must be an int or a pair of them, got"):
        checks.pair(value, "conv2d", "stride")


def test_pair_minimum_is_in_the_message():
    with pytest.raises(ValueError, match="Conv2D: kernel_size must be a positive int"):
        checks.pair((0, 3), "Conv2D", "kernel_size", minimum=1)
    assert checks.pair(-1, "pad2d", "padding") == (-1, -1)  # no minimum: the caller's range check says more


def test_class_labels_are_checked_and_made_int64():
    labels = checks.class_labels(np.array([2, 0], np.int8), 2, 3, "cross_entropy")
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"cross_entropy: labels must lie in \[0, 3\), got values from 0 to 3"):
        checks.class_labels([0, 3], 2, 3, "cross_entropy")
    with pytest.raises(ValueError, match=r"shape \(2,\) to match the batch, got \(3,\)"):
        checks.class_labels([0, 1, 2], 2, 3, "cross_entropy")
    with pytest.raises(ValueError, match="integer class labels expected, got dtype float64"):
        checks.class_labels([0.0, 1.0], 2, 3, "cross_entropy")
