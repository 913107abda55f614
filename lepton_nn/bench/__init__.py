"""Benchmarks: `lepton-nn bench`.

    kernels   one list of kernel cases (the MNIST CNN's shapes and a many-channel conv), each
              runnable on every backend and in PyTorch; the timer and the table
              (`lepton-nn bench --kernels`). benchmarks/ runs the same list under pytest-benchmark.

Nothing here is imported by the engine; torch is imported only when a PyTorch column is asked for.
"""
