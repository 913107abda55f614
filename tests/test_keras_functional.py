"""Keras functional models (keras.Model(inputs, outputs)), models nested as layers, freezing by
Keras's compile rule, summary counts, Sequential.pop and get_layer, and saving functional and
nested models: each against the same Sequential, central differences (lepton_nn.gradcheck) and
PyTorch in float64, or Keras's documented behaviour."""
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lepton_nn as ln
from lepton_nn import keras
from lepton_nn.keras import layers
from lepton_nn.keras.saving import ModelFileError

RNG = np.random.default_rng(0)
SPARSE = "sparse_categorical_crossentropy"


def dense_stack(dtype="float32"):
    """Dense(8, tanh) → Dense(4, softmax), as layers to put in either kind of model."""
    return [layers.Dense(8, activation="tanh", dtype=dtype, name="hidden"),
            layers.Dense(4, activation="softmax", dtype=dtype, name="probabilities")]


def functional_of(stack, input_shape):
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, x)


def two_branch(dtype="float64"):
    """Two inputs, a residual Add, a Concatenate and a Dense called twice (shared weights):

        a (3) → da (4) ┐
                       Add → s (4) ─────────────┐
        b (5) → db (4) ┘                        Concatenate → (12) → proj (4) → shared (4) → out (2)
                        s → shared (4) ─────────┤
                        db ─────────────────────┘
    """
    a, b = keras.Input(shape=(3,), name="a"), keras.Input(shape=(5,), name="b")
    da = layers.Dense(4, activation="tanh", dtype=dtype, name="da")(a)
    db = layers.Dense(4, activation="sigmoid", dtype=dtype, name="db")(b)
    s = layers.Add(name="add")([da, db])
    shared = layers.Dense(4, activation="tanh", dtype=dtype, name="shared")
    joined = layers.Concatenate(name="cat")([s, shared(s), db])
    out = layers.Dense(2, dtype=dtype, name="out")(shared(layers.Dense(4, dtype=dtype, name="proj")(joined)))
    return keras.Model([a, b], out, name="two_branch")


def with_weights(model, tensors, run):
    """run() with every Dense kernel and bias of model replaced by `tensors` (in model.weights
    order), so that gradcheck differentiates the model's output with respect to its weights."""
    slots = [(layer.module, name) for layer in model.layers if isinstance(layer, layers.Dense)
             for name in ("weight", "bias")]
    assert len(slots) == len(tensors) == len(model.weights)
    originals = [getattr(module, name) for module, name in slots]
    try:
        for (module, name), t in zip(slots, tensors):
            object.__setattr__(module, name, t)
        return run()
    finally:
        for (module, name), p in zip(slots, originals):
            object.__setattr__(module, name, p)


def saved_and_loaded(model, tmp_path, name="model.lnn", **kwargs):
    model.save(tmp_path / name)
    return keras.models.load_model(tmp_path / name, **kwargs)


# --------------------------------------------------------------------------- building graphs
def test_input_is_a_symbolic_tensor_and_still_starts_a_sequential():
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    assert isinstance(inputs, keras.KerasTensor)
    assert inputs.shape == (None, 28, 28, 1) and inputs.dtype == "float32" and inputs.ndim == 4
    assert keras.Input(shape=(5,), batch_size=8, dtype="int32").shape == (8, 5)
    conv = layers.Conv2D(4, 3, name="conv")
    x = conv(inputs)  # builds the layer for the shape; computes nothing
    assert x.shape == (None, 26, 26, 4) and conv.built and conv.output is x and conv.input is inputs
    assert "from layer 'conv'" in repr(x)
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(x)
    model = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(3)])
    assert model.input_shape == (None, 6) and [type(l).__name__ for l in model.layers] == ["Dense"]
    with pytest.raises(TypeError, match="expected a keras layer or keras.Input"):
        keras.Sequential([layers.Dense(3)(keras.Input(shape=(2,)))])


def test_functional_model_equals_the_same_sequential_in_predictions_and_fit():
    x, y = RNG.normal(size=(40, 6)).astype(np.float32), RNG.integers(0, 4, 40)
    ln.seed(0)
    sequential = keras.Sequential([keras.Input(shape=(6,)), *dense_stack()])
    functional = functional_of(dense_stack(), (6,))
    functional.set_weights(sequential.get_weights())
    assert isinstance(functional, keras.Model) and isinstance(sequential, keras.Model)
    assert [l.name for l in functional.layers][1:] == [l.name for l in sequential.layers]
    assert type(functional.layers[0]).__name__ == "InputLayer"  # Keras lists the Input in a functional model
    np.testing.assert_array_equal(functional.predict(x), sequential.predict(x))
    np.testing.assert_array_equal(functional.predict(x[0]), sequential.predict(x[0]))
    assert functional.predict(x[:0]).shape == (0, 4)
    histories = []
    for model in (sequential, functional):
        model.compile(optimizer="adam", loss=SPARSE, metrics=["accuracy"])
        assert model.uses_fused_softmax_cross_entropy
        ln.seed(5)  # the same shuffles
        histories.append(model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0).history)
    assert histories[0] == histories[1]
    for a, b in zip(sequential.get_weights(), functional.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert functional.evaluate(x, y, verbose=0) == sequential.evaluate(x, y, verbose=0)


def test_a_functional_cnn_equals_the_fused_sequential_cnn():
    ln.seed(1)
    stack = [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
             layers.Dense(3, activation="softmax")]
    sequential = keras.Sequential([keras.Input(shape=(9, 8, 2)), *stack])
    assert sequential.layers[0].fused_with(sequential.layers[1:]) is not None  # Sequential fuses conv→relu→pool
    functional = keras.models.Model.from_config(functional_of(stack, (9, 8, 2)).get_config())
    functional.set_weights(sequential.get_weights())
    x = RNG.random((5, 9, 8, 2), dtype=np.float32)
    np.testing.assert_allclose(functional.predict(x), sequential.predict(x), rtol=1e-5, atol=1e-7)


def test_fused_softmax_cross_entropy_only_where_it_is_trivially_safe():
    x, y = RNG.normal(size=(12, 6)), RNG.integers(0, 4, 12)
    ln.seed(2)
    fused = functional_of(dense_stack("float64"), (6,))
    plain = keras.Model.from_config(fused.get_config())
    plain.set_weights(fused.get_weights())
    fused.compile(optimizer="sgd", loss=SPARSE)
    plain.compile(optimizer="sgd", loss=SPARSE, fuse_softmax_cross_entropy=False)
    assert fused.uses_fused_softmax_cross_entropy and not plain.uses_fused_softmax_cross_entropy
    losses = []
    for model in (fused, plain):
        loss = model.compute_loss(x, y)
        loss.backward()
        losses.append(loss.item())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    for a, b in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-14)
    # the softmax output also read by another layer, or made by a nested model: not fused
    inputs = keras.Input(shape=(6,))
    probabilities = layers.Dense(4, activation="softmax")(inputs)
    both = keras.Model(inputs, layers.Add()([probabilities, layers.Dense(4)(probabilities)]))
    read_twice = keras.Model(inputs, probabilities)
    read_twice_too = keras.Model(inputs, [probabilities, layers.Dense(2)(probabilities)])
    nested = keras.Model(inputs, fused(inputs))
    for model in (both, nested, read_twice):
        model.compile(loss=SPARSE)
    assert not both.uses_fused_softmax_cross_entropy and not nested.uses_fused_softmax_cross_entropy
    assert read_twice.uses_fused_softmax_cross_entropy  # only this graph reads it
    assert read_twice_too.output_shape == [(None, 4), (None, 2)]


def test_a_graph_not_connected_to_its_inputs_is_refused_naming_the_output():
    a, b = keras.Input(shape=(3,), name="first"), keras.Input(shape=(3,), name="second")
    out = layers.Add(name="plus")([layers.Dense(3, name="from_a")(a), layers.Dense(3, name="from_b")(b)])
    with pytest.raises(ValueError, match=r"output <KerasTensor shape=\(None, 3\), dtype=float32, from layer 'plus'> "
                                         r"is not connected to the inputs: it depends on .*from Input 'second'"):
        keras.Model(a, out)
    with pytest.raises(ValueError, match="inputs must be tensors made by keras.Input"):
        keras.Model(layers.Dense(2)(a), out)
    with pytest.raises(ValueError, match="outputs must be symbolic tensors"):
        keras.Model(a, np.zeros(3))
    with pytest.raises(ValueError, match="'twin' name more than one layer"):
        keras.Model(a, layers.Dense(2, name="twin")(layers.Dense(3, name="twin")(a)))
    assert keras.Model([a, b], out).count_params() == 24


def test_merge_layers_check_their_inputs_and_stay_out_of_sequential():
    a, b = keras.Input(shape=(4,)), keras.Input(shape=(5,))
    with pytest.raises(ValueError, match=r"Add 'add\w*': inputs must have the same shape, got \(None, 4\), "
                                         r"\(None, 5\)"):
        layers.Add()([a, b])
    assert layers.Concatenate()([a, b]).shape == (None, 9)
    with pytest.raises(ValueError, match="must name an axis of the inputs other than the batch axis"):
        layers.Concatenate(axis=0)([a, b])
    with pytest.raises(ValueError, match="equal dimensions but along axis 1"):
        layers.Concatenate(axis=1)([keras.Input(shape=(2, 3)), keras.Input(shape=(2, 4))])
    with pytest.raises(ValueError, match="expected a list of at least 2 tensors"):
        layers.Add()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="takes a list of tensors, but a Sequential model passes one tensor"):
        keras.Sequential([keras.Input(shape=(4,)), layers.Add()])
    x, z = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 2))
    np.testing.assert_array_equal(layers.Concatenate(axis=-1, dtype="float64")([x, z]).data,
                                  np.concatenate([x, z], axis=-1))
    np.testing.assert_array_equal(layers.Add(dtype="float64")([x, x, x]).data, x + x + x)


def test_a_layer_called_twice_shares_its_weights_and_takes_only_their_input_shape():
    shared = layers.Dense(3, name="twice")
    a, b = keras.Input(shape=(4,)), keras.Input(shape=(4,))
    model = keras.Model([a, b], layers.Add()([shared(a), shared(b)]))
    assert [layer.name for layer in model.layers].count("twice") == 1 and len(model.weights) == 2
    with pytest.raises(ValueError, match=r"Dense 'twice' was built for another input; its weights cannot take input "
                                         r"\(None, 5\)"):
        shared(keras.Input(shape=(5,)))
    with pytest.raises(ValueError, match="needs a layer called exactly once on KerasTensors.*has 2 such call"):
        shared.output  # noqa: B018 (the property raises)
    x1, x2 = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    kernel, bias = shared.get_weights()
    np.testing.assert_allclose(model.predict([x1, x2]), (x1 + x2) @ kernel.T + 2 * bias, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("batch", [0, 1, 3, 7])
def test_two_input_graph_gradients_match_central_differences(batch):
    ln.seed(3)
    model = two_branch()
    xa, xb = RNG.normal(size=(batch, 3)), RNG.normal(size=(batch, 5))
    # every weight: the shared Dense gets the sum of its two calls' gradients
    report = ln.gradcheck(lambda *ws: with_weights(model, ws, lambda: model([ln.Tensor(xa), ln.Tensor(xb)])),
                          *[p.data for p in model.weights])
    assert report.passed, str(report)
    if batch == 0:  # an empty batch: zero gradients (both ways), an empty output, no input to check
        assert model.predict([xa, xb]).shape == (0, 2)
        model([xa, xb]).backward(np.zeros((0, 2)))
        assert all(np.array_equal(p.grad, np.zeros_like(p.data)) for p in model.weights)
        return
    # the inputs too: each branch's gradient reaches its own input
    report = ln.gradcheck(lambda ta, tb: model([ta, tb]), xa, xb)
    assert report.passed, str(report)


def test_two_input_graph_equals_pytorch_forward_and_every_gradient():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    ln.seed(4)
    model = two_branch()
    xa, xb = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 5))
    upstream = RNG.normal(size=(6, 2))
    model([xa, xb]).backward(upstream)
    w = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_weights()}

    def dense(name, x):
        return F.linear(x, w[f"{name}/kernel"], w[f"{name}/bias"])

    ta, tb = torch.tensor(xa), torch.tensor(xb)
    s = torch.tanh(dense("da", ta)) + torch.sigmoid(dense("db", tb))
    joined = torch.cat([s, torch.tanh(dense("shared", s)), torch.sigmoid(dense("db", tb))], dim=1)
    out = dense("out", torch.tanh(dense("shared", dense("proj", joined))))
    out.backward(torch.tensor(upstream))
    np.testing.assert_allclose(model.predict([xa, xb]), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    for name, p in model.named_weights():
        np.testing.assert_allclose(p.grad, w[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_a_two_input_model_fits_evaluates_and_predicts_on_lists_of_arrays():
    ln.seed(6)
    a, b = keras.Input(shape=(3,)), keras.Input(shape=(2,))
    out = layers.Dense(2, activation="softmax")(layers.Concatenate()([a, layers.Dense(3)(b)]))
    model = keras.Model([a, b], out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=SPARSE, metrics=["accuracy"])
    xa, xb = RNG.normal(size=(64, 3)), RNG.normal(size=(64, 2))
    y = (xa[:, 0] + xb[:, 1] > 0).astype(int)
    history = model.fit([xa, xb], y, epochs=15, batch_size=16, validation_split=0.25, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and history["val_accuracy"][-1] > 0.7
    assert model.evaluate([xa, xb], y, verbose=0)[1] > 0.7
    assert model.predict([xa, xb]).shape == (64, 2)
    with pytest.raises(ValueError, match="has 2 inputs, so x must be a list of 2 arrays"):
        model.predict(xa)
    with pytest.raises(ValueError, match=r"expects input 1 \('input_layer\w*'\) of shape \(batch, 2\), got \(64, 3\)"):
        model.predict([xa, xa])
    with pytest.raises(ValueError, match="x has 63 samples but y has 64"):
        model.fit([xa, xb[:63]], y, verbose=0)
    two_outputs = keras.Model([a, b], [out, layers.Dense(1)(b)])
    assert [p.shape for p in two_outputs.predict([xa, xb])] == [(64, 2), (64, 1)]
    two_outputs.compile(loss=SPARSE)
    with pytest.raises(ValueError, match="fit: model .* has 2 outputs"):
        two_outputs.fit([xa, xb], y, verbose=0)


# --------------------------------------------------------------------------- nested models
def test_a_nested_model_with_training_false_runs_in_inference_mode():
    ln.seed(7)
    base = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(16, activation="relu", name="features"),
                             layers.Dropout(0.5)], name="base")
    inputs = keras.Input(shape=(6,))
    frozen_mode = keras.Model(inputs, layers.Dense(2, name="head")(base(inputs, training=False)))
    follows = keras.Model(inputs, layers.Dense(2, name="head2")(base(inputs)))
    x = RNG.normal(size=(32, 6))
    # fit runs the model with training=True: the node fixed to False keeps dropout off
    np.testing.assert_array_equal(frozen_mode(x, training=True).data, frozen_mode(x, training=False).data)
    assert not np.array_equal(follows(x, training=True).data, follows(x, training=False).data)
    assert frozen_mode.layers[1] is base and frozen_mode.get_layer("base") is base
    assert [name for name, _ in frozen_mode.named_weights()] == [
        "base/features/kernel", "base/features/bias", "head/kernel", "head/bias"]
    assert frozen_mode.count_params() == 6 * 16 + 16 + 16 * 2 + 2
    # and a nested model trains as part of the outer one
    frozen_mode.compile(optimizer="sgd", loss="mse")
    before = base.get_weights()
    frozen_mode.fit(x, RNG.normal(size=(32, 2)), epochs=1, verbose=0)
    assert not np.array_equal(before[0], base.get_weights()[0])


def test_a_frozen_batch_normalization_in_a_nested_model_stays_bit_identical():
    BatchNormalization = getattr(layers, "BatchNormalization", None) or pytest.skip("no BatchNormalization layer")
    ln.seed(8)
    base = keras.Sequential([keras.Input(shape=(5,)), layers.Dense(6, name="d"), BatchNormalization(name="bn")])
    base.compile(optimizer="adam", loss="mse")
    base.fit(RNG.normal(size=(32, 5)), RNG.normal(size=(32, 6)), epochs=1, verbose=0)  # moving statistics move
    base.trainable = False
    inputs = keras.Input(shape=(5,))
    model = keras.Model(inputs, layers.Dense(1, name="top")(base(inputs, training=False)))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    # d: 5·6 + 6 = 36; bn: gamma, beta, moving mean and variance, 6 each; top: 6 + 1
    assert "Total params: 67 " in text and "Trainable params: 7 " in text and "Non-trainable params: 60 " in text
    model.compile(optimizer="adam", loss="mse")
    before = base.get_weights()
    model.fit(RNG.normal(size=(32, 5)), RNG.normal(size=(32, 1)), epochs=2, batch_size=8, verbose=0)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_model_inside_a_sequential_and_a_functional_inside_a_functional():
    ln.seed(9)
    inner = functional_of([layers.Dense(5, activation="relu", name="inner_dense")], (4,))
    seq = keras.Sequential([keras.Input(shape=(4,)), inner, layers.Dense(3, name="after")])
    assert seq.output_shape == (None, 3) and seq.layers[0] is inner
    x = RNG.normal(size=(7, 4)).astype(np.float32)
    kernel, bias = inner.get_weights()
    hidden = np.maximum(x @ kernel.T + bias, 0)
    k2, b2 = seq.layers[1].get_weights()
    np.testing.assert_allclose(seq.predict(x), hidden @ k2.T + b2, rtol=1e-5, atol=1e-6)
    outer_input = keras.Input(shape=(4,))
    outer = keras.Model(outer_input, seq(outer_input))
    np.testing.assert_array_equal(outer.predict(x), seq.predict(x))
    with pytest.raises(ValueError, match=r"model 'functional\w*' expects input of shape \(batch, 4\), got \(None, 6\)"):
        inner(keras.Input(shape=(6,)))


# --------------------------------------------------------------------------- freezing: Keras's compile rule
class ScaleShift(layers.Layer):
    """y = x·scale + shift, with `shift` never trained (as moving statistics): a layer with a
    non-trainable weight, to check the models handle Layer.non_trainable_weights generically."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        return [("scale", (input_shape[-1],)), ("shift", (input_shape[-1],))]

    def build(self, input_shape):
        self.scale = ln.nn.Parameter(np.full(input_shape[-1], 2.0, dtype=self.dtype))
        self.shift = ln.nn.Parameter(np.full(input_shape[-1], 0.5, dtype=self.dtype))

    def named_weights(self):
        return [("scale", self.scale), ("shift", self.shift)] if self.built else []

    @property
    def trainable_weights(self):
        return [self.scale] if self.trainable and self.built else []

    @property
    def non_trainable_weights(self):
        return [p for p in self.weights if p is not self.scale or not self.trainable]

    def forward(self, x, training=False):
        return x * self.scale + self.shift


def frozen_model():
    ln.seed(10)
    inputs = keras.Input(shape=(4,))
    x = layers.Dense(3, name="first")(inputs)
    x = ScaleShift(name="scale_shift")(x)
    return keras.Model(inputs, layers.Dense(2, name="second")(x))


def fit_once(model):
    x, y = np.random.default_rng(1).normal(size=(16, 4)), np.random.default_rng(2).normal(size=(16, 2))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


def test_weights_frozen_at_compile_stay_bit_identical_and_non_trainable_weights_are_never_trained():
    model = frozen_model()
    model.get_layer("first").trainable = False
    assert [p.shape for p in model.non_trainable_weights] == [(3, 4), (3,), (3,)]  # first's, and shift
    model.compile(optimizer="adam", loss="mse")
    before = model.get_weights()
    fit_once(model)
    # first/kernel, first/bias frozen; scale trained, shift never; second trained
    assert changed(before, model.get_weights()) == [False, False, True, False, True, True]


def test_a_trainable_change_after_compile_takes_effect_at_the_next_compile():
    model = frozen_model()
    model.compile(optimizer="adam", loss="mse")
    first = model.get_layer("first")
    first.trainable = False  # after compile: counted at once, trained until the next compile
    assert model.count_params() == 29 and [p.shape for p in model.trainable_weights] == [(3,), (2, 3), (2,)]
    before = model.get_weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_once(model)
        fit_once(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "'first'" in messages[0] and "compile() again" in messages[0]  # once per compile
    assert changed(before, model.get_weights())[:2] == [True, True]  # still trained: compile saw it trainable
    assert [p.requires_grad for p in first.weights] == [False, False]  # after fit: the current flags
    model.compile(optimizer="adam", loss="mse")
    before = model.get_weights()
    fit_once(model)
    assert changed(before, model.get_weights()) == [False, False, True, False, True, True]
    # the other way: unfreezing after compile trains nothing more until the next compile
    first.trainable = True
    with pytest.warns(UserWarning, match="changed since the model was compiled"):
        fit_once(model)
    assert changed(before, model.get_weights())[:2] == [False, False]
    model.compile(optimizer="adam", loss="mse")
    fit_once(model)
    assert changed(before, model.get_weights())[:2] == [True, True]


def test_model_trainable_sets_every_layer_recursively_and_an_all_frozen_compile_refuses_fit():
    model = frozen_model()
    nested_input = keras.Input(shape=(4,))
    outer = keras.Model(nested_input, model(nested_input))
    outer.trainable = False
    assert not model.trainable and not model.get_layer("first").trainable
    assert outer.trainable_weights == [] and len(outer.non_trainable_weights) == 6
    outer.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="fit: the model has no trainable weights .every layer was frozen when it "
                                         "was compiled"):
        fit_once(outer)
    outer.trainable = True
    assert model.get_layer("second").trainable and len(outer.trainable_weights) == 5


def test_summary_counts_trainable_and_non_trainable_parameters_and_shows_a_nested_model_as_one_row():
    model = frozen_model()
    inputs = keras.Input(shape=(4,))
    outer = keras.Model(inputs, layers.Dense(1, name="top")(model(inputs, training=False)), name="outer")
    model.get_layer("first").trainable = False
    lines = []
    outer.summary(print_fn=lines.append)
    text = "\n".join(lines)
    # first 4·3 + 3 = 15 (frozen), scale_shift 3 + 3 (shift never trained), second 3·2 + 2 = 8, top 2 + 1 = 3
    assert "Total params: 32 (128.00 B)" in text
    assert "Trainable params: 14 (56.00 B)" in text and "Non-trainable params: 18 (72.00 B)" in text
    rows = [line for line in lines if "(Functional)" in line]
    assert len(rows) == 1 and "(None, 2)" in rows[0] and " 29 " in rows[0]
    assert "top (Dense)" in text and "functional" in text and "[0][0]" in text  # Connected to


# --------------------------------------------------------------------------- pop and get_layer
def test_sequential_pop_removes_the_last_layer_until_none_is_left():
    ln.seed(11)
    model = keras.Sequential([keras.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3, name="conv"), layers.Flatten(),
                              layers.Dense(3, name="head")])
    model.compile(optimizer="adam", loss="mse")
    x = RNG.random((4, 6, 6, 1), dtype=np.float32)
    features = model.predict(x)
    head = model.pop()
    assert head.name == "head" and [l.name for l in model.layers][-1].startswith("flatten")
    assert model.output_shape == (None, 32) and model.count_params() == 20
    assert model.predict(x).shape == (4, 32) and features.shape == (4, 3)
    model.add(layers.Dense(2))
    model.fit(x, np.zeros((4, 2)), verbose=0)  # the optimizer is made anew for the new weights
    for _ in range(3):
        model.pop()
    assert model.layers == [] and not model.built
    with pytest.raises(ValueError, match=r"Sequential.pop: model 'sequential\w*' has no layers to remove"):
        model.pop()


def test_get_layer_by_name_or_index_and_its_errors():
    model = frozen_model()
    assert model.get_layer("second") is model.layers[-1] is model.get_layer(index=-1)
    assert model.get_layer(index=0) is model.inputs[0].node.layer
    cases = [(dict(name="third"), r"no layer named 'third'; layers: input_layer\w*, first, scale_shift, second"),
             (dict(index=4), "index 4 is out of range; the model has 4 layers"),
             (dict(index=1.0), "index must be an int, got 1.0"),
             (dict(name="first", index=1), "give a layer's name or its index, not both"),
             (dict(), "give a layer's name")]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            model.get_layer(**arguments)


# --------------------------------------------------------------------------- save and load
def nested_models():
    """A functional model holding a Sequential (called with training=False) and a functional
    model, a shared layer and two inputs; and a Sequential holding a functional model."""
    ln.seed(12)
    base = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(5, activation="relu", name="b_dense"),
                             layers.Dropout(0.3, name="b_drop")], name="base")
    side = functional_of([layers.Dense(5, activation="tanh", name="s_dense")], (3,))
    a, b = keras.Input(shape=(4,), name="a"), keras.Input(shape=(3,), name="b")
    shared = layers.Dense(5, activation="tanh", name="shared")
    x = layers.Add(name="add")([shared(base(a, training=False)), shared(side(b))])
    outputs = layers.Dense(3, activation="softmax", name="out")(layers.Concatenate(name="cat")([x, side(b)]))
    graph = keras.Model([a, b], outputs, name="graph")
    stacked = keras.Sequential([keras.Input(shape=(3,)), side, layers.Dense(2, name="after_side")], name="stacked")
    return graph, stacked


def test_functional_and_nested_models_save_and_load_with_identical_predictions_and_training(tmp_path):
    graph, stacked = nested_models()
    xa, xb, y = RNG.normal(size=(24, 4)), RNG.normal(size=(24, 3)), RNG.integers(0, 3, 24)
    graph.get_layer("base").get_layer("b_dense").trainable = False
    graph.compile(optimizer="adam", loss=SPARSE, metrics=["accuracy"])
    graph.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    loaded = saved_and_loaded(graph, tmp_path)
    assert type(loaded) is type(graph) and loaded.get_config() == graph.get_config()
    np.testing.assert_array_equal(loaded.predict([xa, xb]), graph.predict([xa, xb]))
    assert [l.name for l in loaded.layers] == [l.name for l in graph.layers]
    assert [type(l).__name__ for l in loaded.layers] == [
        "InputLayer", "InputLayer", "Sequential", "Dense", "Functional", "Add", "Concatenate", "Dense"]
    assert not loaded.get_layer("base").get_layer("b_dense").trainable
    assert [n for n, _ in loaded.named_weights()] == [n for n, _ in graph.named_weights()]
    assert loaded.metrics_names == ["loss", "accuracy"]
    for model in (graph, loaded):  # the optimizer state came along: one more epoch, the same weights
        ln.seed(13)
        model.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    for p, q in zip(graph.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(p, q)
    stacked_loaded = saved_and_loaded(stacked, tmp_path, "stacked.lnn")
    np.testing.assert_array_equal(stacked_loaded.predict(xb), stacked.predict(xb))
    assert stacked_loaded.get_config() == stacked.get_config()
    # a loaded graph's layers know their tensors, to cut a feature extractor out of it
    features = keras.Model(loaded.inputs, loaded.get_layer("cat").output)
    assert features.predict([xa, xb]).shape == (24, 10)


def test_sequence_layers_in_a_graph_train_save_and_load(tmp_path):
    ln.seed(15)
    tokens = keras.Input(shape=(6,), dtype="int64")
    embedded = layers.Embedding(9, 8)(tokens)
    steps = layers.LSTM(6, return_sequences=True, dropout=0.2)(embedded)
    causal = layers.MultiHeadAttention(num_heads=2, key_dim=3)(steps, steps, use_causal_mask=True)
    cross = layers.MultiHeadAttention(num_heads=2, key_dim=3)(query=steps, value=embedded)  # by keyword, as Keras
    x = layers.LayerNormalization()(layers.Concatenate()([layers.Add()([steps, causal]), cross]))
    model = keras.Model(tokens, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(x)))
    assert model.output_shape == (None, 3) and x.shape == (None, 6, 12)
    ids, y = RNG.integers(0, 9, (10, 6)), np.arange(10) % 3
    model.compile(optimizer="adam", loss=SPARSE)
    model.fit(ids, y, epochs=1, batch_size=5, verbose=0)
    loaded = saved_and_loaded(model, tmp_path)
    np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))
    with pytest.raises(ValueError, match="in a functional graph initial_state and return_state=True are not supported"):
        layers.LSTM(3, return_state=True)(embedded)
    with pytest.raises(ValueError, match="in a functional graph attention_mask and return_attention_scores"):
        layers.MultiHeadAttention(2, 2)(steps, attention_mask=np.ones((6, 6), bool))
    with pytest.raises(ValueError, match=r"Dense 'dense\w*': training must be True, False or None, got 'x'"):
        layers.Dense(2)(steps, training="x")


def test_a_sequential_file_from_before_functional_models_still_loads(tmp_path):
    ln.seed(14)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss=SPARSE)
    model.save(tmp_path / "new.lnn")
    with zipfile.ZipFile(tmp_path / "new.lnn") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    del config["model_class"], config["model"]["trainable"]  # what a version 1 file held before
    members["config.json"] = json.dumps(config).encode()
    write_archive(tmp_path / "old.lnn", members)
    old = keras.models.load_model(tmp_path / "old.lnn")
    x = RNG.normal(size=(5, 3))
    np.testing.assert_array_equal(old.predict(x), model.predict(x))


def write_archive(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    graph, _ = nested_models()
    path = tmp_path_factory.mktemp("functional") / "graph.lnn"
    graph.compile(optimizer="adam", loss=SPARSE)
    graph.fit([RNG.normal(size=(8, 4)), RNG.normal(size=(8, 3))], RNG.integers(0, 3, 8), verbose=0)
    graph.save(path)
    return graph, path.read_bytes()


def edited(data, change):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    return members


def node(k):
    return lambda config: config["model"]["nodes"][k]


GRAPH_CASES = {
    "a reference to a later node": (lambda c: node(0)(c).update(args=[{"node": 3, "output": 0}]),
                                    r"node 0: a tensor reference must be .* with k < 0"),
    "a reference to input 2 of 2": (lambda c: node(1)(c).update(args=[{"input": 2}]), "with i < 2"),
    "an output index too large": (lambda c: c["model"]["outputs"][0].update(output=1),
                                  "a reference to output 1 of node 7, which has 1 output"),
    "an unknown layer": (lambda c: node(2)(c).update(layer="ghost"), "node 2 names 'ghost', which is not a layer"),
    "an InputLayer called": (lambda c: node(2)(c).update(layer="a"), "node 2 names 'a', which is not a layer"),
    "a layer nobody calls": (lambda c: c["model"]["layers"].append({"class_name": "Dense", "config": {
        "name": "idle", "units": 2}}), "layer 'idle' is listed but no node calls it"),
    "two layers of one name": (lambda c: c["model"]["layers"].append(c["model"]["layers"][-1]),
                               "two layers are named 'out'"),
    "a keyword argument that is a list": (lambda c: node(0)(c)["kwargs"].update(training=[1]),
                                          "keyword argument training must be true, false, null"),
    "training a string": (lambda c: node(0)(c)["kwargs"].update(training="no"), "training must be True, False"),
    "an unknown keyword argument": (lambda c: node(0)(c)["kwargs"].update(dropout=0.5), "unexpected keyword"),
    "no inputs": (lambda c: c["model"].update(inputs=[]), "inputs must name distinct InputLayers"),
    "an input naming a Dense": (lambda c: c["model"].update(inputs=["a", "out"]), "inputs must name distinct"),
    "no arguments": (lambda c: node(0)(c).update(args=[]), "a call needs at least one tensor argument"),
    "wider nested Dense layers": (lambda c: [c["model"]["layers"][i]["config"]["layers"][-1 if i == 4 else 0][
        "config"].update(units=6) for i in (2, 4)],
        r"weight base/b_dense/kernel has shape \(5, 4\) but the architecture implies \(6, 4\)"),
    "a wider output": (lambda c: c["model"]["layers"][-1]["config"].update(units=4),
                       r"weight out/kernel has shape \(3, 10\) but the architecture implies \(4, 10\)"),
    "a shared layer on two widths": (lambda c: c["model"]["layers"][2]["config"]["layers"][0]["config"].update(
        units=6), r"Dense 'shared' is called on inputs its weights .made by an earlier call. cannot take: \(None, 5\)"),
    "an unknown model class": (lambda c: c.update(model_class="Subclassed"), "unknown model class 'Subclassed'"),
    "a graph read as a Sequential": (lambda c: c.update(model_class="Sequential"), "Add 'add' takes a list of tensors"),
}


@pytest.mark.parametrize("case", GRAPH_CASES)
def test_a_graph_model_save_never_writes_is_refused_by_name(graph_file, tmp_path, case):
    _, data = graph_file
    change, message = GRAPH_CASES[case]
    path = write_archive(tmp_path / "hand.lnn", edited(data, change))
    with pytest.raises(ModelFileError, match=message) as err:
        keras.models.load_model(path)
    assert str(path) in str(err.value)


def test_models_nested_deeper_than_the_limit_are_refused(graph_file, tmp_path):
    _, data = graph_file

    def deepen(config):
        inner = config["model"]["layers"][2]  # the Sequential 'base'
        for i in range(20):
            inner = {"class_name": "Sequential", "config": {"name": f"wrap{i}", "input_shape": [4], "layers": [inner]}}
        config["model"]["layers"][2] = inner
    with pytest.raises(ModelFileError, match="models are nested more than 16 deep"):
        keras.models.load_model(write_archive(tmp_path / "deep.lnn", edited(data, deepen)))


def test_every_byte_of_a_graph_file_flipped_loads_the_same_model_or_raises_model_file_error(graph_file, tmp_path):
    graph, data = graph_file
    path, refused = tmp_path / "flipped.lnn", 0
    start = data.index(b"config.json")  # the graph's config: most of what is new here
    for i in range(start, min(len(data), start + 1200)):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = keras.models.load_model(path)
        except ModelFileError as err:
            assert str(path) in str(err)
            refused += 1
            continue
        assert loaded.get_config() == graph.get_config()
    assert refused > 600


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_anywhere_in_a_graph_config_loads_a_working_model_or_raises_model_file_error(graph_file, tmp_path,
                                                                                                data):
    _, original = graph_file
    config = json.loads(zipfile.ZipFile(io.BytesIO(original)).read("config.json"))
    where = data.draw(st.sampled_from(list(paths(config["model"]))[1:]))
    value = data.draw(st.none() | st.booleans() | st.integers(-2, 9) | st.text(max_size=6)
                      | st.lists(st.integers(0, 3), max_size=2) | st.dictionaries(st.sampled_from(
                          ["input", "node", "output"]), st.integers(-1, 8), max_size=2))

    def change(c):
        target = c["model"]
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
    path = write_archive(tmp_path / "mutated.lnn", edited(original, change))
    try:
        loaded = keras.models.load_model(path)
    except ModelFileError as err:
        assert str(path) in str(err)
        return
    xs = [np.zeros((2,) + tuple(shape)) for shape in loaded._sample_shapes()]
    out = loaded.predict(xs if len(xs) > 1 else xs[0])
    assert all(o.shape[0] == 2 for o in (out if isinstance(out, list) else [out]))  # a model that works


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))
