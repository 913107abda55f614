"""lepton_nn.shakespeare: the baby GPT equals PyTorch's (lepton_nn/bench/torch_gpt.py) for the
same weights, loss and every gradient, in float64; both models train and sample end to end;
`lepton-nn shakespeare` checks its arguments before any work."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, kernels, shakespeare
from lepton_nn.data.shakespeare import CharData
from lepton_nn.keras import saving

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40)


def torch_gpt_module():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("torch_gpt", ROOT / "lepton_nn" / "bench" / "torch_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_the_first_iteration_equals_pytorchs_for_the_same_weights(backend):
    peer = torch_gpt_module()  # skips without torch
    import torch
    ln.seed(0)
    config = shakespeare.GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32)
    ours = shakespeare.GPT(config)
    for p in ours.parameters():
        p.data = p.data.astype(np.float64)
    theirs = peer.GPT(65, 16, 2, 4, 32).double()
    state = ours.state_dict()
    assert set(state) == set(theirs.state_dict())  # nanoGPT's names, one for one
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (3, 16)), rng.integers(0, 65, (3, 16))
    with kernels.backend(backend):
        loss = shakespeare.sequence_loss(ours(x), y)
        loss.backward()
    their_loss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)).view(-1, 65), torch.tensor(y).view(-1))
    their_loss.backward()
    assert loss.item() == pytest.approx(their_loss.item(), rel=1e-12)
    theirs_by_name = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_by_name[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_a_short_run_trains_samples_and_saves(kind, tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    recipe = shakespeare.Recipe(batch_size=4, eval_interval=5, eval_iters=2, warmup_iters=2, final_eval_iters=3)
    lines = []
    result = shakespeare.train(kind, data_dir=tmp_path, iters=12, save=tmp_path / "m.lnn", out=lines.append,
                               progress=False, recipe=recipe, sample_length=40)
    assert np.isfinite(result["val_loss"]) and result["train_loss"] < np.log(CharData.from_text(TEXT).vocab_size)
    assert len(result["sample"]) == 40 and set(result["sample"]) <= set(TEXT)
    config, arrays = saving.read(tmp_path / "m.lnn")
    assert config["char_model"] == kind and len(arrays) == len(result["model"].state_dict())
    assert any("val loss" in line for line in lines)


def test_the_command_checks_its_arguments_first(tmp_path, capsys):
    assert cli.main(["shakespeare", "--iters", "0"]) == 2
    assert "argument --iters: expected an int >= 1, got '0'" in capsys.readouterr().err
    assert cli.main(["shakespeare", "--data", str(tmp_path)]) == 2
    assert "input.txt not found" in capsys.readouterr().err
    assert cli.main(["shakespeare", "--model", "rnn"]) == 2
    assert cli.main(["shakespeare", "--temperature", "nan"]) == 2
