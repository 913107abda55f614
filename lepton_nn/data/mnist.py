"""MNIST: 70,000 handwritten digits, 28×28 grey-scale, labels 0–9.

    (x_train, y_train), (x_test, y_test) = load_data()

returns exactly what `keras.datasets.mnist.load_data()` returns: x_train uint8 (60000, 28, 28),
y_train uint8 (60000,), x_test uint8 (10000, 28, 28), y_test uint8 (10000,).

Where the four files are looked for, first match wins:

1. `load_data(path=DIR)`: DIR (or DIR/mnist) must hold them, else FileNotFoundError
   naming the missing files. An explicit choice never falls through to a download.
2. `LEPTON_NN_DATA=DIR`: the same, also an explicit choice.
3. The cache, `$XDG_CACHE_HOME/lepton_nn/mnist` (default `~/.cache/lepton_nn/mnist`).
4. A download of the missing `.gz` files into the cache, from each mirror in `MIRRORS` in
   turn; every file must match its published MD5 before it is kept. The whole download has
   one deadline, `DOWNLOAD_DEADLINE` seconds (environment: LEPTON_NN_DOWNLOAD_DEADLINE); past
   it, DownloadError says which URLs were tried and how to fetch the files by hand.

Each file may be stored gzip-compressed (`train-images-idx3-ubyte.gz`) or not
(`train-images-idx3-ubyte`); the `.gz` one is used when both exist.
"""
import os
from pathlib import Path

from . import download
from .idx import read_idx

# Key → file name without `.gz`, in the order load_data unpacks them.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Published MD5 of each `.gz` file.
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Tried in order; the original yann.lecun.com site no longer serves the files reliably.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
ENV_VAR = "LEPTON_NN_DATA"
# Seconds for the whole download (every file, every mirror): an unanswering server fails fast.
DOWNLOAD_DEADLINE = 60.0
DEADLINE_ENV_VAR = download.DEADLINE_ENV_VAR
HOW_TO_POINT_AT_FILES = (
    "To use local copies of the four MNIST files instead, point lepton_nn at their directory "
    f"with load_data(path=DIR), the environment variable {ENV_VAR}=DIR, or "
    "`lepton-nn train --data DIR`.")


def how_to_download_by_hand():
    """The manual-download instructions: where to get each file and the MD5 it must have."""
    lines = [f"  {MIRRORS[0]}{name}  (MD5 {md5})" for name, md5 in MD5.items()]
    return ("Download the four files by hand (from any mirror in lepton_nn.data.mnist.MIRRORS), "
            "check their MD5 (md5sum), put them in one directory DIR:\n" + "\n".join(lines) + "\n"
            + HOW_TO_POINT_AT_FILES)


DownloadError = download.DownloadError  # raised here when every mirror fails (see download.py)


def load_data(path=None):
    """Load MNIST as ((x_train, y_train), (x_test, y_test)), uint8 NumPy arrays.

    path: a directory holding the four files (or a parent with an `mnist/` subfolder).
    See the module docstring for where else the files are looked for.
    """
    files = find_files(path)
    x_train, y_train = _load_pair(files["train_images"], files["train_labels"])
    x_test, y_test = _load_pair(files["test_images"], files["test_labels"])
    return (x_train, y_train), (x_test, y_test)


def find_files(path=None):
    """Return {key: Path} for the four files, downloading into the cache if needed."""
    if path is not None:
        return files_in(path, "load_data(path=...)")
    env = os.environ.get(ENV_VAR)
    if env:
        return files_in(env, f"the environment variable {ENV_VAR}")
    cache = cache_dir()
    found, missing = _scan(cache)
    if missing:
        _download([name + ".gz" for name in missing], cache)
        found, missing = _scan(cache)
    return found


def cache_dir():
    """The download cache: $XDG_CACHE_HOME/lepton_nn/mnist, or ~/.cache/lepton_nn/mnist."""
    return download.cache_dir("mnist")


def _scan(directory):
    """({key: Path} of the files present, [names of the missing ones]) in one directory."""
    found, missing = {}, []
    for key, name in FILES.items():
        for candidate in (directory / (name + ".gz"), directory / name):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def files_in(directory, origin):
    """The four files in `directory` or `directory/mnist`, as {key: Path}; FileNotFoundError
    naming `origin` (where the directory came from, e.g. "--data") and what is missing."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} (from {origin}) does not exist "
                                f"or is not a directory")
    found, missing = _scan(directory)
    if missing and (directory / "mnist").is_dir():
        sub_found, sub_missing = _scan(directory / "mnist")
        if len(sub_missing) < len(missing):
            directory, found, missing = directory / "mnist", sub_found, sub_missing
    if missing:
        raise FileNotFoundError(
            f"MNIST files missing in {directory} (from {origin}): "
            f"{', '.join(name + '[.gz]' for name in missing)}. Expected all four of "
            f"{', '.join(FILES.values())}, each optionally gzip-compressed (.gz).")
    return found


def _load_pair(images_path, labels_path):
    """Read one images file and its labels file and check they belong together."""
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype.name != "uint8":
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), "
                         f"found {x.dtype.name} of shape {x.shape}")
    if y.ndim != 1 or y.dtype.name != "uint8":
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), "
                         f"found {y.dtype.name} of shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"MNIST image and label counts disagree: {len(x)} images in "
                         f"{images_path}, {len(y)} labels in {labels_path}")
    if y.size and y.max() > 9:
        raise ValueError(f"{labels_path}: expected labels 0..9, found {int(y.max())}")
    return x, y


_fetch = download.fetch  # module-level, so that tests can replace it and stay offline


def download_deadline():
    """DOWNLOAD_DEADLINE, or the number in $LEPTON_NN_DOWNLOAD_DEADLINE (seconds, finite, > 0)."""
    return download.deadline_seconds(DOWNLOAD_DEADLINE)


def _download(names, directory):
    """Fetch each `.gz` name from the first mirror that serves bytes with the right MD5, all
    within one deadline (lepton_nn/data/download.py)."""
    files = {name: (MD5[name], [mirror + name for mirror in MIRRORS]) for name in names}
    download.download(files, directory, download_deadline(), "MNIST", how_to_download_by_hand(),
                      fetch=lambda url, timeout: _fetch(url, timeout))  # looked up at call time: see _fetch
