"""The .lnn model file format: a config and named arrays ↔ bytes on disk. Nothing here knows
what a model is: keras/models.py turns a model into a config and arrays (model.save) and back
(keras.models.load_model), and checks that the arrays fit the architecture.

Format, version 1: a ZIP archive (members stored uncompressed) holding

    lepton_nn.json         the header, always the first member:
                           {"format": "lepton_nn model", "version": 1, "lepton_nn_version": "0.1.0"}
    config.json            {"model":   Sequential.get_config(): name, input_shape (no batch axis) and,
                                       per layer, {"class_name": "Conv2D", "config": constructor args},
                            "compile": {"optimizer": {"class_name": "Adam", "hyper": {lr, betas, ...}},
                                        "loss": {"class_name": ..., "config": {...}}, "metrics": [names],
                                        "fuse_softmax_cross_entropy": true}   or null,
                            "weights": [{"name": "conv2d/kernel", "shape": [32, 1, 3, 3],
                                         "dtype": "float32", "file": "weights/000.npy"}, ...],
                            "optimizer_state": [{"step": 938, "m": "optimizer/000.m.npy", ...}] or null}
    weights/000.npy ...    each weight as a NumPy .npy file, in model.weights order (layer by layer,
                           kernel then bias), in lepton_nn's layout (see keras/layers.py)
    optimizer/000.m.npy    the optimizer's per-weight arrays, when include_optimizer=True

Look inside with `unzip -l model.lnn` and `unzip -p model.lnn config.json`.

Writing is atomic: the archive goes to a temporary file in the destination's directory, is
flushed to disk, then renamed over the destination (os.replace), so a crash never leaves a
half-written model under the real name.

Reading validates before building anything it returns: the file exists and is a ZIP archive
(else: foreign file), the archive is complete (ZIP's directory sits at the end, so a truncated
file has none) and every member passes its CRC-32 check (corrupt bytes), the header names this
format and a version this code reads, and every weight has exactly the shape the architecture
implies. Any failure raises ModelFileError (a ValueError) naming the path.

A custom loss, metric function or activation cannot be saved: a custom activation makes save
fail; a custom loss saves the model uncompiled, and custom metrics are left out.
"""
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lepton_nn.fileio import atomic_write

FORMAT = "lepton_nn model"
VERSION = 1
HEADER = "lepton_nn.json"


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

    if not path.exists():
        fail("no such file")
    if not path.is_file():
        fail("not a file")
    if path.stat().st_size == 0:
        fail("empty file (0 bytes), not a lepton_nn model")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            fail("truncated or corrupt model file (the ZIP directory at its end is missing or damaged)")
        fail("not a lepton_nn model file (a .lnn file is a ZIP archive; this file is not one)")
    with archive:
        try:
            if HEADER not in archive.namelist():
                fail(f"not a lepton_nn model file (a ZIP archive without the {HEADER} header)")
            header = json.loads(archive.read(HEADER))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                fail(f"not a lepton_nn model file (header format {header.get('format') if isinstance(header, dict) else header!r})")
            if header.get("version") != VERSION:
                fail(f"model file format version {header.get('version')!r}; this lepton_nn reads version {VERSION}")
            config = json.loads(archive.read("config.json"))
            arrays = {member: np.lib.format.read_array(io.BytesIO(archive.read(member)), allow_pickle=False)
                      for member in archive.namelist() if member.endswith(".npy")}
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, EOFError, OSError, zlib.error) as err:
            fail(f"truncated or corrupt model file ({type(err).__name__}: {err})")
    return config, arrays
