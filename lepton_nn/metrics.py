"""Classification metrics from the confusion matrix, in plain NumPy.

Every metric here is a function of the K×K confusion matrix C, where C[i, j] counts the
samples whose true class is i and predicted class is j. For class c:

    TP_c = C[c, c]                   predicted c, truly c
    FP_c = Σ_i C[i, c] − TP_c        predicted c, truly something else   (column c)
    FN_c = Σ_j C[c, j] − TP_c        truly c, predicted something else   (row c)
    support_c = Σ_j C[c, j]          how many samples truly are c

    precision_c = TP_c / (TP_c + FP_c)
    recall_c    = TP_c / (TP_c + FN_c)
    F1_c        = 2 · precision_c · recall_c / (precision_c + recall_c)
    accuracy    = Σ_c TP_c / N

Zero division: a ratio whose denominator is 0 (a class never predicted, or never present) is
defined as 0, like scikit-learn's `zero_division=0`. The classes are always 0 .. K−1, so a
class that appears in neither y_true nor y_pred still counts, with scores 0, in the macro
average (as scikit-learn with `labels=range(K)`).

Averages (`average=`): None gives the per-class array; 'macro' the unweighted mean over the
K classes; 'weighted' the mean weighted by support_c; 'micro' pools the counts first
(Σ TP / Σ (TP + FP), ...), which for single-label classification equals the accuracy.
Macro F1 is the mean of the per-class F1 scores, not the F1 of macro precision and recall.

Inputs: y_true and y_pred are 1-D integer labels, or (N, K) matrices — one-hot y_true,
probabilities or scores for y_pred — which are turned into labels by argmax over axis 1.
"""
import numpy as np

AVERAGES = (None, "macro", "weighted", "micro")


def _as_labels(y, name, fn):
    """1-D int64 labels from labels (N,) or (N, 1), or from an (N, K) matrix via argmax.

    Returns (labels, K or None): K is the column count when a matrix was given.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1).astype(np.int64), y.shape[1]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{fn}: {name} must be 1-D labels (N,) or an (N, K) matrix, "
                         f"got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{fn}: {name} must be numeric, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ValueError(
                f"{fn}: {name} must hold integer class labels, found {y[bad][0]!r}; "
                f"pass probabilities as an (N, K) matrix with K >= 2")
    return y.astype(np.int64), None


def _check(y_true, y_pred, num_classes, fn):
    """Validate and convert the inputs of every metric: (true labels, predicted labels, K)."""
    t, k_true = _as_labels(y_true, "y_true", fn)
    p, k_pred = _as_labels(y_pred, "y_pred", fn)
    if t.shape != p.shape:
        raise ValueError(f"{fn}: y_true and y_pred have different lengths: y_true shape "
                         f"{np.shape(y_true)}, y_pred shape {np.shape(y_pred)}")
    if t.size == 0:
        raise ValueError(f"{fn}: y_true and y_pred are empty; need at least one sample")
    for k, name in ((k_true, "y_true"), (k_pred, "y_pred")):
        if k is not None and num_classes is not None and k != num_classes:
            raise ValueError(f"{fn}: {name} has {k} columns but num_classes={num_classes}")
    if num_classes is None:
        num_classes = max(int(t.max()) + 1, int(p.max()) + 1, k_true or 0, k_pred or 0)
    elif int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    for labels, name in ((t, "y_true"), (p, "y_pred")):
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{fn}: {name} has labels out of range 0..{num_classes - 1}: "
                             f"{np.unique(labels[bad]).tolist()[:10]}")
    return t, p, num_classes


def _confusion(t, p, k):
    # Each pair (true i, predicted j) lands in bin i·K + j of a flat histogram.
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def confusion_matrix(y_true, y_pred, num_classes=None):
    """C[i, j] = number of samples with true class i and predicted class j; (K, K) int64.

    Rows are true classes, columns predicted ones, so the diagonal holds the correct
    predictions, row sums are the supports and column sums the prediction counts.
    num_classes: K; default max label + 1 (or the column count of a matrix input).
    """
    t, p, k = _check(y_true, y_pred, num_classes, "confusion_matrix")
    return _confusion(t, p, k)


def _safe_div(num, den):
    """num / den elementwise, with 0 wherever den == 0 (the zero_division=0 convention)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _counts(y_true, y_pred, num_classes, average, fn):
    """Per-class TP, FP, FN and support, after validating `average`."""
    if average not in AVERAGES:
        raise ValueError(f"{fn}: average must be one of {AVERAGES}, got {average!r}")
    t, p, k = _check(y_true, y_pred, num_classes, fn)
    c = _confusion(t, p, k)
    tp = np.diag(c)
    return tp, c.sum(axis=0) - tp, c.sum(axis=1) - tp, c.sum(axis=1)


def _reduce(per_class, support, average):
    """Apply a non-micro `average` to a per-class score array."""
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean())
    return float(_safe_div(np.sum(per_class * support), np.sum(support)))  # weighted


def precision(y_true, y_pred, average=None, num_classes=None):
    """precision_c = TP_c / (TP_c + FP_c): of the samples predicted c, the fraction truly c.

    average: None → per-class array (K,); 'macro' | 'weighted' | 'micro' → float
    (micro = Σ TP / Σ (TP + FP) = accuracy). 0/0 is 0.
    """
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes, average, "precision")
    if average == "micro":
        return float(_safe_div(tp.sum(), tp.sum() + fp.sum()))
    return _reduce(_safe_div(tp, tp + fp), support, average)


def recall(y_true, y_pred, average=None, num_classes=None):
    """recall_c = TP_c / (TP_c + FN_c): of the samples truly c, the fraction predicted c.

    average: None → per-class array (K,); 'macro' | 'weighted' | 'micro' → float
    (micro = Σ TP / Σ (TP + FN) = accuracy; weighted also equals accuracy). 0/0 is 0.
    """
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes, average, "recall")
    if average == "micro":
        return float(_safe_div(tp.sum(), tp.sum() + fn.sum()))
    return _reduce(_safe_div(tp, tp + fn), support, average)


def f1_score(y_true, y_pred, average=None, num_classes=None):
    """F1_c = 2·P_c·R_c / (P_c + R_c) = 2·TP_c / (2·TP_c + FP_c + FN_c), the harmonic mean.

    average: None → per-class array (K,); 'macro' → mean of the per-class F1 (not the F1 of
    macro P and R); 'weighted' → support-weighted mean; 'micro' → F1 of the pooled counts
    (= accuracy). 0/0 is 0.
    """
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes, average, "f1_score")
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        return float(_safe_div(2 * tp, 2 * tp + fp + fn))
    # The TP/FP/FN form equals 2PR/(P+R) and is 0 exactly when P + R = 0.
    return _reduce(_safe_div(2 * tp, 2 * tp + fp + fn), support, average)


def accuracy(y_true, y_pred, average="micro", num_classes=None):
    """accuracy = Σ_c TP_c / N, the fraction of samples predicted correctly.

    The default average='micro' (and 'weighted', which comes to the same) gives that float.
    average=None gives the per-class accuracy TP_c / support_c — the fraction of class c
    classified correctly, which is recall_c — and 'macro' its mean, the "balanced accuracy".
    """
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes, average, "accuracy")
    if average in ("micro", "weighted"):
        return float(tp.sum() / support.sum())
    return _reduce(_safe_div(tp, support), support, average)


def classification_report(y_true, y_pred, digits=4, num_classes=None, target_names=None):
    """A text table of per-class precision, recall, F1 and support, then accuracy and the
    macro and weighted averages. For y_true = [0, 0, 1], y_pred = [0, 1, 1], digits=2:

                      precision     recall   f1-score    support
                   0       1.00       0.50       0.67          2
                   1       0.50       1.00       0.67          1

            accuracy                             0.67          3
           macro avg       0.75       0.75       0.67          3
        weighted avg       0.83       0.67       0.67          3

    target_names: optional K names for the class rows (default the class numbers).
    """
    fn = "classification_report"
    t, p, k = _check(y_true, y_pred, num_classes, fn)
    if target_names is None:
        target_names = [str(c) for c in range(k)]
    elif len(target_names) != k:
        raise ValueError(f"{fn}: got {len(target_names)} target_names for {k} classes")
    c = _confusion(t, p, k)
    tp, support = np.diag(c), c.sum(axis=1)
    fp, fn_ = c.sum(axis=0) - tp, support - tp
    prec, rec = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn_)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn_)
    n = int(support.sum())

    rows = [(str(name), prec[i], rec[i], f1[i], int(support[i])) for i, name in enumerate(target_names)]
    summary = [
        ("accuracy", None, None, float(tp.sum() / n), n),
        ("macro avg", prec.mean(), rec.mean(), f1.mean(), n),
        ("weighted avg", *(_reduce(s, support, "weighted") for s in (prec, rec, f1)), n),
    ]
    name_w = max(len("weighted avg"), *(len(r[0]) for r in rows))
    num_w = max(len("precision"), digits + 2)

    def line(name, *values):
        cells = ["" if v is None else f"{v:.{digits}f}" for v in values[:3]]
        return (f"{name:>{name_w}}  " + "  ".join(f"{s:>{num_w}}" for s in cells)
                + f"  {values[3]:>{num_w}}")

    header = f"{'':>{name_w}}  " + "  ".join(
        f"{h:>{num_w}}" for h in ("precision", "recall", "f1-score", "support"))
    return "\n".join([header, *(line(*r) for r in rows), "", *(line(*r) for r in summary)]) + "\n"


def _macro(metric, name):
    def fn(y_true, y_pred):
        return metric(y_true, y_pred, average="macro")
    fn.__name__ = name
    fn.__doc__ = f"Macro-averaged {metric.__name__}: (y_true, y_pred) -> float."
    return fn


# Keras metric names → functions (y_true, y_pred) -> float, used by the Keras-like API.
METRICS = {
    "accuracy": accuracy,
    "precision": _macro(precision, "precision"),
    "recall": _macro(recall, "recall"),
    "f1": _macro(f1_score, "f1"),
}

# Other Keras names for the same metrics.
ALIASES = {"acc": "accuracy", "sparse_categorical_accuracy": "accuracy", "categorical_accuracy": "accuracy"}


def by_name(name):
    """The metric function for a Keras metric name or alias, or None if there is none."""
    return METRICS.get(ALIASES.get(name, name))
