"""`lepton-nn bench --rl`: every run in its own process, PyTorch's untouched by lepton_nn, figures
per round, the table; fast settings (2 timed calls per figure)."""
import importlib.util
import json

import pytest

from lepton_nn import cli
from lepton_nn.bench import rl as rl_bench

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_a_lepton_run_and_its_table(tmp_path, capsys):
    runs = ["numpy"] + (["torch"] if HAS_TORCH else [])
    out = tmp_path / "rl.json"
    assert rl_bench.main(runs, steps=2, warmup=1, rounds=1, json_path=str(out)) == 0
    table = capsys.readouterr().out
    assert "lepton-nn bench --rl" in table and "\nnumpy " in table
    saved = json.loads(out.read_text())
    assert saved["kind"] == "rl"
    for name in ("reinforce", "dqn", "act"):
        assert saved["figures"][f"numpy {name} calls/s"][0] > 0
    if HAS_TORCH:
        torch_result = next(x for x in saved["rounds"][0] if x["run"] == "torch")
        assert torch_result["environment"]["lepton_nn_imported"] is False  # the peer never imported lepton_nn
        assert saved["figures"]["numpy dqn / torch"][0] > 0


def test_a_failing_run_is_reported_not_hidden(monkeypatch, capsys):
    monkeypatch.setattr(rl_bench, "worker_config", lambda: "not json")
    assert rl_bench.main(["numpy"], steps=1, warmup=1, rounds=1) == 1
    assert "FAILED numpy (round 1): json.decoder.JSONDecodeError" in capsys.readouterr().out


def test_compare_refuses_another_benchmarks_json(tmp_path):
    other = tmp_path / "train.json"
    other.write_text(json.dumps({"kind": "train", "figures": {}}))
    with pytest.raises(ValueError, match="expected the JSON of `lepton-nn bench --rl --json`"):
        rl_bench.main(["numpy"], compare=str(other))


def test_the_cli_flag_parses():
    args = cli.build_parser().parse_args(["bench", "--rl", "--steps", "5", "--threads", "1"])
    assert args.rl and args.steps == 5 and args.threads == 1
