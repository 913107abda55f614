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
   turn; every file must match its published MD5 before it is kept.

Each file may be stored gzip-compressed (`train-images-idx3-ubyte.gz`) or not
(`train-images-idx3-ubyte`); the `.gz` one is used when both exist.
"""
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

from lepton_nn.fileio import atomic_write

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
HOW_TO_POINT_AT_FILES = (
    "To use local copies of the four MNIST files instead, point lepton_nn at their directory "
    f"with load_data(path=DIR), the environment variable {ENV_VAR}=DIR, or "
    "`lepton-nn train --data DIR`.")


class DownloadError(OSError):
    """Every mirror failed for some MNIST file (no network, or bad data everywhere)."""


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
        return _files_in(path, "load_data(path=...)")
    env = os.environ.get(ENV_VAR)
    if env:
        return _files_in(env, f"the environment variable {ENV_VAR}")
    cache = cache_dir()
    found, missing = _scan(cache)
    if missing:
        _download([name + ".gz" for name in missing], cache)
        found, missing = _scan(cache)
    return found


def cache_dir():
    """The download cache: $XDG_CACHE_HOME/lepton_nn/mnist, or ~/.cache/lepton_nn/mnist."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lepton_nn" / "mnist"


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


def _files_in(directory, origin):
    """The four files in `directory` or `directory/mnist`; an error naming what is missing."""
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


def _fetch(url, timeout=60):
    """GET `url` and return the body. Tests replace this function to stay offline."""
    request = urllib.request.Request(url, headers={"User-Agent": "lepton_nn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _download(names, directory):
    """Fetch each `.gz` name from the first mirror that serves bytes with the right MD5."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        failures = []
        for mirror in MIRRORS:
            url = mirror + name
            print(f"lepton_nn: downloading {url}", file=sys.stderr)
            try:
                data = _fetch(url)
            except Exception as e:  # network errors come in many types (URLError, timeout, ...)
                failures.append(f"{url}: {type(e).__name__}: {e}")
                continue
            digest = hashlib.md5(data).hexdigest()
            if digest != MD5[name]:
                failures.append(f"{url}: MD5 mismatch: expected {MD5[name]}, "
                                f"found {digest} ({len(data)} bytes)")
                continue
            with atomic_write(directory / name) as f:
                f.write(data)
            break
        else:
            raise DownloadError(
                f"MNIST download failed: could not get {name} from any mirror:\n  "
                + "\n  ".join(failures) + f"\n{HOW_TO_POINT_AT_FILES}")
