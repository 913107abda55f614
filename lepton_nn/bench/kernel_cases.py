"""The kernel benchmark's cases: one fwd+bwd pass of one layer at one shape, runnable on every
lepton_nn backend and in PyTorch, and the timer both use.

Each `Case` is the MNIST CNN's layer at batch 64, a many-channel convolution, a kernel of
nanoGPT's baby GPT at its training batch (lepton_nn/shakespeare.py), or one of our GEMMs.
`case.make(backend)` builds seeded float32 inputs once and returns a zero-argument function that
runs the pass through that backend's kernels and returns its outputs; `case.make_torch()` does
the same in PyTorch. Timing calls only the returned function, so input creation is never timed
(outputs are allocated inside, as in training).

This file imports nothing of lepton_nn at module level (`engine_kernels` does, when a lepton_nn
backend is asked for), so that run as a script it is PyTorch's worker in a process of its own:

    python lepton_nn/bench/kernel_cases.py --peer     (started by lepton_nn/bench/kernels.py)

reads case names on stdin and answers each with its timing as a JSON line, with PyTorch's own
defaults and the user's environment, untouched by lepton_nn's settings (docs/benchmarks.md).

FLOP counts: convolution and dense count 2 per multiply-add of each GEMM-shaped pass plus one
per bias element; the memory-bound kernels (pooling, relu, cross-entropy, Adam, gelu, layer
norm, softmax) count the arithmetic of their equations, erf and exp as one each, stated in each
case's `flops_formula`.
"""
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

DTYPE = np.float32


def engine_kernels(backend):
    """The lepton_nn backend module `backend`: the only place this file loads the engine."""
    from lepton_nn import kernels
    return kernels.get(backend)


@dataclass(frozen=True)
class Case:
    name: str                 # short id: pytest id and JSON key
    title: str                # what runs, for people
    shape: str
    flops: int                # per call of the fwd+bwd function
    flops_formula: str
    make: Callable[[str], Callable[[], tuple]]
    make_torch: Callable[[], Callable[[], tuple]]
    kernels: tuple = ()   # the lepton_nn kernels it calls: a backend lacking one runs the reference's
    algorithm: str = None  # the conv2d algorithm it names: a backend without it has no row


def _rng():
    return np.random.default_rng(0)


def _normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=DTYPE) * DTYPE(scale))


def _torch():
    """torch with its own defaults (threads included), or None if it is not installed."""
    try:
        import torch
    except ImportError:
        return None
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
def conv_case(name, n, c_in, c_out, size, pad, need_x, algorithm=None):
    """conv2d 3×3, stride 1: forward, then the gradients of weight and bias (and of x if need_x), by
    the backend's own choice, or by `algorithm` (one of its CONV_ALGORITHMS; the reference has one way)."""
    k, stride, padding = 3, (1, 1), (pad, pad)
    out = size + 2 * pad - k + 1

    def inputs():
        rng = _rng()
        return (_normal(rng, (n, c_in, size, size)), _normal(rng, (c_out, c_in, k, k), (c_in * k * k) ** -0.5),
                _normal(rng, (c_out,)), _normal(rng, (n, c_out, out, out)))

    def make(backend):
        kern = engine_kernels(backend)
        ours = {}
        if algorithm is not None and backend != "numpy":
            kern, ours = kern.module, {"algorithm": algorithm}  # the module's own, by name
        x, w, b, g = inputs()

        def run():
            y = kern.conv2d_forward(x, w, b, stride, padding, **ours)
            grad_x, grad_w, grad_b = kern.conv2d_backward(g, x, w, stride, padding, need_x=need_x, **ours)
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
        name, f"conv {c_in}→{c_out} 3×3 pad {pad}, fwd+bwd ({grads})" + (f", ours: {algorithm}" if algorithm else ""),
        f"x {n}×{c_in}×{size}×{size}, w {c_out}×{c_in}×3×3", passes * per_pass + 2 * per_output,
        f"{passes}·2·N·Co·Ho·Wo·Ci·kH·kW + 2·N·Co·Ho·Wo", make, make_torch,
        kernels=("conv2d_forward", "conv2d_backward"), algorithm=algorithm)


# --------------------------------------------------------------------------- pooling and relu
def max_pool_case(name, n, c, size):
    """max-pool 2×2 stride 2: forward (values and argmax), then the scatter of the gradient."""
    out = size // 2

    def inputs():
        rng = _rng()
        return _normal(rng, (n, c, size, size)), _normal(rng, (n, c, out, out))

    def make(backend):
        kern = engine_kernels(backend)
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
                "(kH·kW − 1 comparisons + 1 add)·N·C·Ho·Wo", make, make_torch,
                kernels=("max_pool2d_forward", "max_pool2d_backward"))


def elementwise_case(name, kernel, shape, what, flops_per_element, flops_text, torch_name, *options):
    """An elementwise kernel's forward, then its backward: kernel_forward(x, *options) and
    kernel_backward(g, x, *options), against torch.nn.functional.<torch_name> and autograd."""
    def inputs():
        rng = _rng()
        return _normal(rng, shape), _normal(rng, shape)

    def make(backend):
        kern = engine_kernels(backend)
        forward, backward = getattr(kern, kernel + "_forward"), getattr(kern, kernel + "_backward")
        x, g = inputs()

        def run():
            return forward(x, *options), backward(g, x, *options)
        return run

    def make_torch():
        torch = _torch()
        fn = getattr(torch.nn.functional, torch_name)
        x, g = _torch_arrays(inputs(), grad_for=(0,))

        def run():
            y = fn(x)
            return _detached(y, *torch.autograd.grad(y, x, g))
        return run

    return Case(name, what, "x " + "×".join(map(str, shape)), flops_per_element * int(np.prod(shape)),
                flops_text, make, make_torch, kernels=(kernel + "_forward", kernel + "_backward"))


def relu_case(name, shape):
    """relu forward, then its backward (the gradient masked by x > 0)."""
    return elementwise_case(name, "relu", shape, "relu, fwd+bwd", 2, "2 per element (max; mask-multiply)", "relu")


# --------------------------------------------------------------------------- dense
def dense_case(name, batch, n_in, n_out):
    """Dense layer exactly as lepton_nn.ops.Linear computes it, with the backend's gemm kernel:
    y = x·Wᵀ + b, then ∂x = g·W, ∂W = gᵀ·x, ∂b = Σ_rows g."""
    def inputs():
        rng = _rng()
        return (_normal(rng, (batch, n_in)), _normal(rng, (n_out, n_in), n_in ** -0.5),
                _normal(rng, (n_out,)), _normal(rng, (batch, n_out)))

    def make(backend):
        gemm = engine_kernels(backend).gemm
        x, w, b, g = inputs()

        def run():
            return gemm(x, w, trans_b=True, c=b), gemm(g, w), gemm(g, x, trans_a=True), g.sum(axis=0)
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
                kernels=("gemm",))


# --------------------------------------------------------------------------- loss and optimiser
def cross_entropy_case(name, batch, classes):
    """softmax cross-entropy per sample, then its gradient for an upstream gradient of 1/N each."""
    def inputs():
        rng = _rng()
        return (_normal(rng, (batch, classes), 3.0), rng.integers(0, classes, batch),
                np.full(batch, 1 / batch, DTYPE))

    def make(backend):
        kern = engine_kernels(backend)
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
                "7 per logit (max, −, exp, Σ, −log, exp; ×g)", make, make_torch,
                kernels=("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"))


def adam_case(name, shapes):
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
        kern = engine_kernels(backend)
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
                "14 per parameter (the reference's equations)", make, make_torch,
                kernels=("adam_steps",))


# --------------------------------------------------------------------------- sequence models (baby GPT)
def gelu_case(name, shape):
    """GELU with erf (approximate='none', nn.GELU's default, as the GPT's MLP runs it): forward, then
    its backward."""
    return elementwise_case(name, "gelu", shape, "gelu (erf), fwd+bwd", 15,
                            "15 per element (fwd: /, erf, +, ×, ×; bwd: the same Φ, ×, ×, exp, ×, /, +, ×g)",
                            "gelu", "none")


def layer_norm_case(name, shape):
    """LayerNorm over the last axis with weight and bias (ε = 1e-5): forward, then the gradients of
    x, weight and bias."""
    dim = shape[-1]

    def inputs():
        rng = _rng()
        return (_normal(rng, shape), 1 + _normal(rng, (dim,), 0.1), _normal(rng, (dim,), 0.1), _normal(rng, shape))

    def make(backend):
        kern = engine_kernels(backend)
        x, w, b, g = inputs()

        def run():
            y, mean, rstd = kern.layer_norm_forward(x, (dim,), w, b, 1e-5)
            return (y,) + tuple(kern.layer_norm_backward(g, x, (dim,), mean, rstd, w))
        return run

    def make_torch():
        torch = _torch()
        x, w, b, g = _torch_arrays(inputs(), grad_for=(0, 1, 2))

        def run():
            y = torch.nn.functional.layer_norm(x, (dim,), w, b, eps=1e-5)
            return _detached(y, *torch.autograd.grad(y, (x, w, b), g))
        return run

    return Case(name, "layer norm over the last axis, fwd+bwd (x, weight, bias)", "x " + "×".join(map(str, shape)),
                18 * int(np.prod(shape)),
                "18 per element (fwd: Σ, −, ², Σ, ×r, ×γ, +β; bwd: x̂ again, ×γ, two Σ, −, ×, −, ×r, Σ g·x̂, Σ g)",
                make, make_torch, kernels=("layer_norm_forward", "layer_norm_backward"))


def causal_softmax_case(name, shape):
    """Attention's causal softmax over the keys of scores (B, H, T, T): forward, then its backward.
    PyTorch runs it as nanoGPT's non-flash path does: masked_fill of the upper triangle with −∞, softmax."""
    def inputs():
        rng = _rng()
        return _normal(rng, shape, 3.0), _normal(rng, shape)

    def make(backend):
        kern = engine_kernels(backend)
        s, g = inputs()

        def run():
            y = kern.masked_softmax_forward(s, None, True)
            return y, kern.masked_softmax_backward(g, y)
        return run

    def make_torch():
        torch = _torch()
        s, g = _torch_arrays(inputs(), grad_for=(0,))
        above = torch.ones(shape[-2:], dtype=torch.bool).triu(1)

        def run():
            y = torch.softmax(s.masked_fill(above, float("-inf")), dim=-1)
            return _detached(y, *torch.autograd.grad(y, s, g))
        return run

    return Case(name, "causal masked softmax over the keys, fwd+bwd", "scores " + "×".join(map(str, shape)),
                9 * int(np.prod(shape)),
                "9 per score (fwd: mask, max, −, exp, Σ, ÷; bwd: g·y, Σ, −, ×)", make, make_torch,
                kernels=("masked_softmax_forward", "masked_softmax_backward"))


# --------------------------------------------------------------------------- our GEMMs, step by step
GEMM_STEPS = {"naive": ("naive", None), "blocked": ("blocked", None),  # step: (algorithm, threads)
              "packed1": ("packed", 1), "packed": ("packed", None),
              "dot1": ("dot", 1), "dot": ("dot", None)}  # dot: both operands contiguous along the depth (fwd)


def gemm_case(name, m, k, n, trans_a, trans_b, step, what):
    """C = op(A)·op(B), float32: the backend's own gemm with one algorithm of GEMM_STEPS (packed1:
    the packed one on one thread), against NumPy's @ (OpenBLAS: the numpy row, so "× numpy" is the
    fraction of OpenBLAS's rate) and torch.matmul, each on the same stored (transposed) operands."""
    algorithm, threads = GEMM_STEPS[step]

    def inputs():
        rng = _rng()
        return _normal(rng, (k, m) if trans_a else (m, k)), _normal(rng, (n, k) if trans_b else (k, n))

    def make(backend):
        gemm = engine_kernels(backend).module.gemm  # the backend's own, whether or not the engine runs it yet
        a, b = inputs()
        ours = {"algorithm": algorithm, "threads": threads} if backend != "numpy" else {}  # the reference has no steps

        def run():
            return (gemm(a, b, trans_a, trans_b, **ours),)
        return run

    def make_torch():
        torch = _torch()
        a, b = _torch_arrays(inputs())

        def run():
            return _detached(torch.matmul(a.T if trans_a else a, b.T if trans_b else b))
        return run

    stored = f"A{'ᵀ' if trans_a else ''}·B{'ᵀ' if trans_b else ''}"
    return Case(name, f"GEMM {what} ({stored}), ours: {step}", f"{m}×{k}·{k}×{n}", 2 * m * k * n, "2·M·K·N",
                make, make_torch)


# The MNIST dense layer's three products at batch 64 (x 64×5408, W 128×5408, g 64×128), and 1024³;
# the naive loop is left out of 1024³ (seconds per call).
GEMM_SHAPES = [("fwd", 64, 5408, 128, False, True, "y = x·Wᵀ"),
               ("wgrad", 128, 64, 5408, True, False, "∂W = gᵀ·x"),
               ("igrad", 64, 128, 5408, False, False, "∂x = g·W"),
               ("1024", 1024, 1024, 1024, False, False, "1024³")]
GEMM_CASES = [gemm_case(f"gemm_{label}_{step}", m, k, n, trans_a, trans_b, step, what)
              for label, m, k, n, trans_a, trans_b, what in GEMM_SHAPES for step in GEMM_STEPS
              if not (label == "1024" and step == "naive") and (label == "fwd" or not step.startswith("dot"))]


# --------------------------------------------------------------------------- the list
# The MNIST CNN at batch 64: Conv2D(32, 3×3) → MaxPool 2×2 → ReLU → Flatten → Dense 128 → Dense 10.
MNIST_PARAMS = [(32, 1, 3, 3), (32,), (128, 5408), (128,), (10, 128), (10,)]  # 693,962 values

CASES = [
    conv_case("conv1", n=64, c_in=1, c_out=32, size=28, pad=0, need_x=False),
    max_pool_case("maxpool", n=64, c=32, size=26),
    relu_case("relu", (64, 32, 26, 26)),
    dense_case("dense1", batch=64, n_in=5408, n_out=128),
    dense_case("dense2", batch=64, n_in=128, n_out=10),
    cross_entropy_case("xent", batch=64, classes=10),
    adam_case("adam", MNIST_PARAMS),
    conv_case("conv32x64", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True),
    # the same layer by each algorithm, by name (docs/benchmarks.md, "General convolution")
    conv_case("conv32x64_gemm", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True, algorithm="gemm"),
    conv_case("conv32x64_blas", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True, algorithm="blas"),
    conv_case("conv32x64_winograd", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True, algorithm="winograd"),
    conv_case("conv32x64_direct", n=64, c_in=32, c_out=64, size=28, pad=1, need_x=True, algorithm="direct"),
    # the deep CNN's second conv (bench --train --model deep): the same channels on 14×14 planes
    conv_case("conv32x64_14", n=64, c_in=32, c_out=64, size=14, pad=1, need_x=True),
    conv_case("conv32x64_14_winograd", n=64, c_in=32, c_out=64, size=14, pad=1, need_x=True, algorithm="winograd"),
    conv_case("conv32x64_14_direct", n=64, c_in=32, c_out=64, size=14, pad=1, need_x=True, algorithm="direct"),
    # nanoGPT's baby GPT at its batch (12 sequences of 64 characters, 128 channels, 4 heads)
    gelu_case("gelu", (12, 64, 512)),
    layer_norm_case("layernorm", (12, 64, 128)),
    causal_softmax_case("softmax", (12, 4, 64, 64)),
    *GEMM_CASES,  # our GEMMs, step by step (docs/benchmarks.md)
]


CASES_BY_NAME = {case.name: case for case in CASES}


# --------------------------------------------------------------------------- timing
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




# --------------------------------------------------------------------------- PyTorch's worker
def peer_main(environment_report, lines=sys.stdin, out=sys.stdout):
    """PyTorch's side of `lepton-nn bench --kernels`, in this process of its own: a hello line
    (torch's version and threads, the environment seen), then for each request line
    {"case", "repeat", "budget", "warmup", "save"} one answer {"case", "ms", "runs"}; `save`
    names an .npz for the outputs of the first call, which the parent checks against the reference."""
    torch = _torch()
    hello = {"torch": None if torch is None else torch.__version__,
             "threads": None if torch is None else torch.get_num_threads(), "environment": environment_report()}
    print(json.dumps(hello), file=out, flush=True)
    for line in lines:
        request = json.loads(line)
        try:
            fn = CASES_BY_NAME[request["case"]].make_torch()
            outputs = fn()
            if request.get("save"):
                np.savez(request["save"], *[np.asarray(a) for a in outputs])
            ms, runs = time_call(fn, request["repeat"], request["budget"], request["warmup"])
            answer = {"case": request["case"], "ms": ms, "runs": runs}
        except Exception as err:  # reported in the parent's table, the worker goes on
            answer = {"case": request["case"], "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), file=out, flush=True)


if __name__ == "__main__":
    # Run as a script: train_worker.py beside this file is importable by its bare name (this
    # directory is first on sys.path); importing it through the lepton_nn package would load the engine.
    from train_worker import environment_report
    peer_main(environment_report)
