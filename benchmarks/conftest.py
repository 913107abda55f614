"""pytest-benchmark over lepton_nn.bench.kernels.CASES: `pytest benchmarks/ --benchmark-only`.

Each case is one benchmark group, so numpy, numba, c and torch sit side by side in the report.
`pytest benchmarks/ --benchmark-disable -q` runs every one once, untimed: CI's smoke check.
Speed is never asserted here or anywhere in the tests.
"""
from lepton_nn.bench import kernels as kernel_bench


def pytest_report_header(config):
    info = kernel_bench.machine_info()
    return [f"lepton_nn benchmarks: backends {', '.join(kernel_bench.selected_backends())}; "
            f"{info['threads']} threads (torch {info['torch'] or 'not installed'})",
            f"numpy {info['numpy']} BLAS: {info['blas']}; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE'] or 'unset'}"]
