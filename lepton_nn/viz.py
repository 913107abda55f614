"""See the graph: the autograd graph behind a tensor, as Graphviz DOT text (issue 12).

    loss = model.compute_loss(x, y)
    print(viz.graph(loss, names=model))          # the DOT text, no dependency
    viz.graph(loss, "loss.dot", names=model)      # the same text, written to a file
    viz.graph(loss, "loss.svg", names=model)      # drawn by Graphviz: pip install -e ".[viz]"

How to read the drawing. Edges follow the data, from the leaves down to `tensor`, whose node
has a bold outline. Three kinds of node:
- op (ellipse): one op application and the tensor it made: the op's name, that tensor's shape
  and dtype, the backend active when it ran (an op without a kernel of that backend's own runs
  the reference's: `lepton-nn backends` lists the native ones) and, when a
  lepton_nn.profiler.Profiler was running, its forward and backward times in ms (of this one
  call, not a sum over calls).
- param (blue box): a leaf that requires grad, which backward gives a .grad (a weight):
  its shape, dtype and whether its .grad is set yet.
- input (grey dashed box): a tensor that does not require grad: the data, a frozen weight,
  a constant (a 0-d one, such as the 1/N of a mean, shows its value). Dimmed rather than left
  out, so that the graph shows where the data enters; backward never reaches them.
A name given in `names` heads its node's label. Node ids n0, n1, ... follow a depth-first walk
from `tensor`, inputs in order, every node after its inputs: the same graph gives the same text.
"""
import os
import shutil
from collections.abc import Mapping

from lepton_nn import fileio
from lepton_nn.tensor import Tensor

FORMATS = ("dot", "svg", "png", "pdf")  # "dot" is the text itself; the others need Graphviz
_EXTRA = 'pip install -e ".[viz]"'
_BINARY = "apt-get install graphviz (Debian, Ubuntu; brew install graphviz on macOS)"

_STYLE = {
    "op": 'shape=ellipse, style=filled, fillcolor="#fff2cc"',
    "param": 'shape=box, style=filled, fillcolor="#cfe2f3"',
    "input": 'shape=box, style=dashed, color=gray60, fontcolor=gray40',
}


def graph(tensor, path=None, format=None, names=None):
    """The autograd graph that made `tensor` (a loss, say) as Graphviz DOT text (a str).

    names: labels for tensors, as any of: a mapping {tensor or id(tensor): "conv2d/kernel"}, a
      mapping or sequence of (name, tensor) pairs (what nn.Module.named_parameters() yields), an
      nn.Module (its named_parameters()), or a lepton_nn.keras model (its weights, named
      "layer/kernel" as model.save names them).
    path: also write the graph there. Its extension, or `format`, chooses what: .dot the DOT
      text (written atomically, needs nothing); .svg, .png or .pdf a drawing by Graphviz, which
      needs the graphviz Python package (pip install -e ".[viz]") and its `dot` program
      (apt-get install graphviz).
    Returns the DOT text in every case. The module docstring says how to read it.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: expected a lepton_nn Tensor, got {type(tensor).__name__}")
    fmt = _format(path, format)
    if path is not None:
        fileio.check_writable(path, "graph: path")
    dot = _dot(tensor, _names_by_id(names))
    if path is not None:
        data = dot.encode() if fmt == "dot" else _render(dot, fmt)
        with fileio.atomic_write(path) as f:
            f.write(data)
    return dot


def _dot(tensor, names_by_id):
    """The DOT text of graph(): one line per node and per edge, each op's edges after it."""
    order = _walk(tensor)
    ids = {id(t): f"n{i}" for i, t in enumerate(order)}
    lines = ["digraph lepton_nn {",
             '  node [fontname="Helvetica", fontsize=10];',
             "  edge [arrowsize=0.7];"]
    for t in order:
        kind = "op" if t.grad_fn is not None else "param" if t.requires_grad else "input"
        label = _label(t, kind, names_by_id.get(id(t)))
        bold = ", penwidth=2" if t is tensor else ""
        lines.append(f'  {ids[id(t)]} [{_STYLE[kind]}{bold}, label="{label}"];')
        if kind == "op":
            for inp in t.grad_fn.inputs:
                if isinstance(inp, Tensor):  # None: an absent optional input (a bias)
                    lines.append(f"  {ids[id(inp)]} -> {ids[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _walk(root):
    """Every tensor reachable from root, each after its inputs (depth-first, inputs in order).
    An explicit stack, not recursion, so that a chain of any length works. (Unlike
    Tensor._topological_order, which backward uses, it keeps the tensors that need no gradient.)"""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t.grad_fn is not None:
            for inp in reversed(t.grad_fn.inputs):  # reversed: the first input is popped first
                if isinstance(inp, Tensor) and id(inp) not in seen:
                    stack.append((inp, False))
    return order


def _label(t, kind, name):
    shape = f"{tuple(t.shape)} {t.dtype}"
    lines = [name] if name else []
    if kind == "op":
        node = t.grad_fn
        lines += [node.op.__name__, shape]
        backend = getattr(node, "backend", None)
        if backend:
            lines.append(f"backend {backend}")
        seconds = getattr(node, "seconds", None) or {}
        lines += [f"{phase} {1000 * seconds[phase]:.3f} ms" for phase in ("forward", "backward") if phase in seconds]
    elif kind == "param":
        lines += [f"param {shape}", ".grad set" if t.grad is not None else ".grad None"]
    elif t.ndim == 0:
        lines.append(f"constant {t.data.item():.6g} {t.dtype}")
    else:
        lines.append(f"input {shape}")
    return "\\n".join(_escape(line) for line in lines)


def _escape(text):
    """Text inside a DOT "..." string: backslashes and quotes escaped, one line."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _names_by_id(names):
    """{id(tensor): name} from any of the forms graph() accepts for `names`."""
    if names is None:
        return {}
    if hasattr(names, "named_parameters"):  # a lepton_nn.nn.Module
        names = names.named_parameters()
    elif hasattr(names, "layers") and not isinstance(names, Mapping):  # a lepton_nn.keras model
        names = [(f"{layer.name}/{n}", p) for layer in names.layers for n, p in layer.named_weights()]
    pairs = names.items() if isinstance(names, Mapping) else names
    by_id = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"graph: names must pair each tensor with a name, got {pair!r:.80}")
        name, key = pair if isinstance(pair[0], str) else pair[::-1]
        if isinstance(key, Tensor):
            key = id(key)
        if not isinstance(name, str) or not isinstance(key, int) or isinstance(key, bool):
            raise ValueError(f"graph: names must pair a tensor (or its id) with a str, got {pair!r:.80}")
        by_id[key] = name
    return by_id


def _format(path, format):
    if path is None:
        if format is not None:
            raise ValueError(f"graph: format={format!r} needs a path to write to")
        return None
    fmt = format if format is not None else os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"graph: can write {', '.join(FORMATS)} (chosen by the path's extension or by format=), "
                         f"got {fmt or 'no extension'!r} for {os.fspath(path)!r}")
    return fmt


def _render(dot, fmt):
    """The drawing's bytes, by Graphviz; a missing piece raises an error saying how to install it."""
    no_binary = shutil.which("dot") is None
    try:
        import graphviz
    except ImportError:
        also = f", and Graphviz's dot program: {_BINARY}" if no_binary else ""
        raise ImportError(f"graph: drawing {fmt} needs the optional extra 'viz' (the graphviz Python package): "
                          f"{_EXTRA}{also}. Or write the DOT text with a .dot path, which needs nothing.") from None
    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(f"graph: drawing {fmt} needs Graphviz's dot program, not found on PATH: {_BINARY}. "
                           f"Or write the DOT text with a .dot path, which needs nothing.") from None
