"""What both benchmark commands share: tables, medians with their spread over rounds, the
machine's description and its GEMM rate, and the comparison with an earlier run's JSON
(`--compare OLD.json`).

A figure measured over N rounds is kept as its list of per-round values; it is shown as the
median and, for N > 1, the min–max range. Comparing two runs flags a change only when the two
ranges do not overlap: a change smaller than the runs' own spread is not told apart from noise.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess

import numpy as np

from lepton_nn.bench.kernel_cases import DTYPE, time_call
from lepton_nn.fileio import atomic_write


def spread(values):
    """{"median", "min", "max", "n"} of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(value, spec, missing=""):
    return missing if value is None else format(value, spec)


def fmt_spread(values, spec):
    """'5.11 (4.90–5.30)': the median, then the range when there is more than one value."""
    s = spread(values)
    if s is None:
        return ""
    if s["n"] == 1 or format(s["min"], spec) == format(s["max"], spec):
        return format(s["median"], spec)
    return f"{format(s['median'], spec)} ({format(s['min'], spec)}–{format(s['max'], spec)})"


def median(values):
    s = spread(values)
    return None if s is None else s["median"]


def table(header, rows, left=1, last_left=False):
    """Columns as wide as their widest cell; the first `left` columns (and the last, if
    last_left) flush left, the rest right."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in cells) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) if i < left or (last_left and i == len(widths) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return [line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]]


def round_robin(runs, rounds, launch, progress=None):
    """[[launch(run, r) for each run] for each round r]: every run once per round, in turn, so a
    change of the machine's load hits all of them alike (the honest method, docs/benchmarks.md)."""
    results = []
    for r in range(rounds):
        results.append([])
        for run in runs:
            if progress:
                progress(f"round {r + 1}/{rounds}: {run}")
            results[r].append(launch(run, r))
    return results


def series(results, run, key):
    """`key` of `run`'s result in each round (None where it failed): one figure across rounds."""
    return [next((x.get(key) for x in rnd if x["run"] == run and "error" not in x), None) for rnd in results]


def first_success(results, run):
    """The first round's result of `run` that did not fail, or None."""
    return next((x for rnd in results for x in rnd if x["run"] == run and "error" not in x), None)


def ratios(values, baseline):
    """Per-round ratios values[r] / baseline[r], where both were measured in round r."""
    return [v / b if v is not None and b else None for v, b in zip(values, baseline)]


# --------------------------------------------------------------------------- the machine
def git_commit():
    """The commit the package was run from, with '+' if the tree has changes; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def thread_count():
    """Threads lepton_nn's kernels use: numba's count (the C backend's OpenMP and numpy's BLAS
    default to the same, the number of CPUs, unless the environment says otherwise)."""
    try:
        import numba
        return numba.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


# the variables that change which kernels lepton_nn's runs use (lepton_nn/kernels/__init__.py)
KERNEL_CHOICE_VARIABLES = ("LEPTON_NN_REFERENCE_KERNELS", "LEPTON_NN_USE_ALL_KERNELS")


def machine_info():
    """What the figures depend on: CPU, thread counts, which BLAS numpy really uses, the commit."""
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "threads": thread_count(), "commit": git_commit(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY",
                 "OMP_NUM_THREADS", *KERNEL_CHOICE_VARIABLES):
        info[name] = os.environ.get(name)
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
    return info


def gemm_rate(repeat=10, size=1024):
    """This machine's float32 GEMM rate, GFLOP/s: the median time of np.matmul on size³. Both
    benchmarks scale their "% GEMM" columns by it."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), DTYPE), rng.standard_normal((size, size), DTYPE)
    c = np.empty((size, size), DTYPE)
    fn = lambda: np.matmul(a, b, out=c)  # noqa: E731
    fn()
    ms, _ = time_call(fn, min(max(repeat, 5), 20), budget=1.0)  # ≥ 5 runs: it scales every % GEMM
    return 2 * size ** 3 / (ms * 1e-3) / 1e9


def machine_lines(info):
    """The header lines that say where and with what the figures were measured."""
    unset = lambda name: info.get(name) or "unset"  # noqa: E731
    lines = [f"machine: {info['cpu'] or info['machine']}, {info['cpus']} CPUs; python {info['python']}; "
             f"lepton_nn at {info.get('commit') or 'an unknown commit'}, {info.get('date', '')}",
             f"numpy {info['numpy']} BLAS: {info['blas']}; numba {info['numba'] or 'not installed'}",
             f"this process (lepton_nn's settings, lepton_nn/runtime.py): OMP_WAIT_POLICY={unset('OMP_WAIT_POLICY')}, "
             f"OPENBLAS_THREAD_TIMEOUT={unset('OPENBLAS_THREAD_TIMEOUT')}; OPENBLAS_CORETYPE={unset('OPENBLAS_CORETYPE')}, "
             f"OPENBLAS_L2_SIZE={unset('OPENBLAS_L2_SIZE')}"]
    chosen = [f"{name}={info[name]}" for name in KERNEL_CHOICE_VARIABLES if info.get(name)]
    if chosen:
        lines.append(f"kernels chosen from the environment: {', '.join(chosen)}")
    return lines


# --------------------------------------------------------------------------- comparing two runs
def write_json(path, data):
    """Write atomically (lepton_nn.fileio): a benchmark file is either the whole run or absent."""
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=1).encode())


def read_json(path, kind):
    """An earlier run's JSON of this kind ("train" or "kernels"), with a clear error otherwise."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"--compare {path}: not a JSON file ({err})") from err
    if not isinstance(data, dict) or data.get("kind") != kind or "figures" not in data:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"--compare {path}: expected the JSON of `lepton-nn bench --{kind} --json`, "
                         f"found kind {found!r} (a file from another command, or from before rounds were kept)")
    return data


def overlap(a, b):
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def compare_lines(old, new, old_path):
    """Each figure in both runs: before, now, the change of the medians, and whether the change
    is beyond the spread (the two min–max ranges do not overlap). old/new: the JSON dicts."""
    lines = [f"compared with {old_path} (lepton_nn at {old['machine'].get('commit') or '?'}, "
             f"{old['machine'].get('date', '?')}, {old['settings'].get('rounds', 1)} round(s)):"]
    if old["machine"].get("cpu") != new["machine"].get("cpu"):
        lines.append(f"  NOTE: another CPU ({old['machine'].get('cpu')} then, {new['machine'].get('cpu')} now): "
                     "compare the ratios, not the times")
    rows, beyond = [], 0
    for key, values in new["figures"].items():
        if key not in old["figures"]:
            continue
        before, now = spread(old["figures"][key]), spread(values)
        if before is None or now is None:
            continue
        change = (now["median"] / before["median"] - 1) * 100 if before["median"] else float("nan")
        flag = "" if overlap(before, now) else "beyond the spread"
        beyond += bool(flag)
        rows.append([key, fmt_spread(old["figures"][key], ".4g"), fmt_spread(values, ".4g"), f"{change:+.1f} %",
                     flag])
    if not rows:
        return lines + ["  no figure in common"]
    lines += ["  " + line for line in table(("figure", "before", "now", "change", ""), rows)]
    lines.append(f"  {beyond} of {len(rows)} figure(s) changed beyond the spread of the two runs "
                 "(their min–max ranges do not overlap); the rest are within it: not told apart from noise")
    return lines
