"""Process-wide settings lepton_nn makes when it is imported, each only where the user has not.

They are about threads and memory, not results; every one can be overridden from the
environment. What each was measured to do: docs/benchmarks.md, "Process-wide settings".

- OMP_WAIT_POLICY=PASSIVE: OpenMP threads (of the c backend and numba) sleep as soon as a
  parallel loop ends, instead of spinning on the cores the next np.matmul's OpenBLAS threads
  need. Read by the OpenMP runtime when it loads, i.e. when a backend is first used.
- OPENBLAS_THREAD_TIMEOUT=14: the other way round, OpenBLAS's threads spin 2^14 cycles after
  a matmul instead of 2^28 (~0.1 s), so they free the cores for the kernels that come next.
  Read by OpenBLAS when numpy is first imported: it applies only where lepton_nn is imported
  before numpy (the lepton-nn command, the benchmark workers).
- glibc's malloc keeps freed memory for reuse (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_):
  arrays up to MMAP_THRESHOLD come from the heap, which keeps up to TRIM_THRESHOLD free for the
  next step, rather than fresh pages that must be zeroed each time an op allocates its output.

The benchmarks start their peers (PyTorch, TensorFlow, JAX) with `environ_without_our_settings()`,
so that no setting of ours reaches a framework we compare with.
"""
import ctypes
import os

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)


def keep_freed_memory_for_reuse():
    """Set glibc's mmap and trim thresholds (see the module docstring). Returns whether it did:
    not where the user set either threshold, nor where the C library has no mallopt."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "14"}
_set_by_us = set()  # the names of THREAD_DEFAULTS that configure() put into os.environ


def configure():
    for name, value in THREAD_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_by_us.add(name)
    keep_freed_memory_for_reuse()


def environ_without_our_settings():
    """A copy of os.environ without the variables configure() set (those the user set stay):
    the environment of a process that must run as if lepton_nn had never been imported."""
    return {name: value for name, value in os.environ.items()
            if not (name in _set_by_us and value == THREAD_DEFAULTS[name])}
