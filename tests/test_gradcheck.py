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


def test_a_kink_is_reported_as_a_kink_not_a_failure():
    x = np.array([-0.5, 0.0, 0.5])
    report = ln.gradcheck(ln.functional.relu, x)
    assert report.passed and report.inputs[0].kinks == 1
    assert "1 kink(s) skipped" in str(report)


def test_max_pool_winner_change_is_a_kink():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 1.0  # two equal maxima: any step changes the winner
    report = ln.gradcheck(lambda t: ln.functional.max_pool2d(t, 2), x)
    assert report.passed and report.inputs[0].kinks >= 1


def test_constants_and_labels_are_not_differentiated():
    w = ln.tensor(np.ones(3))  # requires_grad=False: held constant
    report = ln.gradcheck(lambda x, w, labels: ln.functional.cross_entropy(x * w, labels),
                          np.ones((2, 3)), w, np.array([0, 2]))
    assert [r.position for r in report.inputs] == [0]


def test_tour_command_passes_and_fails_honestly(capsys, monkeypatch):
    assert cli.main(["gradcheck", "--op", "conv2d"]) == 0
    table = capsys.readouterr().out
    assert table.count("PASS") == 3 * sum(c.op == "conv2d" for c in tour.CASES) and "FAIL" not in table
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
