"""Smoke tests of the training benchmark: it runs on a tiny MNIST-shaped data set and prints its
tables. No timing is ever asserted."""
import json

import numpy as np
import pytest

from lepton_nn import kernels
from lepton_nn.bench import train as train_bench
from lepton_nn.bench import train_worker
from lepton_nn.cli import main
from lepton_nn.data.idx import write_idx

STEPS, WARMUP = 2, 1


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """896 training and 100 test images of random pixels: enough for 1 + 10 (the CLI's warm-up) + STEPS steps of 64."""
    path = tmp_path_factory.mktemp("tiny_mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 896), ("t10k", 100)):
        write_idx(path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def tiny_npz(tiny_mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "mnist.npz"
    train_bench.write_mnist(str(tiny_mnist), path)
    return path


def test_flop_count_follows_the_layer_shapes():
    flops = train_bench.flops_per_image()
    conv = 2 * 26 * 26 * 32 * 9
    assert flops["forward"] == conv + 2 * 5408 * 128 + 2 * 128 * 10
    assert flops["train"] == 3 * flops["forward"] - conv


def test_block_times_take_the_median_block_after_the_warm_up():
    # warm-up batch ends at t = 0 and 1; then 20 steps: 1 s each, but 5 s each in one block of 2
    stamps = [0.0, 1.0] + list(np.cumsum([1.0] * 10 + [5.0, 5.0] + [1.0] * 8) + 1.0)
    assert train_worker.block_times(stamps, warmup=2, steps=20) == 1.0


def test_the_worker_reports_every_figure(tiny_npz):
    result = train_worker.measure("numpy", tiny_npz, steps=STEPS, warmup=WARMUP)
    for key in ("step_ms", "train_images_per_s", "eval_images_per_s", "peak_rss_mb", "first_step_s"):
        assert result[key] > 0, key


@pytest.mark.parametrize("peer", ["torch", "torch-cl", "tf-keras", "jax"])
def test_each_installed_peer_runs_in_a_process_lepton_nn_never_touched(peer, tiny_npz):
    pytest.importorskip(train_worker.PEER_MODULES[peer])
    result = train_bench.launch(peer, tiny_npz, steps=STEPS, warmup=WARMUP)
    assert "error" not in result, result.get("error")
    assert result["eval_images_per_s"] > 0
    assert result["environment"]["lepton_nn_imported"] is False


def test_the_table_has_a_row_per_backend_and_the_json_every_round(tiny_mnist, tmp_path, capsys):
    out_json = tmp_path / "train.json"
    backends = kernels.available_backends()
    status = train_bench.main(backends, steps=STEPS, warmup=WARMUP, data=str(tiny_mnist), json_path=str(out_json),
                              startup=False, rounds=2)
    assert status == 0
    out = capsys.readouterr().out
    training = out.split("\ntraining (")[1].split("\n\n")[0].splitlines()[3:]
    assert [line.split()[0] for line in training][:len(backends)] == backends
    figures = json.loads(out_json.read_text())
    assert figures["kind"] == "train" and len(figures["rounds"]) == 2
    assert [r["run"] for r in figures["rounds"][1]] == backends
    assert len(figures["figures"][f"{backends[0]} ms/step"]) == 2


def test_compare_flags_only_changes_beyond_the_spread(tiny_mnist, tmp_path, capsys):
    out_json = tmp_path / "train.json"
    assert train_bench.main(["numpy"], steps=STEPS, warmup=WARMUP, data=str(tiny_mnist), json_path=str(out_json),
                            startup=False, rounds=2) == 0
    old = json.loads(out_json.read_text())
    # The old run: a step of a microsecond (no real run is that fast, however loaded the machine),
    # and an evaluation range that holds any real figure.
    old["figures"] = {"numpy ms/step": [0.001, 0.002], "numpy eval images/s": [1.0, 1e12]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["bench", "--train", "--backend", "numpy", "--steps", str(STEPS), "--rounds", "2",
                 "--data", str(tiny_mnist), "--compare", str(tmp_path / "old.json")]) == 0
    lines = capsys.readouterr().out.split("compared with")[1].splitlines()
    step = next(line for line in lines if line.strip().startswith("numpy ms/step"))
    evaluation = next(line for line in lines if line.strip().startswith("numpy eval images/s"))
    assert "beyond the spread" in step and "beyond the spread" not in evaluation


def test_compare_refuses_a_file_of_another_kind_before_running(tmp_path):
    wrong = tmp_path / "kernels.json"
    wrong.write_text(json.dumps({"kind": "kernels", "figures": {}}))
    with pytest.raises(ValueError, match="expected the JSON of `lepton-nn bench --train --json`"):
        train_bench.main(["numpy"], data=str(tmp_path / "no-data-here"), compare=str(wrong))


def test_bench_train_profile_prints_ops_and_the_overhead(tiny_mnist, capsys):
    assert main(["bench", "--train", "--profile", "--backend", "numpy", "--steps", str(STEPS),
                 "--data", str(tiny_mnist)]) == 0
    out = capsys.readouterr().out
    assert "(python overhead)" in out and "adam_step" in out  # the kernel column
    assert "target ≤ 15 %" in out
