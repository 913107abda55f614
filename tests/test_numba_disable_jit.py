"""NUMBA_DISABLE_JIT=1 turns the numba kernels back into the Python a learner reads and steps
through in a debugger (README). The fast kernels lean on numba-only tools (stack_array, an
alloca intrinsic; prange); without the JIT each falls back to plain NumPy, and the kernels must
still give the reference's results. Run in a fresh process, since numba reads the variable at
import."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

PROGRAM = """
import numpy as np
from numba import config
assert config.DISABLE_JIT, "the variable did not reach numba"
from lepton_nn.kernels import numba_backend as nb, reference as ref

rng = np.random.default_rng(0)
x, w, b = rng.standard_normal((2, 1, 9, 8)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
y, argmax = nb.conv2d_relu_max_pool2d_forward(x, w, b, (1, 1), (1, 1), (2, 2), (2, 2))
want, want_argmax = ref.conv2d_relu_max_pool2d_forward(x, w, b, (1, 1), (1, 1), (2, 2), (2, 2))
np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
np.testing.assert_array_equal(argmax, want_argmax)
g = rng.standard_normal(y.shape)
for got, expected in zip(nb.conv2d_relu_max_pool2d_backward(g, y, argmax, x, w, (1, 1), (1, 1)),
                         ref.conv2d_relu_max_pool2d_backward(g, want, want_argmax, x, w, (1, 1), (1, 1))):
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
for algorithm in nb.GEMM_ALGORITHMS:
    a, c = rng.standard_normal((11, 7)), rng.standard_normal((9, 7))
    np.testing.assert_allclose(nb.gemm(a, c, trans_b=True, algorithm=algorithm), a @ c.T, rtol=1e-12, atol=1e-12)


def check_conv(algorithm, x, w, b, stride, padding):  # numba's conv2d by algorithm = the reference
    y = nb.conv2d_forward(x, w, b, stride, padding, algorithm=algorithm)
    np.testing.assert_allclose(y, ref.conv2d_forward(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    for got, expected in zip(nb.conv2d_backward(g, x, w, stride, padding, algorithm=algorithm),
                             ref.conv2d_backward(g, x, w, stride, padding)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


x, w, b = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((9, 2, 3, 2)), rng.standard_normal(9)
for stride, padding in (((1, 1), (1, 1)), ((2, 1), (0, 1))):  # 9 output channels: a partial MR tile
    check_conv("gemm", x, w, b, stride, padding)
x, w, b = rng.standard_normal((2, 3, 5, 7)), rng.standard_normal((9, 3, 3, 3)), rng.standard_normal(9)
for padding in ((1, 1), (0, 2)):  # odd planes: the last row and column of 2×2 tiles half outside
    check_conv("winograd", x, w, b, (1, 1), padding)
w, b = rng.standard_normal((9, 2, 3, 2)), rng.standard_normal(9)  # 9 output channels: a partial NR block
for width in (11, 4):  # output rows of 12 pixels (the last MR tile moved back) and of 5 (less than MR)
    x = rng.standard_normal((2, 2, 7, width))
    for stride, padding in (((1, 1), (1, 1)), ((2, 1), (0, 1))):  # grad_x by the direct kernel, then by gemm
        check_conv("direct", x, w, b, stride, padding)
params, grads = [rng.standard_normal(5), rng.standard_normal((2, 3))], [rng.standard_normal(5), rng.standard_normal((2, 3))]
mine = [p.copy() for p in params], [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
theirs = [p.copy() for p in params], [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
nb.adam_steps(mine[0], grads, mine[1], mine[2], 1e-3, 0.9, 0.999, 1e-8, 1)
ref.adam_steps(theirs[0], grads, theirs[1], theirs[2], 1e-3, 0.9, 0.999, 1e-8, 1)
for got, expected in zip(mine[0], theirs[0]):
    np.testing.assert_array_equal(got, expected)
print("same as the reference")
"""


def test_the_numba_kernels_run_as_plain_python():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "same as the reference"
