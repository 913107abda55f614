"""Kernel benchmark: every case of kernel_cases.py on every lepton_nn backend and in PyTorch.

    lepton-nn bench --kernels [--rounds 3] [--json NEW.json] [--compare OLD.json]
    pytest benchmarks/ --benchmark-only        the same cases under pytest-benchmark (lepton_nn only)

lepton_nn's kernels are timed in this process, with lepton_nn's settings. PyTorch is timed in a
worker process of its own (kernel_cases.py run as a script): it never imports lepton_nn and
starts with the user's environment as it was before `import lepton_nn` changed it. The rounds
interleave at the finest grain: in each round, each case is timed on every backend and then
in PyTorch, so a drift of the shared machine hits both sides alike; each cell shows the median
over rounds and the min–max, and each ratio is the median of per-round ratios.

Before anything is timed, each function is called once (the warm-up: numba compiles or loads
its cache) and its outputs are checked against the NumPy reference's, PyTorch's included, so a
wrong kernel is never timed.
"""
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lepton_nn import kernels, runtime
from lepton_nn.bench import report
from lepton_nn.bench.kernel_cases import CASES, CASES_BY_NAME, time_call

PEER_WORKER = Path(__file__).with_name("kernel_cases.py")


def case_backends(case, backends):
    """The lepton_nn backends `case` runs on: every given one but the peer."""
    return [b for b in backends if b != "torch"]


def falls_back(case, backend):
    """The kernels of `case` that `backend` lacks (the reference runs them): its time would be
    the reference's again, so such a row is labelled, not timed."""
    if backend in ("numpy", "torch"):
        return ()
    module = kernels.get(backend).module
    if case.algorithm and case.algorithm not in getattr(module, "CONV_ALGORITHMS", ()):
        return (f"conv2d by {case.algorithm}",)
    return tuple(k for k in case.kernels if k in kernels.get(backend).fallback)


# --------------------------------------------------------------------------- checking
class WrongResult(ValueError):
    """A backend's outputs differ from the NumPy reference's: its time would mean nothing."""


_reference = {}  # case name → the NumPy reference's outputs, computed once per process


def reference_outputs(case):
    if case.name not in _reference:
        _reference[case.name] = tuple(np.array(a) for a in case.make("numpy")())
    return _reference[case.name]


def check(case, backend, outputs):
    """Raise WrongResult unless `outputs` equal the reference's to float32 accuracy (allclose)."""
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


def prepare(case, backend):
    """The fwd+bwd function of `case` on a lepton_nn backend, called once (warm-up: numba
    compiles or loads its cache here) and checked against the reference."""
    fn = case.make(backend)
    outputs = fn()
    if backend == "numpy":
        _reference.setdefault(case.name, tuple(np.array(a) for a in outputs))
    else:
        check(case, backend, outputs)
    return fn


# --------------------------------------------------------------------------- PyTorch's process
class TorchWorker:
    """kernel_cases.py --peer in a process of its own, with the user's environment without
    lepton_nn's settings; one request line per case, one JSON answer each."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker never blocks
        self.proc = subprocess.Popen([sys.executable, str(PEER_WORKER), "--peer"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=runtime.environ_without_our_settings())
        self.hello = self._answer()

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            lines = [x for x in self.stderr.read().strip().splitlines() if x.strip()]
            raise RuntimeError(f"PyTorch's worker ended: {lines[-1] if lines else 'no message'}")
        return json.loads(line)

    def time(self, case, repeat, budget, warmup, save=None):
        request = {"case": case.name, "repeat": repeat, "budget": budget, "warmup": warmup,
                   "save": str(save) if save else None}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


# --------------------------------------------------------------------------- running
def selected_backends(requested=None, with_torch=True):
    """lepton_nn's available backends (restricted to `requested`, a list), then "torch" if installed."""
    names = kernels.available_backends()
    if with_torch and importlib.util.find_spec("torch") is not None:  # found, not imported: its worker imports it
        names.append("torch")
    if requested:
        unknown = [b for b in requested if b not in names]
        if unknown:
            hint = ' (pip install -e ".[torch]")' if "torch" in unknown else ""
            raise ValueError(f"backend(s) {', '.join(unknown)} not available here{hint}; "
                             f"available: {', '.join(names)}")
        names = [b for b in names if b in requested]
    return names


def run(backends, repeat, rounds=1, cases=CASES, budget=1.0, progress=None):
    """Time every case on every backend, `rounds` times; returns ({case name: {backend: {"ms":
    [per round], "runs": [...], "error": text}}}, PyTorch's hello or None). A backend whose outputs
    are wrong gets an error and no time."""
    warmup = 0 if repeat <= 1 else 2  # besides the checked call, two more let the thread pools settle
    worker = TorchWorker() if "torch" in backends else None
    results = {case.name: {} for case in cases}
    fns = {}
    try:
        with tempfile.TemporaryDirectory(prefix="lepton_nn_kernels_") as tmp:
            for r in range(rounds):
                for case in cases:
                    rows = results[case.name]
                    for backend in case_backends(case, backends) + (["torch"] if worker else []):
                        row = rows.setdefault(backend, {"ms": [], "runs": [], "error": "",
                                                        "fallback": list(falls_back(case, backend))})
                        if row["error"] or row["fallback"]:
                            continue
                        if progress:
                            progress(f"round {r + 1}/{rounds}: {case.name} on {backend}")
                        try:
                            if backend == "torch":
                                save = Path(tmp) / f"{case.name}.npz" if r == 0 else None
                                answer = worker.time(case, repeat, budget, warmup, save)
                                if "error" in answer:
                                    raise WrongResult(f"{case.name} on torch: {answer['error']}")
                                if save:
                                    with np.load(save) as saved:
                                        check(case, "torch", [saved[f"arr_{i}"] for i in range(len(saved.files))])
                                ms, runs = answer["ms"], answer["runs"]
                            else:
                                if r == 0:
                                    fns[case.name, backend] = prepare(case, backend)
                                ms, runs = time_call(fns[case.name, backend], repeat, budget, warmup)
                        except WrongResult as err:
                            row["error"] = str(err)
                            continue
                        row["ms"].append(ms)
                        row["runs"].append(runs)
    finally:
        if worker:
            worker.close()
    return results, worker and worker.hello


def figures(results):
    """{"<case> <backend> ms" or "... / torch": [value per round]}: the table's figures, and what
    --compare compares. Ratios are per round."""
    out = {}
    for case, rows in results.items():
        torch = rows.get("torch", {}).get("ms")
        for backend, row in rows.items():
            if row["ms"]:
                out[f"{case} {backend} ms"] = row["ms"]
                if torch and backend != "torch":
                    out[f"{case} {backend} / torch"] = report.ratios(row["ms"], torch)
    return out


def _flop_text(flops):
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops} FLOP"


def format_table(results, gemm_gflops, info, settings, torch_hello, cases=CASES):
    rounds = settings["rounds"]
    figs = figures(results)
    lines = [f"lepton-nn bench --kernels: median ms of up to {settings['repeat']} runs after warm-up calls, "
             f"{rounds} round(s) interleaved case by case; every output checked against the NumPy reference first",
             *report.machine_lines(info)]
    if torch_hello:
        env = torch_hello["environment"]
        seen = env["environ_at_start"] if env["environ_at_start"] is not None else env["os_environ"]
        lines.append(f"torch {torch_hello['torch']} ({torch_hello['threads']} threads, its default) in a worker "
                     "process of its own, started with "
                     + ", ".join(f"{k}={seen.get(k, 'unset')}" for k in runtime.THREAD_DEFAULTS)
                     + f"; lepton_nn imported: {'yes' if env['lepton_nn_imported'] else 'no'}")
    else:
        lines.append("torch: not installed (pip install -e \".[torch]\"): no torch rows")
    lines += [f"float32 GEMM 1024³ (np.matmul): {gemm_gflops:.1f} GFLOP/s = 100 % in the % GEMM column", "", "cases:"]
    for c in cases:
        lines.append(f"  {c.name:10s} {c.title}; {c.shape}; {_flop_text(c.flops)} = {c.flops_formula}")
    rows, errors, fallbacks = [], [], []
    for case in cases:
        base = results[case.name].get("numpy", {}).get("ms")
        for i, (backend, row) in enumerate(results[case.name].items()):
            name = case.name if i == 0 else ""
            if row["error"]:
                rows.append([name, backend, "WRONG", "", "", "", "not timed"])
                errors.append(row["error"])
                continue
            if row["fallback"]:
                rows.append([name, backend, "(numpy reference)", "", "", "", "not native"])
                fallbacks.append(f"{case.name} on {backend}: {', '.join(row['fallback'])}")
                continue
            ms = report.median(row["ms"])
            gflops = case.flops / (ms * 1e-3) / 1e9
            speedup = report.median(report.ratios(base, row["ms"])) if base else None
            rows.append([name, backend, report.fmt_spread(row["ms"], ".3f"), f"{gflops:.2f}",
                         f"{100 * gflops / gemm_gflops:.1f}", report.fmt(speedup, ".2f"),
                         report.fmt_spread(figs.get(f"{case.name} {backend} / torch", []), ".2f")])
    cells = "median (min–max) over rounds" if rounds > 1 else "one round: no spread"
    lines += ["", f"ms and / torch: {cells}"]
    lines += report.table(("case", "backend", "ms", "GFLOP/s", "% GEMM", "× numpy", "/ torch"), rows, left=2)
    lines += ["",
              "× numpy: the NumPy reference's time / this time.  / torch: this time / PyTorch's in the same round "
              "(< 1 is faster)."]
    lines += [f"not native: {text} (the backend has no such kernel: the reference would run it; not timed twice)"
              for text in fallbacks]
    lines += [f"WRONG: {err}" for err in errors]
    return "\n".join(lines), figs


def selected_cases(requested=None):
    """The cases named in `requested` (all when None), in the list's order."""
    if not requested:
        return list(CASES)
    unknown = [name for name in requested if name not in CASES_BY_NAME]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; cases are: {', '.join(CASES_BY_NAME)}")
    return [c for c in CASES if c.name in requested]


def main(backends=None, repeat=50, json_path=None, budget=1.0, progress=None, rounds=3, compare=None, cases=None):
    """What `lepton-nn bench --kernels` does; returns the exit status (1 if a kernel was wrong)."""
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    old = report.read_json(compare, "kernels") if compare else None  # before the long work, not after
    names = selected_backends(backends)
    cases = selected_cases(cases)
    info = report.machine_info()
    gemm = report.gemm_rate(repeat)
    results, torch_hello = run(names, repeat, rounds, cases, budget=budget, progress=progress)
    settings = {"repeat": repeat, "rounds": rounds, "budget_s": budget}
    text, figs = format_table(results, gemm, info, settings, torch_hello, cases)
    data = {"kind": "kernels", "machine": info, "settings": settings, "gemm_gflops": gemm, "torch": torch_hello,
            "cases": [{"name": c.name, "title": c.title, "shape": c.shape, "flops": c.flops,
                       "flops_formula": c.flops_formula} for c in cases],
            "results": results, "figures": figs}
    if old:
        text += "\n\n" + "\n".join(report.compare_lines(old, data, compare))
    print(text)
    if json_path:
        report.write_json(json_path, data)
    return 1 if any(row["error"] for rows in results.values() for row in rows.values()) else 0
