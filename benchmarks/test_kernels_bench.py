"""One benchmark per (case, backend); `benchmark.group` is the case, so backends line up.

The function is built and checked against the NumPy reference by `prepare` (which also warms
it up, compiling numba) before pytest-benchmark times it: a wrong kernel is never timed.
"""
import pytest

from lepton_nn.bench import kernels as kernel_bench

BACKENDS = kernel_bench.selected_backends()
PARAMS = [pytest.param(case, backend, id=f"{case.name}-{backend}")
          for case in kernel_bench.CASES
          for backend in kernel_bench.case_backends(case, BACKENDS) + (["torch"] if "torch" in BACKENDS else [])]


@pytest.mark.parametrize("case, backend", PARAMS)
def test_kernel(benchmark, case, backend):
    benchmark.group = f"{case.name}: {case.title}; {case.shape}"
    benchmark.extra_info.update(flops=case.flops, target_ratio_to_torch=case.target)
    fn = kernel_bench.prepare(case, backend)  # raises WrongResult if it disagrees with the reference
    benchmark(fn)
