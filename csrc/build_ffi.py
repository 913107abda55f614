"""cffi builder of lepton_nn._lepton_c, the C kernels (API mode: compiled by the C compiler).

setup.py runs it through `cffi_modules=["csrc/build_ffi.py:ffibuilder"]`; `pip install -e .`
then compiles csrc/lepton_kernels.c into lepton_nn/_lepton_c.*.so.

The declarations handed to cffi are the block between the cffi markers in lepton_kernels.h,
so the header stays the single place where the C interface is written down.

Compiler flags:
  -O3                  always;
  -march=native        unless LEPTON_NN_PORTABLE=1 (for a build that must run on other CPUs);
  -ffp-contract=off    no fused multiply-add unless the code asks for one (MUL_ADD: the conv loops
                       do), so adam_steps stays bit-identical to NumPy;
  -fno-math-errno      sqrt/exp/log need not set errno, so loops calling them can vectorise
                       (it changes no result: errno is never read here);
  -fopenmp-simd        honour `#pragma omp simd` even without the OpenMP runtime (the fused
                       conv loop relies on it to vectorise the right loop);
  -fopenmp             only if a tiny OpenMP program compiles and links; otherwise the kernels
                       run single-threaded (their pragmas are then ignored);
  -DLEPTON_VECTOR_MATH -lmvec
                       only if a loop calling erf, exp and tanh links against glibc's vector
                       math library (libmvec, glibc >= 2.35 for erf and tanh): the loops of GELU
                       and softmax then call its SIMD versions of these C99 functions, several
                       elements per call (csrc/lepton_kernels.c); otherwise they call libm's
                       scalar ones, one element at a time.
Each optional flag is probed with the same compiler the build will use (honouring $CC).
"""
import os
import tempfile

import setuptools  # noqa: F401  (makes `distutils` below resolve to setuptools' copy)
from cffi import FFI
from distutils.ccompiler import new_compiler
from distutils.sysconfig import customize_compiler

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "lepton_kernels.h")
SOURCES = [os.path.join(HERE, "lepton_kernels.c")]
DEPENDS = [HEADER, os.path.join(HERE, "lepton_kernels_generic.inc")]

_OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int threads = 0;
    #pragma omp parallel reduction(+:threads)
    threads += 1;
    return threads == omp_get_max_threads() ? 0 : 1;
}
"""
_PLAIN_PROBE = "int main(void) { return 0; }\n"

# The declarations of csrc/lepton_kernels.c under LEPTON_VECTOR_MATH, in loops like its own.
_VECTOR_MATH_PROBE = """
#include <math.h>
#pragma omp declare simd notinbranch
float erff(float);
#pragma omp declare simd notinbranch
double erf(double);
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float tanhf(float);
#pragma omp declare simd notinbranch
double tanh(double);
float xf[256], yf[256];
double xd[256], yd[256];
int main(void) {
    #pragma omp simd
    for (int k = 0; k < 256; k++) yf[k] = erff(xf[k]) + expf(xf[k]) + tanhf(xf[k]);
    #pragma omp simd
    for (int k = 0; k < 256; k++) yd[k] = erf(xd[k]) + exp(xd[k]) + tanh(xd[k]);
    return (int)(yf[7] + yd[7]);
}
"""


def _cdef_from_header(path):
    """The text between the `cffi-cdef-begin` and `cffi-cdef-end` markers of the header."""
    with open(path) as f:
        text = f.read()
    begin, end = "/* cffi-cdef-begin */", "/* cffi-cdef-end */"
    return text[text.index(begin) + len(begin):text.index(end)]


def _compiles(program, compile_flags, link_flags=()):
    """Whether the build's C compiler compiles and links `program` with these flags."""
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(program)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=list(compile_flags))
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=list(link_flags))
        except Exception:  # any failure just means "not this flag": fall back silently
            return False
    return True


def compiler_flags():
    """(compile flags, link flags) that this machine's compiler accepts."""
    compile_flags, link_flags = ["-O3"], []
    optional = ["-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd"]
    if os.environ.get("LEPTON_NN_PORTABLE") != "1":
        optional.append("-march=native")
    for flag in optional:
        if _compiles(_PLAIN_PROBE, compile_flags + [flag]):
            compile_flags.append(flag)
    if _compiles(_OPENMP_PROBE, compile_flags + ["-fopenmp"], ["-fopenmp"]):
        compile_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if _compiles(_VECTOR_MATH_PROBE, compile_flags, link_flags + ["-lmvec", "-lm"]):
        compile_flags.append("-DLEPTON_VECTOR_MATH")
        link_flags += ["-lmvec", "-lm"]
    return compile_flags, link_flags


def _relative(path):
    # setuptools wants source paths relative to the directory setup.py runs in
    return os.path.relpath(path, os.getcwd())


def make_builder(path=_relative):
    """The cffi builder; `path` maps each source path (setuptools wants them relative)."""
    compile_flags, link_flags = compiler_flags()
    builder = FFI()
    builder.cdef(_cdef_from_header(HEADER))
    builder.set_source(
        "lepton_nn._lepton_c",
        '#include "lepton_kernels.h"',
        sources=[path(p) for p in SOURCES],
        depends=[path(p) for p in DEPENDS],
        include_dirs=[path(HERE)],
        extra_compile_args=compile_flags,
        extra_link_args=link_flags,
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":  # a quick standalone build into build/cffi, e.g. to try compiler flags
    print("flags:", compiler_flags())
    # cffi compiles inside tmpdir, so the sources are given as absolute paths here
    make_builder(path=os.path.abspath).compile(tmpdir=os.path.join(HERE, "..", "build", "cffi"), verbose=True)
