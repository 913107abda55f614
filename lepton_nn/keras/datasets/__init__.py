"""keras.datasets: data sets as Keras returns them (uint8 NumPy arrays)."""
from lepton_nn.keras.datasets import mnist

__all__ = ["mnist"]
