"""lepton_nn: a from-scratch neural-network engine to read, verify and benchmark.

Layers, bottom up (each imports only from below):
    kernels      NumPy reference (the specification), Numba and C backends  lepton_nn/kernels/
    ops          forward and backward of every op, side by side              lepton_nn/ops.py
    tensor       Tensor and the autograd engine                              lepton_nn/tensor.py
    functional   layers and losses as functions (PyTorch-style, NCHW)        lepton_nn/functional.py
    gradcheck    central-difference gradient checker                         lepton_nn/gradcheck.py
"""
import os

# After each matmul, OpenBLAS (numpy's BLAS) keeps its worker threads spinning for about 0.1 s
# (2^28 cycles) before they sleep. On a small machine that spin holds the core the c and numba
# kernels need next: a profile of a training step showed the spinning thread in 30 % of the
# samples, and the step measured ~10 % faster with a 2^14-cycle (a few µs) spin. OpenBLAS
# reads this once, when numpy is first imported, so it applies where lepton_nn is imported
# before numpy (the lepton-nn command, the benchmark workers). A user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "14")

from lepton_nn import functional  # noqa: E402 (after the setting above)
from lepton_nn.gradcheck import GradcheckError, GradcheckReport, gradcheck  # noqa: E402
from lepton_nn.kernels import backend, backends, set_backend  # noqa: E402
from lepton_nn.rng import seed  # noqa: E402
from lepton_nn.tensor import Tensor, no_grad, tensor  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Tensor", "tensor", "no_grad", "functional", "gradcheck", "GradcheckReport", "GradcheckError",
           "backend", "backends", "set_backend", "seed"]
