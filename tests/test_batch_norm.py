"""Batch normalisation (issue 14): functional.batch_norm, nn.BatchNorm1d/2d with their buffers,
and keras.layers.BatchNormalization.

Compared with PyTorch in float64 (forward, every gradient and the running statistics step by
step) on every available backend, on odd shapes, NaN and an empty batch; those tests skip without
torch. The rest runs anyway: the fused backward against the same function composed of Tensor ops,
Keras's formula and momentum convention worked by hand, its freezing rule inside fit, save and
load, Module buffers, and the argument errors. Gradient checks: lepton_nn/tour.py ("batch_norm").
"""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import kernels, keras, nn

import torch_compare  # tests/torch_compare.py

BACKENDS = kernels.available_backends()
layers = keras.layers


def upstream_for(seed):
    return lambda shape: np.random.default_rng(seed).standard_normal(shape)


def compare_with_torch(backend, ours_fn, torch_fn, inputs, seed=0):
    torch_compare.compare_with_torch(backend, ours_fn, torch_fn, inputs, upstream_for(seed), tolerance=1e-12)


def channel_stats(x, axes):
    """The batch's mean and biased variance over `axes`, by NumPy: what each test expects."""
    return x.mean(axis=axes), x.var(axis=axes)


# --------------------------------------------------------------------------- functional.batch_norm
TRAINING_CASES = [  # x shape, affine ("both", "weight", "none"), eps
    ((5, 3), "both", 1e-5),
    ((4, 3, 7), "weight", 1e-3),
    ((3, 2, 5, 7), "both", 1e-5),
    ((2, 1), "none", 0.1),         # two values per channel: the least training accepts
    ((1, 4, 3, 1), "both", 1e-5),  # one sample, three positions per channel
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", TRAINING_CASES, ids=str)
def test_training_mode_matches_pytorch_with_running_statistics(backend, case):
    torch = pytest.importorskip("torch")
    shape, affine, eps = case
    rng = np.random.default_rng(3)
    channels = shape[1]
    params = [rng.standard_normal(channels) for _ in range({"both": 2, "weight": 1, "none": 0}[affine])]
    ours_mean, ours_var = rng.standard_normal(channels), rng.uniform(0.5, 2, channels)
    theirs_mean, theirs_var = torch.tensor(ours_mean), torch.tensor(ours_var)
    for step in range(3):  # the running statistics follow every batch
        x = 3 + 2 * rng.standard_normal(shape)
        compare_with_torch(backend, lambda x, *p: F.batch_norm(x, ours_mean, ours_var, *p, training=True,
                                                               momentum=0.2, eps=eps),
                           lambda x, *p: torch.nn.functional.batch_norm(x, theirs_mean, theirs_var, *p, training=True,
                                                                        momentum=0.2, eps=eps),
                           [x] + params, seed=step)
        torch_compare.assert_same(ours_mean, theirs_mean, f"running_mean after step {step}", 1e-13)
        torch_compare.assert_same(ours_var, theirs_var, f"running_var after step {step}", 1e-13)


EVAL_CASES = [  # x shape, affine
    ((6, 3), "both"),
    ((2, 5, 4, 3), "weight"),
    ((3, 2, 9), "none"),
    ((0, 3, 2, 2), "both"),  # an empty batch: fine in eval mode
    ((1, 4), "both"),        # one value per channel: fine in eval mode
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", EVAL_CASES, ids=str)
def test_eval_mode_matches_pytorch_and_leaves_running_statistics_alone(backend, case):
    torch = pytest.importorskip("torch")
    shape, affine = case
    rng = np.random.default_rng(4)
    channels = shape[1]
    params = [rng.standard_normal(channels) for _ in range({"both": 2, "weight": 1, "none": 0}[affine])]
    mean, var = rng.standard_normal(channels), rng.uniform(0.1, 3, channels)
    kept = mean.copy(), var.copy()
    compare_with_torch(backend, lambda x, *p: F.batch_norm(x, mean, var, *p, eps=1e-4),
                       lambda x, *p: torch.nn.functional.batch_norm(x, torch.tensor(mean), torch.tensor(var), *p,
                                                                    eps=1e-4),
                       [rng.standard_normal(shape)] + params)
    np.testing.assert_array_equal(mean, kept[0])
    np.testing.assert_array_equal(var, kept[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_nan_spreads_as_in_pytorch(backend, training):
    """Training: a NaN makes its whole channel NaN (it enters μ and σ²) and that channel's running
    statistics; eval: only its own output. The other channels stay finite."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2, 2))
    x[1, 0, 1, 0] = np.nan
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    ours_stats = [np.zeros(3), np.ones(3)]
    theirs_stats = [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    compare_with_torch(backend, lambda x, w, b: F.batch_norm(x, *ours_stats, w, b, training=training),
                       lambda x, w, b: torch.nn.functional.batch_norm(x, *theirs_stats, w, b, training=training),
                       [x, weight, bias])
    y = F.batch_norm(x, np.zeros(3), np.ones(3), weight, bias, training=training).data
    assert np.isfinite(y[:, 1:]).all()
    assert np.isnan(y[:, 0]).all() if training else np.isnan(y[:, 0]).sum() == 1
    assert np.isnan(ours_stats[0][0]) == training and np.isfinite(ours_stats[0][1:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 5, 7), (2, 4, 3)], ids=str)
def test_fused_backward_equals_the_composition_of_tensor_ops(backend, shape):
    """The kernel's closed-form backward against autograd through mean, subtraction, square root."""
    rng = np.random.default_rng(6)
    x0, w0, b0 = 1 + 2 * rng.standard_normal(shape), rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    g = rng.standard_normal(shape)
    axes, bshape = (0,) + tuple(range(2, len(shape))), (1, shape[1]) + (1,) * (len(shape) - 2)
    fused = [ln.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    composed = [ln.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    with kernels.backend(backend):
        y = F.batch_norm(*fused[:1], None, None, *fused[1:], training=True, eps=1e-5)
        y.backward(g)
    x, w, b = composed
    centred = x - x.mean(axis=axes, keepdims=True)
    z = centred / ((centred * centred).mean(axis=axes, keepdims=True) + 1e-5).sqrt()
    z = z * w.reshape(*bshape) + b.reshape(*bshape)
    z.backward(g)
    np.testing.assert_allclose(y.data, z.data, rtol=1e-12, atol=1e-12)
    for name, a, c in zip(("x", "weight", "bias"), fused, composed):
        np.testing.assert_allclose(a.grad, c.grad, rtol=1e-10, atol=1e-12, err_msg=name)


def test_worked_example_by_hand_and_float32():
    """One channel of 4 values 1, 2, 3, 6: μ = 3, σ² = (4 + 1 + 0 + 9)/4 = 3.5; the running
    variance (momentum 0.5, from 1) takes the unbiased 14/3."""
    x = np.array([[1.0], [2.0], [3.0], [6.0]])
    mean, var = np.zeros(1), np.ones(1)
    y = F.batch_norm(x, mean, var, training=True, momentum=0.5, eps=1e-12)
    np.testing.assert_allclose(y.data[:, 0], (x[:, 0] - 3) / np.sqrt(3.5), rtol=1e-10)
    np.testing.assert_allclose(mean, [1.5])
    np.testing.assert_allclose(var, [0.5 + 0.5 * 14 / 3])
    x32, mean32, var32 = x.astype(np.float32), np.zeros(1, np.float32), np.ones(1, np.float32)
    y32 = F.batch_norm(x32, mean32, var32, np.ones(1, np.float32), np.zeros(1, np.float32), training=True)
    assert y32.dtype == np.float32 and mean32.dtype == np.float32 and var32.dtype == np.float32
    np.testing.assert_allclose(y32.data, F.batch_norm(x, None, None, training=True).data, rtol=1e-5)


def test_running_statistics_may_be_tensors_and_are_updated_in_place():
    mean, var = ln.tensor(np.zeros(2)), ln.tensor(np.ones(2))
    arrays = mean.data, var.data
    x = np.array([[0.0, 10.0], [2.0, 30.0]])
    F.batch_norm(x, mean, var, training=True, momentum=1.0)
    assert mean.data is arrays[0] and var.data is arrays[1]
    np.testing.assert_allclose(mean.data, [1.0, 20.0])
    np.testing.assert_allclose(var.data, [2.0, 200.0])  # unbiased: Σ(x − μ)²/(m − 1)


BAD_CALLS = [  # (call, message)
    (lambda: F.batch_norm(np.ones(4), np.zeros(4), np.ones(4)), r"batch_norm: input must be \(N, C\) or \(N, C, \*\)"),
    (lambda: F.batch_norm(np.ones((4, 3)), np.zeros(2), np.ones(3)),
     r"batch_norm: running_mean must be an array of shape \(3,\) and dtype float64 \(one per channel of input "
     r"\(4, 3\)\), got \(2,\) float64"),
    (lambda: F.batch_norm(np.ones((4, 3)), np.zeros(3), np.ones(3, np.float32)),
     r"running_var must be an array of shape \(3,\) and dtype float64 .*got \(3,\) float32"),
    (lambda: F.batch_norm(np.ones((4, 3)), [0, 0, 0], np.ones(3)), r"running_mean must be an array .*got list"),
    (lambda: F.batch_norm(np.ones((4, 3)), np.zeros(3), None), "running_mean and running_var must both be given"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None), r"required in eval mode \(training=False\)"),
    (lambda: F.batch_norm(np.ones((1, 3)), None, None, training=True),
     r"batch_norm: expected more than 1 value per channel when training, got input shape \(1, 3\)"),
    (lambda: F.batch_norm(np.ones((1, 3, 1, 1)), None, None, training=True), "more than 1 value per channel"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, np.ones(4), training=True),
     r"batch_norm: weight must have shape \(3,\) and dtype float64, got \(4,\) float64"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, None, np.ones(3, np.float32), training=True),
     r"batch_norm: bias must have shape \(3,\) and dtype float64"),
    (lambda: F.batch_norm(np.ones((4, 3), np.int64), None, None, training=True),
     "batch_norm: input must be float32 or float64, got dtype int64"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, training=1), "batch_norm: training must be True or False"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, training=True, momentum=1.5),
     r"batch_norm: momentum must be a number in \[0, 1\], got 1.5"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, training=True, momentum=-0.1), "momentum must be a finite"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, training=True, eps=0), "eps must be a finite number > 0"),
    (lambda: F.batch_norm(np.ones((4, 3)), None, None, training=True, eps=float("nan")), "eps must be a finite"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_arguments_are_refused_naming_the_function(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_refused_batch_leaves_the_running_statistics_untouched():
    mean, var = np.zeros(3), np.ones(3)
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.full((1, 3), 5.0), mean, var, training=True)
    with pytest.raises(ValueError, match="running_mean must be writable"):
        F.batch_norm(np.full((2, 3), 5.0), read_only, var, training=True)
    np.testing.assert_array_equal(mean, 0)
    np.testing.assert_array_equal(var, 1)
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 3)))
    assert int(bn.num_batches_tracked) == 0  # not counted (PyTorch counts it before refusing)


# --------------------------------------------------------------------------- nn.BatchNorm1d / 2d
MODULE_CASES = [  # module, input shape, momentum, affine, track_running_stats
    ("BatchNorm1d", (6, 4), 0.1, True, True),
    ("BatchNorm1d", (3, 5, 7), 0.3, False, True),
    ("BatchNorm2d", (4, 3, 5, 3), None, True, True),  # None: the plain average of every batch
    ("BatchNorm2d", (2, 2, 3, 3), 0.1, True, False),  # no buffers: batch statistics in eval too
]


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
def test_modules_match_pytorch_over_training_steps_and_in_eval(case):
    torch = pytest.importorskip("torch")
    name, shape, momentum, affine, track = case
    ours = getattr(nn, name)(shape[1], momentum=momentum, affine=affine, track_running_stats=track, dtype=np.float64)
    theirs = getattr(torch.nn, name)(shape[1], momentum=momentum, affine=affine,
                                     track_running_stats=track).double()
    rng = np.random.default_rng(7)
    if affine:  # not the initial ones and zeros, so a swapped weight and bias would show
        weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
        ours.load_state_dict({"weight": weight, "bias": bias}, strict=False)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(weight))
            theirs.bias.copy_(torch.tensor(bias))
    for step in range(4):
        x = 1 + 3 * rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        ours.zero_grad()
        xo = ln.tensor(x, requires_grad=True)
        y = ours(xo)
        y.backward(g)
        yt = theirs(xt)
        yt.backward(torch.tensor(g))
        torch_compare.assert_same(y.data, yt, f"forward, step {step}", 1e-12)
        torch_compare.assert_same(xo.grad, xt.grad, f"input gradient, step {step}", 1e-12)
        for (key, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            torch_compare.assert_same(p.grad, q.grad, f"{key} gradient, step {step}", 1e-12)
            q.grad = None
        for key, value in theirs.state_dict().items():
            torch_compare.assert_same(np.asarray(ours.state_dict()[key]), value, f"{key} after step {step}", 1e-13)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape)
    torch_compare.assert_same(ours(x).data, theirs(torch.tensor(x)), "eval forward", 1e-12)


def test_state_dict_has_pytorchs_keys_in_its_order_and_loads_both_ways():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4),
                         nn.BatchNorm1d(4))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4))
    assert list(ours.state_dict()) == list(theirs.state_dict())  # "1.running_mean", "1.num_batches_tracked", ...
    assert [k for k, _ in ours.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    theirs.train()
    for _ in range(3):  # buffers that are not the initial ones
        theirs(torch.randn(5, 2, 4, 4))
    result = ours.load_state_dict(theirs.state_dict())  # torch tensors, loaded as they are
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    assert int(ours[1].num_batches_tracked) == 3 and ours[1].num_batches_tracked.dtype == np.int64
    ours.eval()
    theirs.eval()
    x = np.random.default_rng(8).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(x).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    back = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4)).eval()
    back.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    np.testing.assert_allclose(back(torch.tensor(x)).detach().numpy(), ours(x).data, rtol=1e-5, atol=1e-5)


def test_buffers_are_saved_copied_loaded_in_place_and_never_parameters():
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    assert [k for k, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [k for k, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert len(list(bn.buffers())) == 3
    running_mean = bn.running_mean
    bn(np.random.default_rng(9).standard_normal((3, 2, 2, 2)))
    assert bn.running_mean is running_mean and running_mean.any()  # updated in place
    saved = bn.state_dict()
    bn.running_mean += 1
    assert not np.array_equal(saved["running_mean"], bn.running_mean)  # a copy, not a view
    state = dict(saved)
    del state["running_var"]
    with pytest.raises(ValueError, match=r"missing keys \['running_var'\]"):
        bn.load_state_dict(state)
    missing, unexpected = bn.load_state_dict({**state, "extra": np.zeros(1)}, strict=False)
    assert missing == ["running_var"] and unexpected == ["extra"]
    np.testing.assert_array_equal(bn.running_mean, saved["running_mean"])
    assert bn.running_mean is running_mean  # loaded in place
    with pytest.raises(ValueError, match=r"running_mean has shape \(2,\) in the module but \(3,\)"):
        bn.load_state_dict({**saved, "running_mean": np.zeros(3)})
    plain = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(plain.state_dict()) == [] and list(plain.named_buffers()) == []


def test_register_buffer_and_assigning_to_a_buffer():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(np.ones(2))
            self.register_buffer("total", np.zeros(2))
            self.register_buffer("later", None)

        def forward(self, x):
            self.total += x  # in place: the buffer itself
            return x * self.scale

    outer = nn.Sequential(Counter())
    outer(np.array([1.0, 2.0]))
    assert list(outer.state_dict()) == ["0.scale", "0.total"]  # a None buffer is left out
    np.testing.assert_array_equal(outer.state_dict()["0.total"], [1.0, 2.0])
    outer[0].later = np.arange(3.0)  # assigning to a registered name replaces the buffer
    assert [k for k, _ in outer.named_buffers()] == ["0.total", "0.later"]
    del outer[0].later
    assert [k for k, _ in outer.named_buffers()] == ["0.total"]
    with pytest.raises(TypeError, match="Counter: buffer 'total' must be a NumPy array or None, got list"):
        outer[0].total = [1, 2]
    with pytest.raises(ValueError, match="Counter: cannot register buffer 'scale': the attribute already exists"):
        outer[0].register_buffer("scale", np.zeros(2))
    with pytest.raises(ValueError, match="a buffer name must be a non-empty string without '.'"):
        outer[0].register_buffer("a.b", np.zeros(2))


MODULE_ERRORS = [
    (lambda: nn.BatchNorm2d(3)(np.ones((2, 3, 4), np.float32)), r"BatchNorm2d: expected input \(N, C, H, W\), got "
     r"shape \(2, 3, 4\)"),
    (lambda: nn.BatchNorm1d(3)(np.ones((2, 3, 4, 4), np.float32)), r"expected input \(N, C\) or \(N, C, L\)"),
    (lambda: nn.BatchNorm2d(3)(np.ones((2, 4, 5, 5), np.float32)),
     r"BatchNorm2d: expected 3 channels on axis 1 of the input, got shape \(2, 4, 5, 5\)"),
    (lambda: nn.BatchNorm1d(3)(np.ones((2, 3))), "BatchNorm1d: input dtype float64 differs from the module's dtype "
     "float32"),
    (lambda: nn.BatchNorm1d(0), "BatchNorm1d: num_features must be a positive int, got 0"),
    (lambda: nn.BatchNorm1d(3, eps=0), "BatchNorm1d: eps must be a finite number > 0, got 0"),
    (lambda: nn.BatchNorm2d(3, momentum=2), r"BatchNorm2d: momentum must be a number in \[0, 1\] or None, got 2"),
    (lambda: nn.BatchNorm2d(3, affine="yes"), "BatchNorm2d: affine must be True or False"),
    (lambda: nn.BatchNorm2d(3, dtype=np.float16), "BatchNorm2d: dtype must be float32 or float64"),
]


@pytest.mark.parametrize("call, message", MODULE_ERRORS)
def test_module_errors_name_the_module(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_train_and_eval_switch_the_mode_of_every_batch_norm_in_a_model():
    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64))
    x = np.random.default_rng(10).standard_normal((5, 3))
    model(x)  # training: the batch's statistics, and the buffers move
    seen = model[1].running_mean.copy()
    model.eval()
    y = model(x).data
    np.testing.assert_array_equal(model[1].running_mean, seen)  # eval: the buffers stay
    h = model[0](x).data
    np.testing.assert_allclose(y, (h - seen) / np.sqrt(model[1].running_var + 1e-5), rtol=1e-12)


# --------------------------------------------------------------------------- keras.layers.BatchNormalization
def test_keras_layer_follows_keras_formula_and_momentum_convention():
    """Channels last; moving ← moving·0.9 + batch·0.1 with the biased variance, step by step."""
    rng = np.random.default_rng(11)
    layer = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype="float64")
    moving_mean, moving_var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = 2 + 3 * rng.standard_normal((4, 5, 2, 3))
        y = layer(x, training=True)
        mean, var = channel_stats(x, (0, 1, 2))
        np.testing.assert_allclose(y.data, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-12, atol=1e-12)
        moving_mean, moving_var = moving_mean * 0.9 + mean * 0.1, moving_var * 0.9 + var * 0.1
        gamma, beta, got_mean, got_var = layer.get_weights()
        np.testing.assert_allclose(got_mean, moving_mean, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(got_var, moving_var, rtol=1e-13)
    layer.set_weights([np.full(3, 2.0), np.full(3, -1.0), moving_mean, moving_var])
    x = rng.standard_normal((2, 5, 2, 3))
    np.testing.assert_allclose(layer(x).data, 2 * (x - moving_mean) / np.sqrt(moving_var + 1e-3) - 1, rtol=1e-12)
    np.testing.assert_array_equal(layer.get_weights()[2], moving_mean)  # inference: nothing moves


def test_keras_layer_on_another_axis_and_with_neither_scale_nor_centre():
    rng = np.random.default_rng(12)
    layer = layers.BatchNormalization(axis=1, center=False, scale=False, dtype="float64")
    x = rng.standard_normal((6, 4, 5))  # (batch, channels, steps), channels on axis 1
    assert [name for name, _ in layer.weight_shapes(x.shape)] == ["moving_mean", "moving_variance"]
    mean, var = channel_stats(x, (0, 2))
    np.testing.assert_allclose(layer(x, training=True).data, (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-3),
                               rtol=1e-12, atol=1e-12)
    assert layer.count_params() == 8 and layer.trainable_weights == []


def test_keras_layer_equals_pytorch_with_converted_momentum():
    """Keras momentum k is PyTorch's 1 − k; the outputs and gradients agree, and so do the moving
    means; the moving variances differ only in PyTorch's m/(m − 1)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    layer = layers.BatchNormalization(momentum=0.8, epsilon=1e-5, dtype="float64")
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-5).double()
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    layer(np.zeros((1, 6, 5, 3)))  # built (NHWC) by a first call, in inference mode: nothing moves
    layer.set_weights([gamma, beta, np.zeros(3), np.ones(3)])
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    m = 4 * 6 * 5
    for step in range(3):
        x = 1 + 2 * rng.standard_normal((4, 6, 5, 3))
        g = rng.standard_normal(x.shape)
        before = layer.get_weights()[3], theirs.running_var.clone().numpy()
        xo = ln.tensor(x, requires_grad=True)
        layer(xo, training=True).backward(g)
        xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        theirs(xt).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
        torch_compare.assert_same(xo.grad, xt.grad.permute(0, 2, 3, 1), f"input gradient, step {step}", 1e-12)
        for p, q, name in zip(layer.trainable_weights, (theirs.weight, theirs.bias), ("gamma", "beta")):
            torch_compare.assert_same(p.grad, q.grad, f"{name} gradient, step {step}", 1e-12)
            p.grad, q.grad = None, None
        torch_compare.assert_same(layer.get_weights()[2], theirs.running_mean, f"moving mean, step {step}", 1e-13)
        ours_step = layer.get_weights()[3] - 0.8 * before[0]      # 0.2·σ²
        theirs_step = theirs.running_var.numpy() - 0.8 * before[1]  # 0.2·σ²·m/(m − 1)
        np.testing.assert_allclose(ours_step, theirs_step * (m - 1) / m, rtol=1e-12)
    theirs.eval()
    theirs.running_var.copy_(torch.tensor(layer.get_weights()[3]))
    x = rng.standard_normal((2, 6, 5, 3))
    torch_compare.assert_same(layer(x).data, theirs(torch.tensor(x.transpose(0, 3, 1, 2))).permute(0, 2, 3, 1),
                              "inference", 1e-12)


def test_moving_statistics_are_never_trainable_weights():
    layer = layers.BatchNormalization()
    layer(np.zeros((1, 4, 4, 3), np.float32))
    names = [name for name, _ in layer.named_weights()]
    assert names == ["gamma", "beta", "moving_mean", "moving_variance"]
    by_name = dict(layer.named_weights())
    moving = [by_name["moving_mean"], by_name["moving_variance"]]
    for trainable in (True, False, True):
        layer.trainable = trainable
        assert not any(p is w for p in layer.trainable_weights for w in moving)
        assert all(any(p is w for p in layer.non_trainable_weights) for w in moving)
        assert not any(w.requires_grad for w in moving)
        assert by_name["gamma"].requires_grad == trainable
    assert len(layer.weights) == 4 and layer.count_params() == 12


def _bn_model(seed):
    ln.seed(seed)
    model = keras.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)),
                              layers.BatchNormalization(), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_fit_moves_the_statistics_and_a_batch_of_one_is_taken():
    """Features (batch, 4): a last batch of one sample has one value per channel, which PyTorch
    refuses to train on; Keras trains on it (σ² = 0, so y = beta), and so does this layer."""
    ln.seed(0)
    model = keras.Sequential([layers.Dense(4, input_shape=(5,)), layers.BatchNormalization(),
                              layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((33, 5)).astype(np.float32), rng.integers(0, 3, 33)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # batches of 16, 16 and 1
    assert np.isfinite(history.history["loss"]).all()
    bn = model.layers[1]
    gamma, beta, mean, var = bn.get_weights()
    assert mean.any() and not np.allclose(var, 1) and np.isfinite(var).all()
    one = bn(model.layers[0](x[:1]), training=True).data
    np.testing.assert_allclose(one, beta[None], atol=1e-6)


def test_frozen_layer_runs_in_inference_mode_inside_fit():
    """Keras 3: trainable = False means inference mode even in fit; its four weights stay
    bit-identical while the other layers train."""
    model = _bn_model(1)
    x, y = _data(40)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # moving statistics away from 0 and 1
    bn = model.layers[1]
    bn.trainable = False
    frozen, others = bn.get_weights(), model.layers[3].get_weights()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for before, after in zip(frozen, bn.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(others[0], model.layers[3].get_weights()[0])
    h = model.layers[0](x[:8])
    np.testing.assert_array_equal(bn(h, training=True).data, bn(h, training=False).data)


def test_save_and_load_model_keep_the_moving_statistics(tmp_path):
    model = _bn_model(2)
    x, y = _data(48, seed=1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "bn.lnn"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for a, b in zip(model.layers[1].get_weights(), loaded.layers[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert len(loaded.non_trainable_weights) == 2 and len(loaded.trainable_weights) == len(model.trainable_weights)


def test_an_empty_batch_changes_nothing():
    layer = layers.BatchNormalization(dtype="float64")
    layer(np.ones((2, 3)))
    before = layer.get_weights()
    assert layer(np.zeros((0, 3)), training=True).shape == (0, 3)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    bn = nn.BatchNorm1d(3, dtype=np.float64).eval()
    assert bn(np.zeros((0, 3))).shape == (0, 3)


KERAS_ERRORS = [
    (lambda: layers.BatchNormalization(axis="last"), "axis must be an int, got 'last'"),
    (lambda: layers.BatchNormalization(momentum=1.5), r"momentum must be a number in \[0, 1\], got 1.5"),
    (lambda: layers.BatchNormalization(epsilon=0, name="bn"),
     "BatchNormalization 'bn': epsilon must be a finite number > 0, got 0"),
    (lambda: layers.BatchNormalization(center=1), "center must be True or False, got 1"),
    (lambda: layers.BatchNormalization(gamma_initializer="nope"), "gamma_initializer must be one of"),
    (lambda: layers.BatchNormalization(axis=0, name="bn")(np.zeros((2, 3))),
     r"BatchNormalization 'bn': axis 0 must name an axis of the input other than the batch axis 0"),
    (lambda: layers.BatchNormalization(axis=3)(np.zeros((2, 3))), "axis 3 must name an axis"),
]


@pytest.mark.parametrize("call, message", KERAS_ERRORS)
def test_keras_errors_name_the_layer(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_keras_layer_refuses_an_input_it_was_not_built_for():
    layer = layers.BatchNormalization(name="bn")
    layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNormalization 'bn': built for 3 channels on axis 1 in float32, got "
                                         r"input shape \(2, 4\) float32"):
        layer(np.zeros((2, 4), np.float32))


def test_zero_channels_are_refused_before_any_work():
    x = np.zeros((4, 0, 3))
    with pytest.raises(ValueError, match="at least one channel"):
        F.batch_norm(x, np.zeros(0), np.ones(0), training=True)
