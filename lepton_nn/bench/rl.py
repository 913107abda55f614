"""RL benchmark: the gradient updates of REINFORCE and DQN (lepton_nn/rl.py) by every lepton_nn
backend and by PyTorch, each run alone in a fresh process (rl_worker.py), round-robin over rounds,
as the training benchmark (lepton_nn/bench/train.py) runs its runs.

    lepton-nn bench --rl [--steps 300] [--rounds 3] [--threads N] [--json NEW.json] [--compare OLD.json]

The networks are tiny (4 → 128 → 2), so the time is the framework's overhead per op, not
arithmetic. What each figure times: rl_worker.py's docstring; this machine's table: docs/rl.md.
"""
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from lepton_nn.bench import report
from lepton_nn.bench.gpt import selected_runs
from lepton_nn.bench.train import error_line, worker_env

WORKER = Path(__file__).with_name("rl_worker.py")
FIGURES = (("reinforce", "REINFORCE updates/s"), ("dqn", "DQN updates/s"), ("act", "act/s"))


def worker_config():
    """rl.py's hyperparameters, which the PyTorch twin cannot import, as JSON for the workers."""
    from lepton_nn import rl
    return json.dumps({"reinforce": asdict(rl.ReinforceConfig()), "dqn": asdict(rl.DQNConfig())})


def launch(run, updates, warmup, threads=None):
    cmd = [sys.executable, str(WORKER), "--run", run, "--config", worker_config(), "--updates", str(updates),
           "--warmup", str(warmup)] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.run(cmd, env=worker_env(run, threads), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"run": run, "error": error_line(proc.stderr, proc.returncode)}
    return json.loads(lines[-1])


def figures(results):
    runs = [x["run"] for x in results[0]]

    def series(run, key):
        return report.series(results, run, key)
    out = {}
    for name, _ in FIGURES:
        out.update({f"{run} {name} calls/s": series(run, f"{name}_per_s") for run in runs})
        if "torch" in runs:
            out.update({f"{run} {name} / torch": report.ratios(series(run, f"{name}_per_s"),
                                                                series("torch", f"{name}_per_s"))
                        for run in runs if run != "torch"})
    return {k: v for k, v in out.items() if any(x is not None for x in v)}


def main(backends=None, steps=300, warmup=20, threads=None, json_path=None, rounds=3, compare=None, progress=None):
    """What `lepton-nn bench --rl` does; returns the exit status (1 if a run failed)."""
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    old = report.read_json(compare, "rl") if compare else None
    runs = selected_runs(backends)
    info = report.machine_info()
    results = report.round_robin(runs, rounds, lambda run, r: launch(run, steps, warmup, threads), progress)
    figs = figures(results)
    rows = []
    for run in runs:
        first = report.first_success(results, run)
        if first is None:
            continue
        row = [run]
        for name, _ in FIGURES:
            row += [report.fmt_spread(figs.get(f"{run} {name} calls/s", []), ".0f"),
                    report.fmt_spread(figs.get(f"{run} {name} / torch", []), ".2f") if run != "torch" else ""]
        rows.append(row + [first["framework"]])
    cells = "median (min–max) over rounds" if rounds > 1 else "one round: no spread"
    header = ["run"] + [h for _, label in FIGURES for h in (label, "× torch")] + ["framework"]
    lines = ["lepton-nn bench --rl: REINFORCE and DQN updates on CartPole-shaped data (networks 4 → 128 → 2, "
             "Adam), float32, no environment",
             f"every run alone in a fresh process, {rounds} round(s) round-robin; per figure {warmup} warm-up calls "
             f"excluded, {steps} timed (median of blocks); threads: "
             f"{threads if threads else 'each framework its own default'}", *report.machine_lines(info), "",
             f"calls per second ({cells}); REINFORCE: an update on one episode; DQN: an update on one replayed "
             "batch; act: one state's forward and argmax (what each times: lepton_nn/bench/rl_worker.py)"]
    lines += report.table(header, rows, last_left=True)
    lines += ["", "× torch: this run's rate ÷ PyTorch's in the same round, median over rounds; above 1 is faster."]
    lines += [f"FAILED {x['run']} (round {r + 1}): {x['error']}" for r, rnd in enumerate(results) for x in rnd
              if "error" in x]
    data_out = {"kind": "rl", "machine": info, "settings": {"steps": steps, "warmup": warmup, "rounds": rounds,
                "threads": threads}, "rounds": results, "figures": figs}
    text = "\n".join(lines)
    if old:
        text += "\n\n" + "\n".join(report.compare_lines(old, data_out, compare))
    print(text)
    if json_path:
        report.write_json(json_path, data_out)
    return 1 if any("error" in x for rnd in results for x in rnd) else 0
