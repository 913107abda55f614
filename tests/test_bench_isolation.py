"""No setting of lepton_nn reaches a benchmark peer: each peer runs in a process that never
imported lepton_nn, started with the user's environment as it was before `import lepton_nn`.

Each check runs the benchmark's parent in a fresh interpreter whose environment we control,
because this test process has imported lepton_nn already."""
import json
import os
import subprocess
import sys

import pytest

from lepton_nn import runtime

OURS = tuple(runtime.THREAD_DEFAULTS)


def clean_env(**extra):
    """This environment without lepton_nn's variables or any malloc tuning, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in OURS and not k.startswith("MALLOC_")}
    return {**env, **extra}


def run_parent(code, env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.splitlines()[-1])


PROBES = """
import json
from lepton_nn.bench import train
print(json.dumps({run: train.launch(run, probe=True) for run in ("torch", "tf-keras", "jax", "c")}))
"""


def seen(result):
    env = result["environment"]
    assert env["environ_at_start"] is None or env["environ_at_start"] == env["os_environ"]
    return env["os_environ"]


def test_peers_start_without_lepton_nns_settings_and_ours_with_them():
    results = run_parent(PROBES, clean_env())
    for peer in ("torch", "tf-keras", "jax"):
        env = seen(results[peer])
        assert not any(k in env for k in OURS), (peer, env)
        assert not any(k.startswith("MALLOC_") for k in env), (peer, env)
        assert results[peer]["environment"]["lepton_nn_imported"] is False
    assert seen(results["c"]) == {**seen(results["c"]), **runtime.THREAD_DEFAULTS}


def test_a_users_own_settings_reach_the_peers_unchanged():
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "MALLOC_ARENA_MAX": "2"}
    results = run_parent(PROBES, clean_env(**mine))
    for peer in ("torch", "tf-keras", "jax"):
        env = seen(results[peer])
        assert {k: env.get(k) for k in mine} == mine
        assert "OPENBLAS_THREAD_TIMEOUT" not in env


def test_pyTorchs_kernel_worker_is_isolated_too():
    pytest.importorskip("torch")
    code = """
import json
from lepton_nn.bench import kernels
worker = kernels.TorchWorker()
worker.close()
print(json.dumps(worker.hello))
"""
    hello = run_parent(code, clean_env())
    assert hello["torch"] and hello["environment"]["lepton_nn_imported"] is False
    assert not any(k in hello["environment"]["os_environ"] for k in OURS)


def test_the_environment_without_our_settings_keeps_what_the_user_changed(monkeypatch):
    set_by_us = [name for name in OURS if name in runtime._set_by_us]
    if not set_by_us:
        pytest.skip("the user set every one of lepton_nn's variables before importing it")
    name = set_by_us[0]
    assert name not in runtime.environ_without_our_settings()
    monkeypatch.setenv(name, "the user's own value")
    assert runtime.environ_without_our_settings()[name] == "the user's own value"
