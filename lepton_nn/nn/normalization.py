"""Batch normalisation as Modules: BatchNorm1d and BatchNorm2d, PyTorch's, calling functional.batch_norm.

Each channel c (axis 1) is normalised with statistics shared by the whole batch:

    training:  y = (x − μ_B)/√(σ²_B + eps)·weight + bias    μ_B, σ²_B (biased): the batch's, per channel
    eval:      y = (x − running_mean)/√(running_var + eps)·weight + bias

and in training the buffers follow the batch (σ²_B unbiased there, as PyTorch):

    running ← (1 − momentum)·running + momentum·batch      (momentum=None: the plain average of
                                                             every batch so far, 1/num_batches_tracked)

`train()` / `eval()` choose the mode. The running statistics are buffers (Module.register_buffer),
so state_dict() has PyTorch's keys, weight, bias, running_mean, running_var and
num_batches_tracked, and a PyTorch BatchNorm's state_dict loads unchanged. With
track_running_stats=False there are no buffers and the batch's statistics are used in both modes.
Equations and backward: kernels/reference.py batch_norm_*; docs/equations.md, "Batch normalisation".
"""
import numpy as np

from lepton_nn import checks
from lepton_nn import functional as F
from lepton_nn.nn.module import Module, Parameter


class _BatchNorm(Module):
    """The shared body; subclasses say which input ranks they take (INPUTS: rank → layout)."""
    INPUTS = {}

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        self.num_features = checks.int_at_least(num_features, owner, "num_features", 1)
        self.eps = checks.finite_number(eps, owner, "eps")
        if self.eps <= 0:
            raise ValueError(f"{owner}: eps must be a finite number > 0, got {eps!r}")
        if momentum is not None:
            momentum = checks.finite_number(momentum, owner, "momentum", minimum=0)
            if momentum > 1:
                raise ValueError(f"{owner}: momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.momentum = momentum
        self.affine = checks.flag(affine, owner, "affine")
        self.track_running_stats = checks.flag(track_running_stats, owner, "track_running_stats")
        checks.compute_dtype(dtype, owner, "dtype")
        self.dtype = np.dtype(dtype)
        self.weight = Parameter(np.ones(self.num_features, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(self.num_features, dtype=dtype)) if self.affine else None
        tracked = self.track_running_stats
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype) if tracked else None)
        self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype) if tracked else None)
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64) if tracked else None)

    def reset_running_stats(self):
        """Back to no batches seen: running_mean 0, running_var 1, num_batches_tracked 0."""
        if self.track_running_stats:
            self.running_mean[...], self.running_var[...], self.num_batches_tracked[...] = 0, 1, 0

    def forward(self, x):
        shape = x.shape if hasattr(x, "shape") else np.shape(x)
        owner = type(self).__name__
        if len(shape) not in self.INPUTS:
            raise ValueError(f"{owner}: expected input {' or '.join(self.INPUTS.values())}, got shape {tuple(shape)}")
        if shape[1] != self.num_features:
            raise ValueError(f"{owner}: expected {self.num_features} channels on axis 1 of the input, "
                             f"got shape {tuple(shape)}")
        if getattr(x, "dtype", self.dtype) != self.dtype:
            raise ValueError(f"{owner}: input dtype {x.dtype} differs from the module's dtype {self.dtype}")
        # As PyTorch: training updates the buffers; with none (track_running_stats=False) both
        # modes normalise with the batch's statistics.
        update = self.training and self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if update and self.momentum is None:
            momentum = 1 / (int(self.num_batches_tracked) + 1)  # the mean of every batch, this one included
        use_buffers = self.track_running_stats and (update or not self.training)
        y = F.batch_norm(x, self.running_mean if use_buffers else None, self.running_var if use_buffers else None,
                         self.weight, self.bias, training=self.training or not self.track_running_stats,
                         momentum=momentum, eps=self.eps)
        if update:  # counted after the call, so a batch it refused is not counted
            self.num_batches_tracked += 1
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) features or (N, C, L) sequences, per channel C
    (statistics over N, and L), as torch.nn.BatchNorm1d. See the module docstring."""
    INPUTS = {2: "(N, C)", 3: "(N, C, L)"}


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) images, per channel C (statistics over N, H and W),
    as torch.nn.BatchNorm2d. See the module docstring."""
    INPUTS = {4: "(N, C, H, W)"}
