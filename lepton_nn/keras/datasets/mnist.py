"""keras.datasets.mnist.load_data() → ((x_train, y_train), (x_test, y_test)), uint8 arrays of
shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,), as Keras returns them.

A re-export of lepton_nn.data.mnist.load_data; `path` there is a directory holding the four
MNIST files (see that module for where else it looks: LEPTON_NN_DATA, the cache, a download).
"""
from lepton_nn.data.mnist import load_data

__all__ = ["load_data"]
