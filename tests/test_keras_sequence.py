"""Keras's sequence layers (keras/sequence.py): Embedding, LayerNormalization, LSTM,
MultiHeadAttention and GlobalAveragePooling1D, each against a NumPy reference written from
Keras's formulas and, where the math is PyTorch's too, against torch.nn with the weights
converted (float64); an Embedding → LSTM → Dense model that learns; save/load; bad arguments."""
import json
import math
import zipfile

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import keras
from lepton_nn.keras import layers
from lepton_nn.keras.saving import ModelFileError

try:
    import torch
except ImportError:  # the comparisons with torch.nn skip; the rest runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason='needs torch: pip install -e ".[torch]"')

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.normal(size=shape)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def as_torch(array, grad=False):
    return torch.tensor(np.asarray(array), dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------- Embedding
@needs_torch
def test_embedding_looks_up_rows_as_numpy_and_torch_with_the_same_gradient():
    ln.seed(0)
    layer = layers.Embedding(7, 3, dtype="float64")
    indices = np.array([[0, 6, 2, 2], [5, 5, 5, 1]])
    y = layer(indices)
    (table,) = layer.get_weights()
    assert table.shape == (7, 3) and np.abs(table).max() <= 0.05  # Keras's 'uniform': U(−0.05, 0.05)
    close(y.data, table[indices])
    upstream = normal(2, 4, 3)
    y.backward(upstream)
    weight = as_torch(table, grad=True)
    torch.nn.functional.embedding(torch.tensor(indices), weight).backward(as_torch(upstream))
    close(layer.weights[0].grad, weight.grad.numpy())


def test_embedding_takes_whole_floats_and_refuses_fractions_and_out_of_range_indices():
    layer = layers.Embedding(5, 2, name="tokens")
    np.testing.assert_array_equal(layer(np.array([[1.0, 4.0]])).data, layer(np.array([[1, 4]])).data)
    with pytest.raises(ValueError, match=r"Embedding 'tokens': input must be integer indices in \[0, 5\), got dtype "
                                         r"float64 with values that are not whole numbers"):
        layer(np.array([[1.5, 2.0]]))
    with pytest.raises(ValueError, match=r"Embedding 'tokens': input must lie in \[0, 5\), got values from 0 to 5"):
        layer(np.array([[0, 5]]))


# --------------------------------------------------------------------------- LayerNormalization
def numpy_layer_norm(x, axes, gamma, beta, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased, as Keras
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@needs_torch
def test_layer_normalization_over_the_last_axis_equals_numpy_and_torch_layer_norm():
    ln.seed(0)
    layer = layers.LayerNormalization(dtype="float64")  # Keras's epsilon 1e-3
    x = normal(2, 5, 4)
    layer(x)
    gamma, beta = normal(4), normal(4)
    layer.set_weights([gamma, beta])
    y = layer(x)
    close(y.data, numpy_layer_norm(x, -1, gamma, beta, 1e-3))
    upstream = normal(2, 5, 4)
    y.backward(upstream)
    reference = torch.nn.LayerNorm(4, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(as_torch(gamma))
        reference.bias.copy_(as_torch(beta))
    xt = as_torch(x, grad=True)
    reference(xt).backward(as_torch(upstream))
    close(layer.weights[0].grad, reference.weight.grad.numpy())
    close(layer.weights[1].grad, reference.bias.grad.numpy())


@pytest.mark.parametrize("axis, x_shape, param_shape", [(1, (2, 5, 4), (5,)), ([1, 2], (2, 5, 4), (5, 4)),
                                                      ([-3, -1], (2, 3, 5, 4), (3, 4)), (2, (2, 5, 6), (6,))])
@needs_torch
def test_layer_normalization_over_any_axes_follows_keras_formula(axis, x_shape, param_shape):
    """Trailing axes run functional.layer_norm's kernel, others a composition: both Keras's formula."""
    ln.seed(0)
    layer = layers.LayerNormalization(axis=axis, epsilon=0.01, dtype="float64")
    x = normal(*x_shape)
    assert [s for _, s in layer.weight_shapes((None,) + x.shape[1:])] == [param_shape, param_shape]
    layer(x)
    gamma, beta = normal(*param_shape), normal(*param_shape)
    layer.set_weights([gamma, beta])
    axes = tuple(a % x.ndim for a in np.atleast_1d(axis))
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    expected = numpy_layer_norm(x, axes, gamma.reshape(shape), beta.reshape(shape), 0.01)
    xt = ln.tensor(x, requires_grad=True)
    y = layer(xt)
    close(y.data, expected)
    # the gradients of the fused kernel or the composition equal torch's autograd of the formula
    upstream = normal(*x.shape)
    y.backward(upstream)
    xr, g, b = as_torch(x, grad=True), as_torch(gamma, grad=True), as_torch(beta, grad=True)
    mean = xr.mean(dim=axes, keepdim=True)
    var = ((xr - mean) ** 2).mean(dim=axes, keepdim=True)
    ((xr - mean) / torch.sqrt(var + 0.01) * g.reshape(shape) + b.reshape(shape)).backward(as_torch(upstream))
    close(xt.grad, xr.grad.numpy(), 1e-9)
    close(layer.weights[0].grad, g.grad.numpy(), 1e-9)
    close(layer.weights[1].grad, b.grad.numpy(), 1e-9)


def test_layer_normalization_without_center_or_scale_has_fewer_weights():
    x = normal(3, 4)
    scale_only = layers.LayerNormalization(center=False)
    scale_only(x)
    assert [(name, w.shape) for name, w in scale_only.named_weights()] == [("gamma", (4,))]
    plain = layers.LayerNormalization(center=False, scale=False, dtype="float64")
    close(plain(x).data, numpy_layer_norm(x, -1, 1, 0, 1e-3))
    assert plain.weights == []


# --------------------------------------------------------------------------- LSTM
def numpy_lstm(x, kernel, recurrent_kernel, bias, act=np.tanh, sigma=sigmoid, h=None, c=None, backwards=False):
    """Keras's LSTM equations, step by step: (every h, last h, last c)."""
    n, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((n, units)) if h is None else h
    c = np.zeros((n, units)) if c is None else c
    outputs = []
    for t in (range(steps - 1, -1, -1) if backwards else range(steps)):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=1)
        c = sigma(z_f) * c + sigma(z_i) * act(z_c)
        h = sigma(z_o) * act(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def lstm_with_random_weights(units, features, **kwargs):
    layer = layers.LSTM(units, dtype="float64", **kwargs)
    layer(np.zeros((1, 1, features)))
    layer.set_weights([normal(*w.shape) * 0.5 for w in layer.weights])
    return layer


@pytest.mark.parametrize("options", [{}, {"return_sequences": True}, {"go_backwards": True, "return_sequences": True},
                                     {"activation": "relu", "recurrent_activation": "tanh"},
                                     {"activation": None, "use_bias": False}])
def test_lstm_follows_keras_equations(options):
    ln.seed(0)
    layer = lstm_with_random_weights(4, 3, **options)
    x = normal(2, 5, 3)
    kernel, recurrent_kernel, *bias = layer.get_weights()
    names = {None: lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": sigmoid}
    sequences, h, _ = numpy_lstm(x, kernel, recurrent_kernel, bias[0] if bias else 0,
                                 act=names[options.get("activation", "tanh")],
                                 sigma=names[options.get("recurrent_activation", "sigmoid")],
                                 backwards=options.get("go_backwards", False))
    close(layer(x).data, sequences if options.get("return_sequences") else h)


def test_lstm_state_in_and_out():
    ln.seed(0)
    layer = lstm_with_random_weights(4, 3, return_state=True)
    x, h0, c0 = normal(2, 5, 3), normal(2, 4), normal(2, 4)
    output, h, c = layer(x, initial_state=[h0, c0])
    _, h_ref, c_ref = numpy_lstm(x, *layer.get_weights(), h=h0, c=c0)
    close(output.data, h_ref)
    close(h.data, h_ref)
    close(c.data, c_ref)
    with pytest.raises(ValueError, match=r"LSTM 'lstm\w*': initial_state h0 must be float64 of shape \(2, 4\)"):
        layer(x, initial_state=[h0[:1], c0])


@needs_torch
def test_lstm_equals_torch_lstm_with_the_weights_transposed_and_one_bias():
    """The documented mapping: weight_ih = kernel.T, weight_hh = recurrent_kernel.T,
    bias_ih + bias_hh = bias (the same gate order i, f, c/g, o); the gradients map back the same way."""
    ln.seed(0)
    layer = lstm_with_random_weights(5, 3, return_sequences=True)
    kernel, recurrent_kernel, bias = layer.get_weights()
    reference = torch.nn.LSTM(3, 5, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(as_torch(kernel.T))
        reference.weight_hh_l0.copy_(as_torch(recurrent_kernel.T))
        reference.bias_ih_l0.copy_(as_torch(bias))
        reference.bias_hh_l0.zero_()
    x = normal(2, 6, 3)
    upstream = normal(2, 6, 5)
    xt = ln.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(upstream)
    xr = as_torch(x, grad=True)
    expected, _ = reference(xr)
    expected.backward(as_torch(upstream))
    close(y.data, expected.detach().numpy())
    close(xt.grad, xr.grad.numpy())
    grad_kernel, grad_recurrent, grad_bias = (w.grad for w in layer.weights)
    close(grad_kernel, reference.weight_ih_l0.grad.numpy().T)
    close(grad_recurrent, reference.weight_hh_l0.grad.numpy().T)
    close(grad_bias, reference.bias_ih_l0.grad.numpy())
    # and lepton_nn's own nn.LSTM (PyTorch's layout) with the same conversion
    mine = ln.nn.LSTM(3, 5, batch_first=True, dtype=np.float64)
    mine.load_state_dict({"weight_ih_l0": kernel.T, "weight_hh_l0": recurrent_kernel.T, "bias_ih_l0": bias,
                          "bias_hh_l0": np.zeros(20)})
    close(mine(x)[0].data, y.data)


def test_lstm_initialisation_is_keras_glorot_orthogonal_and_unit_forget_bias():
    ln.seed(0)
    layer = layers.LSTM(8)
    layer(np.zeros((1, 2, 3), np.float32))
    kernel, recurrent_kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 32) and recurrent_kernel.shape == (8, 32) and bias.shape == (32,)
    assert np.abs(kernel).max() <= math.sqrt(6 / (3 + 32))
    np.testing.assert_allclose(recurrent_kernel @ recurrent_kernel.T, np.eye(8), atol=1e-5)  # orthonormal rows
    np.testing.assert_array_equal(bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])  # the forget block i, [f], c, o
    plain = layers.LSTM(8, unit_forget_bias=False)
    plain(np.zeros((1, 2, 3), np.float32))
    np.testing.assert_array_equal(plain.get_weights()[2], 0)


def test_lstm_dropout_keeps_one_mask_per_sequence_for_every_step_and_only_while_training():
    ln.seed(0)
    layer = lstm_with_random_weights(4, 6, dropout=0.5, return_sequences=True)
    x = normal(3, 5, 6)
    close(layer(x).data, layer(x, training=False).data)
    xt = ln.tensor(x, requires_grad=True)
    layer(xt, training=True).sum().backward()
    dropped = xt.grad == 0  # (sequence, step, feature)
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(dropped, dropped[:, :1].repeat(5, axis=1))  # the same features at every step
    recurrent = lstm_with_random_weights(4, 6, recurrent_dropout=0.5)
    close(recurrent(x).data, numpy_lstm(x, *recurrent.get_weights())[1])  # evaluation: no dropout
    assert not np.allclose(recurrent(x, training=True).data, recurrent(x).data)


# --------------------------------------------------------------------------- MultiHeadAttention
def numpy_mha(query, value, key, weights, key_dim, mask=None):
    """Keras's formulas with einsum: (output, attention scores)."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btd,dhk->bthk", query, wq) + bq
    k = np.einsum("bsd,dhk->bshk", key, wk) + bk
    v = np.einsum("bsd,dhv->bshv", value, wv) + bv
    scores = np.einsum("bthk,bshk->bhts", q / math.sqrt(key_dim), k)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    attention = softmax(scores)
    heads = np.einsum("bhts,bshv->bthv", attention, v)
    return np.einsum("bthv,hvo->bto", heads, wo) + bo, attention


def mha_with_random_weights(query, value, key=None, **kwargs):
    layer = layers.MultiHeadAttention(dtype="float64", **kwargs)
    layer(query, value, key)
    layer.set_weights([normal(*w.shape) * 0.5 for w in layer.weights])
    return layer


def test_multi_head_attention_follows_keras_formulas_with_its_weight_shapes():
    ln.seed(0)
    query, value, key = normal(2, 4, 6), normal(2, 3, 5), normal(2, 3, 7)
    layer = mha_with_random_weights(query, value, key, num_heads=2, key_dim=3, value_dim=4, output_shape=8)
    assert [(name, w.shape) for name, w in layer.named_weights()] == [
        ("query/kernel", (6, 2, 3)), ("query/bias", (2, 3)), ("key/kernel", (7, 2, 3)), ("key/bias", (2, 3)),
        ("value/kernel", (5, 2, 4)), ("value/bias", (2, 4)), ("attention_output/kernel", (2, 4, 8)),
        ("attention_output/bias", (8,))]
    mask = RNG.random((2, 4, 3)) < 0.7
    mask[:, :, 0] = True  # every query sees a key
    output, scores = layer(query, value, key, attention_mask=mask, return_attention_scores=True)
    expected, expected_scores = numpy_mha(query, value, key, layer.get_weights(), 3, mask)
    close(output.data, expected)
    close(scores.data, expected_scores)
    assert output.shape == layer.compute_output_shape(query.shape, value.shape, key.shape) == (2, 4, 8)


@needs_torch
def test_multi_head_attention_equals_torch_multihead_attention_with_the_kernels_reshaped():
    """With heads·key_dim = dim, Keras's (dim, heads, key_dim) kernel reshaped to (dim, dim) and
    transposed is PyTorch's (out, in) projection; its boolean mask is the opposite of Keras's."""
    ln.seed(0)
    x, context = normal(2, 5, 6), normal(2, 4, 6)
    layer = mha_with_random_weights(x, context, num_heads=2, key_dim=3)
    wq, bq, wk, bk, wv, bv, wo, bo = layer.get_weights()
    reference = torch.nn.MultiheadAttention(6, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        reference.in_proj_weight.copy_(as_torch(np.concatenate([w.reshape(6, 6).T for w in (wq, wk, wv)])))
        reference.in_proj_bias.copy_(as_torch(np.concatenate([b.reshape(6) for b in (bq, bk, bv)])))
        reference.out_proj.weight.copy_(as_torch(wo.reshape(6, 6).T))
        reference.out_proj.bias.copy_(as_torch(bo))
    mask = RNG.random((2, 5, 4)) < 0.6
    mask[:, :, 1] = True
    xt, ct = ln.tensor(x, requires_grad=True), ln.tensor(context, requires_grad=True)
    output, scores = layer(xt, ct, attention_mask=mask, return_attention_scores=True)
    upstream = normal(2, 5, 6)
    output.backward(upstream)
    xr, cr = as_torch(x, grad=True), as_torch(context, grad=True)
    expected, expected_scores = reference(xr, cr, cr, attn_mask=torch.tensor(~mask).repeat_interleave(2, dim=0),
                                          average_attn_weights=False)
    expected.backward(as_torch(upstream))
    close(output.data, expected.detach().numpy())
    close(scores.data, expected_scores.detach().numpy())
    close(xt.grad, xr.grad.numpy())
    close(ct.grad, cr.grad.numpy())
    close(layer.weights[0].grad.reshape(6, 6).T, reference.in_proj_weight.grad.numpy()[:6])
    close(layer.weights[-2].grad.reshape(6, 6).T, reference.out_proj.weight.grad.numpy())


def test_causal_mask_hides_later_steps_and_a_fully_masked_query_averages_the_values():
    ln.seed(0)
    x = normal(1, 5, 4)
    layer = mha_with_random_weights(x, x, num_heads=2, key_dim=2)
    y = layer(x, x, use_causal_mask=True).data
    changed = x.copy()
    changed[:, 3:] += 10  # the future of steps 0..2
    np.testing.assert_array_equal(layer(changed, changed, use_causal_mask=True).data[:, :3], y[:, :3])
    close(y, numpy_mha(x, x, x, layer.get_weights(), 2, np.tri(5, dtype=bool)[None])[0])
    mask = np.ones((1, 5, 5), bool)
    mask[0, 2] = False  # query 2 may attend to no key: Keras's −1e9 makes its weights uniform
    _, scores = layer(x, x, attention_mask=mask, return_attention_scores=True)
    close(scores.data[0, :, 2], np.full((2, 5), 0.2))


def test_multi_head_attention_kernels_use_keras_fans():
    ln.seed(0)
    layer = layers.MultiHeadAttention(num_heads=4, key_dim=16)
    layer(np.zeros((1, 2, 32), np.float32))
    kernel = layer.get_weights()[0]  # (32, 4, 16): Keras's fan_in = 4·32, fan_out = 16·32
    limit = math.sqrt(6 / (4 * 32 + 16 * 32))
    assert kernel.shape == (32, 4, 16) and limit * 0.98 < np.abs(kernel).max() <= limit


def test_attention_dropout_only_while_training():
    ln.seed(0)
    x = normal(2, 4, 6)
    layer = mha_with_random_weights(x, x, num_heads=2, key_dim=3, dropout=0.5)
    close(layer(x).data, numpy_mha(x, x, x, layer.get_weights(), 3)[0])
    assert not np.allclose(layer(x, training=True).data, layer(x).data)


# --------------------------------------------------------------------------- GlobalAveragePooling1D
def test_global_average_pooling_1d_is_the_mean_over_time():
    x = normal(2, 5, 3)
    close(layers.GlobalAveragePooling1D(dtype="float64")(x).data, x.mean(axis=1))
    close(layers.GlobalAveragePooling1D(keepdims=True, dtype="float64")(x).data, x.mean(axis=1, keepdims=True))
    close(layers.GlobalAveragePooling1D(data_format="channels_first", dtype="float64")(x).data, x.mean(axis=2))


# --------------------------------------------------------------------------- models
def next_character_data(text="the cat sat on the mat. ", copies=4, steps=6):
    text = text * copies
    vocabulary = sorted(set(text))
    ids = np.array([vocabulary.index(ch) for ch in text])
    x = np.stack([ids[i:i + steps] for i in range(len(ids) - steps)])
    return x, ids[steps:], len(vocabulary)


def test_embedding_lstm_dense_learns_the_next_character():
    ln.seed(0)
    x, y, vocabulary = next_character_data()
    model = keras.Sequential([keras.Input(shape=(6,), dtype="int32"), layers.Embedding(vocabulary, 8),
                              layers.LSTM(24), layers.Dense(vocabulary, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    assert model.output_shape == (None, vocabulary) and model.uses_fused_softmax_cross_entropy
    history = model.fit(x, y, epochs=12, batch_size=16, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.6


def sequence_model():
    ln.seed(1)
    return keras.Sequential([
        keras.Input(shape=(5,), dtype="int64"),
        layers.Embedding(9, 8),
        layers.LSTM(6, return_sequences=True, go_backwards=True),
        layers.LayerNormalization(),
        layers.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, output_shape=7),
        layers.LayerNormalization(axis=1, center=False),
        layers.GlobalAveragePooling1D(),
        layers.Dense(3, activation="softmax")])


def test_save_load_round_trip_gives_the_same_outputs(tmp_path):
    model = sequence_model()
    assert [layer.output_shape for layer in model.layers] == [
        (None, 5, 8), (None, 5, 6), (None, 5, 6), (None, 5, 7), (None, 5, 7), (None, 7), (None, 3)]
    x, y = RNG.integers(0, 9, (12, 5)), RNG.integers(0, 3, 12)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "sequence.lnn")
    loaded = keras.models.load_model(tmp_path / "sequence.lnn")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    entries = json.loads(zipfile.ZipFile(tmp_path / "sequence.lnn").read("config.json"))["weights"]
    assert [e["name"].split("/", 1)[1] for e in entries] == [  # Keras's names, in Keras's order
        "embeddings", "kernel", "recurrent_kernel", "bias", "gamma", "beta", "query/kernel", "query/bias",
        "key/kernel", "key/bias", "value/kernel", "value/bias", "attention_output/kernel", "attention_output/bias",
        "gamma", "kernel", "bias"]
    # training goes on from the same state
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("layer, input_shape", [
    (lambda: layers.Embedding(9, 4), (6,)),
    (lambda: layers.LSTM(3), (6, 2)),
    (lambda: layers.LSTM(3, return_sequences=True, use_bias=False), (6, 2)),
    (lambda: layers.LayerNormalization(axis=[1, 2], scale=False), (6, 2)),
    (lambda: layers.MultiHeadAttention(3, 2, value_dim=5, output_shape=(2, 2), use_bias=False), (6, 4)),
    (lambda: layers.GlobalAveragePooling1D(keepdims=True), (6, 2)),
])
def test_computed_shapes_are_the_built_shapes_and_configs_round_trip(layer, input_shape):
    made = layer()
    shape = (None,) + input_shape
    plan, output = made.weight_shapes(shape), made.compute_output_shape(shape)
    x = RNG.integers(0, 9, (2,) + input_shape) if isinstance(made, layers.Embedding) else normal(2, *input_shape)
    y = made(x)
    assert [(name, w.shape) for name, w in made.named_weights()] == plan
    assert y.shape == (2,) + output[1:]
    config = made.get_config()
    again = layers.deserialize(json.loads(json.dumps(layers.serialize(made))))
    assert again.get_config() == config and type(again) is type(made)


# --------------------------------------------------------------------------- bad arguments
BAD = [
    (lambda: layers.Embedding(0, 4), r"Embedding 'embedding\w*': input_dim must be a positive int, got 0"),
    (lambda: layers.Embedding(5, 2.0), "output_dim must be a positive int, got 2.0"),
    (lambda: layers.Embedding(5, 2, mask_zero=True), r"mask_zero=True is not supported \(lepton_nn's layers pass no "
                                                     r"masks on"),
    (lambda: layers.Embedding(5, 2, mask_zero="yes"), "mask_zero must be True or False, got 'yes'"),
    (lambda: layers.Embedding(5, 2, embeddings_initializer="gaussian"), "embeddings_initializer must be one of"),
    (lambda: layers.LayerNormalization(epsilon=0), r"LayerNormalization 'layer_normalization\w*': epsilon must be a "
                                                   r"finite number > 0, got 0"),
    (lambda: layers.LayerNormalization(axis="last"), "axis must be an int or a non-empty list of ints, got 'last'"),
    (lambda: layers.LayerNormalization(axis=[]), "axis must be an int or a non-empty list of ints, got"),
    (lambda: layers.LayerNormalization(center=1), "center must be True or False, got 1"),
    (lambda: layers.LSTM(0), r"LSTM 'lstm\w*': units must be a positive int, got 0"),
    (lambda: layers.LSTM(4, activation="swish"), "unknown activation 'swish'"),
    (lambda: layers.LSTM(4, recurrent_activation=3), "activation must be a name or a callable, got 3"),
    (lambda: layers.LSTM(4, dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
    (lambda: layers.LSTM(4, recurrent_dropout=-0.5), r"recurrent_dropout must be a number in \[0, 1\)"),
    (lambda: layers.LSTM(4, return_sequences="yes"), "return_sequences must be True or False, got 'yes'"),
    (lambda: layers.LSTM(4, recurrent_initializer="identity"), "recurrent_initializer must be one of"),
    (lambda: layers.MultiHeadAttention(0, 4), r"MultiHeadAttention 'multi_head_attention\w*': num_heads must be a "
                                              r"positive int, got 0"),
    (lambda: layers.MultiHeadAttention(2, None), "key_dim must be a positive int, got None"),
    (lambda: layers.MultiHeadAttention(2, 4, value_dim=0), "value_dim must be a positive int, got 0"),
    (lambda: layers.MultiHeadAttention(2, 4, dropout=2), r"dropout must be a number in \[0, 1\), got 2"),
    (lambda: layers.MultiHeadAttention(2, 4, output_shape=0), "output_shape must be a positive int, got 0"),
    (lambda: layers.MultiHeadAttention(2, 4, output_shape=()), "output_shape must be a positive int or a non-empty"),
    (lambda: layers.GlobalAveragePooling1D(data_format="NWC"), "data_format must be 'channels_last' or "
                                                               "'channels_first', got 'NWC'"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_a_bad_argument_is_refused_when_the_layer_is_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_bad_input_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"LSTM 'seq': expected input \(batch, timesteps ≥ 1, features\), got shape "
                                         r"\(2, 3\)"):
        layers.LSTM(3, name="seq")(np.zeros((2, 3)))
    lstm = layers.LSTM(3, name="seq2")
    lstm(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"LSTM 'seq2': built for 5 features, got input shape \(2, 4, 6\)"):
        lstm(np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"LayerNormalization 'norm': axis 3 must name distinct axes of the input "
                                         r"other than the batch axis 0, got input shape \(2, 4\)"):
        layers.LayerNormalization(axis=3, name="norm")(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis 0 must name distinct axes of the input other than the batch axis"):
        layers.LayerNormalization(axis=0)(np.zeros((2, 4)))
    mha = layers.MultiHeadAttention(2, 3, name="att")
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att': key and value must have as many steps"):
        mha(np.zeros((1, 4, 6)), np.zeros((1, 3, 6)), np.zeros((1, 2, 6)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att': attention_mask must be of shape \(1, 4, 3\)"):
        mha(np.zeros((1, 4, 6)), np.zeros((1, 3, 6)), attention_mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att' was built for other feature sizes"):
        mha(np.zeros((1, 4, 5)), np.zeros((1, 3, 6)))


def test_sequential_places_embedding_first_and_refuses_return_state():
    with pytest.raises(ValueError, match=r"Embedding 'late' looks up integer indices, so it can only be a "
                                         r"Sequential model's first layer"):
        keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3), layers.Embedding(5, 2, name="late")])
    with pytest.raises(ValueError, match=r"LSTM 'states': return_state=True gives three outputs \[output, h, c\], "
                                         r"but a Sequential model passes one tensor"):
        keras.Sequential([layers.LSTM(3, return_state=True, name="states")])


def test_a_file_whose_config_breaks_these_rules_is_refused_by_load_model(tmp_path):
    model = keras.Sequential([keras.Input(shape=(4,)), layers.Embedding(5, 3), layers.LSTM(2)])
    model.save(tmp_path / "good.lnn")
    members = {name: zipfile.ZipFile(tmp_path / "good.lnn").read(name)
               for name in zipfile.ZipFile(tmp_path / "good.lnn").namelist()}
    config = json.loads(members["config.json"])

    def write(change, name):
        broken = json.loads(json.dumps(config))
        change(broken["model"]["layers"])
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, json.dumps(broken) if member == "config.json" else data)
        return tmp_path / name

    cases = [
        (lambda ls: ls[1]["config"].update(return_state=True), "return_state=True gives three outputs"),
        (lambda ls: ls.reverse(), "looks up integer indices, so it can only be a Sequential model's first layer"),
        (lambda ls: ls[1]["config"].update(units=3), r"has shape \(3, 8\) but the architecture implies \(3, 12\)"),
        (lambda ls: ls[0]["config"].update(mask_zero=True), "mask_zero=True is not supported"),
        (lambda ls: ls[1]["config"].update(activation="swish"), "unknown activation 'swish'"),
    ]
    for i, (change, message) in enumerate(cases):
        with pytest.raises(ModelFileError, match=message):
            keras.models.load_model(write(change, f"bad{i}.lnn"))


def test_a_custom_activation_cannot_be_saved(tmp_path):
    model = keras.Sequential([keras.Input(shape=(3, 2)), layers.LSTM(2, activation=ln.functional.relu)])
    with pytest.raises(ValueError, match=r"LSTM 'lstm\w*': a custom activation \(relu\) cannot be saved"):
        model.save(tmp_path / "custom.lnn")
