"""The Keras-style API: layer shapes and parameter counts, freezing, the fused softmax +
cross-entropy, fit/evaluate/predict, saving, determinism and a small real-MNIST run."""
import io
import json
import math
import zipfile

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, keras, train
from lepton_nn.data import images
from lepton_nn.keras import layers
from lepton_nn.keras.saving import ModelFileError


def classic_model():
    return keras.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax")])


def random_digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


def small_model(dtype="float32", last="dense_softmax"):
    model = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(8, activation="tanh", dtype=dtype)])
    if last == "dense_softmax":
        model.add(layers.Dense(4, activation="softmax", dtype=dtype))
    else:
        model.add(layers.Dense(4, dtype=dtype))
        model.add(layers.Activation("softmax", dtype=dtype))
    return model


# --------------------------------------------------------------------------- shapes and counts
def test_classic_model_summary_shows_693962_trainable_parameters():
    model = classic_model()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 693,962" in text and "Trainable params: 693,962" in text
    assert "Non-trainable params: 0" in text
    assert [layer.output_shape for layer in model.layers] == [
        (None, 26, 26, 32), (None, 13, 13, 32), (None, 5408), (None, 128), (None, 10)]
    # 3·3·1·32 + 32;  0;  0;  5408·128 + 128;  128·10 + 10
    assert [layer.count_params() for layer in model.layers] == [320, 0, 0, 692352, 1290]
    assert "(None, 26, 26, 32)" in text and "692,352" in text
    assert model.count_params() == 693962


@pytest.mark.parametrize("layer,input_shape,output_shape,params", [
    (lambda: layers.Conv2D(8, 3), (9, 9, 2), (7, 7, 8), 3 * 3 * 2 * 8 + 8),
    (lambda: layers.Conv2D(8, 3, padding="same"), (9, 9, 2), (9, 9, 8), 152),
    (lambda: layers.Conv2D(4, (2, 3), strides=2, padding="same", use_bias=False), (9, 8, 3), (5, 4, 4), 2 * 3 * 3 * 4),
    (lambda: layers.Conv2D(4, 3, strides=(2, 1)), (9, 8, 3), (4, 6, 4), 112),
    (lambda: layers.MaxPooling2D(), (9, 8, 3), (4, 4, 3), 0),
    (lambda: layers.MaxPooling2D(2, padding="same"), (9, 8, 3), (5, 4, 3), 0),
    (lambda: layers.MaxPooling2D(3, strides=1), (9, 8, 3), (7, 6, 3), 0),
    (lambda: layers.AveragePooling2D(2, padding="same"), (9, 8, 3), (5, 4, 3), 0),
    (lambda: layers.Flatten(), (9, 8, 3), (216,), 0),
    (lambda: layers.Dense(5), (7,), (5,), 40),
    (lambda: layers.Dense(5, use_bias=False), (3, 7), (3, 5), 35),
    (lambda: layers.Dropout(0.5), (7,), (7,), 0),
    (lambda: layers.Activation("relu"), (7,), (7,), 0),
    (lambda: layers.Softmax(), (7,), (7,), 0),
])
def test_layer_output_shapes_and_parameter_counts(layer, input_shape, output_shape, params):
    model = keras.Sequential([keras.Input(shape=input_shape), layer()])
    assert model.layers[0].output_shape == (None,) + output_shape
    assert model.count_params() == params
    assert model.predict(np.zeros((3,) + input_shape)).shape == (3,) + output_shape


def test_conv2d_is_channels_last_around_the_nchw_kernel():
    ln.seed(0)
    conv = layers.Conv2D(5, 3, padding="same", activation="relu")
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
    y = conv(x).data
    nchw = ln.functional.conv2d(x.transpose(0, 3, 1, 2), conv.module.weight, conv.module.bias, 1, 1)
    np.testing.assert_allclose(y, np.maximum(nchw.data, 0).transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softmax"])
def test_conv2d_activation_inside_equals_activation_layer_after(activation):
    # Conv2D applies elementwise activations before permuting back to channels-last (cheaper);
    # that must be the same function, with the same gradients, as an Activation layer after it.
    ln.seed(0)
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 3))
    inside = keras.Sequential([keras.Input(shape=(6, 5, 3)), layers.Conv2D(4, 3, activation=activation,
                                                                           dtype="float64")])
    after = keras.Sequential([keras.Input(shape=(6, 5, 3)), layers.Conv2D(4, 3, dtype="float64"),
                              layers.Activation(activation, dtype="float64")])
    after.set_weights(inside.get_weights())
    upstream = np.random.default_rng(1).normal(size=(2, 4, 3, 4))
    for model in (inside, after):
        model(x).backward(upstream)
    np.testing.assert_allclose(inside(x).data, after(x).data, rtol=1e-12)
    for a, b in zip(inside.weights, after.weights):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10)
    if activation == "softmax":  # over the channel axis, the last one in channels-last
        np.testing.assert_allclose(inside(x).data.sum(axis=-1), 1, rtol=1e-12)


def test_flatten_uses_keras_order_channel_fastest():
    x = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(layers.Flatten()(x).data, x.reshape(2, 12))


def test_keras_default_initialisers_and_seed():
    ln.seed(0)
    a = classic_model()
    ln.seed(0)
    b = classic_model()
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    kernel, bias = a.layers[3].get_weights()
    limit = math.sqrt(6 / (5408 + 128))  # Glorot uniform: √(6 / (fan_in + fan_out))
    assert kernel.shape == (128, 5408) and np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.99 * limit
    np.testing.assert_array_equal(bias, 0)
    conv_kernel = a.layers[0].get_weights()[0]
    assert np.abs(conv_kernel).max() <= math.sqrt(6 / (9 + 288))


def test_sequential_add_and_errors():
    model = keras.Sequential()
    model.add(keras.Input(shape=(4,)))
    model.add(layers.Dense(3, activation="relu"))
    model.add(layers.Dense(2))
    assert model.count_params() == 4 * 3 + 3 + 3 * 2 + 2
    with pytest.raises(ValueError, match="expects input of shape"):
        model.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="unknown activation"):
        layers.Dense(2, activation="swishy")
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(2, 3, padding="full")
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 4)), np.zeros(2))
    unbuilt = keras.Sequential([layers.Dense(2)])
    lines = []
    unbuilt.summary(print_fn=lines.append)
    assert any("unbuilt" in line for line in lines)
    unbuilt.predict(np.zeros((1, 3)))  # builds from the data
    assert unbuilt.input_shape == (None, 3)


def test_dense_relu_runs_as_one_op_and_equals_dense_then_relu():
    """Dense(activation="relu") folds its ReLU into the layer's GEMM (functional.linear_relu): the
    same output and gradients as a linear Dense followed by Activation("relu"), no Relu op."""
    fused = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(8, activation="relu", dtype="float64")])
    plain = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(8, dtype="float64"),
                              layers.Activation("relu", dtype="float64")])
    plain.set_weights(fused.get_weights())
    x = np.random.default_rng(3).normal(size=(5, 6))
    results = []
    for model in (fused, plain):
        y = model(x, training=True)
        y.backward(np.ones(y.shape))
        ops_in_graph = {t.grad_fn.op.__name__ for t in y._topological_order() if t.grad_fn is not None}
        results.append((y.data, [w.grad for w in model.trainable_weights], "Relu" in ops_in_graph))
    assert results[0][2] is False and results[1][2] is True
    assert (results[0][0] == 0).any() and (results[0][0] > 0).any()
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for got, want in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# --------------------------------------------------------------------------- fused softmax + cross-entropy
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
@pytest.mark.parametrize("last", ["dense_softmax", "activation_layer"])
def test_fused_softmax_cross_entropy_equals_the_composition_float64(loss, last):
    ln.seed(1)
    fused = small_model("float64", last)
    plain = small_model("float64", last)
    plain.set_weights(fused.get_weights())
    fused.compile(optimizer="sgd", loss=loss)
    plain.compile(optimizer="sgd", loss=loss, fuse_softmax_cross_entropy=False)
    assert fused.uses_fused_softmax_cross_entropy and not plain.uses_fused_softmax_cross_entropy
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(16, 6)), rng.integers(0, 4, 16)
    y = labels if loss.startswith("sparse") else keras.utils.to_categorical(labels, 4, dtype="float64")
    losses = []
    for model in (fused, plain):
        value = model.compute_loss(x, y)
        value.backward()
        losses.append(value.item())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    for pf, pp in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(pf.grad, pp.grad, rtol=1e-9, atol=1e-14)
    # and the composition is the textbook −mean log softmax(z)[y]
    with ln.no_grad():
        logits = fused._forward(ln.Tensor(x), stop_before_last_activation=True).data
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    np.testing.assert_allclose(losses[0], -log_p[np.arange(16), labels].mean(), rtol=1e-12)


def test_fusion_is_only_used_where_it_is_the_same_function():
    model = small_model()
    model.compile(loss="mse")
    assert not model.uses_fused_softmax_cross_entropy
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert not model.uses_fused_softmax_cross_entropy  # logits expected: the softmax output is not logits
    no_softmax = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(4)])
    no_softmax.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert not no_softmax.uses_fused_softmax_cross_entropy
    x, y = np.random.default_rng(0).normal(size=(8, 6)), np.arange(8) % 4
    # from_logits=True on a linear output equals the fused loss of the same model with a softmax
    ln.seed(2)
    with_softmax = small_model()
    with_softmax.compile(loss="sparse_categorical_crossentropy")
    logits_model = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(8, activation="tanh"), layers.Dense(4)])
    logits_model.set_weights(with_softmax.get_weights())
    logits_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    np.testing.assert_allclose(logits_model.compute_loss(x, y).item(), with_softmax.compute_loss(x, y).item(),
                               rtol=1e-6)


def test_unfused_cross_entropy_clips_zero_probabilities():
    y_pred = ln.Tensor(np.array([[1.0, 0.0], [0.5, 0.5]]), requires_grad=True)
    loss = keras.losses.SparseCategoricalCrossentropy()(np.array([1, 0]), y_pred)
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx((-np.log(1e-7) - np.log(0.5)) / 2)
    loss.backward()
    assert np.isfinite(y_pred.grad).all()


# --------------------------------------------------------------------------- fit / evaluate / predict
def test_fit_history_validation_evaluate_and_predict(capsys):
    ln.seed(0)
    x, y = random_digits(96)
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)), layers.Flatten(), layers.Dropout(0.2),
                              layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy", "f1"])
    history = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    assert capsys.readouterr().out == ""
    assert set(history.history) == {"loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1"}
    assert all(len(v) == 3 for v in history.history.values()) and history.epoch == [0, 1, 2]
    assert history.history["loss"][-1] < history.history["loss"][0]

    model.fit(x, y, epochs=2, batch_size=32, verbose=2, validation_data=(x[:10], y[:10]))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2 - 3/3 steps") and "val_f1" in lines[0]

    result = model.evaluate(x, y, verbose=0)
    assert len(result) == 3
    assert result[1] == pytest.approx(ln.metrics.accuracy(y, model.predict(x)))
    model.compile(loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)

    batch, single = model.predict(x[:5]), model.predict(x[0])
    assert batch.shape == (5, 10) and single.shape == (10,)
    np.testing.assert_allclose(single, batch[0], rtol=1e-6)
    np.testing.assert_allclose(batch.sum(axis=1), 1, rtol=1e-5)


def test_optimizer_names_use_keras_defaults():
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    opt = model._bound_optimizer()
    assert isinstance(opt, ln.optim.Adam) and (opt.lr, opt.betas, opt.eps) == (1e-3, (0.9, 0.999), 1e-7)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert model._bound_optimizer().lr == 0.01
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True), loss="mse")
    opt = model._bound_optimizer()
    assert (opt.lr, opt.momentum, opt.nesterov) == (0.1, 0.9, True)
    model.optimizer.learning_rate = 0.05
    assert opt.lr == 0.05
    direct = ln.optim.SGD(model.weights, lr=0.3)
    model.compile(optimizer=direct, loss="mse")
    assert model._bound_optimizer() is direct


def test_frozen_layer_keeps_its_weights_and_moves_to_non_trainable():
    ln.seed(0)
    model = classic_model()
    model.layers[0].trainable = False
    lines = []
    model.summary(print_fn=lines.append)
    assert "Trainable params: 693,642" in "\n".join(lines) and "Non-trainable params: 320" in "\n".join(lines)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    frozen, dense = model.layers[0].get_weights(), model.layers[3].get_weights()
    x, y = random_digits(64)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    for before, after in zip(frozen, model.layers[0].get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(dense[0], model.layers[3].get_weights()[0])
    model.trainable = False  # Keras's rule: takes effect at the next compile
    dense = model.layers[3].get_weights()
    with pytest.warns(UserWarning, match="compile"):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(dense[0], model.layers[3].get_weights()[0])  # still trained as compiled
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="frozen"):
        model.fit(x, y, verbose=0)


def test_early_stopping_stops_and_restores():
    ln.seed(0)
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 6)), np.arange(32) % 4
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, callbacks=[stop], verbose=0)
    assert len(history.history["loss"]) == 2  # lr 0: epoch 2 does not improve, patience 1 → stop


def test_same_seed_gives_identical_weights_after_an_epoch():
    x, y = random_digits(128, seed=5)
    runs = []
    for _ in range(2):
        ln.seed(42)
        model = classic_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- save and load
def trained_small(tmp_path):
    ln.seed(0)
    model = classic_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy", "precision"])
    x, y = random_digits(64)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "model.lnn"
    model.save(path)
    return model, path, x, y


def test_save_load_predict_round_trips_exactly(tmp_path):
    model, path, x, y = trained_small(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.lnn"]  # no temporary file left behind
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    np.testing.assert_array_equal(model.predict(x[0]), loaded.predict(x[0]))
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.metrics_names == ["loss", "accuracy", "precision"]
    # the optimizer state came along: one more epoch gives identical weights on both
    ln.seed(7)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    ln.seed(7)
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist()[0] == "lepton_nn.json"
        assert json.loads(archive.read("lepton_nn.json"))["version"] == 1


def test_save_without_optimizer_and_uncompiled(tmp_path):
    ln.seed(0)
    model = small_model()
    model.save(tmp_path / "a.lnn")
    assert not keras.models.load_model(tmp_path / "a.lnn").compiled
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "b.lnn", include_optimizer=False)
    with zipfile.ZipFile(tmp_path / "b.lnn") as archive:
        assert not any(name.startswith("optimizer/") for name in archive.namelist())
    assert keras.models.load_model(tmp_path / "b.lnn").compiled


def rewrite(path, change):
    """Copy the archive at path with change(name, bytes) -> bytes applied to every member."""
    with zipfile.ZipFile(path) as archive:
        members = [(name, archive.read(name)) for name in archive.namelist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, change(name, data))
    path.write_bytes(buffer.getvalue())


def test_missing_foreign_truncated_and_corrupt_files_are_refused(tmp_path):
    _, path, _, _ = trained_small(tmp_path)
    data = path.read_bytes()
    with pytest.raises(ModelFileError, match="no such file"):
        keras.models.load_model(tmp_path / "absent.lnn")
    cases = {
        "empty.lnn": (b"", "empty"),
        "foreign.lnn": (b"\x93NUMPY not a model at all", "not a lepton_nn model file"),
        "truncated.lnn": (data[:len(data) // 2], "truncated or corrupt"),
    }
    flipped = bytearray(data)
    flipped[data.index(b"weights/002.npy") + 500] ^= 0xFF  # a byte inside a weight: CRC-32 mismatch
    cases["flipped.lnn"] = (bytes(flipped), "truncated or corrupt")
    for name, (content, message) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=message) as err:
            keras.models.load_model(bad)
        assert name in str(err.value)
    other_zip = tmp_path / "other.lnn"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="without the lepton_nn.json header"):
        keras.models.load_model(other_zip)


def test_weights_must_have_the_shape_the_config_implies(tmp_path):
    _, path, _, _ = trained_small(tmp_path)

    def wider_dense(name, data):
        if name != "config.json":
            return data
        config = json.loads(data)
        config["model"]["layers"][3]["config"]["units"] = 64
        return json.dumps(config).encode()

    rewrite(path, wider_dense)
    with pytest.raises(ModelFileError, match=r"weight dense\S*/kernel has shape \(128, 5408\) but the architecture "
                                             r"implies \(64, 5408\)"):
        keras.models.load_model(path)

    def newer(name, data):
        return json.dumps({"format": "lepton_nn model", "version": 99}).encode() if name == "lepton_nn.json" else data

    rewrite(path, newer)
    with pytest.raises(ModelFileError, match="version 99"):
        keras.models.load_model(path)


# --------------------------------------------------------------------------- CLI predict and PNG
def write_png(path, grey, filter_type):
    """A minimal 8-bit grey PNG, every row with the given filter (0 None, 1 Sub, 2 Up)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows, previous = [], np.zeros(grey.shape[1], dtype=np.int64)
    for row in grey.astype(np.int64):
        if filter_type == 1:
            encoded = (row - np.concatenate([[0], row[:-1]])) % 256
        elif filter_type == 2:
            encoded = (row - previous) % 256
        else:
            encoded = row
        rows.append(bytes([filter_type]) + encoded.astype(np.uint8).tobytes())
        previous = row
    ihdr = struct.pack(">IIBBBBB", grey.shape[1], grey.shape[0], 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def test_cli_predict_on_png_and_npy(tmp_path, capsys):
    _, path, x, _ = trained_small(tmp_path)
    image = (x[3, :, :, 0] * 255).round().astype(np.uint8)
    np.save(tmp_path / "digit.npy", image)
    write_png(tmp_path / "digit.png", image, 1)
    expected = int(np.argmax(keras.models.load_model(path).predict(image[..., None] / np.float32(255))))
    for name in ("digit.npy", "digit.png"):
        assert cli.main(["predict", "--model", str(path), str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.startswith(f"{tmp_path / name}: {expected}  (probability")
    assert cli.main(["predict", "--model", str(tmp_path / "nope.lnn"), str(tmp_path / "digit.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- real MNIST
def test_small_mnist_subset_trains_to_a_sane_accuracy(mnist_dir):
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data(mnist_dir)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8 and y_test.shape == (10000,)
    ln.seed(0)
    model = train.build_model()
    model.fit(train.preprocess(x_train[:2000]), y_train[:2000], epochs=1, batch_size=16, verbose=0)
    loss, accuracy = model.evaluate(train.preprocess(x_test[:1000]), y_test[:1000], verbose=0)
    assert accuracy > 0.80, f"accuracy {accuracy:.3f} after one epoch on 2000 images"


# --------------------------------------------------------------------------- fused conv → relu → max-pool
@pytest.mark.parametrize("backend", ln.kernels.available_backends())
def test_fused_conv_relu_pool_model_equals_the_layer_by_layer_model(backend):
    """The classic MNIST CNN runs Conv2D(relu) → MaxPooling2D as one op; with fuse_layers=False
    every layer runs on its own. Same loss, same gradient of every weight (float64)."""
    with ln.backend(backend):
        ln.seed(3)
        fused = keras.Sequential([
            layers.Conv2D(4, (3, 3), activation="relu", input_shape=(9, 8, 2), dtype="float64"),
            layers.MaxPooling2D((2, 2), dtype="float64"),
            layers.Flatten(dtype="float64"),
            layers.Dense(3, activation="softmax", dtype="float64")])
        plain = keras.models.Sequential.from_config(fused.get_config())
        plain.build((None, 9, 8, 2))
        plain.set_weights(fused.get_weights())
        plain.fuse_layers = False
        x = np.random.default_rng(0).normal(size=(5, 9, 8, 2))
        labels = np.array([0, 1, 2, 1, 0])
        values = []
        for model in (fused, plain):
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            loss = model.compute_loss(x, labels)
            loss.backward()
            values.append(loss.item())
    assert fused.layers[0].fused_with(fused.layers[1:]) is not None
    np.testing.assert_allclose(values[0], values[1], rtol=1e-12)
    for pf, pp in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(pf.grad, pp.grad, rtol=1e-10, atol=1e-14)


def test_sparse_labels_out_of_range_name_the_loss_and_the_range():
    probabilities = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy: labels must lie in \[0, 3\), got values from 0 to 3"):
        keras.losses.sparse_categorical_crossentropy(np.array([0, 3]), probabilities)


def test_leaky_relu_layer_and_activation_keep_keras_slopes_and_save(tmp_path):
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(2, 3, 4)
    layer = keras.layers.LeakyReLU()  # Keras's default slope 0.3
    np.testing.assert_allclose(layer(x).data, np.where(x > 0, x, 0.3 * x), rtol=1e-6)
    dense = keras.layers.Dense(4, activation="leaky_relu", kernel_initializer="ones", use_bias=False)
    z = dense(x).data
    pre = x @ np.ones((4, 4), np.float32)
    np.testing.assert_allclose(z, np.where(pre > 0, pre, 0.2 * pre), rtol=1e-6)  # keras.activations: 0.2
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,)), keras.layers.LeakyReLU(negative_slope=0.1)])
    model.save(tmp_path / "leaky.lnn")
    loaded = keras.models.load_model(tmp_path / "leaky.lnn")
    assert loaded.layers[1].negative_slope == 0.1
    np.testing.assert_array_equal(loaded.predict(x[0]), model.predict(x[0]))
