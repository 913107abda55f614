"""The .lnn model file: model.save(path) writes it, keras.models.load_model(path) reads it.

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

from lepton_nn import optim
from lepton_nn.fileio import atomic_write

FORMAT = "lepton_nn model"
VERSION = 1
HEADER = "lepton_nn.json"
_OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW)}


class ModelFileError(ValueError):
    """A .lnn file is missing, not a lepton_nn model, truncated, corrupt or inconsistent."""


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _compile_config(model, include_optimizer):
    """(compile config or None, optimizer state entries or None, {member: array})."""
    if not model.compiled:
        return None, None, {}
    from lepton_nn.keras import losses
    loss = losses.serialize(model.loss)
    if loss is None:
        return None, None, {}
    opt = model._bound_optimizer()
    opt_config = None
    if type(opt).__name__ in _OPTIMIZERS:
        opt_config = {"class_name": type(opt).__name__, "hyper": opt.state_dict()["hyper"]}
    metrics = [name for name, fn in model._metrics if isinstance(name, str) and _is_named_metric(name, fn)]
    compile_config = {"optimizer": opt_config, "loss": loss, "metrics": metrics,
                      "fuse_softmax_cross_entropy": model.fuse_softmax_cross_entropy}
    if not include_optimizer or opt_config is None:
        return compile_config, None, {}
    state, members = [], {}
    for i, param_state in enumerate(opt.state_dict()["state"]):
        entry = {}
        for key, value in param_state.items():
            if isinstance(value, np.ndarray):
                member = f"optimizer/{i:03d}.{key}.npy"
                members[member] = value
                entry[key] = member
            else:
                entry[key] = value
        state.append(entry)
    return compile_config, state, members


def _is_named_metric(name, fn):
    from lepton_nn import metrics
    from lepton_nn.keras.models import _METRIC_ALIASES
    return metrics.METRICS.get(_METRIC_ALIASES.get(name, name)) is fn


def save_model(model, filepath, include_optimizer=True):
    path = Path(filepath)
    if not model.built:
        raise ValueError(f"save {path}: the model is not built yet (no input shape); build or fit it first")
    weights, members = [], {}
    for layer in model.layers:
        for name, p in layer.named_weights():
            member = f"weights/{len(weights):03d}.npy"
            weights.append({"name": f"{layer.name}/{name}", "shape": list(p.shape), "dtype": p.dtype.name,
                            "file": member})
            members[member] = p.data
    compile_config, opt_state, opt_members = _compile_config(model, include_optimizer)
    members.update(opt_members)
    config = {"model": model.get_config(), "compile": compile_config, "weights": weights,
              "optimizer_state": opt_state}
    header = {"format": FORMAT, "version": VERSION, "lepton_nn_version": _library_version()}

    with atomic_write(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(HEADER, json.dumps(header))
        archive.writestr("config.json", json.dumps(config, indent=1))
        for member, array in members.items():
            archive.writestr(member, _npy_bytes(array))


def _library_version():
    import lepton_nn
    return lepton_nn.__version__


def _read_npy(archive, member):
    return np.lib.format.read_array(io.BytesIO(archive.read(member)), allow_pickle=False)


def load_model(filepath, compile=True):
    """Rebuild the model saved at filepath: architecture, weights, and (compile=True) its
    compile settings and optimizer state. Raises ModelFileError naming the path on any problem."""
    path = Path(filepath)

    def fail(message):
        raise ModelFileError(f"{path}: {message}")

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
            arrays = [_read_npy(archive, entry["file"]) for entry in config["weights"]]
            opt_state = None
            if compile and config.get("optimizer_state") is not None:
                opt_state = [{k: (_read_npy(archive, v) if isinstance(v, str) else v) for k, v in entry.items()}
                             for entry in config["optimizer_state"]]
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, EOFError, OSError, zlib.error) as err:
            fail(f"truncated or corrupt model file ({type(err).__name__}: {err})")

    from lepton_nn.keras.models import Sequential
    try:
        model = Sequential.from_config(config["model"])
    except (KeyError, TypeError, ValueError) as err:
        fail(f"invalid architecture in config.json ({type(err).__name__}: {err})")
    expected = [(f"{layer.name}/{name}", p) for layer in model.layers for name, p in layer.named_weights()]
    if len(expected) != len(arrays):
        fail(f"the architecture has {len(expected)} weights but the file holds {len(arrays)}")
    for (name, p), entry, array in zip(expected, config["weights"], arrays):
        if array.shape != p.shape or tuple(entry["shape"]) != p.shape:
            fail(f"weight {entry['name']} has shape {array.shape} but the architecture implies {p.shape} for {name}")
        if array.dtype != p.dtype:
            fail(f"weight {entry['name']} has dtype {array.dtype}, the architecture says {p.dtype}")
    for (_, p), array in zip(expected, arrays):
        np.copyto(p.data, array)

    compile_config = config.get("compile")
    if compile and compile_config is not None:
        from lepton_nn.keras import losses
        opt_config = compile_config.get("optimizer")
        if opt_config is not None and opt_config["class_name"] in _OPTIMIZERS:
            optimizer = _OPTIMIZERS[opt_config["class_name"]](model.weights, **opt_config["hyper"])
        else:
            optimizer = "adam"
        model.compile(optimizer=optimizer, loss=losses.deserialize(compile_config["loss"]),
                      metrics=compile_config.get("metrics") or None,
                      fuse_softmax_cross_entropy=compile_config.get("fuse_softmax_cross_entropy", True))
        if opt_state is not None and isinstance(optimizer, optim.Optimizer):
            try:
                optimizer.load_state_dict({"state": opt_state})
            except ValueError as err:
                fail(f"optimizer state does not fit the weights ({err})")
    return model
