"""Hostile model files: the npz model loader, the book-pickle importer and the checkpoint reader get
random bytes, truncated and bit-flipped real files, lying headers, absurd configs and malicious
pickles. Each must raise a clear ValueError (ModelFormatError / CheckpointError) naming the file:
never another exception, never code execution, never an allocation a header merely claims."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zerodl
from zerodl import checkpoint as ck
from zerodl import io as zio
from zerodl.trainer import Trainer

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real files of each kind, and a scratch directory for the mutated ones."""
    root = tmp_path_factory.mktemp("hostile")
    net = zerodl.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, seed=0)
    net.predict(np.ones((2, 6)), train_flg=True)  # creates the running statistics
    model = zerodl.save_network(net, root / "model.npz")
    book = root / "book.pkl"
    book.write_bytes(pickle.dumps({"W1": np.ones((6, 5)), "b1": np.zeros(5)}, protocol=2))
    x = np.random.default_rng(0).random((20, 6))
    trainer = Trainer(zerodl.TwoLayerNet(6, 5, 3, seed=0), x, np.arange(20) % 3, x, np.arange(20) % 3,
                      epochs=1, mini_batch_size=5, optimizer="adam", verbose=False, seed=0)
    trainer.train_step()
    checkpoint = ck.save_checkpoint(trainer, root / "run.ckpt")
    return {"root": root, "model": model.read_bytes(), "book": book.read_bytes(),
            "checkpoint": checkpoint.read_bytes(), "trainer": trainer}


def _write(files, name, data):
    path = files["root"] / name
    path.write_bytes(data)
    return path


def _load_all(files, path):
    """Every loader on one hostile file; each must raise ValueError naming it (or load it)."""
    def target():
        return zerodl.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, seed=0)

    loaders = {
        "load_network": lambda: zerodl.load_network(path),
        "load_params": lambda: target().load_params(path),
        "load_book_pickle": lambda: zio.load_book_pickle(path),
        "load_checkpoint": lambda: ck.load_checkpoint(files["trainer"], path),
    }
    for name, loader in loaders.items():
        try:
            loader()
        except ValueError as exc:
            assert str(path.name) in str(exc), f"{name}: message does not name the file: {exc}"
        except Exception as exc:
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc}")


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(files, data):
    _load_all(files, _write(files, "random.bin", data))


@FUZZ
@given(prefix=st.sampled_from([b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", b"\x93NUMPY", b""]),
       data=st.binary(max_size=512))
def test_random_bytes_behind_real_magic_numbers(files, prefix, data):
    _load_all(files, _write(files, "magic.bin", prefix + data))


@FUZZ
@given(kind=st.sampled_from(["model", "book", "checkpoint"]), fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_real_files(files, kind, fraction):
    data = files[kind]
    _load_all(files, _write(files, f"cut-{kind}", data[: int(len(data) * fraction)]))


@FUZZ
@given(kind=st.sampled_from(["model", "book", "checkpoint"]), flips=st.lists(st.tuples(
    st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flipped_real_files(files, kind, flips):
    data = bytearray(files[kind])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    _load_all(files, _write(files, f"flip-{kind}", bytes(data)))


# -- lying headers: nothing allocated beyond the bytes really present ---------------------------------
def _npz_with_member(files, name, member, payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(files["model"])) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename == member else src.read(info))
    return _write(files, name, buf.getvalue())


def _npy_header(shape, descr="<f8"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("shape", [(10**6, 10**6), (2**62,), (10**9,), (30, 5)])
def test_npy_header_claiming_more_than_the_file_holds(files, shape):
    path = _npz_with_member(files, "huge.npz", "param/W1.npy", _npy_header(shape) + b"\0" * 240)

    def load():
        with pytest.raises(zio.ModelFormatError, match=r"declares shape .* but holds 240 bytes"):
            zerodl.load_network(path)
        with pytest.raises(ck.CheckpointError, match="declares shape"):
            ck.read_checkpoint(path)

    assert _peak_bytes(load) < 10 * 2**20


def test_zip_directory_claiming_a_huge_entry(files):
    data = bytearray(files["model"])
    # Patch the uncompressed size of every central-directory record to 2**31 - 1.
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        data[pos + 24:pos + 28] = struct.pack("<I", 2**31 - 1)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path = _write(files, "bomb.npz", bytes(data))
    assert _peak_bytes(lambda: pytest.raises(zio.ModelFormatError, zerodl.load_network, path)) < 10 * 2**20


def test_object_arrays_and_foreign_entries_are_refused(files):
    path = _npz_with_member(files, "obj.npz", "param/W1.npy", _npy_header((1,), "|O") + b"\0" * 8)
    with pytest.raises(zio.ModelFormatError, match="need pickle"):
        zerodl.load_network(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload.sh", b"rm -rf /")
    with pytest.raises(zio.ModelFormatError, match="is not a .npy array"):
        zerodl.load_network(_write(files, "foreign.npz", buf.getvalue()))


@pytest.mark.parametrize("config", [
    {"input_size": 10**9, "hidden_size_list": [10**9], "output_size": 10},
    {"input_size": 6, "hidden_size_list": [5] * 10**5, "output_size": 3},
    {"input_size": 6, "hidden_size_list": [2**40], "output_size": 3},
])
def test_config_asking_for_huge_network_is_refused_before_building(files, config):
    with np.load(io.BytesIO(files["model"])) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__zerodl__")[()]))
    meta["config"].update(config)
    buf = io.BytesIO()
    np.savez(buf, __zerodl__=np.array(json.dumps(meta)), **arrays)
    path = _write(files, "big-config.npz", buf.getvalue())

    def load():
        with pytest.raises(zio.ModelFormatError, match="refusing to build|cannot rebuild|more memory"):
            zerodl.load_network(path)

    assert _peak_bytes(load) < 50 * 2**20


# -- malicious pickles: refused before anything is called ----------------------------------------------
class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _evil_pickles(marker):
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    import builtins

    reduced = {
        "os.system": _Reduce(os.system, cmd),
        "builtins.eval": _Reduce(builtins.eval, code),
        "builtins.exec": _Reduce(builtins.exec, code),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "subprocess.check_call": _Reduce(subprocess.check_call, ["touch", str(marker)]),
        "getattr": _Reduce(getattr, _Reduce(__import__, "os"), "system"),
        "numpy.load": _Reduce(np.load, str(marker)),
        "nested-in-dict": {"W1": np.ones(2), "b1": _Reduce(os.system, cmd)},
    }
    out = {f"{name}/p{proto}": pickle.dumps(obj, protocol=proto)
           for name, obj in reduced.items() for proto in (0, 2, 4)}
    # Hand-written opcodes: GLOBAL + REDUCE (protocol 0), INST, OBJ, STACK_GLOBAL (protocol 4).
    out["GLOBAL-opcode"] = f"cos\nsystem\n(V{cmd}\ntR.".encode()
    out["INST-opcode"] = f"(V{cmd}\nios\nsystem\n.".encode()
    out["OBJ-opcode"] = b"\x80\x02(cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd.encode() + b"o."
    mod, fn = b"posix", b"system"
    out["STACK_GLOBAL"] = (b"\x80\x04\x8c" + bytes([len(mod)]) + mod + b"\x8c" + bytes([len(fn)]) + fn
                           + b"\x93\x8c" + bytes([len(cmd)]) + cmd.encode() + b"\x85R.")
    out["numpy-internals"] = b"cnumpy.testing._private.utils\nrunstring\n(V" + code.encode() + b"\n(dtR."
    out["persistent-id"] = b"\x80\x02Pfoo\n."
    return out


def test_malicious_pickles_are_refused_unrun(files, tmp_path):
    marker = tmp_path / "pwned"
    for name, payload in _evil_pickles(marker).items():
        path = _write(files, "evil.pkl", payload)
        for load in (zio.load_book_pickle,
                     lambda p: zerodl.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, seed=0).load_params(p)):
            with pytest.raises(zio.UnsafePickleError, match="refused to load") as info:
                load(path)
            assert "evil.pkl" in str(info.value), name
        assert not marker.exists(), f"{name} ran code"


def test_real_book_pickle_still_loads(files):
    path = _write(files, "good.pkl", files["book"])
    params = zio.load_book_pickle(path)
    np.testing.assert_array_equal(params["W1"], np.ones((6, 5)))
