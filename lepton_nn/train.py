"""The classic Keras MNIST CNN, trained and reported: what `lepton-nn train` and `evaluate` run.

    Conv2D(32, 3×3, relu) → MaxPooling2D(2×2) → Flatten → Dense(128, relu) → Dense(10, softmax)
    Adam (Keras defaults), sparse categorical cross-entropy, 5 epochs, batch 64

Images are scaled to [0, 1] and given a channel axis: (N, 28, 28) uint8 → (N, 28, 28, 1) float32.
"""
import time

import numpy as np

from lepton_nn import checks, fileio


def build_model():
    """The classic Keras MNIST CNN (693,962 parameters), compiled as Keras's example compiles it."""
    from lepton_nn import keras
    model = keras.Sequential([
        keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def preprocess(images):
    """(N, 28, 28) uint8 → (N, 28, 28, 1) float32 in [0, 1], as the Keras example does."""
    return images.reshape(-1, 28, 28, 1).astype("float32") / 255.0


def train(epochs=5, batch_size=64, data=None, seed=0, save=None, verbose=2, out=print, plot=None):
    """Seed, build, fit on the 60,000 training images, then report on the 10,000 test images.
    Returns a dict: test_accuracy, test_loss, train_seconds, backend, model, history.

    plot: a PNG path for the loss and accuracy per epoch (lepton_nn.plots.history). Its second line
    is the test set, evaluated after each epoch as fit's validation_data: it only watches (nothing
    is chosen by it), so the model is the same as without plot, unlike validation_split, which
    would train on 54,000 images; the cost is one pass over the test set per epoch, counted in
    train_seconds.

    Every argument is checked first (ValueError naming it), so a bad one costs no training time.
    """
    import lepton_nn
    from lepton_nn import kernels
    from lepton_nn.data import mnist

    checks.int_at_least(epochs, "train", "epochs", 1)
    checks.int_at_least(batch_size, "train", "batch_size", 1)
    if seed is not None:
        checks.int_at_least(seed, "train", "seed", 0)
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"train: verbose must be 0, 1 or 2, got {verbose!r}")
    if save is not None:
        fileio.check_writable(save, "train: save")
    if plot is not None:
        from lepton_nn import plots
        fileio.check_writable(plot, "train: plot")
        plots.pyplot()  # a missing extra is reported now, not after the training
    backend = kernels.active_name()  # an unknown $LEPTON_NN_BACKEND fails here, before the data loads
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data)
    x_train, x_test = preprocess(x_train), preprocess(x_test)
    lepton_nn.seed(seed)
    model = build_model()
    out(f"training the classic MNIST CNN on {len(x_train):,} MNIST images: {epochs} epochs, batch {batch_size}, "
        f"seed {seed}, backend {backend}")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose,
                        validation_data=(x_test, y_test) if plot else None)
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    probabilities = model.predict(x_test, batch_size=256)
    out(f"\ntraining time: {train_seconds:.1f} s on backend {backend}")
    report(y_test, probabilities, loss=test_loss, out=out)
    if save:
        model.save(save)
        out(f"\nmodel saved to {save}")
    if plot:
        history.plot(plot, title=f"the classic MNIST CNN, seed {seed}, backend {backend}", val_label="test set")
        out(f"\nloss and accuracy per epoch plotted to {plot}")
    return {"test_accuracy": test_accuracy, "test_loss": test_loss, "train_seconds": train_seconds,
            "backend": backend, "model": model, "history": history}


def check_finite(what, values):
    """A NaN or inf in a model's output must stop the command, not be printed as a class."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if bad.any():
        raise RuntimeError(f"{what}: expected finite values, found {int(bad.sum())} of {bad.size} NaN or "
                           f"infinite (the model or its input is broken)")


def report(y_true, probabilities, loss=None, out=print, name="the model"):
    """Test accuracy, per-class precision / recall / F1 and the confusion matrix. A NaN or inf in
    the probabilities or the loss raises RuntimeError naming `name` instead of reporting a
    meaningless accuracy."""
    from lepton_nn import metrics
    check_finite(f"{name}: the test probabilities", probabilities)
    if loss is not None:
        check_finite(f"{name}: the test loss", loss)
    y_pred = probabilities.argmax(axis=1)
    accuracy = metrics.accuracy(y_true, y_pred)
    loss_text = "" if loss is None else f"  (loss {loss:.4f})"
    out(f"test accuracy: {100 * accuracy:.2f} % — {int(round(accuracy * len(y_true)))} of {len(y_true)}{loss_text}")
    out("\nper-class precision, recall and F1:")
    out(metrics.classification_report(y_true, probabilities, digits=4).rstrip())
    out("\n" + format_confusion_matrix(metrics.confusion_matrix(y_true, probabilities)))
    return accuracy


def format_confusion_matrix(matrix):
    """The matrix as a table: rows are true classes, columns predicted classes."""
    k = len(matrix)
    width = max(5, len(str(int(matrix.max()))) + 1)
    lines = ["confusion matrix (rows: true class, columns: predicted class)",
             " " * 6 + "".join(f"{c:>{width}}" for c in range(k))]
    for i in range(k):
        lines.append(f"{i:>5} " + "".join(f"{int(v):>{width}}" for v in matrix[i]))
    return "\n".join(lines)
