import os

import pytest
from hypothesis import settings

from lepton_nn import kernels

# Property tests draw the same examples on every run, so that a run passes or fails by the code,
# never by luck; HYPOTHESIS_PROFILE=explore draws new examples each time, to hunt for new cases.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    return "lepton_nn backends: " + "; ".join(str(info) for info in kernels.backends())


@pytest.fixture
def mnist_dir():
    """The real MNIST files, when LEPTON_NN_MNIST_DIR points at them (CI sets it)."""
    path = os.environ.get("LEPTON_NN_MNIST_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("set LEPTON_NN_MNIST_DIR to a directory with the four MNIST .gz files")
    return os.path.abspath(path)  # tests may chdir (the README passes a relative path)
