"""Tensor and the autograd engine.

A Tensor wraps a NumPy array. An op applied to tensors that require gradients records a graph
node on its result: the op (from `lepton_nn.ops`), its context and its inputs.
`loss.backward()` walks that graph from the loss back to the leaves in reverse topological
order, calling each op's backward once.

Gradient contract (the same as PyTorch's):
- Only leaves (tensors created by the user with requires_grad=True, e.g. parameters) receive
  `.grad`; it is None until a backward pass reaches them. A tensor an op made keeps its own
  gradient only after `t.retain_grad()`; `t.register_hook(fn)` calls fn(gradient) when its
  gradient is known, and uses what fn returns (if not None) instead.
- `t.grad_fn` is the graph node that made t (None for a leaf): `t.grad_fn.name()` is e.g.
  "MulBackward", `t.grad_fn.next_functions` the nodes of its inputs; lepton_nn.viz draws them.
- Gradients accumulate: each backward pass *adds* into `.grad`. Two backward passes give exactly
  twice the gradient. Call `zero_grad()` (or the optimizer's) before each step.
- A backward pass frees what the graph saved for it (activations, kernel caches) as soon as
  each node is done, so a second pass over the same graph needs `retain_graph=True` on the first.
- Every gradient a backward returns must have its input's shape; the engine checks, and names
  the op and the input otherwise.

Anomaly mode (`with detect_anomaly():`, as torch.autograd.detect_anomaly) checks every op's
output and every gradient for NaN and inf, and raises at the first one, naming the op, forward
or backward, and the line of your code that called it. It costs a pass over every array.
"""
import contextlib
import os
import traceback

import numpy as np

from lepton_nn import checks, kernels, ops, profiler

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph: for evaluation and for optimizer updates."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


_anomaly = False


@contextlib.contextmanager
def detect_anomaly(enabled=True):
    """Inside this block, the first NaN or inf that an op produces, in its output (forward) or
    in a gradient (backward), raises FloatingPointError naming the op and your line that called it."""
    global _anomaly
    previous, _anomaly = _anomaly, bool(enabled)
    try:
        yield
    finally:
        _anomaly = previous


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _callers_line():
    """'file:line in function' of the innermost frame outside lepton_nn: the user's call."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR + os.sep):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "lepton_nn itself"


def _raise_if_not_finite(array, op_name, what, where, inputs=()):
    if array is None or array.dtype.kind != "f" or np.isfinite(array).all():
        return
    bad = ~np.isfinite(array)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    kind = "NaN" if np.isnan(array).any() else "inf"
    already = [i for i, a in enumerate(inputs) if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all()]
    cause = (f"; its input(s) {already} already held NaN/inf" if already else "; its inputs were finite") if inputs else ""
    raise FloatingPointError(f"detect_anomaly: {op_name} {what} holds {kind} ({int(bad.sum())} of {array.size} "
                             f"elements, the first at {first}){cause}; the op was called at {where}")


class Node:
    """How a tensor was made (its `grad_fn`, named as PyTorch names it, e.g. MulBackward): the op,
    what it saved for backward, its input tensors, the backend that ran it and, in anomaly mode,
    the line of user code that called it. `seconds` holds its forward and backward times when
    a lepton_nn.profiler.Profiler was running (lepton_nn.viz.graph shows them)."""
    __slots__ = ("op", "ctx", "inputs", "where", "backend", "seconds")

    def __init__(self, op, ctx, inputs, where=None, backend=None, seconds=None):
        self.op, self.ctx, self.inputs, self.where, self.backend = op, ctx, inputs, where, backend
        self.seconds = {} if seconds is None else seconds

    def name(self):
        return f"{self.op.__name__}Backward"

    @property
    def next_functions(self):
        """The grad_fn of each input (None for a leaf or a constant), as in PyTorch."""
        return tuple(t._node if isinstance(t, Tensor) else None for t in self.inputs)

    def __repr__(self):
        return f"<{self.name()}>"


def apply(op, *inputs, **options):
    """Run op.forward on the inputs' arrays and, when a gradient is wanted, record the node.

    inputs: the op's tensors, positionally (None for an absent optional one, such as a bias);
    options: everything else, by keyword (see lepton_nn/ops.py). op.backward then returns one
    gradient per input."""
    arrays, needs = [], []
    for i, t in enumerate(inputs):
        if t is None:
            arrays.append(None)
            needs.append(False)
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op.__name__}: input {i} is a {type(t).__name__}, not a Tensor; pass a "
                            "non-tensor argument (an axis, a stride, labels) by keyword")
        dtype = t.data.dtype
        if dtype.kind == "f" and dtype not in _COMPUTE_DTYPES:  # float16, longdouble: refused on every backend
            checks.compute_dtype(dtype, op.__name__, f"input {i}")
        arrays.append(t.data)
        needs.append(t.requires_grad)
    needs = tuple(needs)
    ctx = ops.Context(needs)
    out = Tensor._wrap(profiler.call(op.__name__, "forward", op.forward, ctx, *arrays, **options))
    where = None
    if _anomaly:
        where = _callers_line()
        _raise_if_not_finite(out.data, op.__name__, "forward: its output", where, arrays)
    if _grad_enabled and True in needs:
        out.requires_grad = True
        prof = profiler.active()
        out._node = Node(op, ctx, inputs, where, kernels.active_name(),
                         {"forward": prof.last_seconds} if prof else None)
    return out


_COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what checks.compute_dtype lets through


class Function(ops.Function):
    """Base class for your own differentiable op, as torch.autograd.Function: write `forward(ctx,
    *arrays, **options)` and `backward(ctx, grad)` as static methods on NumPy arrays (backward
    returns a tuple, one gradient per input), then call `MyOp.apply(*tensors, **options)`.
    The guide: docs/custom_ops.md. (The built-in ops in lepton_nn/ops.py are the same kind of
    class; the functional API applies them.)"""

    @classmethod
    def apply(cls, *inputs, **options):
        return apply(cls, *inputs, **options)


class _HookHandle:
    def __init__(self, tensor, hook):
        self.tensor, self.hook = tensor, hook

    def remove(self):
        self.tensor._hooks = tuple(h for h in self.tensor._hooks if h is not self.hook)


def tensor(data, dtype=None, requires_grad=False):
    """Make a Tensor holding a copy of `data` (as torch.tensor): an optimizer step on it never
    changes the caller's array. Python numbers and lists become float32 (integers stay
    integers); a NumPy array keeps its dtype, so float64 stays float64."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def from_numpy(array):
    """A Tensor that shares `array`'s memory (as torch.from_numpy): no copy, so a change to
    either shows in the other, an optimizer step included. Keeps the array's dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array)


class Tensor:
    """A NumPy array, and what autograd needs: requires_grad, .grad, and the node it came from.
    Tensor(data) copies data, as lepton_nn.tensor does; from_numpy shares."""
    __array_priority__ = 1000  # make ndarray ⊕ Tensor call Tensor's reflected operator
    _hooks = ()             # set per tensor by register_hook
    _retains_grad = False   # set per tensor by retain_grad

    def __init__(self, data, dtype=None, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        from_python = not isinstance(data, (np.ndarray, np.generic))
        array = np.array(data, dtype=dtype)  # a copy: see tensor()
        if dtype is None and from_python and array.dtype == np.float64:
            array = array.astype(np.float32)
        if requires_grad and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"tensor: only floating-point tensors can require gradients, got dtype {array.dtype}")
        self.data = array
        self.grad = None
        self.requires_grad = requires_grad
        self._node = None

    @classmethod
    def _wrap(cls, array):
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node = np.asarray(array), None, False, None
        return t

    # ------------------------------------------------------------------ basics
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = f", grad_fn={self._node!r}" if self._node else ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{flag})"

    # ------------------------------------------------------------------ the graph
    @property
    def grad_fn(self):
        """The Node that made this tensor, or None for a leaf (see the module docstring)."""
        return self._node

    @property
    def is_leaf(self):
        return self._node is None

    def retain_grad(self):
        """Keep this (non-leaf) tensor's gradient in .grad after backward, as leaves do."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        self._retains_grad = True

    def register_hook(self, hook):
        """Call hook(gradient) when backward reaches this tensor; a returned array replaces the
        gradient. Returns a handle whose remove() takes the hook off again."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad")
        self._hooks = self._hooks + (hook,)
        return _HookHandle(self, hook)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data)

    def zero_grad(self):
        """Forget the accumulated gradient (sets .grad to None, as PyTorch's set_to_none)."""
        self.grad = None

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph=False):
        """Accumulate ∂self/∂leaf into every leaf's .grad (see the module docstring)."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input had requires_grad=True)")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward: grad can be implicit only for a scalar; this tensor has shape "
                                 f"{self.shape}, pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, expected {self.shape}")

        pending = {id(self): grad}
        shared = {id(grad)}  # arrays someone else may hold: the caller's grad, those already given to a leaf
        for t in reversed(self._topological_order()):
            g = pending.pop(id(t), None)
            if g is None:
                continue
            for hook in t._hooks:
                replaced = hook(g)
                if replaced is not None:
                    replaced = np.asarray(replaced.data if isinstance(replaced, Tensor) else replaced)
                    if replaced.shape != g.shape:
                        raise ValueError(f"backward: a hook returned shape {replaced.shape} for a gradient of "
                                         f"shape {g.shape}")
                    g = replaced.astype(t.dtype, copy=False)
            node = t._node
            if t._retains_grad and node is not None:
                t.grad = np.array(g, dtype=t.dtype) if t.grad is None else t.grad + g
            if node is None:  # a leaf: accumulate
                # .grad must be an array nobody else holds. A fresh array from an op's backward
                # (a weight gradient: megabytes) is kept as it is; a view, an array given out
                # twice or one a retained graph may hand out again is copied.
                exclusive = (g.dtype == t.dtype and g.base is None and g.flags.owndata and g.flags.writeable
                             and id(g) not in shared and not retain_graph)
                shared.add(id(g))
                g = g if exclusive else np.array(g, dtype=t.dtype)
                t.grad = g if t.grad is None else t.grad + g
                continue
            if node.ctx is None:
                raise RuntimeError("backward: this graph was already freed by a previous backward pass; "
                                   "pass retain_graph=True to the first one to go through it twice")
            input_grads = profiler.call(node.op.__name__, "backward", node.op.backward, node.ctx, g)
            if profiler.active():
                node.seconds["backward"] = profiler.active().last_seconds
            if not isinstance(input_grads, tuple) or len(input_grads) != len(node.inputs):
                got = f"a tuple of {len(input_grads)}" if isinstance(input_grads, tuple) else type(input_grads).__name__
                raise TypeError(f"{node.op.__name__}.backward must return a tuple of {len(node.inputs)} gradient(s), "
                                f"one per input (None for an input without one); it returned {got}")
            for i, (inp, ig) in enumerate(zip(node.inputs, input_grads)):
                if ig is None or inp is None or not inp.requires_grad:
                    continue
                if isinstance(ig, np.generic):  # NumPy returns a scalar, not a 0-d array, from 0-d arithmetic
                    ig = np.asarray(ig)
                if not isinstance(ig, np.ndarray) or ig.shape != inp.shape or ig.dtype != inp.dtype:
                    got = (f"{ig.dtype} array of shape {ig.shape}" if isinstance(ig, np.ndarray) else
                           f"a {type(ig).__name__}")
                    raise ValueError(f"{node.op.__name__}.backward returned {got} as the gradient of input {i}, "
                                     f"expected a {inp.dtype} array of shape {inp.shape} (the input's)")
                if _anomaly:
                    _raise_if_not_finite(np.asarray(ig), node.op.__name__, f"backward: the gradient for input {i}",
                                         node.where or "(made outside detect_anomaly)")
                key = id(inp)
                pending[key] = ig if key not in pending else pending[key] + ig
            if not retain_graph:
                node.ctx = None

    def _topological_order(self):
        """Tensors reachable from self, each after all of its inputs. Iterative (an explicit stack)
        so that a graph of any depth works without hitting Python's recursion limit."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            t, inputs_done = stack.pop()
            if inputs_done:
                order.append(t)
                continue
            if id(t) in visited:
                continue
            visited.add(id(t))
            stack.append((t, True))
            if t._node is not None:
                for inp in t._node.inputs:
                    if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                        stack.append((inp, False))
        return order

    # ------------------------------------------------------------------ arithmetic
    def _lift(self, other):
        """Python numbers become constants of this tensor's dtype (so 2 * x stays float32)."""
        if isinstance(other, Tensor):
            return other
        other = np.asarray(other)
        if other.dtype.kind in "biuf" and other.ndim == 0:
            other = other.astype(self.dtype)
        return Tensor._wrap(other)

    def __add__(self, other):
        return apply(ops.Add, self, self._lift(other))

    def __mul__(self, other):
        return apply(ops.Mul, self, self._lift(other))

    def __neg__(self):
        return apply(ops.Neg, self)

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return self._lift(other) + (-self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("pow: the exponent must be a Python number (tensor exponents are not supported)")
        return apply(ops.Pow, self, exponent=exponent)

    def __truediv__(self, other):
        return self * self._lift(other) ** -1

    def __rtruediv__(self, other):
        return self._lift(other) * self ** -1

    __radd__ = __add__
    __rmul__ = __mul__

    def __matmul__(self, other):
        """Matrix product; 1-D operands are treated as a row (left) or column (right) vector."""
        a, b = self, self._lift(other)
        if a.ndim == 1:
            return (a.reshape(1, -1) @ b).reshape(*b.shape[:-2], b.shape[-1])
        if b.ndim == 1:
            return (a @ b.reshape(-1, 1)).reshape(a.shape[:-1])
        return apply(ops.MatMul, a, b)

    def __rmatmul__(self, other):
        return self._lift(other) @ self

    def exp(self):
        return apply(ops.Exp, self)

    def log(self):
        return apply(ops.Log, self)

    def sqrt(self):
        return apply(ops.Sqrt, self)

    # ------------------------------------------------------------------ activations
    def relu(self):
        return apply(ops.Relu, self)

    def sigmoid(self):
        return apply(ops.Sigmoid, self)

    def tanh(self):
        return apply(ops.Tanh, self)

    def softmax(self, axis=-1):
        return apply(ops.Softmax, self, axis=axis)

    def log_softmax(self, axis=-1):
        return apply(ops.LogSoftmax, self, axis=axis)

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False):
        return apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        """Σ / count: composed from sum, so it needs no backward of its own. The mean of nothing
        is NaN (0 · NaN), as in PyTorch and NumPy."""
        count = self.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis, keepdims) * (1.0 / count if count else np.nan)

    def max(self, axis=None, keepdims=False):
        return apply(ops.Max, self, axis=axis, keepdims=keepdims)

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return apply(ops.Reshape, self, shape=tuple(shape))

    def flatten(self, start_axis=1):
        """Keep the axes before start_axis, merge the rest: (N, C, H, W) → (N, C·H·W)."""
        return self.reshape(*self.shape[:start_axis], int(np.prod(self.shape[start_axis:])))  # not -1: N may be 0

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return apply(ops.Permute, self, axes=tuple(axes))

    def transpose(self, axis0=-2, axis1=-1):
        axes = list(range(self.ndim))
        axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
        return self.permute(axes)

    @property
    def T(self):
        return self.permute(tuple(reversed(range(self.ndim))))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return apply(ops.GetItem, self, index=index)

    # ------------------------------------------------------------------ sequence models: masks, split
    def masked_fill(self, mask, value):
        """`value` where mask is True, self elsewhere (mask: booleans broadcast against self);
        the filled positions pass no gradient. value is a number: −inf masks attention scores."""
        if not isinstance(value, (int, float, np.number, np.bool_)):
            raise ValueError(f"masked_fill: value must be a number, got {value!r}")
        mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        return apply(ops.MaskedFill, self, mask=mask, value=value)

    def tril(self, diagonal=0):
        """The lower triangle of the last two axes, zeros above it, as torch.tril (diagonal 0 is
        the main one, k > 0 above it, k < 0 below). A masked_fill, so its gradient is tril(G);
        on booleans it builds a mask: Tensor(np.ones((T, T), bool)).tril()."""
        return self.masked_fill(~self._on_or_below("tril", diagonal), 0)

    def triu(self, diagonal=0):
        """The upper triangle of the last two axes, zeros below it, as torch.triu; see tril.
        A causal attention mask: Tensor(np.ones((T, T), bool)).triu(1) is True where j > i."""
        return self.masked_fill(self._on_or_below("triu", diagonal, shift=-1), 0)  # zero where j < i + diagonal

    def _on_or_below(self, op, diagonal, shift=0):
        """Booleans of the last two axes' shape, True where column j ≤ row i + diagonal + shift."""
        if self.ndim < 2:
            raise ValueError(f"{op}: input must be at least 2-D, got shape {self.shape}")
        if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
            raise ValueError(f"{op}: diagonal must be an int, got {diagonal!r}")
        return np.tri(*self.shape[-2:], int(diagonal) + shift, dtype=bool)

    def split(self, split_size_or_sections, axis=0):
        """Pieces along `axis`, as torch.split: of split_size each (the last one shorter), or of
        the listed sizes. Each piece is a slice (GetItem), so the engine sums the pieces'
        gradients back into self's (each piece scatters into zeros of self's shape: simple,
        at the cost of one full-size array per piece)."""
        axis = ops.normalize_axis("split", axis, self.ndim)
        bounds = ops.split_bounds("split", self.shape[axis], split_size_or_sections)
        return tuple(self[(slice(None),) * axis + (slice(start, stop),)] for start, stop in bounds)

    def chunk(self, chunks, axis=0):
        """At most `chunks` pieces along `axis`, as torch.chunk: each ⌈n/chunks⌉ long, the last
        shorter, so fewer pieces when they fill the axis early (6 in 4 chunks: 2, 2, 2)."""
        chunks = checks.int_at_least(chunks, "chunk", "chunks", 1)
        n = self.shape[ops.normalize_axis("chunk", axis, self.ndim)]
        return self.split(-(-n // chunks) if n else [0] * chunks, axis)  # an empty axis: `chunks` empty pieces
