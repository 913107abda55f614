"""Tiny Shakespeare: 1,115,394 characters of Shakespeare's plays (public domain), the corpus of
char-rnn and nanoGPT's character-level examples.

    text = load_text()                       # the whole corpus, a str
    data = CharData.from_text(text)          # vocabulary and the 90 % / 10 % train/val split

Where `input.txt` is looked for, first match wins (as for MNIST, lepton_nn/data/mnist.py):
`load_text(path=DIR)` (DIR or DIR/tinyshakespeare), `LEPTON_NN_DATA=DIR`, the cache
`~/.cache/lepton_nn/tinyshakespeare`, or a download into the cache, MD5-checked, within one
deadline (LEPTON_NN_DOWNLOAD_DEADLINE, default 60 s).
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import download

FILE = "input.txt"
MD5 = "6fb458f1232090904fb40fe944165e91"
SIZE = 1_115_394
URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
ENV_VAR = "LEPTON_NN_DATA"
DOWNLOAD_DEADLINE = 60.0
HOW_TO_DOWNLOAD_BY_HAND = (
    f"Download it by hand from {URL} (MD5 {MD5}, {SIZE:,} bytes), put it in a directory DIR as "
    f"{FILE}, and point lepton_nn at DIR with load_text(path=DIR), {ENV_VAR}=DIR or `--data DIR`.")


def load_text(path=None):
    """The corpus as a str. See the module docstring for where the file is looked for."""
    file = find_file(path)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{file}: expected UTF-8 text, found undecodable bytes at offset {err.start}") from None
    if not text:
        raise ValueError(f"{file}: expected text, found an empty file")
    return text


def find_file(path=None):
    if path is not None:
        return _file_in(path, "load_text(path=...)")
    if os.environ.get(ENV_VAR):
        return _file_in(os.environ[ENV_VAR], f"the environment variable {ENV_VAR}")
    cache = download.cache_dir("tinyshakespeare")
    if not (cache / FILE).is_file():
        download.download({FILE: (MD5, [URL])}, cache, download.deadline_seconds(DOWNLOAD_DEADLINE),
                          "Tiny Shakespeare", HOW_TO_DOWNLOAD_BY_HAND,
                          fetch=lambda url, timeout: _fetch(url, timeout))  # looked up at call time: see _fetch
    return cache / FILE


_fetch = download.fetch  # module-level, so that tests can replace it and stay offline


def _file_in(directory, origin):
    directory = Path(directory).expanduser()
    for candidate in (directory / FILE, directory / "tinyshakespeare" / FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{FILE} not found in {directory} or {directory / 'tinyshakespeare'} (from {origin}). "
                            + HOW_TO_DOWNLOAD_BY_HAND)


@dataclass
class CharData:
    """A character-level dataset: the vocabulary (every distinct character, sorted, as nanoGPT's
    shakespeare_char) and the text encoded as integer ids, split into train and validation."""
    chars: str
    train: np.ndarray   # int64 ids
    val: np.ndarray

    @classmethod
    def from_text(cls, text, train_fraction=0.9):
        if not 0 < train_fraction < 1:
            raise ValueError(f"CharData: train_fraction must lie in (0, 1), got {train_fraction!r}")
        chars = "".join(sorted(set(text)))
        ids = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
        lookup = {ord(c): i for i, c in enumerate(chars)}
        encoded = np.array([lookup[c] for c in ids.tolist()], dtype=np.int64)
        split = int(len(encoded) * train_fraction)
        return cls(chars, encoded[:split], encoded[split:])

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"CharData.encode: characters outside the vocabulary: {unknown[:10]!r}")
        return np.array([index[c] for c in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def batch(self, split, batch_size, block_size, rng):
        """(x, y) int64 arrays of shape (batch_size, block_size): random windows of the split and
        the same windows shifted by one character (the next-character targets)."""
        data = self.train if split == "train" else self.val
        if len(data) <= block_size:
            raise ValueError(f"CharData.batch: the {split} split has {len(data)} characters, "
                             f"fewer than block_size + 1 = {block_size + 1}")
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
        x = np.stack([data[s:s + block_size] for s in starts])
        y = np.stack([data[s + 1:s + 1 + block_size] for s in starts])
        return x, y
