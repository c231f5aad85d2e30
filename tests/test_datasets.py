"""zerodl.datasets: IDX round trips, MNIST and digits loaders, splits, downloads, errors.

Downloads are tested against a local HTTP server on 127.0.0.1 (no internet needed); MNIST content
tests use the real t10k files through the ``mnist_dir`` fixture (never copied into the project; only
into ``tmp_path``), and the official 60k/10k path with small synthetic files whose digests replace
the official ones for the duration of a test.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerodl import datasets
from zerodl.datasets import (
    CorruptDatasetError,
    DatasetFallbackWarning,
    DatasetNotFoundError,
    DatasetSplit,
    MnistFile,
    fetch_file,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
    stratified_split,
    stratified_split_indices,
    to_one_hot,
    write_idx,
)

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
              0x0E: np.float64}
FLAGS = [(n, f, o) for n in (True, False) for f in (True, False) for o in (True, False)]


# --------------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------------


def book_read_images(path):
    """The book's way (dataset/mnist.py): gzip, skip the 16-byte header, reshape to (N, 784)."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)


def book_read_labels(path):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=8)


def book_one_hot(labels):
    """The book's ``_change_one_hot_label``, transcribed: float64 rows with a single 1."""
    out = np.zeros((labels.size, 10))
    for i, row in enumerate(out):
        row[labels[i]] = 1
    return out


def no_temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.log.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, with_length = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server: ``server.routes[path] = (bytes, send_content_length)``, 404 otherwise;
    ``server.log`` lists the paths requested; ``server.url(prefix)`` a mirror base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.log = []
    httpd.url = lambda prefix: f"http://127.0.0.1:{httpd.server_address[1]}/{prefix}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def dead_mirror():
    """A mirror URL on a local port nobody listens on: connection refused, at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def make_synthetic_mnist(directory, n_train=30, n_test=20, seed=0):
    """Four small MNIST-format files; returns the MNIST_FILES table that vouches for them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_img": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_label": (np.arange(n_train) % 10).astype(np.uint8),
        "test_img": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_label": (np.arange(n_test) % 10).astype(np.uint8),
    }
    table = {}
    for key, spec in datasets.MNIST_FILES.items():
        path = directory / spec.name
        write_idx(path, arrays[key])
        data = path.read_bytes()
        table[key] = MnistFile(spec.name, len(data), hashlib.sha256(data).hexdigest())
    return arrays, table


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------


def _sample(dtype, shape, rng):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        a = rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
        a.flat[0], a.flat[-1] = info.min, info.max
    else:
        a = rng.standard_normal(shape).astype(dtype)
        a.flat[:3] = [np.inf, -np.inf, np.finfo(dtype).tiny]
    return a


@pytest.mark.parametrize("code", sorted(IDX_DTYPES), ids=lambda c: f"0x{c:02X}")
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_round_trip_every_type_code(tmp_path, rng, code, suffix):
    dtype = IDX_DTYPES[code]
    for shape in [(5,), (2, 3, 4), (1, 1, 1, 2, 3)]:
        a = _sample(dtype, shape, rng)
        path = tmp_path / f"a{suffix}"
        write_idx(path, a)
        raw = path.read_bytes()
        assert (raw[:2] == b"\x1f\x8b") == suffix.endswith(".gz")
        plain = gzip.decompress(raw) if suffix.endswith(".gz") else raw
        # header: 00 00 <code> <ndim>, then big-endian uint32 dims, then big-endian data
        assert plain[:4] == bytes([0, 0, code, len(shape)])
        assert struct.unpack(f">{len(shape)}I", plain[4:4 + 4 * len(shape)]) == shape
        assert plain[4 + 4 * len(shape):] == a.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
        b = read_idx(path)
        assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == shape
        assert b.flags.c_contiguous and b.flags.writeable
        np.testing.assert_array_equal(b, a)
    assert no_temp_files(tmp_path)


def test_read_hand_made_big_endian_bytes(tmp_path):
    """Independent of write_idx: bytes laid out by hand with struct."""
    values = [1, -2, 300, -32768, 32767, 0]
    data = bytes([0, 0, 0x0B, 2]) + struct.pack(">2I", 2, 3) + struct.pack(">6h", *values)
    (tmp_path / "h.idx").write_bytes(data)
    np.testing.assert_array_equal(read_idx(tmp_path / "h.idx"), np.array(values).reshape(2, 3))
    data = bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2) + struct.pack(">2d", 0.5, -1e300)
    (tmp_path / "d.bin").write_bytes(gzip.compress(data))  # gzip detected by content, not name
    np.testing.assert_array_equal(read_idx(tmp_path / "d.bin"), [0.5, -1e300])


def test_gzip_by_magic_bytes_not_name(tmp_path, rng):
    a = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    write_idx(tmp_path / "plain.gz", a, compress=False)  # misleading name, plain content
    write_idx(tmp_path / "packed.idx", a, compress=True)  # gzip content, plain name
    assert (tmp_path / "plain.gz").read_bytes()[:2] == b"\x00\x00"
    assert (tmp_path / "packed.idx").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.idx"), a)


def test_write_accepts_views_and_foreign_byte_order(tmp_path, rng):
    a = rng.standard_normal((6, 4))
    for variant in (np.asfortranarray(a), a[::2, ::-1], a.astype(">f8"), a.astype("<f8")):
        write_idx(tmp_path / "v.idx", variant)
        np.testing.assert_array_equal(read_idx(tmp_path / "v.idx"), variant)


def test_write_empty_dimension(tmp_path):
    write_idx(tmp_path / "e.idx.gz", np.zeros((0, 28, 28), np.uint8))
    assert read_idx(tmp_path / "e.idx.gz").shape == (0, 28, 28)


def test_gzip_output_is_reproducible(tmp_path, rng):
    a = rng.integers(0, 9, 100, dtype=np.int32)
    write_idx(tmp_path / "1.gz", a)
    write_idx(tmp_path / "2.gz", a)
    assert (tmp_path / "1.gz").read_bytes() == (tmp_path / "2.gz").read_bytes()


@pytest.mark.parametrize("bad", [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.float16),
                                 np.zeros(3, np.uint16), np.array(["a"])])
def test_write_rejects_dtypes_without_type_code(tmp_path, bad):
    target = tmp_path / "x.idx"
    target.write_bytes(b"old")
    with pytest.raises(TypeError, match=rf"x\.idx.*dtype {bad.dtype}.*0x08 uint8"):
        write_idx(target, bad)
    assert target.read_bytes() == b"old"  # nothing written over the old file


def test_write_rejects_scalar_and_too_many_dims(tmp_path):
    with pytest.raises(ValueError, match=r"0-d array \(use \.reshape\(1\)\)"):
        write_idx(tmp_path / "s.idx", np.uint8(3))
    with pytest.raises(ValueError, match="1 to 32 dimensions"):
        write_idx(tmp_path / "s.idx", np.zeros((1,) * 33, np.uint8))


def test_read_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_read_reports_length_problems(tmp_path, compressed):
    good = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + struct.pack(">4i", 1, 2, 3, 4)
    cases = {
        "truncated data": good[:-1],
        "trailing data": good + b"\x00",
        "truncated gzip-compressed IDX header" if compressed else "truncated IDX header": good[:9],
    }
    for message, content in cases.items():
        path = tmp_path / "bad.idx"
        path.write_bytes(gzip.compress(content) if compressed else content)
        with pytest.raises(ValueError, match=message) as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_read_max_bytes(tmp_path):
    write_idx(tmp_path / "m.idx", np.zeros(100, np.float64))
    assert read_idx(tmp_path / "m.idx", max_bytes=800).shape == (100,)
    with pytest.raises(ValueError, match="more than max_bytes=799"):
        read_idx(tmp_path / "m.idx", max_bytes=799)


def test_read_real_mnist_files(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(-1, 784),
                                  book_read_images(mnist_dir / "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(labels, book_read_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz"))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits


# --------------------------------------------------------------------------------------------------
# labels and splits
# --------------------------------------------------------------------------------------------------


def test_to_one_hot():
    out = to_one_hot(np.array([2, 0, 1], np.uint8), 4)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[[2, 0, 1]])
    assert to_one_hot([1, 1], dtype=np.float64).dtype == np.float64
    assert to_one_hot(np.array([], np.int64), 3).shape == (0, 3)
    np.testing.assert_array_equal(to_one_hot(np.arange(10) % 10), book_one_hot(np.arange(10)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from 0 to 3"):
        to_one_hot([0, 3], 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from -1"):
        to_one_hot([-1, 2], 3)
    with pytest.raises(TypeError, match="labels must be integers, got dtype float64"):
        to_one_hot([0.0, 1.0], 2)
    with pytest.raises(ValueError, match=r"must be 1-d \(N,\), got shape \(2, 2\)"):
        to_one_hot([[0, 1], [1, 0]], 2)
    with pytest.raises(ValueError, match="num_classes must be a non-negative int"):
        to_one_hot([0], -1)


@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=120),
    test_size=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_split_properties(labels, test_size, seed):
    y = np.array(labels)
    n = y.size
    n_test = int(np.ceil(test_size * n - 1e-9))
    if not 0 < n_test < n:
        with pytest.raises(ValueError, match="both must be at least 1"):
            stratified_split_indices(y, test_size, seed)
        return
    train, test = stratified_split_indices(y, test_size, seed)
    assert train.size + test.size == n and test.size == n_test
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, no repeats
    for c in np.unique(y):
        ideal = n_test * np.sum(y == c) / n
        assert np.floor(ideal) <= np.sum(y[test] == c) <= np.ceil(ideal)  # stratified
    again = stratified_split_indices(y, test_size, seed)
    np.testing.assert_array_equal(again[1], test)  # deterministic


def test_stratified_split_seed_count_one_hot_and_errors():
    y = np.repeat(np.arange(3), 10)
    a = stratified_split_indices(y, 0.3, seed=1)
    b = stratified_split_indices(y, 0.3, seed=2)
    assert not np.array_equal(a[1], b[1])
    np.testing.assert_array_equal(stratified_split_indices(to_one_hot(y), 0.3, 1)[1], a[1])
    assert stratified_split_indices(y, 6, 0)[1].size == 6  # an int is a count
    assert np.bincount(y[stratified_split_indices(y, 6, 0)[1]]).tolist() == [2, 2, 2]
    for bad, err in [(0.0, ValueError), (1.0, ValueError), (30, ValueError), (0, ValueError),
                     (True, TypeError), ("0.2", TypeError)]:
        with pytest.raises(err, match="stratified_split: test_size"):
            stratified_split_indices(y, bad, 0)
    with pytest.raises(ValueError, match="t must be integer labels"):
        stratified_split_indices(y.astype(float), 0.2, 0)


def test_stratified_split_keeps_rows_with_labels():
    y = np.repeat(np.arange(4), 5)
    x = np.stack([y * 10 + np.arange(20), -y], axis=1)  # each row says which label it carries
    (x_tr, t_tr), (x_te, t_te) = stratified_split(x, y, test_size=0.25, seed=3)
    assert x_te.shape == (5, 2) and x_tr.shape == (15, 2)
    np.testing.assert_array_equal(-x_tr[:, 1], t_tr)
    np.testing.assert_array_equal(-x_te[:, 1], t_te)
    with pytest.raises(ValueError, match="same first dimension"):
        stratified_split(x[:3], y, 0.2)


# --------------------------------------------------------------------------------------------------
# DatasetSplit and load_dataset
# --------------------------------------------------------------------------------------------------


def test_dataset_split_is_the_books_tuple():
    tr = (np.zeros((3, 2)), np.zeros(3, np.uint8))
    te = (np.ones((1, 2)), np.ones(1, np.uint8))
    s = DatasetSplit(tr, te, name="x", split="stratified", description="d", num_classes=2,
                     image_shape=(1, 1, 2), source="here", test_size=0.25, seed=0)
    (x_train, t_train), (x_test, t_test) = s
    assert x_train is tr[0] and t_train is tr[1] and x_test is te[0] and t_test is te[1]
    assert len(s) == 2 and isinstance(s, tuple)
    assert s.x_train is tr[0] and s.t_train is tr[1] and s.x_test is te[0] and s.t_test is te[1]
    assert repr(s) == ("DatasetSplit(name='x', split='stratified', train=[x(3, 2) float64, "
                       "t(3,) uint8], test=[x(1, 2) float64, t(1,) uint8])")
    back = pickle.loads(pickle.dumps(s))
    assert back.metadata() == s.metadata() and back.image_shape == (1, 1, 2)
    np.testing.assert_array_equal(back[0][0], x_train)
    json.dumps(s.metadata())
    with pytest.raises(TypeError, match="unknown attribute"):
        DatasetSplit(tr, te, colour="red")


def test_load_dataset_dispatch():
    a = load_dataset("digits", test_size=0.5, seed=1)
    b = load_dataset(" DIGITS ", test_size=0.5, seed=1)
    assert a.name == "digits" and a.x_test.shape == (899, 64)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; expected one of 'digits', "
                                         "'mnist'"):
        load_dataset("cifar")
    # options another dataset takes pass through as None (a CLI's defaults), never silently
    np.testing.assert_array_equal(load_dataset("digits", data_dir=None, seed=1,
                                               test_size=0.5).x_test, a.x_test)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) data_dir, split; load_digits "
                                        "takes normalize, flatten"):
        load_dataset("digits", data_dir="/tmp", split="t10k")
    assert datasets.DATASETS == ("digits", "mnist")


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize,flatten,one_hot", FLAGS)
def test_digits_flags(normalize, flatten, one_hot):
    raw = load_digits(normalize=False, flatten=True, one_hot_label=False)
    d = load_digits(normalize=normalize, flatten=flatten, one_hot_label=one_hot)
    (x_train, t_train), (x_test, t_test) = d
    assert (len(x_train), len(x_test)) == (1347, 450)
    for x, t, (x_raw, t_raw) in [(x_train, t_train, raw[0]), (x_test, t_test, raw[1])]:
        assert x.shape == ((len(x), 64) if flatten else (len(x), 1, 8, 8))
        assert x.flags.c_contiguous and x.flags.writeable
        if normalize:
            assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
            np.testing.assert_array_equal(x.reshape(len(x), 64),
                                          x_raw.astype(np.float32) / np.float32(16.0))
        else:
            assert x.dtype == np.uint8 and x.max() == 16
            np.testing.assert_array_equal(x.reshape(len(x), 64), x_raw)
        if one_hot:
            assert t.shape == (len(x), 10) and t.dtype == np.float32
            np.testing.assert_array_equal(t.argmax(axis=1), t_raw)
            np.testing.assert_array_equal(t.sum(axis=1), 1)
        else:
            assert t.dtype == np.uint8 and t.shape == (len(x),)
    assert d.name == "digits" and d.split == "stratified" and d.image_shape == (1, 8, 8)
    assert "1,347 training and 450 test" in d.description


def test_digits_split_is_stratified_deterministic_and_seeded():
    a, b, c = load_digits(), load_digits(), load_digits(seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    counts_train, counts_test = np.bincount(a.t_train), np.bincount(a.t_test)
    total = counts_train + counts_test
    assert np.all(np.abs(counts_test - 450 * total / 1797) <= 1)
    a.x_train[...] = 0  # callers own their arrays: the cached copy stays intact
    np.testing.assert_array_equal(load_digits().x_test, b.x_test)
    assert load_digits().x_train.max() == 1.0


def test_digits_match_scikit_learn_and_fallback(monkeypatch):
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    ours = load_digits(normalize=False)
    train_idx, test_idx = stratified_split_indices(sk.target, 0.25, 0)
    np.testing.assert_array_equal(ours.x_train, sk.data[train_idx])
    np.testing.assert_array_equal(ours.x_test, sk.data[test_idx])
    np.testing.assert_array_equal(ours.t_test, sk.target[test_idx])
    # Without the CSV file, scikit-learn's own loader supplies the same data.
    monkeypatch.setattr(datasets, "_digits_file", lambda: None)
    datasets._digits_arrays.cache_clear()
    try:
        fallback = load_digits(normalize=False)
        assert fallback.source == "sklearn.datasets.load_digits()"
        np.testing.assert_array_equal(fallback.x_test, ours.x_test)
    finally:
        datasets._digits_arrays.cache_clear()


def test_digits_do_not_import_sklearn():
    code = ("import sys; from zerodl.datasets import load_digits; load_digits(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# MNIST from the real t10k files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize,flatten,one_hot", FLAGS)
def test_mnist_t10k_flags(mnist_dir, normalize, flatten, one_hot):
    images = book_read_images(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = book_read_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    train_idx, test_idx = stratified_split_indices(labels, 0.2, 0)
    d = load_mnist(normalize, flatten, one_hot, data_dir=mnist_dir, download=False, split="t10k")
    (x_train, t_train), (x_test, t_test) = d
    assert (len(x_train), len(x_test)) == (8000, 2000)
    for x, t, idx in [(x_train, t_train, train_idx), (x_test, t_test, test_idx)]:
        n = len(idx)
        assert x.shape == ((n, 784) if flatten else (n, 1, 28, 28)) and x.flags.c_contiguous
        if normalize:
            # the book: astype(float32) then /= 255.0
            expected = images[idx].astype(np.float32)
            expected /= 255.0
            assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
            np.testing.assert_array_equal(x.reshape(n, 784), expected)
        else:
            assert x.dtype == np.uint8 and x.max() == 255
            np.testing.assert_array_equal(x.reshape(n, 784), images[idx])
        if one_hot:
            assert t.dtype == np.float32
            np.testing.assert_array_equal(t, book_one_hot(labels[idx]))
        else:
            assert t.dtype == np.uint8
            np.testing.assert_array_equal(t, labels[idx])
    assert d.split == "t10k" and d.name == "mnist" and d.num_classes == 10
    assert d.image_shape == (1, 28, 28) and d.source == str(mnist_dir)
    assert "8,000 training and 2,000 test" in d.description


def test_mnist_t10k_split_is_stratified_and_seeded(mnist_dir):
    kw = {"data_dir": mnist_dir, "download": False, "split": "t10k"}
    a, b = load_mnist(**kw), load_mnist(**kw)
    np.testing.assert_array_equal(a.t_test, b.t_test)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    c = load_mnist(seed=7, test_size=1000, **kw)
    assert len(c.t_test) == 1000 and not np.array_equal(c.t_test, a.t_test[:1000])
    total = np.bincount(a.t_train, minlength=10) + np.bincount(a.t_test, minlength=10)
    assert np.all(np.abs(np.bincount(a.t_test, minlength=10) - 0.2 * total) <= 1)


def test_mnist_auto_falls_back_offline_with_warning(mnist_dir, dead_mirror):
    with pytest.warns(DatasetFallbackWarning, match="could not be downloaded"):
        d = load_mnist(data_dir=mnist_dir, mirrors=(dead_mirror,), progress=False)
    assert d.split == "t10k" and "could not be downloaded" in d.description
    with pytest.warns(DatasetFallbackWarning, match="download=False"):
        d = load_mnist(data_dir=mnist_dir, download=False)
    assert d.split == "t10k" and "download=False" in d.description
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit t10k split is silent
        load_mnist(data_dir=mnist_dir, split="t10k", download=False)


def test_mnist_official_needs_training_files(mnist_dir):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=mnist_dir, download=False, split="official")
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in msg
    assert str(mnist_dir) in msg and "download=False" in msg and "t10k-images" not in msg
    assert [p.name for p in info.value.missing] == ["train-images-idx3-ubyte.gz",
                                                    "train-labels-idx1-ubyte.gz"]


def test_mnist_data_dir_from_environment(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZERODL_DATA_DIR", str(mnist_dir))  # the MNIST folder itself
    assert datasets.default_data_dir() == mnist_dir
    assert load_mnist(split="t10k", download=False).source == str(mnist_dir)
    (tmp_path / "mnist").mkdir()
    monkeypatch.setenv("ZERODL_DATA_DIR", str(tmp_path))  # a data root with mnist/ inside
    assert datasets.default_data_dir() == tmp_path / "mnist"
    monkeypatch.delenv("ZERODL_DATA_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert datasets.default_data_dir() == tmp_path / "xdg" / "zerodl" / "mnist"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec
        assert datasets.default_data_dir() == datasets.Path.home() / ".cache/zerodl/mnist"


def _copy_real(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(mnist_dir / name, tmp_path / name)
    return tmp_path


def test_mnist_bit_flip_detected_by_checksum(mnist_dir, tmp_path):
    d = _copy_real(mnist_dir, tmp_path)
    path = d / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01  # inside the gzip header's mtime: gzip itself would not notice
    path.write_bytes(bytes(data))
    assert read_idx(path).shape == (10000,)  # readable ...
    with pytest.raises(CorruptDatasetError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt.*SHA-256"):
        load_mnist(data_dir=d, split="t10k", download=False)  # ... but never loaded


def test_mnist_truncated_file_detected(mnist_dir, tmp_path):
    d = _copy_real(mnist_dir, tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CorruptDatasetError, match="1,647,877 bytes, the official file 1,648,877"):
        load_mnist(data_dir=d, split="t10k", download=True, mirrors=())
    with pytest.raises(CorruptDatasetError, match="corrupt gzip data"):
        load_mnist(data_dir=d, split="t10k", download=False, verify=False)


# --------------------------------------------------------------------------------------------------
# MNIST checks on synthetic files (official split, content validation)
# --------------------------------------------------------------------------------------------------


def test_mnist_official_split_on_synthetic_files(tmp_path, monkeypatch):
    arrays, table = make_synthetic_mnist(tmp_path)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    for split in ("auto", "official"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            d = load_mnist(data_dir=tmp_path, split=split, download=False)
        (x_train, t_train), (x_test, t_test) = d
        assert d.split == "official" and d.test_size is None and d.seed is None
        assert "30 training images" in d.description and "20 test images" in d.description
        np.testing.assert_array_equal(x_train, arrays["train_img"].reshape(30, 784) / np.float32(255))
        np.testing.assert_array_equal(t_train, arrays["train_label"])
        assert x_test.shape == (20, 784)
        np.testing.assert_array_equal(t_test, arrays["test_label"])
    d = load_mnist(False, False, True, data_dir=tmp_path, split="official", download=False)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_train.dtype == np.uint8
    assert d.t_test.shape == (20, 10) and d.t_test.dtype == np.float32


@pytest.mark.parametrize("problem", ["label 10", "count mismatch", "image shape", "labels 2-d"])
def test_mnist_content_checks(tmp_path, monkeypatch, problem):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    expected = {"label 10": "labels must be digits 0-9, found 10",
                "count mismatch": "holds 20 images but t10k-labels-idx1-ubyte.gz 19 labels",
                "image shape": r"expected uint8 images \(N, 28, 28\)",
                "labels 2-d": r"expected uint8 labels \(N,\)"}[problem]
    if problem == "label 10":
        labels[3] = 10
    elif problem == "count mismatch":
        labels = labels[:19]
    elif problem == "image shape":
        images = images[:, :27]
    else:
        labels = labels.reshape(10, 2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(CorruptDatasetError, match=expected):
        load_mnist(data_dir=tmp_path, split="t10k", download=False, verify=False)
    # with verification on, the checksum already refuses these non-official files
    with pytest.raises(CorruptDatasetError, match="not the official MNIST file"):
        load_mnist(data_dir=tmp_path, split="t10k", download=False)


def test_bad_test_size_names_the_loader():
    with pytest.raises(ValueError, match=r"load_digits: test_size=1797 leaves 1797 test and 0"):
        load_digits(test_size=1797)
    with pytest.raises(TypeError, match="load_digits: test_size must be a fraction"):
        load_digits(test_size=None)


def test_mnist_t10k_bad_test_size(mnist_dir):
    with pytest.raises(ValueError, match=r"load_mnist: test_size fraction must lie in \(0, 1\)"):
        load_mnist(data_dir=mnist_dir, split="t10k", download=False, test_size=1.5)


def test_mnist_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'train'; expected one of 'auto', "
                                         "'official', 't10k'"):
        load_mnist(split="train")


# --------------------------------------------------------------------------------------------------
# downloads (local HTTP server)
# --------------------------------------------------------------------------------------------------


def test_download_falls_through_corrupt_and_missing_mirrors(mnist_dir, tmp_path, server):
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for name in names:
        good = (mnist_dir / name).read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF  # same size, wrong bytes: only the checksum can tell
        server.routes[f"/corrupt/{name}"] = (bytes(bad), True)
        server.routes[f"/good/{name}"] = (good, True)
    cache = tmp_path / "cache"
    mirrors = (server.url("corrupt"), server.url("missing"), server.url("good"))
    d = load_mnist(data_dir=cache, split="t10k", mirrors=mirrors, progress=False)
    assert d.split == "t10k" and len(d.t_train) == 8000
    for name in names:  # cached byte-identical to the official file
        assert (cache / name).read_bytes() == (mnist_dir / name).read_bytes()
    assert server.log == [f"/{m}/{n}" for n in names for m in ("corrupt", "missing", "good")]
    assert no_temp_files(cache)
    # a second call uses the cache: no request at all
    server.log.clear()
    load_mnist(data_dir=cache, split="t10k", mirrors=mirrors, progress=False)
    assert server.log == []


def test_official_download_with_synthetic_files(tmp_path, server, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    arrays, table = make_synthetic_mnist(source)
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    for spec in table.values():
        server.routes[f"/m/{spec.name}"] = ((source / spec.name).read_bytes(), False)
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_mnist(data_dir=cache, mirrors=(server.url("m"),), progress=False)
    assert d.split == "official" and len(d.t_train) == 30
    np.testing.assert_array_equal(d.t_train, arrays["train_label"])
    assert sorted(p.name for p in cache.iterdir()) == sorted(s.name for s in table.values())


def test_fetch_file_reasons_and_no_leftovers(tmp_path, server, dead_mirror):
    body = b"0123456789" * 100
    digest = hashlib.sha256(body).hexdigest()
    server.routes["/short/f.gz"] = (body[:-1], True)
    server.routes["/long/f.gz"] = (body + b"!", False)  # no Content-Length: caught while reading
    server.routes["/evil/f.gz"] = (body[::-1], True)
    server.routes["/ok/f.gz"] = (body, True)
    dest = tmp_path / "d"
    mirrors = [server.url("short"), server.url("long"), server.url("evil"), server.url("none"),
               dead_mirror, "ftp:/malformed"]
    with pytest.raises(DatasetNotFoundError) as info:
        fetch_file("f.gz", dest, size=1000, sha256=digest, mirrors=mirrors, progress=False)
    reasons = dict(info.value.attempts)
    assert reasons[server.url("short") + "f.gz"] == "server announced 999 bytes, expected 1,000"
    assert reasons[server.url("long") + "f.gz"] == "more than the expected 1,000 bytes"
    assert reasons[server.url("evil") + "f.gz"].startswith("SHA-256 ")
    assert reasons[server.url("none") + "f.gz"] == "HTTP 404 Not Found"
    assert "Connection refused" in reasons[dead_mirror + "f.gz"]
    assert len(reasons) == len(mirrors)
    assert not (dest / "f.gz").exists() and (not dest.exists() or no_temp_files(dest))
    path = fetch_file("f.gz", dest, size=1000, sha256=digest, progress=False,
                      mirrors=[server.url("evil"), server.url("ok").rstrip("/")])
    assert path == dest / "f.gz" and path.read_bytes() == body and no_temp_files(dest)


def test_unreachable_mirror_skipped_but_answering_mirror_retried(tmp_path, server, dead_mirror):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path, split="t10k", progress=False,
                   mirrors=(dead_mirror, server.url("none")))
    assert server.log == ["/none/t10k-images-idx3-ubyte.gz", "/none/t10k-labels-idx1-ubyte.gz"]
    reasons = [r for _, r in info.value.attempts]
    assert "Connection refused" in reasons[0]
    assert reasons[1:] == ["HTTP 404 Not Found", "skipped: unreachable earlier",
                           "HTTP 404 Not Found"]


def test_download_progress_bar(tmp_path, server, capsys):
    server.routes["/p/f.bin"] = (b"x" * 5000, True)
    fetch_file("f.bin", tmp_path, size=5000, sha256=hashlib.sha256(b"x" * 5000).hexdigest(),
               mirrors=[server.url("p")], progress=True)
    assert "f.bin" in capsys.readouterr().err


def test_offline_error_names_everything(tmp_path, dead_mirror):
    cache = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=cache, mirrors=(dead_mirror,), progress=False)
    err = info.value
    msg = str(err)
    assert isinstance(err, FileNotFoundError)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in msg.splitlines()[0] and f"{dead_mirror}{name}: " in msg
    assert str(cache) in msg and "ZERODL_DATA_DIR" in msg and "Connection refused" in msg
    assert "Traceback" not in msg and "urllib" not in msg
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert len(err.missing) == 4 and err.directory == cache and len(err.attempts) == 4
    # an unreachable mirror is tried once per call, not once per file
    assert [r for _, r in err.attempts].count("skipped: unreachable earlier") == 3
    assert not cache.exists() or os.listdir(cache) == []
