"""`lepton-nn`: every argument is checked before any work starts, and a NaN is never printed as
an answer. Runs main() in-process on tiny files; never trains the real model or downloads."""
import os

import numpy as np
import pytest

from lepton_nn import cli, keras, train
from lepton_nn.data import mnist, write_idx


@pytest.fixture(autouse=True)
def no_work(monkeypatch, tmp_path):
    """Loading data or training fails the test: a bad argument must be refused before either."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started although an argument was bad")
    monkeypatch.setattr(mnist, "load_data", forbidden)
    monkeypatch.setattr(train, "build_model", forbidden)
    monkeypatch.chdir(tmp_path)  # relative paths in the cases below land here


def parse_error(capsys, argv):
    """Run the command, expect argparse's error (exit status 2), return its message."""
    assert cli.main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- counts and names
COUNTS = [("train", "--epochs", 1), ("train", "--batch-size", 1), ("train", "--seed", 0),
          ("bench", "--steps", 1), ("bench", "--rounds", 1), ("bench", "--repeat", 1), ("bench", "--threads", 1)]


@pytest.mark.parametrize("command, option, minimum", COUNTS)
@pytest.mark.parametrize("delta", [-1, -100])
def test_counts_below_their_minimum(capsys, command, option, minimum, delta):
    value = str(minimum + delta)
    message = parse_error(capsys, [command, option, value])
    assert f"argument {option}: expected an int >= {minimum}, got '{value}'" in message


@pytest.mark.parametrize("command, option, minimum", COUNTS)
@pytest.mark.parametrize("value", ["2.5", "ten", "", "1e3"])
def test_counts_that_are_not_ints(capsys, command, option, minimum, value):
    message = parse_error(capsys, [command, option, value])
    assert f"argument {option}: expected an int >= {minimum}, got {value!r}" in message


@pytest.mark.parametrize("argv, option", [
    (["train", "--backend", "cuda"], "--backend"),
    (["evaluate", "--model", "m.lnn", "--backend", "NumPy"], "--backend"),
    (["predict", "--model", "m.lnn", "x.npy", "--backend", "torch"], "--backend"),
    (["gradcheck", "--backend", "numpy,c"], "--backend"),
    (["gradcheck", "--op", "conv3d"], "--op"),
    (["bench", "--backend", "numpy,pytorch"], "--backend"),
    (["bench", "--backend", "all,c"], "--backend"),
    (["bench", "--case", "conv1,conv9"], "--case"),
    (["train", "--verbose", "3"], "--verbose"),
])
def test_unknown_names(capsys, tmp_path, argv, option):
    (tmp_path / "m.lnn").write_bytes(b"")
    (tmp_path / "x.npy").write_bytes(b"")
    message = parse_error(capsys, argv)
    bad = argv[argv.index(option) + 1]
    assert f"argument {option}:" in message and bad.split(",")[-1] in message


def test_known_names_pass_the_parser():
    for argv in (["gradcheck", "--op", "conv2d", "--backend", "all"], ["bench", "--backend", "numpy,torch-cl,peers"],
                 ["bench", "--case", "conv1,xent"], ["train", "--backend", "numba"]):
        cli.build_parser().parse_args(argv)


# --------------------------------------------------------------------------- paths
@pytest.mark.parametrize("argv", [
    ["evaluate", "--model", "missing.lnn"],
    ["predict", "--model", "missing.lnn", "digit.npy"],
    ["predict", "--model", "model.lnn", "missing.npy"],
    ["bench", "--compare", "missing.json"],
])
def test_files_to_read_must_exist(capsys, tmp_path, argv):
    (tmp_path / "model.lnn").write_bytes(b"")
    (tmp_path / "digit.npy").write_bytes(b"")
    missing = next(a for a in argv if a.startswith("missing."))
    assert f"{missing}: expected an existing file, found no such file" in parse_error(capsys, argv)


def test_image_must_be_a_format_pillow_reads_or_npy(capsys, tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "model.lnn").write_bytes(b"")
    (tmp_path / "digit.txt").write_bytes(b"")
    message = parse_error(capsys, ["predict", "--model", "model.lnn", "digit.txt"])
    assert "argument IMAGE: digit.txt: expected an image Pillow reads (.png, .jpg," in message
    assert "or a .npy array, found suffix '.txt'" in message
    for name in ("digit.jpg", "digit.PNG", "digit.webp", "digit.npy"):
        (tmp_path / name).write_bytes(b"")
        assert cli.image_file(name) == name


def test_without_pillow_only_npy_images_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    (tmp_path / "model.lnn").write_bytes(b"")
    (tmp_path / "digit.png").write_bytes(b"")
    message = parse_error(capsys, ["predict", "--model", "model.lnn", "digit.png"])
    assert 'argument IMAGE: digit.png: reading images needs Pillow, the optional extra "images"' in message
    assert "(a .npy array needs nothing)" in message


def test_a_directory_is_not_a_file(capsys, tmp_path):
    assert "found a directory" in parse_error(capsys, ["evaluate", "--model", str(tmp_path)])


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--model", "model.lnn"], ["bench"]])
def test_data_dir_must_hold_the_four_files(capsys, tmp_path, command):
    (tmp_path / "model.lnn").write_bytes(b"")
    message = parse_error(capsys, command + ["--data", "nowhere"])
    assert "argument --data: MNIST directory nowhere (from --data) does not exist" in message
    (tmp_path / "d").mkdir()
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8))
    message = parse_error(capsys, command + ["--data", "d"])
    assert "MNIST files missing" in message and "t10k-labels-idx1-ubyte[.gz]" in message


@pytest.mark.parametrize("option", [["train", "--save"], ["bench", "--json"]])
@pytest.mark.parametrize("path, expected", [
    ("nodir/out", "expected an existing directory"),
    ("afile/out", "expected an existing directory"),   # the "directory" is a file
    (".", "found a directory"),
    ("nodir/", "found a directory"),
    ("", "found an empty path"),
])
def test_files_to_write_are_checked_before_the_work(capsys, tmp_path, option, path, expected):
    (tmp_path / "afile").write_bytes(b"")
    message = parse_error(capsys, option + [path])
    assert f"argument {option[1]}: {path}: " in message and expected in message
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # and nothing was created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory(capsys, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert "not writable" in parse_error(capsys, ["train", "--save", "ro/m.lnn"])


# --------------------------------------------------------------------------- train() from Python
@pytest.mark.parametrize("kwargs, name", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"), ({"epochs": 2.0}, "epochs"), ({"epochs": True}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": "64"}, "batch_size"), ({"seed": -1}, "seed"),
    ({"verbose": 3}, "verbose"), ({"save": "nodir/m.lnn"}, "save"), ({"save": "."}, "save"),
])
def test_train_checks_its_arguments_before_loading_data(kwargs, name):
    with pytest.raises(ValueError, match=f"train: {name}"):
        train.train(**kwargs)


# --------------------------------------------------------------------------- NaN never printed as an answer
@pytest.fixture
def model_file(tmp_path):
    """A tiny compiled model saved to tmp_path; `nan=True` poisons its last bias."""
    def make(nan=False):
        model = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28, 1)),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if nan:
            _, bias = [p for _, p in model.layers[-1].named_weights()]
            bias.data[...] = np.nan
        path = tmp_path / ("nan.lnn" if nan else "ok.lnn")
        model.save(path)
        return str(path)
    return make


def test_predict_refuses_an_image_with_nan(capsys, tmp_path, model_file):
    image = np.zeros((28, 28), np.float32)
    image[0, 0] = np.nan
    np.save(tmp_path / "digit.npy", image)
    assert cli.main(["predict", "--model", model_file(), "digit.npy"]) != 0
    out, err = capsys.readouterr()
    assert out == "" and "digit.npy: expected finite pixel values" in err


def test_predict_fails_when_the_model_outputs_nan(capsys, tmp_path, model_file):
    np.save(tmp_path / "digit.npy", np.zeros((28, 28), np.float32))
    assert cli.main(["predict", "--model", model_file(nan=True), "digit.npy"]) != 0
    out, err = capsys.readouterr()
    assert out == "" and "nan.lnn on digit.npy" in err and "expected finite values" in err
    assert cli.main(["predict", "--model", model_file(), "digit.npy"]) == 0  # a sound model answers
    assert "digit.npy: " in capsys.readouterr().out


def test_evaluate_fails_when_the_model_outputs_nan(capsys, monkeypatch, model_file):
    rng = np.random.default_rng(0)
    data = ((None, None), (rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)))
    monkeypatch.setattr(mnist, "load_data", lambda path=None: data)
    assert cli.main(["evaluate", "--model", model_file(nan=True)]) != 0
    out, err = capsys.readouterr()
    assert "test accuracy" not in out and "nan.lnn: the test" in err and "expected finite values" in err
    assert cli.main(["evaluate", "--model", model_file()]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_report_refuses_nan():
    with pytest.raises(RuntimeError, match="the model: the test probabilities: expected finite values, found 1 of 20"):
        train.report(np.array([0, 1]), np.array([[np.nan] + [0.1] * 9, [0.1] * 10]), out=lambda *a: None)
    with pytest.raises(RuntimeError, match="loss"):
        train.report(np.array([0]), np.full((1, 10), 0.1), loss=float("nan"), out=lambda *a: None)
