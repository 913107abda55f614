"""The Tiny Shakespeare loader: where it looks, the checked download, and the character dataset
(its sizes are nanoGPT's shakespeare_char: vocabulary 65, 1,003,854 train and 111,540 validation
characters). The real corpus is read from LEPTON_NN_SHAKESPEARE_DIR; those tests skip without it."""
import hashlib
import os

import numpy as np
import pytest

from lepton_nn.data import download, shakespeare

REAL_DIR = os.environ.get("LEPTON_NN_SHAKESPEARE_DIR")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A private cache, no LEPTON_NN_DATA, a short deadline, and a fetch that fails the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LEPTON_NN_DATA", raising=False)

    def no_network(url, timeout):
        raise AssertionError(f"the test tried the network: {url}")
    monkeypatch.setattr(shakespeare, "_fetch", no_network)


@pytest.mark.skipif(not REAL_DIR, reason="set LEPTON_NN_SHAKESPEARE_DIR to the directory of input.txt")
def test_the_real_corpus_gives_nanogpts_character_dataset():
    text = shakespeare.load_text(REAL_DIR)
    assert hashlib.md5(text.encode("utf-8")).hexdigest() == shakespeare.MD5
    data = shakespeare.CharData.from_text(text)
    assert (data.vocab_size, len(data.train), len(data.val)) == (65, 1_003_854, 111_540)
    assert data.decode(data.encode("To be, or not to be")) == "To be, or not to be"


def test_batches_are_windows_and_their_next_characters():
    data = shakespeare.CharData.from_text("abcdefghij" * 20)
    x, y = data.batch("train", 5, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="the val split has 20 characters, fewer than block_size"):
        data.batch("val", 2, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="characters outside the vocabulary"):
        data.encode("xyz")


def test_a_directory_without_the_file_is_named_and_never_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"input.txt not found in .* \(from load_text\(path=...\)\)"):
        shakespeare.load_text(tmp_path)
    (tmp_path / "input.txt").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match="input.txt: expected UTF-8 text"):
        shakespeare.load_text(tmp_path)


def test_the_download_is_md5_checked_and_cached(tmp_path, monkeypatch):
    body = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    calls = []

    def serve(url, timeout):
        calls.append(url)
        return body if len(calls) > 1 else body + b"tampered"
    monkeypatch.setattr(shakespeare, "_fetch", serve)
    with pytest.raises(download.DownloadError, match="MD5 mismatch") as info:
        shakespeare.load_text()
    assert "Download it by hand from https://" in str(info.value)
    monkeypatch.setattr(shakespeare, "MD5", hashlib.md5(body).hexdigest())
    assert shakespeare.load_text() == body.decode()
    assert shakespeare.load_text() == body.decode() and len(calls) == 2  # the second from the cache
