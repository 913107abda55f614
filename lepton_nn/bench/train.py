"""Training benchmark: the article's CNN, trained and evaluated, on every backend and in PyTorch.

    lepton-nn bench --train              the table: time per epoch, images/s, GFLOP/s, memory, start-up
    lepton-nn bench --train --profile    where one step's time goes, per op and kernel

Every run is a fresh process (`python -m lepton_nn.bench.train --worker ...`), so its peak
resident memory (`ru_maxrss`) is its own and no thread pool of one framework waits on the
cores of another. A worker loads MNIST (into float32 in place: the data is part of the
memory), builds the model, times one step from process launch, runs `warmup` untimed steps,
times `steps` training steps of batch 64 and three passes of evaluation over the test set at
batch 1000, and prints one JSON line. The parent prints the table and the targets.

    lepton_nn   train.build_model(): keras.Sequential, Conv2D(32, 3×3, relu) → MaxPooling2D(2×2)
                → Flatten → Dense(128, relu) → Dense(10, softmax), Adam; steps through model.fit,
                evaluation through model.evaluate (loss and accuracy), as a user would.
    torch       the same layers as torch.nn.Sequential (NCHW), torch.optim.Adam, cross-entropy
                on the logits; the loop a PyTorch user writes (shuffled batches, loss.item()).
    torch-cl    the same with model and input in torch.channels_last.

Time to first step = process launch → end of the first training step, less the time spent
reading MNIST: interpreter start, imports, loading (or compiling) the kernels, building the
model, one step. "warm" is measured in a second process after the timed run; "cold" in a
process whose NUMBA_CACHE_DIR is an empty temporary directory, so numba compiles every kernel.
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH = 64
EVAL_BATCH = 1000
EVAL_PASSES = 3
BLOCKS = 10  # the timed steps are split into this many blocks; the median block's ms/step is reported
TORCH_VARIANTS = ("torch", "torch-cl")
TARGETS = {  # (figure, comparison, limit): see format_targets
    "train_vs_torch": 0.35, "train_vs_torch_cl": 0.5, "eval_vs_torch": 2.0, "rss_vs_torch": 0.5,
    "first_step_warm_s": 2.0, "python_overhead": 0.15}


def flops_per_image():
    """FLOP per image of the article's CNN, counting 2 per multiply-add of each GEMM-shaped pass.

    Forward, from the layer shapes (28×28×1 input, 3×3 conv to 26×26×32, pool to 13×13×32 = 5408):
        conv    2 · 26·26 · 32 · 3·3·1  =   389,376
        dense1  2 · 5408 · 128          = 1,384,448
        dense2  2 · 128 · 10            =     2,560
        F                               = 1,776,384
    Backward: every layer computes its weight gradient (as many FLOP as its forward) and its
    input gradient (as many again), except the first layer, whose input needs no gradient:
        backward = 2F − conv = 3,163,392,   training step = 3F − conv = 4,939,776.
    Bias adds, relu, pooling, the loss and Adam are left out: under 1 % of the total.
    """
    conv, dense1, dense2 = 2 * 26 * 26 * 32 * 9, 2 * 5408 * 128, 2 * 128 * 10
    forward = conv + dense1 + dense2
    return {"forward": forward, "train": 3 * forward - conv}


def peak_rss_mb():
    """This process's peak resident set size, MB (Linux reports ru_maxrss in KB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


# =========================================================================== the worker
def load_mnist(data):
    """MNIST as float32 in [0, 1], scaled in place (no second copy): x (N, 28, 28, 1), labels int64."""
    from lepton_nn.data import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data)

    def scale(x):
        x = x.reshape(-1, 28, 28, 1).astype(np.float32)
        x /= 255.0
        return x
    return (scale(x_train), y_train.astype(np.int64)), (scale(x_test), y_test.astype(np.int64))


class LeptonRun:
    """The article's model through the public Keras API on one backend."""

    def __init__(self, backend, threads):
        import lepton_nn
        from lepton_nn import kernels, train
        kernels.set_backend(backend)
        lepton_nn.seed(0)
        self.model = train.build_model()

    def fit(self, x, y, epochs=1):
        self.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)

    def evaluate(self, x, y):
        return self.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0)


class TorchRun:
    """The same model in PyTorch, NCHW or channels-last."""

    def __init__(self, variant, threads):
        import torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch, nn = torch, torch.nn
        self.model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(5408, 128), nn.ReLU(), nn.Linear(128, 10))
        self.memory_format = torch.channels_last if variant == "torch-cl" else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.generator = torch.Generator().manual_seed(0)

    def _input(self, x):
        # (N, 28, 28, 1) → (N, 1, 28, 28): with one channel the same bytes, only the strides change
        return self.torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

    def fit(self, x, y, epochs=1):
        torch, f = self.torch, self.torch.nn.functional
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        self.model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=self.generator)
            correct = 0
            for start in range(0, len(x), BATCH):
                batch = order[start:start + BATCH]
                xb = x[batch].permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
                self.optimizer.zero_grad()
                logits = self.model(xb)
                loss = f.cross_entropy(logits, y[batch])
                loss.backward()
                self.optimizer.step()
                loss.item()
                correct += int((logits.argmax(1) == y[batch]).sum())

    def evaluate(self, x, y):
        torch, f = self.torch, self.torch.nn.functional
        self.model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                logits = self.model(self._input(x[start:start + EVAL_BATCH]))
                yb = torch.from_numpy(y[start:start + EVAL_BATCH])
                loss_sum += float(f.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        return [loss_sum / len(x), correct / len(x)]


def _make_run(run, threads):
    return TorchRun(run, threads) if run in TORCH_VARIANTS else LeptonRun(run, threads)


def worker(run, data=None, steps=200, warmup=10, threads=1, launched=None, first_step_only=False, full=False):
    """One run (a backend name, "torch" or "torch-cl") in this process; returns its figures as a dict.

    launched: time.time() when the parent started this process (default: now).
    """
    launched = time.time() if launched is None else launched
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_mnist(data)
    data_s = time.perf_counter() - start
    if (1 + warmup + steps) * BATCH > len(x_train) and not first_step_only:
        raise ValueError(f"{len(x_train)} training images are too few for 1 + {warmup} + {steps} steps of {BATCH}")
    result = {"run": run, "threads": threads, "data_load_s": data_s}
    model = _make_run(run, threads)
    model.fit(x_train[:BATCH], y_train[:BATCH])
    result["first_step_s"] = time.time() - launched - data_s
    if first_step_only:
        return result

    used = BATCH
    if warmup:
        model.fit(x_train[used:used + warmup * BATCH], y_train[used:used + warmup * BATCH])
        used += warmup * BATCH
    # The timed steps run in blocks (one fit call each) and the median block counts: on a shared
    # machine a burst of someone else's work then spoils one block, not the figure.
    per_step = []
    for block in np.array_split(np.arange(steps), min(BLOCKS, steps)):
        rows = slice(used + block[0] * BATCH, used + (block[-1] + 1) * BATCH)
        start = time.perf_counter()
        model.fit(x_train[rows], y_train[rows])
        per_step.append((time.perf_counter() - start) / len(block))
    step_s = float(np.median(per_step))
    steps_per_epoch = math.ceil(len(x_train) / BATCH)
    result.update(steps=steps, warmup=warmup, step_ms=1e3 * step_s, steps_per_epoch=steps_per_epoch,
                  epoch_s=step_s * steps_per_epoch, train_images_per_s=BATCH / step_s)

    model.evaluate(x_test[:EVAL_BATCH], y_test[:EVAL_BATCH])  # warm-up: batch-1000 buffers, caches
    times = []
    for _ in range(EVAL_PASSES):
        start = time.perf_counter()
        model.evaluate(x_test, y_test)
        times.append(time.perf_counter() - start)
    result["eval_images_per_s"] = len(x_test) / sorted(times)[len(times) // 2]

    if full:  # the article's whole training run, from a fresh model: memory of a real run
        model = _make_run(run, threads)
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=5)
        result["full_train_s"] = time.perf_counter() - start
        result["full_test_accuracy"] = float(model.evaluate(x_test, y_test)[1])
    result["peak_rss_mb"] = peak_rss_mb()
    result["full"] = full
    return result


def profile_worker(backend, data=None, steps=200, warmup=10):
    """`steps` training steps of one lepton_nn backend under the Profiler: per-op seconds and the wall time."""
    from lepton_nn import profiler
    (x_train, y_train), _ = load_mnist(data)
    if (1 + warmup + steps) * BATCH > len(x_train):
        raise ValueError(f"{len(x_train)} training images are too few for 1 + {warmup} + {steps} steps of {BATCH}")
    model = LeptonRun(backend, None)
    model.fit(x_train[:(1 + warmup) * BATCH], y_train[:(1 + warmup) * BATCH])
    used = (1 + warmup) * BATCH
    with profiler.Profiler() as prof:
        model.fit(x_train[used:used + steps * BATCH], y_train[used:used + steps * BATCH])
    return {"run": backend, "steps": steps, "table": prof.table(steps=steps), "wall_s": prof.wall_seconds,
            "ops": [{"op": name, "phase": phase, "calls": prof.calls[name, phase], "s": s}
                    for (name, phase), s in sorted(prof.seconds.items(), key=lambda kv: -kv[1])]}


def _worker_main(argv=None):
    p = argparse.ArgumentParser(description="one training-benchmark run; prints one JSON line")
    p.add_argument("--worker", required=True, help="a lepton_nn backend, torch or torch-cl")
    p.add_argument("--data")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--launched", type=float)
    p.add_argument("--first-step-only", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args(argv)
    if a.profile:
        result = profile_worker(a.worker, a.data, a.steps, a.warmup)
    else:
        result = worker(a.worker, a.data, a.steps, a.warmup, a.threads, a.launched, a.first_step_only, a.full)
    print(json.dumps(result), flush=True)


# =========================================================================== the parent
def _thread_env(threads, explicit):
    """The environment of a worker: ours, with every thread pool pinned when --threads was given."""
    env = dict(os.environ)
    if explicit:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(threads)
    return env


def launch(run, data, steps, warmup, threads, env, first_step_only=False, full=False, profile=False):
    """Run one worker process; its JSON result, or {"run", "error"} with the tail of its stderr."""
    cmd = [sys.executable, "-m", "lepton_nn.bench.train", "--worker", run, "--steps", str(steps),
           "--warmup", str(warmup), "--threads", str(threads), "--launched", repr(time.time())]
    cmd += ["--data", str(data)] if data else []
    cmd += ["--first-step-only"] if first_step_only else []
    cmd += ["--full"] if full else []
    cmd += ["--profile"] if profile else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"run": run, "error": tail}
    return json.loads(lines[-1])


def selected_runs(requested=None):
    """Available lepton_nn backends, then torch and torch-cl when torch is importable; `requested`
    (a list of backend names, "torch" meaning both PyTorch variants) restricts them."""
    from lepton_nn import kernels
    names = kernels.available_backends()
    if importlib.util.find_spec("torch") is not None:  # found, not imported: the workers import it
        names += list(TORCH_VARIANTS)
    if requested:
        wanted = set(requested) | (set(TORCH_VARIANTS) if "torch" in requested else set())
        unknown = [r for r in wanted if r not in names and r not in TORCH_VARIANTS]
        if unknown:
            raise ValueError(f"backend(s) {', '.join(sorted(unknown))} not available here; "
                             f"available: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    return names


def _data_dir(data):
    """The directory holding MNIST, found (or downloaded) once here so workers never race to download."""
    from lepton_nn.data import mnist
    return str(mnist.find_files(data)["train_images"].parent)


def run_all(runs, data, steps, warmup, threads, explicit_threads=False, full=False, startup=True, progress=None):
    """Every run in its own process, then (startup=True) the warm and cold time-to-first-step probes."""
    env = _thread_env(threads, explicit_threads)
    results = []
    for run in runs:
        if progress:
            progress(f"{run}: {warmup} warm-up + {steps} timed steps, evaluation" + (", 5 epochs" if full else ""))
        result = launch(run, data, steps, warmup, threads, env, full=full)
        result["first_step_in_run_s"] = result.pop("first_step_s", None)
        if startup and "error" not in result:
            if progress:
                progress(f"{run}: time to first step, warm")
            warm = launch(run, data, steps, warmup, threads, env, first_step_only=True)
            result["first_step_warm_s"] = warm.get("first_step_s")
            if "error" in warm:
                result["probe_error"] = f"warm first-step probe: {warm['error']}"
            if run not in TORCH_VARIANTS:
                if progress:
                    progress(f"{run}: time to first step, cold (empty NUMBA_CACHE_DIR)")
                with tempfile.TemporaryDirectory(prefix="lepton_nn_cold_") as cache:
                    cold = launch(run, data, steps, warmup, threads, dict(env, NUMBA_CACHE_DIR=cache),
                                  first_step_only=True)
                result["first_step_cold_s"] = cold.get("first_step_s")
                if "error" in cold:
                    result["probe_error"] = f"cold first-step probe: {cold['error']}"
        results.append(result)
    return results


def derive(results, gemm_gflops):
    """Add rates and ratios to each result; returns the targets as a list of dicts."""
    flops = flops_per_image()
    by_run = {r["run"]: r for r in results if "error" not in r}
    torch, torch_cl = by_run.get("torch"), by_run.get("torch-cl")
    for r in by_run.values():
        r["train_gflops"] = r["train_images_per_s"] * flops["train"] / 1e9
        r["eval_gflops"] = r["eval_images_per_s"] * flops["forward"] / 1e9
        r["train_pct_gemm"] = 100 * r["train_gflops"] / gemm_gflops
        r["eval_pct_gemm"] = 100 * r["eval_gflops"] / gemm_gflops
        r["epoch_vs_torch"] = r["epoch_s"] / torch["epoch_s"] if torch else None
        r["epoch_vs_torch_cl"] = r["epoch_s"] / torch_cl["epoch_s"] if torch_cl else None
        r["eval_vs_torch"] = r["eval_images_per_s"] / torch["eval_images_per_s"] if torch else None
        r["rss_vs_torch"] = r["peak_rss_mb"] / torch["peak_rss_mb"] if torch else None

    ours = [r for name, r in by_run.items() if name not in TORCH_VARIANTS]

    def best(key, largest=False):
        rows = [r for r in ours if r.get(key) is not None]
        return (max if largest else min)(rows, key=lambda r: r[key]) if rows else None

    def target(what, key, limit, at_least=False, needs_torch=True, largest=False, unit="×"):
        row = best(key, largest)
        value = None if row is None else row[key]
        met = None if value is None else (value >= limit if at_least else value <= limit)
        return {"target": what, "run": row and row["run"], "value": value, "limit": limit,
                "at_least": at_least, "met": met, "unit": unit,
                "missing": "no torch" if needs_torch and torch is None else ("not measured" if value is None else "")}

    rss_note = " (5-epoch run)" if any(r.get("full") for r in ours) else " (short run, not --full)"
    return [
        target("training time per epoch / PyTorch", "epoch_vs_torch", TARGETS["train_vs_torch"]),
        target("training time per epoch / PyTorch channels-last", "epoch_vs_torch_cl", TARGETS["train_vs_torch_cl"]),
        target("evaluation images/s (batch 1000) / PyTorch's", "eval_vs_torch", TARGETS["eval_vs_torch"],
               at_least=True, largest=True),
        target("peak RSS / PyTorch's" + rss_note, "rss_vs_torch", TARGETS["rss_vs_torch"]),
        target("time to first step, warm cache", "first_step_warm_s", TARGETS["first_step_warm_s"],
               needs_torch=False, unit=" s"),
    ]


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def _table(header, widths, rows):
    fmt_row = lambda cells: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows]


def format_targets(targets):
    lines = ["targets (lepton_nn's best backend for each figure):"]
    for t in targets:
        sign = "≥" if t["at_least"] else "≤"
        limit = f"{sign} {t['limit']:g}{t['unit']}"
        if t["missing"]:
            verdict = f"— ({t['missing']})"
        else:
            digits = 3 if f"{t['value']:.2f}" == f"{t['limit']:.2f}" else 2  # 0.50 vs ≤ 0.5: show 0.503
            value = f"{t['value']:.{digits}f}{t['unit']}"
            verdict = f"{value:>8s} on {t['run']:6s} {'met' if t['met'] else 'NOT met'}"
        lines.append(f"  {t['target']:58s} {limit:>8s}  {verdict}")
    overhead = f"≤ {100 * TARGETS['python_overhead']:g} %"
    lines.append(f"  {'Python overhead per step (from the profiler)':58s} {overhead:>8s}  "
                 f"see lepton-nn bench --train --profile")
    return lines


def format_report(results, targets, gemm_gflops, info, settings):
    flops = flops_per_image()
    full = settings["full"]
    lines = ["lepton-nn bench --train: the article's CNN (Conv2D 32 3×3 relu → MaxPool 2×2 → Dense 128 relu → "
             "Dense 10 softmax; Adam), batch 64",
             f"each run in its own process; {settings['warmup']} warm-up step(s) excluded, then {settings['steps']} "
             f"timed steps (median of {BLOCKS} blocks); evaluation: the test set at batch {EVAL_BATCH}, median of "
             f"{EVAL_PASSES} passes",
             f"machine: {info['cpu'] or info['machine']}, {info['cpus']} CPUs; python {info['python']}; "
             f"numpy {info['numpy']}; numba {info['numba'] or 'not installed'}; "
             f"torch {info['torch'] or 'not installed: no torch rows'}",
             f"threads: {settings['threads']} in every run (numba, OpenMP, BLAS; torch.set_num_threads)",
             f"numpy BLAS: {info['blas']}; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE'] or 'unset'}, "
             f"OPENBLAS_L2_SIZE={info['OPENBLAS_L2_SIZE'] or 'unset'}, "
             f"OPENBLAS_THREAD_TIMEOUT={info['OPENBLAS_THREAD_TIMEOUT'] or 'unset'}",
             f"float32 GEMM 1024³ (np.matmul): {gemm_gflops:.1f} GFLOP/s = 100 % GEMM",
             f"FLOP per image: training step {flops['train'] / 1e6:.2f} M (3·forward − first layer's input grad), "
             f"evaluation {flops['forward'] / 1e6:.2f} M (forward)", ""]
    ok = [r for r in results if "error" not in r]
    rows = [[r["run"], _fmt(r["step_ms"], ".2f"), _fmt(r["epoch_s"], ".2f"), _fmt(r["train_images_per_s"], ".0f"),
             _fmt(r["train_gflops"], ".2f"), _fmt(r["train_pct_gemm"], ".1f"), _fmt(r["epoch_vs_torch"], ".2f"),
             _fmt(r["epoch_vs_torch_cl"], ".2f")] for r in ok]
    lines += ["training"] + _table(("run", "ms/step", "s/epoch", "images/s", "GFLOP/s", "% GEMM", "/ torch",
                                    "/ torch-cl"), (9, 8, 8, 9, 8, 7, 8, 10), rows)
    rows = [[r["run"], _fmt(r["eval_images_per_s"], ".0f"), _fmt(r["eval_gflops"], ".2f"),
             _fmt(r["eval_pct_gemm"], ".1f"), _fmt(r["eval_vs_torch"], ".2f")] for r in ok]
    lines += ["", f"evaluation, batch {EVAL_BATCH}"] + _table(("run", "images/s", "GFLOP/s", "% GEMM", "× torch"),
                                                               (9, 9, 8, 7, 8), rows)
    rows = [[r["run"], _fmt(r["peak_rss_mb"], ".0f"), _fmt(r["rss_vs_torch"], ".2f"),
             _fmt(r.get("first_step_warm_s"), ".2f"), _fmt(r.get("first_step_cold_s"), ".2f")] for r in ok]
    what = ("5-epoch training run + evaluation" if full
            else "short run: the steps above + evaluation; --full for 5 epochs")
    lines += ["", f"memory ({what}; MNIST as float32 included) and start-up"]
    lines += _table(("run", "peak RSS MB", "/ torch", "1st step warm s", "cold s"), (9, 11, 8, 15, 7), rows)
    if full:
        lines += ["", "5-epoch runs: " + "; ".join(
            f"{r['run']} {r['full_train_s']:.0f} s, test accuracy {100 * r['full_test_accuracy']:.2f} %" for r in ok)]
    lines += ["",
              "s/epoch = ms/step × steps per epoch (ceil(60000/64) = 938).  / torch: this time / PyTorch's "
              "(NCHW; torch-cl: channels-last); below 1 is faster.",
              "× torch: these images/s / PyTorch's.  1st step: process launch → first step done, MNIST reading "
              "excluded; cold: empty NUMBA_CACHE_DIR.", ""]
    lines += format_targets(targets)
    lines += [f"FAILED {r['run']}: {r['error']}" for r in results if "error" in r]
    lines += [f"FAILED {r['run']}, {r['probe_error']}" for r in results if "probe_error" in r]
    return "\n".join(lines)


def main(backends=None, steps=200, warmup=10, data=None, threads=None, full=False, json_path=None,
         startup=True, progress=None):
    """What `lepton-nn bench --train` does; returns the exit status (1 if a run failed)."""
    from lepton_nn.bench import kernels as kernel_bench
    runs = selected_runs(backends)
    data = _data_dir(data)
    explicit = threads is not None
    threads = threads or kernel_bench.thread_count()
    info = kernel_bench.machine_info()
    gemm = kernel_bench.gemm_rate()
    results = run_all(runs, data, steps, warmup, threads, explicit, full, startup, progress)
    gemm = max(gemm, kernel_bench.gemm_rate())  # before and after: other work only ever slows it down
    targets = derive(results, gemm)
    settings = {"steps": steps, "warmup": warmup, "threads": threads, "full": full, "batch": BATCH,
                "eval_batch": EVAL_BATCH}
    print(format_report(results, targets, gemm, info, settings))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "settings": settings, "gemm_gflops": gemm, "flops_per_image": flops_per_image(),
                       "runs": results, "targets": targets}, f, indent=1)
    return 1 if any("error" in r or "probe_error" in r for r in results) else 0


# =========================================================================== the profile
def kernels_of(op, phase):
    """Which backend kernels an op's forward/backward (or an optimizer's update) calls, read from its source."""
    import inspect
    import re

    from lepton_nn import ops, optim
    cls = getattr(ops, op, None) or getattr(optim, op, None)
    if cls is None:
        return ""
    fn = getattr(cls, phase, None) if phase in ("forward", "backward") else cls
    try:
        source = inspect.getsource(fn or cls)
    except (OSError, TypeError):
        return ""
    names = sorted(set(re.findall(r"(?:backend|kernels\.active\(\))\.(\w+)\(", source)))
    if names:
        return ", ".join(names)
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("@"))  # no decorators
    return "NumPy @ (BLAS)" if re.search(r"\w\s*@\s*\w", code) else "NumPy"


def format_profile(results, threads):
    steps = results[0]["steps"]
    lines = [f"lepton-nn bench --train --profile: {steps} training steps of batch 64 under lepton_nn.profiler, "
             f"after warm-up; {threads} threads", ""]
    for r in results:
        lines += [f"backend {r['run']}: {1e3 * r['wall_s'] / steps:.2f} ms/step", r["table"], ""]
    # one table across backends: where the fast path wins, op by op
    keys = []
    for r in results:
        keys += [(o["op"], o["phase"]) for o in r["ops"] if (o["op"], o["phase"]) not in keys]
    names = [r["run"] for r in results]
    rows = []
    for op, phase in keys:
        cells = []
        for r in results:
            s = next((o["s"] for o in r["ops"] if (o["op"], o["phase"]) == (op, phase)), None)
            cells.append(_fmt(None if s is None else 1e3 * s / steps, ".3f"))
        rows.append([op, phase] + cells + [kernels_of(op, phase)])
    overhead = {r["run"]: r["wall_s"] - sum(o["s"] for o in r["ops"]) for r in results}
    rows.append(["(python overhead)", ""] + [f"{1e3 * overhead[n] / steps:.3f}" for n in names] + [""])
    rows.append(["total", ""] + [f"{1e3 * r['wall_s'] / steps:.3f}" for r in results] + [""])
    widths = (22, 9) + tuple(max(8, len(n)) for n in names) + (0,)
    fmt_row = lambda cells: "  ".join(str(v).ljust(w) if i < 2 or i == len(cells) - 1 else str(v).rjust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(cells, widths))).rstrip()
    lines += ["ms per step by op and backend, and the kernels each op calls"]
    lines += [fmt_row(("op", "phase") + tuple(names) + ("kernels",)),
              fmt_row(["-" * w for w in widths[:-1]] + ["-" * 7])]
    lines += [fmt_row(row) for row in rows]
    fastest = min(results, key=lambda r: r["wall_s"])
    share = overhead[fastest["run"]] / fastest["wall_s"]
    limit = TARGETS["python_overhead"]
    lines += ["", f"Python overhead (wall time − time inside ops and the optimizer) on the fastest backend, "
                  f"{fastest['run']}: {100 * share:.1f} % of the step; target ≤ {100 * limit:g} %: "
                  f"{'met' if share <= limit else 'NOT met'}"]
    lines += [f"  {r['run']}: {100 * overhead[r['run']] / r['wall_s']:.1f} %" for r in results if r is not fastest]
    return "\n".join(lines), {"backend": fastest["run"], "python_overhead": share, "limit": limit,
                              "met": share <= limit}


def profile_main(backends=None, steps=200, warmup=10, data=None, threads=None, json_path=None, progress=None):
    """What `lepton-nn bench --train --profile` does: each lepton_nn backend profiled in its own process."""
    from lepton_nn.bench import kernels as kernel_bench
    runs = [r for r in selected_runs(backends) if r not in TORCH_VARIANTS]
    if not runs:
        raise ValueError("--profile needs a lepton_nn backend (numpy, numba, c); PyTorch is not profiled")
    data = _data_dir(data)
    explicit = threads is not None
    threads = threads or kernel_bench.thread_count()
    env = _thread_env(threads, explicit)
    results = []
    for run in runs:
        if progress:
            progress(f"profiling {run}: {steps} steps")
        results.append(launch(run, data, steps, warmup, threads, env, profile=True))
    failed = [r for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    status = 1 if failed else 0
    if results:
        text, verdict = format_profile(results, threads)
        print(text)
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"threads": threads, "runs": results, "python_overhead": verdict}, f, indent=1)
    for r in failed:
        print(f"FAILED {r['run']}: {r['error']}")
    return status


if __name__ == "__main__":
    _worker_main()
