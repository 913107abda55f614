"""Keras's BatchNormalization, with Keras 3's arguments, defaults and conventions
(keras.layers.BatchNormalization).

Each channel (the `axis`, by default the last: channels-last images (N, H, W, C)) is normalised:

    training (fit, layer trainable):  y = (x − μ_B)/√(σ²_B + epsilon)·gamma + beta
                                      μ_B, σ²_B the batch's mean and biased variance per channel
    inference (evaluate, predict):    y = (x − moving_mean)/√(moving_variance + epsilon)·gamma + beta

and in training the moving statistics follow the batch, as Keras's (the variance biased too):

    moving ← moving·momentum + batch·(1 − momentum)       momentum 0.99 (PyTorch's is 1 − this: 0.1,
                                                          and PyTorch's running_var takes σ²_B unbiased)

Weights, in Keras's order and names: gamma, beta (trainable; none with scale=False /
center=False), moving_mean, moving_variance (never trained by gradient: always in
non_trainable_weights, and saved and loaded with the others by model.save / load_model).

Keras 3's freezing rule: with layer.trainable = False the layer runs in inference mode even in
fit, so a frozen layer (a transferred model's) changes neither gamma, beta nor its moving
statistics. Keras does not refuse a batch of one (σ²_B = 0, y = beta), so neither does this
layer; an empty batch changes nothing (inference mode). The normalisation is
functional.batch_norm's op and kernel on the channel axis moved to axis 1 (a view).
"""
import numpy as np

from lepton_nn import checks, ops
from lepton_nn import functional as F
from lepton_nn.keras.layers import _initializer, _initializers_config
from lepton_nn.keras.sequence import _KerasWeights
from lepton_nn.tensor import apply

_TRAINABLE = ("gamma", "beta")


class BatchNormalization(_KerasWeights):
    """Normalise each channel with the batch's statistics in fit and the moving ones otherwise,
    then scale by gamma and shift by beta (see the module docstring for the equations)."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        owner = self._owner
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"{owner}: axis must be an int, got {axis!r}")
        self.axis = int(axis)
        self.momentum = checks.finite_number(momentum, owner, "momentum", minimum=0)
        if self.momentum > 1:
            raise ValueError(f"{owner}: momentum must be a number in [0, 1], got {momentum!r}")
        self.epsilon = checks.finite_number(epsilon, owner, "epsilon")
        if self.epsilon <= 0:
            raise ValueError(f"{owner}: epsilon must be a finite number > 0, got {epsilon!r}")
        self.center = checks.flag(center, owner, "center")
        self.scale = checks.flag(scale, owner, "scale")
        for name, value in (("beta_initializer", beta_initializer), ("gamma_initializer", gamma_initializer),
                            ("moving_mean_initializer", moving_mean_initializer),
                            ("moving_variance_initializer", moving_variance_initializer)):
            setattr(self, name, _initializer(value, owner, name))

    def _channel_axis(self, input_shape):
        """`axis` as an index ≥ 1 of an input of this rank."""
        rank = len(input_shape)
        if rank < 2 or not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._owner}: axis {self.axis} must name an axis of the input other than the batch "
                             f"axis 0, got input shape {tuple(input_shape)}")
        return self.axis % rank

    def compute_output_shape(self, input_shape):
        self._channel_axis(input_shape)
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        shape = (input_shape[self._channel_axis(input_shape)],)
        used = (("gamma", self.scale), ("beta", self.center), ("moving_mean", True), ("moving_variance", True))
        return [(name, shape) for name, on in used if on]

    def build(self, input_shape):
        for name, shape in self.weight_shapes(input_shape):
            self._new(name, shape, getattr(self, f"{name}_initializer"))

    # ------------------------------------------------------------------ trainable or not
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """False freezes gamma and beta and, as in Keras 3, makes fit run the layer in inference
        mode; the moving statistics never require gradients either way."""
        self._trainable = bool(value)
        for name, p in self._params.items():
            p.requires_grad = self._trainable and name in _TRAINABLE

    @property
    def trainable_weights(self):
        return [p for name, p in self.named_weights() if name in _TRAINABLE] if self._trainable else []

    @property
    def non_trainable_weights(self):
        return [p for name, p in self.named_weights() if not self._trainable or name not in _TRAINABLE]

    # ------------------------------------------------------------------ calling
    def forward(self, x, training=False):
        axis = self._channel_axis(x.shape)
        channels = self._params["moving_mean"].shape[0]
        if x.shape[axis] != channels or x.dtype != self.dtype:
            raise ValueError(f"{self._owner}: built for {channels} channels on axis {axis} in {self.dtype}, got "
                             f"input shape {tuple(x.shape)} {x.dtype}")
        # The op and functional.batch_norm normalise axis 1: move the channel axis there (a view) and back.
        order = (0, axis) + tuple(a for a in range(1, x.ndim) if a != axis)
        xc = x if axis == 1 else x.permute(*order)
        gamma, beta, mean, var = (self._params.get(n) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        if training and self._trainable and x.size > 0:
            # Keras's moving ← moving·k + batch·(1 − k) is the op's update with momentum 1 − k and
            # the biased variance (correction 0); the op also takes a batch of one, as Keras does.
            y = apply(ops.BatchNorm, xc, gamma, beta, eps=self.epsilon, running_mean=mean.data,
                      running_var=var.data, momentum=1 - self.momentum, correction=0)
        else:
            y = F.batch_norm(xc, mean, var, gamma, beta, training=False, eps=self.epsilon)
        return y if axis == 1 else y.permute(*(int(a) for a in np.argsort(order)))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                **_initializers_config(self, ("beta_initializer", "gamma_initializer", "moving_mean_initializer",
                                              "moving_variance_initializer"))}
