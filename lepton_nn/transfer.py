"""Transfer learning on MNIST, the classic Keras example: what `lepton-nn transfer` runs.

    1. pretrain   the article's CNN with a 5-way head on digits 0–4, saved to a .lnn file;
    2. frozen     load it, keep its convolutional feature extractor (conv → pool → flatten) frozen,
                  put a new head on it (Dense(128, relu) → Dense(5, softmax)), train the head on 5–9;
    3. fine-tune  unfreeze everything, compile again with a 10× lower learning rate, train on;
    4. scratch    the same network, freshly initialised, trained on 5–9 with the budget of 2 + 3.

Steps 2–4 run with 1 %, 10 % and 100 % of the 5–9 training labels. Every run gets the same number
of gradient updates whatever its share of labels, so the runs differ only in where they start
(docs/transfer.md explains the study and gives its figures).
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from lepton_nn import checks, fileio
from lepton_nn.train import preprocess  # noqa: F401  (transfer.preprocess: the same scaling)

PRETRAIN_DIGITS = (0, 1, 2, 3, 4)
TRANSFER_DIGITS = (5, 6, 7, 8, 9)


@dataclass
class Budget:
    """How long each phase trains. The 5–9 phases count updates as epochs of the full 5–9 set, so a run on
    1 % of the labels takes as many updates as one on 100 % (it sees each image about 100× more often)."""
    pretrain_epochs: int = 5      # the classic Keras example's 5
    head_epochs: int = 2          # step 2
    finetune_epochs: int = 2      # step 3
    batch_size: int = 64
    learning_rate: float = 1e-3   # Adam's default; fine-tuning uses a tenth of it
    finetune_factor: float = 0.1


@dataclass
class Result:
    fraction: float
    labels: int
    accuracy: dict = field(default_factory=dict)   # phase → test accuracy on digits 5–9
    seconds: dict = field(default_factory=dict)    # phase → training seconds



def digits_subset(x, y, digits):
    """The images of the given digits, labels renumbered 0…len(digits)−1 (5–9 → 0–4)."""
    keep = np.isin(y, digits)
    return x[keep], np.searchsorted(np.asarray(digits), y[keep])


def label_fraction(y, fraction, seed):
    """Indices of a `fraction` of the examples, the same share of every class (at least one each)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return np.sort(np.concatenate(picked))


def build_cnn(num_classes, learning_rate=1e-3):
    """The article's CNN with a `num_classes` head; the feature extractor's layers are named so a loaded
    model can be cut at 'flatten'."""
    from lepton_nn import keras
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu", name="conv"),
        keras.layers.MaxPooling2D((2, 2), name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="dense"),
        keras.layers.Dense(num_classes, activation="softmax", name="head")])
    _compile(model, learning_rate)
    return model


def _compile(model, learning_rate):
    from lepton_nn import keras
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def with_new_head(path, num_classes):
    """Load the pretrained model, cut it after 'flatten', freeze that part and put a new head on it.
    Returns (model, features): `features` is the frozen extractor, nested in `model` as one layer."""
    from lepton_nn import keras
    features = keras.models.load_model(path, compile=False)
    while features.layers[-1].name != "flatten":
        features.pop()
    features.trainable = False
    inputs = keras.Input(shape=(28, 28, 1))
    x = features(inputs, training=False)  # inference mode inside, even while fine-tuning
    x = keras.layers.Dense(128, activation="relu", name="new_dense")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="new_head")(x)
    return keras.Model(inputs, outputs, name="transferred"), features


def _fit(model, x, y, epochs, budget):
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=budget.batch_size, verbose=0)
    return time.perf_counter() - start


def _accuracy(model, x, y):
    return float(model.evaluate(x, y, batch_size=512, verbose=0)[1])


def pretrain(x, y, path, budget, seed=0):
    """Step 1: train the CNN on digits 0–4 and save it. Returns (test-set model, seconds)."""
    import lepton_nn
    lepton_nn.seed(seed)
    model = build_cnn(len(PRETRAIN_DIGITS), budget.learning_rate)
    seconds = _fit(model, x, y, budget.pretrain_epochs, budget)
    model.save(path)
    return model, seconds


def transfer_runs(path, x, y, x_test, y_test, fraction, budget, seed=0):
    """Steps 2–4 on `fraction` of the 5–9 training labels. Returns a Result."""
    import lepton_nn
    subset = label_fraction(y, fraction, seed)
    x_part, y_part = x[subset], y[subset]
    epochs_per_full_epoch = math.ceil(len(y) / budget.batch_size) / math.ceil(len(subset) / budget.batch_size)
    head_epochs = max(1, round(budget.head_epochs * epochs_per_full_epoch))
    finetune_epochs = max(1, round(budget.finetune_epochs * epochs_per_full_epoch))
    result = Result(fraction, len(subset))

    lepton_nn.seed(seed)
    model, features = with_new_head(path, len(TRANSFER_DIGITS))
    _compile(model, budget.learning_rate)
    result.seconds["frozen"] = _fit(model, x_part, y_part, head_epochs, budget)
    result.accuracy["frozen"] = _accuracy(model, x_test, y_test)

    features.trainable = True  # takes effect at the next compile (Keras's rule)
    _compile(model, budget.learning_rate * budget.finetune_factor)
    result.seconds["fine-tuned"] = _fit(model, x_part, y_part, finetune_epochs, budget)
    result.accuracy["fine-tuned"] = _accuracy(model, x_test, y_test)

    lepton_nn.seed(seed)
    scratch = build_cnn(len(TRANSFER_DIGITS), budget.learning_rate)
    result.seconds["scratch"] = _fit(scratch, x_part, y_part, head_epochs + finetune_epochs, budget)
    result.accuracy["scratch"] = _accuracy(scratch, x_test, y_test)
    return result


PHASES = ("frozen", "fine-tuned", "scratch")


def format_results(results, pretrain_accuracy, pretrain_seconds):
    lines = [f"pretrained on digits 0–4: test accuracy {100 * pretrain_accuracy:.2f} % ({pretrain_seconds:.1f} s)",
             "", "test accuracy on digits 5–9 (training seconds)",
             f"{'labels':>14}  " + "  ".join(f"{p:>17}" for p in PHASES)]
    for r in results:
        cells = [f"{100 * r.accuracy[p]:6.2f} % ({r.seconds[p]:5.1f} s)" for p in PHASES]
        lines.append(f"{100 * r.fraction:5g} % {r.labels:>6}  " + "  ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def run(data=None, fractions=(0.01, 0.1, 1.0), budget=None, seed=0, save="digits_0_4.lnn", out=print):
    """The whole study; prints the table and returns (pretrain accuracy, [Result])."""
    from lepton_nn.data import mnist
    budget = budget or Budget()
    for f in fractions:
        if checks.finite_number(f, "transfer", "each fraction of labels") <= 0 or f > 1:
            raise ValueError(f"transfer: each fraction of labels must be in (0, 1], got {f!r}")
    checks.int_at_least(seed, "transfer", "seed", 0)
    fileio.check_writable(save, "transfer: save")
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data)
    x_train, x_test = preprocess(x_train), preprocess(x_test)
    x_a, y_a = digits_subset(x_train, y_train, PRETRAIN_DIGITS)
    xt_a, yt_a = digits_subset(x_test, y_test, PRETRAIN_DIGITS)
    x_b, y_b = digits_subset(x_train, y_train, TRANSFER_DIGITS)
    xt_b, yt_b = digits_subset(x_test, y_test, TRANSFER_DIGITS)
    out(f"pretraining the CNN on {len(y_a):,} images of digits 0–4 ({budget.pretrain_epochs} epochs) …")
    model, seconds = pretrain(x_a, y_a, save, budget, seed)
    pretrain_accuracy = _accuracy(model, xt_a, yt_a)
    out(f"saved to {save}")
    results = []
    for fraction in fractions:
        out(f"transfer to digits 5–9 with {100 * fraction:g} % of the labels …")
        results.append(transfer_runs(save, x_b, y_b, xt_b, yt_b, fraction, budget, seed))
    out("\n" + format_results(results, pretrain_accuracy, seconds))
    return pretrain_accuracy, results
