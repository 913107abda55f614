"""The process-wide settings of lepton_nn.runtime, each checked in a fresh interpreter."""
import os
import subprocess
import sys

import pytest

# Allocates two 20 MB arrays, writes them, frees both; 20 times. Prints the minor page faults
# of the last 19 rounds (the first one may fault: the memory is new to the process).
LOOP = """
import resource
{prelude}
import numpy as np
def rounds(n):
    for _ in range(n):
        a, b = np.ones(5 << 20, np.float32), np.ones(5 << 20, np.float32)
        del a, b
rounds(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(19)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(prelude):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", LOOP.format(prelude=prelude)], capture_output=True, text=True,
                         check=True, env=env)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    """Multi-MB arrays freed and allocated again each step (an op's outputs) reuse the same
    memory after `import lepton_nn`: no fresh pages, hence no page faults."""
    without = page_faults("")
    if without < 19:
        pytest.skip(f"this C library reuses the memory by itself ({without} faults in 19 rounds)")
    # fresh pages every round: ~190 faults with 2 MB pages, ~190,000 with 4 KB ones
    assert page_faults("import lepton_nn") < 19 <= without


def test_a_users_malloc_setting_wins(monkeypatch):
    from lepton_nn import runtime
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert runtime.keep_freed_memory_for_reuse() is False


def test_thread_settings_are_defaults_the_user_can_override():
    code = "import os, lepton_nn; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert default.stdout.split() == ["PASSIVE", "14"]
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "20"})
    assert mine.stdout.split() == ["ACTIVE", "20"]
