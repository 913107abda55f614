"""The check on `lepton-nn bench --train`'s PyTorch figure: the same model and loop as a plain
PyTorch script, nothing of lepton_nn anywhere, PyTorch's defaults, random images of MNIST's shape
(a convolution's time does not depend on the pixel values).

    python benchmarks/plain_torch_mnist.py            # ms per training step, batch 64

It prints the mean over all timed steps and, as the benchmark reports it, the median over ten
blocks of them (on a shared machine a burst of other work raises the mean, not the median).

Run it in the same minute as the benchmark: its figure and the benchmark's torch row should agree
within the machine's noise (docs/benchmarks.md, "How peers are isolated").
"""
import time

import numpy as np
import torch

BATCH, WARMUP, STEPS = 64, 10, 200

rng = np.random.default_rng(0)
x = torch.from_numpy(rng.integers(0, 256, (60000, 1, 28, 28)).astype(np.float32) / 255)
y = torch.from_numpy(rng.integers(0, 10, 60000))
model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                            torch.nn.Linear(5408, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
order = torch.randperm(len(x))
stamps = []
for step in range(WARMUP + STEPS):
    batch = order[step * BATCH:(step + 1) * BATCH]
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
    loss.backward()
    optimizer.step()
    loss.item()
    stamps.append(time.perf_counter())
timed = np.array(stamps[WARMUP - 1:])  # from the end of the last warm-up step
blocks = np.diff(timed[::STEPS // 10]) / (STEPS // 10)
print(f"plain PyTorch {torch.__version__} ({torch.get_num_threads()} threads): ms per step: "
      f"mean {1e3 * (timed[-1] - timed[0]) / STEPS:.2f}, median of 10 blocks {1e3 * np.median(blocks):.2f}")
