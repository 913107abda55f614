"""Keras-API arguments as a class: every bad value fails at once, before any work, with a
ValueError naming the layer or method, the argument, what was expected and what was given;
a config (what load_model reads) goes through the same checks. And the shapes a layer reports
without building (compute_output_shape, weight_shapes) are the shapes it builds and computes."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_nn as ln
from lepton_nn import keras
from lepton_nn.keras import callbacks, layers


def model():
    m = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


X, Y = np.zeros((10, 4), np.float32), np.zeros(10, np.int64)

LAYER_CASES = [
    (lambda: layers.Dense(0), r"Dense 'dense\w*': units must be a positive int, got 0"),
    (lambda: layers.Dense(-1), "units must be a positive int, got -1"),
    (lambda: layers.Dense(3.5), "units must be a positive int, got 3.5"),
    (lambda: layers.Dense(3.0), "units must be a positive int, got 3.0"),  # as Keras 3
    (lambda: layers.Dense(True), "units must be a positive int, got True"),
    (lambda: layers.Dense("8"), "units must be a positive int, got '8'"),
    (lambda: layers.Dense(3, activation="swish"), r"Dense 'dense\w*': unknown activation 'swish'; known: linear"),
    (lambda: layers.Dense(3, activation=3), "activation must be a name or a callable, got 3"),
    (lambda: layers.Dense(3, use_bias="no"), "use_bias must be True or False, got 'no'"),
    (lambda: layers.Dense(3, kernel_initializer="he_sometimes"), "kernel_initializer must be one of glorot_uniform"),
    (lambda: layers.Dense(3, input_shape=(0,)), r"every dimension of input_shape \(0,\) must be a positive int"),
    (lambda: layers.Dense(3, input_shape=(28, -1)), "must be a positive int, got -1"),
    (lambda: layers.Dense(3, input_shape=784), r"input_shape must be a tuple of positive ints, e.g. \(28, 28, 1\)"),
    (lambda: layers.Dense(3, dtype="int32"), "dtype must be float32 or float64, got dtype int32"),
    (lambda: layers.Dense(3, dtype="floaty"), "dtype must be float32 or float64, got 'floaty'"),
    (lambda: layers.Dense(3, name="a/b"), "Dense: name must be a non-empty string without '/'"),
    (lambda: layers.Dense(3, trainable="yes"), "trainable must be True or False"),
    (lambda: layers.Conv2D(0, 3), r"Conv2D 'conv2d\w*': filters must be a positive int, got 0"),
    (lambda: layers.Conv2D(2.5, 3), "filters must be a positive int, got 2.5"),
    (lambda: layers.Conv2D(2, 0), "kernel_size must be a positive int or a pair of them, got 0"),
    (lambda: layers.Conv2D(2, (3, 3, 3)), "kernel_size must be a positive int or a pair of them"),
    (lambda: layers.Conv2D(2, 3, strides=-1), "strides must be a positive int or a pair of them, got -1"),
    (lambda: layers.Conv2D(2, 3, padding="full"), "padding must be 'valid' or 'same', got 'full'"),
    (lambda: layers.MaxPooling2D(0), r"MaxPooling2D 'max_pooling2d\w*': pool_size must be a positive int"),
    (lambda: layers.AveragePooling2D(2, strides=(1, 0)), "strides must be a positive int or a pair of them"),
    (lambda: layers.Dropout(1), r"Dropout 'dropout\w*': rate must be a number in \[0, 1\), got 1"),
    (lambda: layers.Dropout(-0.1), r"rate must be a number in \[0, 1\), got -0.1"),
    (lambda: layers.Dropout(float("nan")), r"rate must be a number in \[0, 1\), got nan"),
    (lambda: layers.Dropout("0.5"), r"rate must be a number in \[0, 1\), got '0.5'"),
    (lambda: layers.LeakyReLU(-0.1), "negative_slope must be a finite number ≥ 0, got -0.1"),
    (lambda: layers.Activation("gelu"), "unknown activation 'gelu'"),
    (lambda: keras.Input(shape=(28, 0)), r"every dimension of input_shape \(28, 0\) must be a positive int"),
    (lambda: keras.Input(shape=(4,), batch_size=0), "batch_size must be a positive int, got 0"),
]


@pytest.mark.parametrize("make, message", LAYER_CASES)
def test_a_bad_layer_argument_is_refused_when_the_layer_is_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


METHOD_CASES = [
    (lambda m: m.fit(X, Y, batch_size=0), "fit: batch_size must be a positive int, got 0"),
    (lambda m: m.fit(X, Y, batch_size=-4), "fit: batch_size must be a positive int, got -4"),
    (lambda m: m.fit(X, Y, batch_size=8.0), "fit: batch_size must be a positive int, got 8.0"),
    (lambda m: m.fit(X, Y, epochs=-1), "fit: epochs must be an int ≥ 0, got -1"),
    (lambda m: m.fit(X, Y, epochs=2.5), "fit: epochs must be an int ≥ 0, got 2.5"),
    (lambda m: m.fit(X, Y, initial_epoch=-1), "fit: initial_epoch must be an int ≥ 0"),
    (lambda m: m.fit(X, Y, verbose=3), "fit: verbose must be 'auto', 0, 1 or 2, got 3"),
    (lambda m: m.fit(X, Y, verbose="loud"), "fit: verbose must be 'auto', 0, 1 or 2, got 'loud'"),
    (lambda m: m.fit(X, Y, validation_split=1.0), r"fit: validation_split must be a number in \[0, 1\), got 1.0"),
    (lambda m: m.fit(X, Y, validation_split=-0.2), r"validation_split must be a number in \[0, 1\)"),
    (lambda m: m.fit(X, Y, validation_split=0.95), "fit: 10 samples are too few to split into training and "
                                                   r"validation sets with validation_split=0.95"),
    (lambda m: m.fit(X, Y, validation_split=1e-17), "10 samples are too few to split"),
    (lambda m: m.fit(X, Y, shuffle="batch"), "fit: shuffle must be True or False, got 'batch'"),
    (lambda m: m.fit(X, Y[:7]), "fit: x has 10 samples but y has 7"),
    (lambda m: m.fit(X[:0], Y[:0]), "fit: x and y are empty; need at least one sample"),
    (lambda m: m.fit(3.0, 1), r"fit: x and y must be arrays of samples, got shapes \(\) and \(\)"),
    (lambda m: m.fit(X, Y, callbacks=[print]), "fit: callbacks must be a list of keras.callbacks.Callback objects"),
    (lambda m: m.fit(X, Y, callbacks="EarlyStopping"), "callbacks must be a list of keras.callbacks.Callback"),
    (lambda m: m.fit(X, Y, validation_data=(X, Y, Y)), r"validation_data must be a pair \(x_val, y_val\)"),
    (lambda m: m.fit(X, Y, validation_data=(X[:, :3], Y)), r"expects input of shape \(batch, 4\), got \(10, 3\)"),
    (lambda m: m.evaluate(X, Y, batch_size=-1), "evaluate: batch_size must be a positive int, got -1"),
    (lambda m: m.evaluate(X, Y, verbose=-1), "evaluate: verbose must be"),
    (lambda m: m.evaluate(X, Y, return_dict="yes"), "evaluate: return_dict must be True or False"),
    (lambda m: m.predict(X, batch_size=-1), "predict: batch_size must be a positive int, got -1"),
    (lambda m: m.predict(X, batch_size=0), "predict: batch_size must be a positive int, got 0"),
    (lambda m: m.predict(X, verbose=5), "predict: verbose must be"),
    (lambda m: m.predict(None), "predict: x must be an array of samples"),
    (lambda m: m.compile(loss="mse", metrics="accuracy"), r"compile: metrics must be a list, e.g. "
                                                          r"metrics=\['accuracy'\], got str 'accuracy'"),
    (lambda m: m.compile(loss="mse", metrics=[3]), "compile: a metric must be a name or a function, got 3"),
    (lambda m: m.compile(loss="mse", fuse_softmax_cross_entropy="no"), "fuse_softmax_cross_entropy must be True"),
    (lambda m: m.build((None, 0)), r"every dimension of input_shape \(0,\) must be a positive int"),
    (lambda m: m.build(4), r"build takes a shape with the batch axis, e.g. \(None, 28, 28, 1\), got 4"),
    (lambda m: m.save("x.lnn", include_optimizer="no"), "save: include_optimizer must be True or False"),
]


@pytest.mark.parametrize("call, message", METHOD_CASES)
def test_a_bad_method_argument_is_refused_before_any_work(call, message, capsys):
    m = model()
    before = m.get_weights()
    with pytest.raises(ValueError, match=message):
        call(m)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))  # nothing trained
    assert capsys.readouterr().out == ""  # no progress bar started


def test_accepted_forms_keras_users_write():
    m = model()
    m.fit(X, Y, epochs=0)  # Keras allows epochs=0: nothing is trained
    m.fit(X, Y, batch_size=np.int64(5), verbose=False, shuffle=np.bool_(False),
          callbacks=callbacks.History())  # a lone callback, as Keras's flattening allows
    m.fit(X, Y, validation_split=0.5, verbose=0)
    assert m.evaluate(X, Y, verbose=True, batch_size=3) is not None
    assert m.predict(X, verbose="auto").shape == (10, 3)
    m.compile(loss="sparse_categorical_crossentropy", metrics=("accuracy",))
    assert layers.Dense(np.int32(3)).units == 3


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), split=st.floats(0, 1, exclude_max=True))
def test_validation_split_trains_on_both_sides_or_says_the_data_is_too_small(n, split):
    m = model()
    x, y = np.zeros((n, 4), np.float32), np.zeros(n, np.int64)
    train = int(n * (1 - split))
    if split and train in (0, n):
        with pytest.raises(ValueError, match=f"fit: {n} samples are too few"):
            m.fit(x, y, validation_split=split, verbose=0)
        return
    history = m.fit(x, y, validation_split=split, verbose=0, batch_size=64)
    assert ("val_loss" in history.history) == (split > 0)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.booleans(), st.text(max_size=2),
                       st.none(), st.lists(st.integers(1, 3), max_size=2)))
def test_units_is_exactly_a_positive_int(value):
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        assert layers.Dense(value).units == value
        return
    with pytest.raises(ValueError, match=re.escape(f"units must be a positive int, got {value!r}")):
        layers.Dense(value)


def test_a_config_goes_through_the_same_checks_as_the_constructor():
    with pytest.raises(ValueError, match="units must be a positive int, got 0"):
        layers.deserialize({"class_name": "Dense", "config": {"units": 0}})
    with pytest.raises(ValueError, match="layer Dense: unexpected argument unit; Dense takes activation, "):
        layers.deserialize({"class_name": "Dense", "config": {"unit": 3}})
    with pytest.raises(ValueError, match="layer Conv2D: missing required argument kernel_size"):
        layers.deserialize({"class_name": "Conv2D", "config": {"filters": 3}})
    with pytest.raises(ValueError, match="unknown layer class 'Dense3D'"):
        layers.deserialize({"class_name": "Dense3D", "config": {}})
    with pytest.raises(ValueError, match="Sequential.from_config: expected a dict with a list of 'layers'"):
        keras.Sequential.from_config({"layers": "Dense"})


def test_a_layer_built_for_one_input_is_refused_for_another_when_the_model_is_built():
    dense = layers.Dense(2)
    keras.Sequential([keras.Input(shape=(4,)), dense])
    with pytest.raises(ValueError, match=r"Dense 'dense\w*' was built for another input; its weights cannot take "
                                         r"input \(None, 5\)"):
        keras.Sequential([keras.Input(shape=(5,)), dense])


# --------------------------------------------------------------------------- shapes without building
@st.composite
def stacks(draw):
    """(input shape without batch, [layer factories]) for a random channels-last stack."""
    h, w, c = draw(st.integers(3, 9)), draw(st.integers(3, 9)), draw(st.integers(1, 3))
    made, spatial = [], True
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "pool", "avg", "dropout", "leaky"] if spatial else ["dense", "dropout"]))
        padding, k, s = draw(st.sampled_from(["valid", "same"])), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if kind == "conv":
            made.append(layers.Conv2D(draw(st.integers(1, 4)), k, strides=s, padding=padding,
                                      use_bias=draw(st.booleans()), activation="relu"))
        elif kind in ("pool", "avg"):
            made.append((layers.MaxPooling2D if kind == "pool" else layers.AveragePooling2D)(k, s, padding=padding))
        elif kind == "dense":
            made.append(layers.Dense(draw(st.integers(1, 5)), use_bias=draw(st.booleans())))
        else:
            made.append(layers.Dropout(0.5) if kind == "dropout" else layers.LeakyReLU())
        if spatial and draw(st.booleans()):
            made.append(layers.Flatten())
            spatial = False
    return (h, w, c), made


@settings(max_examples=80, deadline=None)
@given(stack=stacks())
def test_computed_shapes_are_the_built_and_run_shapes(stack):
    input_shape, stack_layers = stack
    ln.seed(0)
    shape, plan = (None,) + input_shape, []
    try:
        for layer in stack_layers:
            plan += [tuple(s) for _, s in layer.weight_shapes(shape)]
            shape = layer.compute_output_shape(shape)
    except ValueError as err:  # a window larger than its input: refused by name, as building does
        assert "is smaller than the" in str(err)
        return
    m = keras.Sequential([keras.Input(shape=input_shape), *stack_layers])
    assert [tuple(p.shape) for p in m.weights] == plan
    out = m.predict(np.random.default_rng(0).random((2,) + input_shape, dtype=np.float32))
    assert out.shape == (2,) + shape[1:] and m.output_shape == (None,) + shape[1:]
