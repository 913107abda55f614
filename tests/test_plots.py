"""The plots (lepton_nn/plots.py): each is drawn to a PNG, opened with Pillow and checked to be a
real image (not blank) of the size its docstring promises; without matplotlib, the error names
the extra. Tiny data only: a few hundred random images, one or two epochs."""
import importlib.util
import json
import sys

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, keras, plots, train
from lepton_nn.bench import kernels as kernel_bench
from lepton_nn.bench import train as train_bench
from lepton_nn.data import mnist

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason='needs matplotlib: pip install -e ".[plot]"')


def assert_real_png(path, size):
    """A PNG Pillow opens, of `size` (width, height) pixels, with something drawn on it."""
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5, f"{path} is (nearly) blank"
    assert not list(path.parent.glob(f".{path.name}*")), "a temporary file was left behind"


def small_mnist(n_train=192, n_test=96, seed=0):
    """Random 'digits' with a learnable label (the brightness of one row), as mnist.load_data returns them."""
    rng = np.random.default_rng(seed)

    def part(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        x[np.arange(n), 2 * y + 4, :] = 255
        return x, y
    return part(n_train), part(n_test)


def dense_model():
    model = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28, 1)),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# --------------------------------------------------------------------------- learning curves
@needs_matplotlib
def test_history_plot_after_fit_with_validation(tmp_path):
    (x, y), (x_val, y_val) = small_mnist()
    ln.seed(0)
    model = dense_model()
    history = model.fit(train.preprocess(x), y, epochs=2, batch_size=32, verbose=0,
                        validation_data=(train.preprocess(x_val), y_val))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    path = history.plot(tmp_path / "curves.png", title="two epochs")
    assert path == tmp_path / "curves.png"
    assert_real_png(path, (1000, 400))  # two panels, loss and accuracy, 500×400 each


@needs_matplotlib
def test_history_plot_panel_per_quantity_and_without_validation(tmp_path):
    plots.history({"loss": [0.9, 0.5, 0.4]}, tmp_path / "loss.png")
    assert_real_png(tmp_path / "loss.png", (500, 400))
    three = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "precision": [0.4, 0.7], "val_loss": [1.1, 0.6]}
    plots.history(three, tmp_path / "three.png")
    assert_real_png(tmp_path / "three.png", (1500, 400))


def test_history_plot_before_fit_says_so(tmp_path):
    with pytest.raises(ValueError, match="no epochs recorded"):
        keras.callbacks.History().plot(tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


@needs_matplotlib
def test_train_plot_draws_test_curves_and_trains_the_same_model(tmp_path, monkeypatch):
    data = small_mnist()
    monkeypatch.setattr(mnist, "load_data", lambda path=None: data)
    quiet = dict(epochs=2, batch_size=32, verbose=0, out=lambda *a: None)
    plain = train.train(**quiet)
    plotted = train.train(**quiet, plot=str(tmp_path / "curves.png"))
    assert_real_png(tmp_path / "curves.png", (1000, 400))
    assert set(plotted["history"].history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # the test set only watched: the same weights as the run without a plot
    for a, b in zip(plain["model"].get_weights(), plotted["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
    # the last val_ figures are the test set's, as reported
    assert plotted["history"].history["val_accuracy"][-1] == pytest.approx(plotted["test_accuracy"])


@needs_matplotlib
def test_cli_train_plot(tmp_path, monkeypatch, capsys):
    data = small_mnist()
    monkeypatch.setattr(mnist, "load_data", lambda path=None: data)
    assert cli.main(["train", "--epochs", "1", "--verbose", "0", "--plot", str(tmp_path / "c.png")]) == 0
    assert f"plotted to {tmp_path / 'c.png'}" in capsys.readouterr().out
    assert_real_png(tmp_path / "c.png", (500 * 2, 400))


# --------------------------------------------------------------------------- evaluation
def test_worst_misclassified_are_the_most_confident_mistakes():
    y = np.array([0, 1, 2, 0, 1])
    p = np.array([[0.9, 0.1, 0.0],    # right
                  [0.7, 0.3, 0.0],    # wrong, 0.7
                  [0.05, 0.95, 0.0],  # wrong, 0.95
                  [0.4, 0.6, 0.0],    # wrong, 0.6
                  [0.0, 1.0, 0.0]])   # right
    assert plots.worst_misclassified(y, p, 16).tolist() == [2, 1, 3]
    assert plots.worst_misclassified(y, p, 2).tolist() == [2, 1]
    assert plots.worst_misclassified(np.array([0]), np.array([[1.0, 0.0]]), 16).tolist() == []


@needs_matplotlib
@pytest.mark.parametrize("n", [3, 300])
def test_evaluation_plot(tmp_path, n):
    """n = 3: fewer mistakes than grid cells, the rest left blank."""
    rng = np.random.default_rng(n)
    y = rng.integers(0, 10, n)
    p = rng.dirichlet(np.ones(10), n)
    plots.evaluation(y, p, rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), tmp_path / "e.png", title="t")
    assert_real_png(tmp_path / "e.png", (1200, 600))


def test_evaluation_plot_refuses_mismatched_or_empty_inputs(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.evaluation(np.zeros(0, int), np.zeros((0, 10)), np.zeros((0, 28, 28)), tmp_path / "e.png")
    with pytest.raises(ValueError, match="as many labels, probability rows and images"):
        plots.evaluation(np.zeros(3, int), np.full((3, 10), 0.1), np.zeros((2, 28, 28)), tmp_path / "e.png")


@needs_matplotlib
def test_cli_evaluate_plot(tmp_path, monkeypatch, capsys):
    _, test = small_mnist()
    monkeypatch.setattr(mnist, "load_data", lambda path=None: (None, test))
    dense_model().save(tmp_path / "m.lnn")
    assert cli.main(["evaluate", "--model", str(tmp_path / "m.lnn"), "--plot", str(tmp_path / "e.png")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert_real_png(tmp_path / "e.png", (1200, 600))


# --------------------------------------------------------------------------- benchmarks
def kernel_json(with_torch=True):
    """A --kernels JSON as kernels.main writes it, its figures made by kernels.figures."""
    results = {"conv1": {"numpy": {"ms": [9.0, 10.0], "runs": [5, 5], "error": "", "fallback": []},
                         "c": {"ms": [2.5, 2.9], "runs": [5, 5], "error": "", "fallback": []}},
               "xent": {"numpy": {"ms": [0.11, 0.12], "runs": [5, 5], "error": "", "fallback": []},
                        "c": {"ms": [], "runs": [], "error": "WRONG", "fallback": []}}}
    if with_torch:
        results["conv1"]["torch"] = {"ms": [3.0, 3.1], "runs": [5, 5], "error": "", "fallback": []}
        results["xent"]["torch"] = {"ms": [0.2, 0.25], "runs": [5, 5], "error": "", "fallback": []}
    return {"kind": "kernels", "cases": [{"name": "conv1"}, {"name": "xent"}], "results": results,
            "figures": kernel_bench.figures(results)}


def train_json():
    """A --train JSON as train.main writes it (two rounds, one failed run), figures by train.figures."""
    def run(name, ms, rate):
        return {"run": name, "step_ms": ms, "eval_images_per_s": rate, "peak_rss_mb": 500.0}
    rounds = [[run("c", 20.0, 9000.0), run("numpy", 60.0, 3000.0), run("torch", 25.0, 8000.0),
               {"run": "jax", "error": "boom"}],
              [run("c", 21.0, 9100.0), run("numpy", 58.0, 2900.0), run("torch", 24.0, 8100.0),
               {"run": "jax", "error": "boom"}]]
    return {"kind": "train", "rounds": rounds, "figures": train_bench.figures(rounds)}


@needs_matplotlib
@pytest.mark.parametrize("kinds, height", [({"kernels"}, 450), ({"train"}, 450), ({"kernels", "train"}, 900)])
def test_bench_plot(tmp_path, kinds, height):
    given = {"kernels": kernel_json(), "train": train_json()}
    plots.bench(tmp_path / "b.png", **{k: v for k, v in given.items() if k in kinds})
    assert_real_png(tmp_path / "b.png", (1000, height))


@needs_matplotlib
def test_bench_plot_without_torch_draws_the_times(tmp_path):
    plots.bench(tmp_path / "b.png", kernels=kernel_json(with_torch=False))
    assert_real_png(tmp_path / "b.png", (1000, 450))


def test_bench_plot_needs_a_table(tmp_path):
    with pytest.raises(ValueError, match="bench --kernels"):
        plots.bench(tmp_path / "b.png")


@needs_matplotlib
@pytest.mark.parametrize("keep_json", [False, True])
def test_cli_bench_plot_reads_back_the_json(tmp_path, monkeypatch, capsys, keep_json):
    """With --plot the JSON is written anyway (to a temporary file without --json) and drawn."""
    seen = []

    def fake_main(backends, json_path=None, **kwargs):
        seen.append(json_path)
        with open(json_path, "w") as f:
            json.dump(kernel_json(), f)
        return 0
    monkeypatch.setattr(kernel_bench, "main", fake_main)
    argv = ["bench", "--kernels", "--plot", str(tmp_path / "b.png")]
    argv += ["--json", str(tmp_path / "k.json")] if keep_json else []
    assert cli.main(argv) == 0
    assert_real_png(tmp_path / "b.png", (1000, 450))
    assert (seen == [str(tmp_path / "k.json")]) if keep_json else (seen[0] and not (tmp_path / "k.json").exists())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.png"] + (["k.json"] if keep_json else []))


@pytest.mark.parametrize("flags", [["--profile", "--train"], ["--rl"], ["--shakespeare"]])
def test_cli_bench_plot_only_for_kernels_and_train(tmp_path, capsys, flags):
    assert cli.main(["bench", *flags, "--plot", str(tmp_path / "b.png")]) == 2
    assert "--plot draws the tables of --kernels and --train" in capsys.readouterr().err


# --------------------------------------------------------------------------- without matplotlib
@pytest.fixture
def no_matplotlib(monkeypatch):
    """`import matplotlib` fails, as where the extra is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_the_error_names_the_extra(no_matplotlib, tmp_path):
    with pytest.raises(ImportError, match=r'the optional extra "plot": pip install -e "\.\[plot\]"'):
        plots.pyplot()
    history = keras.callbacks.History()
    history.history = {"loss": [1.0]}
    with pytest.raises(ImportError, match='"plot"'):
        history.plot(tmp_path / "c.png")


@pytest.mark.parametrize("argv", [["train", "--plot", "c.png"], ["evaluate", "--model", "m.lnn", "--plot", "e.png"],
                                  ["bench", "--plot", "b.png"], ["rl", "--plot", "r.png"]])
def test_cli_without_matplotlib_stops_before_any_work(no_matplotlib, tmp_path, monkeypatch, capsys, argv):
    def forbidden(*args, **kwargs):
        raise AssertionError("work started although matplotlib is missing")
    monkeypatch.setattr(mnist, "load_data", forbidden)
    monkeypatch.setattr(train, "build_model", forbidden)
    monkeypatch.setattr(keras.models, "load_model", forbidden)
    monkeypatch.setattr(kernel_bench, "main", forbidden)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.lnn").write_bytes(b"")
    if argv[0] == "rl":
        pytest.importorskip("gymnasium")  # without it, rl names that extra first
    assert cli.main(argv) == 2
    assert 'pip install -e ".[plot]"' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lnn"]
