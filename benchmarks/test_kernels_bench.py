"""One benchmark per (case, lepton_nn backend); `benchmark.group` is the case, so backends line up.

The function is built and checked against the NumPy reference by `prepare` (which also warms
it up, compiling numba) before pytest-benchmark times it: a wrong kernel is never timed.
"""
import pytest

from lepton_nn.bench import kernel_cases
from lepton_nn.bench import kernels as kernel_bench

BACKENDS = kernel_bench.selected_backends(with_torch=False)


def _param(case, backend):
    """A backend lacking the case's kernel or algorithm is skipped, as `bench --kernels` labels it
    "not native" rather than timing the reference twice."""
    lacking = kernel_bench.falls_back(case, backend)
    marks = [pytest.mark.skip(reason=f"not native on {backend}: {', '.join(lacking)}")] if lacking else []
    return pytest.param(case, backend, id=f"{case.name}-{backend}", marks=marks)


PARAMS = [_param(case, backend) for case in kernel_cases.CASES for backend in kernel_bench.case_backends(case, BACKENDS)]


@pytest.mark.parametrize("case, backend", PARAMS)
def test_kernel(benchmark, case, backend):
    benchmark.group = f"{case.name}: {case.title}; {case.shape}"
    benchmark.extra_info.update(flops=case.flops)
    fn = kernel_bench.prepare(case, backend)  # raises WrongResult if it disagrees with the reference
    benchmark(fn)
