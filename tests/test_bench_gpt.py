"""`lepton-nn bench --shakespeare`: every run in its own process, PyTorch's untouched by lepton_nn,
figures per round, the table; fast settings (2 timed iterations) on a small text."""
import importlib.util
import json

import pytest

from lepton_nn.bench import gpt as gpt_bench

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 60
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def text_dir(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    return tmp_path


def test_a_lepton_run_and_its_table(text_dir, tmp_path, capsys):
    runs = ["numpy"] + (["torch"] if HAS_TORCH else [])
    out = tmp_path / "gpt.json"
    assert gpt_bench.main(runs, steps=2, warmup=1, data=str(text_dir), rounds=1, json_path=str(out)) == 0
    table = capsys.readouterr().out
    assert "lepton-nn bench --shakespeare" in table and "\nnumpy " in table
    saved = json.loads(out.read_text())
    assert saved["kind"] == "shakespeare" and saved["figures"]["numpy ms/iter"][0] > 0
    if HAS_TORCH:
        torch_result = next(x for x in saved["rounds"][0] if x["run"] == "torch")
        assert torch_result["environment"]["lepton_nn_imported"] is False  # the peer never imported lepton_nn
        assert saved["figures"]["numpy / torch"][0] > 0


def test_compare_refuses_another_benchmarks_json(tmp_path):
    other = tmp_path / "train.json"
    other.write_text(json.dumps({"kind": "train", "figures": {}}))
    with pytest.raises(ValueError, match="expected the JSON of `lepton-nn bench --shakespeare --json`"):
        gpt_bench.main(["numpy"], compare=str(other))
