"""The .lnn model file format: a config and named arrays ↔ bytes on disk. Nothing here knows
what a model is: keras/models.py turns a model into a config and arrays (model.save) and back
(keras.models.load_model), and checks that the arrays fit the architecture.

Format, version 1: a ZIP archive (members stored uncompressed) holding

    lepton_nn.json         the header, always the first member:
                           {"format": "lepton_nn model", "version": 1, "lepton_nn_version": "0.1.0"}
    config.json            {"model_class": "Sequential" or "Functional" (absent in older files: Sequential),
                            "model":   model.get_config(): name, trainable and, per layer,
                                       {"class_name": "Conv2D", "config": constructor args} (a nested
                                       model's config is its get_config()); a Sequential's
                                       input_shape (no batch axis); a functional model's graph:
                                       "inputs" (the InputLayers' names), "nodes" (each call, in
                                       running order: {"layer": name, "args": [tensor references],
                                       "kwargs": {"training": false, ...}}), "outputs", where a
                                       tensor reference is {"input": i} or {"node": k, "output": j}
                                       of an earlier node k, so the graph has no cycle,
                            "compile": {"optimizer": {"class_name": "Adam", "hyper": {lr, betas, ...}},
                                        "loss": {"class_name": ..., "config": {...}}, "metrics": [names],
                                        "fuse_softmax_cross_entropy": true}   or null,
                            "weights": [{"name": "conv2d/kernel", "shape": [32, 1, 3, 3],
                                         "dtype": "float32", "file": "weights/000.npy"}, ...],
                            "optimizer_state": [{"step": 938, "m": "optimizer/000.m.npy", ...}] or null}
    weights/000.npy ...    each weight as a NumPy .npy file, in model.weights order (layer by layer,
                           kernel then bias; non-trainable ones such as moving statistics too, a
                           nested model's as 'base/dense/kernel'), in lepton_nn's layout (keras/layers.py)
    optimizer/000.m.npy    the optimizer's per-weight arrays, when include_optimizer=True

Look inside with `unzip -l model.lnn` and `unzip -p model.lnn config.json`.

Writing is atomic: the archive goes to a temporary file in the destination's directory, is
flushed to disk, then renamed over the destination (os.replace), so a crash never leaves a
half-written model under the real name.

What reading checks. Any file model.save did not write raises ModelFileError (a ValueError)
naming the path and what is wrong, and never another exception: every exception zipfile, json
and NumPy's .npy reader raise is caught at the one boundary in read() and converted. Nothing
larger than the file is allocated before the checks pass. In order:

- the bytes (read): the file exists and is a ZIP archive (else: foreign file), complete (ZIP's
  directory sits at the end, so a truncated file has none); its directory, read without reading
  any member, lists no directory, duplicate, encrypted or compressed member and only the names
  above, and the members' sizes add up to no more than the file; the header names this format
  and a version this code reads; each member passes its CRC-32 check (corrupt bytes); the JSON
  members are JSON objects; each .npy header declares a shape and dtype (no objects) whose bytes
  are exactly the bytes that follow it;
- the model (keras.models.load_model): every layer's, the loss's and the optimizer's arguments
  fit their constructor's signature and pass the same checks as in Python code (Dense(0),
  Dropout(1.5), an unknown class are refused); models nest at most 16 deep; a functional
  graph's references point at its inputs or earlier calls, and every listed layer is called;
  the weight shapes the architecture implies, computed without building anything, are the
  file's; the optimizer state is what lepton_nn.optim keeps, one entry per weight, of the
  weights' shapes and dtypes.

A custom loss, metric function or activation cannot be saved: a custom activation makes save
fail; a custom loss saves the model uncompiled, and custom metrics are left out.
"""
import io
import json
import math
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lepton_nn.fileio import atomic_write

FORMAT = "lepton_nn model"
VERSION = 1
HEADER = "lepton_nn.json"
MEMBER_NAMES = re.compile(r"lepton_nn\.json|config\.json|(weights|optimizer)/[\w.]+\.npy")
# What zipfile, json and NumPy's .npy reader raise on bad bytes. RuntimeError covers an encrypted
# member, NotImplementedError (an unknown compression or ZIP version) and RecursionError (JSON
# nested too deep); UnicodeDecodeError and json's errors are ValueErrors.
_BAD_BYTES = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError, KeyError,
              TypeError, IndexError, OverflowError, struct.error, zlib.error)


class ModelFileError(ValueError):
    """A .lnn file is missing, not a lepton_nn model, truncated, corrupt or inconsistent."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write(filepath, config, arrays, library_version):
    """Write `config` (JSON-able) and `arrays` ({member name ending .npy: array}) to one .lnn
    file, atomically (see the module docstring)."""
    header = {"format": FORMAT, "version": VERSION, "lepton_nn_version": library_version}
    with atomic_write(Path(filepath)) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(HEADER, json.dumps(header))
        archive.writestr("config.json", json.dumps(config, indent=1))
        for member, array in arrays.items():
            archive.writestr(member, _npy_bytes(array))


def read(filepath):
    """(config, {member: array}) of a .lnn file, every byte checked (see the module docstring).
    Raises ModelFileError naming the path on any problem."""
    path = Path(filepath)

    def fail(message):
        raise ModelFileError(path, message)

    try:
        if not path.exists():
            fail("no such file")
        if not path.is_file():
            fail("not a file")
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:  # e.g. no permission to read it
        fail(f"cannot read the file ({type(err).__name__}: {err.strerror or err})")
    if size == 0:
        fail("empty file (0 bytes), not a lepton_nn model")
    if magic != b"PK\x03\x04":
        fail("not a lepton_nn model file (a .lnn file is a ZIP archive; this file is not one)")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_directory(archive.infolist(), size, fail)
            header = _json(archive, HEADER, fail)
            if header.get("format") != FORMAT:
                fail(f"not a lepton_nn model file (header format {header.get('format')!r})")
            if header.get("version") != VERSION:
                fail(f"model file format version {header.get('version')!r}; this lepton_nn reads version {VERSION}")
            config = _json(archive, "config.json", fail)
            arrays = {member: _npy(archive.read(member), member, fail)
                      for member in archive.namelist() if member.endswith(".npy")}
    except ModelFileError:
        raise
    except _BAD_BYTES as err:
        fail(f"truncated or corrupt model file ({type(err).__name__}: {err})")
    return config, arrays


def _check_directory(infos, file_size, fail):
    """Check the ZIP directory (names, sizes, flags) before reading any member: what model.save
    writes, and nothing that could expand beyond the file (a compressed member) when read."""
    names = {info.filename for info in infos}
    if HEADER not in names:
        fail(f"not a lepton_nn model file (a ZIP archive without the {HEADER} header)")
    if len(names) != len(infos):
        fail("a member name appears more than once")
    for info in infos:
        name = info.filename
        if info.is_dir() or not MEMBER_NAMES.fullmatch(name):
            fail(f"unexpected member {name!r} (a model file holds {HEADER}, config.json and .npy arrays)")
        if info.flag_bits & 0x1:
            fail(f"member {name!r} is encrypted; lepton_nn writes no encrypted members")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            fail(f"member {name!r} is compressed (method {info.compress_type}); lepton_nn stores members "
                 f"uncompressed")
    if "config.json" not in names:
        fail("config.json is missing")
    if sum(info.file_size for info in infos) > file_size:
        fail(f"the members declare {sum(info.file_size for info in infos):,} bytes, more than the file's {file_size:,}")


def _json(archive, member, fail):
    value = json.loads(archive.read(member))
    if not isinstance(value, dict):
        fail(f"{member} must hold a JSON object, got {type(value).__name__}")
    return value


def _npy(data, member, fail):
    """The array of a .npy member, once its header's shape and dtype account for its bytes exactly."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        fail(f"{member}: .npy format version {version} (lepton_nn writes 1.0)")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        fail(f"{member}: holds Python objects (dtype {dtype}); a model file holds numbers")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data) - f.tell():
        fail(f"{member}: its header declares {dtype} {shape}, {expected:,} bytes, but it holds "
             f"{len(data) - f.tell():,}")
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
