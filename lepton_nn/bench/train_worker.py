"""One run of the training benchmark, alone in a fresh process: a CNN (the classic Keras MNIST
CNN, or a deeper one) trained and evaluated by lepton_nn or by a peer framework, figures printed
as one JSON line.

    python lepton_nn/bench/train_worker.py --run torch --mnist mnist.npz [--steps 200] [--model deep]

This file is run as a script, never imported by the engine, and imports nothing of lepton_nn
at module level: a peer (PyTorch, TensorFlow, JAX) starts in a process that lepton_nn never
touched, with the environment its parent hands it, which for a peer is the user's own
(`runtime.environ_without_our_settings()`). Only the lepton_nn runs import lepton_nn, and with it
its thread and memory settings (lepton_nn/runtime.py). The parent is lepton_nn/bench/train.py.

The models (MODELS; `--model`), each conv block a Conv2D(3×3, relu) → MaxPooling2D(2×2), then
Flatten → Dense(128, relu) → Dense(10, softmax), Adam (lr 1e-3), cross-entropy, batch 64, float32:
    article   the classic Keras MNIST CNN: one block, 32 filters, padding 'valid' (28² → 26² → 13²)
    deep      two blocks, 32 then 64 filters, padding 'same' (28² → 14² → 7², Flatten 64·7·7 = 3136)
The runs, each building the chosen model in its own framework:
    numpy, numba, c   lepton_nn's Keras API on that backend: Sequential.fit / evaluate
    torch, torch-cl   torch.nn.Sequential, NCHW or channels-last, torch.optim.Adam, the loop a
                      PyTorch user writes (shuffled batches, cross_entropy on the logits, loss.item())
    tf-keras          the Keras program in TensorFlow's Keras (for the article's model, the classic
                      program itself): compile('adam', 'sparse_categorical_crossentropy',
                      ['accuracy']), fit, evaluate
    jax               a jax.jit train step of the same model, NHWC, Adam written out (Keras's ε)

The protocol, the same for every run: build the model, read the data (MNIST as uint8 from the
parent's .npz, scaled to float32 in place), train one step (time to first step = process launch
→ that step done, less the data reading), then one fit over `warmup` + `steps` batches whose
batch ends are time-stamped: the warm-up batches are excluded and the timed steps are split into
BLOCKS blocks, of which the median block's time per step counts (a burst of other work on a
shared machine then spoils a block, not the figure). Then evaluation of the test set at batch
1000: one warm-up batch, the median of EVAL_PASSES passes. `--full` adds the whole 5-epoch run
from a fresh model (its accuracy, and the peak memory of a real run).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np

BATCH = 64
EVAL_BATCH = 1000
EVAL_PASSES = 3
BLOCKS = 10
LEPTON_RUNS = ("numpy", "numba", "c")
PEERS = ("torch", "torch-cl", "tf-keras", "jax")
PEER_MODULES = {"torch": "torch", "torch-cl": "torch", "tf-keras": "tensorflow", "jax": "jax"}
# Each model's conv blocks as (filters, padding), every block Conv2D 3×3 relu → MaxPool 2×2; then
# Flatten → Dense 128 relu → Dense 10. Every run below builds its model from this table.
MODELS = {"article": ((32, "valid"),), "deep": ((32, "same"), (64, "same"))}
MODEL_TITLES = {"article": "the classic Keras MNIST CNN (Conv2D 32 3×3 relu → MaxPool 2×2 → Dense 128 relu → "
                           "Dense 10 softmax; Adam)",
                "deep": "the deep CNN (Conv2D 32 3×3 same relu → MaxPool 2×2 → Conv2D 64 3×3 same relu → "
                        "MaxPool 2×2 → Dense 128 relu → Dense 10 softmax; Adam)"}
# What the isolation check reads in every worker: lepton_nn's settings (lepton_nn/runtime.py)
# and the thread counts, as the process started (/proc/self/environ) and as Python sees them.
WATCHED_PREFIXES = ("OMP_", "OPENBLAS_", "MALLOC_", "MKL_", "NUMBA_", "XLA_FLAGS", "TF_NUM_")


def conv_shapes(model):
    """[(H_out, C_in, C_out) of each conv] and the Flatten size, from 28×28×1 images: a 3×3 conv
    gives H_out = H with padding 'same', H − 2 with 'valid'; a 2×2 pool then ⌊H_out / 2⌋."""
    size, channels, convs = 28, 1, []
    for filters, padding in MODELS[model]:
        out = size if padding == "same" else size - 2
        convs.append((out, channels, filters))
        size, channels = out // 2, filters
    return convs, size * size * channels


def peak_rss_mb():
    """This process's peak resident set size, MB (Linux reports ru_maxrss in KB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def environment_report():
    """The watched variables as this process started and as os.environ has them now, and
    whether lepton_nn is loaded: the evidence that a peer ran untouched."""
    def watched(env):
        return {k: v for k, v in sorted(env.items()) if k.startswith(WATCHED_PREFIXES)}
    try:
        with open("/proc/self/environ", "rb") as f:
            pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
        at_start = watched({k.decode(): v.decode(errors="replace") for k, v in pairs})
    except OSError:  # not Linux
        at_start = None
    return {"environ_at_start": at_start, "os_environ": watched(dict(os.environ)),
            "lepton_nn_imported": any(m == "lepton_nn" or m.startswith("lepton_nn.") for m in sys.modules)}


def load_mnist(path):
    """(x_train, y_train), (x_test, y_test) from the parent's .npz: x float32 (N, 28, 28, 1) in
    [0, 1], scaled in place (no second copy), labels int64."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}

    def scale(x):
        x = x.reshape(-1, 28, 28, 1).astype(np.float32)
        x /= 255.0
        return x
    return ((scale(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
            (scale(arrays["x_test"]), arrays["y_test"].astype(np.int64)))


# =========================================================================== the runs
# Each run: __init__(threads, model) builds the seeded model named in MODELS (threads None: the
# framework's own default); fit(x, y, epochs, batch_end) trains in shuffled batches of BATCH,
# calling batch_end() after each step is complete; evaluate(x, y) returns [loss, accuracy] at
# batch EVAL_BATCH; info() describes it.

class LeptonRun:
    """The model through lepton_nn's public Keras API on one backend; the article's is the very
    model `lepton-nn train` builds (lepton_nn.train.build_model)."""

    def __init__(self, backend, threads, model="article"):
        import lepton_nn
        from lepton_nn import keras, kernels, train
        kernels.set_backend(backend)
        lepton_nn.seed(0)
        if model == "article":
            self.model = train.build_model()
        else:
            blocks = []
            for filters, padding in MODELS[model]:
                blocks += [keras.layers.Conv2D(filters, (3, 3), padding=padding, activation="relu"),
                           keras.layers.MaxPooling2D((2, 2))]
            self.model = keras.Sequential([keras.layers.Input((28, 28, 1)), *blocks, keras.layers.Flatten(),
                                           keras.layers.Dense(128, activation="relu"),
                                           keras.layers.Dense(10, activation="softmax")])
            self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.version = lepton_nn.__version__

    def fit(self, x, y, epochs=1, batch_end=None):
        from lepton_nn.keras import callbacks
        hook = [callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_end())] if batch_end else []
        self.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=hook)

    def evaluate(self, x, y):
        return self.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0)

    def info(self):
        return f"lepton_nn {self.version}"


class TorchRun:
    """The same model in PyTorch, NCHW or channels-last (padding 'same' as padding=1 of a 3×3 conv)."""

    def __init__(self, variant, threads, model="article"):
        import torch
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch, nn = torch, torch.nn
        convs, flat = conv_shapes(model)
        blocks = []
        for (_, c_in, c_out), (_, padding) in zip(convs, MODELS[model]):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1 if padding == "same" else 0), nn.ReLU(), nn.MaxPool2d(2)]
        self.model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, 10))
        self.memory_format = torch.channels_last if variant == "torch-cl" else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.generator = torch.Generator().manual_seed(0)

    def _nchw(self, x):
        """(N, 28, 28, 1) float32 → (N, 1, 28, 28) in this run's memory format. With one channel
        the bytes are the same; the reshape gives them NCHW's own strides, as a PyTorch user's data has."""
        return self.torch.from_numpy(x).reshape(-1, 1, 28, 28).contiguous(memory_format=self.memory_format)

    def fit(self, x, y, epochs=1, batch_end=None):
        torch, f = self.torch, self.torch.nn.functional
        x, y = self._nchw(x), torch.from_numpy(y)
        self.model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=self.generator)
            for start in range(0, len(x), BATCH):
                batch = order[start:start + BATCH]
                self.optimizer.zero_grad()
                logits = self.model(x[batch].contiguous(memory_format=self.memory_format))
                loss = f.cross_entropy(logits, y[batch])
                loss.backward()
                self.optimizer.step()
                loss.item()
                int((logits.argmax(1) == y[batch]).sum())  # the running accuracy a user prints
                if batch_end:
                    batch_end()

    def evaluate(self, x, y):
        torch, f = self.torch, self.torch.nn.functional
        self.model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                logits = self.model(self._nchw(x[start:start + EVAL_BATCH]))
                yb = torch.from_numpy(y[start:start + EVAL_BATCH])
                loss_sum += float(f.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        return [loss_sum / len(x), correct / len(x)]

    def info(self):
        return f"torch {self.torch.__version__}, {self.torch.get_num_threads()} threads"


class KerasTFRun:
    """The model in TensorFlow's own Keras, as the classic Keras example writes its program."""

    def __init__(self, threads, model="article"):
        import tensorflow as tf
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.keras.utils.set_random_seed(0)
        keras = tf.keras
        self.tf, self.keras = tf, keras
        blocks = []
        for filters, padding in MODELS[model]:
            blocks += [keras.layers.Conv2D(filters, (3, 3), padding=padding, activation="relu"),
                       keras.layers.MaxPooling2D((2, 2))]
        self.model = keras.Sequential([
            keras.layers.Input((28, 28, 1)),
            *blocks,
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax")])
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def fit(self, x, y, epochs=1, batch_end=None):
        hook = [self.keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_end())] \
            if batch_end else []
        self.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=hook)

    def evaluate(self, x, y):
        return [float(v) for v in self.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0)]

    def info(self):
        return f"tensorflow {self.tf.__version__}, keras {self.keras.__version__}"


class JaxRun:
    """The same model as a jax.jit train step: NHWC, Adam written out with Keras's defaults
    (β 0.9/0.999, ε 1e-7), Glorot-uniform weights and zero biases as Keras initialises them."""

    def __init__(self, threads, model="article"):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        convs, flat = conv_shapes(model)
        paddings = [padding.upper() for _, padding in MODELS[model]]  # lax's "VALID" / "SAME"
        keys = jax.random.split(jax.random.PRNGKey(0), len(convs) + 2)

        def glorot(key, shape, fan_in, fan_out):
            limit = math.sqrt(6 / (fan_in + fan_out))
            return jax.random.uniform(key, shape, jnp.float32, -limit, limit)
        self.params = {"convs": [{"w": glorot(key, (3, 3, c_in, c_out), 9 * c_in, 9 * c_out), "b": jnp.zeros(c_out)}
                                 for key, (_, c_in, c_out) in zip(keys, convs)],
                       "w1": glorot(keys[-2], (flat, 128), flat, 128), "b1": jnp.zeros(128),
                       "w2": glorot(keys[-1], (128, 10), 128, 10), "b2": jnp.zeros(10)}
        self.m = jax.tree_util.tree_map(jnp.zeros_like, self.params)
        self.v = jax.tree_util.tree_map(jnp.zeros_like, self.params)
        self.t = 0
        self.order_rng = np.random.default_rng(0)

        def logits(p, x):
            y = x
            for conv, padding in zip(p["convs"], paddings):
                y = jax.lax.conv_general_dilated(y, conv["w"], (1, 1), padding,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["b"]
                y = jax.lax.reduce_window(jax.nn.relu(y), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            y = jax.nn.relu(y.reshape(y.shape[0], -1) @ p["w1"] + p["b1"])
            return y @ p["w2"] + p["b2"]

        def loss_fn(p, x, y):
            log_probs = jax.nn.log_softmax(logits(p, x))
            return -jnp.take_along_axis(log_probs, y[:, None], axis=1).mean()

        def train_step(p, m, v, t, x, y, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            tree = jax.tree_util.tree_map
            m = tree(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = tree(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            step = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p = tree(lambda p, m, v: p - step * m / (jnp.sqrt(v) + eps), p, m, v)
            return p, m, v, loss

        def evaluate_batch(p, x, y):
            out = logits(p, x)
            log_probs = jax.nn.log_softmax(out)
            return (-jnp.take_along_axis(log_probs, y[:, None], axis=1).sum(), (out.argmax(1) == y).sum())
        self.train_step, self.evaluate_batch = jax.jit(train_step), jax.jit(evaluate_batch)

    def fit(self, x, y, epochs=1, batch_end=None):
        for _ in range(epochs):
            order = self.order_rng.permutation(len(x))
            for start in range(0, len(x), BATCH):
                batch = order[start:start + BATCH]
                self.t += 1
                self.params, self.m, self.v, loss = self.train_step(
                    self.params, self.m, self.v, self.t, x[batch], y[batch])
                loss.block_until_ready()  # the step is done before its time is taken
                if batch_end:
                    batch_end()

    def evaluate(self, x, y):
        loss_sum, correct = 0.0, 0
        for start in range(0, len(x), EVAL_BATCH):
            loss, right = self.evaluate_batch(self.params, x[start:start + EVAL_BATCH], y[start:start + EVAL_BATCH])
            loss_sum, correct = loss_sum + float(loss), correct + int(right)
        return [loss_sum / len(x), correct / len(x)]

    def info(self):
        return f"jax {self.jax.__version__} ({self.jax.default_backend()})"


def make_run(run, threads, model="article"):
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    if run in LEPTON_RUNS:
        return LeptonRun(run, threads, model)
    if run in ("torch", "torch-cl"):
        return TorchRun(run, threads, model)
    if run == "tf-keras":
        return KerasTFRun(threads, model)
    if run == "jax":
        return JaxRun(threads, model)
    raise ValueError(f"unknown run {run!r}: one of {', '.join(LEPTON_RUNS + PEERS)}")


# =========================================================================== the protocol
def block_times(stamps, warmup, steps):
    """Median seconds per step over BLOCKS blocks of the timed steps, from the time stamps taken
    at the end of each of the warmup + steps batches (the last warm-up stamp starts the first block)."""
    sizes = [len(block) for block in np.array_split(np.arange(steps), min(BLOCKS, steps))]
    edges = np.cumsum([warmup - 1] + sizes)
    per_step = [(stamps[b] - stamps[a]) / (b - a) for a, b in zip(edges[:-1], edges[1:])]
    return float(np.median(per_step))


def measure(run, mnist, steps=200, warmup=10, threads=None, launched=None, first_step_only=False, full=False,
            model="article"):
    """One run of `model` in this process; its figures as a dict. launched: time.time() at process launch."""
    if warmup < 1 or steps < 1:
        raise ValueError(f"need at least one warm-up and one timed step, got warmup={warmup}, steps={steps}")
    launched = time.time() if launched is None else launched
    name, model = model, make_run(run, threads, model)
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist)
    data_s = time.perf_counter() - start
    if (1 + warmup + steps) * BATCH > len(x_train) and not first_step_only:
        raise ValueError(f"{len(x_train)} training images are too few for 1 + {warmup} + {steps} steps of {BATCH}")
    result = {"run": run, "model": name, "threads": threads, "data_load_s": data_s, "framework": model.info()}
    model.fit(x_train[:BATCH], y_train[:BATCH])
    result["first_step_s"] = time.time() - launched - data_s
    if first_step_only:
        return result

    stamps = []
    rows = slice(BATCH, (1 + warmup + steps) * BATCH)
    model.fit(x_train[rows], y_train[rows], batch_end=lambda: stamps.append(time.perf_counter()))
    if len(stamps) != warmup + steps:
        raise RuntimeError(f"{run}: {len(stamps)} batch ends seen for {warmup + steps} batches")
    step_s = block_times(stamps, warmup, steps)
    result.update(steps=steps, warmup=warmup, step_ms=1e3 * step_s, train_images_per_s=BATCH / step_s)

    model.evaluate(x_test[:EVAL_BATCH], y_test[:EVAL_BATCH])  # warm-up: batch-1000 buffers, tracing
    times = []
    for _ in range(EVAL_PASSES):
        start = time.perf_counter()
        model.evaluate(x_test, y_test)
        times.append(time.perf_counter() - start)
    result["eval_images_per_s"] = len(x_test) / float(np.median(times))

    if full:  # the whole classic run, from a fresh model: its accuracy and the memory of a real run
        model = make_run(run, threads, name)
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=5)
        result["full_train_s"] = time.perf_counter() - start
        result["full_test_accuracy"] = float(model.evaluate(x_test, y_test)[1])
    result["full"] = full
    result["peak_rss_mb"] = peak_rss_mb()
    result["environment"] = environment_report()
    return result


def profile(backend, mnist, steps=200, warmup=10, model="article"):
    """`steps` training steps of `model` on one lepton_nn backend under lepton_nn's profiler: per-op seconds."""
    from lepton_nn import profiler
    name, model = model, LeptonRun(backend, None, model)
    (x_train, y_train), _ = load_mnist(mnist)
    if (1 + warmup + steps) * BATCH > len(x_train):
        raise ValueError(f"{len(x_train)} training images are too few for 1 + {warmup} + {steps} steps of {BATCH}")
    model.fit(x_train[:(1 + warmup) * BATCH], y_train[:(1 + warmup) * BATCH])
    used = (1 + warmup) * BATCH
    with profiler.Profiler() as prof:
        model.fit(x_train[used:used + steps * BATCH], y_train[used:used + steps * BATCH])
    return {"run": backend, "model": name, "steps": steps, "table": prof.table(steps=steps),
            "wall_s": prof.wall_seconds,
            "ops": [{"op": name, "phase": phase, "calls": prof.calls[name, phase], "s": s}
                    for (name, phase), s in sorted(prof.seconds.items(), key=lambda kv: -kv[1])]}


def main(argv=None):
    p = argparse.ArgumentParser(description="one training-benchmark run in this process; prints one JSON line")
    p.add_argument("--run", required=True, help=f"one of {', '.join(LEPTON_RUNS + PEERS)}")
    p.add_argument("--mnist", help="the parent's .npz of MNIST (uint8 images, labels)")
    p.add_argument("--model", choices=tuple(MODELS), default="article", help="which CNN (default: article)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, help="pin the framework's threads (default: its own default)")
    p.add_argument("--launched", type=float, help="time.time() when the parent launched this process")
    p.add_argument("--first-step-only", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--profile", action="store_true", help="lepton_nn backends only: per-op times")
    p.add_argument("--probe", action="store_true", help="report the environment and exit (no framework loaded)")
    a = p.parse_args(argv)
    if a.probe:
        result = {"run": a.run, "environment": environment_report()}
    elif a.profile:
        result = profile(a.run, a.mnist, a.steps, a.warmup, a.model)
    else:
        result = measure(a.run, a.mnist, a.steps, a.warmup, a.threads, a.launched, a.first_step_only, a.full,
                         a.model)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
