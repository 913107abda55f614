"""The classic Keras MNIST recipe written as a PyTorch-style loop with lepton_nn.nn and lepton_nn.optim.

Same network, same initialisation (Glorot-uniform weights, zero biases, as Keras), same
optimizer settings (Adam, lr 1e-3, ε 1e-7 as Keras's 'adam'), 5 epochs of shuffled batches
of 64. Images are NCHW here, (N, 1, 28, 28), PyTorch's layout.

    LEPTON_NN_DATA=/path/to/mnist python examples/pytorch_style_mnist.py [--epochs 5] [--seed 0]
"""
import argparse
import time

import numpy as np

import lepton_nn
import lepton_nn.functional as F
from lepton_nn import nn, optim
from lepton_nn.data import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

lepton_nn.seed(args.seed)
(x_train, y_train), (x_test, y_test) = mnist.load_data()
x_train = x_train.reshape(-1, 1, 28, 28).astype("float32") / 255.0
x_test = x_test.reshape(-1, 1, 28, 28).astype("float32") / 255.0

keras_init = {"weight_init": nn.init.glorot_uniform, "bias_init": nn.init.zeros}
model = nn.Sequential(
    nn.Conv2d(1, 32, 3, **keras_init), nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 13 * 13, 128, **keras_init), nn.ReLU(),
    nn.Linear(128, 10, **keras_init))        # logits: F.cross_entropy applies the softmax, fused
opt = optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

start = time.perf_counter()
for epoch in range(args.epochs):
    model.train()
    order = lepton_nn.rng.generator().permutation(len(x_train))
    loss_sum = correct = 0.0
    for first in range(0, len(order), args.batch_size):
        batch = order[first:first + args.batch_size]
        opt.zero_grad()
        logits = model(x_train[batch])
        loss = F.cross_entropy(logits, y_train[batch])
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(batch)
        correct += (logits.data.argmax(axis=1) == y_train[batch]).sum()
    print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / len(order):.4f}, "
          f"accuracy {correct / len(order):.4f}, {time.perf_counter() - start:.0f} s", flush=True)

model.eval()
with lepton_nn.no_grad():
    predictions = np.concatenate([model(x_test[i:i + 256]).data.argmax(axis=1) for i in range(0, len(x_test), 256)])
print(f"test accuracy: {100 * (predictions == y_test).mean():.2f} %  (backend {lepton_nn.kernels.active_name()})")
