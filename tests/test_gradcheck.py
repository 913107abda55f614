"""Every op's gradient on every available backend, and the checker itself: it must catch a wrong
gradient, tell a kink from a failure, and the tour command must report honestly."""
import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, kernels, ops, tour
from lepton_nn.tensor import apply


@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("case", tour.CASES, ids=lambda c: f"{c.op}[{c.label}]")
def test_every_op_passes_gradcheck(case, backend):
    with kernels.backend(backend):
        report = ln.gradcheck(case.fn, *case.make_inputs(np.random.default_rng(0)))
    assert report.passed, str(report)
    if case.smooth:
        assert all(r.max_rel_error <= 1e-6 for r in report.inputs), str(report)
        assert all(r.kinks == 0 for r in report.inputs), str(report)


class ExpWithWrongBackward(ops.Exp):
    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return (grad * y * 1.01,)  # 1 % off: beyond the default rtol of 0.1 %


def test_a_wrong_gradient_is_caught_and_located():
    x = np.array([[0.1, -0.4], [0.7, 0.2]])
    report = ln.gradcheck(lambda t: apply(ExpWithWrongBackward, t), x)
    assert not report.passed
    assert report.inputs[0].max_rel_error > 1e-4 and report.inputs[0].kinks == 0
    assert "FAIL" in str(report)
    with pytest.raises(ln.GradcheckError, match="FAILED"):
        ln.gradcheck(lambda t: apply(ExpWithWrongBackward, t), x, raise_on_fail=True)


def test_a_wrong_gradient_is_caught_in_random_direction_mode():
    x = np.random.default_rng(0).standard_normal(3000)
    report = ln.gradcheck(lambda t: apply(ExpWithWrongBackward, t), x, max_full_size=100)
    assert report.inputs[0].method == "12 directions"
    assert not report.passed
    good = ln.gradcheck(lambda t: t.exp(), x, max_full_size=100)
    assert good.passed and good.inputs[0].max_rel_error < 1e-6


class ReluWithFiveAtZero(ln.Function):
    """ReLU whose backward returns 5 at x = 0: not between the one-sided slopes 0 and 1."""
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return (grad * np.where(a > 0, 1.0, np.where(a == 0, 5.0, 0.0)),)


def test_a_kink_is_checked_not_skipped():
    x = np.array([-0.5, 0.0, 0.5])
    good = ln.gradcheck(ln.functional.relu, x)
    assert good.passed and good.inputs[0].kinks >= 1 and "kink slope(s) checked" in str(good)
    bad = ln.gradcheck(ReluWithFiveAtZero.apply, x)  # once: "1 kink(s) skipped -> PASS"
    assert not bad.passed
    assert "element (1,): analytic" in str(bad) and "outside the one-sided slopes" in str(bad)


def test_an_input_made_only_of_kinks_is_still_checked():
    zeros = np.zeros(4)  # once: "PASSED ... 4 kink(s) skipped" with nothing checked
    assert ln.gradcheck(ln.functional.relu, zeros).passed
    report = ln.gradcheck(ReluWithFiveAtZero.apply, zeros)
    assert not report.passed and report.inputs[0].checked == 0 and report.inputs[0].kinks == len(report.inputs[0].failing)


def test_an_empty_input_fails_loudly():
    report = ln.gradcheck(lambda t: t * 2.0, np.ones((0, 3)))
    assert not report.passed and "nothing to check (the input is empty)" in str(report)


@pytest.mark.parametrize("seed", range(6))
def test_max_pool_ties_pass_with_the_first_winner_and_fail_with_every_winner(seed):
    """Ties everywhere (values in {0, 1, 2}), overlapping windows and padding: the built-in
    backward is a valid subgradient; routing a window's gradient to every tied maximum is not,
    which only steps along several elements at once can show (tests/test_bugzoo.py)."""
    x = np.random.default_rng(seed).integers(0, 3, size=(2, 2, 7, 7)).astype(np.float64)
    for kernel, stride, padding in ((2, 2, 0), (3, 2, 1), (3, 1, 0)):
        report = ln.gradcheck(lambda t: ln.functional.max_pool2d(t, kernel, stride, padding), x, seed=seed)
        assert report.passed and report.inputs[0].kinks > 0, str(report)


def test_a_failure_report_shows_values_tolerances_counts_and_where_the_equation_is():
    x = np.array([[0.1, -0.4], [0.7, 0.2]])
    report = ln.gradcheck(lambda t: apply(ExpWithWrongBackward, t), x)
    text, first = str(report), report.inputs[0].failing[0]
    assert "eps 1e-06, atol 1e-05, rtol 0.001" in text and f"{len(report.inputs[0].failing)} failing" in text
    assert first.analytic / first.numeric == pytest.approx(1.01, rel=1e-6)  # the planted 1 % error
    assert f"analytic {first.analytic:.6g}, numeric {first.numeric:.6g}" in text
    assert f"ops in the graph: ExpWithWrongBackward ({__name__})" in text
    relu_text = str(ln.gradcheck(ReluWithFiveAtZero.apply, np.zeros(3)))
    assert "derivations" not in relu_text
    assert "docs/equations.md § Convolution (conv2d)" in str(ln.gradcheck(
        lambda t: ln.functional.conv2d(apply(ExpWithWrongBackward, t), np.ones((1, 1, 2, 2))), np.ones((1, 1, 3, 3))))


def test_the_taylor_test_fits_order_two_for_a_right_gradient_and_one_for_a_wrong_one():
    x = np.random.default_rng(0).standard_normal((3, 4))
    good = ln.gradcheck(lambda t: (t * t).exp().sum(axis=0), x, method="taylor")
    assert good.passed and 1.8 <= good.inputs[0].order <= 3.2, str(good)
    bad = ln.gradcheck(lambda t: apply(ExpWithWrongBackward, t), x, method="taylor")
    assert not bad.passed and abs(bad.inputs[0].order - 1) < 0.2, str(bad)
    linear = ln.gradcheck(lambda t: t * 3.0, x, method="taylor")
    assert linear.passed and "rounding level" in str(linear)


def test_constants_and_labels_are_not_differentiated():
    w = ln.tensor(np.ones(3))  # requires_grad=False: held constant
    report = ln.gradcheck(lambda x, w, labels: ln.functional.cross_entropy(x * w, labels),
                          np.ones((2, 3)), w, np.array([0, 2]))
    assert [r.position for r in report.inputs] == [0]


def test_tour_command_passes_and_fails_honestly(capsys, monkeypatch):
    assert cli.main(["gradcheck", "--op", "conv2d"]) == 0  # every available backend by default
    table = capsys.readouterr().out
    runs = len(kernels.available_backends()) * sum(c.op == "conv2d" for c in tour.CASES)
    assert table.count("PASS") == 3 * runs and "FAIL" not in table
    broken = tour.Case("exp", "wrong backward", lambda t: apply(ExpWithWrongBackward, t),
                       lambda r: [r.standard_normal(4)])
    monkeypatch.setattr(tour, "CASES", [broken])
    assert cli.main(["gradcheck"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_tour_rejects_unknown_names(capsys):
    assert cli.main(["gradcheck", "--op", "nope"]) == 2
    assert "argument --op: expected one of" in capsys.readouterr().err
    assert cli.main(["gradcheck", "--backend", "cuda"]) == 2
    assert "argument --backend" in capsys.readouterr().err
