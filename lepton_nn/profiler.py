"""Where a step's time goes: per op, forward and backward, and the optimizer.

    with profiler.Profiler() as prof:
        model.fit(x, y, epochs=1)
    print(prof.table(total_seconds=...))

While a Profiler is active the autograd engine times every op's forward and backward and the
optimizers time their update. Whatever the step spends outside those (graph bookkeeping, the
training loop, data slicing) is Python overhead: the wall time minus the recorded time.
Inactive, the cost is one global lookup per op.
"""
import time
from collections import defaultdict

_active = None


def active():
    return _active


def call(name, phase, fn, *args, **kwargs):
    """fn(*args, **kwargs), timed as (name, phase) when a Profiler is active: the one place the
    engine and the optimizers go through, so that inactive it costs one global lookup."""
    if _active is None:
        return fn(*args, **kwargs)
    return _active.timed(name, phase, fn, *args, **kwargs)


class Profiler:
    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.last_seconds = 0.0  # the latest call's time: the engine keeps it on that op's graph node

    def record(self, name, phase, seconds):
        self.seconds[name, phase] += seconds
        self.calls[name, phase] += 1
        self.last_seconds = seconds

    def timed(self, name, phase, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.record(name, phase, time.perf_counter() - start)
        return result

    def __enter__(self):
        global _active
        self._previous, _active = _active, self
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        global _active
        self.wall_seconds = time.perf_counter() - self._start
        _active = self._previous

    def table(self, steps=1):
        """Rows sorted by time: op, phase, calls, ms per step, share of the wall time."""
        wall = self.wall_seconds
        recorded = sum(self.seconds.values())
        lines = [f"{'op':22s} {'phase':9s} {'calls':>7s} {'ms/step':>9s} {'share':>7s}"]
        for (name, phase), seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:22s} {phase:9s} {self.calls[name, phase]:7d} "
                         f"{1000 * seconds / steps:9.3f} {100 * seconds / wall:6.1f}%")
        overhead = wall - recorded
        lines.append(f"{'(python overhead)':22s} {'':9s} {'':7s} {1000 * overhead / steps:9.3f} "
                     f"{100 * overhead / wall:6.1f}%")
        lines.append(f"{'total':22s} {'':9s} {'':7s} {1000 * wall / steps:9.3f} {100.0:6.1f}%")
        return "\n".join(lines)
