"""Read and write IDX files, the format MNIST is published in.

Layout (every multi-byte number is big-endian):

    offset 0   0x00 0x00          two zero bytes
    offset 2   dtype code         0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                  0x0D float32, 0x0E float64
    offset 3   ndim               number of dimensions, 1 to 32
    offset 4   ndim × uint32      the size of each dimension
    then       prod(dims) × itemsize bytes of data, row-major (C order)

So the file length is exactly 4 + 4·ndim + prod(dims)·itemsize; anything shorter is a
truncated file and anything longer has trailing garbage. Both are errors here, because a
silently short or padded data set is worse than a loud failure. The header is checked in full
before any array is made, with Python ints (a header may claim 2³²−1 × 2³²−1 × … elements, which
would overflow NumPy's int64), so every malformed input raises IdxFormatError naming the file.

MNIST's image files are uint8 with ndim 3 (magic 0x00000803 = 2051), the label files uint8
with ndim 1 (magic 0x00000801 = 2049). Files whose name ends in `.gz`, or whose content starts
with the gzip signature 0x1F 0x8B, are decompressed first.
"""
import gzip
import math
import os
import struct
import zlib

import numpy as np

from lepton_nn.fileio import atomic_write

# dtype code → big-endian NumPy dtype, as the IDX format defines them.
DTYPE_CODES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_SIGNATURE = b"\x1f\x8b"
MAX_NDIM = 32  # NumPy 1.x's limit (2.x allows 64); no real data set comes near it


class IdxFormatError(ValueError):
    """An IDX file is malformed: bad magic, unknown dtype, wrong length or corrupt gzip."""


def read_idx(path):
    """Read an IDX file (plain or gzip-compressed) into a NumPy array in native byte order.

    path: str or os.PathLike. Returns a writable array of shape `dims` whose dtype follows the
    dtype code (uint8 for MNIST). Raises IdxFormatError, naming the file and what was expected
    versus found, when the file is not a well-formed IDX file; FileNotFoundError when missing.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz") or raw.startswith(_GZIP_SIGNATURE):
        raw = _gunzip(raw, path)
    return parse_idx(raw, source=path)


def _gunzip(raw, path):
    try:
        return gzip.decompress(raw)
    # BadGzipFile (an OSError) for a bad header, EOFError for a cut-off stream,
    # zlib.error for damaged deflate data.
    except (OSError, EOFError, zlib.error) as e:
        raise IdxFormatError(
            f"{path}: corrupt gzip stream ({type(e).__name__}: {e}); expected a valid gzip "
            f"file holding IDX data. Delete the file and download it again.") from e


def parse_idx(data, source="<bytes>"):
    """Parse the bytes of an (uncompressed) IDX file; `source` names it in error messages."""
    data = memoryview(data)
    if len(data) < 4:
        raise IdxFormatError(
            f"{source}: truncated header: expected at least 4 bytes of magic number, "
            f"found {len(data)} bytes")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(
            f"{source}: bad magic number: expected the first two bytes to be 0x00 0x00, "
            f"found 0x{zero0:02X} 0x{zero1:02X} (is this an IDX file?)")
    if code not in DTYPE_CODES:
        known = ", ".join(f"0x{c:02X} {d.name}" for c, d in DTYPE_CODES.items())
        raise IdxFormatError(
            f"{source}: unknown dtype code 0x{code:02X} in the magic number; "
            f"expected one of {known}")
    if not 1 <= ndim <= MAX_NDIM:
        raise IdxFormatError(f"{source}: bad magic number: expected 1 <= ndim <= {MAX_NDIM}, found ndim {ndim}")

    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{source}: truncated header: expected {header} bytes for {ndim} dimensions, "
            f"found {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPE_CODES[code]
    shape = "x".join(map(str, dims))
    # NumPy refuses a shape whose non-zero dims multiply past its index type, even with a zero dim.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise IdxFormatError(f"{source}: dimensions {shape} of {dtype.name} are too large for an array "
                             f"(more than {np.iinfo(np.intp).max} bytes)")
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(data) != expected:
        what = "truncated file" if len(data) < expected else "trailing bytes after the data"
        raise IdxFormatError(
            f"{source}: {what}: expected {expected} bytes ({header}-byte header + "
            f"{shape} {dtype.name} values of {dtype.itemsize} byte(s)), found {len(data)} bytes")
    # .astype copies into native byte order, so the result is writable and independent of `data`.
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write `array` as an IDX file; gzip-compressed when `path` ends in `.gz`.

    The dtype must be one the format knows (uint8, int8, int16, int32, float32, float64) and
    the array must have at least one dimension. The write is atomic: the bytes go to a
    temporary file in the same directory, which then replaces `path` in one step, so a reader
    never sees a half-written file.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {d.newbyteorder("="): c for c, d in DTYPE_CODES.items()}
    if array.dtype not in codes:
        raise ValueError(f"write_idx: cannot store dtype {array.dtype} in IDX; expected one of "
                         f"{', '.join(d.name for d in DTYPE_CODES.values())}")
    if not 1 <= array.ndim <= MAX_NDIM:
        raise ValueError(f"write_idx: read_idx takes 1 to {MAX_NDIM} dimensions, got shape {array.shape}")
    if any(n >= 2 ** 32 for n in array.shape):
        raise ValueError(f"write_idx: every dimension must fit in uint32, got shape {array.shape}")
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=DTYPE_CODES[code]).tobytes()
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: identical input gives identical bytes
    with atomic_write(path) as f:
        f.write(data)
