"""Smoke tests of the kernel benchmark: it builds, checks and runs every case. No timing is ever asserted."""
import dataclasses
import json

import pytest

from lepton_nn import kernels
from lepton_nn.bench import kernel_cases
from lepton_nn.bench import kernels as kernel_bench
from lepton_nn.cli import main


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_every_case_builds_for_every_available_backend(backend):
    for case in kernel_cases.CASES:
        assert callable(case.make(backend)), case.name


def test_a_wrong_kernel_is_not_timed():
    relu = kernel_cases.CASES_BY_NAME["relu"]

    def make(backend):  # right on the reference, twice too large on the "broken" backend
        run = relu.make("numpy")
        return run if backend == "numpy" else lambda: tuple(2 * a for a in run())

    broken = dataclasses.replace(relu, name="relu-broken", make=make)
    with pytest.raises(kernel_bench.WrongResult, match="differs from the reference"):
        kernel_bench.prepare(broken, "broken")


def test_bench_kernels_prints_a_row_per_case(capsys):
    assert main(["bench", "--kernels", "--repeat", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    table = out.split("\ncase ")[1].splitlines()[2:]
    first_cells = [line.split()[0] for line in table if line and not line.startswith(" ")]
    assert [c.name for c in kernel_cases.CASES] == [c for c in first_cells if c in kernel_cases.CASES_BY_NAME]


def test_bench_kernels_keeps_every_round_and_compares(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    args = ["bench", "--kernels", "--case", "relu,xent", "--repeat", "3", "--rounds", "2"]
    assert main(args + ["--json", str(out_json)]) == 0
    figures = json.loads(out_json.read_text())
    assert figures["kind"] == "kernels" and figures["settings"]["rounds"] == 2
    assert set(figures["results"]) == {"relu", "xent"}
    for rows in figures["results"].values():
        for row in rows.values():
            assert len(row["ms"]) == 2 and not row["error"]
    figures["figures"]["relu numpy ms"] = [1e6, 2e6]  # an "earlier run" a thousand times slower
    out_json.write_text(json.dumps(figures))
    capsys.readouterr()
    assert main(args + ["--compare", str(out_json)]) == 0
    compared = capsys.readouterr().out.split("compared with")[1]
    assert "beyond the spread" in next(line for line in compared.splitlines() if "relu numpy ms" in line)


def test_the_case_list_loads_without_the_engine():
    """kernel_cases.py is PyTorch's worker: run as a script it must not import lepton_nn."""
    import subprocess
    import sys
    code = ("import runpy, sys; module = runpy.run_path(sys.argv[1]); "
            "print(len(module['CASES']), any(m.startswith('lepton_nn') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, kernel_bench.PEER_WORKER], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(len(kernel_cases.CASES)), "False"]
