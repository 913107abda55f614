"""Parameter, Module and Sequential: the PyTorch-style containers of learnable state.

A Module owns Parameters and sub-Modules, found by attribute assignment:

    class TwoLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(784, 128)     # a sub-module: its parameters are ours too
            self.out = nn.Linear(128, 10)

        def forward(self, x):
            return self.out(self.hidden(x).relu())

`parameters()` walks the tree in assignment order; `state_dict()` names each parameter by its
path ("hidden.weight"). `train()` / `eval()` set `training` on the whole tree (Dropout and
BatchNorm read it). A buffer (`register_buffer`) is state that is not learnt, such as BatchNorm's
running statistics: a NumPy array the module updates in place, saved and loaded with the
parameters, never given to an optimizer.
Gradients follow the contract of `lepton_nn.tensor`: they accumulate until `zero_grad()`.
"""
import operator
from collections import OrderedDict, namedtuple

import numpy as np

from lepton_nn.tensor import Tensor

# What load_state_dict returns, as PyTorch's (a pair, so `missing, unexpected = ...` works too).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A Tensor that a Module learns: a leaf with requires_grad=True (set it False to freeze).
    Its array is C-contiguous (copied if needed), as optimizers update it in place."""

    def __init__(self, data, dtype=None, requires_grad=True):
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)
        self.data = np.ascontiguousarray(self.data)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if name in self._buffers:  # assigning to a buffer replaces its array, as in PyTorch
            self._buffers[name] = _buffer_array(value, type(self).__name__, name)
        elif isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Keep `array` (a NumPy array, or None for none yet) as the buffer `name`: state that is
        not a parameter (BatchNorm's running statistics), reachable as self.name, saved by
        state_dict() and loaded in place by load_state_dict(). The array itself is kept, not a copy."""
        owner = type(self).__name__
        if "_buffers" not in self.__dict__:
            raise AttributeError(f"{owner}: call super().__init__() before register_buffer")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{owner}: a buffer name must be a non-empty string without '.', got {name!r}")
        if name not in self._buffers and hasattr(self, name):
            raise ValueError(f"{owner}: cannot register buffer {name!r}: the attribute already exists")
        self._buffers[name] = _buffer_array(array, owner, name)
        object.__setattr__(self, name, array)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def fused_with(self, following):
        """A function computing this module followed by the first k of `following` in one op,
        and k; or None. Sequential asks every module, so a fusion lives with the module that
        leads it (Conv2d: conv → ReLU → MaxPool2d). The default: no fusion."""
        return None

    # ------------------------------------------------------------------ the tree
    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        """(path, Parameter) for every parameter in the tree, each once, in assignment order."""
        seen = set()
        for module_path, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_path}.{name}" if module_path else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix=""):
        """(path, array) for every buffer in the tree (None ones left out), each once, in order."""
        for path, value, is_parameter in self._named_state(prefix):
            if not is_parameter:
                yield path, value

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def _named_state(self, prefix=""):
        """(path, Parameter or buffer array, is_parameter) module by module, each module's parameters
        then its buffers, each object once: state_dict's order, which is PyTorch's."""
        seen = set()
        for module_path, module in self.named_modules(prefix):
            for table, is_parameter in ((module._parameters, True), (module._buffers, False)):
                for name, value in table.items():
                    if value is not None and id(value) not in seen:
                        seen.add(id(value))
                        yield (f"{module_path}.{name}" if module_path else name), value, is_parameter

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """OrderedDict path → copy of the array of every parameter and buffer ("bn.weight",
        "bn.running_mean", ...), in PyTorch's order."""
        return OrderedDict((name, (value.data if is_parameter else value).copy())
                           for name, value, is_parameter in self._named_state())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (or anything np.asarray takes, e.g. torch tensors) into the parameters and
        buffers, in place. Shapes must match; with strict=True the keys must match exactly.
        Returns IncompatibleKeys(missing_keys, unexpected_keys), a pair."""
        own = OrderedDict((name, value.data if is_parameter else value)
                          for name, value, is_parameter in self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, array in own.items():
            if name in state_dict:
                value = np.asarray(state_dict[name])
                if value.shape != array.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {array.shape} in the module but "
                                     f"{value.shape} in the state dict")
                np.copyto(array, value, casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, module in self._modules.items():
            lines.append(f"  ({name}): " + repr(module).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Apply modules in order: Sequential(a, b, c)(x) = c(b(a(x))).

    Where a module can run together with the ones after it as one fused op (see
    Module.fused_with), forward uses the fused op: the same function, computed faster.
    `fuse = False` runs every module on its own.
    """

    def __init__(self, *modules):
        super().__init__()
        self.fuse = True
        for module in modules:
            self.append(module)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        return run_in_order(list(self), x, self.fuse, lambda i, module, x: module(x))


class ModuleList(Module):
    """A list of modules whose parameters belong to the owner (a plain Python list would hide
    them): ModuleList([a, b])[0] is a, its state_dict keys are "0.weight", "1.weight", ....
    It has no forward; the owner decides how to call its modules."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _checked(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: expected a Module, got {type(module).__name__}")
        return module

    def _key(self, index):
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"ModuleList: index {index} is out of range for {len(self)} modules")
        return str(index % len(self))

    def append(self, module):
        setattr(self, str(len(self)), self._checked(module))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self)[index])
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        key = self._key(index)
        self._modules[key] = self._checked(module)  # in place: setattr would move it to the end
        object.__setattr__(self, key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _buffer_array(value, owner, name):
    """A buffer's value: a NumPy array or None (a Tensor or a list is refused, not copied silently)."""
    if value is not None and not isinstance(value, np.ndarray):
        raise TypeError(f"{owner}: buffer {name!r} must be a NumPy array or None, got {type(value).__name__}")
    return value


def run_in_order(layers, x, fuse, call):
    """x through `layers` in order, each by call(i, layer, x); where fuse is on and layers[i].fused_with
    (layers[i + 1:]) offers (fn, k), fn(x) runs layer i and the next k as one fused op instead.
    The one loop of both Sequentials (this one and lepton_nn.keras's)."""
    i = 0
    while i < len(layers):
        fused = layers[i].fused_with(layers[i + 1:]) if fuse else None
        if fused is None:
            x, i = call(i, layers[i], x), i + 1
        else:
            fn, absorbed = fused
            x, i = fn(x), i + 1 + absorbed
    return x
