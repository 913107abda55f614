"""Plots as PNG files, drawn by matplotlib (the optional extra "plot"; nothing else needs it).

    history(h.history, "curves.png")         loss and accuracy per epoch, training and validation
    evaluation(y, probs, x, "eval.png")      the confusion matrix and the worst-misclassified images
    bench("bench.png", kernels=..., train=...)  the benchmark tables as bar charts against PyTorch
    returns(...) lives in lepton_nn/rl.py, on the same pyplot() and save()

They back `History.plot`, `lepton-nn train --plot`, `evaluate --plot`, `bench --plot` and `rl
--plot`. Every figure has a fixed size in pixels (no tight bounding box), which the tests check.
Nothing here imports the Keras layer or the benchmarks: the plots take plain dicts and arrays.
"""
import numpy as np

from lepton_nn import fileio
from lepton_nn.kernels import NAMES as BACKENDS  # lepton_nn's runs; the others are peer frameworks

EXTRA = 'plotting needs matplotlib, the optional extra "plot": pip install -e ".[plot]"'
DPI = 100  # pixels = inches × DPI


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), or an ImportError naming the extra."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(EXTRA) from err
    return plt


def save(fig, path):
    """Write the figure as a PNG, atomically (a file is either the whole plot or absent), and close it."""
    try:
        with fileio.atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=DPI)
    finally:
        pyplot().close(fig)
    return path


# --------------------------------------------------------------------------- learning curves
def history(history, path, title=None, val_label="validation"):
    """Each quantity of a Keras History's .history per epoch, one panel each (loss first), with
    its val_ twin beside it when fit had validation data; 500×400 pixels per panel.

    history: {"loss": [...], "accuracy": [...], "val_loss": [...], ...}, one value per epoch.
    """
    if not isinstance(history, dict) or not history.get("loss"):
        raise ValueError("History.plot: no epochs recorded (call fit first), found "
                         f"{sorted(history) if isinstance(history, dict) else type(history).__name__}")
    names = [k for k in history if not k.startswith("val_")]
    names.sort(key=lambda k: k != "loss")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), dpi=DPI, squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, label in ((name, "training"), (f"val_{name}", val_label)):
            if key in history:
                values = np.asarray(history[key], dtype=np.float64)
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


# --------------------------------------------------------------------------- evaluation
def worst_misclassified(y_true, probabilities, count):
    """Indices of the wrong predictions made with the highest confidence (the probability given to
    the wrong class), most confident first; at most `count`."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def evaluation(y_true, probabilities, images, path, worst=16, title=None):
    """Left, the confusion matrix (rows true class, columns predicted) with its counts, coloured by
    the share of each true class; right, the `worst` misclassified images, most confident first,
    each titled "true → predicted (probability)". 1200×600 pixels.

    y_true (N,) ints, probabilities (N, K), images (N, H, W) or (N, H, W, 1).
    """
    from lepton_nn import metrics
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities, dtype=np.float64)
    images = np.asarray(images)
    images = images.reshape(images.shape[:3]) if images.ndim == 4 else images
    if probabilities.ndim != 2 or len(probabilities) != len(y_true) or len(images) != len(y_true):
        raise ValueError(f"evaluation plot: expected as many labels, probability rows and images, got "
                         f"{len(y_true)}, {probabilities.shape} and {images.shape}")
    matrix = metrics.confusion_matrix(y_true, probabilities, num_classes=probabilities.shape[1])
    plt = pyplot()
    fig = plt.figure(figsize=(12, 6), dpi=DPI, layout="constrained")  # places the titles of the subfigures
    left, right = fig.subfigures(1, 2)
    _confusion(left, matrix)
    _worst_grid(right, y_true, probabilities, images, worst)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _confusion(subfig, matrix):
    ax = subfig.subplots()
    k = len(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # a row: where one true class went
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted class", ylabel="true class",
           title=f"confusion matrix ({int(np.trace(matrix))} of {int(matrix.sum())} right)")


def _worst_grid(subfig, y_true, probabilities, images, count):
    side = max(1, int(np.ceil(np.sqrt(count))))
    axes = np.atleast_1d(subfig.subplots(side, side)).ravel()
    chosen = worst_misclassified(y_true, probabilities, count)
    subfig.suptitle(f"the {len(chosen)} most confident mistakes" if len(chosen) else "no mistakes")
    predicted = probabilities.argmax(axis=1)
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, chosen):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"{int(y_true[i])} → {int(predicted[i])} ({probabilities[i, predicted[i]]:.2f})", fontsize=8)


# --------------------------------------------------------------------------- benchmarks
def _median_range(values):
    """(median, min, max) of the values that are not None, or None: a figure over rounds."""
    values = [v for v in values or () if v is not None]
    return (float(np.median(values)), min(values), max(values)) if values else None


def bench(path, kernels=None, train=None):
    """The benchmark tables as bar charts, one panel per JSON given (`lepton-nn bench --kernels
    --json` / `--train --json`); 1000×450 pixels per panel. Bars are medians over rounds, whiskers
    the min–max.

    kernels: each case's time on each backend ÷ PyTorch's in the same round (log scale, below 1 is
    faster), or the ms themselves when PyTorch did not run. train: ms per training step of each
    run, PyTorch's included, each bar labelled with its ratio to PyTorch NCHW's.
    """
    panels = [(draw, data) for draw, data in ((_kernel_bars, kernels), (_train_bars, train)) if data]
    if not panels:
        raise ValueError("bench plot: expected the JSON of `bench --kernels` or `bench --train`, got neither")
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 4.5 * len(panels)), dpi=DPI, squeeze=False)
    for ax, (draw, data) in zip(axes[:, 0], panels):
        draw(ax, data)
    fig.tight_layout()
    return save(fig, path)


def _bars(ax, groups, series, values, log=False):
    """Grouped bars: one group per name in `groups`, one bar per name in `series`; values[(g, s)]
    is a (median, min, max) or absent."""
    width = 0.8 / max(len(series), 1)
    for n, s in enumerate(series):
        xs, heights, errors = [], [], [[], []]
        for g, group in enumerate(groups):
            cell = values.get((group, s))
            if cell:
                xs.append(g + (n - (len(series) - 1) / 2) * width)
                heights.append(cell[0])
                errors[0].append(cell[0] - cell[1])
                errors[1].append(cell[2] - cell[0])
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=s)
    crowded = len(groups) > 6
    ax.set_xticks(range(len(groups)), groups, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _kernel_bars(ax, data):
    cases = [c["name"] for c in data["cases"]]
    figures = data["figures"]
    backends = list(dict.fromkeys(b for c in cases for b in data["results"].get(c, {}) if b != "torch"))
    ratio = any(k.endswith(" / torch") for k in figures)
    suffix = " / torch" if ratio else " ms"
    values = {(c, b): _median_range(figures.get(f"{c} {b}{suffix}")) for c in cases for b in backends}
    _bars(ax, cases, backends, {k: v for k, v in values.items() if v}, log=True)
    if ratio:
        ax.axhline(1, color="black", lw=1, ls="--", label="PyTorch")
        ax.legend(fontsize=8)
        ax.set(ylabel="time ÷ PyTorch's (log)", title="kernels (fwd + bwd) against PyTorch: below 1 is faster")
    else:
        ax.set(ylabel="ms (log)", title="kernels (fwd + bwd), ms: PyTorch did not run")


def _train_bars(ax, data):
    runs = list(dict.fromkeys(x["run"] for x in data["rounds"][0]))
    figures = data["figures"]
    cells = {run: _median_range(figures.get(f"{run} ms/step")) for run in runs}
    shown = [run for run in runs if cells[run]]  # a run that failed in every round has no bar
    for n, run in enumerate(shown):
        median, low, high = cells[run]
        ax.bar(n, median, 0.8, yerr=[[median - low], [high - median]], capsize=3,
               color="tab:blue" if run in BACKENDS else "tab:orange")
        ratio = _median_range(figures.get(f"{run} / torch"))
        if ratio:
            ax.annotate(f"{ratio[0]:.2f}× torch", (n, high), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(shown)), shown)
    model = data.get("settings", {}).get("model", "article")  # bench --train --model
    what = "the classic MNIST CNN" if model == "article" else f"the {model} CNN (--model {model})"
    ax.set(ylabel="ms per step (batch 64)", title=f"training {what}: ms per step (blue lepton_nn, orange the peers)")
    ax.grid(axis="y", alpha=0.3)
