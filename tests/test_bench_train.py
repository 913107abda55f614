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
    assert flops == train_bench.flops_per_image("article") == {"forward": 1_776_384, "train": 4_939_776}


def test_the_deep_models_flop_count_follows_its_layer_shapes():
    # 'same' 3×3 convs: 28×28×1 → 28×28×32, pool 14×14×32 → 14×14×64, pool 7×7×64 = 3136
    flops = train_bench.flops_per_image("deep")
    conv1, conv2 = 2 * 28 * 28 * 32 * 3 * 3 * 1, 2 * 14 * 14 * 64 * 3 * 3 * 32
    assert flops["forward"] == conv1 + conv2 + 2 * 3136 * 128 + 2 * 128 * 10 == 8_482_304
    assert flops["train"] == 3 * flops["forward"] - conv1 == 24_995_328


# The deep model's parameters: conv1 32·(3·3·1 + 1), conv2 64·(3·3·32 + 1), dense 128·(3136 + 1), 10·(128 + 1)
DEEP_PARAMETERS = 32 * 10 + 64 * 289 + 128 * 3137 + 10 * 129


def test_the_deep_models_shapes():
    assert train_worker.conv_shapes("deep") == ([(28, 1, 32), (14, 32, 64)], 3136)
    assert train_worker.conv_shapes("article") == ([(26, 1, 32)], 5408)
    model = train_worker.LeptonRun("numpy", None, "deep").model
    assert model.count_params() == DEEP_PARAMETERS == 421_642
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("run", ["torch", "tf-keras", "jax"])
def test_every_peer_builds_the_same_deep_model(run):
    pytest.importorskip(train_worker.PEER_MODULES[run])
    built = train_worker.make_run(run, None, "deep")
    if run == "torch":
        count = sum(p.numel() for p in built.model.parameters())
    elif run == "tf-keras":
        count = built.model.count_params()
    else:
        count = sum(leaf.size for leaf in built.jax.tree_util.tree_leaves(built.params))
    assert count == DEEP_PARAMETERS


def test_block_times_take_the_median_block_after_the_warm_up():
    # warm-up batch ends at t = 0 and 1; then 20 steps: 1 s each, but 5 s each in one block of 2
    stamps = [0.0, 1.0] + list(np.cumsum([1.0] * 10 + [5.0, 5.0] + [1.0] * 8) + 1.0)
    assert train_worker.block_times(stamps, warmup=2, steps=20) == 1.0


@pytest.mark.parametrize("model", ["article", "deep"])
def test_the_worker_reports_every_figure(model, tiny_npz):
    result = train_worker.measure("numpy", tiny_npz, steps=STEPS, warmup=WARMUP, model=model)
    assert result["model"] == model
    for key in ("step_ms", "train_images_per_s", "eval_images_per_s", "peak_rss_mb", "first_step_s"):
        assert result[key] > 0, key


@pytest.mark.parametrize("model", ["article", "deep"])
@pytest.mark.parametrize("peer", ["torch", "torch-cl", "tf-keras", "jax"])
def test_each_installed_peer_runs_in_a_process_lepton_nn_never_touched(peer, model, tiny_npz):
    pytest.importorskip(train_worker.PEER_MODULES[peer])
    result = train_bench.launch(peer, tiny_npz, steps=STEPS, warmup=WARMUP, model=model)
    assert "error" not in result, result.get("error")
    assert result["model"] == model
    assert result["step_ms"] > 0 and result["eval_images_per_s"] > 0
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


def test_bench_train_model_deep_names_its_model_and_flops(tiny_mnist, tmp_path, capsys):
    out_json = tmp_path / "deep.json"
    assert main(["bench", "--train", "--model", "deep", "--backend", "numpy", "--steps", str(STEPS), "--rounds", "1",
                 "--data", str(tiny_mnist), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lepton-nn bench --train --model deep: the deep CNN (Conv2D 32 3×3 same relu")
    assert "FLOP per image: training step 25.00 M, evaluation 8.48 M" in out
    data = json.loads(out_json.read_text())
    assert data["settings"]["model"] == "deep" and data["flops_per_image"] == train_bench.flops_per_image("deep")
    assert data["rounds"][0][0]["model"] == "deep"
    assert data["figures"]["numpy ms/step"][0] > 0 and data["figures"]["numpy eval images/s"][0] > 0


@pytest.mark.parametrize("old_settings, model", [({"model": "article"}, "deep"), ({"model": "deep"}, "article"),
                                                 (None, "deep")])  # None: a file from before --model, the article's
def test_compare_refuses_a_run_of_another_model_before_running(old_settings, model, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"kind": "train", "figures": {}, **({"settings": old_settings} if old_settings else {})}))
    other = "deep" if model == "article" else "article"
    with pytest.raises(ValueError, match=f"trained --model {other}, this one --model {model}; compare runs of one"):
        train_bench.main(["numpy"], data=str(tmp_path / "no-data-here"), compare=str(old), model=model)


def test_model_must_be_one_of_the_models(capsys):
    assert main(["bench", "--train", "--model", "wide"]) == 2
    assert "argument --model: expected one of article, deep, got 'wide'" in capsys.readouterr().err
    assert main(["bench", "--kernels", "--model", "deep"]) == 2
    assert "--model chooses the CNN of --train" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected one of article, deep"):
        train_bench.main(["numpy"], model="wide")


def test_missing_mnist_is_reported_before_the_other_benchmarks_run(tmp_path, monkeypatch, capsys):
    # --profile (or --train) with --shakespeare: the GPT benchmark runs first, so MNIST must be
    # found before it, not reported after minutes of work
    from lepton_nn.bench import gpt as gpt_bench

    def ran(*args, **kwargs):
        raise AssertionError("the GPT benchmark ran before MNIST was looked for")
    monkeypatch.setattr(gpt_bench, "main", ran)
    monkeypatch.setenv("LEPTON_NN_DATA", str(tmp_path))  # no MNIST files there
    assert main(["bench", "--shakespeare", "--profile"]) == 2
    err = capsys.readouterr().err
    assert "MNIST files missing" in err and "LEPTON_NN_DATA" in err


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


def test_bench_train_profile_runs_the_deep_model(tiny_mnist, capsys):
    assert main(["bench", "--train", "--profile", "--model", "deep", "--backend", "numpy", "--steps", str(STEPS),
                 "--data", str(tiny_mnist)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lepton-nn bench --train --profile --model deep:")
    assert "(python overhead)" in out and "backend numpy:" in out
