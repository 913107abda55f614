"""lepton_nn: a from-scratch neural-network engine to read, verify and benchmark.

Layers, bottom up (each imports only from below):
    kernels      NumPy reference (the specification), Numba and C backends  lepton_nn/kernels/
    ops          forward and backward of every op, side by side              lepton_nn/ops.py
    tensor       Tensor and the autograd engine                              lepton_nn/tensor.py
    functional   layers and losses as functions (PyTorch-style, NCHW)        lepton_nn/functional.py
    gradcheck    central-difference gradient checker                         lepton_nn/gradcheck.py
Importing it first sets a few process-wide thread and memory options (lepton_nn/runtime.py).
"""
from lepton_nn import runtime

runtime.configure()  # threads and memory, before numpy and the kernels load: see runtime.py

from lepton_nn import functional  # noqa: E402 (after the settings above)
from lepton_nn.gradcheck import GradcheckError, GradcheckReport, gradcheck  # noqa: E402
from lepton_nn.kernels import backend, backends, set_backend  # noqa: E402
from lepton_nn.rng import seed  # noqa: E402
from lepton_nn.tensor import Function, Tensor, detect_anomaly, from_numpy, no_grad, tensor  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Function", "Tensor", "tensor", "from_numpy", "no_grad", "detect_anomaly", "functional", "gradcheck", "GradcheckReport", "GradcheckError",
           "backend", "backends", "set_backend", "seed"]
