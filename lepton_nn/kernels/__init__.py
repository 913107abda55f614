"""Kernel backends and the switch between them.

A backend is a module that defines every name in `KERNELS` with the signatures of
`lepton_nn.kernels.reference`, the NumPy specification. The op layer asks `active()` for the
current backend on every call, so switching takes effect immediately:

    lepton_nn.set_backend("numba")          # for the rest of the process
    with lepton_nn.backend("c"): ...        # for a block
    LEPTON_NN_BACKEND=numpy python ...      # from the environment, at first use

Without a choice, the fastest available backend is used (c, then numba, then numpy).
Backends are imported lazily: importing lepton_nn compiles nothing.
"""
import contextlib
import importlib
import os
from dataclasses import dataclass

KERNELS = (
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "relu_forward", "relu_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "adam_step", "adam_steps",
    "conv2d_relu_max_pool2d_forward", "conv2d_relu_max_pool2d_backward",
)

# Fastest first: the default is the first available one.
_MODULES = {"c": "lepton_nn.kernels.c_backend",
            "numba": "lepton_nn.kernels.numba_backend",
            "numpy": "lepton_nn.kernels.reference"}


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str  # why it is unavailable; empty when available

    def __str__(self):
        return f"{self.name:6s} {'available' if self.available else 'unavailable: ' + self.reason}"


_loaded = {}
_failures = {}
_active = None


def _load(name):
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; valid backends are {', '.join(_MODULES)}")
    if name in _loaded:
        return _loaded[name]
    if name in _failures:
        raise RuntimeError(f"backend {name!r} is unavailable: {_failures[name]}")
    try:
        module = importlib.import_module(_MODULES[name])
    except Exception as err:  # a missing compiler, extension or package; or a broken build
        _failures[name] = f"{type(err).__name__}: {err}"
        raise RuntimeError(f"backend {name!r} is unavailable: {_failures[name]}") from err
    missing = [k for k in KERNELS if not hasattr(module, k)]
    if missing:
        _failures[name] = f"missing kernels {missing}"
        raise RuntimeError(f"backend {name!r} is unavailable: {_failures[name]}")
    _loaded[name] = module
    return module


def _try_load(name):
    try:
        _load(name)
        return True
    except RuntimeError:
        return False


def backends():
    """Every backend with whether it can be used here and, if not, why."""
    return [BackendInfo(name, True, "") if _try_load(name) else BackendInfo(name, False, _failures[name])
            for name in _MODULES]


def available_backends():
    return [info.name for info in backends() if info.available]


def set_backend(name):
    """Make `name` the backend for every kernel call from now on; returns the previous name."""
    global _active
    previous = active_name()
    _load(name)
    _active = name
    return previous


def active_name():
    global _active
    if _active is None:
        requested = os.environ.get("LEPTON_NN_BACKEND")
        if requested:
            _load(requested)
            _active = requested
        else:  # the first that loads; the others are not imported (numba alone costs ~100 MB)
            _active = next(name for name in _MODULES if _try_load(name))
    return _active


def active():
    """The module of the current backend."""
    return _load(active_name())


def get(name):
    """The module of backend `name` (raises if it is unknown or unavailable)."""
    return _load(name)


@contextlib.contextmanager
def backend(name):
    """Use backend `name` inside a `with` block, then restore the previous one."""
    previous = set_backend(name)
    try:
        yield get(name)
    finally:
        set_backend(previous)
