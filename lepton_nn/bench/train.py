"""Training benchmark: the classic Keras MNIST CNN (or, with --model deep, a deeper CNN) trained
and evaluated by every lepton_nn backend and by the peer frameworks, each run alone in a fresh process.

    lepton-nn bench --train [--model deep] [--rounds 3] [--json NEW.json] [--compare OLD.json]
    lepton-nn bench --train --profile    where one lepton_nn step's time goes, per op and kernel

Each run is one `train_worker.py` process (the model, the runs and the timing protocol are
described there). Peers (torch, torch-cl, tf-keras, jax) are started by file path, so they never
import lepton_nn, and with the user's environment as it was before `import lepton_nn` changed
it (runtime.environ_without_our_settings()); lepton_nn's own runs keep its settings. Every
worker reports the environment it saw, and the header prints it.

Rounds: all workers run round-robin (A B C … A B C …) `rounds` times, so a drift of the shared
machine hits every run alike; each cell is the median over rounds with the min–max range, and
each ratio is the median of the per-round ratios (both sides measured in the same round).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lepton_nn import runtime
from lepton_nn.bench import report
from lepton_nn.bench.train_worker import (BATCH, BLOCKS, EVAL_BATCH, EVAL_PASSES, LEPTON_RUNS, MODEL_TITLES, MODELS,
                                          PEER_MODULES, PEERS, conv_shapes)

WORKER = Path(__file__).with_name("train_worker.py")
STEPS_PER_EPOCH = -(-60000 // BATCH)  # 938: the last batch of an epoch is a partial one
PEERS_EXTRA = 'pip install -e ".[peers]"'  # tensorflow-cpu and jax, pinned in pyproject.toml
TORCH_EXTRA = 'pip install -e ".[torch]"'


def flops_per_image(model="article"):
    """FLOP per image of a model of MODELS, counting 2 per multiply-add of each GEMM-shaped pass:
    a 3×3 conv is 2 · H_out·W_out · C_out · 3·3·C_in (padded cells counted, as im2col's GEMM
    multiplies them), a dense layer 2 · in · out.

    The article's CNN (28×28×1 input, 3×3 conv to 26×26×32, pool to 13×13×32 = 5408):
        conv    2 · 26·26 · 32 · 3·3·1  =   389,376
        dense1  2 · 5408 · 128          = 1,384,448
        dense2  2 · 128 · 10            =     2,560
        F                               = 1,776,384
    The deep CNN (28×28×1, 'same' conv to 28×28×32, pool to 14×14×32, 'same' conv to 14×14×64,
    pool to 7×7×64 = 3136):
        conv1   2 · 28·28 · 32 · 3·3·1  =   451,584
        conv2   2 · 14·14 · 64 · 3·3·32 = 7,225,344
        dense1  2 · 3136 · 128          =   802,816
        dense2  2 · 128 · 10            =     2,560
        F                               = 8,482,304
    Backward: every layer computes its weight gradient (as many FLOP as its forward) and its
    input gradient (as many again), except the first layer, whose input needs no gradient:
        training step = 3F − first conv: 4,939,776 (article), 24,995,328 (deep).
    Bias adds, relu, pooling, the loss and Adam are left out: under 1 % of the total.
    """
    convs, flat = conv_shapes(model)
    layers = [2 * out * out * c_out * 9 * c_in for out, c_in, c_out in convs] + [2 * flat * 128, 2 * 128 * 10]
    forward = sum(layers)
    return {"forward": forward, "train": 3 * forward - layers[0]}


# =========================================================================== which runs
def installed_peers():
    """The peers whose framework is importable here (found, not imported: the workers import it)."""
    return [p for p in PEERS if importlib.util.find_spec(PEER_MODULES[p]) is not None]


def selected_runs(requested=None):
    """(runs, missing): lepton_nn's available backends, then the installed peers; `requested`
    restricts them ("torch" means both PyTorch layouts, "peers" every installed peer). missing:
    the peers not installed, each with the command that installs it."""
    from lepton_nn import kernels
    available = kernels.available_backends() + installed_peers()
    missing = {p: TORCH_EXTRA if PEER_MODULES[p] == "torch" else PEERS_EXTRA for p in PEERS if p not in available}
    if not requested:
        return available, missing
    wanted = set()
    for name in requested:
        wanted |= {"torch": {"torch", "torch-cl"}, "peers": set(PEERS) - set(missing)}.get(name, {name})
    absent = sorted(w for w in wanted if w not in available)
    if absent:
        hints = "; ".join(f"{w} needs {PEER_MODULES[w]}: {missing[w]}" for w in absent if w in missing)
        raise ValueError(f"run(s) {', '.join(absent)} not available here ({hints or 'unknown name'}); "
                         f"available: {', '.join(available)}")
    return [n for n in available if n in wanted], {p: m for p, m in missing.items() if p in wanted}


def write_mnist(data, path):
    """MNIST (found, or downloaded once here so that workers never race to download) as one
    .npz of uint8 images and labels, which every worker reads the same way."""
    from lepton_nn.data import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# =========================================================================== the workers
def worker_env(run, threads=None):
    """A lepton_nn run gets this process's environment, lepton_nn's settings included; a peer
    the user's, without them. --threads pins every pool, in both."""
    env = dict(os.environ) if run in LEPTON_RUNS else runtime.environ_without_our_settings()
    if threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(threads)
    return env


def error_line(stderr, returncode):
    """The line of a worker's stderr that says what went wrong (frameworks log a lot after it)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":")[0].endswith(("Error", "Exception", "Interrupt"))]
    return (errors or lines or [f"exit status {returncode}"])[-1].strip()


def launch(run, mnist=None, steps=200, warmup=10, threads=None, env=None, first_step_only=False, full=False,
           profile=False, probe=False, model="article"):
    """Run one worker process; its JSON result, or {"run", "error"} with the line that says why."""
    cmd = [sys.executable, str(WORKER), "--run", run, "--model", model, "--steps", str(steps),
           "--warmup", str(warmup), "--launched", repr(time.time())]
    cmd += ["--mnist", str(mnist)] if mnist else []
    cmd += ["--threads", str(threads)] if threads else []
    cmd += [flag for flag, on in (("--first-step-only", first_step_only), ("--full", full),
                                  ("--profile", profile), ("--probe", probe)) if on]
    proc = subprocess.run(cmd, env=worker_env(run, threads) if env is None else env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"run": run, "error": error_line(proc.stderr, proc.returncode)}
    return json.loads(lines[-1])


def run_rounds(runs, rounds, mnist, steps, warmup, threads, full=False, startup=True, progress=None,
               model="article"):
    """[[result of each run] for each round], the runs round-robin; then, once per run, the warm
    and (lepton_nn's) cold time-to-first-step probes, added to the first round's results."""
    results = report.round_robin(
        runs, rounds, lambda run, r: launch(run, mnist, steps, warmup, threads, full=full and r == 0, model=model),
        progress)
    if startup:
        for result in results[0]:
            run = result["run"]
            if "error" in result:
                continue
            if progress:
                progress(f"{run}: time to first step")
            probes = {"warm": launch(run, mnist, steps, warmup, threads, first_step_only=True, model=model)}
            if run in LEPTON_RUNS:  # an empty numba cache: numba compiles every kernel
                with tempfile.TemporaryDirectory(prefix="lepton_nn_cold_") as cache:
                    env = dict(worker_env(run, threads), NUMBA_CACHE_DIR=cache)
                    probes["cold"] = launch(run, mnist, steps, warmup, threads, env=env, first_step_only=True,
                                            model=model)
            for kind, probe in probes.items():
                result[f"first_step_{kind}_s"] = probe.get("first_step_s")
                if "error" in probe:
                    result["probe_error"] = f"{kind} first-step probe: {probe['error']}"
    return results


# =========================================================================== the figures
def figures(results, fastest_peer=None):
    """{"<run> <figure>": [value per round]}: what the table shows and what --compare compares.
    Ratios are per round (both sides from the same round)."""
    runs = [r["run"] for r in results[0]]
    per = {run: [next((x for x in rnd if x["run"] == run and "error" not in x), None) for rnd in results]
           for run in runs}

    def series(run, key):
        return [None if x is None else x.get(key) for x in per[run]]
    out = {}
    for run in runs:
        out[f"{run} ms/step"] = series(run, "step_ms")
        out[f"{run} eval images/s"] = series(run, "eval_images_per_s")
        out[f"{run} peak RSS MB"] = series(run, "peak_rss_mb")
    for run in runs:
        for peer in [p for p in ("torch", fastest_peer) if p in per and p != run]:
            out[f"{run} / {peer}"] = report.ratios(series(run, "step_ms"), series(peer, "step_ms"))
            out[f"{run} eval × {peer}"] = report.ratios(series(run, "eval_images_per_s"),
                                                        series(peer, "eval_images_per_s"))
    return {k: v for k, v in out.items() if any(x is not None for x in v)}


def fastest(results, candidates):
    """The candidate run with the lowest median ms/step, or None."""
    medians = {run: report.median([x.get("step_ms") for rnd in results for x in rnd if x["run"] == run])
               for run in candidates}
    medians = {run: m for run, m in medians.items() if m is not None}
    return min(medians, key=medians.get) if medians else None


def environment_lines(results):
    """What each kind of worker saw: the evidence that no setting of ours reached a peer."""
    lines = []
    for kind, names in (("lepton_nn runs", LEPTON_RUNS), ("peers", PEERS)):
        seen = [x["environment"] for rnd in results for x in rnd if x["run"] in names and "environment" in x]
        if not seen:
            continue
        env = seen[0]["environ_at_start"] if seen[0]["environ_at_start"] is not None else seen[0]["os_environ"]
        shown = ", ".join(f"{k}={env.get(k, 'unset')}" for k in runtime.THREAD_DEFAULTS)
        extra = sorted(k for k in env if k not in runtime.THREAD_DEFAULTS)
        imported = sorted({e["lepton_nn_imported"] for e in seen})
        lines.append(f"{kind} started with {shown}" + (f"; also set: {', '.join(extra)}" if extra else "")
                     + f"; lepton_nn imported: {' and '.join('yes' if i else 'no' for i in imported)}")
        if kind == "peers" and (True in imported or any(
                e["environ_at_start"] != seen[0]["environ_at_start"] for e in seen)):
            lines.append("WARNING: a peer did not run as a process of its own untouched by lepton_nn")
    return lines


def format_report(results, info, settings, gemm_gflops, missing):
    model = settings.get("model", "article")
    flops = flops_per_image(model)
    rounds = len(results)
    runs = [r["run"] for r in results[0]]
    peer_runs = [r for r in runs if r in PEERS]
    best_peer = fastest(results, peer_runs)
    figs = figures(results, best_peer)
    by_round = {run: [next(x for x in rnd if x["run"] == run) for rnd in results] for run in runs}
    frameworks = sorted({x["framework"] for rnd in results for x in rnd if "framework" in x and x["run"] in PEERS})
    lines = [f"lepton-nn bench --train --model {model}: {MODEL_TITLES[model]}, batch 64, float32",
             f"every run alone in a fresh process, {rounds} round(s) round-robin; per run: 1 + {settings['warmup']} "
             f"warm-up steps excluded, {settings['steps']} timed steps (median of {BLOCKS} blocks); evaluation: the "
             f"test set at batch {EVAL_BATCH}, median of {EVAL_PASSES} passes",
             *report.machine_lines(info),
             f"peers: {'; '.join(frameworks) or 'none'}",
             *environment_lines(results),
             f"threads: {'pinned to ' + str(settings['threads']) + ' in every run' if settings['threads'] else 'each framework its own default'}",
             f"float32 GEMM 1024³ (np.matmul): {gemm_gflops:.1f} GFLOP/s = 100 % GEMM; FLOP per image: training "
             f"step {flops['train'] / 1e6:.2f} M, evaluation {flops['forward'] / 1e6:.2f} M", ""]
    cells = "median (min–max) over rounds" if rounds > 1 else "one round: no spread"
    ratio_heads = [f"/ {p}" for p in ("torch", best_peer) if p in runs and p is not None]
    ratio_heads = list(dict.fromkeys(ratio_heads))
    rows = []
    for run in runs:
        if all("error" in x for x in by_round[run]):
            continue
        step = report.median(figs.get(f"{run} ms/step", []))
        rate = BATCH / step * 1e3 if step else None
        gflops = rate * flops["train"] / 1e9 if rate else None
        rows.append([run, report.fmt_spread(figs.get(f"{run} ms/step", []), ".2f"),
                     report.fmt(step and step * STEPS_PER_EPOCH / 1e3, ".1f"), report.fmt(rate, ".0f"),
                     report.fmt(gflops, ".1f"), report.fmt(gflops and 100 * gflops / gemm_gflops, ".1f")]
                    + [report.fmt_spread(figs.get(f"{run} {h}", []), ".2f") for h in ratio_heads])
    rows += [[p, f"(not installed: {how})"] for p, how in missing.items()]
    lines += [f"training ({cells})"]
    lines += report.table(("run", "ms/step", "s/epoch", "images/s", "GFLOP/s", "% GEMM") + tuple(ratio_heads), rows)
    rows = []
    for run in runs:
        if all("error" in x for x in by_round[run]):
            continue
        rate = report.median(figs.get(f"{run} eval images/s", []))
        rows.append([run, report.fmt_spread(figs.get(f"{run} eval images/s", []), ".0f"),
                     report.fmt(rate and rate * flops["forward"] / 1e9, ".1f"),
                     report.fmt(rate and 100 * rate * flops["forward"] / 1e9 / gemm_gflops, ".1f")]
                    + [report.fmt_spread(figs.get(f"{run} eval × {h[2:]}", []), ".2f") for h in ratio_heads])
    lines += ["", f"evaluation, batch {EVAL_BATCH}"]
    lines += report.table(("run", "images/s", "GFLOP/s", "% GEMM") + tuple(f"× {h[2:]}" for h in ratio_heads), rows)
    rows = [[run, report.fmt_spread(figs.get(f"{run} peak RSS MB", []), ".0f"),
             report.fmt(by_round[run][0].get("first_step_warm_s"), ".2f"),
             report.fmt(by_round[run][0].get("first_step_cold_s"), ".2f")]
            for run in runs if "error" not in by_round[run][0]]
    what = "round 1 includes the 5-epoch run" if settings["full"] else "the steps above + evaluation; --full adds 5 epochs"
    lines += ["", f"memory ({what}; MNIST as float32 included) and start-up"]
    lines += report.table(("run", "peak RSS MB", "1st step warm s", "cold s"), rows)
    if settings["full"]:
        lines += ["", "5-epoch runs (round 1): " + "; ".join(
            f"{x['run']} {x['full_train_s']:.0f} s, test accuracy {100 * x['full_test_accuracy']:.2f} %"
            for x in results[0] if "full_train_s" in x)]
    lines += ["", f"s/epoch = ms/step × {STEPS_PER_EPOCH} steps.  / torch: this run's ms/step ÷ PyTorch NCHW's in "
                  "the same round, median over rounds; below 1 is faster.",
              (f"/ {best_peer}: the same against the fastest peer (lowest median ms/step).  "
               if best_peer and best_peer != "torch" else "")
              + "× torch: images/s ÷ PyTorch's.  1st step: launch → first step done, data reading excluded; "
                "cold: empty NUMBA_CACHE_DIR."]
    lines += [f"FAILED {x['run']} (round {r + 1}): {x['error']}" for r, rnd in enumerate(results) for x in rnd
              if "error" in x]
    lines += [f"FAILED {x['run']}, {x['probe_error']}" for x in results[0] if "probe_error" in x]
    return "\n".join(lines), figs


def check_model(model):
    if model not in MODELS:
        raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {model!r}")


def read_old(path, model):
    """--compare's earlier run, refused unless it trained the same model (a file written before
    --model existed trained the article's): figures of two models are never compared."""
    old = report.read_json(path, "train")
    old_model = old.get("settings", {}).get("model", "article")
    if old_model != model:
        raise ValueError(f"--compare {path}: that run trained --model {old_model}, this one --model {model}; "
                         f"compare runs of one model")
    return old


def main(backends=None, steps=200, warmup=10, data=None, threads=None, full=False, json_path=None,
         startup=True, progress=None, rounds=3, compare=None, model="article"):
    """What `lepton-nn bench --train [--model MODEL]` does; returns the exit status (1 if a run failed)."""
    check_model(model)
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    old = read_old(compare, model) if compare else None  # before the long work, not after
    runs, missing = selected_runs(backends)
    info = report.machine_info()
    gemm = report.gemm_rate()
    with tempfile.TemporaryDirectory(prefix="lepton_nn_bench_") as tmp:
        mnist = Path(tmp) / "mnist.npz"
        write_mnist(data, mnist)
        results = run_rounds(runs, rounds, mnist, steps, warmup, threads, full, startup, progress, model)
    gemm = max(gemm, report.gemm_rate())  # before and after: other work only ever slows it down
    settings = {"model": model, "steps": steps, "warmup": warmup, "threads": threads, "full": full, "batch": BATCH,
                "eval_batch": EVAL_BATCH, "rounds": rounds}
    text, figs = format_report(results, info, settings, gemm, missing)
    data_out = {"kind": "train", "machine": info, "settings": settings, "gemm_gflops": gemm,
                "flops_per_image": flops_per_image(model), "rounds": results, "figures": figs}
    if old:
        text += "\n\n" + "\n".join(report.compare_lines(old, data_out, compare))
    print(text)
    if json_path:
        report.write_json(json_path, data_out)
    failed = any("error" in x or "probe_error" in x for rnd in results for x in rnd)
    return 1 if failed else 0


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


PYTHON_OVERHEAD_TARGET = 0.15  # the share of a step spent outside ops and the optimizer


def format_profile(results):
    steps, model = results[0]["steps"], results[0].get("model", "article")
    lines = [f"lepton-nn bench --train --profile --model {model}: {steps} training steps of batch 64 of "
             f"{MODEL_TITLES[model]} under lepton_nn.profiler, after warm-up", ""]
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
            cells.append(report.fmt(None if s is None else 1e3 * s / steps, ".3f"))
        rows.append([op, phase] + cells + [kernels_of(op, phase)])
    overhead = {r["run"]: r["wall_s"] - sum(o["s"] for o in r["ops"]) for r in results}
    rows.append(["(python overhead)", ""] + [f"{1e3 * overhead[n] / steps:.3f}" for n in names] + [""])
    rows.append(["total", ""] + [f"{1e3 * r['wall_s'] / steps:.3f}" for r in results] + [""])
    lines += ["ms per step by op and backend, and the kernels each op calls"]
    lines += report.table(("op", "phase") + tuple(names) + ("kernels",), rows, left=2, last_left=True)
    fastest_run = min(results, key=lambda r: r["wall_s"])
    share = overhead[fastest_run["run"]] / fastest_run["wall_s"]
    lines += ["", f"Python overhead (wall time − time inside ops and the optimizer) on the fastest backend, "
                  f"{fastest_run['run']}: {100 * share:.1f} % of the step; target ≤ {100 * PYTHON_OVERHEAD_TARGET:g} %: "
                  f"{'met' if share <= PYTHON_OVERHEAD_TARGET else 'NOT met'}"]
    lines += [f"  {r['run']}: {100 * overhead[r['run']] / r['wall_s']:.1f} %" for r in results if r is not fastest_run]
    return "\n".join(lines), {"backend": fastest_run["run"], "python_overhead": share,
                              "limit": PYTHON_OVERHEAD_TARGET, "met": share <= PYTHON_OVERHEAD_TARGET}


def profile_main(backends=None, steps=200, warmup=10, data=None, threads=None, json_path=None, progress=None,
                 model="article"):
    """What `lepton-nn bench --train --profile` does: each lepton_nn backend profiled in its own process."""
    check_model(model)
    runs = [r for r in selected_runs(backends)[0] if r in LEPTON_RUNS]
    if not runs:
        raise ValueError("--profile needs a lepton_nn backend (numpy, numba, c); peers are not profiled")
    results = []
    with tempfile.TemporaryDirectory(prefix="lepton_nn_bench_") as tmp:
        mnist = Path(tmp) / "mnist.npz"
        write_mnist(data, mnist)
        for run in runs:
            if progress:
                progress(f"profiling {run}: {steps} steps")
            results.append(launch(run, mnist, steps, warmup, threads, profile=True, model=model))
    failed = [r for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    if results:
        text, verdict = format_profile(results)
        print(text)
        if json_path:
            report.write_json(json_path, {"kind": "profile", "model": model, "runs": results,
                                          "python_overhead": verdict})
    for r in failed:
        print(f"FAILED {r['run']}: {r['error']}")
    return 1 if failed else 0
