"""Metrics checked against a confusion matrix worked out by hand."""
import numpy as np
import pytest

from lepton_nn.metrics import (METRICS, accuracy, classification_report, confusion_matrix,
                               f1_score, precision, recall)

# Ten samples, three classes.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
# Counting pairs (true, predicted):
#   true 0: predicted 0,0,1,2  → C[0] = [2, 1, 1]
#   true 1: predicted 1,1,0    → C[1] = [1, 2, 0]
#   true 2: predicted 2,2,1    → C[2] = [0, 1, 2]
C = [[2, 1, 1],
     [1, 2, 0],
     [0, 1, 2]]
# Per class, TP = diagonal, FP = column sum − TP, FN = row sum − TP, support = row sum:
#   class 0: TP 2, FP 1 (the 1 predicted 0), FN 2, support 4 → P 2/3, R 2/4 = 1/2
#   class 1: TP 2, FP 2,                      FN 1, support 3 → P 2/4 = 1/2, R 2/3
#   class 2: TP 2, FP 1,                      FN 1, support 3 → P 2/3, R 2/3
# F1 = 2TP / (2TP + FP + FN): class 0: 4/7, class 1: 4/7, class 2: 4/6 = 2/3.
# Accuracy = (2 + 2 + 2) / 10 = 0.6.
P = [2 / 3, 1 / 2, 2 / 3]
R = [1 / 2, 2 / 3, 2 / 3]
F1 = [4 / 7, 4 / 7, 2 / 3]
SUPPORT = [4, 3, 3]


def test_confusion_matrix_by_hand():
    c = confusion_matrix(Y_TRUE, Y_PRED)
    assert c.tolist() == C and c.dtype == np.int64
    # Rows are true classes: the one true-2 sample predicted 1 sits at row 2, column 1.
    assert confusion_matrix([2], [1], num_classes=3).tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_per_class_scores():
    np.testing.assert_allclose(precision(Y_TRUE, Y_PRED), P, rtol=1e-15)
    np.testing.assert_allclose(recall(Y_TRUE, Y_PRED), R, rtol=1e-15)
    np.testing.assert_allclose(f1_score(Y_TRUE, Y_PRED), F1, rtol=1e-15)
    # F1 is the harmonic mean of P and R.
    np.testing.assert_allclose(F1, [2 * p * r / (p + r) for p, r in zip(P, R)], rtol=1e-15)


def test_accuracy_and_its_averages():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6, abs=1e-15)
    assert accuracy(Y_TRUE, Y_PRED, average="weighted") == pytest.approx(0.6, abs=1e-15)
    # Per-class accuracy is the fraction of each class classified correctly (= recall);
    # its mean is the balanced accuracy.
    np.testing.assert_allclose(accuracy(Y_TRUE, Y_PRED, average=None), R, rtol=1e-15)
    assert accuracy(Y_TRUE, Y_PRED, average="macro") == pytest.approx(np.mean(R), abs=1e-15)


@pytest.mark.parametrize("metric, per_class", [(precision, P), (recall, R), (f1_score, F1)])
def test_averages(metric, per_class):
    assert metric(Y_TRUE, Y_PRED, average="macro") == pytest.approx(np.mean(per_class), abs=1e-15)
    weighted = np.dot(per_class, SUPPORT) / 10
    assert metric(Y_TRUE, Y_PRED, average="weighted") == pytest.approx(weighted, abs=1e-15)
    # Micro pools the counts: ΣTP = 6, ΣFP = ΣFN = 4, so everything is 6/10 = the accuracy.
    assert metric(Y_TRUE, Y_PRED, average="micro") == pytest.approx(0.6, abs=1e-15)
    assert isinstance(metric(Y_TRUE, Y_PRED, average="macro"), float)


def test_weighted_recall_is_accuracy():
    assert recall(Y_TRUE, Y_PRED, average="weighted") == pytest.approx(0.6, abs=1e-15)


def test_zero_division_is_zero():
    # Class 2 is never predicted (precision 0/0) and class 1 never occurs (recall 0/0).
    y_true, y_pred = [0, 0, 2], [0, 1, 0]
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]
    np.testing.assert_array_equal(precision(y_true, y_pred), [1 / 2, 0, 0])
    np.testing.assert_array_equal(recall(y_true, y_pred), [1 / 2, 0, 0])
    np.testing.assert_array_equal(f1_score(y_true, y_pred), [1 / 2, 0, 0])
    # A class absent from both still counts in the macro mean, with 0.
    assert precision([0, 0], [0, 0], average="macro", num_classes=2) == 0.5
    assert recall([0, 0], [1, 1], average="macro", num_classes=2) == 0.0


def test_probability_and_one_hot_inputs():
    probs = np.eye(3)[Y_PRED] * 0.7 + 0.1  # rows like [0.8, 0.1, 0.1]: argmax = Y_PRED
    one_hot = np.eye(3)[Y_TRUE]
    assert confusion_matrix(one_hot, probs).tolist() == C
    assert f1_score(Y_TRUE, probs, average="macro") == pytest.approx(np.mean(F1), abs=1e-15)
    # Column vectors (N, 1) of labels are labels, as Keras' sparse targets often are.
    assert accuracy(np.array(Y_TRUE)[:, None], Y_PRED) == pytest.approx(0.6)
    # Integer-valued floats are fine as labels.
    assert accuracy(np.array(Y_TRUE, dtype=float), Y_PRED) == pytest.approx(0.6)
    # The column count fixes K even if the last class is never predicted or true.
    assert confusion_matrix([0, 1], np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])).shape == (3, 3)


def test_classification_report():
    report = classification_report(Y_TRUE, Y_PRED, digits=4)
    lines = report.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[1].split() == ["0", "0.6667", "0.5000", "0.5714", "4"]
    assert lines[2].split() == ["1", "0.5000", "0.6667", "0.5714", "3"]
    assert lines[3].split() == ["2", "0.6667", "0.6667", "0.6667", "3"]
    assert lines[4] == ""
    assert lines[5].split() == ["accuracy", "0.6000", "10"]
    macro = [np.mean(P), np.mean(R), np.mean(F1)]
    assert lines[6].split() == ["macro", "avg", *(f"{v:.4f}" for v in macro), "10"]
    weighted = [np.dot(s, SUPPORT) / 10 for s in (P, R, F1)]
    assert lines[7].split() == ["weighted", "avg", *(f"{v:.4f}" for v in weighted), "10"]
    # Columns line up: every number ends under its header.
    assert len({len(line) for line in lines if line}) == 1
    named = classification_report(Y_TRUE, Y_PRED, digits=2, target_names=["cat", "dog", "emu"])
    assert named.splitlines()[1].split() == ["cat", "0.67", "0.50", "0.57", "4"]


def test_metrics_registry_uses_macro_averages():
    assert set(METRICS) == {"accuracy", "precision", "recall", "f1"}
    assert METRICS["accuracy"](Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert METRICS["precision"](Y_TRUE, Y_PRED) == pytest.approx(np.mean(P))
    assert METRICS["recall"](Y_TRUE, Y_PRED) == pytest.approx(np.mean(R))
    assert METRICS["f1"](Y_TRUE, Y_PRED) == pytest.approx(np.mean(F1))
    assert all(isinstance(fn(Y_TRUE, Y_PRED), float) for fn in METRICS.values())


@pytest.mark.parametrize("metric", [confusion_matrix, accuracy, precision, recall, f1_score,
                                    classification_report])
def test_mismatched_lengths_name_function_and_shapes(metric):
    with pytest.raises(ValueError) as info:
        metric([0, 1, 2], [0, 1])
    message = str(info.value)
    assert message.startswith(metric.__name__ + ":") and "(3,)" in message and "(2,)" in message


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"confusion_matrix: y_pred has labels out of range 0\.\.2: \[3, 5\]"):
        confusion_matrix([0, 1, 2, 0], [3, 5, 0, 3], num_classes=3)
    with pytest.raises(ValueError, match=r"precision: y_true .* out of range .*\[-1\]"):
        precision([-1, 0], [0, 0])


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="average must be one of"):
        precision(Y_TRUE, Y_PRED, average="binary")
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="integer class labels"):
        recall([0, 1], [0.2, 0.9])  # a probability vector is not labels
    with pytest.raises(ValueError, match="shape"):
        f1_score(np.zeros((2, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="3 columns but num_classes=2"):
        confusion_matrix([0, 1], np.eye(3)[:2], num_classes=2)
    with pytest.raises(ValueError, match="target_names"):
        classification_report([0, 1], [0, 1], target_names=["only one"])
