"""Gradient checking: compare every analytic gradient with central differences in float64.

For a function f of tensors returning a tensor y, take a random upstream gradient G of y's shape
and the scalar L = Σ G·y (a random G catches errors a sum of ones would hide, e.g. a gradient
permuted within y). Backward gives ∂L/∂x analytically; numerically

    ∂L/∂x_i ≈ (L(x + ε·e_i) − L(x − ε·e_i)) / 2ε        (error O(ε²))

for every element of a small input (the full Jacobian-vector product), or along a few random
unit directions d for a large one: ∂L/∂x · d ≈ (L(x + ε·d) − L(x − ε·d)) / 2ε.

Kinks. Where f is not differentiable (ReLU at 0, a max-pool window whose winner changes within
±ε) the two one-sided slopes (L(x+ε)−L(x))/ε and (L(x)−L(x−ε))/ε disagree by far more than
curvature explains. Such an element is reported as a kink, not as a failure, and skipped.

An element passes when |analytic − numeric| ≤ atol + rtol·|numeric| (as numpy.allclose).
NaN or inf anywhere (in f's value, an analytic or a numeric slope) fails the input: a check
that cannot compare must not pass.
The reported relative error of an input is max|analytic − numeric| / max(max|analytic|, max|numeric|):
the error relative to the size of that gradient, which stays meaningful where single
elements are near zero.
"""
from dataclasses import dataclass, field

import numpy as np

from lepton_nn import checks
from lepton_nn.tensor import Tensor, no_grad

_TINY = 1e-300


@dataclass
class InputReport:
    position: int          # which argument of fn
    shape: tuple
    method: str            # "full" or "N directions"
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple     # element (full) or (direction,) with the largest error
    kinks: int
    passed: bool
    non_finite: int = 0    # elements (or directions) where either slope is NaN or inf: failures


@dataclass
class GradcheckReport:
    inputs: list = field(default_factory=list)

    @property
    def passed(self):
        return all(r.passed for r in self.inputs)

    def __bool__(self):
        return self.passed

    def __str__(self):
        lines = [f"gradcheck {'PASSED' if self.passed else 'FAILED'}"]
        for r in self.inputs:
            kinks = f", {r.kinks} kink(s) skipped" if r.kinks else ""
            kinks += f", {r.non_finite} NaN/inf slope(s)" if r.non_finite else ""
            lines.append(f"  input {r.position} {r.shape} [{r.method}]: max abs err {r.max_abs_error:.2e}, "
                         f"rel err {r.max_rel_error:.2e}, worst at {r.worst_index}{kinks}"
                         f" -> {'PASS' if r.passed else 'FAIL'}")
        return "\n".join(lines)


class GradcheckError(AssertionError):
    pass


def _as_float64(value):
    """Floating tensors/arrays become float64 copies; everything else passes unchanged."""
    data = value.data if isinstance(value, Tensor) else value
    if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float64)
    return value


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_on_fail=False,
              max_full_size=2048, directions=12, seed=0):
    """Check fn's gradients with respect to every floating-point input.

    Inputs may be Tensors or arrays; floating ones are promoted to float64 and differentiated
    (a Tensor with requires_grad=False is held constant), others (integer labels, ints,
    tuples) are passed through. Returns a GradcheckReport; with raise_on_fail=True a failure
    raises GradcheckError carrying the report's text.
    """
    atol, rtol = (checks.finite_number(v, "gradcheck", name, minimum=0) for name, v in (("atol", atol), ("rtol", rtol)))
    if checks.finite_number(eps, "gradcheck", "eps", minimum=0) == 0:
        raise ValueError("gradcheck: eps must be > 0 (the finite-difference step), got 0")
    checks.int_at_least(max_full_size, "gradcheck", "max_full_size", 0)
    checks.int_at_least(directions, "gradcheck", "directions", 1)
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

    args, out = call(values, requires_grad=True)
    if out.dtype != np.float64:
        raise ValueError(f"gradcheck: fn returned {out.dtype} for float64 inputs; it must preserve float64")
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)

    def loss(arrays):
        with no_grad():
            return float(np.sum(call(arrays, requires_grad=False)[1].data * upstream))

    report = GradcheckReport()
    base = loss(values)
    for i in wrt:
        analytic = args[i].grad if args[i].grad is not None else np.zeros_like(values[i])
        report.inputs.append(_check_input(i, values, analytic, loss, base, eps, atol, rtol,
                                          max_full_size, directions, rng))
    if raise_on_fail and not report.passed:
        raise GradcheckError(str(report))
    return report


def _check_input(i, values, analytic, loss, base, eps, atol, rtol, max_full_size, directions, rng):
    x = values[i]
    full = x.size <= max_full_size
    if full:
        count, analytic_slopes = x.size, analytic.ravel()

        def direction(k):
            unit = np.zeros_like(x)
            unit.flat[k] = 1.0
            return unit
    else:
        random_directions = [d / np.linalg.norm(d) for d in (rng.standard_normal(x.shape) for _ in range(directions))]
        count, direction = directions, random_directions.__getitem__
        analytic_slopes = np.array([np.sum(analytic * d) for d in random_directions])

    numeric, kink = np.empty(count), np.zeros(count, dtype=bool)
    for k in range(count):
        step = direction(k)
        plus = loss(values[:i] + [x + eps * step] + values[i + 1:])
        minus = loss(values[:i] + [x - eps * step] + values[i + 1:])
        numeric[k] = (plus - minus) / (2 * eps)
        right, left = (plus - base) / eps, (base - minus) / eps
        kink[k] = abs(right - left) > 1e-2 * max(abs(right), abs(left)) + 10 * atol

    error = np.abs(analytic_slopes - numeric)
    non_finite = ~(np.isfinite(analytic_slopes) & np.isfinite(numeric))
    bad = (error > atol + rtol * np.abs(numeric)) | non_finite  # NaN compares False: count it explicitly
    kink &= bad & ~non_finite  # a kink matters only where it would otherwise count as a failure
    counted = np.where(kink, 0.0, error)
    worst = int(np.argmax(np.where(non_finite, np.inf, counted))) if count else 0
    scale = max(np.max(np.abs(analytic_slopes), initial=0), np.max(np.abs(numeric), initial=0), _TINY)
    return InputReport(
        position=i, shape=x.shape, method="full" if full else f"{directions} directions",
        max_abs_error=float(counted[worst]) if count else 0.0,
        max_rel_error=float(counted[worst] / scale) if count else 0.0,
        worst_index=(() if not count else tuple(int(v) for v in np.unravel_index(worst, x.shape)) if full
                     else (worst,)),
        kinks=int(kink.sum()), passed=not np.any(bad & ~kink), non_finite=int(non_finite.sum()))
