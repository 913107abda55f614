"""lepton_nn.optim: each update checked against steps worked out by hand.

Every hand computation uses a 2-element parameter θ₀ = [1, −2], learning rate η = 0.1 and
two gradients set by hand (no model needed): g₁ = [0.5, −1], g₂ = [0.2, 0.4].
"""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import functional as F
from lepton_nn import keras, kernels, nn, optim

G1, G2 = np.array([0.5, -1.0]), np.array([0.2, 0.4])


def two_steps(opt_class, **hyper):
    theta = nn.Parameter(np.array([1.0, -2.0]))
    opt = opt_class([theta], lr=0.1, **hyper)
    after = []
    for g in (G1, G2):
        theta.grad = g.copy()
        opt.step()
        after.append(theta.data.copy())
    return after, opt


def test_sgd_momentum_two_steps_by_hand():
    # μ = 0.9
    # step 1: b = g₁ = [0.5, −1]                       θ₁ = θ₀ − 0.1·b = [0.95, −1.9]
    # step 2: b = 0.9·[0.5, −1] + [0.2, 0.4] = [0.65, −0.5]
    #                                                  θ₂ = [0.95 − 0.065, −1.9 + 0.05] = [0.885, −1.85]
    (theta1, theta2), opt = two_steps(optim.SGD, momentum=0.9)
    np.testing.assert_allclose(theta1, [0.95, -1.9], rtol=1e-12)
    np.testing.assert_allclose(theta2, [0.885, -1.85], rtol=1e-12)
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], [0.65, -0.5], rtol=1e-12)


def test_sgd_nesterov_two_steps_by_hand():
    # step 1: b = g₁; the step uses g₁ + 0.9·b = 1.9·g₁ = [0.95, −1.9]    θ₁ = [0.905, −1.81]
    # step 2: b = [0.65, −0.5] (as above); g₂ + 0.9·b = [0.2 + 0.585, 0.4 − 0.45] = [0.785, −0.05]
    #                                                  θ₂ = [0.905 − 0.0785, −1.81 + 0.005] = [0.8265, −1.805]
    (theta1, theta2), _ = two_steps(optim.SGD, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(theta1, [0.905, -1.81], rtol=1e-12)
    np.testing.assert_allclose(theta2, [0.8265, -1.805], rtol=1e-12)


def test_sgd_weight_decay_is_added_to_the_gradient():
    # λ = 0.1: g = g₁ + 0.1·θ₀ = [0.6, −1.2]            θ₁ = [1 − 0.06, −2 + 0.12] = [0.94, −1.88]
    (theta1, _), _ = two_steps(optim.SGD, weight_decay=0.1)
    np.testing.assert_allclose(theta1, [0.94, -1.88], rtol=1e-12)


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_adam_two_steps_by_hand(backend):
    # β₁ = 0.9, β₂ = 0.999, ε = 1e-8
    # step 1: m = 0.1·g₁ = [0.05, −0.1]          v = 0.001·g₁² = [0.00025, 0.001]
    #         m̂ = m/(1 − 0.9) = [0.5, −1]        v̂ = v/(1 − 0.999) = [0.25, 1]      √v̂ = [0.5, 1]
    #         m̂/(√v̂ + ε) = [1, −1] (to 2e-8)     θ₁ = [0.9, −1.9]
    # step 2: m = 0.9·[0.05, −0.1] + 0.1·[0.2, 0.4] = [0.065, −0.05]
    #         v = 0.999·[0.00025, 0.001] + 0.001·[0.04, 0.16] = [0.00028975, 0.001159]
    #         m̂ = m/(1 − 0.81) = m/0.19 = [0.3421053, −0.2631579]
    #         v̂ = v/(1 − 0.998001) = v/0.001999 = [0.1449475, 0.5797899]   √v̂ = [0.3807197, 0.7614394]
    #         m̂/√v̂ = [0.8985752, −0.3456058]      θ₂ = [0.9 − 0.0898575, −1.9 + 0.0345606]
    #                                                 = [0.8101425, −1.8654394]
    with ln.backend(backend):
        (theta1, theta2), opt = two_steps(optim.Adam)
    np.testing.assert_allclose(theta1, [0.9, -1.9], rtol=1e-7)
    np.testing.assert_allclose(theta2, [0.8101425, -1.8654394], rtol=1e-7)
    np.testing.assert_allclose(opt.state[0]["m"], [0.065, -0.05], rtol=1e-12)
    np.testing.assert_allclose(opt.state[0]["v"], [0.00028975, 0.001159], rtol=1e-12)
    assert opt.state[0]["step"] == 2


def test_adam_weight_decay_is_coupled_adamw_decoupled():
    # Adam, λ = 0.1: the decay joins the gradient, g = g₁ + 0.1·θ₀ = [0.6, −1.2], so m = 0.1·g = [0.06, −0.12];
    # the first step is still ±η (m̂/√v̂ = g/|g|): θ₁ = [0.9, −1.9].
    (theta1, _), _ = two_steps(optim.Adam, weight_decay=0.1)
    np.testing.assert_allclose(theta1, [0.9, -1.9], rtol=1e-7)
    theta = nn.Parameter(np.array([1.0, -2.0]))
    adam = optim.Adam([theta], lr=0.1, weight_decay=0.1)
    theta.grad = G1.copy()
    adam.step()
    np.testing.assert_allclose(adam.state[0]["m"], [0.06, -0.12], rtol=1e-12)
    # AdamW, λ = 0.1: m uses the raw g₁; θ₁ = θ₀ − η·(m̂/√v̂ + λ·θ₀) = [1 − 0.1·(1 + 0.1), −2 − 0.1·(−1 − 0.2)]
    #                                                          = [0.89, −1.88]
    (theta1, _), opt = two_steps(optim.AdamW, weight_decay=0.1)
    np.testing.assert_allclose(theta1, [0.89, -1.88], rtol=1e-7)
    np.testing.assert_allclose(opt.state[0]["m"], 0.9 * 0.1 * G1 + 0.1 * G2, rtol=1e-12)


def test_parameters_without_grad_are_skipped_and_zero_grad_clears():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.Adam([a, b, a], lr=0.1)   # duplicates are kept once
    assert len(opt.params) == 2
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.data, 1)
    assert opt.state[1] == {} and opt.state[0]["step"] == 1
    opt.zero_grad()
    assert a.grad is None


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_adam_parameters_at_different_steps_each_use_their_own(backend):
    """Adam updates all parameters in one adam_steps call per (step, dtype) group; a parameter
    that skipped a step (no grad) keeps its own bias correction, as one adam_step each would."""
    rng = np.random.default_rng(3)
    shapes = [(5,), (2, 3), (4,)]
    params = [nn.Parameter(rng.standard_normal(shape)) for shape in shapes]
    want = [p.data.copy() for p in params]
    states = [dict(m=np.zeros(shape), v=np.zeros(shape), step=0) for shape in shapes]
    with ln.backend(backend):
        opt = optim.Adam(params, lr=0.1)
        for step in range(3):
            for i, p in enumerate(params):
                if i == 1 and step == 0:  # no gradient for params[1] at the first step
                    p.grad = None
                    continue
                p.grad = rng.standard_normal(p.shape)
                states[i]["step"] += 1
                kernels.reference.adam_step(want[i], p.grad, states[i]["m"], states[i]["v"], 0.1, 0.9, 0.999,
                                            1e-8, states[i]["step"])
            opt.step()
    assert [s["step"] for s in opt.state] == [3, 2, 3]
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.data, w, rtol=1e-12)


def test_state_dict_resumes_exactly():
    (_, _), opt = two_steps(optim.Adam)
    theta = opt.params[0]
    copy = nn.Parameter(theta.data.copy())
    resumed = optim.Adam([copy], lr=0.5)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.lr == 0.1
    for p, o in ((theta, opt), (copy, resumed)):
        p.grad = np.array([0.3, -0.3])
        o.step()
    np.testing.assert_array_equal(theta.data, copy.data)
    bad = opt.state_dict()
    bad["state"][0]["m"] = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        resumed.load_state_dict(bad)


def test_bad_hyperparameters_are_refused():
    p = [nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, momentum=0, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([])


def test_a_pytorch_style_loop_learns():
    ln.seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.15


def _gradients_near_eps(rng, steps, shape):
    """Gradients of size ~ε = 1e-7, where the two ε placements differ most."""
    return [1e-7 * rng.standard_normal(shape) for _ in range(steps)]


def keras_adam_by_its_formula(theta, grads, lr, beta_1, beta_2, epsilon):
    """Keras's documented Adam (keras.optimizers.Adam): lr_t = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ),
    θ ← θ − lr_t·m/(√v + ε), written out here independently of lepton_nn's kernels."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        lr_t = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        theta = theta - lr_t * m / (np.sqrt(v) + epsilon)
    return theta


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_keras_adam_is_keras_epsilon_hat_and_optim_adam_is_pytorchs(backend):
    rng = np.random.default_rng(3)
    theta0, grads = rng.standard_normal((3, 5)), _gradients_near_eps(rng, 3, (3, 5))
    keras_param = ln.tensor(theta0, requires_grad=True)
    keras_opt = keras.optimizers.Adam(learning_rate=0.01).build([keras_param])
    torch_form = ln.tensor(theta0, requires_grad=True)
    torch_form_opt = optim.Adam([torch_form], lr=0.01, eps=1e-7)
    with kernels.backend(backend):
        for g in grads:
            for p, opt in ((keras_param, keras_opt), (torch_form, torch_form_opt)):
                p.grad = g.copy()
                opt.step()
    np.testing.assert_allclose(keras_param.data, keras_adam_by_its_formula(theta0, grads, 0.01, 0.9, 0.999, 1e-7),
                               rtol=1e-12, atol=1e-15)
    keras_moved, torch_moved = np.abs(keras_param.data - theta0), np.abs(torch_form.data - theta0)
    assert np.median(torch_moved / keras_moved) > 2  # near ε the two forms really differ


@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("make, make_torch", [
    (lambda p: optim.Adam(p, lr=0.01, eps=1e-7), lambda torch, p: torch.optim.Adam(p, lr=0.01, eps=1e-7)),
    (lambda p: optim.AdamW(p, lr=0.01, eps=1e-7, weight_decay=0.1),
     lambda torch, p: torch.optim.AdamW(p, lr=0.01, eps=1e-7, weight_decay=0.1)),
], ids=["Adam", "AdamW"])
def test_optim_adam_matches_torch_optim_adam_in_float64(backend, make, make_torch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    theta0, grads = rng.standard_normal((4, 3)), _gradients_near_eps(rng, 4, (4, 3))
    ours = ln.tensor(theta0, requires_grad=True)
    theirs = torch.tensor(theta0, requires_grad=True)
    ours_opt, theirs_opt = make([ours]), make_torch(torch, [theirs])
    with kernels.backend(backend):
        for g in grads:
            ours.grad, theirs.grad = g.copy(), torch.tensor(g)
            ours_opt.step()
            theirs_opt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
