"""Model files as a class: anything model.save did not write makes load_model raise the one
documented error, saving.ModelFileError naming the file, before anything large is allocated,
and never another exception. Damaged bytes (every byte flipped, random damage), hand-built
archives (unknown classes, bad arguments, wrong shapes, hostile sizes) and the file mode kept
by saving over a file."""
import io
import json
import os
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lepton_nn as ln
from lepton_nn import keras
from lepton_nn.keras import layers
from lepton_nn.keras.saving import ModelFileError

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiny_model():
    """A compiled model with Adam state, in a file of about 3 KB: every member kind is there."""
    ln.seed(0)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.random.default_rng(0).random((4, 3)), np.array([0, 1, 1, 0]), verbose=0)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model_files")
    model = tiny_model()
    model.save(directory / "tiny.lnn")
    return model, (directory / "tiny.lnn").read_bytes(), directory


def same_model(a, b):
    """Same architecture, weights, compile settings and optimizer state."""
    return (a.get_config() == b.get_config() and a.metrics_names == b.metrics_names
            and all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
            and all(s.keys() == t.keys() and all(np.array_equal(s[k], t[k]) for k in s)
                    for s, t in zip(a._optim.state, b._optim.state)))


def loads_same_or_refuses(path, original):
    """load_model(path) gives a model identical to `original` or raises ModelFileError naming path."""
    try:
        loaded = keras.models.load_model(path)
    except ModelFileError as err:
        assert str(path) in str(err)
        return "refused"
    assert same_model(loaded, original)
    return "loaded"


# --------------------------------------------------------------------------- damaged bytes
def test_every_byte_flipped_loads_the_same_model_or_raises_model_file_error(saved):
    model, data, directory = saved
    path, outcomes = directory / "flipped.lnn", []
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        outcomes.append(loads_same_or_refuses(path, model))
    assert outcomes.count("refused") > len(data) // 2  # most bytes matter: CRCs, sizes, headers


@fuzz
@given(data=st.data())
def test_random_damage_loads_the_same_model_or_raises_model_file_error(saved, data):
    model, original, directory = saved
    damaged = bytearray(original)
    position = data.draw(st.integers(0, len(original) - 1))
    kind = data.draw(st.sampled_from(["xor", "truncate", "insert", "overwrite"]))
    if kind == "xor":
        damaged[position] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del damaged[position:]
    elif kind == "insert":
        damaged[position:position] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        damaged[position:position + len(chunk)] = chunk
    path = directory / "damaged.lnn"
    path.write_bytes(bytes(damaged))
    loads_same_or_refuses(path, model)


# --------------------------------------------------------------------------- hand-built archives
def members_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def archive(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as out:
        for name, content in members.items():
            out.writestr(name, content)
    return path


def with_config(data, change):
    """The file's members with change(config) applied to config.json."""
    members = members_of(data)
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    return members


def npy(array_or_header):
    buffer = io.BytesIO()
    if isinstance(array_or_header, dict):
        np.lib.format.write_array_header_1_0(buffer, array_or_header)
    else:
        np.lib.format.write_array(buffer, array_or_header, allow_pickle=True)
    return buffer.getvalue()


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(config):
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value
    return change


def deleter(*keys):
    def change(config):
        for key in keys[:-1]:
            config = config[key]
        del config[keys[-1]]
    return change


DENSE = ("model", "layers", 0, "config")
CONFIG_CASES = {
    "unknown layer class": (setter("model", "layers", 0, "class_name", "Dense3D"), "unknown layer class 'Dense3D'"),
    "layer class not a string": (setter("model", "layers", 0, "class_name", ["Dense"]), "unknown layer class"),
    "extra layer argument": (setter(*DENSE, "units_per_group", 2), "layer Dense: unexpected argument units_per_group"),
    "missing layer argument": (deleter(*DENSE, "units"), "layer Dense: missing required argument units"),
    "units a string": (setter(*DENSE, "units", "2"), "units must be a positive int, got '2'"),
    "units 0": (setter(*DENSE, "units", 0), "units must be a positive int, got 0"),
    "units a float": (setter(*DENSE, "units", 2.5), "units must be a positive int, got 2.5"),
    "units 10**13": (setter(*DENSE, "units", 10 ** 13), r"implies \(10000000000000, 3\)"),
    "use_bias a string": (setter(*DENSE, "use_bias", "false"), "use_bias must be True or False"),
    "unknown activation": (setter(*DENSE, "activation", "swish"), "unknown activation 'swish'"),
    "integer dtype": (setter(*DENSE, "dtype", "int64"), "dtype must be float32 or float64"),
    "layer config a list": (setter("model", "layers", 0, "config", [2]), "arguments must be a dict"),
    "layers not a list": (setter("model", "layers", {"a": 1}), "list of 'layers'"),
    "input shape with 0": (setter("model", "input_shape", [0]), r"input_shape \(0,\) must be a positive int"),
    "input shape negative": (setter("model", "input_shape", [-3]), "must be a positive int, got -3"),
    "input shape 10**9 wide": (setter("model", "input_shape", [10 ** 9]), r"implies \(2, 1000000000\)"),
    "model not a dict": (setter("model", [1, 2]), "'model' must be a dict"),
    "weights missing": (deleter("weights"), "'weights' is missing"),
    "one weight too few": (lambda c: c["weights"].pop(), "the architecture has 2 weights but the file holds 1"),
    "weight file missing": (setter("weights", 0, "file", "weights/999.npy"), "not in the archive"),
    "weight shape declared wrong": (setter("weights", 0, "shape", [3, 2]), r"declares shape \[3, 2\]"),
    "unknown loss class": (setter("compile", "loss", "class_name", "Hinge"), "unknown loss class 'Hinge'"),
    "extra loss argument": (setter("compile", "loss", "config", "label_smoothing", 0.1),
                            "loss SparseCategoricalCrossentropy: unexpected argument label_smoothing"),
    "from_logits a string": (setter("compile", "loss", "config", "from_logits", "yes"), "from_logits must be True"),
    "unknown optimizer class": (setter("compile", "optimizer", "class_name", "RMSprop"), "unknown optimizer class"),
    "extra optimizer argument": (setter("compile", "optimizer", "hyper", "amsgrad", True),
                                 "optimizer Adam: unexpected argument amsgrad"),
    "learning rate a string": (setter("compile", "optimizer", "hyper", "lr", "0.1"), "lr must be a finite number"),
    "learning rate NaN": (setter("compile", "optimizer", "hyper", "lr", float("nan")), "lr must be a finite number"),
    "betas of one": (setter("compile", "optimizer", "hyper", "betas", [0.9]), "betas must be a pair"),
    "metrics a string": (setter("compile", "metrics", "accuracy"), "metrics must be a list"),
    "unknown metric": (setter("compile", "metrics", ["auc"]), "unknown metric 'auc'"),
    "fuse flag a number": (setter("compile", "fuse_softmax_cross_entropy", 1), "must be True or False"),
    "optimizer state one entry": (lambda c: c["optimizer_state"].pop(), "one entry per weight"),
    "optimizer state key missing": (deleter("optimizer_state", 0, "v"), "must be empty or hold"),
    "optimizer step a string": (setter("optimizer_state", 0, "step", "1"), "step must be a positive int"),
    "optimizer array of another weight": (setter("optimizer_state", 0, "m", "optimizer/001.m.npy"),
                                          r"has shape \(2,\) but the architecture implies \(2, 3\)"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_config_model_save_never_writes_is_refused_by_name(saved, tmp_path, case):
    _, data, _ = saved
    change, message = CONFIG_CASES[case]
    path = archive(tmp_path / "hand.lnn", with_config(data, change))
    with pytest.raises(ModelFileError, match=message) as err:
        keras.models.load_model(path)
    assert str(path) in str(err.value)


def replaced(data, name, content):
    return {**members_of(data), name: content}


KERNEL = "weights/000.npy"
ARCHIVE_CASES = {
    "config.json a list": (lambda d: replaced(d, "config.json", b"[1, 2]"), "config.json must hold a JSON object"),
    "header a string": (lambda d: replaced(d, "lepton_nn.json", b'"lepton_nn model"'),
                        "lepton_nn.json must hold a JSON object"),
    "config.json nested 100000 deep": (lambda d: replaced(d, "config.json", b"[" * 100_000), "RecursionError"),
    "config.json not JSON": (lambda d: replaced(d, "config.json", b"\xff\xfe\xfa"), "truncated or corrupt"),
    "a directory member": (lambda d: replaced(d, "weights/", b""), "unexpected member 'weights/'"),
    "a foreign member": (lambda d: replaced(d, "README.txt", b"hi"), "unexpected member 'README.txt'"),
    "no config.json": (lambda d: {k: v for k, v in members_of(d).items() if k != "config.json"},
                       "config.json is missing"),
    "an npy header of 10**13 rows": (lambda d: replaced(d, KERNEL, npy(
        {"descr": "<f4", "fortran_order": False, "shape": (10 ** 13, 3)})),
        "120,000,000,000,000 bytes, but it holds 0"),
    "an npy of Python objects": (lambda d: replaced(d, KERNEL, npy(np.array([{}, None], dtype=object))),
                                 "holds Python objects"),
    "an npy of the wrong dtype": (lambda d: replaced(d, KERNEL, npy(np.zeros((2, 3), np.float64))),
                                  "has dtype float64, the architecture says float32"),
    "an npy of the wrong shape": (lambda d: replaced(d, KERNEL, npy(np.zeros((3, 2), np.float32))),
                                  r"has shape \(3, 2\) but the architecture implies \(2, 3\)"),
    "not an npy": (lambda d: replaced(d, KERNEL, b"not numpy"), "truncated or corrupt"),
}


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_an_archive_model_save_never_writes_is_refused_by_name(saved, tmp_path, case):
    _, data, _ = saved
    make, message = ARCHIVE_CASES[case]
    path = archive(tmp_path / "hand.lnn", make(data))
    with pytest.raises(ModelFileError, match=message) as err:
        keras.models.load_model(path)
    assert str(path) in str(err.value)


def test_compressed_encrypted_and_duplicate_members_are_refused_before_reading(saved, tmp_path):
    _, data, _ = saved
    path = archive(tmp_path / "deflated.lnn", members_of(data), compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFileError, match="'lepton_nn.json' is compressed .method 8.; lepton_nn stores"):
        keras.models.load_model(path)
    # the encryption flag (bit 0 of the general-purpose flags) set in the ZIP directory
    encrypted = bytearray(data)
    directory_entry = data.index(b"PK\x01\x02")
    encrypted[directory_entry + 8] |= 0x1
    (tmp_path / "encrypted.lnn").write_bytes(bytes(encrypted))
    with pytest.raises(ModelFileError, match="'lepton_nn.json' is encrypted"):
        keras.models.load_model(tmp_path / "encrypted.lnn")
    with zipfile.ZipFile(tmp_path / "twice.lnn", "w") as out, pytest.warns(UserWarning, match="Duplicate"):
        for name, content in [*members_of(data).items(), ("weights/000.npy", b"")]:
            out.writestr(name, content)
    with pytest.raises(ModelFileError, match="appears more than once"):
        keras.models.load_model(tmp_path / "twice.lnn")


def test_the_issue_bit_flips_zip_version_and_compression_method_raise_model_file_error(saved, tmp_path):
    """Seen in issue 11: these flips raised NotImplementedError from zipfile."""
    _, data, _ = saved
    entry = data.index(b"PK\x01\x02")  # the first ZIP directory entry
    for offset, value, message in [(6, 0xFF, "NotImplementedError: zip file version"),  # version needed
                                   (10, 0x63, "is compressed .method 99.")]:  # compression method
        damaged = bytearray(data)
        damaged[entry + offset] = value
        (tmp_path / "flip.lnn").write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError, match=message):
            keras.models.load_model(tmp_path / "flip.lnn")


def test_a_member_declaring_more_bytes_than_the_file_is_refused(saved, tmp_path):
    _, data, _ = saved
    # raise the stored sizes (compressed and uncompressed) of the first directory entry to 2 GB
    big = bytearray(data)
    entry = data.index(b"PK\x01\x02")
    big[entry + 20:entry + 28] = (2 ** 31).to_bytes(4, "little") * 2
    (tmp_path / "big.lnn").write_bytes(bytes(big))
    with pytest.raises(ModelFileError, match="more than the file's"):
        keras.models.load_model(tmp_path / "big.lnn")


def test_hostile_sizes_are_refused_before_anything_large_is_allocated(saved, tmp_path):
    _, data, _ = saved
    cases = [with_config(data, setter(*DENSE, "units", 10 ** 8)),  # a 1.2 GB kernel if it were built
             with_config(data, setter("model", "input_shape", [10 ** 8])),
             replaced(data, KERNEL, npy({"descr": "<f4", "fortran_order": False, "shape": (10 ** 8, 3)}))]
    for i, members in enumerate(cases):
        path = archive(tmp_path / f"hostile{i}.lnn", members)
        tracemalloc.start()
        try:
            with pytest.raises(ModelFileError):
                keras.models.load_model(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 * 2 ** 20, f"case {i}: {peak:,} bytes allocated"


def test_a_wide_model_without_weights_loads_without_running_data(tmp_path):
    """Building computes shapes (compute_output_shape): a 30000×30000 input allocates nothing."""
    model = keras.Sequential([keras.Input(shape=(30_000, 30_000, 1)), layers.MaxPooling2D(1000), layers.Flatten()])
    assert model.output_shape == (None, 900)
    model.save(tmp_path / "wide.lnn")
    tracemalloc.start()
    try:
        loaded = keras.models.load_model(tmp_path / "wide.lnn")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.output_shape == (None, 900) and peak < 20 * 2 ** 20


def test_unreadable_and_directory_paths_raise_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="not a file"):
        keras.models.load_model(tmp_path)
    path = tmp_path / "locked.lnn"
    tiny_model().save(path)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: a mode-0 file is still readable")
        with pytest.raises(ModelFileError, match="cannot read the file .PermissionError"):
            keras.models.load_model(path)
    finally:
        os.chmod(path, 0o600)


# --------------------------------------------------------------------------- hypothesis over config values
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([10 ** 13, -10 ** 13, 2 ** 63])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths(value, prefix=()):
    """Every (key, ...) path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


@fuzz
@given(data=st.data())
def test_any_value_anywhere_in_the_config_loads_a_working_model_or_raises_model_file_error(saved, data):
    model, original, directory = saved
    config = json.loads(members_of(original)["config.json"])
    where = data.draw(st.sampled_from(list(paths(config))[1:]))
    value = data.draw(JSON_VALUES)
    members = with_config(original, setter(*where, value))
    path = archive(directory / "mutated.lnn", members)
    try:
        loaded = keras.models.load_model(path)
    except ModelFileError as err:
        assert str(path) in str(err)
        return
    assert loaded.predict(np.zeros((2, 3), np.float32)).shape == (2, 2)  # a model that works


def test_save_refuses_what_it_cannot_write_and_leaves_no_file(tmp_path):
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(2, kernel_initializer=ln.nn.init.zeros)])
    with pytest.raises(ValueError, match=r"Dense 'dense\w*': a custom kernel_initializer \(zeros\) cannot be saved"):
        model.save(tmp_path / "custom.lnn")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- file mode
def test_saving_over_a_file_keeps_its_permissions_and_a_new_file_follows_the_umask(tmp_path):
    model = tiny_model()
    path = tmp_path / "private.lnn"
    model.save(path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    for mode in (0o600, 0o640):
        os.chmod(path, mode)
        model.save(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.lnn"]
