"""`import lepton_nn as ln` reaches every public subpackage (ln.nn, ln.keras, ...), importing each
at first use: each check runs in a fresh interpreter, where sys.modules shows what was loaded."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import lepton_nn


def run(code, env=None):
    """Run `code` in a fresh interpreter; returns what it printed as JSON."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def present():
    """The SUBPACKAGES whose module exists in this checkout (onnx may be missing while it is written)."""
    return [name for name in lepton_nn.SUBPACKAGES if importlib.util.find_spec(f"lepton_nn.{name}") is not None]


def test_import_loads_neither_numba_nor_keras_nor_the_other_subpackages():
    loaded = run("import sys, json, lepton_nn; print(json.dumps(sorted(sys.modules)))")
    assert "numpy" in loaded
    for heavy in ["numba", "lepton_nn.keras", "lepton_nn.nn", "lepton_nn.optim", "lepton_nn.data",
                  "lepton_nn.kernels.numba_backend", "lepton_nn.kernels.c_backend"]:
        assert heavy not in loaded, f"import lepton_nn imported {heavy}"


@pytest.mark.parametrize("expression, module, expected", [
    ("ln.keras.Sequential", "lepton_nn.keras", "lepton_nn.keras.sequential.Sequential"),
    ("ln.keras.layers.Dense", "lepton_nn.keras", "lepton_nn.keras.layers.Dense"),
    ("ln.nn.Linear", "lepton_nn.nn", "lepton_nn.nn.layers.Linear"),
    ("ln.optim.Adam", "lepton_nn.optim", "lepton_nn.optim.Adam"),
    ("ln.metrics.accuracy", "lepton_nn.metrics", "lepton_nn.metrics.accuracy"),
    ("ln.data.mnist.load_data", "lepton_nn.data", "lepton_nn.data.mnist.load_data"),
    ("ln.lr_scheduler.CosineAnnealingLR", "lepton_nn.lr_scheduler", "lepton_nn.lr_scheduler.CosineAnnealingLR"),
])
def test_a_subpackage_resolves_on_first_access(expression, module, expected):
    """The attribute imports its subpackage then and there: absent before, present after."""
    before, name, after = run(
        "import sys, json, lepton_nn as ln\n"
        f"before = {module!r} in sys.modules\n"
        f"obj = {expression}\n"
        f"print(json.dumps([before, obj.__module__ + '.' + obj.__qualname__, {module!r} in sys.modules]))")
    assert (before, name, after) == (False, expected, True)


def test_a_lazy_subpackage_works_like_an_imported_one():
    """`ln.nn.Linear` builds the same model as `from lepton_nn import nn`, and the attribute is the module."""
    import lepton_nn.nn
    assert lepton_nn.nn is sys.modules["lepton_nn.nn"]
    got = run("import json, lepton_nn as ln\n"
              "ln.seed(3)\n"
              "model = ln.nn.Linear(3, 2)\n"
              "y = model(ln.tensor([[1.0, 2.0, 3.0]], requires_grad=True))\n"
              "print(json.dumps([list(y.shape), type(model).__module__]))")
    assert got == [[1, 2], "lepton_nn.nn.layers"]


@pytest.mark.parametrize("name", ["no_such_thing", "Keras", "nn_"])
def test_an_unknown_attribute_raises_attribute_error_naming_it(name):
    with pytest.raises(AttributeError, match=f"'lepton_nn' has no attribute '{name}'"):
        getattr(lepton_nn, name)
    assert not hasattr(lepton_nn, name)


def test_a_missing_subpackage_is_an_attribute_error(monkeypatch):
    """A listed name whose file is absent (onnx.py before it lands) fails like any unknown attribute,
    so hasattr() is False rather than raising ModuleNotFoundError."""
    monkeypatch.setattr(lepton_nn, "SUBPACKAGES", lepton_nn.SUBPACKAGES + ("not_written_yet",))
    with pytest.raises(AttributeError, match="no attribute 'not_written_yet'.*no lepton_nn/not_written_yet.py"):
        lepton_nn.not_written_yet
    assert not hasattr(lepton_nn, "not_written_yet")


def test_dir_lists_the_subpackages_and_the_top_level_api():
    listed = run("import json, lepton_nn as ln; print(json.dumps(dir(ln)))")
    assert set(lepton_nn.SUBPACKAGES) <= set(listed)
    assert {"Tensor", "tensor", "from_numpy", "no_grad", "seed", "gradcheck", "backend", "backends",
            "set_backend", "functional", "__version__"} <= set(listed)
    assert listed == sorted(listed)


@pytest.mark.parametrize("name", lepton_nn.SUBPACKAGES)
def test_each_subpackage_imports_alone_in_a_fresh_interpreter(name):
    """No import cycle: `import lepton_nn.<name>` first, before anything else of lepton_nn."""
    if name not in present():
        pytest.skip(f"lepton_nn/{name} does not exist in this checkout yet")
    assert run(f"import json, lepton_nn.{name} as m; print(json.dumps(m.__name__))") == f"lepton_nn.{name}"
    assert run(f"import json, lepton_nn as ln; print(json.dumps(ln.{name}.__name__))") == f"lepton_nn.{name}"


def test_the_top_level_api_is_unchanged():
    """The names imported eagerly stay what they were: functions and classes, not their modules."""
    from lepton_nn.gradcheck import gradcheck
    from lepton_nn.tensor import tensor
    assert lepton_nn.gradcheck is gradcheck and lepton_nn.tensor is tensor
    assert set(lepton_nn.__all__) <= set(dir(lepton_nn))
    lepton_nn.seed(0)
    x = lepton_nn.tensor([[0.5, -1.0]], dtype="float64", requires_grad=True)
    with lepton_nn.no_grad():
        assert not lepton_nn.functional.relu(x).requires_grad
    assert lepton_nn.gradcheck(lambda t: (t * t).sum(), x).passed


def test_the_default_backend_is_still_chosen_at_first_use():
    """Selecting the backend (c, then numba, then numpy; LEPTON_NN_BACKEND) is untouched by the lazy
    imports: nothing is loaded by `import lepton_nn`, the first kernel call loads the chosen one."""
    code = ("import sys, json, lepton_nn as ln\n"
            "from lepton_nn import kernels\n"
            "fast = ('lepton_nn.kernels.c_backend', 'lepton_nn.kernels.numba_backend', 'numba')\n"
            "loaded = [m for m in fast if m in sys.modules]\n"
            "ln.functional.relu(ln.tensor([1.0, -1.0]))\n"
            "print(json.dumps([loaded, kernels.active_name()]))")
    loaded, default = run(code)
    assert loaded == []
    assert default == next(info.name for info in lepton_nn.backends() if info.available)
    loaded, chosen = run(code, env={**os.environ, "LEPTON_NN_BACKEND": "numpy"})
    assert (loaded, chosen) == ([], "numpy")
