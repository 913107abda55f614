"""Optimizers, used PyTorch-style:

    opt = optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches:
        opt.zero_grad()          # gradients accumulate (lepton_nn.tensor), so clear them first
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()               # updates every parameter that has a .grad, in place, under no_grad

A parameter whose .grad is None (frozen: requires_grad=False, or unused by the loss) is skipped
and its state is left alone. Hyperparameters are attributes (`opt.lr = 1e-4` takes effect on
the next step). Every hyperparameter is checked whenever it is set, at construction, by
assignment or by load_state_dict: NaN, inf or a value out of range raises ValueError naming
the optimizer, before a step could spread it into the weights.
Notation below: θ parameter, g its gradient, η = lr, t the parameter's step count from 1,
λ = weight_decay.
"""
import numpy as np

from lepton_nn import checks, kernels, profiler
from lepton_nn.tensor import Tensor, no_grad


# Hyperparameter rules (owner, name, value) -> the value to keep, or ValueError naming the owner.
def non_negative(owner, name, value):
    return checks.finite_number(value, owner, name, minimum=0)


def betas(owner, name, value):
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2:
        raise ValueError(f"{owner}: {name} must be a pair (β₁, β₂), got {value!r}")
    return tuple(checks.fraction(b, owner, f"{name}[{i}]") for i, b in enumerate(pair))


def flag(owner, name, value):
    return checks.flag(value, owner, name)


class Optimizer:
    HYPER = {}  # name → rule (above) of each hyperparameter, saved by state_dict()

    def __setattr__(self, name, value):
        if name in self.HYPER:
            value = self.HYPER[name](type(self).__name__, name, value)
        super().__setattr__(name, value)

    @classmethod
    def check(cls, **hyper):
        """Check hyperparameters without making an optimizer (a Keras optimizer is configured
        before its model's weights exist); raises ValueError as the constructor would."""
        for name, value in hyper.items():
            cls.HYPER[name](cls.__name__, name, value)

    def __init__(self, params, **hyper):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        unique, seen = [], set()
        for p in params:
            if not isinstance(p, Tensor) or not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"{type(self).__name__}: parameters must be floating-point Tensors, "
                                f"got {type(p).__name__}")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        self.params = unique
        self.state = [{} for _ in unique]
        for name, value in hyper.items():
            setattr(self, name, value)
        self._check()

    def _check(self):
        """Rules that relate two hyperparameters (each one alone is checked as it is set)."""

    def zero_grad(self):
        """Forget every parameter's gradient (.grad = None), as PyTorch's set_to_none=True."""
        for p in self.params:
            p.grad = None

    def step(self):
        with no_grad():
            profiler.call(type(self).__name__, "update", self._step)

    def _with_grads(self):
        """(param array, its gradient C-contiguous in its dtype, its state) for each parameter that has a .grad."""
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                yield p.data, np.ascontiguousarray(p.grad, dtype=p.dtype), state

    def _step(self):
        for param, grad, state in self._with_grads():
            self._update(param, grad, state)

    def _update(self, param, grad, state):
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """{'hyper': {name: value}, 'state': [per-parameter {name: array or int}]} — copies."""
        return {"hyper": {name: getattr(self, name) for name in self.HYPER},
                "state": [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                          for s in self.state]}

    def load_state_dict(self, state_dict):
        states = state_dict["state"]
        if len(states) != len(self.params):
            raise ValueError(f"{type(self).__name__}.load_state_dict: state for {len(states)} parameters, "
                             f"optimizer has {len(self.params)}")
        for i, (p, s) in enumerate(zip(self.params, states)):
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state {k!r} of parameter {i} "
                                     f"has shape {v.shape}, the parameter {p.shape}")
        for name, value in state_dict.get("hyper", {}).items():
            setattr(self, name, value)
        self.state = [{k: (np.array(v, dtype=p.dtype) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                      for p, s in zip(self.params, states)]

    def __repr__(self):
        hyper = ", ".join(f"{name}={getattr(self, name)}" for name in self.HYPER)
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and L2 weight decay (PyTorch's form):

        g ← g + λ·θ                                   (weight decay, coupled: part of the gradient)
        b ← g                    at the first step     (momentum buffer)
        b ← μ·b + (1 − d)·g      afterwards            (μ = momentum, d = dampening)
        g ← g + μ·b  if nesterov,  else  g ← b
        θ ← θ − η·g

    Keras writes momentum as v ← μ·v − η·g, θ ← θ + v; with a constant η that is the same
    update (v = −η·b).
    """
    HYPER = {"lr": non_negative, "momentum": non_negative, "dampening": non_negative, "nesterov": flag,
             "weight_decay": non_negative}

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay)

    def _check(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")

    def _update(self, param, grad, state):
        g = grad + self.weight_decay * param if self.weight_decay else grad
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        param -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), one in-place pass of the active backend's `adam_steps` kernel:

        g ← g + λ·θ                          (weight_decay: coupled L2, as PyTorch's Adam)
        m ← β₁·m + (1 − β₁)·g                 (running mean of the gradient)
        v ← β₂·v + (1 − β₂)·g²                (running mean of its square)
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)  (bias correction: m and v start at 0)
        θ ← θ − η·m̂ / (√v̂ + ε)

    Defaults are PyTorch's (ε = 1e-8). epsilon_hat=True puts ε where Keras and TensorFlow put
    it, on the uncorrected √v (the paper's "ε̂" form): θ ← θ − η·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m / (√v + ε),
    which is the update above with ε/√(1 − β₂ᵗ) for ε (docs/equations.md, "Adam");
    `keras.optimizers.Adam` / 'adam' uses it, with Keras's ε = 1e-7.
    """
    HYPER = {"lr": non_negative, "betas": betas, "eps": non_negative, "weight_decay": non_negative,
             "epsilon_hat": flag}
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, epsilon_hat=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, epsilon_hat=epsilon_hat)

    def _step(self):
        # One adam_steps call for all parameters at the same step and dtype (normally all of
        # them): a fast backend then starts its threads once per step, not once per array.
        groups = {}
        for param, grad, state in self._with_grads():
            if not state:
                state.update(step=0, m=np.zeros_like(param), v=np.zeros_like(param))
            state["step"] += 1
            if self.weight_decay and not self._decoupled:
                grad = grad + self.weight_decay * param
            groups.setdefault((state["step"], param.dtype), []).append((param, grad, state["m"], state["v"]))
        decay = self.weight_decay if self._decoupled else 0.0
        beta1, beta2 = self.betas
        for (step, _), arrays in groups.items():
            eps = self.eps / np.sqrt(1 - beta2 ** step) if self.epsilon_hat else self.eps
            kernels.active().adam_steps(*zip(*arrays), self.lr, beta1, beta2, eps, step, decay)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): the decay is not part of g,
    so it is not rescaled by 1/√v̂:

        m, v, m̂, v̂ as in Adam (on the raw gradient)
        θ ← θ − η·(m̂ / (√v̂ + ε) + λ·θ)

    Defaults are PyTorch's (λ = 0.01, ε = 1e-8).
    """
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, epsilon_hat=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, epsilon_hat=epsilon_hat)
