"""pytest-benchmark over lepton_nn.bench.kernel_cases.CASES: `pytest benchmarks/ --benchmark-only`.

Each case is one benchmark group, so the numpy, numba and c backends sit side by side in the
report. PyTorch is not timed here: this process has imported lepton_nn, whose thread settings
would handicap it; `lepton-nn bench --kernels` times it in a process of its own.
`pytest benchmarks/ --benchmark-disable -q` runs every one once, untimed: CI's smoke check.
Speed is never asserted here or anywhere in the tests.
"""
from lepton_nn.bench import kernels as kernel_bench
from lepton_nn.bench import report


def pytest_report_header(config):
    info = report.machine_info()
    return [f"lepton_nn benchmarks: backends {', '.join(kernel_bench.selected_backends(with_torch=False))}; "
            f"{info['threads']} threads", *report.machine_lines(info)]
