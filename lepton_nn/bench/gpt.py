"""Shakespeare benchmark: iterations of nanoGPT's baby-GPT recipe (lepton_nn/shakespeare.py)
by every lepton_nn backend and by PyTorch, each run alone in a fresh process (gpt_worker.py),
round-robin over rounds, as the training benchmark (lepton_nn/bench/train.py) runs its runs.

    lepton-nn bench --shakespeare [--steps 60] [--rounds 3] [--json NEW.json] [--compare OLD.json]
"""
import json
import subprocess
import sys
from pathlib import Path

from lepton_nn.bench import report
from lepton_nn.bench.train import error_line, worker_env

WORKER = Path(__file__).with_name("gpt_worker.py")
LEPTON_RUNS = ("numpy", "numba", "c")


def launch(run, data_dir, iters, warmup):
    cmd = [sys.executable, str(WORKER), "--run", run, "--data", str(data_dir), "--iters", str(iters),
           "--warmup", str(warmup)]
    proc = subprocess.run(cmd, env=worker_env(run), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"run": run, "error": error_line(proc.stderr, proc.returncode)}
    return json.loads(lines[-1])


def selected_runs(requested):
    import importlib.util

    from lepton_nn import kernels
    available = kernels.available_backends() + (["torch"] if importlib.util.find_spec("torch") else [])
    if not requested:
        return available
    absent = [r for r in requested if r not in available]
    if absent:
        raise ValueError(f"run(s) {', '.join(absent)} not available here; available: {', '.join(available)}")
    return [r for r in available if r in requested]


def figures(results):
    runs = [x["run"] for x in results[0]]

    def series(run, key):
        return report.series(results, run, key)
    out = {f"{run} ms/iter": series(run, "iter_ms") for run in runs}
    if "torch" in runs:
        out.update({f"{run} / torch": report.ratios(series(run, "iter_ms"), series("torch", "iter_ms"))
                    for run in runs if run != "torch"})
    return {k: v for k, v in out.items() if any(x is not None for x in v)}


def main(backends=None, steps=60, warmup=5, data=None, json_path=None, rounds=3, compare=None, progress=None):
    """What `lepton-nn bench --shakespeare` does; returns the exit status (1 if a run failed)."""
    from lepton_nn.data import shakespeare
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    old = report.read_json(compare, "shakespeare") if compare else None
    runs = selected_runs(backends)
    data_dir = shakespeare.find_file(data).parent  # found (or downloaded) once, here
    info = report.machine_info()
    results = report.round_robin(runs, rounds, lambda run, r: launch(run, data_dir, steps, warmup), progress)
    figs = figures(results)
    rows = []
    for run in runs:
        first = report.first_success(results, run)
        if first is None:
            continue
        rows.append([run, report.fmt_spread(figs.get(f"{run} ms/iter", []), ".1f"),
                     report.fmt_spread(figs.get(f"{run} / torch", []), ".2f") if run != "torch" else "",
                     f"{first['first_loss']:.4f}", f"{first['peak_rss_mb']:.0f}", first["framework"]])
    cells = "median (min–max) over rounds" if rounds > 1 else "one round: no spread"
    lines = ["lepton-nn bench --shakespeare: nanoGPT's baby GPT (4 layers, 4 heads, 128-dim, context 64, batch 12; "
             "AdamW, warm-up + cosine, clipping), float32",
             f"every run alone in a fresh process, {rounds} round(s) round-robin; per run {warmup} warm-up "
             f"iterations excluded, {steps} timed (median of blocks)", *report.machine_lines(info), "",
             f"training iterations ({cells})"]
    lines += report.table(("run", "ms/iter", "/ torch", "1st loss", "peak RSS MB", "framework"), rows)
    lines += ["", "/ torch: this run's ms/iter ÷ PyTorch's in the same round, median over rounds; below 1 is "
                  "faster.  1st loss: the loss of the first iteration (each framework its own initialisation)."]
    lines += [f"FAILED {x['run']} (round {r + 1}): {x['error']}" for r, rnd in enumerate(results) for x in rnd
              if "error" in x]
    data_out = {"kind": "shakespeare", "machine": info, "settings": {"steps": steps, "warmup": warmup,
                "rounds": rounds}, "rounds": results, "figures": figs}
    text = "\n".join(lines)
    if old:
        text += "\n\n" + "\n".join(report.compare_lines(old, data_out, compare))
    print(text)
    if json_path:
        report.write_json(json_path, data_out)
    return 1 if any("error" in x for rnd in results for x in rnd) else 0
