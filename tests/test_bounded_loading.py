"""Loaders do bounded work on untrusted files (issue 14, item 5): every declared size is checked
against the bytes really in the file *before* anything is allocated, the config against the arrays
before a network is built, and FIFOs, devices and directories are refused without blocking.

Memory is measured with tracemalloc (NumPy reports its allocations there); "small" means a few MiB
for files of a few hundred bytes.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import zerodl
from zerodl import checkpoint as ck
from zerodl import io as zio
from zerodl.datasets import read_idx
from zerodl.trainer import Trainer

MiB = 2**20


def _peak(fn):
    """Peak traced memory while ``fn()`` runs."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _refused(exc_type, fn, *fragments):
    def run():
        with pytest.raises(exc_type) as info:
            fn()
        for fragment in fragments:
            assert fragment in str(info.value), (fragment, str(info.value))
    return run


# -- the book's pickles --------------------------------------------------------------------------------
def _array_pickle(shape_opcodes: bytes, data: bytes = b"\0" * 8, descr: bytes = b"f8") -> bytes:
    """A protocol-2 pickle of ``{"W1": ndarray}`` as NumPy writes it, with the shape tuple replaced."""
    return (b"\x80\x02}X\x02\x00\x00\x00W1cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"K\x00\x85C\x01b\x87R(K\x01" + shape_opcodes + b"cnumpy\ndtype\nX" + struct.pack("<I", len(descr))
            + descr + b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C"
            + bytes([len(data)]) + data + b"tbs.")


def test_the_hand_made_pickle_is_what_numpy_writes(tmp_path):
    """The builder above is faithful: with an honest shape the file loads like NumPy's own."""
    path = tmp_path / "ok.pkl"
    path.write_bytes(_array_pickle(b"K\x01\x85", struct.pack("<d", 1.5)))
    assert pickle.loads(path.read_bytes())["W1"].tolist() == [1.5]
    np.testing.assert_array_equal(zio.load_book_pickle(path)["W1"], [1.5])


@pytest.mark.parametrize("shape", [b"J\x00\xe1\xf5\x05\x85",             # (10**8,)
                                   b"J\xff\xff\xff\x7fJ\xff\xff\xff\x7f\x86",  # (2**31-1, 2**31-1)
                                   b"K\x00J\xff\xff\xff\x7f\x86"],            # (0, 2**31-1): empty
                         ids=["1e8", "2^62", "empty-huge"])
def test_pickle_declaring_a_huge_array_allocates_nothing(tmp_path, shape):
    path = tmp_path / "small.pkl"
    path.write_bytes(_array_pickle(shape))
    assert len(path.read_bytes()) < 200
    run = _refused(zio.ModelFormatError, lambda: zio.load_book_pickle(path), "small.pkl", "declares shape")
    assert _peak(run) < 2 * MiB


def test_reconstruct_with_a_huge_shape_allocates_nothing(tmp_path):
    # The shape handed to _reconstruct itself (NumPy would allocate it before any state arrives).
    data = (b"\x80\x02}X\x02\x00\x00\x00W1cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"J\x00\xe1\xf5\x05\x85C\x01b\x87Rs.")
    path = tmp_path / "recon.pkl"
    path.write_bytes(data)
    run = _refused(zio.ModelFormatError, lambda: zio.load_book_pickle(path), "recon.pkl", "incomplete array")
    assert _peak(run) < 2 * MiB


def test_calling_ndarray_directly_is_refused(tmp_path):
    path = tmp_path / "nd.pkl"
    path.write_bytes(b"\x80\x02}X\x02\x00\x00\x00W1cnumpy\nndarray\nJ\x00\xe1\xf5\x05\x85\x85Rs.")
    assert _peak(_refused(zio.ModelFormatError, lambda: zio.load_book_pickle(path), "nd.pkl")) < 2 * MiB


def test_bytearray_of_a_declared_length_is_refused(tmp_path):
    path = tmp_path / "ba.pkl"
    path.write_bytes(b"\x80\x02}X\x02\x00\x00\x00W1cbuiltins\nbytearray\nJ\x00\xe1\xf5\x05\x85Rs.")
    run = _refused(zio.ModelFormatError, lambda: zio.load_book_pickle(path), "ba.pkl", "bytearray")
    assert _peak(run) < 2 * MiB


def test_a_memoised_string_decoded_again_and_again_hits_the_budget(tmp_path):
    """A few bytes per repetition must not buy a megabyte each (memo GET + _codecs.encode)."""
    text = "x" * 100_000
    body = b"\x80\x02]q\x00X" + struct.pack("<I", len(text)) + text.encode() + b"q\x01"
    body += b"c_codecs\nencode\nq\x02(" + b"h\x02h\x01X\x06\x00\x00\x00latin1\x86R" * 2000 + b"e."
    path = tmp_path / "amplify.pkl"
    path.write_bytes(body)
    assert len(body) < 200_000
    run = _refused(zio.ModelFormatError, lambda: zio.load_book_pickle(path), "amplify.pkl", "more than its own bytes")
    assert _peak(run) < 8 * len(body) + 4 * MiB


@pytest.mark.parametrize("descr", [b"O8", b"U1000000", b"V1000000", b"S99", b"M8[s]", b"f8,f8"])
def test_non_numeric_dtypes_are_refused_before_numpy_sees_them(tmp_path, descr):
    path = tmp_path / "dtype.pkl"
    path.write_bytes(_array_pickle(b"K\x01\x85", b"\0" * 8, descr))
    with pytest.raises(zio.ModelFormatError, match=r"dtype\.pkl.*(refused|dtype)"):
        zio.load_book_pickle(path)


def test_object_array_state_with_a_short_list_is_refused_not_a_crash(tmp_path):
    """NumPy 2.4's ndarray.__setstate__ with an object dtype and a list shorter than the declared
    shape dereferences freed memory (a segfault). Run in a child: a regression must show as a failed
    test, not as a dead test session."""
    data = pickle.dumps({"W1": np.array([1, 2], dtype=object)}, protocol=2)
    data = data.replace(b"K\x02\x85", b"J\x00\xe1\xf5\x05\x85", 1)  # shape (2,) -> (10**8,)
    path = tmp_path / "obj.pkl"
    path.write_bytes(data)
    code = ("import sys; from zerodl import io\n"
            "try:\n    io.load_book_pickle(sys.argv[1])\nexcept io.ModelFormatError as e:\n    print('refused:', e)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, check=False,
                            cwd=os.path.dirname(os.path.dirname(zerodl.__file__)))
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "obj.pkl" in result.stdout and "O8" in result.stdout


def test_deeply_nested_pickles_are_refused_not_a_crash(tmp_path):
    """A tuple nested a million deep, used as a dict key (two bytes per level): CPython's own
    unpickler overflows the C stack hashing it (a segfault). Refused from the opcodes, unrun; in a
    child, so a regression fails this test instead of killing the session."""
    depth = 1_000_000
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x04}" + b")" + b"\x85" * depth + b"K\x01s.")
    lists = tmp_path / "lists.pkl"  # lists and memo references: deep, unhashable, still refused
    lists.write_bytes(b"\x80\x04}\x8c\x01k" + b"]" * 100 + b"a" * 99 + b"s.")
    code = ("import sys; from zerodl import io\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        io.load_book_pickle(p)\n    except io.ModelFormatError as e:\n"
            "        print(str(e)[:300])\n")
    result = subprocess.run([sys.executable, "-c", code, str(path), str(lists)], capture_output=True, text=True,
                            timeout=120, check=False, cwd=os.path.dirname(os.path.dirname(zerodl.__file__)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("nests containers more than 64 deep" in line for line in lines), lines


def test_wide_flat_pickles_are_not_mistaken_for_deep_ones(tmp_path):
    """Batched APPENDS/SETITEMS (1,000 items each) add no depth: a 100,000-item list is depth 1."""
    path = tmp_path / "wide.pkl"
    path.write_bytes(pickle.dumps({"W1": np.ones(2), "x": list(range(100_000)),
                                   "d": {str(i): i for i in range(5_000)}}, protocol=2))
    with pytest.raises(zio.ModelFormatError, match="parameter 'x' is a list, not a numpy array"):
        zio.load_book_pickle(path)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_genuine_pickles_of_every_protocol_still_load_exactly(tmp_path, rng, protocol):
    params = {"W1": rng.standard_normal((5, 3)), "b1": rng.standard_normal(3).astype(np.float32),
              "Wf": np.asfortranarray(rng.standard_normal((4, 2))), "Wbig": rng.standard_normal(3).astype(">f8"),
              "n": np.arange(4, dtype=np.int32)}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    loaded = zio.load_book_pickle(path)
    assert list(loaded) == list(params)
    for key, value in params.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        assert loaded[key].flags.writeable


def test_the_books_own_params_file_format_loads(tmp_path, rng):
    """An OrderedDict (the book's TwoLayerNet params) and nested containers are still admitted."""
    from collections import OrderedDict

    params = OrderedDict(W1=rng.standard_normal((2, 2)), b1=np.zeros(2))
    for protocol in (2, 4):
        path = tmp_path / f"od{protocol}.pkl"
        path.write_bytes(pickle.dumps(params, protocol=protocol))
        loaded = zio.load_book_pickle(path)
        np.testing.assert_array_equal(loaded["W1"], params["W1"])


# -- npz archives: compressed entries, string dtypes --------------------------------------------------
def _deflated_npz(path, entries):
    """An npz whose entries are deflate-compressed (``np.savez_compressed`` style)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, array in entries.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=False)
            z.writestr(name + ".npy", buf.getvalue())
    return path


def test_compressed_entry_expanding_far_past_the_file_is_refused_from_its_header(tmp_path):
    # 64 MiB of zeros compress to ~64 KiB: a genuine deflate ratio, but 1000x the file.
    path = _deflated_npz(tmp_path / "bomb.npz", {"param/W1": np.zeros(8 * MiB)})
    size = path.stat().st_size
    assert size < 200_000
    run = _refused(zio.ModelFormatError, lambda: zerodl.load_network(path), "bomb.npz", "zip bomb")
    assert _peak(run) < 4 * MiB
    run = _refused(ck.CheckpointError, lambda: ck.read_checkpoint(path), "bomb.npz")
    assert _peak(run) < 4 * MiB


def test_a_compressed_genuine_model_still_loads(tmp_path, rng):
    net = zerodl.TwoLayerNet(6, 5, 3, seed=0)
    zerodl.save_network(net, tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as data:
        entries = {k: data[k] for k in data.files}
    np.savez_compressed(tmp_path / "small.npz", **entries)
    loaded = zerodl.load_network(tmp_path / "small.npz")
    for key in net.params:
        np.testing.assert_array_equal(loaded.params[key], net.params[key])


def test_checkpoint_metadata_declaring_a_giant_string_dtype_is_refused_before_allocating(tmp_path):
    """A generator state (in the checkpoint's JSON entry) padded to a 2 GB unicode dtype."""
    x = np.random.default_rng(0).random((10, 4))
    trainer = Trainer(zerodl.TwoLayerNet(4, 3, 2, seed=0), x, np.arange(10) % 2, x, np.arange(10) % 2,
                      epochs=1, mini_batch_size=5, verbose=False, seed=0)
    good = ck.save_checkpoint(trainer, tmp_path / "good.ckpt")
    with np.load(good) as data:
        entries = {k: data[k] for k in data.files}
    meta = str(entries["__checkpoint__"][()])
    # 2 GB of padding would compress to ~2 MB; the header alone says what is coming.
    header = {"descr": "<U500000000", "fortran_order": False, "shape": ()}
    raw = repr(header).encode("latin1")
    raw += b" " * (63 - (len(raw) + 10) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + meta.encode("utf-32-le")[:4000]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, array in entries.items():
            if name != "__checkpoint__":
                b = io.BytesIO()
                np.lib.format.write_array(b, array)
                z.writestr(name + ".npy", b.getvalue())
        z.writestr("__checkpoint__.npy", npy)
    path = tmp_path / "giant.ckpt"
    path.write_bytes(buf.getvalue())
    run = _refused(ck.CheckpointError, lambda: ck.read_checkpoint(path), "giant.ckpt", "__checkpoint__")
    assert _peak(run) < 4 * MiB
    # Its zip header may also lie about the size (claim the 2 GB the npy header needs): refused too.
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        if data[pos + 46:pos + 46 + len(b"__checkpoint__.npy")] == b"__checkpoint__.npy":
            data[pos + 24:pos + 28] = struct.pack("<I", 2_000_000_128)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))
    assert _peak(_refused(ck.CheckpointError, lambda: ck.read_checkpoint(path), "giant.ckpt")) < 4 * MiB


# -- configs in model files ------------------------------------------------------------------------------
def _model_with(tmp_path, edit, name="edited.npz"):
    net = zerodl.MultiLayerNet(6, [5], 3, seed=0)
    zerodl.save_network(net, tmp_path / "base.npz", metadata={"dataset": "digits"})
    with np.load(tmp_path / "base.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__zerodl__")[()]))
    edit(meta)
    np.savez(tmp_path / name, __zerodl__=np.array(json.dumps(meta)), **arrays)
    return tmp_path / name


def _set(path, value):
    def edit(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, fragment", [
    (_set(["config", "hidden_size_list"], [float("nan")]), "cannot rebuild"),
    (_set(["config", "hidden_size_list"], [-5]), "cannot rebuild"),
    (_set(["config", "hidden_size_list"], ["5"]), "cannot rebuild"),
    (_set(["config", "input_size"], 10**12), "refusing to build"),
    (_set(["config", "input_size"], 2**70), "refusing to build"),
    (_set(["config", "hidden_size_list"], [5] * 10**4), "refusing to build"),
    (_set(["config", "output_size"], None), "cannot rebuild"),
    (_set(["config", "dtype"], "object"), "cannot rebuild"),
    (_set(["config", "bogus_argument"], 1), "cannot rebuild"),
    (_set(["config"], [1, 2]), "'config'"),
    (_set(["class"], ["MultiLayerNet"]), "'class'"),
    (_set(["class"], "Trainer"), "unknown network class"),
    (_set(["metadata"], [1]), "'metadata'"),
    (_set(["format_version"], -1), "format_version"),
    (_set(["format_version"], 1.5), "format_version"),
    (_set(["config", "deep"], json.loads("[" * 500 + "]" * 500)), "cannot rebuild"),
], ids=["nan-size", "negative-size", "str-size", "huge-input", "giant-int", "10k-layers", "null-size",
        "object-dtype", "unknown-argument", "config-list", "class-list", "class-not-a-network",
        "metadata-list", "version-negative", "version-float", "deep-nesting"])
def test_edited_model_metadata_is_one_clear_error(tmp_path, edit, fragment):
    path = _model_with(tmp_path, edit)

    def run():
        with pytest.raises(zio.ModelFormatError) as info:
            zerodl.load_network(path)
        message = str(info.value)
        assert "edited.npz" in message and fragment in message, message
        assert "\n" not in message

    assert _peak(run) < 16 * MiB


def test_metadata_nested_deeper_than_json_can_parse_is_refused(tmp_path):
    net = zerodl.TwoLayerNet(4, 3, 2, seed=0)
    arrays = {"param/" + k: v for k, v in net.params.items()}
    deep = '{"format": "zerodl-network", "format_version": 1, "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(tmp_path / "deep.npz", __zerodl__=np.array(deep), **arrays)
    with pytest.raises(zio.ModelFormatError, match="deep.npz: corrupt zerodl metadata"):
        zerodl.load_network(tmp_path / "deep.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_are_refused_and_the_network_left_untouched(tmp_path, bad):
    net = zerodl.TwoLayerNet(4, 3, 2, seed=0)
    net.params["b2"][1] = bad
    zerodl.save_network(net, tmp_path / "nan.npz")
    with pytest.raises(zio.ModelFormatError, match=r"nan.npz: parameter 'b2' holds 1 NaN or infinite value"):
        zerodl.load_network(tmp_path / "nan.npz")
    target = zerodl.TwoLayerNet(4, 3, 2, seed=1)
    before = {k: v.copy() for k, v in target.params.items()}
    with pytest.raises(zio.ModelFormatError, match="refusing to load a broken network"):
        target.load_params(tmp_path / "nan.npz")
    for key, value in before.items():
        np.testing.assert_array_equal(target.params[key], value)
    path = tmp_path / "nan.pkl"
    path.write_bytes(pickle.dumps(dict(net.params)))
    with pytest.raises(zio.ModelFormatError, match="NaN or infinite"):
        zerodl.TwoLayerNet(4, 3, 2).load_params(path)


def test_metadata_that_is_not_a_json_string_is_refused(tmp_path):
    net = zerodl.TwoLayerNet(4, 3, 2, seed=0)
    arrays = {"param/" + k: v for k, v in net.params.items()}
    np.savez(tmp_path / "m.npz", __zerodl__=np.zeros(3), **arrays)
    with pytest.raises(zio.ModelFormatError, match="corrupt zerodl metadata"):
        zerodl.load_network(tmp_path / "m.npz")


# -- FIFOs, devices, directories: refused by every loader, never blocking ------------------------------
def _loaders():
    x = np.random.default_rng(0).random((10, 4))
    trainer = Trainer(zerodl.TwoLayerNet(4, 3, 2, seed=0), x, np.arange(10) % 2, x, np.arange(10) % 2,
                      epochs=1, mini_batch_size=5, verbose=False, seed=0)
    return {
        "read_idx": read_idx,
        "load_network": zerodl.load_network,
        "load_params": lambda p: zerodl.TwoLayerNet(4, 3, 2).load_params(p),
        "load_book_pickle": zio.load_book_pickle,
        "read_metadata": zio.read_metadata,
        "scan_npz": zio.scan_npz,
        "read_checkpoint": ck.read_checkpoint,
        "load_checkpoint": lambda p: ck.load_checkpoint(trainer, p),
    }


def _in_a_thread(fn, timeout=20):
    """Run ``fn`` in a daemon thread; fail (rather than hang the suite) if it blocks."""
    outcome = {}

    def target():
        try:
            fn()
            outcome["result"] = "returned"
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # Unblock it (open a FIFO's write end) so the thread can end; the test has failed anyway.
        pytest.fail(f"{fn} blocked for {timeout} s")
    return outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("loader", list(_loaders()))
def test_a_fifo_is_refused_without_blocking(tmp_path, loader):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    fn = _loaders()[loader]
    try:
        outcome = _in_a_thread(lambda: fn(fifo))
    finally:
        # Whatever happened, never leave a reader blocked on the FIFO behind.
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    error = outcome.get("error")
    assert isinstance(error, (ValueError, FileNotFoundError)), outcome
    assert "pipe.npz" in str(error)
    if loader not in ("read_checkpoint", "load_checkpoint"):  # checkpoint.py: the lead's (see report)
        assert "FIFO" in str(error)


@pytest.mark.parametrize("loader", list(_loaders()))
@pytest.mark.parametrize("target", ["/dev/zero", "directory"])
def test_devices_and_directories_are_refused(tmp_path, loader, target):
    path = tmp_path if target == "directory" else target
    if target == "/dev/zero" and not os.path.exists(target):
        pytest.skip("no /dev/zero on this system")
    outcome = _in_a_thread(lambda: _loaders()[loader](path))
    error = outcome.get("error")
    assert isinstance(error, (ValueError, FileNotFoundError, IsADirectoryError)), outcome
    assert str(path) in str(error)


def test_empty_truncated_and_wrong_magic_files_are_clear_for_every_loader(tmp_path):
    good = zerodl.save_network(zerodl.TwoLayerNet(4, 3, 2, seed=0), tmp_path / "good.npz").read_bytes()
    cases = {"empty.npz": b"", "cut.npz": good[: len(good) // 2], "magic.npz": b"PK\x05\x06" + b"\0" * 18,
             "text.npz": "ünïcode ✓".encode(), "zeros.npz": b"\0" * 64}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for loader_name, loader in _loaders().items():
            if loader_name == "scan_npz" and name == "magic.npz":
                assert loader(path) == {}  # a valid, empty archive: scanning finds nothing to refuse
                continue
            with pytest.raises((ValueError, FileNotFoundError)) as info:
                loader(path)
            assert name in str(info.value), (loader_name, name, str(info.value))


def test_unicode_and_symlink_loop_paths(tmp_path):
    path = tmp_path / "模型 ü.npz"
    net = zerodl.TwoLayerNet(4, 3, 2, seed=0)
    zerodl.save_network(net, path)
    np.testing.assert_array_equal(zerodl.load_network(path).params["W1"], net.params["W1"])
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(OSError) as info:
        zerodl.load_network(loop)
    assert "loop.npz" in str(info.value)


def test_zlib_corruption_inside_a_deflated_entry_is_a_model_format_error(tmp_path):
    path = _deflated_npz(tmp_path / "z.npz", {"param/W1": np.arange(1000.0), "__zerodl__": np.array("{}")})
    data = bytearray(path.read_bytes())
    start = data.find(b"param/W1.npy") + len(b"param/W1.npy") + 200
    data[start:start + 40] = bytes(40)
    path.write_bytes(bytes(data))
    with pytest.raises(zio.ModelFormatError, match="z.npz"):
        zio.read_npz(path)
    assert zlib  # the error class the archive raises internally


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_dataset_split_seeds_are_checked_by_name(seed):
    from zerodl.datasets import load_digits

    with pytest.raises(ValueError, match=r"stratified_split: seed must be None or an integer >= 0"):
        load_digits(seed=seed)


def test_a_config_whose_sizes_each_look_harmless_but_multiply_into_gigabytes(tmp_path):
    """270x270 images and 7,000 hidden units: every consecutive pair of sizes is small, yet
    SimpleConvNet's second weight matrix would be 3*134*134 x 7000 (3 GB). Refused before the draw."""
    conv = {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}
    net = zerodl.SimpleConvNet(input_dim=(1, 8, 8), conv_param=conv, hidden_size=5, output_size=3, seed=0)
    zerodl.save_network(net, tmp_path / "base.npz")
    with np.load(tmp_path / "base.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__zerodl__")[()]))
    meta["config"].update(input_dim=[1, 270, 270], hidden_size=7000)
    np.savez(tmp_path / "wide.npz", __zerodl__=np.array(json.dumps(meta)), **arrays)
    run = _refused(zio.ModelFormatError, lambda: zerodl.load_network(tmp_path / "wide.npz"),
                   "wide.npz", "refusing to build")
    assert _peak(run) < 16 * MiB


def test_rebuilt_networks_are_ordinary_after_loading(tmp_path):
    """The budget is lifted once built: a loaded net with dropout trains (draws masks) normally."""
    net = zerodl.MultiLayerNetExtend(6, [5], 3, use_dropout=True, use_batchnorm=True, seed=0)
    net.predict(np.ones((2, 6)), train_flg=True)
    zerodl.save_network(net, tmp_path / "d.npz")
    loaded = zerodl.load_network(tmp_path / "d.npz")
    for _ in range(3):
        loaded.gradient(np.random.default_rng(0).random((500, 6)), np.arange(500) % 3)
    for key in net.params:
        np.testing.assert_array_equal(loaded.params[key], net.params[key])


def test_gzip_idx_claiming_far_more_than_its_size_is_refused_before_decompressing(tmp_path):
    import gzip

    from zerodl.datasets import write_idx

    path = tmp_path / "zeros.idx.gz"
    write_idx(path, np.zeros((1000, 28, 28), np.uint8))  # 784,000 zero bytes: ~1,000x smaller
    assert path.stat().st_size * 100 < 784_000
    run = _refused(ValueError, lambda: read_idx(path), "zeros.idx.gz", "refused before decompressing")
    assert _peak(run) < MiB
    assert read_idx(path, max_ratio=None).shape == (1000, 28, 28)  # on request, as before
    real = tmp_path / "real.idx.gz"  # ordinary data compresses a few times at most: unaffected
    write_idx(real, np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8))
    assert read_idx(real).shape == (100, 28, 28)
    assert gzip.decompress(real.read_bytes())[:4] == b"\0\0\x08\x03"
