"""A bug zoo: backward passes with the slips learners really make, for gradcheck to catch.

Each bug is a `lepton_nn.Function` whose forward is right and whose backward is wrong in one
instructive way; its docstring gives the op's equation, the correct gradient, the slip and the
symptom. `BUGS` lists them, each with inputs that expose it (float64, odd, non-square shapes)
and a correct twin: the same function through the built-in ops, which must pass on the same
inputs (so the inputs are fine and the checker discriminates). Try one:

    import numpy as np
    from lepton_nn import bugzoo, gradcheck
    bug = bugzoo.find("sigmoid_uses_x")
    print(gradcheck(bug.fn, *bug.make_inputs(np.random.default_rng(0))))

The table and a walk-through: docs/bugzoo.md. Test: tests/test_bugzoo.py.
"""
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lepton_nn import functional as F
from lepton_nn.kernels import reference
from lepton_nn.tensor import Function, tensor


# --------------------------------------------------------------------------- dense layer
class LinearWeightGradReshaped(Function):
    """Dense layer with the weight gradient transposed, then reshaped to fit.

    Op:      Y = X·Wᵀ + b,  X (N, in), W (out, in), b (out,)
    Correct: G_W = Gᵀ·X  (out, in)
    Slip:    Xᵀ·G, which is (in, out); the engine refuses that shape, so the learner adds
             .reshape(W.shape). With a square W that is exactly the transposed gradient,
             otherwise the same numbers scrambled.
    Symptom: input 1 (W) fails, X and b pass. Without the reshape a non-square W fails at
             once with a shape error; a square one passes the shape check with wrong numbers.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        return g @ w, (x.T @ g).reshape(w.shape), g.sum(axis=0)  # slip: should be g.T @ x


class LinearBiasGradOverwritten(Function):
    """Dense layer whose bias gradient is overwritten, not summed, over the batch.

    Op:      Y = X·Wᵀ + b; the bias is added to every one of the N rows
    Correct: G_b = Σ_n G[n, :]   (every row used b, so every row's gradient counts)
    Slip:    a loop over samples with `grad_b = g[n]` instead of `grad_b += g[n]`, which
             keeps the last sample's gradient only. (Returning g itself, unreduced, has
             shape (N, out): the engine refuses it and names the op.)
    Symptom: b fails, X and W pass; passes with a batch of one.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        for n in range(len(g)):
            grad_b = g[n]  # slip: = instead of +=
        return g @ w, g.T @ x, grad_b.copy()


class AddRowBiasMeanReduced(Function):
    """A broadcast add whose backward reduces the broadcast axis by the mean, not the sum.

    Op:      Y = X + b,  X (N, C), b (1, C) stretched over the N rows
    Correct: G_b = Σ_n G[n, :] (keepdims): the "unbroadcast" rule, sum over the stretched axis
    Slip:    the mean over the batch, mixing up "reduce the broadcast axis" with the 1/N of a
             mean loss. (Summing over the wrong axis, or not at all, gives a wrong shape,
             which the engine refuses before gradcheck runs.)
    Symptom: b's gradient N times too small (relative error 1 − 1/N); passes with N = 1.
    """

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, g):
        return g, g.mean(axis=0, keepdims=True)  # slip: should be g.sum(axis=0, keepdims=True)


# --------------------------------------------------------------------------- conv and pooling
class Conv2dInputGradIgnoresStride(Function):
    """conv2d (no bias, no padding) whose input gradient forgets the stride.

    Op:      y[n, o, i, j] = Σ_c Σ_p Σ_q x[n, c, i·s + p, j·s + q] · w[o, c, p, q]
    Correct: G_x[n, c, i·s + p, j·s + q] += Σ_o G_y[n, o, i, j] · w[o, c, p, q]
    Slip:    scatter to x[n, c, i + p, j + q], as if s were 1 (the weight gradient is right).
    Symptom: x fails and w passes; passes at stride 1. Test at stride 2.
    """

    @staticmethod
    def forward(ctx, x, w, *, stride):
        ctx.save(x, w, stride)
        return reference.conv2d_forward(x, w, None, (stride, stride), (0, 0))

    @staticmethod
    def backward(ctx, g):
        x, w, s = ctx.saved
        _, grad_w, _ = reference.conv2d_backward(g, x, w, (s, s), (0, 0), need_x=False, need_bias=False)
        grad_x = np.zeros_like(x)
        h_out, w_out = g.shape[2:]
        for p in range(w.shape[2]):
            for q in range(w.shape[3]):  # slip: should be p:p + s*h_out:s, q:q + s*w_out:s
                grad_x[:, :, p:p + h_out, q:q + w_out] += np.einsum("nohw,oc->nchw", g, w[:, :, p, q])
        return grad_x, grad_w


class MaxPool2dEveryTieWins(Function):
    """Max pooling (k×k windows, stride k) that routes each window's gradient to every maximum.

    Op:      y[n, c, i, j] = max_{p, q < k} x[n, c, i·k + p, j·k + q]
    Correct: the whole G_y[i, j] to one maximum (or split among tied maxima, shares adding to 1)
    Slip:    `grad_x += g * (x == y)`: with two tied maxima each gets all of G_y[i, j], so the
             window passes on twice its gradient. Without ties it is exactly right.
    Symptom: invisible without ties. A tie is a kink, and stepping one tied element alone
             cannot expose it: stepping it up makes it the sole winner, with a slope equal to
             this wrong value. A step that moves both tied maxima up together moves the
             output by 1·G, not the 2·G claimed: gradcheck's random directions find it.
    """

    @staticmethod
    def forward(ctx, x, *, kernel):
        y, _ = reference.max_pool2d_forward(x, (kernel, kernel), (kernel, kernel), (0, 0))
        ctx.save(x, y, kernel)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, k = ctx.saved
        grad_x = np.zeros_like(x)
        h_out, w_out = y.shape[2:]
        for p in range(k):
            for q in range(k):  # the window cells at offset (p, q), one per output
                cells = (slice(None), slice(None), slice(p, p + k * h_out, k), slice(q, q + k * w_out, k))
                grad_x[cells] += g * (x[cells] == y)  # slip: every tied maximum gets all of g
        return (grad_x,)


# --------------------------------------------------------------------------- losses
class SoftmaxCrossEntropyMeanWithoutOneOverN(Function):
    """Mean softmax cross-entropy over a batch whose backward forgets the 1/N.

    Op:      L = (1/N) Σ_n −log softmax(z_n)[y_n]
    Correct: ∂L/∂z = (softmax(z) − onehot(y)) / N
    Slip:    softmax(z) − onehot(y): the per-sample gradient, without the mean's 1/N.
    Symptom: the gradient N times too large everywhere (gradcheck's relative error, taken
             against the larger of the two, is 1 − 1/N); passes at N = 1. In training it acts
             as a learning rate N times too large.
    """

    @staticmethod
    def forward(ctx, z, *, labels):
        loss, probs = reference.softmax_cross_entropy_forward(z, labels)
        ctx.save(probs, labels)
        return np.asarray(loss.mean())

    @staticmethod
    def backward(ctx, g):
        probs, labels = ctx.saved
        grad = probs.copy()
        grad[np.arange(len(labels)), labels] -= 1
        return (g * grad,)  # slip: should be g * grad / len(labels)


class CrossEntropyMinusOneOverYhat(Function):
    """Cross-entropy on probabilities with the derivative −1/ŷ_i instead of −y_i/ŷ_i.

    Op:      CE_n = −Σ_i y_ni log ŷ_ni  per sample; the target y is a constant
    Correct: ∂CE/∂ŷ_i = −y_i/ŷ_i, which is 0 for every class the target gives no weight
    Slip:    −1/ŷ_i (docs/equations.md, "Cross-entropy"): the y_i is dropped, as if every
             class were the true one.
    Symptom: ŷ fails at every class with y_i ≠ 1: with a one-hot target the true class is
             right and all the others get −1/ŷ_i where the answer is 0.
    """

    @staticmethod
    def forward(ctx, p, y):
        ctx.save(p, y)
        return -(y * np.log(p)).sum(axis=1)

    @staticmethod
    def backward(ctx, g):
        p, y = ctx.saved
        return -g[:, None] / p, None  # slip: should be -g[:, None] * y / p


# --------------------------------------------------------------------------- elementwise
class SquareGradCountedOnce(Function):
    """x·x, an input used twice, with the gradient taken through one use only.

    Op:      y = x·x (x enters both factors)
    Correct: ∂y/∂x = x + x = 2x: a variable used twice gets the sum of both paths' gradients
    Slip:    g·x: the second factor treated as a constant. It is the product rule
             ∂(a·b)/∂a = b with a and b the same tensor, and only one gradient kept; in a
             home-made engine it is `grads[x] = g` instead of `grads[x] += g`.
    Symptom: the gradient exactly half the true one everywhere (relative error 0.5).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (g * x,)  # slip: should be 2 * g * x


class SigmoidUsesX(Function):
    """Sigmoid whose backward applies σ' = σ(1 − σ) to the input instead of the output.

    Op:      y = σ(x) = 1 / (1 + e^−x)
    Correct: ∂y/∂x = σ(x)(1 − σ(x)) = y(1 − y)
    Slip:    x(1 − x): the formula remembered, with the wrong variable saved for backward.
    Symptom: wrong almost everywhere; for x < 0 or x > 1 even the sign is wrong (σ' > 0).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return 0.5 * (1 + np.tanh(0.5 * x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (g * x * (1 - x),)  # slip: should be g * y * (1 - y)


class TanhUsesX(Function):
    """tanh whose backward computes 1 − x² instead of 1 − tanh²(x).

    Op:      y = tanh x
    Correct: ∂y/∂x = 1 − tanh² x = 1 − y²
    Slip:    1 − x²: the same mix-up of input and output as sigmoid's.
    Symptom: close for small |x| (tanh x ≈ x), wrong and of the wrong sign for |x| > 1.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return np.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (g * (1 - x * x),)  # slip: should be g * (1 - y * y)


class ReluPassesEverything(Function):
    """ReLU whose backward lets the gradient through at negative inputs too.

    Op:      y = max(x, 0)
    Correct: ∂y/∂x = [x > 0]
    Slip:    returns g unchanged, as if ReLU were the identity.
    Symptom: every negative input fails (analytic g, numeric 0); positives pass.
    """

    @staticmethod
    def forward(ctx, x):
        return np.maximum(x, 0)

    @staticmethod
    def backward(ctx, g):
        return (g,)  # slip: should be g * (x > 0)


class ReluMultipliesByOutput(Function):
    """ReLU whose backward multiplies by the output y instead of the mask [x > 0].

    Op:      y = max(x, 0)
    Correct: ∂y/∂x = [x > 0]  (0 or 1)
    Slip:    g·y: the output used as the mask, since "y is zero exactly where the mask is".
    Symptom: negatives pass (y = 0); positives fail unless x happens to be 1.
    """

    @staticmethod
    def forward(ctx, x):
        y = np.maximum(x, 0)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y,)  # slip: should be g * (y > 0)


class LogDividesByOutput(Function):
    """Natural log whose backward divides by the output instead of the input.

    Op:      y = ln x
    Correct: ∂y/∂x = 1/x
    Slip:    g / y = g / ln x: the output saved for backward, as exp, sigmoid and tanh
             rightly do, but log's derivative needs the input.
    Symptom: wrong everywhere; huge near x = 1, where ln x → 0.
    """

    @staticmethod
    def forward(ctx, x):
        y = np.log(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g / y,)  # slip: should be g / x


class ExpForgetsChainRule(Function):
    """exp whose backward returns the local derivative and drops the upstream gradient.

    Op:      y = eˣ
    Correct: ∂L/∂x = g·eˣ (chain rule: the upstream gradient times the local derivative)
    Slip:    eˣ alone.
    Symptom: passes whenever the upstream gradient is all ones (checking sum(f(x)) hides it);
             gradcheck's random upstream gradient exposes it.
    """

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (y.copy(),)  # slip: should be g * y


class SoftmaxDiagonalJacobian(Function):
    """Softmax whose backward keeps only the diagonal of its Jacobian.

    Op:      ŷ_i = e^(x_i) / Σ_j e^(x_j) along the last axis
    Correct: ∂ŷ_i/∂x_k = ŷ_i(δ_ik − ŷ_k), so G_x = ŷ ⊙ (g − Σ_i g_i ŷ_i)
    Slip:    g ⊙ ŷ(1 − ŷ): each output treated as depending on its own input only, as for
             sigmoid, though every ŷ_i depends on every x_k through the sum.
    Symptom: fails everywhere; it would pass only if g were the same across a row.
    """

    @staticmethod
    def forward(ctx, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y * (1 - y),)  # slip: should be y * (g - (g * y).sum(axis=-1, keepdims=True))


class StandardizeMeanTreatedConstant(Function):
    """Standardization (layer norm without scale and shift) that forgets the mean depends on x.

    Op:      y = (x − μ)/σ along the last axis (D elements), μ = mean x, σ² = mean (x − μ)²
    Correct: G_x = (g − mean g − y·mean(g·y)) / σ
    Slip:    μ held constant while σ is differentiated: (g − y·mean(g·y)) / σ, missing the
             −mean(g)/σ that flows through μ. (For the variance alone the same slip is
             harmless: its μ-term is Σ(x − μ) = 0. That is why it goes unnoticed.)
    Symptom: every element of a row off by the same amount, mean(g)/σ.
    """

    @staticmethod
    def forward(ctx, x):
        centred = x - x.mean(axis=-1, keepdims=True)
        sigma = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
        y = centred / sigma
        ctx.save(y, sigma)
        return y

    @staticmethod
    def backward(ctx, g):
        y, sigma = ctx.saved
        return ((g - y * (g * y).mean(axis=-1, keepdims=True)) / sigma,)  # slip: − g.mean(...) missing


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Bug:
    name: str
    op: type                  # the Function with the wrong backward
    fn: Callable              # fn(*tensors) applies op; options go by keyword
    make_inputs: Callable     # make_inputs(rng) -> fn's arguments, chosen to expose the slip
    correct: Callable         # the same function through the built-in ops: passes on those inputs

    @property
    def explanation(self):
        return inspect.getdoc(self.op)


def _normal(rng, *shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, *shape):
    """±[0.2, 2): ReLU's kink at 0 stays out of reach of the ±ε steps."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def _pool_input_with_one_tie(rng):
    """Distinct values but one 2×2 window whose two largest are equal: the one kink."""
    x = rng.permutation(2 * 5 * 7).reshape(1, 2, 5, 7).astype(np.float64) / 10
    window = x[0, 1, 2:4, 2:4]
    window[1, 1] = window.max()
    window[0, 1] = window.max()
    return (x,)


def _standardize(x):
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / (centred * centred).mean(axis=-1, keepdims=True).sqrt()


BUGS = [
    Bug("linear_weight_grad_transposed", LinearWeightGradReshaped, LinearWeightGradReshaped.apply,
        lambda rng: (_normal(rng, 5, 3), _normal(rng, 4, 3), _normal(rng, 4)),  # W non-square: (4, 3)
        F.linear),
    Bug("linear_bias_grad_not_summed", LinearBiasGradOverwritten, LinearBiasGradOverwritten.apply,
        lambda rng: (_normal(rng, 5, 3), _normal(rng, 4, 3), _normal(rng, 4)),
        F.linear),
    Bug("broadcast_bias_mean_not_sum", AddRowBiasMeanReduced, AddRowBiasMeanReduced.apply,
        lambda rng: (_normal(rng, 5, 3), _normal(rng, 1, 3)),
        lambda x, b: x + b),
    Bug("conv2d_input_grad_ignores_stride", Conv2dInputGradIgnoresStride,
        lambda x, w: Conv2dInputGradIgnoresStride.apply(x, w, stride=2),
        lambda rng: (_normal(rng, 2, 2, 7, 6), _normal(rng, 3, 2, 3, 3)),
        lambda x, w: F.conv2d(x, w, stride=2)),
    Bug("max_pool_every_tie_gets_all", MaxPool2dEveryTieWins,
        lambda x: MaxPool2dEveryTieWins.apply(x, kernel=2),
        _pool_input_with_one_tie,
        lambda x: F.max_pool2d(x, 2)),
    Bug("softmax_ce_mean_without_1_over_n", SoftmaxCrossEntropyMeanWithoutOneOverN,
        lambda z, labels: SoftmaxCrossEntropyMeanWithoutOneOverN.apply(z, labels=labels),
        lambda rng: (_normal(rng, 5, 3), rng.integers(0, 3, 5)),
        F.cross_entropy),
    Bug("cross_entropy_minus_1_over_yhat", CrossEntropyMinusOneOverYhat, CrossEntropyMinusOneOverYhat.apply,
        # ŷ kept in (0.1, 1) so log is smooth; the one-hot target is a constant tensor
        lambda rng: (rng.uniform(0.1, 1.0, (5, 3)), tensor(np.eye(3)[rng.integers(0, 3, 5)])),
        lambda p, y: -(y * p.log()).sum(axis=1)),
    Bug("input_used_twice_counted_once", SquareGradCountedOnce, SquareGradCountedOnce.apply,
        lambda rng: (_normal(rng, 3, 5),),
        lambda x: x * x),
    Bug("sigmoid_uses_x", SigmoidUsesX, SigmoidUsesX.apply,
        lambda rng: (2 * _normal(rng, 3, 5),),
        lambda x: x.sigmoid()),
    Bug("tanh_uses_x", TanhUsesX, TanhUsesX.apply,
        lambda rng: (2 * _normal(rng, 3, 5),),
        lambda x: x.tanh()),
    Bug("relu_passes_negatives", ReluPassesEverything, ReluPassesEverything.apply,
        lambda rng: (_away_from_zero(rng, 3, 5),),
        lambda x: x.relu()),
    Bug("relu_multiplies_by_output", ReluMultipliesByOutput, ReluMultipliesByOutput.apply,
        lambda rng: (_away_from_zero(rng, 3, 5),),
        lambda x: x.relu()),
    Bug("log_divides_by_output", LogDividesByOutput, LogDividesByOutput.apply,
        lambda rng: (rng.uniform(1.5, 4.0, (3, 5)),),  # away from x = 1, where ln x = 0
        lambda x: x.log()),
    Bug("exp_forgets_chain_rule", ExpForgetsChainRule, ExpForgetsChainRule.apply,
        lambda rng: (_normal(rng, 3, 5),),
        lambda x: x.exp()),
    Bug("softmax_diagonal_jacobian", SoftmaxDiagonalJacobian, SoftmaxDiagonalJacobian.apply,
        lambda rng: (_normal(rng, 3, 5),),
        lambda x: x.softmax(-1)),
    Bug("standardize_mean_treated_constant", StandardizeMeanTreatedConstant, StandardizeMeanTreatedConstant.apply,
        lambda rng: (_normal(rng, 3, 5),),
        _standardize),
]


def find(name):
    """The bug called `name` (see BUGS)."""
    for bug in BUGS:
        if bug.name == name:
            return bug
    raise KeyError(f"bugzoo: no bug named {name!r}; there are {[b.name for b in BUGS]}")
