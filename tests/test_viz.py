"""lepton_nn.viz.graph: the autograd graph as Graphviz DOT text (issue 12).

The DOT text is parsed back into nodes and edges (never compared with a copy of the code's
output), so each test reads as a statement about the graph: which nodes, which edges, what the
labels say. Drawing SVG needs the graphviz package and its `dot` program (pip install -e
".[viz]", apt-get install graphviz); the one test that draws is skipped without them.

Run: python -m pytest -q tests/test_viz.py
"""
import os
import re
import shutil
import sys
import types

import numpy as np
import pytest

import lepton_nn
from lepton_nn import kernels, nn, viz
from lepton_nn.profiler import Profiler
from lepton_nn.tensor import tensor

NODE = re.compile(r'^\s*(n\d+) \[(.*)\];$')
EDGE = re.compile(r'^\s*(n\d+) -> (n\d+);$')
LABEL = re.compile(r'label="((?:[^"\\]|\\.)*)"')


def parse(dot):
    """({id: [label lines]}, {id: attribute text}, [(from, to)]) of graph()'s DOT text."""
    lines = dot.strip().splitlines()
    assert lines[0] == "digraph lepton_nn {" and lines[-1] == "}"
    labels, attrs, edges = {}, {}, []
    for line in lines[1:-1]:
        if (m := EDGE.match(line)):
            edges.append(m.groups())
        elif (m := NODE.match(line)):
            node, text = m.groups()
            escaped = LABEL.search(text).group(1)  # DOT's escapes: \n a line break, \" a quote, \\ a backslash
            labels[node] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], escaped).split("\n")
            attrs[node] = text
        else:
            assert line.strip().startswith(("node ", "edge ")), f"unexpected DOT line {line!r}"
    return labels, attrs, edges


def small_graph():
    """loss = relu(x @ w + b).sum() with x (2, 3) data, w (3, 4) and b (4,) parameters."""
    rng = np.random.default_rng(0)
    x = tensor(rng.normal(size=(2, 3)).astype(np.float32))
    w = tensor(rng.normal(size=(3, 4)).astype(np.float32), requires_grad=True)
    b = tensor(rng.normal(size=4).astype(np.float32), requires_grad=True)
    return x, w, b, ((x @ w + b).relu()).sum()


def test_small_graph_has_exactly_the_expected_nodes_and_edges():
    x, w, b, loss = small_graph()
    with lepton_nn.backend("numpy"):
        loss = ((x @ w + b).relu()).sum()
    labels, attrs, edges = parse(viz.graph(loss, names={w: "w", id(b): "b"}))
    # ids follow the walk: each node after its inputs, inputs in order
    assert labels == {
        "n0": ["input (2, 3) float32"],
        "n1": ["w", "param (3, 4) float32", ".grad None"],
        "n2": ["MatMul", "(2, 4) float32", "backend numpy"],
        "n3": ["b", "param (4,) float32", ".grad None"],
        "n4": ["Add", "(2, 4) float32", "backend numpy"],
        "n5": ["Relu", "(2, 4) float32", "backend numpy"],
        "n6": ["Sum", "() float32", "backend numpy"]}
    assert edges == [("n0", "n2"), ("n1", "n2"), ("n2", "n4"), ("n3", "n4"), ("n4", "n5"), ("n5", "n6")]
    assert "penwidth=2" in attrs["n6"] and not any("penwidth" in attrs[n] for n in attrs if n != "n6")
    assert "dashed" in attrs["n0"]  # an input is drawn dimmed


def test_the_same_graph_gives_the_same_text():
    assert viz.graph(small_graph()[-1]) == viz.graph(small_graph()[-1])


def test_each_node_names_the_backend_that_ran_it_and_the_dtype():
    x = tensor(np.ones((2, 2)), requires_grad=True)  # float64 stays float64
    with lepton_nn.backend("numpy"):
        y = x.exp()
    z = y.tanh()  # the default backend
    labels, _, _ = parse(viz.graph(z))
    assert labels["n1"] == ["Exp", "(2, 2) float64", "backend numpy"]
    assert labels["n2"] == ["Tanh", "(2, 2) float64", f"backend {kernels.active_name()}"]


def test_times_appear_only_when_a_profiler_ran():
    x, w, b, loss = small_graph()
    assert " ms" not in viz.graph(loss)

    with Profiler():
        loss = ((x @ w + b).relu()).sum()
    labels, _, _ = parse(viz.graph(loss))
    ops = [lines for lines in labels.values() if lines[0] in ("MatMul", "Add", "Relu", "Sum")]
    assert len(ops) == 4
    for lines in ops:  # forward only: no backward has run yet
        assert re.fullmatch(r"forward \d+\.\d{3} ms", lines[-1]) and not any("backward" in s for s in lines)

    with Profiler():
        loss.backward()
    labels, _, _ = parse(viz.graph(loss))
    for lines in labels.values():
        if lines[0] in ("MatMul", "Add", "Relu", "Sum"):
            assert re.fullmatch(r"forward \d+\.\d{3} ms", lines[-2])
            assert re.fullmatch(r"backward \d+\.\d{3} ms", lines[-1])
    assert labels["n1"][-1] == ".grad set" and labels["n0"] == ["input (2, 3) float32"]


def test_a_tensor_used_twice_is_one_node_with_two_edges():
    x = tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    labels, _, edges = parse(viz.graph(y + x))
    assert len(labels) == 3  # x, Mul, Add
    assert edges == [("n0", "n1"), ("n0", "n1"), ("n1", "n2"), ("n0", "n2")]


def test_a_constant_shows_its_value():
    x = tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    labels, _, edges = parse(viz.graph(x.mean()))  # Σ · (1/4)
    assert labels["n2"] == ["constant 0.25 float32"] and ("n2", "n3") in edges


def test_a_deep_chain_of_ten_thousand_ops_needs_no_recursion():
    x = tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = -y
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # far less than the depth: a recursive walk would fail
    try:
        dot = viz.graph(y)
    finally:
        sys.setrecursionlimit(limit)
    labels, _, edges = parse(dot)
    assert len(labels) == 10_001 and len(edges) == 10_000
    assert labels["n0"][-2] == "param (1,) float32" and labels["n10000"][0] == "Neg"
    assert edges[0] == ("n0", "n1") and edges[-1] == ("n9999", "n10000")


def test_a_name_with_quotes_stays_one_label():
    x, w, b, loss = small_graph()
    labels, _, _ = parse(viz.graph(loss, names={w: 'say "w"\\n'}))
    assert labels["n1"] == ['say "w"\\n', "param (3, 4) float32", ".grad None"]  # not a line break


def test_names_from_an_nn_module_and_from_pairs():
    torch_style = nn.Linear(3, 2)
    x = tensor(np.ones((4, 3), np.float32))
    loss = torch_style(x).sum()
    by_module = parse(viz.graph(loss, names=torch_style))[0]
    by_pairs = parse(viz.graph(loss, names=torch_style.named_parameters()))[0]
    by_dict = parse(viz.graph(loss, names=dict(torch_style.named_parameters())))[0]
    assert by_module == by_pairs == by_dict
    params = [lines[0] for lines in by_module.values() if len(lines) == 3 and lines[1].startswith("param")]
    assert sorted(params) == ["bias", "weight"]
    with pytest.raises(ValueError, match="names must pair"):
        viz.graph(loss, names={"weight": 3.5})
    with pytest.raises(ValueError, match="names must pair"):
        viz.graph(loss, names=["weight"])


def test_names_from_a_keras_model_of_the_classic_mnist_cnn():
    from lepton_nn.train import build_model
    model = build_model()
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    loss = model.compute_loss(x, np.arange(8))
    labels, _, edges = parse(viz.graph(loss, names=model))
    params = sorted(lines[0] for lines in labels.values() if len(lines) > 1 and lines[1].startswith("param"))
    expected = sorted(f"{layer.name}/{w}" for layer in model.layers for w, _ in layer.named_weights())
    assert params == expected and len(expected) == 6
    inputs = [lines for lines in labels.values() if lines[0].startswith("input")]
    assert inputs == [["input (8, 1, 28, 28) float32"]]  # the batch, as the convolution reads it
    ops = [lines[0] for lines in labels.values() if len(lines) > 1 and not lines[1].startswith("param")]
    assert ops[-1] in ("Mul", "Sum") and any("Conv2d" in op for op in ops) and ops.count("Linear") == 2
    assert len(edges) == len(labels) - 1  # a tree: every tensor but the loss feeds one op, once


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    loss = small_graph()[-1]
    with pytest.raises(TypeError, match="Tensor"):
        viz.graph(np.ones(3))
    with pytest.raises(ValueError, match="can write dot, svg, png, pdf"):
        viz.graph(loss, tmp_path / "graph.txt")
    with pytest.raises(ValueError, match="needs a path"):
        viz.graph(loss, format="svg")
    with pytest.raises(ValueError, match="directory"):
        viz.graph(loss, tmp_path / "missing" / "graph.dot")


def test_a_dot_path_gets_the_text_atomically(tmp_path):
    loss = small_graph()[-1]
    path = tmp_path / "graph.dot"
    dot = viz.graph(loss, path)
    assert path.read_text() == dot
    viz.graph(loss, tmp_path / "graph.gv", format="dot")  # format= overrides the extension
    assert (tmp_path / "graph.gv").read_text() == dot
    assert sorted(os.listdir(tmp_path)) == ["graph.dot", "graph.gv"]  # no temporary file left


def test_without_the_graphviz_package_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` now raises ImportError
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ImportError) as err:
        viz.graph(small_graph()[-1], tmp_path / "graph.svg")
    assert 'pip install -e ".[viz]"' in str(err.value) and "apt-get install graphviz" in str(err.value)
    assert not os.listdir(tmp_path)


def test_without_the_dot_program_the_error_names_the_apt_package(tmp_path, monkeypatch):
    class ExecutableNotFound(RuntimeError):
        pass

    class Source:
        def __init__(self, text):
            pass

        def pipe(self, format):
            raise ExecutableNotFound("failed to execute PosixPath('dot')")

    fake = types.SimpleNamespace(Source=Source, ExecutableNotFound=ExecutableNotFound)
    monkeypatch.setitem(sys.modules, "graphviz", fake)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.graph(small_graph()[-1], tmp_path / "graph.png")
    assert not os.listdir(tmp_path)


def test_rendering_svg_when_graphviz_is_installed(tmp_path):
    pytest.importorskip("graphviz", reason='drawing needs the extra: pip install -e ".[viz]"')
    if shutil.which("dot") is None:
        pytest.skip("drawing needs Graphviz's dot program: apt-get install graphviz")
    x, w, b, loss = small_graph()
    dot = viz.graph(loss, tmp_path / "graph.svg", names={w: "w"})
    svg = (tmp_path / "graph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("MatMul", "Relu", "param (3, 4) float32", "w"):
        assert f">{text}</text>" in svg
    assert dot == viz.graph(loss, names={w: "w"})
