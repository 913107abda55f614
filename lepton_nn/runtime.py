"""Process-wide settings lepton_nn makes when it is imported, each only where the user has not.

They are about threads and memory, not results, and each was measured on the article's CNN on
a 2-core machine (docs/benchmarks.md). Every one can be overridden from the environment.

- OMP_WAIT_POLICY=PASSIVE: after each parallel loop, OpenMP threads (of the c backend and of
  numba's default threading layer) spin for a while before sleeping. They share the cores with
  the OpenBLAS threads of the np.matmul that usually comes next, and the spinning starves them
  (training steps 2–4× slower). Passive threads sleep at once; a wake-up costs microseconds.
  Read by the OpenMP runtime when it loads, i.e. when a backend is first used.
- OPENBLAS_THREAD_TIMEOUT=14: the other way round, after each matmul OpenBLAS's worker threads
  spin for 2^28 cycles (~0.1 s) before sleeping; a profile of a training step showed the
  spinning thread in 30 % of the samples, holding the core the C kernels needed next. 2^14
  cycles is a few microseconds (~10 % faster steps). Read by OpenBLAS when numpy is first
  imported, so it applies only where lepton_nn is imported before numpy (the lepton-nn
  command, the benchmark workers).
- glibc's malloc keeps freed memory for reuse (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_):
  by default it serves each array of more than a few MB with fresh pages from the kernel and
  gives them back when the array is freed, so an op whose multi-MB outputs are freed and
  allocated again each step pays for zeroing fresh pages every time (evaluating at batch 1000:
  2,155 page faults per batch and 42,000 images/s; with this setting none, 61,000 images/s).
  Arrays up to MMAP_THRESHOLD come from the heap instead, which keeps up to TRIM_THRESHOLD of
  free memory for the next step.

The benchmarks start their peers (PyTorch, TensorFlow, JAX) with `environ_without_our_settings()`,
so that no setting of ours reaches a framework we compare with (docs/benchmarks.md).
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
