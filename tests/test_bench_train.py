"""Smoke tests of the training benchmark: it runs on a tiny MNIST-shaped data set and prints its
tables. No timing is ever asserted."""
import json

import numpy as np
import pytest

from lepton_nn import kernels
from lepton_nn.bench import train as train_bench
from lepton_nn.cli import main
from lepton_nn.data.idx import write_idx

STEPS, WARMUP = 2, 1


@pytest.fixture
def tiny_mnist(tmp_path):
    """896 training and 100 test images of random pixels: enough for 1 + 10 (the CLI's warm-up) + STEPS steps of 64."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 896), ("t10k", 100)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return tmp_path


def test_flop_count_follows_the_layer_shapes():
    flops = train_bench.flops_per_image()
    conv = 2 * 26 * 26 * 32 * 9
    assert flops["forward"] == conv + 2 * 5408 * 128 + 2 * 128 * 10
    assert flops["train"] == 3 * flops["forward"] - conv


def test_the_worker_reports_every_figure(tiny_mnist):
    result = train_bench.worker("numpy", data=str(tiny_mnist), steps=STEPS, warmup=WARMUP, threads=1)
    for key in ("step_ms", "epoch_s", "train_images_per_s", "eval_images_per_s", "peak_rss_mb", "first_step_s"):
        assert result[key] > 0, key
    assert result["steps_per_epoch"] == 14  # 896 / 64


def test_the_torch_worker_runs_both_layouts(tiny_mnist):
    pytest.importorskip("torch")
    for variant in train_bench.TORCH_VARIANTS:
        result = train_bench.worker(variant, data=str(tiny_mnist), steps=STEPS, warmup=WARMUP, threads=1)
        assert result["eval_images_per_s"] > 0


def test_the_table_has_a_row_per_backend(tiny_mnist, tmp_path, capsys):
    out_json = tmp_path / "train.json"
    backends = kernels.available_backends()
    status = train_bench.main(backends, steps=STEPS, warmup=WARMUP, data=str(tiny_mnist), threads=1,
                              json_path=str(out_json), startup=False)
    assert status == 0
    out = capsys.readouterr().out
    training = out.split("\ntraining\n")[1].split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in training] == backends
    assert "targets" in out
    figures = json.loads(out_json.read_text())
    assert [r["run"] for r in figures["runs"]] == backends


def test_bench_train_profile_prints_ops_and_the_overhead(tiny_mnist, capsys):
    assert main(["bench", "--train", "--profile", "--backend", "numpy", "--steps", str(STEPS),
                 "--data", str(tiny_mnist)]) == 0
    out = capsys.readouterr().out
    assert "(python overhead)" in out and "adam_step" in out  # the kernel column
    assert "target ≤ 15 %" in out
