"""The IDX reader and the MNIST loader, on tiny hand-built files. Never touches the network
(the download tests talk to servers on 127.0.0.1 that this file starts)."""
import gzip
import hashlib
import http.server
import math
import os
import socket
import struct
import sys
import threading
import time
import urllib.error

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_nn import fileio
from lepton_nn.data import IdxFormatError, images, mnist, read_idx, write_idx
from lepton_nn.data.idx import DTYPE_CODES, MAX_NDIM
from lepton_nn.fileio import atomic_write

REAL_FETCH = mnist._fetch  # before the autouse fixture below replaces it


# --------------------------------------------------------------------------- IDX reader
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_write_then_read_roundtrip(tmp_path, dtype, name):
    array = (np.arange(24) - 7).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable, like keras' arrays
    assert os.listdir(tmp_path) == [name]  # the atomic write left no temporary file


def test_header_layout_by_hand(tmp_path):
    # An MNIST-style label file written byte by byte: magic 0x00000801 = 2049, then N = 3.
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([5, 0, 4]))
    np.testing.assert_array_equal(read_idx(path), [5, 0, 4])
    # Multi-byte values are big-endian: int16 0x0102 = 258.
    path.write_bytes(bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 1) + b"\x01\x02")
    assert read_idx(path).tolist() == [258]


def test_gzip_detected_by_content_without_gz_suffix(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    os.rename(tmp_path / "a.gz", tmp_path / "a")
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), np.arange(5))


def _raw_file(tmp_path, data, name="bad-idx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _error(path):
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


def test_bad_magic(tmp_path):
    path = _raw_file(tmp_path, bytes([0x12, 0x34, 0x08, 1]) + struct.pack(">I", 1) + b"\x00")
    message = _error(path)
    assert "magic" in message and "0x00 0x00" in message and "0x12 0x34" in message


def test_unknown_dtype_code(tmp_path):
    path = _raw_file(tmp_path, bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\x00")
    message = _error(path)
    assert "unknown dtype code 0x0A" in message and "0x08 uint8" in message


@pytest.mark.parametrize("ndim", [0, MAX_NDIM + 1, 255])
def test_number_of_dimensions_out_of_range(tmp_path, ndim):
    message = _error(_raw_file(tmp_path, bytes([0, 0, 0x08, ndim]) + bytes(4 * ndim)))
    assert f"1 <= ndim <= {MAX_NDIM}" in message and f"found ndim {ndim}" in message


def test_huge_dimensions_are_counted_exactly(tmp_path):
    # 3 × (2³²−1) int32 values: far beyond int64 when NumPy multiplies; Python ints do not wrap.
    big = 2 ** 32 - 1
    path = _raw_file(tmp_path, bytes([0, 0, 0x0C, 3]) + struct.pack(">3I", big, big, big) + bytes(8))
    message = _error(path)
    assert "too large" in message and f"{big}x{big}x{big}" in message
    # With a zero dimension the data is empty, but NumPy still refuses the shape: also an IdxFormatError.
    path = _raw_file(tmp_path, bytes([0, 0, 0x08, 4]) + struct.pack(">4I", big, big, big, 0))
    assert "too large" in _error(path)
    # Within NumPy's limits but far beyond the file: the exact byte count, not an overflowed one.
    path = _raw_file(tmp_path, bytes([0, 0, 0x08, 2]) + struct.pack(">2I", big, 2 ** 30) + bytes(3))
    assert f"expected {12 + big * 2 ** 30} bytes" in _error(path)


def test_empty_dimension_is_a_valid_empty_array(tmp_path):
    path = _raw_file(tmp_path, bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 0, 28))
    assert read_idx(path).shape == (0, 28)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2)])
def test_truncated_header(tmp_path, data):
    assert "truncated header" in _error(_raw_file(tmp_path, data))


def test_truncated_data(tmp_path):
    # Header promises 2×3 uint8 = 6 bytes after the 12-byte header: 18 in all; give 16.
    path = _raw_file(tmp_path, bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 2, 3) + bytes(4))
    message = _error(path)
    assert "truncated file" in message and "expected 18 bytes" in message and "found 16" in message


def test_trailing_bytes(tmp_path):
    path = _raw_file(tmp_path, bytes([0, 0, 0x08, 1]) + struct.pack(">I", 2) + bytes(3))
    message = _error(path)
    assert "trailing bytes" in message and "expected 10 bytes" in message and "found 11" in message


def test_trailing_bytes_in_int32_file(tmp_path):
    # 2 int32 values need 8 data bytes; 9 are there.
    path = _raw_file(tmp_path, bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + bytes(9))
    assert "expected 16 bytes" in _error(path)


def test_corrupt_gzip_streams(tmp_path):
    good = gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 1000) + bytes(range(250)) * 4)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for name, data in [("cut.gz", good[: len(good) // 2]),      # stream ends early
                       ("flipped.gz", bytes(flipped)),          # damaged deflate data / CRC
                       ("plain.gz", b"not gzip at all"),        # .gz name, not gzip inside
                       ("badheader", b"\x1f\x8b\x00junk")]:     # gzip signature, junk after
        message = _error(_raw_file(tmp_path, data, name))
        assert "corrupt gzip" in message


# Every malformed input, as a class: random headers and payloads, and damaged copies of a valid
# file (plain and gzip). read_idx must return exactly the array the bytes hold, or raise
# IdxFormatError naming the file; never another exception.
def idx_oracle(data, gz):
    """This test's own reading of a file's bytes: the array they hold, or None if malformed."""
    if gz or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except Exception:
            return None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in DTYPE_CODES or not 1 <= data[3] <= MAX_NDIM:
        return None
    header = 4 + 4 * data[3]
    if len(data) < header:
        return None
    dims = struct.unpack(f">{data[3]}I", data[4:header])
    dtype = DTYPE_CODES[data[2]]
    if len(data) != header + math.prod(dims) * dtype.itemsize:
        return None
    try:
        return np.frombuffer(data, dtype, offset=header).reshape(dims)
    except ValueError:  # a shape NumPy cannot make (huge dims beside a zero)
        return None


def check_read(path, data, gz):
    path.write_bytes(data)
    expected = idx_oracle(data, gz)
    try:
        array = read_idx(path)
    except IdxFormatError as err:
        assert str(path) in str(err)
        assert expected is None, f"valid file refused: {err}"
    else:
        assert expected is not None, f"malformed file read as shape {array.shape}"
        assert array.dtype == expected.dtype.newbyteorder("=") and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


@st.composite
def idx_files(draw):
    """Headers that are mostly plausible (so the deeper checks are reached) with random payloads."""
    magic = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\0", b"\x01\0", b"\0\xff"]))
    code = draw(st.sampled_from(list(DTYPE_CODES) * 3 + [0x00, 0x0A, 0xFF]))
    ndim = draw(st.one_of(st.integers(1, 3), st.integers(0, MAX_NDIM + 3)))
    dim = st.one_of(st.integers(0, 3), st.integers(1, 5), st.integers(0, 2 ** 32 - 1))
    dims = draw(st.lists(dim, min_size=ndim, max_size=ndim))
    header = magic + bytes([code, ndim]) + struct.pack(f">{ndim}I", *dims)
    header = header[:draw(st.integers(0, len(header)))] if draw(st.integers(0, 9)) == 0 else header
    size = math.prod(dims) * DTYPE_CODES.get(code, np.dtype("u1")).itemsize
    length = size + draw(st.sampled_from([0, 0, 0, -1, 1, 8])) if size <= 512 else draw(st.integers(0, 64))
    return header + draw(st.binary(min_size=max(length, 0), max_size=max(length, 0)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=idx_files(), gz=st.booleans())
def test_random_headers_parse_or_raise_idx_format_error(tmp_path, data, gz):
    check_read(tmp_path / ("f.idx.gz" if gz else "f.idx"), gzip.compress(data) if gz else data, gz)


VALID = bytes([0, 0, 0x0B, 2]) + struct.pack(">2I", 2, 3) + np.arange(6, dtype=">i2").tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gz=st.booleans(), st_data=st.data())
def test_damaged_copies_of_a_valid_file(tmp_path, gz, st_data):
    data = bytearray(gzip.compress(VALID, mtime=0) if gz else VALID)
    for _ in range(st_data.draw(st.integers(1, 3))):
        i = st_data.draw(st.integers(0, len(data) - 1))
        data[i] ^= st_data.draw(st.integers(1, 255))            # flip some bits of one byte
    if st_data.draw(st.booleans()):
        data = data[:st_data.draw(st.integers(0, len(data)))]   # cut it short
    check_read(tmp_path / ("f.gz" if gz else "f"), bytes(data), gz)


def test_the_valid_file_itself_reads(tmp_path):
    for gz in (False, True):
        check_read(tmp_path / "f", gzip.compress(VALID) if gz else VALID, gz)
    assert read_idx(tmp_path / "f").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_idx_rejects_what_idx_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f"
    with atomic_write(target) as f:
        f.write(b"old")

    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target) as f:
            f.write(b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


# --------------------------------------------------------------------------- MNIST loader
def make_mnist(directory, n_train=3, n_test=2, label=0, gz=True):
    """Write four tiny MNIST-shaped files; every label is `label`, so sources are tellable apart.

    Returns {file name as written: its bytes}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.full(n_train, label, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.full(n_test, label, dtype=np.uint8),
    }
    written = {}
    for name, array in arrays.items():
        name = name + ".gz" if gz else name
        write_idx(directory / name, array)
        written[name] = (directory / name).read_bytes()
    return written


def labels_of(data):
    (_, y_train), (_, y_test) = data
    return set(y_train.tolist()) | set(y_test.tolist())


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Every test: an empty private cache, no LEPTON_NN_DATA, and a _fetch that records calls
    and fails, so nothing here can reach the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("LEPTON_NN_DATA", raising=False)
    calls = []

    def no_network(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(mnist, "_fetch", no_network)
    return calls


def cache(tmp_path):
    return tmp_path / "xdg-cache" / "lepton_nn" / "mnist"


def test_load_data_shapes_and_dtypes(tmp_path):
    make_mnist(tmp_path / "d", n_train=3, n_test=2, label=7)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=tmp_path / "d")
    assert x_train.shape == (3, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (3,) and y_train.dtype == np.uint8
    assert x_test.shape == (2, 28, 28) and y_test.tolist() == [7, 7]


def test_uncompressed_files_and_str_path(tmp_path):
    make_mnist(tmp_path / "d", label=2, gz=False)
    assert labels_of(mnist.load_data(str(tmp_path / "d"))) == {2}


def test_cache_dir_follows_xdg_then_home(tmp_path, monkeypatch):
    assert mnist.cache_dir() == cache(tmp_path)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.cache_dir() == tmp_path / "home" / ".cache" / "lepton_nn" / "mnist"


def test_lookup_order_argument_then_env_then_cache(tmp_path, monkeypatch, offline):
    make_mnist(tmp_path / "arg", label=1)
    make_mnist(tmp_path / "env", label=2)
    make_mnist(cache(tmp_path), label=3)
    monkeypatch.setenv("LEPTON_NN_DATA", str(tmp_path / "env"))
    assert labels_of(mnist.load_data(path=tmp_path / "arg")) == {1}  # argument beats env
    assert labels_of(mnist.load_data()) == {2}                        # env beats cache
    monkeypatch.delenv("LEPTON_NN_DATA")
    assert labels_of(mnist.load_data()) == {3}                        # then the cache
    assert offline == []


def test_env_var_may_point_at_a_parent_with_mnist_subfolder(tmp_path, monkeypatch):
    make_mnist(tmp_path / "datasets" / "mnist", label=4)
    monkeypatch.setenv("LEPTON_NN_DATA", str(tmp_path / "datasets"))
    assert labels_of(mnist.load_data()) == {4}


def test_missing_files_are_named_and_never_downloaded(tmp_path, offline):
    written = make_mnist(tmp_path / "d")
    for name in ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]:
        os.remove(tmp_path / "d" / name)
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data(path=tmp_path / "d")
    message = str(info.value)
    assert str(tmp_path / "d") in message
    assert "train-labels-idx1-ubyte[.gz]" in message and "t10k-images-idx3-ubyte[.gz]" in message
    assert "train-images-idx3-ubyte[.gz]" not in message.split("Expected")[0]
    assert offline == [] and len(written) == 4


def test_env_var_missing_files_is_an_error_too(tmp_path, monkeypatch, offline):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LEPTON_NN_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="LEPTON_NN_DATA"):
        mnist.load_data()
    assert offline == []


def test_path_that_is_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load_data(path=tmp_path / "nowhere")


def test_image_and_label_counts_must_agree(tmp_path):
    make_mnist(tmp_path / "d", n_train=3)
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="3 images .* 4 labels"):
        mnist.load_data(path=tmp_path / "d")


def test_images_must_be_28_by_28(tmp_path):
    make_mnist(tmp_path / "d")
    write_idx(tmp_path / "d" / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 27), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\).*\(2, 28, 27\)"):
        mnist.load_data(path=tmp_path / "d")


def test_labels_must_be_digits(tmp_path):
    make_mnist(tmp_path / "d", n_test=2)
    write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", np.array([3, 10], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: expected labels 0..9, found 10"):
        mnist.load_data(path=tmp_path / "d")


@pytest.mark.parametrize("name, array", [
    ("train-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.int16)),
    ("train-labels-idx1-ubyte.gz", np.zeros((3, 1), dtype=np.uint8)),
    ("train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), dtype=np.float32)),
    ("train-images-idx3-ubyte.gz", np.zeros((3, 784), dtype=np.uint8)),
])
def test_pair_dtype_and_shape_are_checked_and_the_file_named(tmp_path, name, array):
    make_mnist(tmp_path / "d", n_train=3)
    write_idx(tmp_path / "d" / name, array)
    with pytest.raises(ValueError, match=f"{name}: expected uint8"):
        mnist.load_data(path=tmp_path / "d")


def test_files_that_are_not_idx_are_named(tmp_path):
    make_mnist(tmp_path / "d")
    (tmp_path / "d" / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte.gz: corrupt gzip"):
        mnist.load_data(path=tmp_path / "d")


# --------------------------------------------------------------------------- images for predict
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_image_with_nan_or_inf_is_refused_naming_the_file(tmp_path, bad):
    image = np.zeros((28, 28))
    image[3, 4] = bad
    np.save(tmp_path / "digit.npy", image)
    with pytest.raises(ValueError) as info:
        images.load_image(tmp_path / "digit.npy")
    assert str(tmp_path / "digit.npy") in str(info.value) and "NaN or infinite" in str(info.value)


def test_finite_float_image_loads(tmp_path):
    np.save(tmp_path / "digit.npy", np.full((28, 28, 1), 0.5, dtype=np.float64))
    assert images.load_image(tmp_path / "digit.npy").dtype == np.float32


def grey_digit():
    """A 28×28 uint8 test card: a ramp, so every grey level that survives a mode is checked."""
    return (np.arange(28 * 28).reshape(28, 28) * 255 // (28 * 28 - 1)).astype(np.uint8)


@pytest.mark.parametrize("name", ["d.png", "d.bmp", "d.tif", "d.gif", "d.webp"])
def test_grey_images_in_lossless_formats_load_exactly(tmp_path, name):
    Image = pytest.importorskip("PIL.Image")
    grey = grey_digit()
    if name.endswith(".webp"):
        Image.fromarray(grey).convert("RGB").save(tmp_path / name, lossless=True)
    else:
        Image.fromarray(grey).save(tmp_path / name)
    image = images.load_image(tmp_path / name)
    assert image.shape == (28, 28, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], grey / np.float32(255))
    np.testing.assert_array_equal(images.load_image(tmp_path / name, invert=True), 1 - image)


def test_jpeg_loads_close_to_its_pixels(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(grey_digit()).save(tmp_path / "d.jpg", quality=95)
    assert np.abs(images.read_image(tmp_path / "d.jpg").astype(int) - grey_digit()).max() <= 6  # JPEG is lossy


def test_colour_modes_become_luma(tmp_path):
    """RGB, palette and CMYK files: L = 0.299 R + 0.587 G + 0.114 B (Pillow rounds it, within 1)."""
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3)).astype(np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    palette = Image.fromarray(rgb).quantize(colors=256)  # mode P: the luma of each pixel's palette colour
    palette.save(tmp_path / "p.png")
    pal_rgb = np.asarray(palette.convert("RGB")) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(images.read_image(tmp_path / "rgb.png") - luma).max() <= 1
    assert np.abs(images.read_image(tmp_path / "cmyk.tif") - luma).max() <= 1
    assert np.abs(images.read_image(tmp_path / "p.png") - pal_rgb).max() <= 1


def test_sixteen_bit_and_bilevel_images_are_scaled_not_clipped(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    deep = (np.arange(28 * 28).reshape(28, 28) * 65535 // (28 * 28 - 1)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # opens in mode I;16
    np.testing.assert_array_equal(images.read_image(tmp_path / "deep.png"), np.round(deep / 257).astype(np.uint8))
    bits = np.indices((28, 28)).sum(axis=0) % 2 == 0
    Image.fromarray(bits).save(tmp_path / "bits.png")  # mode 1
    np.testing.assert_array_equal(images.read_image(tmp_path / "bits.png"), bits * np.uint8(255))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_the_background(tmp_path, mode):
    """Over black (MNIST's background); with invert, over white, the background of a dark digit."""
    Image = pytest.importorskip("PIL.Image")
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:18, 10:18] = (200, 200, 200, 255)  # an opaque light square
    rgba[0, 0] = (90, 90, 90, 128)             # half transparent
    Image.fromarray(rgba).convert(mode).save(tmp_path / "t.png")
    on_black = images.read_image(tmp_path / "t.png")
    assert on_black[12, 12] == 200 and on_black[27, 27] == 0 and abs(int(on_black[0, 0]) - 45) <= 1
    inverted = images.load_image(tmp_path / "t.png", invert=True)[..., 0] * 255
    assert inverted[27, 27] == 0 and abs(inverted[12, 12] - 55) < 0.01 and abs(inverted[0, 0] - (255 - 172)) <= 1


def test_any_size_is_resized_to_28_by_28_keeping_the_ink(tmp_path):
    """A 280×280 drawing: shrunk with anti-aliasing, its mean brightness (the ink) kept; a 14×14 enlarged."""
    Image = pytest.importorskip("PIL.Image")
    big = np.zeros((280, 280), np.uint8)
    big[95:185, 120:165] = 255  # a bar whose edges fall inside output pixels
    Image.fromarray(big).save(tmp_path / "big.png")
    small = images.read_image(tmp_path / "big.png")
    assert small.shape == (28, 28) and small[14, 14] == 255 and small[0, 0] == 0 and small[27, 27] == 0
    edge = small[14, 11:13]
    assert ((edge > 0) & (edge < 255)).any(), "edges should be grey (anti-aliased), not jagged"
    assert abs(small.mean() - big.mean()) < 0.02 * big.mean()
    Image.fromarray(np.full((14, 7), 77, np.uint8)).save(tmp_path / "tiny.png")  # not square: stretched
    np.testing.assert_array_equal(images.read_image(tmp_path / "tiny.png"), np.full((28, 28), 77, np.uint8))


@pytest.mark.parametrize("content", [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "truncated"])
def test_unreadable_images_are_refused_naming_the_file(tmp_path, content):
    Image = pytest.importorskip("PIL.Image")
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "d.png")
        content = (tmp_path / "d.png").read_bytes()[:-60]
    (tmp_path / "d.png").write_bytes(content)
    with pytest.raises(ValueError) as info:
        images.load_image(tmp_path / "d.png")
    assert str(info.value).startswith(f"{tmp_path / 'd.png'}: not an image Pillow can read")


def test_without_pillow_npy_still_loads_and_images_name_the_extra(tmp_path, monkeypatch):
    np.save(tmp_path / "d.npy", np.zeros((28, 28), np.uint8))
    (tmp_path / "d.png").write_bytes(b"\x89PNG")
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert images.load_image(tmp_path / "d.npy").shape == (28, 28, 1)
    with pytest.raises(ImportError, match=r'Pillow, the optional extra "images": pip install -e "\.\[images\]"'):
        images.load_image(tmp_path / "d.png")


# --------------------------------------------------------------------------- download
M1, M2 = "https://mirror-one.test/mnist/", "https://mirror-two.test/mnist/"


@pytest.fixture
def source_files(tmp_path, monkeypatch):
    """Tiny .gz files ({name: bytes}) with their MD5s registered as the published ones."""
    files = make_mnist(tmp_path / "source", label=5)
    monkeypatch.setattr(mnist, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    return files


@pytest.fixture
def served(source_files, monkeypatch):
    """The source files, two fake mirrors, and a fake _fetch serving `responses[url]` (bytes,
    or an exception to raise)."""
    files = source_files
    monkeypatch.setattr(mnist, "MIRRORS", (M1, M2))
    responses, calls = {}, []

    def fetch(url, timeout):
        calls.append(url)
        response = responses.get(url, urllib.error.URLError("no route to host"))
        if isinstance(response, Exception):
            raise response
        return response
    monkeypatch.setattr(mnist, "_fetch", fetch)
    return files, responses, calls


def test_download_from_first_mirror_into_cache(tmp_path, served):
    files, responses, calls = served
    responses.update({M1 + name: data for name, data in files.items()})
    assert labels_of(mnist.load_data()) == {5}
    assert sorted(os.listdir(cache(tmp_path))) == sorted(files)  # and no temporary files
    assert calls == [M1 + name for name in files]
    calls.clear()
    mnist.load_data()  # second time: from the cache
    assert calls == []


def test_fallback_to_second_mirror(tmp_path, served):
    files, responses, calls = served
    responses.update({M2 + name: data for name, data in files.items()})
    assert labels_of(mnist.load_data()) == {5}
    assert calls[:2] == [M1 + "train-images-idx3-ubyte.gz", M2 + "train-images-idx3-ubyte.gz"]


def test_md5_mismatch_is_rejected_and_next_mirror_tried(tmp_path, served):
    files, responses, calls = served
    for name, data in files.items():
        responses[M1 + name] = data + b"tampered"
        responses[M2 + name] = data
    assert labels_of(mnist.load_data()) == {5}
    for name, data in files.items():
        assert (cache(tmp_path) / name).read_bytes() == data


def test_md5_mismatch_everywhere_fails(tmp_path, served):
    files, responses, calls = served
    for name, data in files.items():
        responses[M1 + name] = responses[M2 + name] = data[:-1]
    with pytest.raises(mnist.DownloadError) as info:
        mnist.load_data()
    assert "MD5 mismatch" in str(info.value) and mnist.MD5["train-images-idx3-ubyte.gz"] in str(info.value)
    assert not cache(tmp_path).exists() or os.listdir(cache(tmp_path)) == []


def test_only_missing_files_are_downloaded(tmp_path, served):
    files, responses, calls = served
    responses.update({M1 + name: data for name, data in files.items()})
    cache(tmp_path).mkdir(parents=True)
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]:
        (cache(tmp_path) / name).write_bytes(files[name])
    mnist.load_data()
    assert calls == [M1 + "t10k-images-idx3-ubyte.gz", M1 + "t10k-labels-idx1-ubyte.gz"]


def test_offline_message_says_how_to_use_local_files(tmp_path, served):
    files, responses, calls = served  # no responses: every mirror fails
    with pytest.raises(mnist.DownloadError) as info:
        mnist.load_data()
    message = str(info.value)
    assert "download failed" in message
    assert M1 + "train-images-idx3-ubyte.gz" in message and M2 + "train-images-idx3-ubyte.gz" in message
    assert "no route to host" in message
    assert "load_data(path=DIR)" in message and "LEPTON_NN_DATA=DIR" in message
    assert "lepton-nn train --data DIR" in message
    assert isinstance(info.value, OSError)


# Real HTTP, through the real _fetch, to servers on 127.0.0.1 started here.
@pytest.fixture
def local_http(monkeypatch):
    """Use the real _fetch and bypass any proxy, so requests reach 127.0.0.1."""
    monkeypatch.setattr(mnist, "_fetch", REAL_FETCH)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def silent_server():
    """A server that accepts connections (the kernel's backlog does) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def http_server(source_files):
    """Serves /good/NAME (the right bytes), /bad/NAME (wrong bytes), /cut/NAME (a body cut short)."""
    files = source_files

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            kind, name = self.path.strip("/").split("/")
            body = files[name] if kind == "good" else b"<html>gateway error</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (1000 if kind == "cut" else 0)))
            self.end_headers()
            self.wfile.write(body)  # for "cut": the connection then closes 1000 bytes early

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unanswering_mirrors_fail_within_the_deadline(monkeypatch, local_http, silent_server):
    monkeypatch.setattr(mnist, "MIRRORS", (silent_server + "/one/", silent_server + "/two/"))
    monkeypatch.setattr(mnist, "DOWNLOAD_DEADLINE", 1.0)
    start = time.monotonic()
    with pytest.raises(mnist.DownloadError) as info:
        mnist.load_data()
    assert time.monotonic() - start < 1.0 + 2.0
    message = str(info.value)
    assert "deadline of 1 s" in message and "TimeoutError" in message
    assert silent_server + "/one/train-images-idx3-ubyte.gz" in message      # tried, timed out
    assert silent_server + "/two/train-images-idx3-ubyte.gz: not tried" in message
    for name, md5 in mnist.MD5.items():                                     # how to do it by hand
        assert name in message and md5 in message
    assert "--data DIR" in message


def test_deadline_from_the_environment(monkeypatch, local_http, silent_server):
    monkeypatch.setattr(mnist, "MIRRORS", (silent_server + "/",))
    monkeypatch.setenv("LEPTON_NN_DOWNLOAD_DEADLINE", "0.3")
    start = time.monotonic()
    with pytest.raises(mnist.DownloadError, match="deadline of 0.3 s"):
        mnist.load_data()
    assert time.monotonic() - start < 0.3 + 2.0
    for bad in ["0", "-1", "soon", "nan", "inf"]:
        monkeypatch.setenv("LEPTON_NN_DOWNLOAD_DEADLINE", bad)
        with pytest.raises(ValueError, match=f"LEPTON_NN_DOWNLOAD_DEADLINE: expected .* > 0, found '{bad}'"):
            mnist.load_data()


def test_wrong_and_truncated_bodies_are_rejected(tmp_path, monkeypatch, local_http, http_server):
    monkeypatch.setattr(mnist, "MIRRORS", (http_server + "/cut/", http_server + "/bad/"))
    monkeypatch.setattr(mnist, "DOWNLOAD_DEADLINE", 10.0)
    start = time.monotonic()
    with pytest.raises(mnist.DownloadError) as info:
        mnist.load_data()
    assert time.monotonic() - start < 10.0
    message = str(info.value)
    assert http_server + "/cut/train-images-idx3-ubyte.gz: IncompleteRead" in message
    assert http_server + "/bad/train-images-idx3-ubyte.gz: MD5 mismatch" in message
    assert os.listdir(cache(tmp_path)) == []  # nothing bad was kept


def test_download_over_http_then_from_cache(tmp_path, monkeypatch, local_http, http_server):
    monkeypatch.setattr(mnist, "MIRRORS", (http_server + "/bad/", http_server + "/good/"))
    assert labels_of(mnist.load_data()) == {5}
    assert len(os.listdir(cache(tmp_path))) == 4


def test_real_mirrors_and_checksums_are_the_published_ones():
    assert mnist.MIRRORS == ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                             "https://storage.googleapis.com/cvdf-datasets/mnist/")
    assert mnist.MD5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert mnist.MD5["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"


# --------------------------------------------------------------------------- the real data set
def test_real_mnist():
    directory = os.environ.get("LEPTON_NN_MNIST_DIR")
    if not directory:
        pytest.skip("set LEPTON_NN_MNIST_DIR to a directory holding the four MNIST files")
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=directory)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
