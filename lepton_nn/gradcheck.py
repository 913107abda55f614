"""Gradient checking: compare every analytic gradient with finite differences in float64.

For a function f of tensors returning a tensor y, take a random upstream gradient G of y's shape
and the scalar L = Σ G·y (a random G catches errors a sum of ones would hide, e.g. a gradient
permuted within y). Backward gives ∂L/∂x analytically. Two methods check it:

method="central" (the default). For every element of a small input, and along a few random
unit directions d for every input (all a large input gets):

    ∂L/∂x · d ≈ (L(x + ε·d) − L(x − ε·d)) / 2ε        (error O(ε²))

and the analytic slope passes when |analytic − numeric| ≤ atol + rtol·|numeric| (numpy.allclose).
The random directions catch what elementwise steps cannot: at a max-pool tie every single
step looks fine when every tied maximum gets the whole gradient; a step along several does not.

Kinks are checked, not skipped. Where f is not differentiable (ReLU at 0, a max-pool window
whose winner changes within ±ε) the one-sided slopes R = (L(x+ε·d) − L(x))/ε and
L = (L(x) − L(x−ε·d))/ε disagree by more than the tolerance (curvature alone gives ε·f''). For a convex function
every subgradient s has s·d in [L, R] (for a max of pieces, R is the largest piece's slope
along d and L the smallest), so there the analytic slope must lie in [min(L, R), max(L, R)],
with the same tolerance; the report counts these checks as kinks. The kinks of ReLU, max and
max-pool are convex, but a sum of them weighted by a random-signed G is not: kinks are
therefore checked on L⁺ = Σ |G|·y, a second backward pass with the positive weights |G|. (A
direction crossing both convex and concave kinks at once could still fail a right gradient;
the ops here have convex kinks only.)

method="taylor". Along a random direction d, the residual of the linear model

    r(h) = |L(x + h·d) − L(x) − h·(∂L/∂x · d)|

is O(h²) exactly when the gradient is right; with a wrong one it is O(h). The verdict is the
order fitted where r(h) is above rounding, over h = 10⁻¹ … 10⁻⁶: it needs no ε and no tolerance.

NaN or inf anywhere (f's value, an analytic or a numeric slope) fails the input, and so does an
input where nothing could be checked (an empty one): a check that did not compare never passes.
"""
from dataclasses import dataclass, field

import numpy as np

from lepton_nn import checks
from lepton_nn.tensor import Tensor, no_grad

_TINY = 1e-300
TAYLOR_STEPS = np.logspace(-1, -6, 11)
TAYLOR_MIN_ORDER = 1.8  # a right gradient gives ≈ 2 (or more), a wrong one ≈ 1

# Where each op's derivation is written out (sections of docs/equations.md); every op's forward
# and backward sit side by side in lepton_nn/ops.py.
EQUATIONS = {"Add": "Broadcasting", "Mul": "Broadcasting", "Linear": "Dense layer", "MatMul": "Dense layer",
             "Conv2d": "Convolution (conv2d)", "Conv2dReluMaxPool2d": "Convolution (conv2d)",
             "MaxPool2d": "Max pooling", "AvgPool2d": "Max pooling", "Relu": "ReLU", "LeakyRelu": "ReLU",
             "Softmax": "Softmax and log-softmax", "LogSoftmax": "Softmax and log-softmax",
             "Embedding": "Embedding", "LayerNorm": "Layer normalisation", "Gelu": "GELU",
             "MaskedFill": "Masks, cat, stack and split", "Cat": "Masks, cat, stack and split",
             "SoftmaxCrossEntropy": "Cross-entropy", "MaskedSoftmax": "Attention",
             "BatchNorm": "Batch normalisation"}


@dataclass
class Check:
    """One compared slope: an element (index) or a random direction ("d3")."""
    where: tuple
    analytic: float
    numeric: float            # the central difference
    low: float                # the interval the analytic slope must lie in (± tolerance)
    high: float
    kink: bool

    @property
    def error(self):
        """How far the analytic slope lies outside [low, high]; 0 inside, inf if not finite."""
        if not np.isfinite([self.analytic, self.low, self.high]).all():
            return np.inf
        return max(self.low - self.analytic, self.analytic - self.high, 0.0)

    def __str__(self):
        where = f"direction {self.where[0]}" if isinstance(self.where[0], str) else f"element {self.where}"
        relation = "between" if self.error == 0 else "outside"  # the interval includes the tolerance
        expected = (f"{relation} the one-sided slopes [{self.low:.6g}, {self.high:.6g}]" if self.kink
                    else f"numeric {self.numeric:.6g}")
        return f"{where}: analytic {self.analytic:.6g}, {expected}"


@dataclass
class InputReport:
    position: int          # which argument of fn
    shape: tuple
    method: str            # "full + N directions", "N directions" or "taylor"
    checked: int           # slopes compared where f is smooth
    kinks: int             # slopes compared at a kink, against the one-sided interval
    failing: list          # the Checks that failed (for taylor: empty, see order)
    worst: list            # the worst few Checks (failing or not), largest relative error first
    max_abs_error: float
    max_rel_error: float   # max |analytic − numeric| / max(max |analytic|, max |numeric|) over smooth checks
    non_finite: int = 0    # checks where a slope is NaN or inf: failures
    order: float = None    # taylor: the fitted order of the residual
    note: str = ""         # why an input failed without a failing element
    passed: bool = False

    @property
    def worst_index(self):
        return self.worst[0].where if self.worst else ()

    def lines(self):
        head = f"  input {self.position} {self.shape} [{self.method}]: "
        if self.method == "taylor":
            order = "n/a" if self.order is None else f"{self.order:.2f}"
            head += f"residual order {order} (needs ≥ {TAYLOR_MIN_ORDER})"
        else:
            head += (f"{self.checked} smooth + {self.kinks} kink slope(s) checked, {len(self.failing)} failing; "
                     f"smooth max abs err {self.max_abs_error:.2e}, rel err {self.max_rel_error:.2e}")
        if self.non_finite:
            head += f", {self.non_finite} NaN/inf slope(s)"
        out = [head + (f"; {self.note}" if self.note else "") + f" -> {'PASS' if self.passed else 'FAIL'}"]
        out += [f"      {c}" for c in self.failing[:3]]
        if len(self.failing) > 3:
            out.append(f"      … and {len(self.failing) - 3} more")
        return out


@dataclass
class GradcheckReport:
    inputs: list = field(default_factory=list)
    eps: float = 0.0
    atol: float = 0.0
    rtol: float = 0.0
    ops: tuple = ()        # the ops in fn's graph, from the output back ("Name (module)" for a module's own)
    built_in_ops: tuple = ()  # those of them from lepton_nn/ops.py

    @property
    def passed(self):
        return bool(self.inputs) and all(r.passed for r in self.inputs)

    def __bool__(self):
        return self.passed

    def __str__(self):
        lines = [f"gradcheck {'PASSED' if self.passed else 'FAILED'} (eps {self.eps:g}, atol {self.atol:g}, "
                 f"rtol {self.rtol:g}: an element passes when |analytic − numeric| ≤ atol + rtol·|numeric|)"]
        for r in self.inputs:
            lines += r.lines()
        if not self.passed and self.ops:
            built_in = [op for op in self.ops if op in self.built_in_ops]
            where = ["built-in ops' forward and backward: lepton_nn/ops.py"] if built_in else []
            sections = sorted({EQUATIONS[op] for op in built_in if op in EQUATIONS})
            where += [f"derivations: docs/equations.md § {', § '.join(sections)}"] if sections else []
            lines.append(f"  ops in the graph: {', '.join(self.ops)}" + (f" ({'; '.join(where)})" if where else ""))
        return "\n".join(lines)


class GradcheckError(AssertionError):
    pass


def _as_float64(value):
    """Floating tensors/arrays become float64 copies; everything else passes unchanged."""
    data = value.data if isinstance(value, Tensor) else value
    if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float64)
    return value


def _graph_ops(out):
    """Names of the ops that made `out`, each once, from the output back; and the built-in ones."""
    names, built_in, seen, stack = [], [], set(), [out]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._node is None:
            continue
        seen.add(id(t))
        op = t._node.op
        yours = op.__module__ not in ("lepton_nn.ops", "__main__", "builtins")  # a module worth naming
        name = f"{op.__name__} ({op.__module__})" if yours else op.__name__
        if name not in names:
            names.append(name)
            if op.__module__ == "lepton_nn.ops":
                built_in.append(name)
        stack.extend(i for i in t._node.inputs if isinstance(i, Tensor))
    return tuple(names), tuple(built_in)


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_on_fail=False,
              max_full_size=2048, directions=12, seed=0, method="central"):
    """Check fn's gradients with respect to every floating-point input.

    Inputs may be Tensors or arrays; floating ones are promoted to float64 and differentiated
    (a Tensor with requires_grad=False is held constant), others (integer labels, ints,
    tuples) are passed through. An input of at most max_full_size elements is checked element
    by element and along `directions` random directions; a larger one along the directions only.
    Returns a GradcheckReport; with raise_on_fail=True a failure raises GradcheckError carrying
    the report's text.
    """
    atol, rtol = (checks.finite_number(v, "gradcheck", name, minimum=0) for name, v in (("atol", atol), ("rtol", rtol)))
    if checks.finite_number(eps, "gradcheck", "eps", minimum=0) == 0:
        raise ValueError("gradcheck: eps must be > 0 (the finite-difference step), got 0")
    checks.int_at_least(max_full_size, "gradcheck", "max_full_size", 0)
    checks.int_at_least(directions, "gradcheck", "directions", 1)
    if method not in ("central", "taylor"):
        raise ValueError(f"gradcheck: method must be 'central' or 'taylor', got {method!r}")
    rng = np.random.default_rng(seed)
    values = [_as_float64(v) for v in inputs]
    wrt = [i for i, (orig, v) in enumerate(zip(inputs, values))
           if isinstance(v, np.ndarray) and v.dtype == np.float64
           and not (isinstance(orig, Tensor) and not orig.requires_grad)]
    if not wrt:
        raise ValueError("gradcheck: no floating-point input to differentiate")

    def call(arrays, requires_grad):
        args = [Tensor(a, requires_grad=requires_grad and i in wrt) if isinstance(a, np.ndarray)
                and a.dtype == np.float64 else a for i, a in enumerate(arrays)]
        out = fn(*args)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
        return args, out

    _, out = call(values, requires_grad=True)
    if out.dtype != np.float64:
        raise ValueError(f"gradcheck: fn returned {out.dtype} for float64 inputs; it must preserve float64")
    upstream = rng.standard_normal(out.shape)
    names, built_in = _graph_ops(out)
    report = GradcheckReport(eps=eps, atol=atol, rtol=rtol, ops=names, built_in_ops=built_in)
    positive = np.abs(upstream)

    def analytic(weights):
        """∂(Σ weights·y)/∂x for every input in wrt, by one backward pass."""
        args, out = call(values, requires_grad=True)
        if out.requires_grad:
            out.backward(weights)
        return [args[i].grad if args[i].grad is not None else np.zeros_like(values[i]) for i in wrt]
    grads, positive_grads = analytic(upstream), (analytic(positive) if method == "central" else None)

    def loss_at(i, x, weights):
        with no_grad():
            y = call(values[:i] + [x] + values[i + 1:], requires_grad=False)[1]
        return float(np.sum(y.data * weights))

    for k, i in enumerate(wrt):
        def signed(x, i=i):
            return loss_at(i, x, upstream)
        if method == "taylor":
            report.inputs.append(_taylor(i, values[i], grads[k], signed, signed(values[i]), rng))
            continue
        at_kinks = (positive_grads[k], lambda x, i=i: loss_at(i, x, positive))
        report.inputs.append(_central(i, values[i], grads[k], signed, at_kinks, eps, atol, rtol,
                                      max_full_size, directions, rng))
    if raise_on_fail and not report.passed:
        raise GradcheckError(str(report))
    return report


def _unit_directions(rng, shape, count):
    return [d / max(np.linalg.norm(d), _TINY) for d in (rng.standard_normal(shape) for _ in range(count))]


def _central(i, x, analytic, loss_at, at_kinks, eps, atol, rtol, max_full_size, directions, rng):
    """Central differences along every element (if x is small) and random directions; at a kink,
    the interval test on L⁺ (at_kinks: its analytic gradient and its loss function)."""
    kink_analytic, kink_loss_at = at_kinks
    kink_base = kink_loss_at(x)
    steps = []  # (where, direction)
    full = x.size <= max_full_size
    if full:
        for k in range(x.size):
            unit = np.zeros_like(x)
            unit.flat[k] = 1.0
            steps.append((tuple(int(v) for v in np.unravel_index(k, x.shape)), unit))
    if x.size:
        steps += [((f"d{k}",), d) for k, d in enumerate(_unit_directions(rng, x.shape, directions))]

    results = []
    for where, d in steps:
        # Kinks are found on L⁺: on L, a convex kink weighted by G > 0 and one by G < 0 can cancel
        # in right − left. A jump below the tolerance moves the central difference by less than
        # the tolerance, so the smooth test stays fair there; curvature alone adds only ε·f''.
        right, left = (kink_loss_at(x + eps * d) - kink_base) / eps, (kink_base - kink_loss_at(x - eps * d)) / eps
        kink = abs(right - left) > atol + rtol * max(abs(right), abs(left))
        if kink:  # on L⁺, any subgradient's slope lies between the one-sided slopes
            slope, numeric = float(np.sum(kink_analytic * d)), (right + left) / 2
            low, high = min(left, right), max(left, right)
            tol = atol + rtol * max(abs(left), abs(right))
        else:
            plus, minus = loss_at(x + eps * d), loss_at(x - eps * d)
            numeric, slope = (plus - minus) / (2 * eps), float(np.sum(analytic * d))
            low = high = numeric
            tol = atol + rtol * abs(numeric)
        results.append(Check(where, slope, numeric, low - tol, high + tol, kink))

    smooth = [c for c in results if not c.kink]
    failing = sorted((c for c in results if c.error > 0), key=lambda c: -c.error)
    abs_errors = [abs(c.analytic - c.numeric) for c in smooth]
    scale = max([abs(c.analytic) for c in smooth] + [abs(c.numeric) for c in smooth] + [_TINY])
    non_finite = sum(not np.isfinite([c.analytic, c.numeric]).all() for c in results)
    note = "" if results else "nothing to check (the input is empty)"
    method = f"full + {directions} directions" if full else f"{directions} directions"
    return InputReport(
        position=i, shape=x.shape, method=method, checked=len(smooth), kinks=len(results) - len(smooth),
        failing=failing, worst=failing or sorted(results, key=lambda c: -abs(c.analytic - c.numeric)),
        max_abs_error=float(max(abs_errors, default=0.0)), max_rel_error=float(max(abs_errors, default=0.0) / scale),
        non_finite=non_finite, note=note, passed=bool(results) and not failing)


def _taylor(i, x, analytic, loss_at, base, rng):
    (d,) = _unit_directions(rng, x.shape, 1) if x.size else [np.zeros_like(x)]
    slope = float(np.sum(analytic * d))
    residuals = np.array([abs(loss_at(x + h * d) - base - h * slope) for h in TAYLOR_STEPS])
    # Below ~1e-11 relative to L the residual is rounding noise in L itself, not the model's error.
    usable = residuals > 1e-11 * max(abs(base), 1.0)
    report = InputReport(position=i, shape=x.shape, method="taylor", checked=int(usable.sum()), kinks=0,
                         failing=[], worst=[], max_abs_error=float("nan"), max_rel_error=float("nan"))
    if not x.size:
        report.note = "nothing to check (the input is empty)"
    elif not np.isfinite(residuals).all() or not np.isfinite(slope):
        report.non_finite, report.note = 1, "a NaN or inf in L or the gradient"
    elif usable.sum() < 3:  # the linear model is exact to rounding at every h: f is linear along d
        report.order, report.passed = float("inf"), True
        report.note = "the residual is at rounding level at every h (f is linear along d)"
    else:
        # The order at the smallest steps still above rounding: the one that tells O(h) from O(h²).
        logs_h, logs_r = np.log10(TAYLOR_STEPS[usable]), np.log10(residuals[usable])
        report.order = float(np.polyfit(logs_h[-3:], logs_r[-3:], 1)[0])
        report.passed = report.order >= TAYLOR_MIN_ORDER
        report.note = f"h from {TAYLOR_STEPS[usable][0]:.0e} to {TAYLOR_STEPS[usable][-1]:.0e}"
    return report
