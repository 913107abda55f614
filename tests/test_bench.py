"""Smoke tests of the kernel benchmarks: they build and run. No timing is ever asserted."""
import dataclasses
import json

import pytest

from lepton_nn import kernels
from lepton_nn.bench import kernels as kernel_bench
from lepton_nn.cli import main


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_every_case_builds_for_every_available_backend(backend):
    for case in kernel_bench.CASES:
        assert callable(case.make(backend)), case.name


def test_a_shared_case_runs_once_for_all_backends():
    dense = next(c for c in kernel_bench.CASES if c.name == "dense1")
    assert kernel_bench.case_backends(dense, ["numpy", "numba", "torch"]) == [kernel_bench.SHARED]


def test_a_wrong_kernel_is_not_timed():
    relu = next(c for c in kernel_bench.CASES if c.name == "relu")

    def make(backend):  # right on the reference, twice too large on the "broken" backend
        run = relu.make("numpy")
        return run if backend == "numpy" else lambda: tuple(2 * a for a in run())

    broken = dataclasses.replace(relu, name="relu-broken", make=make)
    with pytest.raises(kernel_bench.WrongResult, match="differs from the reference"):
        kernel_bench.prepare(broken, "broken")


def test_bench_kernels_prints_a_row_per_case(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    assert main(["bench", "--kernels", "--repeat", "1", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(l for l in lines if l.startswith("case "))):]
    first_cells = [line.split()[0] for line in table if line and not line.startswith(" ")]
    for case in kernel_bench.CASES:
        assert case.name in first_cells
    figures = json.loads(out_json.read_text())
    assert {row["case"] for row in figures["rows"]} == {c.name for c in kernel_bench.CASES}
