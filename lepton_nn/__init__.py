"""lepton_nn: a from-scratch neural-network engine to read, verify and benchmark.

Layers, bottom up (each imports only from below):
    kernels      NumPy reference (the specification), Numba and C backends  lepton_nn/kernels/
    ops          forward and backward of every op, side by side              lepton_nn/ops.py
    tensor       Tensor and the autograd engine                              lepton_nn/tensor.py
    functional   layers and losses as functions (PyTorch-style, NCHW)        lepton_nn/functional.py
    gradcheck    central-difference gradient checker                         lepton_nn/gradcheck.py
Importing it first sets a few process-wide thread and memory options (lepton_nn/runtime.py).

The other public subpackages are attributes too, imported at first use (PEP 562), so that
`import lepton_nn` loads numpy and the layers listed above, neither numba nor Keras:

    import lepton_nn as ln
    model = ln.nn.Sequential(ln.nn.Linear(4, 2))     # imports lepton_nn.nn here
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

# Imported by __getattr__ at first access, not here: all of them would more than double the time of
# `import lepton_nn`, keras alone adds ~100 ms (docs/benchmarks.md, "Measurements behind the code").
# `functional` is imported above; `gradcheck` and `tensor` name the functions of those modules.
SUBPACKAGES = ("nn", "optim", "keras", "functional", "metrics", "data", "onnx", "lr_scheduler", "viz", "profiler",
               "tour", "transfer", "rl", "shakespeare", "plots")


def __getattr__(name):
    """`lepton_nn.keras` and the other SUBPACKAGES, imported the first time they are asked for;
    the import makes each an attribute of this module, so this runs once per subpackage."""
    if name in SUBPACKAGES:
        import importlib
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # a dependency of it is missing: say which
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r} "
                                 f"(this install has no {__name__}/{name}.py)") from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBPACKAGES))
