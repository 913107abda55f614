"""Optimizers, used PyTorch-style:

    opt = optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches:
        opt.zero_grad()          # gradients accumulate (lepton_nn.tensor), so clear them first
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()               # updates every parameter that has a .grad, in place, under no_grad

Parameter groups, as PyTorch's: each group is a dict with 'params' and its own hyperparameters;
what a group leaves out is the optimizer's keyword (its default):

    opt = optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                       {"params": biases_and_norms, "weight_decay": 0.0}], lr=1e-3)
    opt.param_groups[1]["lr"]    # 1e-3; a scheduler (optim.lr_scheduler) sets each group's lr

A parameter whose .grad is None (frozen: requires_grad=False, or unused by the loss) is skipped
and its state is left alone. `opt.lr = 1e-4` sets lr in every group (and for groups added
later); reading `opt.lr` gives the groups' common value. Every hyperparameter is checked
whenever it is set, at construction, by assignment (to opt or to a group) or by
load_state_dict: NaN, inf or a value out of range raises ValueError naming the optimizer,
before a step could spread it into the weights.
Notation below: θ parameter, g its gradient, η = lr, t the parameter's step count from 1,
λ = weight_decay.
"""
import numpy as np

from lepton_nn import checks, kernels, lr_scheduler, profiler  # noqa: F401 (optim.lr_scheduler, as PyTorch)
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


class ParamGroup(dict):
    """One parameter group: {'params': [Tensor, ...], hyperparameter: value, ...}. Setting a
    hyperparameter (group['lr'] = 1e-4, as a scheduler does) checks it by the optimizer's rules;
    other keys (a scheduler's 'initial_lr') are kept as given."""

    def __init__(self, optimizer_class, values):
        super().__init__()
        self._owner = optimizer_class
        self.update(values)

    def __setitem__(self, name, value):
        owner = getattr(self, "_owner", None)  # None only while unpickling, which sets items first
        if owner is not None and name in owner.HYPER:
            value = owner.HYPER[name](owner.__name__, name, value)
        super().__setitem__(name, value)

    def update(self, *args, **kwargs):  # dict's update and |= would bypass the check
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def hyper(self):
        return {name: self[name] for name in self._owner.HYPER}


class Optimizer:
    HYPER = {}  # name → rule (above) of each hyperparameter, saved by state_dict()

    def __init__(self, params, **defaults):
        """params: Tensors (one group), or dicts {'params': [...], hyperparameter: value} (a group
        each); defaults: every hyperparameter, for what a group leaves out."""
        name = type(self).__name__
        self.defaults = {key: self.HYPER[key](name, key, value) for key, value in defaults.items()}
        self.param_groups, self.state = [], []  # state: one dict per parameter, in the order of .params
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add {'params': [Tensor, ...], hyperparameter: value, ...}; a hyperparameter it leaves out
        takes the optimizer's default. A parameter may belong to one group only."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group is a dict with 'params', got {type(group).__name__}")
        unknown = set(group) - set(self.HYPER) - {"params", "initial_lr"}
        if unknown:  # a misspelt 'weight_decay' would otherwise be silently ignored
            raise ValueError(f"{name}: unknown key(s) {sorted(unknown)} in a parameter group; "
                             f"hyperparameters are {', '.join(self.HYPER)}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        unique = []
        for p in params:
            if not isinstance(p, Tensor) or not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"{name}: parameters must be floating-point Tensors, got {type(p).__name__}")
            if id(p) in taken:
                raise ValueError(f"{name}: a parameter appears in more than one parameter group")
            if all(p is not q for q in unique):  # a repeat within the group is kept once
                unique.append(p)
        settings = {k: v for k, v in group.items() if k != "params"}
        checked = ParamGroup(type(self), {"params": unique, **self.defaults, **settings})
        self._check(checked)
        self.param_groups.append(checked)
        self.state += [{} for _ in unique]

    @property
    def params(self):
        """Every parameter, group after group (the order of .state)."""
        return [p for group in self.param_groups for p in group["params"]]

    def __setattr__(self, name, value):
        if name in self.HYPER:  # opt.lr = 1e-4: every group's, and the default of groups added later
            value = self.HYPER[name](type(self).__name__, name, value)
            self.defaults[name] = value
            for group in self.param_groups:
                group[name] = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name):
        # Reached only for names the object lacks: the hyperparameters, which live in the groups.
        groups = self.__dict__.get("param_groups")
        if name not in self.HYPER or not groups:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        values = [group[name] for group in groups]
        if any(v != values[0] for v in values):
            raise AttributeError(f"{type(self).__name__}: the parameter groups differ in {name} ({values}); "
                                 f"read opt.param_groups[i][{name!r}]")
        return values[0]

    @classmethod
    def check(cls, **hyper):
        """Check hyperparameters without making an optimizer (a Keras optimizer is configured
        before its model's weights exist); raises ValueError as the constructor would."""
        for name, value in hyper.items():
            cls.HYPER[name](cls.__name__, name, value)

    def _check(self, group):
        """Rules that relate two hyperparameters of a group (each one alone is checked as it is set)."""

    def zero_grad(self):
        """Forget every parameter's gradient (.grad = None), as PyTorch's set_to_none=True."""
        for p in self.params:
            p.grad = None

    def step(self):
        with no_grad():
            profiler.call(type(self).__name__, "update", self._step)

    def _with_grads(self):
        """(group, [(param array, its gradient C-contiguous in its dtype, its state), ...]) for each
        group, listing the parameters that have a .grad."""
        start = 0
        for group in self.param_groups:
            params, states = group["params"], self.state[start:start + len(group["params"])]
            start += len(params)
            yield group, [(p.data, np.ascontiguousarray(p.grad, dtype=p.dtype), s)
                          for p, s in zip(params, states) if p.grad is not None]

    def _step(self):
        for group, items in self._with_grads():
            for param, grad, state in items:
                self._update(param, grad, state, group)

    def _update(self, param, grad, state, group):
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Copies of {'hyper': the first group's hyperparameters (all of them for a one-group
        optimizer: Keras's model files keep just these), 'param_groups': each group's settings
        with 'params' as indices into .params (PyTorch's form), 'state': per-parameter
        {name: array or int}}."""
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            settings = {k: v for k, v in group.items() if k != "params"}
            groups.append({**settings, "params": list(range(start, start + n))})
            start += n
        return {"hyper": self.param_groups[0].hyper(), "param_groups": groups,
                "state": [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                          for s in self.state]}

    def load_state_dict(self, state_dict):
        """Load what state_dict() gave. Without 'param_groups' (a one-group file, or Keras's
        {'state': ...}), 'hyper', if any, applies to every group. Everything is checked before
        anything changes, so a bad file leaves the optimizer as it was."""
        name, params, states = type(self).__name__, self.params, state_dict["state"]
        if len(states) != len(params):
            raise ValueError(f"{name}.load_state_dict: state for {len(states)} parameters, "
                             f"optimizer has {len(params)}")
        for i, (p, s) in enumerate(zip(params, states)):
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} "
                                     f"has shape {v.shape}, the parameter {p.shape}")
        if "param_groups" in state_dict:
            saved = state_dict["param_groups"]
            sizes, own = [len(g["params"]) for g in saved], [len(g["params"]) for g in self.param_groups]
            if sizes != own:
                raise ValueError(f"{name}.load_state_dict: groups of {sizes} parameters, the optimizer has {own}")
            updates = [{k: v for k, v in g.items() if k != "params"} for g in saved]
        else:
            updates = [state_dict.get("hyper", {})] * len(self.param_groups)
        groups = [ParamGroup(type(self), {**group, **update}) for group, update in zip(self.param_groups, updates)]
        for group in groups:
            self._check(group)
        self.param_groups = groups
        self.state = [{k: (np.array(v, dtype=p.dtype) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                      for p, s in zip(params, states)]

    def __repr__(self):
        groups = [f"{len(g['params'])} parameters, " + ", ".join(f"{k}={v}" for k, v in g.hyper().items())
                  for g in self.param_groups]
        return f"{type(self).__name__}({'; '.join(groups)})"


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

    def _check(self, group):
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")

    def _update(self, param, grad, state, group):
        decay, momentum = group["weight_decay"], group["momentum"]
        g = grad + decay * param if decay else grad
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        param -= group["lr"] * g


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
        # One adam_steps call per group for all its parameters at the same step and dtype
        # (normally all of them): a fast backend then starts its threads once per call, not per array.
        for group, items in self._with_grads():
            decay, (beta1, beta2) = group["weight_decay"], group["betas"]
            batches = {}
            for param, grad, state in items:
                if not state:
                    state.update(step=0, m=np.zeros_like(param), v=np.zeros_like(param))
                state["step"] += 1
                if decay and not self._decoupled:
                    grad = grad + decay * param
                batches.setdefault((state["step"], param.dtype), []).append((param, grad, state["m"], state["v"]))
            for (step, _), arrays in batches.items():
                eps = group["eps"] / np.sqrt(1 - beta2 ** step) if group["epsilon_hat"] else group["eps"]
                kernels.active().adam_steps(*zip(*arrays), group["lr"], beta1, beta2, eps, step,
                                            decay if self._decoupled else 0.0)


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


# --------------------------------------------------------------------------- gradient clipping
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale every gradient in place by min(1, max_norm / (‖g‖ + 10⁻⁶)), where ‖g‖ is the norm of
    all the gradients together as one vector; returns ‖g‖ as a 0-d Tensor (PyTorch's
    torch.nn.utils.clip_grad_norm_, also lepton_nn.nn.utils.clip_grad_norm_):

        ‖g‖_p = (Σ_i |g_i|^p)^(1/p) = the p-norm of the per-parameter p-norms,   ‖g‖_∞ = max_i |g_i|

    The direction of the update is kept, its length capped. Parameters without a .grad are
    skipped (none at all: the norm is 0). The factor is applied even when it is 1, as PyTorch
    does, so a non-finite norm is never hidden: inf gives the factor 0 (NaN where g was inf),
    NaN makes every gradient NaN. error_if_nonfinite=True raises instead, gradients untouched.
    max_norm=inf only measures the norm.
    """
    owner = "clip_grad_norm_"
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.number)) or not max_norm >= 0:
        raise ValueError(f"{owner}: max_norm must be a number ≥ 0 (inf to only measure), got {max_norm!r}")
    try:
        p = float(norm_type)  # 2, 2.0, float('inf') or 'inf', as PyTorch takes it
    except (TypeError, ValueError):
        p = np.nan
    if not p > 0:
        raise ValueError(f"{owner}: norm_type must be a number > 0 or inf, got {norm_type!r}")

    def norm(a):
        a = np.abs(a)
        return a.max(initial=0) if p == np.inf else (a ** p).sum() ** (1 / p)

    if not grads:
        return Tensor(0.0)
    with np.errstate(over="ignore", invalid="ignore"):  # an inf or NaN norm is the returned answer, not a warning
        total = norm(np.array([norm(g) for g in grads]))
        if error_if_nonfinite and not np.isfinite(total):
            raise RuntimeError(f"{owner}: the total norm of order {norm_type} of the gradients is {total}, so they "
                               "cannot be clipped; error_if_nonfinite=False scales them by it anyway")
        factor = np.minimum(max_norm / (total + 1e-6), 1.0)  # np.minimum keeps a NaN; min() might not
        for g in grads:
            g *= g.dtype.type(factor)
    return Tensor(total)
