"""ONNX export and import (lepton_nn/onnx.py, `lepton-nn export`): every supported Keras layer and nn
module written as ONNX, checked by onnx.checker and run in ONNX Runtime against lepton_nn; read back
by lepton_nn.onnx.load to the same outputs; a PyTorch CNN exported by torch.onnx.export imported,
equal to torch's outputs and gradients and passing the float64 gradient check; the trained MNIST
CNN scored by ONNX Runtime (and the README's script) to lepton_nn's accuracy."""
import contextlib
import importlib
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, keras, nn
from lepton_nn import onnx as lonnx
from lepton_nn.data import mnist

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
layers = keras.layers
RNG = np.random.default_rng(0)
ROOT = Path(__file__).resolve().parents[1]


def run_ort(path, *xs):
    session = ort.InferenceSession(str(path))
    outs = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})
    return outs[0] if len(outs) == 1 else outs


def randomise_batch_norms(model):
    """Moving statistics and gamma/beta away from 1 and 0, so that a wrong formula shows."""
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([RNG.uniform(0.5, 2, w.shape) if "var" in name or "gamma" in name else
                               RNG.normal(size=w.shape) for name, w in layer.named_weights()])


# --------------------------------------------------------------------------- the package and the extra
def test_lepton_nn_onnx_does_not_shadow_the_onnx_package():
    assert onnx.__name__ == "onnx" and hasattr(onnx, "checker")
    assert lonnx.__name__ == "lepton_nn.onnx" and lonnx._onnx() is onnx


def test_a_missing_onnx_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install -e ".[onnx]"')):
        lonnx.export(nn.Sequential(nn.ReLU()), tmp_path / "m.onnx", np.zeros((1, 2), np.float32))
    assert cli.main(["export", "--model", __file__, "--onnx", str(tmp_path / "m.onnx")]) == 2


# --------------------------------------------------------------------------- Keras models
def conv_stack():
    return keras.Sequential([
        keras.Input(shape=(9, 7, 2)),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        layers.AveragePooling2D(2, strides=1, padding="same"),     # asymmetric padding, not counted
        layers.Conv2D(3, (2, 3), padding="same", activation="softmax"),  # over channels, stored NCHW
        layers.MaxPooling2D(2, padding="same"),
        layers.BatchNormalization(),
        layers.Conv2D(5, 1, activation="leaky_relu", use_bias=False),
        layers.Flatten(),                                          # Keras's (H, W, C) order
        layers.Dense(6, activation="sigmoid"),
        layers.Dropout(0.5),
        layers.LeakyReLU(0.1),
        layers.Dense(4),
        layers.ReLU(),
        layers.Dense(3),
        layers.Softmax()])


def dense_sequence():
    """Dense on (N, T, F) (MatMul + Add), LayerNormalization, BatchNormalization on the last axis."""
    return keras.Sequential([keras.Input(shape=(5, 4)), layers.Dense(6, activation="relu"),
                             layers.LayerNormalization(), layers.BatchNormalization(), layers.Dense(3),
                             layers.Activation("tanh"), layers.Flatten(), layers.Dense(2, activation="softmax")])


def residual_graph():
    """Functional: Add and Concatenate of conv outputs, a nested Sequential, two inputs and outputs."""
    image, features = keras.Input(shape=(6, 6, 3), name="image"), keras.Input(shape=(4,), name="features")
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(image)
    b = layers.Conv2D(4, 1, name="b")(a)
    merged = layers.Add(name="add")([a, b, layers.Conv2D(4, 1, name="c")(image)])
    joined = layers.Concatenate(name="cat")([merged, layers.BatchNormalization(name="bn")(b)])
    pooled = layers.Flatten(name="flat")(layers.MaxPooling2D(3, name="pool")(joined))
    head = keras.Sequential([layers.Dense(5, activation="relu"), layers.Dense(3)], name="head")
    out = layers.Dense(2, activation="softmax", name="out")(
        layers.Concatenate(name="both")([head(pooled), layers.Dense(3, name="side")(features)]))
    return keras.Model([image, features], [out, layers.Activation("sigmoid", name="side_out")(b)])


KERAS_MODELS = {"conv_stack": (conv_stack, [(9, 7, 2)]), "dense_sequence": (dense_sequence, [(5, 4)]),
                "residual_graph": (residual_graph, [(6, 6, 3), (4,)])}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", list(KERAS_MODELS))
def test_keras_model_runs_in_onnx_runtime_as_in_lepton_nn(kind, batch, tmp_path):
    ln.seed(1)
    make, shapes = KERAS_MODELS[kind]
    model = make()
    randomise_batch_norms(model)
    xs = [RNG.normal(size=(batch,) + s).astype(np.float32) for s in shapes]
    path = tmp_path / f"{kind}.onnx"
    proto = lonnx.export(model, path, xs if len(xs) > 1 else xs[0])
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert [i.name for i in proto.graph.input] == (["image", "features"] if len(xs) > 1 else ["input"])
    expected = model.predict(xs if len(xs) > 1 else xs[0])
    got = run_ort(path, *xs)
    for e, g in zip(*(([a] if len(xs) == 1 else a) for a in (expected, got))):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=2e-6)
    # read back: an nn module taking the same (channels-last) inputs
    module = lonnx.load(path)
    back = module(*xs)
    for e, g in zip(*(([a] if len(xs) == 1 else a) for a in (expected, back))):
        np.testing.assert_allclose(g.data, e, rtol=1e-5, atol=2e-6)


def test_keras_export_keeps_nchw_between_conv_and_pool_and_transposes_twice(tmp_path):
    """The classic CNN: its fused conv → relu → pool is Conv, Relu, MaxPool; one Transpose in, one out."""
    from lepton_nn.train import build_model
    ln.seed(0)
    proto = lonnx.export(build_model(), tmp_path / "cnn.onnx")  # its input shape is known: no sample needed
    assert [n.op_type for n in proto.graph.node] == ["Transpose", "Conv", "Relu", "MaxPool", "Transpose", "Flatten",
                                                     "Gemm", "Relu", "Gemm", "Softmax"]
    assert proto.graph.output[0].name == "output"


def test_empty_batch_runs_in_onnx_runtime(tmp_path):
    ln.seed(2)
    model = conv_stack()
    lonnx.export(model, tmp_path / "m.onnx", np.zeros((2, 9, 7, 2), np.float32))
    assert run_ort(tmp_path / "m.onnx", np.zeros((0, 9, 7, 2), np.float32)).shape == (0, 3)
    assert lonnx.load(tmp_path / "m.onnx")(np.zeros((0, 9, 7, 2), np.float32)).shape == (0, 3)


# --------------------------------------------------------------------------- nn modules
def nn_stack():
    ln.seed(3)
    bn2, bn1 = nn.BatchNorm2d(4), nn.BatchNorm1d(6)
    for bn in (bn2, bn1):
        bn.running_mean[...] = RNG.normal(size=bn.num_features)
        bn.running_var[...] = RNG.uniform(0.5, 2, bn.num_features)
        bn.weight.data[...] = RNG.uniform(0.5, 2, bn.num_features)
        bn.bias.data[...] = RNG.normal(size=bn.num_features)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), bn2, nn.ReLU(), nn.MaxPool2d(2, stride=1, padding=1),
        nn.Conv2d(4, 4, 2, padding="same"),            # asymmetric: a Pad2d before the Conv2d on import
        nn.AvgPool2d(3, stride=1, padding=1),          # padding counted (PyTorch's default)
        nn.AvgPool2d(2, padding="same"),               # asymmetric and not counted
        nn.LeakyReLU(0.2), nn.Conv2d(4, 3, 1, bias=False), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(3 * 3 * 3, 6), bn1, nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8),
        nn.Linear(8, 8, bias=False), nn.GELU(approximate="tanh"), nn.Linear(8, 5), nn.Softmax(-1))


@pytest.mark.parametrize("batch", [1, 4])
def test_nn_modules_run_in_onnx_runtime_as_in_lepton_nn(batch, tmp_path):
    model = nn_stack()
    model.train()  # export runs it in eval mode and gives the modes back
    x = RNG.normal(size=(batch, 2, 9, 8)).astype(np.float32)
    proto = lonnx.export(model, tmp_path / "m.onnx", x)
    assert all(m.training for m in model.modules())
    model.eval()
    expected = model(x).data
    np.testing.assert_allclose(run_ort(tmp_path / "m.onnx", x), expected, rtol=1e-5, atol=2e-6)
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "LeakyRelu", "Gelu", "LayerNormalization",
            "Gemm", "Softmax", "Sigmoid", "Tanh", "Flatten"} <= {n.op_type for n in proto.graph.node}
    back = lonnx.load(tmp_path / "m.onnx")
    np.testing.assert_allclose(back(x).data, expected, rtol=1e-5, atol=2e-6)


def test_nn_fused_conv_relu_pool_exports_as_three_ops(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    proto = lonnx.export(model, tmp_path / "m.onnx", np.zeros((1, 1, 8, 8), np.float32))
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    assert [t.name for t in proto.graph.initializer] == ["0.weight", "0.bias", "4.weight", "4.bias"]  # state_dict's


# --------------------------------------------------------------------------- what is not supported
@pytest.mark.parametrize("make, shape, named", [
    (lambda: keras.Sequential([keras.Input(shape=(5,), dtype="int32"), layers.Embedding(10, 4)]), (2, 5),
     "Embedding layer 'embedding"),
    (lambda: keras.Sequential([keras.Input(shape=(5, 3)), layers.LSTM(4)]), (2, 5, 3), "LSTM layer 'lstm"),
    (lambda: keras.Sequential([keras.Input(shape=(5,)), layers.Dense(3, activation=lambda t: t * 2)]), (2, 5),
     "the custom activation '<lambda>' of layer 'dense"),
    (lambda: nn.Sequential(nn.Linear(5, 3), nn.LSTM(3, 2)), (2, 4, 5), "LSTM module '1'"),
])
def test_an_unsupported_layer_is_named(make, shape, named, tmp_path):
    with pytest.raises(lonnx.NotSupportedError, match=f"not supported yet: {named}"):
        lonnx.export(make(), tmp_path / "m.onnx", np.zeros(shape, np.float32))
    assert not (tmp_path / "m.onnx").exists()


def test_an_unsupported_op_is_named_with_its_node(tmp_path):
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["r"], name="first"), h.make_node("Cos", ["r"], ["y"], name="c")],
                         "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(lonnx.NotSupportedError, match=r"op Cos \(node 'c'\)"):
        lonnx.load(model)


# --------------------------------------------------------------------------- PyTorch's export
class _TorchCNN:
    """The small CNN in torch: Conv2d → ReLU → MaxPool2d → Flatten → Linear (+ BatchNorm2d, AvgPool2d)."""

    @staticmethod
    def make(torch):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 3, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
            torch.nn.Linear(3 * 2 * 2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
        with torch.no_grad():
            bn = model[1]
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        return model.eval()


@pytest.fixture
def torch_cnn_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    model = _TorchCNN.make(torch)
    path = tmp_path / "torch_cnn.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (torch.zeros(1, 1, 12, 12),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return torch, model, path


@pytest.mark.parametrize("batch", [0, 1, 5])
def test_a_torch_cnn_exported_by_torch_imports_to_its_outputs(torch_cnn_onnx, batch):
    torch, model, path = torch_cnn_onnx
    module = lonnx.load(path)
    assert isinstance(module, nn.Sequential)
    # torch's exporter folds an eval-mode BatchNorm2d into the conv before it (nn_stack tests that op)
    assert [type(m).__name__ for m in module] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "AvgPool2d",
                                                  "Flatten", "Linear", "Tanh", "Linear"]
    x = RNG.normal(size=(batch, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(module(x).data, expected, rtol=1e-5, atol=2e-6)


def test_a_torch_cnn_imported_in_float64_passes_gradcheck_and_matches_torch_gradients(torch_cnn_onnx):
    torch, model, path = torch_cnn_onnx
    module = lonnx.load(path, dtype=np.float64)
    x = RNG.normal(size=(2, 1, 12, 12))
    report = ln.gradcheck(lambda t: module(t), x)
    assert report.passed, str(report)
    # the parameters too: each swapped for the Tensor gradcheck differentiates
    slots = [(m, name) for m in module.modules() for name in list(m._parameters)]
    def with_parameters(*ws):
        originals = [getattr(m, name) for m, name in slots]
        try:
            for (m, name), w in zip(slots, ws):
                object.__setattr__(m, name, w)
            return module(ln.Tensor(x))
        finally:
            for (m, name), p in zip(slots, originals):
                object.__setattr__(m, name, p)
    report = ln.gradcheck(with_parameters, *[getattr(m, name).data for m, name in slots])
    assert report.passed, str(report)
    # and the same gradients as torch's in float64
    upstream = RNG.normal(size=(2, 3))
    xt = ln.Tensor(x, requires_grad=True)
    module.zero_grad()
    module(xt).backward(upstream)
    # torch's float64 twin of the imported module (the BatchNorm folded into the conv, as in the file)
    reference = torch.nn.Sequential(*(m for m in _TorchCNN.make(torch)
                                      if not isinstance(m, torch.nn.BatchNorm2d))).double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in module.state_dict().items()})
    xr = torch.tensor(x, requires_grad=True)
    reference(xr).backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(xt.grad, xr.grad.numpy(), rtol=1e-9, atol=1e-12)
    for (_, p), (_, q) in zip(module.named_parameters(), reference.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- MNIST, the CLI and the README
def readme_onnx_script():
    text = (ROOT / "README.md").read_text()
    start = text.index("import onnxruntime")
    start = text.rindex("```python", 0, start) + len("```python")
    return "\n".join(line[2:] for line in text[start:text.index("```", start)].splitlines())


def test_trained_cnn_exported_by_the_cli_scores_the_same_in_onnx_runtime(mnist_dir, tmp_path, monkeypatch, capsys):
    from lepton_nn import train
    (x_train, y_train), (x_test, y_test) = mnist.load_data(mnist_dir)
    ln.seed(0)
    model = train.build_model()
    model.fit(train.preprocess(x_train[:2000]), y_train[:2000], epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "m.lnn")
    assert cli.main(["export", "--model", str(tmp_path / "m.lnn"), "--onnx", str(tmp_path / "model.onnx")]) == 0
    assert "Conv, Relu, MaxPool" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(tmp_path / "model.onnx")), full_check=True)
    x = train.preprocess(x_test)
    expected = model.predict(x, batch_size=1000)
    got = run_ort(tmp_path / "model.onnx", x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)  # float32 rounding, summed in other orders
    accuracy = np.mean(expected.argmax(1) == y_test)
    assert np.mean(got.argmax(1) == y_test) == pytest.approx(accuracy, abs=2e-4)  # a near-tie may flip
    assert accuracy > 0.85
    # the README's ONNX Runtime script, as written, on that file
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(mnist.ENV_VAR, mnist_dir)
    exec(compile(readme_onnx_script(), "README.md (ONNX Runtime script)", "exec"), {})
    printed = capsys.readouterr().out
    assert re.fullmatch(r"test accuracy (\S+)\n", printed)
    assert float(printed.split()[-1]) == pytest.approx(accuracy, abs=2e-4)
    assert len([line for line in readme_onnx_script().splitlines() if line.strip()]) <= 10


def test_lepton_nn_onnx_imports_the_real_package_from_a_fresh_interpreter():
    """A module named onnx inside lepton_nn: `import onnx` still gives the real package."""
    import subprocess
    code = "import lepton_nn.onnx as l, onnx; assert l._onnx() is onnx and onnx.__file__ != l.__file__; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "ok", done.stderr
    assert importlib.import_module("lepton_nn.onnx") is lonnx


def test_an_imported_keras_export_is_written_again_to_the_same_graph(tmp_path):
    """load → export: the Permute and Reshape modules write themselves back as Transpose and Reshape."""
    ln.seed(4)
    model = conv_stack()
    x = RNG.normal(size=(3, 9, 7, 2)).astype(np.float32)
    lonnx.export(model, tmp_path / "m.onnx", x)
    lonnx.export(lonnx.load(tmp_path / "m.onnx"), tmp_path / "again.onnx", x)
    np.testing.assert_allclose(run_ort(tmp_path / "again.onnx", x), model.predict(x), rtol=1e-5, atol=2e-6)
