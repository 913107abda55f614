"""Data sets, loaded with NumPy and the standard library (no autograd needed); images through Pillow.

    from lepton_nn.data import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data()

`idx` reads and writes the IDX format MNIST is published in; `images` reads one image
(any format Pillow opens, the extra `.[images]`, or .npy) for `lepton-nn predict`.
"""
from . import idx, images, mnist
from .idx import IdxFormatError, read_idx, write_idx

__all__ = ["idx", "images", "mnist", "IdxFormatError", "read_idx", "write_idx"]
