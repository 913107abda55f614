"""The engine's guarantees, each tested as a class: one dtype rule on every backend, no invalid
number accepted silently (optimizers, gradcheck), NaN never hidden (detect_anomaly), a bad
LEPTON_NN_BACKEND named once while an explicit choice still works, PyTorch's aliasing rules,
and gradients of the wrong shape refused by the engine. The backend edge cases (NaN, empty
batches) are in tests/test_edge_cases.py (against PyTorch) and tests/test_kernels.py."""
import math
import subprocess
import sys

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import keras, kernels, ops, optim, tour
from lepton_nn.tensor import apply

BACKENDS = kernels.available_backends()


# --------------------------------------------------------------------------- one dtype rule
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.longdouble], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", tour.CASES, ids=lambda c: f"{c.op}[{c.label}]")
def test_every_op_refuses_other_float_dtypes_on_every_backend(case, backend, dtype):
    """float16 once ran on numpy, raised NotImplementedError on numba and TypeError on c."""
    inputs = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
              for a in case.make_inputs(np.random.default_rng(0))]
    with kernels.backend(backend), pytest.raises(ValueError, match=f"must be float32 or float64, got dtype "
                                                                   f"{np.dtype(dtype).name}"):
        case.fn(*[ln.tensor(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in inputs])


# --------------------------------------------------------------------------- invalid numbers
BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1.0, "0.1", None, True]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("make, name", [
    (lambda p, v: optim.SGD(p, lr=v), "lr"), (lambda p, v: optim.SGD(p, momentum=v), "momentum"),
    (lambda p, v: optim.SGD(p, weight_decay=v), "weight_decay"), (lambda p, v: optim.Adam(p, lr=v), "lr"),
    (lambda p, v: optim.Adam(p, eps=v), "eps"), (lambda p, v: optim.Adam(p, betas=(v, 0.9)), r"betas\[0\]"),
    (lambda p, v: optim.AdamW(p, weight_decay=v), "weight_decay"),
    (lambda p, v: keras.optimizers.Adam(v), "learning_rate"), (lambda p, v: keras.optimizers.Adam(epsilon=v), "eps"),
    (lambda p, v: keras.optimizers.SGD(momentum=v), "momentum"),
    (lambda p, v: keras.optimizers.AdamW(weight_decay=v), "weight_decay"),
])
def test_optimizers_refuse_invalid_hyperparameters(make, name, bad):
    params = [ln.tensor(np.ones(3), requires_grad=True)]
    with pytest.raises(ValueError, match=f"{name} must be a (finite )?number"):
        make(params, bad)


def test_a_hyperparameter_set_later_is_checked_too_and_the_weights_stay_intact():
    w = ln.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    for assign in (lambda: setattr(opt, "lr", math.nan), lambda: setattr(opt, "betas", (0.9, 1.0)),
                   lambda: opt.load_state_dict({"hyper": {"eps": math.inf}, "state": [{}]})):
        with pytest.raises(ValueError, match="Adam: "):
            assign()
    keras_adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="learning_rate"):
        keras_adam.learning_rate = math.nan
    w.grad = np.ones(3)
    opt.step()
    assert np.isfinite(w.data).all() and opt.lr == 0.1 and opt.eps == 1e-8


def test_gradcheck_fails_on_nan_and_refuses_bad_settings():
    report = ln.gradcheck(lambda t: t.log(), -np.ones(3))  # NaN everywhere: once reported PASSED
    assert not report.passed and report.inputs[0].non_finite == 3 + 12  # 3 elements, 12 random directions
    assert "15 NaN/inf slope(s)" in str(report) and "FAIL" in str(report)

    class NanBackward(ops.Exp):
        @staticmethod
        def backward(ctx, grad):
            return (grad * np.nan,)
    assert not ln.gradcheck(lambda t: apply(NanBackward, t), np.ones(2)).passed
    for setting in ({"eps": math.nan}, {"eps": 0}, {"eps": -1e-6}, {"atol": math.inf}, {"rtol": -1},
                    {"directions": 0}):
        with pytest.raises(ValueError, match=f"gradcheck: {next(iter(setting))} must be"):
            ln.gradcheck(lambda t: t.exp(), np.ones(2), **setting)


# --------------------------------------------------------------------------- detect_anomaly
def test_detect_anomaly_names_the_first_op_and_the_callers_line_forward():
    x = ln.tensor(np.array([1.0, -1.0]), requires_grad=True)
    with ln.detect_anomaly(), pytest.raises(FloatingPointError) as err:
        y = x * 2.0
        y.log()  # the line named below
    message = str(err.value)
    assert "Log forward" in message and "NaN (1 of 2 elements, the first at (1,))" in message
    assert "its inputs were finite" in message and f"{__file__}:" in message and "test_detect_anomaly" in message
    assert np.isnan((x * 2.0).log().data[1])  # without the mode: NaN, as NumPy and PyTorch, no error


def test_detect_anomaly_names_the_op_whose_backward_made_inf():
    z = ln.tensor(np.array([0.0, 1.0]), requires_grad=True)
    with ln.detect_anomaly():
        loss = z.sqrt().sum()  # finite forward; the gradient 1/(2√0) is inf
        with pytest.raises(FloatingPointError, match=r"Sqrt backward: the gradient for input 0 holds inf .*"
                                                     r"test_reliability.py:\d+"):
            loss.backward()


def test_detect_anomaly_says_when_the_nan_came_in_from_outside():
    data = ln.tensor(np.array([np.nan, 1.0]))
    with ln.detect_anomaly(), pytest.raises(FloatingPointError, match=r"its input\(s\) \[0\] already held NaN"):
        data.relu()


# --------------------------------------------------------------------------- settings
def run_python(code, **env):
    import os
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_a_bad_backend_variable_is_named_and_an_explicit_choice_still_works():
    code = ("import numpy as np, lepton_nn as ln\n"
            "try:\n    ln.tensor(np.ones(2)).relu()\nexcept ValueError as e:\n    print('ERROR', e)\n"
            "ln.set_backend('numpy'); print('OK', ln.tensor(np.ones(2)).relu().data.sum())\n")
    status, out = run_python(code, LEPTON_NN_BACKEND="bogus")
    assert status == 0, out
    assert "ERROR LEPTON_NN_BACKEND='bogus': unknown backend 'bogus'; valid backends are c, numba, numpy" in out
    assert "OK 2.0" in out
    status, out = run_python("from lepton_nn import cli; raise SystemExit(cli.main(['gradcheck', '--op', 'relu', "
                             "'--backend', 'numpy']))", LEPTON_NN_BACKEND="bogus")
    assert status == 0 and "all passed" in out, out


def test_the_backend_block_restores_the_default_choice():
    previous = kernels._active
    kernels._active = None
    try:
        with ln.backend("numpy"):
            assert kernels.active_name() == "numpy"
        assert kernels._active is None  # the default is chosen again at next use
    finally:
        kernels._active = previous


# --------------------------------------------------------------------------- aliasing
def test_tensor_copies_and_from_numpy_shares_as_in_pytorch():
    data = np.ones(3)
    w = ln.tensor(data, requires_grad=True)
    w.grad = np.ones(3)
    optim.SGD([w], lr=0.5).step()
    assert data.tolist() == [1.0, 1.0, 1.0] and w.data.tolist() == [0.5, 0.5, 0.5]
    assert not np.shares_memory(ln.Tensor(data).data, data)

    shared = ln.from_numpy(data)
    shared.requires_grad = True
    shared.grad = np.ones(3)
    optim.SGD([shared], lr=0.5).step()
    assert data.tolist() == [0.5, 0.5, 0.5]  # documented: from_numpy shares, as torch.from_numpy
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray, got list"):
        ln.from_numpy([1.0])


# --------------------------------------------------------------------------- the engine's checks
@pytest.mark.parametrize("wrong, got", [
    (lambda grad: grad.sum(axis=0), r"float64 array of shape \(4,\)"),  # a bare array: broadcast silently, once
    (lambda grad: grad.astype(np.float32), r"float32 array of shape \(3, 4\)"),
    (lambda grad: 1.0, "a float"),
])
def test_a_gradient_of_the_wrong_shape_or_dtype_is_refused_naming_the_op_and_input(wrong, got):
    class WrongGradient(ln.Function):
        forward = staticmethod(lambda ctx, a: a * 2)
        backward = staticmethod(lambda ctx, grad: (wrong(grad),))
    x = ln.tensor(np.ones((3, 4)), requires_grad=True)
    with pytest.raises(ValueError, match=f"WrongGradient.backward returned {got} as the gradient of input 0, "
                                         r"expected a float64 array of shape \(3, 4\) \(the input's\)"):
        WrongGradient.apply(x).sum().backward()


@pytest.mark.parametrize("make, message", [
    (lambda: ln.nn.Linear(0, 3), "Linear: in_features must be a positive int, got 0"),
    (lambda: ln.nn.Linear(4, 2.5), "Linear: out_features must be a positive int, got 2.5"),
    (lambda: ln.nn.Conv2d(1, -1, 3), "Conv2d: out_channels must be a positive int, got -1"),
    (lambda: ln.nn.Conv2d(1, 2, 0), "Conv2d: kernel_size must be a positive int or a pair of them, got 0"),
    (lambda: ln.nn.MaxPool2d(2, stride=1.5), "MaxPool2d: stride must be a positive int or a pair of them, got 1.5"),
    (lambda: ln.nn.LeakyReLU(math.nan), "LeakyReLU: negative_slope must be a finite number, got nan"),
    (lambda: ln.nn.Dropout(1.0), r"Dropout: p must be a number in \[0, 1\), got 1.0"),
    (lambda: ln.functional.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), stride=1.5),
     "conv2d: stride must be an int or a pair of them, got 1.5"),
    (lambda: ln.functional.leaky_relu(np.ones(2), math.inf), "leaky_relu: negative_slope must be a finite number"),
])
def test_pytorch_style_layers_check_their_arguments_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()
