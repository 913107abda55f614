"""lepton_nn.nn: modules hold parameters and call functional; they add no math of their own."""
import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import nn
from lepton_nn.gradcheck import gradcheck


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 3)
        self.out = nn.Linear(3, 2, bias=False)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.out(self.drop(self.hidden(x).relu()))


def test_parameters_are_found_recursively_in_assignment_order():
    model = TwoLayer()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["hidden.weight", "hidden.bias", "out.weight"]
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in model.parameters())
    assert [type(m).__name__ for m in model.modules()] == ["TwoLayer", "Linear", "Linear", "Dropout"]


def test_reassigning_an_attribute_replaces_the_registration():
    model = TwoLayer()
    model.out = nn.Linear(3, 5)
    assert [n for n, _ in model.named_parameters()] == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    model.out = None
    assert [n for n, _ in model.named_parameters()] == ["hidden.weight", "hidden.bias"]


def test_module_without_super_init_gets_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_train_eval_reach_every_submodule_and_dropout_obeys():
    ln.seed(0)
    model = TwoLayer()
    x = np.ones((8, 4), dtype=np.float32)
    model.eval()
    assert not model.drop.training
    np.testing.assert_array_equal(model(x).data, model(x).data)  # eval: dropout is the identity
    model.train()
    assert model.drop.training and model.hidden.training


def test_zero_grad_and_freezing():
    model = TwoLayer()
    model(np.ones((2, 4), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.hidden.requires_grad_(False)
    model(np.ones((2, 4), dtype=np.float32)).sum().backward()
    assert model.hidden.weight.grad is None and model.out.weight.grad is not None


def test_state_dict_round_trip_and_errors():
    a, b = TwoLayer(), TwoLayer()
    b.load_state_dict(a.state_dict())
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    state = a.state_dict()
    state["hidden.weight"] = np.zeros((9, 9))
    with pytest.raises(ValueError, match=r"hidden.weight has shape \(3, 4\)"):
        b.load_state_dict(state)
    del state["hidden.weight"]
    with pytest.raises(ValueError, match="missing keys"):
        b.load_state_dict(state)
    assert b.load_state_dict(state, strict=False) == (["hidden.weight"], [])
    # a copy, not a view: changing the module later does not change the saved state
    saved = a.state_dict()
    a.hidden.weight.data += 1
    assert not np.array_equal(saved["hidden.weight"], a.hidden.weight.data)


def test_linear_and_conv2d_call_functional_with_their_parameters():
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 7)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    np.testing.assert_array_equal(conv(x).data, F.conv2d(x, conv.weight, conv.bias, 2, 1).data)
    lin = nn.Linear(5, 2)
    v = np.ones((3, 5), dtype=np.float32)
    np.testing.assert_array_equal(lin(v).data, F.linear(v, lin.weight, lin.bias).data)
    assert conv.weight.shape == (4, 3, 3, 3) and lin.weight.shape == (2, 5)


def test_default_init_is_pytorchs_and_seeded():
    ln.seed(3)
    a = nn.Conv2d(3, 8, 5)
    ln.seed(3)
    b = nn.Conv2d(3, 8, 5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    bound = 1 / math.sqrt(3 * 5 * 5)  # U(±1/√fan_in), fan_in = C_in·kH·kW
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.weight.data).max() > 0.9 * bound
    assert np.abs(a.bias.data).max() <= bound


def test_glorot_uniform_bounds_and_fans():
    assert nn.init.fans((32, 1, 3, 3)) == (9, 288)
    assert nn.init.fans((128, 5408)) == (5408, 128)
    ln.seed(0)
    w = nn.init.glorot_uniform(nn.Parameter(np.empty((200, 300), dtype=np.float32)))
    limit = math.sqrt(6 / (300 + 200))
    assert np.abs(w.data).max() <= limit and np.abs(w.data).max() > 0.99 * limit
    assert abs(w.data.mean()) < 0.01 * limit
    lin = nn.Linear(4, 3, weight_init=nn.init.glorot_uniform, bias_init=nn.init.zeros)
    np.testing.assert_array_equal(lin.bias.data, 0)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (28, 3, 1, (1, 1)), (28, 2, 2, (0, 0)), (27, 2, 2, (0, 1)), (28, 4, 1, (1, 2)), (5, 3, 2, (1, 1)),
    (6, 3, 2, (0, 1)),
])
def test_same_padding_follows_tensorflows_rule(size, kernel, stride, expected):
    assert nn.same_padding(size, kernel, stride) == expected
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_asymmetric_same_padding_pads_bottom_right_first():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 2, 6, 6))
    conv = nn.Conv2d(2, 3, 4, padding="same", dtype=np.float64)  # total pad 3: 1 before, 2 after
    expected = F.conv2d(np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2))), conv.weight, conv.bias)
    np.testing.assert_allclose(conv(x).data, expected.data, rtol=1e-12)
    assert conv(x).shape == (2, 3, 6, 6)
    pool = nn.MaxPool2d(2, padding="same")
    y = pool(rng.normal(size=(1, 1, 5, 5)) - 10)  # all negative: a zero pad would win, −∞ never does
    assert y.shape == (1, 1, 3, 3) and (y.data < 0).all()


def test_avg_pool_same_divides_by_the_real_cells_only():
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)   # 0 1 2 / 3 4 5 / 6 7 8
    y = nn.AvgPool2d(2, padding="same")(x).data[0, 0]        # pads one row and column at the end
    np.testing.assert_allclose(y, [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8 / 1]])
    report = gradcheck(lambda t: nn.AvgPool2d(2, padding="same")(t), np.random.default_rng(0).normal(size=(1, 2, 5, 5)))
    assert report.passed, str(report)


def test_sequential_and_flatten():
    ln.seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10),
                          nn.Softmax())
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    y = model(x)
    assert y.shape == (5, 10)
    np.testing.assert_allclose(y.data.sum(axis=1), 1, rtol=1e-6)
    assert len(model) == 6 and isinstance(model[3], nn.Flatten)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert "Conv2d(1, 4" in repr(model)
    with pytest.raises(TypeError):
        model.append("not a module")


@pytest.mark.parametrize("padding", [0, "same"])
def test_sequential_fuses_conv_relu_max_pool_into_the_same_function(padding):
    ln.seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=padding, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 4 * 3 if padding == 0 else 3 * 5 * 4, 2, dtype=np.float64))
    assert model[0].fused_with(list(model)[1:]) is not None
    assert model[0].fused_with([nn.ReLU(), nn.MaxPool2d(2, padding=1)]) is None  # padded pool: not fused
    x = np.random.default_rng(1).normal(size=(3, 2, 10, 9))
    outputs, grads = [], []
    for fuse in (True, False):
        model.fuse = fuse
        model.zero_grad()
        y = model(ln.tensor(x))
        y.backward(np.arange(y.size, dtype=np.float64).reshape(y.shape))
        outputs.append(y.data)
        grads.append([p.grad for p in model.parameters()])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12)
    for gf, gp in zip(*grads):
        np.testing.assert_allclose(gf, gp, rtol=1e-10, atol=1e-13)


def test_sequential_folds_relu_into_the_linear_before_it():
    """Linear → ReLU runs as one op (functional.linear_relu) in a fusing Sequential: the same
    outputs and gradients as the two modules, and no Relu op in the graph."""
    ln.seed(5)
    model = nn.Sequential(nn.Linear(7, 6, dtype=np.float64), nn.ReLU(), nn.Linear(6, 3, dtype=np.float64))
    assert model[0].fused_with(list(model)[1:])[1] == 1 and model[2].fused_with([]) is None
    x = np.random.default_rng(2).normal(size=(5, 7))
    outputs, grads, ops_seen = [], [], []
    for fuse in (True, False):
        model.fuse = fuse
        model.zero_grad()
        y = model(ln.tensor(x))
        ops_seen.append({t.grad_fn.op.__name__ for t in y._topological_order() if t.grad_fn is not None})
        y.backward(np.arange(y.size, dtype=np.float64).reshape(y.shape))
        outputs.append(y.data)
        grads.append([p.grad for p in model.parameters()])
    assert "Relu" not in ops_seen[0] and "Relu" in ops_seen[1]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12)
    for gf, gp in zip(*grads):
        np.testing.assert_allclose(gf, gp, rtol=1e-12, atol=1e-13)


def test_leaky_relu_module_is_the_functional_with_its_slope():
    from lepton_nn import nn
    x = ln.tensor(np.array([-2.0, -0.5, 0.0, 3.0]))
    np.testing.assert_array_equal(nn.LeakyReLU()(x).data, [-0.02, -0.005, 0.0, 3.0])
    np.testing.assert_array_equal(nn.LeakyReLU(0.5)(x).data, [-1.0, -0.25, 0.0, 3.0])
    assert "negative_slope=0.5" in repr(nn.LeakyReLU(0.5))
