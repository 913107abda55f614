"""Kernel benchmarks: one list of cases, run on every backend and in PyTorch, side by side.

Each `Case` is one fwd+bwd pass of one layer at one shape: the MNIST CNN's at batch 64 and a
many-channel convolution. `case.make(backend)` builds seeded float32 inputs once and returns
a zero-argument function that runs the pass through that backend's kernels and returns its
outputs; `case.make_torch()` does the same in PyTorch. Timing calls only the returned
function, so input creation is never timed (outputs are allocated inside, as in training).

Two users of this one list:
    lepton-nn bench --kernels          the table (`run`, `format_table`), below
    pytest benchmarks/ --benchmark-only pytest-benchmark, one group per case (benchmarks/)

Before a function is timed, `prepare` calls it once — the warm-up, in which numba compiles or
loads its cache — and checks its outputs against the NumPy reference, so a wrong kernel is
never timed. Dense layers are `np.matmul` in every backend (the engine's Linear op calls BLAS
directly), so they are run once, as the row "shared".

FLOP counts: convolution and dense count 2 per multiply-add of each GEMM-shaped pass plus one
per bias element; the memory-bound kernels (pooling, relu, cross-entropy, Adam) count the
arithmetic of their equations, stated in each case's `flops_formula`. Their GFLOP/s is small by
nature; the "% GEMM" column puts every rate against this machine's measured float32 GEMM rate.
"""
import gc
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from lepton_nn import kernels

SHARED = "shared"  # backend label of a case that runs the same code (np.matmul) for every backend
DTYPE = np.float32


@dataclass(frozen=True)
class Case:
    name: str                 # short id: pytest id and JSON key
    title: str                # what runs, for people
    shape: str
    flops: int                # per call of the fwd+bwd function
    flops_formula: str
    make: Callable[[str], Callable[[], tuple]]
    make_torch: Callable[[], Callable[[], tuple]]
    target: Optional[float] = None  # fastest backend's time / PyTorch's time must be at most this
    shared: bool = False            # same code for every backend: run once, as "shared"


def _rng():
    return np.random.default_rng(0)


def _normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=DTYPE) * DTYPE(scale))


def _torch():
    """torch with as many threads as the engine's kernels use, or None if it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(thread_count())
    return torch


def _torch_arrays(arrays, grad_for=()):
    torch = _torch()
    tensors = [torch.from_numpy(a) for a in arrays]
    for i in grad_for:
        tensors[i].requires_grad_()
    return tensors


def _detached(*tensors):
    return tuple(t.detach().numpy() for t in tensors)


# --------------------------------------------------------------------------- convolution
def conv_case(name, n, c_in, c_out, size, pad, need_x, target):
    """conv2d 3×3, stride 1: forward, then the gradients of weight and bias (and of x if need_x)."""
    k, stride, padding = 3, (1, 1), (pad, pad)
    out = size + 2 * pad - k + 1

    def inputs():
        rng = _rng()
        return (_normal(rng, (n, c_in, size, size)), _normal(rng, (c_out, c_in, k, k), (c_in * k * k) ** -0.5),
                _normal(rng, (c_out,)), _normal(rng, (n, c_out, out, out)))

    def make(backend):
        kern = kernels.get(backend)
        x, w, b, g = inputs()

        def run():
            y = kern.conv2d_forward(x, w, b, stride, padding)
            grad_x, grad_w, grad_b = kern.conv2d_backward(g, x, w, stride, padding, need_x=need_x)
            return (y, grad_w, grad_b) + ((grad_x,) if need_x else ())
        return run

    def make_torch():
        torch = _torch()
        x, w, b, g = _torch_arrays(inputs(), grad_for=(1, 2, 0) if need_x else (1, 2))
        wanted = (w, b, x) if need_x else (w, b)

        def run():
            y = torch.nn.functional.conv2d(x, w, b, stride=1, padding=pad)
            return _detached(y, *torch.autograd.grad(y, wanted, g))
        return run

    per_pass, per_output = 2 * n * c_out * out * out * c_in * k * k, n * c_out * out * out
    passes = 3 if need_x else 2
    grads = "x, weight, bias" if need_x else "weight, bias; no input grad"
    return Case(
        name, f"conv {c_in}→{c_out} 3×3 pad {pad}, fwd+bwd ({grads})",
        f"x {n}×{c_in}×{size}×{size}, w {c_out}×{c_in}×3×3", passes * per_pass + 2 * per_output,
        f"{passes}·2·N·Co·Ho·Wo·Ci·kH·kW + 2·N·Co·Ho·Wo", make, make_torch, target)


# --------------------------------------------------------------------------- pooling and relu
def max_pool_case(name, n, c, size, target):
    """max-pool 2×2 stride 2: forward (values and argmax), then the scatter of the gradient."""
    out = size // 2

    def inputs():
        rng = _rng()
        return _normal(rng, (n, c, size, size)), _normal(rng, (n, c, out, out))

    def make(backend):
        kern = kernels.get(backend)
        x, g = inputs()

        def run():
            y, argmax = kern.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
            return y, kern.max_pool2d_backward(g, argmax, x.shape)
        return run

    def make_torch():
        torch = _torch()
        x, g = _torch_arrays(inputs(), grad_for=(0,))

        def run():
            y = torch.nn.functional.max_pool2d(x, 2)
            return _detached(y, *torch.autograd.grad(y, x, g))
        return run

    return Case(name, "max-pool 2×2 stride 2, fwd+bwd", f"x {n}×{c}×{size}×{size}", 4 * n * c * out * out,
                "(kH·kW − 1 comparisons + 1 add)·N·C·Ho·Wo", make, make_torch, target)


def relu_case(name, shape, target):
    """relu forward, then its backward (the gradient masked by x > 0)."""
    def inputs():
        rng = _rng()
        return _normal(rng, shape), _normal(rng, shape)

    def make(backend):
        kern = kernels.get(backend)
        x, g = inputs()

        def run():
            return kern.relu_forward(x), kern.relu_backward(g, x)
        return run

    def make_torch():
        torch = _torch()
        x, g = _torch_arrays(inputs(), grad_for=(0,))

        def run():
            y = torch.nn.functional.relu(x)
            return _detached(y, *torch.autograd.grad(y, x, g))
        return run

    return Case(name, "relu, fwd+bwd", "x " + "×".join(map(str, shape)), 2 * int(np.prod(shape)),
                "2 per element (max; mask-multiply)", make, make_torch, target)


# --------------------------------------------------------------------------- dense
def dense_case(name, batch, n_in, n_out, target):
    """Dense layer exactly as lepton_nn.ops.Linear computes it: y = x·Wᵀ + b, then
    ∂x = g·W, ∂W = gᵀ·x, ∂b = Σ_rows g. np.matmul (BLAS) in every backend: no kernel of its own."""
    def inputs():
        rng = _rng()
        return (_normal(rng, (batch, n_in)), _normal(rng, (n_out, n_in), n_in ** -0.5),
                _normal(rng, (n_out,)), _normal(rng, (batch, n_out)))

    def make(backend):
        kernels.get(backend)  # the backend must exist, even though it is not called
        x, w, b, g = inputs()

        def run():
            y = x @ w.T
            y += b
            return y, g @ w, g.T @ x, g.sum(axis=0)
        return run

    def make_torch():
        torch = _torch()
        x, w, b, g = _torch_arrays(inputs(), grad_for=(0, 1, 2))

        def run():
            y = torch.nn.functional.linear(x, w, b)
            return _detached(y, *torch.autograd.grad(y, (x, w, b), g))
        return run

    return Case(name, f"dense {n_in}→{n_out}, fwd+bwd (x, weight, bias)", f"x {batch}×{n_in}, W {n_out}×{n_in}",
                3 * 2 * batch * n_in * n_out + 2 * batch * n_out, "3·2·M·K·N + 2·M·N", make, make_torch,
                target, shared=True)


# --------------------------------------------------------------------------- loss and optimiser
def cross_entropy_case(name, batch, classes, target):
    """softmax cross-entropy per sample, then its gradient for an upstream gradient of 1/N each."""
    def inputs():
        rng = _rng()
        return (_normal(rng, (batch, classes), 3.0), rng.integers(0, classes, batch),
                np.full(batch, 1 / batch, DTYPE))

    def make(backend):
        kern = kernels.get(backend)
        logits, labels, grad_loss = inputs()

        def run():
            loss, probs = kern.softmax_cross_entropy_forward(logits, labels)
            return loss, kern.softmax_cross_entropy_backward(grad_loss, probs, labels)
        return run

    def make_torch():
        torch = _torch()
        logits, labels, grad_loss = _torch_arrays(inputs(), grad_for=(0,))

        def run():
            loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            return _detached(loss, *torch.autograd.grad(loss, logits, grad_loss))
        return run

    return Case(name, "softmax cross-entropy, fwd+bwd", f"logits {batch}×{classes}", 7 * batch * classes,
                "7 per logit (max, −, exp, Σ, −log, exp; ×g)", make, make_torch, target)


def adam_case(name, shapes, target):
    """One Adam step over every parameter array of a model, one adam_steps call for all of them,
    as lepton_nn.optim.Adam does it (lr 1e-3, β 0.9/0.999, ε 1e-8, no weight decay). Each call of the
    returned function is the next step, so its bias corrections are those of step 1, 2, 3 …"""
    lr, beta1, beta2, eps = 1e-3, 0.9, 0.999, 1e-8
    size = sum(int(np.prod(s)) for s in shapes)

    def inputs():
        rng = _rng()
        params = [_normal(rng, s, 0.1) for s in shapes]
        grads = [_normal(rng, s, 0.01) for s in shapes]
        return params, grads

    def make(backend):
        kern = kernels.get(backend)
        params, grads = inputs()
        ms = [np.zeros_like(p) for p in params]
        vs = [np.zeros_like(p) for p in params]
        step = [0]

        def run():
            step[0] += 1
            kern.adam_steps(params, grads, ms, vs, lr, beta1, beta2, eps, step[0], 0.0)
            return tuple(params)
        return run

    def make_torch():
        torch = _torch()
        params, grads = inputs()
        tensors = [torch.from_numpy(p).requires_grad_() for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        optimizer = torch.optim.Adam(tensors, lr=lr, betas=(beta1, beta2), eps=eps)  # torch's default path

        def run():
            optimizer.step()
            return _detached(*tensors)
        return run

    return Case(name, f"Adam step over {len(shapes)} parameter arrays", f"{size:,} parameters", 14 * size,
                "14 per parameter (the reference's equations)", make, make_torch, target)


# --------------------------------------------------------------------------- the list
# The MNIST CNN at batch 64: Conv2D(32, 3×3) → MaxPool 2×2 → ReLU → Flatten → Dense 128 → Dense 10.
MNIST_PARAMS = [(32, 1, 3, 3), (32,), (128, 5408), (128,), (10, 128), (10,)]  # 693,962 values

CASES = [
    conv_case("conv1", n=64, c_in=1, c_out=32, size=28, pad=0, need_x=False, target=1.0),
    max_pool_case("maxpool", n=64, c=32, size=26, target=0.2),
    relu_case("relu", (64, 32, 26, 26), target=None),
    dense_case("dense1", batch=64, n_in=5408, n_out=128, target=0.8),
    dense_case("dense2", batch=64, n_in=128, n_out=10, target=None),
    cross_entropy_case("xent", batch=64, classes=10, target=0.5),
    adam_case("adam", MNIST_PARAMS, target=1.0),
    conv_case("conv32x64", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True, target=2.0),
]


def case_backends(case, backends):
    """The backends `case` runs on: every given one, or SHARED once for a shared case."""
    if case.shared:
        return [SHARED] if any(b != "torch" for b in backends) else []
    return [b for b in backends if b != "torch"]


# --------------------------------------------------------------------------- checking and timing
class WrongResult(ValueError):
    """A backend's outputs differ from the NumPy reference's: its time would mean nothing."""


_reference = {}  # case name → the NumPy reference's outputs, computed once per process


def reference_outputs(case):
    if case.name not in _reference:
        _reference[case.name] = tuple(np.array(a) for a in case.make("numpy")())
    return _reference[case.name]


def prepare(case, backend):
    """The fwd+bwd function of `case` on `backend` ("torch", SHARED or a kernel backend),
    called once (warm-up: numba compiles or loads its cache here) and checked against the NumPy
    reference with a cheap allclose. Raises WrongResult if it disagrees."""
    if backend == "torch":
        fn = case.make_torch()
    else:
        fn = case.make("numpy" if backend == SHARED else backend)
    outputs = fn()
    if backend in ("numpy", SHARED):
        _reference.setdefault(case.name, tuple(np.array(a) for a in outputs))
    else:
        expected = reference_outputs(case)
        if len(outputs) != len(expected):
            raise WrongResult(f"{case.name} on {backend}: {len(outputs)} outputs, the reference gives {len(expected)}")
        for i, (got, want) in enumerate(zip(outputs, expected)):
            got = np.asarray(got)
            scale = float(np.abs(want).max()) if want.size else 0.0
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4 * scale):
                worst = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
                raise WrongResult(f"{case.name} on {backend}: output {i} differs from the reference "
                                  f"(shape {got.shape} vs {want.shape}, max |Δ| {worst:.3g}, scale {scale:.3g})")
    return fn


def time_call(fn, repeat, budget=2.0, warmup=0):
    """(median ms, runs) of `fn()` over up to `repeat` runs, after `warmup` untimed calls (fewer if
    they take over a quarter of `budget`); the first warm-up call is the caller's (`prepare`).

    Stops early once `budget` seconds have passed and at least 3 runs are done, so slow
    reference kernels do not hold the table up. The garbage collector is off while timing, as in
    timeit, so a collection triggered by one case's garbage is not charged to another.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - start > budget / 4:
            break
    times = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and time.perf_counter() - start > budget:
                break
    finally:
        if was_enabled:
            gc.enable()
    return statistics.median(times) * 1e3, len(times)


def gemm_rate(repeat=10, size=1024):
    """This machine's float32 GEMM rate, GFLOP/s: the median time of np.matmul on size³."""
    rng = _rng()
    a, b = _normal(rng, (size, size)), _normal(rng, (size, size))
    c = np.empty((size, size), DTYPE)
    fn = lambda: np.matmul(a, b, out=c)  # noqa: E731
    fn()
    ms, _ = time_call(fn, min(max(repeat, 5), 20), budget=1.0)  # ≥ 5 runs: it scales every % GEMM
    return 2 * size ** 3 / (ms * 1e-3) / 1e9


# --------------------------------------------------------------------------- the machine
def thread_count():
    """Threads the engine's kernels use: numba's count (the C backend's OpenMP and numpy's BLAS
    default to the same, the number of CPUs, unless the environment says otherwise)."""
    try:
        import numba
        return numba.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


def machine_info():
    """What the figures depend on: CPU, thread counts, and which BLAS numpy really uses."""
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "threads": thread_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        info["cpu"] = None
    try:
        from threadpoolctl import threadpool_info
        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["blas"] = ", ".join(f"{p['internal_api']} {p.get('version')} (coretype {p.get('architecture')}, "
                                 f"{p['num_threads']} threads)" for p in blas) or "none found"
    except ImportError:
        info["blas"] = "unknown: pip install threadpoolctl to see which BLAS and coretype numpy uses"
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    torch = _torch()
    info["torch"] = None if torch is None else f"{torch.__version__} ({torch.get_num_threads()} threads)"
    return info


# --------------------------------------------------------------------------- running and printing
@dataclass
class Row:
    backend: str
    ms: Optional[float] = None
    runs: int = 0
    error: str = ""


@dataclass
class Result:
    case: Case
    rows: list = field(default_factory=list)

    def row(self, backend):
        return next((r for r in self.rows if r.backend == backend and r.ms is not None), None)

    def baseline(self):
        """The NumPy reference's row (SHARED for a shared case)."""
        return self.row(SHARED if self.case.shared else "numpy")

    def fastest(self):
        timed = [r for r in self.rows if r.backend != "torch" and r.ms is not None]
        return min(timed, key=lambda r: r.ms) if timed else None

    def ratio_to_torch(self, row):
        torch_row = self.row("torch")
        return row.ms / torch_row.ms if torch_row and row.ms is not None else None

    def verdict(self):
        """(ratio, met) of the fastest backend against PyTorch; met is None without a target or torch."""
        fastest = self.fastest()
        ratio = self.ratio_to_torch(fastest) if fastest else None
        if self.case.target is None or ratio is None:
            return ratio, None
        return ratio, ratio <= self.case.target


def selected_backends(requested=None):
    """Kernel backends available here (restricted to `requested`, a list), then "torch" if importable."""
    names = kernels.available_backends()
    if _torch() is not None:
        names.append("torch")
    if requested:
        unknown = [b for b in requested if b not in names]
        if unknown:
            raise ValueError(f"backend(s) {', '.join(unknown)} not available here; available: {', '.join(names)}")
        names = [b for b in names if b in requested]
    return names


def run(backends, repeat, cases=CASES, budget=2.0, progress=None):
    """Time every case on every backend; returns [Result]. A backend whose outputs are wrong gets
    a row with `error` and no time. Besides `prepare`'s call, two more warm-up calls (none when
    repeat is 1) let torch and the BLAS threads settle."""
    results = []
    for case in cases:
        result = Result(case)
        names = case_backends(case, backends) + (["torch"] if "torch" in backends else [])
        for backend in names:
            if progress:
                progress(f"{case.name} on {backend}")
            try:
                fn = prepare(case, backend)
            except WrongResult as err:
                result.rows.append(Row(backend, error=str(err)))
                continue
            ms, runs = time_call(fn, repeat, budget, warmup=0 if repeat <= 1 else 2)
            result.rows.append(Row(backend, ms, runs))
        results.append(result)
    return results


def _fmt(value, spec, missing=""):
    return missing if value is None else format(value, spec)


def table_rows(results, gemm_gflops):
    """Every figure of the table as dicts, one per (case, backend): also what --json writes."""
    out = []
    for result in results:
        case, base = result.case, result.baseline()
        fastest, (_, met) = result.fastest(), result.verdict()
        for row in result.rows:
            gflops = case.flops / (row.ms * 1e-3) / 1e9 if row.ms else None
            entry = {"case": case.name, "backend": row.backend, "ms": row.ms, "runs": row.runs, "gflops": gflops,
                     "pct_gemm": 100 * gflops / gemm_gflops if gflops and gemm_gflops else None,
                     "speedup_vs_numpy": base.ms / row.ms if base and row.ms else None,
                     "ratio_to_torch": result.ratio_to_torch(row) if row.backend != "torch" else None,
                     "target": None, "met": None, "error": row.error}
            if row is fastest:
                entry.update(target=case.target, met=met)
            out.append(entry)
    return out


def _flop_text(flops):
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops} FLOP"


def format_table(results, gemm_gflops, info, repeat):
    lines = ["lepton-nn bench --kernels: median ms of up to "
             f"{repeat} runs after warm-up calls; every output checked against the NumPy reference first",
             f"machine: {info['cpu'] or info['machine']}, {info['cpus']} CPUs; python {info['python']}",
             f"threads: {info['threads']} (numba, OpenMP, BLAS; torch.set_num_threads({info['threads']})); "
             f"OMP_NUM_THREADS={info['OMP_NUM_THREADS'] or 'unset'}",
             f"numpy {info['numpy']} BLAS: {info['blas']}; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE'] or 'unset'}, "
             f"OPENBLAS_L2_SIZE={info['OPENBLAS_L2_SIZE'] or 'unset'}, "
             f"OPENBLAS_THREAD_TIMEOUT={info['OPENBLAS_THREAD_TIMEOUT'] or 'unset'}",
             f"numba {info['numba'] or 'not installed'}; torch {info['torch'] or 'not installed: no torch columns'}",
             f"float32 GEMM 1024³ (np.matmul): {gemm_gflops:.1f} GFLOP/s = 100 % in the % GEMM column",
             "", "cases:"]
    for result in results:
        c = result.case
        lines.append(f"  {c.name:10s} {c.title}; {c.shape}; {_flop_text(c.flops)} = {c.flops_formula}")
    header = ("case", "backend", "ms", "GFLOP/s", "% GEMM", "× numpy", "/ torch", "target")
    widths = (10, 8, 9, 8, 7, 8, 8, 18)
    fmt_row = lambda cells: "  ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(cells, widths))).rstrip()
    lines += ["", fmt_row(header), fmt_row(["-" * w for w in widths])]
    entries = table_rows(results, gemm_gflops)
    errors = []
    previous = None
    for e in entries:
        name = e["case"] if e["case"] != previous else ""
        previous = e["case"]
        if e["error"]:
            lines.append(fmt_row([name, e["backend"], "WRONG", "", "", "", "", "not timed"]))
            errors.append(e["error"])
            continue
        target = ""
        if e["target"] is not None:
            target = f"≤ {e['target']:.1f}× " + {True: "met", False: "NOT met", None: "(no torch)"}[e["met"]]
        lines.append(fmt_row([name, e["backend"], _fmt(e["ms"], ".3f"), _fmt(e["gflops"], ".2f"),
                              _fmt(e["pct_gemm"], ".1f"), _fmt(e["speedup_vs_numpy"], ".2f"),
                              _fmt(e["ratio_to_torch"], ".2f"), target]))
    lines += ["",
              "× numpy: the NumPy reference's time / this time.  / torch: this time / PyTorch's (< 1 is faster).",
              "target: on the fastest backend's row, the most its / torch ratio may be.",
              f"{SHARED}: dense layers are np.matmul (BLAS) in every backend, the same code: one row stands for all."]
    lines += [f"WRONG: {err}" for err in errors]
    return "\n".join(lines)


def write_json(path, results, gemm_gflops, info, repeat):
    data = {"machine": info, "repeat": repeat, "gemm_gflops": gemm_gflops,
            "cases": [{"name": r.case.name, "title": r.case.title, "shape": r.case.shape, "flops": r.case.flops,
                       "flops_formula": r.case.flops_formula, "target": r.case.target} for r in results],
            "rows": table_rows(results, gemm_gflops)}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def main(backends=None, repeat=50, json_path=None, budget=2.0, progress=None):
    """What `lepton-nn bench --kernels` does; returns the exit status (1 if a kernel was wrong)."""
    names = selected_backends(backends)
    info = machine_info()
    gemm = gemm_rate(repeat)
    results = run(names, repeat, budget=budget, progress=progress)
    print(format_table(results, gemm, info, repeat))
    if json_path:
        write_json(json_path, results, gemm, info, repeat)
    return 1 if any(row.error for r in results for row in r.rows) else 0
