import os

import pytest

from lepton_nn import kernels


def pytest_report_header(config):
    return "lepton_nn backends: " + "; ".join(str(info) for info in kernels.backends())


@pytest.fixture
def mnist_dir():
    """The real MNIST files, when LEPTON_NN_MNIST_DIR points at them (CI sets it)."""
    path = os.environ.get("LEPTON_NN_MNIST_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("set LEPTON_NN_MNIST_DIR to a directory with the four MNIST .gz files")
    return path
