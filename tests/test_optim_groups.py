"""lepton_nn.optim's parameter groups, learning-rate schedules and clip_grad_norm_, each against
torch.optim / torch.nn.utils in float64 (or the formula where PyTorch has no equivalent)."""
import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import kernels, nn, optim
from lepton_nn.optim import lr_scheduler

torch = pytest.importorskip("torch")


def pair_of_params(rng):
    """A matrix (decayed) and a bias (not), as ours and as torch's, with equal values."""
    w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
    ours = [nn.Parameter(w0.copy()), nn.Parameter(b0.copy())]
    theirs = [torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)]
    return ours, theirs


def step_both(ours, theirs, opts, rng, steps=5, skip=None):
    """Give both the same random gradients and step; `skip` (step, index) leaves one without a grad."""
    for step in range(steps):
        for i, (o, t) in enumerate(zip(ours, theirs)):
            g = rng.standard_normal(o.shape)
            o.grad, t.grad = (None, None) if skip == (step, i) else (g, torch.tensor(g))
        for opt in opts:
            opt.step()


# --------------------------------------------------------------------------- parameter groups
@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD"])
def test_groups_match_torch_in_float64(backend, name):
    rng = np.random.default_rng(0)
    ours, theirs = pair_of_params(rng)
    settings = {"AdamW": ({"weight_decay": 0.1}, {"weight_decay": 0.0, "lr": 0.05}),
                "Adam": ({"weight_decay": 0.01, "betas": (0.8, 0.99)}, {"eps": 1e-6}),
                "SGD": ({"momentum": 0.9, "nesterov": True}, {"momentum": 0.5, "weight_decay": 0.1})}[name]
    ours_opt = getattr(optim, name)([{"params": [ours[0]], **settings[0]}, {"params": [ours[1]], **settings[1]}],
                                    lr=0.01)
    theirs_opt = getattr(torch.optim, name)([{"params": [theirs[0]], **settings[0]},
                                             {"params": [theirs[1]], **settings[1]}], lr=0.01)
    with kernels.backend(backend):
        step_both(ours, theirs, [ours_opt, theirs_opt], rng, skip=(1, 1))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_param_groups_hold_params_and_every_hyperparameter():
    a, b, c = (nn.Parameter(np.ones(2)) for _ in range(3))
    opt = optim.AdamW([{"params": [a, b, a], "weight_decay": 0.1}, {"params": c, "lr": 0.5}], lr=1e-3)
    first, second = opt.param_groups
    assert first["params"] == [a, b] and second["params"] == [c]  # a repeat is kept once; one Tensor is a list
    assert first == {"params": [a, b], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1,
                     "epsilon_hat": False}
    assert (second["lr"], second["weight_decay"]) == (0.5, 0.01)  # AdamW's default decay
    assert opt.params == [a, b, c] and len(opt.state) == 3
    assert opt.eps == 1e-8  # the groups agree
    with pytest.raises(AttributeError, match="differ in lr"):
        opt.lr
    opt.lr = 0.2  # every group, and the default of groups added later
    d = nn.Parameter(np.ones(2))
    opt.add_param_group({"params": [d]})
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2, 0.2] and opt.lr == 0.2


def test_a_bad_group_is_refused_naming_the_optimizer():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="AdamW: lr must be a finite number"):
        optim.AdamW([{"params": [a]}, {"params": [b], "lr": math.nan}])
    with pytest.raises(ValueError, match="SGD: nesterov needs momentum"):
        optim.SGD([{"params": [a], "momentum": 0.9}, {"params": [b], "nesterov": True}], momentum=0.0)
    with pytest.raises(ValueError, match=r"AdamW: unknown key\(s\) \['weight_decy'\]"):
        optim.AdamW([{"params": [a], "weight_decy": 0.1}])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.AdamW([{"params": [a]}, {"params": [a, b]}])
    with pytest.raises(TypeError, match="a parameter group is a dict"):
        optim.AdamW([{"params": [a]}, b])
    with pytest.raises(ValueError, match="empty"):
        optim.AdamW([])


def test_every_way_of_setting_a_group_value_is_checked_and_the_weights_stay_intact():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    group = opt.param_groups[1]
    for assign in (lambda: group.__setitem__("lr", math.inf), lambda: group.update(betas=(0.9, 1.0)),
                   lambda: group.__ior__({"eps": -1.0}), lambda: setattr(opt, "weight_decay", math.nan)):
        with pytest.raises(ValueError, match="Adam: "):
            assign()
    bad = opt.state_dict()
    bad["param_groups"][1]["lr"] = math.nan
    with pytest.raises(ValueError, match="Adam: lr"):
        opt.load_state_dict(bad)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5] and opt.eps == 1e-8 and opt.weight_decay == 0.0
    a.grad = b.grad = np.ones(2)
    opt.step()
    assert np.isfinite(a.data).all() and np.isfinite(b.data).all()


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_adam_calls_its_kernel_once_per_group_step_and_dtype(backend, monkeypatch):
    w32, v64, u64, b64 = (nn.Parameter(np.ones(n, dtype)) for n, dtype in
                          ((3, np.float32), (2, np.float64), (5, np.float64), (4, np.float64)))
    calls = []
    with kernels.backend(backend) as active:
        kernel = active.adam_steps
        monkeypatch.setattr(active, "adam_steps", lambda params, *rest: (calls.append(len(params)),
                                                                         kernel(params, *rest)))
        opt = optim.AdamW([{"params": [w32, v64, u64], "weight_decay": 0.1}, {"params": [b64], "weight_decay": 0.0}])
        for p in (w32, v64, u64, b64):
            p.grad = np.ones(p.shape, p.dtype)
        opt.step()      # group 0: [w32] in float32, [v64, u64] in float64; group 1: [b64]
        assert sorted(calls) == [1, 1, 2]
        u64.grad = w32.grad = None
        calls.clear()
        opt.step()      # group 0: v64 alone; group 1: b64
        assert sorted(calls) == [1, 1]
        u64.grad = np.ones(5)
        calls.clear()
        opt.step()      # group 0: v64 at step 3 and u64 at step 2 (their own bias corrections); group 1
        assert sorted(calls) == [1, 1, 1]
    assert [s["step"] for s in opt.state] == [1, 3, 2, 3]


def test_state_dict_covers_groups_and_resumes_exactly():
    rng = np.random.default_rng(1)
    ours, _ = pair_of_params(rng)
    copies = [nn.Parameter(p.data.copy()) for p in ours]
    opt = optim.AdamW([{"params": [ours[0]], "weight_decay": 0.1}, {"params": [ours[1]], "weight_decay": 0.0}])
    for p in ours:
        p.grad = rng.standard_normal(p.shape)
    opt.step()
    saved = opt.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0], [1]]
    assert saved["hyper"] == opt.param_groups[0].hyper()
    resumed = optim.AdamW([{"params": [copies[0]]}, {"params": [copies[1]]}], lr=0.5)
    for p, c in zip(ours, copies):
        c.data[...] = p.data
    resumed.load_state_dict(saved)
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.1, 0.0] and resumed.lr == 1e-3
    for _ in range(3):
        for p, c in zip(ours, copies):
            p.grad = rng.standard_normal(p.shape)
            c.grad = p.grad.copy()
        opt.step()
        resumed.step()
    for p, c in zip(ours, copies):
        np.testing.assert_array_equal(p.data, c.data)
    one_group = optim.AdamW(copies)
    with pytest.raises(ValueError, match=r"groups of \[1, 1\] parameters, the optimizer has \[2\]"):
        one_group.load_state_dict(saved)
    # Without 'param_groups' (a one-group file, Keras's model files): 'hyper' applies to every group.
    one_group.load_state_dict({"hyper": {"lr": 0.25}, "state": [{}, {}]})
    resumed.load_state_dict({"hyper": {"lr": 0.25}, "state": saved["state"]})
    assert one_group.lr == 0.25 and resumed.lr == 0.25
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.1, 0.0]  # what 'hyper' leaves out stays


# --------------------------------------------------------------------------- schedules
def lrs_of(opt, sched, steps):
    """The lr of every group before each of `steps` optimizer steps (sched.step() after each)."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out)


def two_group_optimizers():
    ours = optim.SGD([{"params": [nn.Parameter(np.ones(1))]}, {"params": [nn.Parameter(np.ones(1))], "lr": 0.3}],
                     lr=1e-3)
    theirs = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                              {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.3}], lr=1e-3)
    return ours, theirs


@pytest.mark.parametrize("make", [
    lambda m, opt: m.LambdaLR(opt, lambda t: 0.95 ** t),
    lambda m, opt: m.LinearLR(opt, start_factor=0.1, end_factor=0.9, total_iters=7),
    lambda m, opt: m.LinearLR(opt),
    lambda m, opt: m.CosineAnnealingLR(opt, T_max=9, eta_min=1e-4),
], ids=["LambdaLR", "LinearLR", "LinearLR-defaults", "CosineAnnealingLR"])
def test_schedules_match_torch(make):
    ours, theirs = two_group_optimizers()
    ours_lrs = lrs_of(ours, make(lr_scheduler, ours), 25)  # past T_max and total_iters
    theirs_lrs = lrs_of(theirs, make(torch.optim.lr_scheduler, theirs), 25)
    np.testing.assert_allclose(ours_lrs, theirs_lrs, rtol=1e-12, atol=1e-18)
    assert [g["initial_lr"] for g in ours.param_groups] == [1e-3, 0.3]


def nanogpt_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's get_lr (train.py), written out independently of lepton_nn."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (learning_rate - min_lr)


def test_warmup_cosine_is_nanogpts_schedule_and_torchs_sequential_lr():
    ours, theirs = two_group_optimizers()
    sched = lr_scheduler.WarmupCosineLR(ours, warmup_iters=100, decay_iters=2000, min_lr=1e-4)
    ours_lrs = lrs_of(ours, sched, 2101)
    for group, base in enumerate((1e-3, 0.3)):
        want = [nanogpt_lr(t, base, 100, 2000, 1e-4) for t in range(2101)]
        np.testing.assert_allclose(ours_lrs[:, group], want, rtol=1e-12, atol=0)
    assert ours_lrs[0, 0] == pytest.approx(1e-3 / 101) and ours_lrs[100, 0] == 1e-3
    assert ours_lrs[2000, 0] == pytest.approx(1e-4) and (ours_lrs[2001:, 0] == 1e-4).all()
    warmup = torch.optim.lr_scheduler.LinearLR(theirs, start_factor=1 / 101, total_iters=100)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=1900, eta_min=1e-4)
    theirs_lrs = lrs_of(theirs, torch.optim.lr_scheduler.SequentialLR(theirs, [warmup, cosine], milestones=[100]),
                        2001)  # up to D; beyond it torch's cosine rises again, nanoGPT's stays at min_lr
    np.testing.assert_allclose(ours_lrs[:2001], theirs_lrs, rtol=1e-10, atol=0)


def test_a_schedule_resumes_exactly_and_its_lr_is_checked():
    ours, _ = two_group_optimizers()
    sched = lr_scheduler.CosineAnnealingLR(ours, T_max=10)
    for _ in range(4):
        sched.step()
    saved_opt, saved_sched = ours.state_dict(), sched.state_dict()
    again, _ = two_group_optimizers()
    again.load_state_dict(saved_opt)  # brings 'initial_lr' back into the groups
    resumed = lr_scheduler.CosineAnnealingLR(again, T_max=10)
    resumed.load_state_dict(saved_sched)
    for _ in range(3):
        sched.step()
        resumed.step()
    assert resumed.last_epoch == 7 and resumed.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match="SGD: lr must be a finite number"):
        lr_scheduler.LambdaLR(ours, lambda t: math.nan)
    with pytest.raises(ValueError, match="2 parameter groups"):
        lr_scheduler.LambdaLR(ours, [lambda t: 1.0])


# --------------------------------------------------------------------------- clip_grad_norm_
def grads_both(gs):
    ours = [nn.Parameter(np.zeros(g.shape)) for g in gs]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    for o, t, g in zip(ours, theirs, gs):
        o.grad, t.grad = g.copy(), torch.tensor(g)
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, math.inf, "inf"], ids=str)
@pytest.mark.parametrize("max_norm", [0.5, 100.0, math.inf], ids=str)
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(2)
    ours, theirs = grads_both([rng.standard_normal((3, 4)), rng.standard_normal(5), 10 * rng.standard_normal(2)])
    ours.append(nn.Parameter(np.ones(3)))  # no .grad: skipped
    total = optim.clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, ln.Tensor) and total.shape == () and total.dtype == np.float64
    np.testing.assert_allclose(total.item(), want.item(), rtol=1e-14)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-14, atol=0)
    assert ours[-1].grad is None


def test_clip_grad_norm_caps_the_length_and_keeps_the_direction():
    (p,), _ = grads_both([np.array([3.0, 4.0])])
    assert optim.clip_grad_norm_(p, 1.0).item() == 5.0  # one Tensor works too
    np.testing.assert_allclose(p.grad, np.array([0.6, 0.8]) * 5 / (5 + 1e-6), rtol=1e-15)
    assert optim.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0).item() == 0.0  # no gradients at all
    assert nn.utils.clip_grad_norm_ is optim.clip_grad_norm_


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_grad_norm_with_a_non_finite_norm_behaves_as_torch_or_raises(bad):
    g0 = np.array([1.0, bad, -2.0])
    ours, theirs = grads_both([g0, np.array([0.5, 0.25])])
    total = optim.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_array_equal(total.item(), want.item())  # NaN, or inf
    for o, t in zip(ours, theirs):  # inf: the factor is 0 (inf·0 = NaN); NaN: every gradient NaN
        np.testing.assert_array_equal(o.grad, t.grad.numpy())
    assert np.isnan(ours[0].grad[1])  # never hidden
    ours, _ = grads_both([g0, np.array([0.5, 0.25])])
    with pytest.raises(RuntimeError, match="non-finite|total norm of order 2.0 of the gradients is"):
        optim.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(ours[0].grad, g0)  # untouched


def test_clip_grad_norm_refuses_bad_arguments():
    (p,), _ = grads_both([np.ones(2)])
    for max_norm in (-1.0, math.nan, "1"):
        with pytest.raises(ValueError, match="clip_grad_norm_: max_norm"):
            optim.clip_grad_norm_(p, max_norm)
    for norm_type in (0, -2, "two", math.nan):
        with pytest.raises(ValueError, match="clip_grad_norm_: norm_type"):
            optim.clip_grad_norm_(p, 1.0, norm_type)
    np.testing.assert_array_equal(p.grad, np.ones(2))


# --------------------------------------------------------------------------- all together
@pytest.mark.parametrize("backend", kernels.available_backends())
def test_a_loop_with_groups_clipping_and_warmup_cosine_matches_torch(backend):
    """The nanoGPT recipe in small: AdamW with decay on matrices only, the gradient norm clipped
    to 1, warm-up then cosine; a linear model fitted by mean squared error, both frameworks."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 3))
    ours, theirs = pair_of_params(rng)
    ours_opt = optim.AdamW([{"params": [ours[0]], "weight_decay": 0.1}, {"params": [ours[1]], "weight_decay": 0.0}],
                           lr=0.05)
    theirs_opt = torch.optim.AdamW([{"params": [theirs[0]], "weight_decay": 0.1},
                                    {"params": [theirs[1]], "weight_decay": 0.0}], lr=0.05)
    ours_sched = lr_scheduler.WarmupCosineLR(ours_opt, warmup_iters=5, decay_iters=30, min_lr=1e-3)
    theirs_sched = torch.optim.lr_scheduler.LambdaLR(theirs_opt, lambda t: nanogpt_lr(t, 0.05, 5, 30, 1e-3) / 0.05)
    norms = []
    with kernels.backend(backend):
        for _ in range(30):
            ours_opt.zero_grad()
            ln.functional.mse_loss(ln.functional.linear(x, *ours), y).backward()
            theirs_opt.zero_grad()
            torch.nn.functional.mse_loss(torch.nn.functional.linear(torch.tensor(x), *theirs),
                                         torch.tensor(y)).backward()
            norms.append((optim.clip_grad_norm_(ours, 1.0).item(),
                          torch.nn.utils.clip_grad_norm_(theirs, 1.0).item()))
            ours_opt.step()
            theirs_opt.step()
            ours_sched.step()
            theirs_sched.step()
    np.testing.assert_allclose(*zip(*norms), rtol=1e-10)
    assert norms[0][0] > 1  # the clip was active
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-10, atol=1e-13)
