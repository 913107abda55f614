"""Kernel backends and the switch between them.

The kernels are the names in `reference.KERNELS`, each written once in `reference.py` (NumPy,
the specification). A backend is a module that implements any of them with the reference's
signatures; every kernel it lacks is served by the reference. So a backend may be partial: a
new kernel works everywhere as soon as its reference exists, and a fast version can follow
later, backend by backend (as needle's devices forward what they lack). `backends()` and
`lepton-nn backends` say which kernels each backend runs natively.

The op layer asks `active()` for the current backend on every call, so switching takes effect
immediately:

    lepton_nn.set_backend("numba")          # for the rest of the process
    with lepton_nn.backend("c"): ...        # for a block
    LEPTON_NN_BACKEND=numpy python ...      # from the environment, at first use

Without a choice, the fastest available backend is used (c, then numba, then numpy).
Backends are imported lazily: importing lepton_nn compiles nothing.

A backend module may hold a kernel that the engine does not run yet, listed in its
NOT_USED_YET (measured slower than the reference where the engine calls it);
`LEPTON_NN_USE_ALL_KERNELS=1` runs such kernels anyway, to measure them in a real step. The
other way round, `LEPTON_NN_REFERENCE_KERNELS=gemm,adam_steps` (names of KERNELS, read when a
backend is first loaded) makes every backend run those kernels by the reference, to measure
what a fast kernel buys in a step: with gemm, the dense layer's products run on NumPy's @
(OpenBLAS) instead of our GEMM (docs/benchmarks.md, "Inside a training step").

The fast backends' contract, what a backend checks and what it trusts: the op layer
(lepton_nn.functional) checks what the arguments mean before it calls a kernel: float32 or
float64 inputs of one dtype, shapes that agree, windows that fit their input, pool padding at
most half the window, class labels in [0, K). A backend trusts that, except where a wrong
argument would make its compiled loops read or write outside an array: there it checks again
and raises (class labels against K, through lepton_nn.checks; for C also array shapes and
dtypes). It makes its inputs C-contiguous, copying only when they are not, and allocates its
outputs; its scratch arrays come from lepton_nn/kernels/workspace.py.
"""
import contextlib
import importlib
import os
from dataclasses import dataclass

from lepton_nn.kernels import reference
from lepton_nn.kernels.reference import KERNELS

# Fastest first: the default is the first available one.
_MODULES = {"c": "lepton_nn.kernels.c_backend",
            "numba": "lepton_nn.kernels.numba_backend",
            "numpy": "lepton_nn.kernels.reference"}
NAMES = tuple(_MODULES)  # every backend's name, known without importing any of them


class Backend:
    """Every kernel of KERNELS as an attribute: the module's own where it has one (native),
    the reference's otherwise (fallback). `module` is the backend's module itself."""

    def __init__(self, name, module):
        self.name, self.module = name, module
        # a kernel the module has but lists in NOT_USED_YET (measured slower than the reference
        # where the engine calls it) stays out of the engine, yet callable and benchmarked;
        # LEPTON_NN_USE_ALL_KERNELS=1 puts it in, to measure it in a real step
        unused = () if os.environ.get("LEPTON_NN_USE_ALL_KERNELS") == "1" else getattr(module, "NOT_USED_YET", ())
        unused = (*unused, *reference_kernels_requested())
        self.native = tuple(k for k in KERNELS
                            if getattr(module, k, None) not in (None, getattr(reference, k)) and k not in unused)
        if module is reference:
            self.native = KERNELS
        self.fallback = tuple(k for k in KERNELS if k not in self.native)
        for kernel in KERNELS:
            setattr(self, kernel, getattr(module if kernel in self.native else reference, kernel))

    def __repr__(self):
        return f"<lepton_nn backend {self.name}: {len(self.native)} of {len(KERNELS)} kernels native>"


def reference_kernels_requested():
    """The kernels LEPTON_NN_REFERENCE_KERNELS names (comma-separated), checked against KERNELS."""
    names = tuple(n.strip() for n in os.environ.get("LEPTON_NN_REFERENCE_KERNELS", "").split(",") if n.strip())
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        raise ValueError(f"LEPTON_NN_REFERENCE_KERNELS: unknown kernel(s) {', '.join(map(repr, unknown))}; "
                         f"kernels are: {', '.join(KERNELS)}")
    return names


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str = ""       # why it is unavailable; empty when available
    native: tuple = ()     # kernels it runs itself
    fallback: tuple = ()   # kernels the reference runs for it

    def __str__(self):
        if not self.available:
            return f"{self.name:6s} unavailable: {self.reason}"
        text = f"{self.name:6s} available: {len(self.native)} of {len(KERNELS)} kernels native"
        if self.name != "numpy" and self.fallback:
            text += f"; falls back to the numpy reference for {', '.join(self.fallback)}"
        return text


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
    _loaded[name] = Backend(name, module)
    return _loaded[name]


def _try_load(name):
    try:
        _load(name)
        return True
    except RuntimeError:
        return False


def backends():
    """Every backend: whether it can be used here (if not, why) and which kernels it runs natively."""
    infos = []
    for name in _MODULES:
        if _try_load(name):
            backend = _loaded[name]
            infos.append(BackendInfo(name, True, "", backend.native, backend.fallback))
        else:
            infos.append(BackendInfo(name, False, _failures[name]))
    return infos


def available_backends():
    return [info.name for info in backends() if info.available]


def native_backends(*kernel_names):
    """The available backends that run every one of `kernel_names` natively (numpy always does)."""
    return [info.name for info in backends() if info.available and set(kernel_names) <= set(info.native)]


def set_backend(name):
    """Make `name` the backend for every kernel call from now on; returns the previous choice
    (None if there was none yet). An explicit choice never consults LEPTON_NN_BACKEND, so it
    works even where that variable holds a bad value."""
    global _active
    previous = _active
    if name is not None:
        _load(name)
    _active = name
    return previous


def active_name():
    global _active
    if _active is None:
        requested = os.environ.get("LEPTON_NN_BACKEND")
        if requested:
            try:
                _load(requested)
            except (ValueError, RuntimeError) as err:  # named once, here, with the way out
                raise type(err)(f"LEPTON_NN_BACKEND={requested!r}: {err} (unset it, or choose one with "
                                "lepton_nn.set_backend / --backend)") from None
            _active = requested
        else:  # the first that loads; the others are not imported (numba alone costs ~100 MB)
            _active = next(name for name in _MODULES if _try_load(name))
    return _active


def active():
    """The current backend (a Backend: every kernel, native or the reference's)."""
    return _load(active_name())


def get(name):
    """Backend `name` (raises if it is unknown or unavailable)."""
    return _load(name)


@contextlib.contextmanager
def backend(name):
    """Use backend `name` inside a `with` block, then restore the previous one."""
    previous = set_backend(name)
    try:
        yield get(name)
    finally:
        set_backend(previous)  # None: back to the default (or LEPTON_NN_BACKEND) at next use
