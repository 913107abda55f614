"""PyTorch-style modules: the layer between the functional API and the Keras-style API.

    from lepton_nn import nn, optim
    import lepton_nn.functional as F

    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches:                     # x (N, 1, 28, 28) float32, y (N,) int
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)  # fused softmax + cross-entropy on the logits
        loss.backward()
        opt.step()

Modules hold parameters and call `lepton_nn.functional`; no math lives here, but for the
recurrence of LSTM and the heads of attention (compositions of functional calls: nn/sequence.py).
"""
from lepton_nn.nn import init, utils
from lepton_nn.nn.layers import (GELU, AvgPool2d, Conv2d, Dropout, Embedding, Flatten, LayerNorm, LeakyReLU, Linear,
                                 MaxPool2d, ReLU, Sigmoid, Softmax, Tanh, same_padding)
from lepton_nn.nn.module import Module, ModuleList, Parameter, Sequential
from lepton_nn.nn.normalization import BatchNorm1d, BatchNorm2d
from lepton_nn.nn.sequence import LSTM, CausalSelfAttention, LSTMCell, MultiheadAttention

__all__ = ["init", "Module", "ModuleList", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "same_padding",
           "Embedding", "LayerNorm", "GELU", "LSTM", "LSTMCell", "CausalSelfAttention", "MultiheadAttention",
           "BatchNorm1d", "BatchNorm2d"]
