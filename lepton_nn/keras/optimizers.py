"""Keras optimizer names and classes, with Keras's defaults, mapped onto lepton_nn.optim.

A Keras optimizer is created before the model's weights exist, so these objects only hold the
settings; `model.compile` / `fit` calls `build(params)` to make the lepton_nn.optim optimizer
that does the work. The updates are Keras's:

- Adam and AdamW add ε to √v, the uncorrected second moment, as Keras does (optim.Adam's
  epsilon_hat=True); lepton_nn.optim.Adam on its own adds it to √v̂, as PyTorch does. With
  gradients near ε the two differ several-fold in the first steps (docs/equations.md, "Adam").
- 'sgd' momentum uses PyTorch's buffer; with a constant learning rate it is the same update.
"""
from lepton_nn import optim


class Optimizer:
    optim_class = None

    def __init__(self, learning_rate):
        self._learning_rate = self.optim_class.HYPER["lr"](type(self).__name__, "learning_rate", learning_rate)
        self._built = None  # the lepton_nn.optim optimizer, once build() has run

    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = self.optim_class.HYPER["lr"](type(self).__name__, "learning_rate", value)
        if self._built is not None:
            self._built.lr = self._learning_rate

    def build(self, params):
        """The lepton_nn.optim optimizer for these parameters (made once per model)."""
        self._built = self.optim_class(params, **self._optim_kwargs())
        return self._built

    def get_config(self):
        raise NotImplementedError

    def __repr__(self):
        return f"keras.optimizers.{type(self).__name__}({self.get_config()})"


class SGD(Optimizer):
    optim_class = optim.SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.optim_class.check(momentum=momentum, nesterov=nesterov)  # refused now, not at fit
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _optim_kwargs(self):
        return {"lr": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    optim_class = optim.Adam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.optim_class.check(betas=(beta_1, beta_2), eps=epsilon)  # NaN or out of range: refused now, not at fit
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _optim_kwargs(self):
        return {"lr": self.learning_rate, "betas": (self.beta_1, self.beta_2), "eps": self.epsilon,
                "epsilon_hat": True}  # Keras's ε, on the uncorrected √v

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay; Keras's default weight_decay is 0.004."""
    optim_class = optim.AdamW

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon)
        self.optim_class.check(weight_decay=weight_decay)
        self.weight_decay = float(weight_decay)

    def _optim_kwargs(self):
        return {**super()._optim_kwargs(), "weight_decay": self.weight_decay}

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(identifier):
    """A Keras optimizer from a name ('adam', 'sgd', 'adamw'), or the object given: a Keras
    optimizer, or a lepton_nn.optim optimizer already made for the model's parameters."""
    if isinstance(identifier, (Optimizer, optim.Optimizer)):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(_BY_NAME)}, a keras.optimizers "
                     f"object or a lepton_nn.optim optimizer")
