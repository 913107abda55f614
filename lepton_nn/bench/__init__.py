"""Benchmarks: `lepton-nn bench --kernels` and `lepton-nn bench --train` (docs/benchmarks.md).

    kernel_cases   the kernel cases (one layer's fwd+bwd at one shape), on a lepton_nn backend or in
                   PyTorch, and the timer; run as a script, PyTorch's worker process
    kernels        the kernel table: lepton_nn's kernels here, PyTorch's in its worker, over rounds
    train_worker   one training run (a lepton_nn backend or a peer framework) in a fresh process
    train          the training table: every run in its own process, round-robin over rounds
    report         tables, medians with their spread, the machine and its GEMM rate, --compare

A peer framework is only ever imported in a worker process that never imports lepton_nn and
starts with the user's environment, without lepton_nn's settings (lepton_nn/runtime.py).
Nothing here is imported by the engine.
"""
