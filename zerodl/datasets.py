"""Datasets: the book's ``load_mnist``, scikit-learn's 8×8 digits, and the IDX file format.

Book → zerodl::

    from dataset.mnist import load_mnist        →  from zerodl.datasets import load_mnist
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, flatten=True,
                                                      one_hot_label=False)   # unchanged

What is the same as the book (``dataset/mnist.py``):

* the return value unpacks as ``((x_train, t_train), (x_test, t_test))``;
* ``normalize=True`` gives float32 images in ``[0, 1]`` (``/ 255``), ``False`` the raw uint8 pixels;
* ``flatten=True`` gives ``(N, 784)``, ``False`` gives ``(N, 1, 28, 28)``;
* integer labels are uint8 ``(N,)``, as the book's are.

Where zerodl departs from it, on purpose:

* one-hot labels are float32 ``(N, 10)`` rows (the book builds float64 ones); the layers convert
  labels to the scores' dtype anyway, and float32 halves the memory;
* no pickle cache (never unpickle files from disk): the gzipped IDX files are parsed directly, with
  every header, length and (for the official files) SHA-256 digest checked before use;
* files are looked for in ``data_dir`` (default ``$ZERODL_DATA_DIR``, else the user cache directory),
  fetched from today's mirrors (the original host no longer serves them) with a progress bar,
  verified, and written atomically — never beside the package;
* only the 10,000-image test half ("t10k") may be present (no internet): ``split="auto"`` (the
  default) then trains on a deterministic stratified split of it, warns, and says so in the result's
  :attr:`DatasetSplit.split` / :attr:`DatasetSplit.description`.

The result of every loader is a :class:`DatasetSplit`: a tuple that unpacks exactly like the book's,
carrying ``.name``, ``.split``, ``.description``, ``.num_classes``, ``.image_shape``, ``.source``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from zerodl._fileio import NotARegularFileError, atomic_write, open_regular

__all__ = [
    "DATASETS",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "CorruptDatasetError",
    "DatasetFallbackWarning",
    "DatasetNotFoundError",
    "DatasetSplit",
    "default_data_dir",
    "download_mnist",
    "fetch_file",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
    "stratified_split",
    "stratified_split_indices",
    "to_one_hot",
    "user_cache_dir",
    "write_idx",
]

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------------------------------
# Errors and the result type
# --------------------------------------------------------------------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing and could not be downloaded.

    The message names the missing files, where they were looked for, every mirror tried (with the
    reason it failed) and how to provide the files by hand. Attributes: ``missing`` (paths),
    ``directory``, ``attempts`` (``(url, reason)`` pairs, empty when nothing was downloaded).
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[Path] = (),
        directory: Path | None = None,
        attempts: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.directory = directory
        self.attempts = tuple(attempts)

    def __str__(self) -> str:  # FileNotFoundError would otherwise format (errno, strerror)
        return str(self.args[0])


class CorruptDatasetError(ValueError):
    """A dataset file exists but is damaged: wrong checksum, size, IDX header or contents."""


class DatasetFallbackWarning(UserWarning):
    """``split="auto"`` could not use the official MNIST split and fell back to the t10k split."""


class DatasetSplit(tuple):
    """``((x_train, t_train), (x_test, t_test))``, plus what it is.

    A tuple subclass, so the book's ``(x_train, t_train), (x_test, t_test) = load_mnist()`` works
    unchanged. Attributes:

    * ``name``: ``"mnist"`` or ``"digits"``;
    * ``split``: ``"official"`` (MNIST's 60k/10k files), ``"t10k"`` (a stratified split of MNIST's
      10k test file) or ``"stratified"`` (a stratified split of a single-file dataset);
    * ``description``: one human sentence saying the above, with counts and sources;
    * ``num_classes``, ``image_shape`` (``(C, H, W)``), ``source`` (directory or file read),
      ``test_size`` and ``seed`` (``None`` for the official split).
    """

    name: str
    split: str
    description: str
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str
    test_size: float | int | None
    seed: int | None

    def __new__(
        cls,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        **meta: Any,
    ) -> DatasetSplit:
        self = super().__new__(cls, (tuple(train), tuple(test)))
        defaults = {"name": "", "split": "", "description": "", "num_classes": 0,
                    "image_shape": (), "source": "", "test_size": None, "seed": None}
        unknown = set(meta) - set(defaults)
        if unknown:
            raise TypeError(f"DatasetSplit: unknown attribute(s) {sorted(unknown)}")
        for key, value in {**defaults, **meta}.items():
            setattr(self, key, value)
        return self

    def __reduce__(self) -> tuple[Callable[..., DatasetSplit], tuple[Any, ...]]:
        # tuple's default pickling would call __new__ with the tuple only and lose the attributes.
        return _rebuild_split, (self[0], self[1], self.metadata())

    def metadata(self) -> dict[str, Any]:
        """The attributes as a JSON-able dict (what a Trainer or the CLI logs)."""
        return {"name": self.name, "split": self.split, "description": self.description,
                "num_classes": self.num_classes, "image_shape": list(self.image_shape),
                "source": self.source, "test_size": self.test_size, "seed": self.seed}

    @property
    def x_train(self) -> np.ndarray:
        return self[0][0]

    @property
    def t_train(self) -> np.ndarray:
        return self[0][1]

    @property
    def x_test(self) -> np.ndarray:
        return self[1][0]

    @property
    def t_test(self) -> np.ndarray:
        return self[1][1]

    def __repr__(self) -> str:
        def shapes(x: np.ndarray, t: np.ndarray) -> str:
            return f"x{x.shape} {x.dtype}, t{t.shape} {t.dtype}"

        return (f"DatasetSplit(name={self.name!r}, split={self.split!r}, "
                f"train=[{shapes(*self[0])}], test=[{shapes(*self[1])}])")


def _rebuild_split(train: tuple, test: tuple, meta: dict[str, Any]) -> DatasetSplit:
    meta = dict(meta)
    meta["image_shape"] = tuple(meta.get("image_shape", ()))
    return DatasetSplit(train, test, **meta)


# --------------------------------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------------------------------

#: IDX type code → big-endian dtype (the format stores everything big-endian).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
_TYPE_LIST = ", ".join(f"0x{c:02X} {dt.newbyteorder('=').name}" for c, dt in IDX_TYPES.items())

#: numpy's portable limit on dimensions (numpy 1.x: 32; 2.x allows 64).
IDX_MAX_NDIM = 32

#: Bytes decompressed or read per step: memory grows with the data actually present, never with
#: what a header claims.
_CHUNK = 1 << 20

#: Deflate cannot expand one compressed byte into more than 1032 bytes (a 258-byte match coded in
#: two bits), so a gzip file of S bytes holds at most ~1032·S bytes: anything a header claims
#: beyond that is a lie we can reject before decompressing anything.
_DEFLATE_MAX_RATIO = 1032

#: Default cap of :func:`read_idx` on what a gzip file may expand to, as a multiple of its size.
#: Real IDX data compresses far less (MNIST's images 4.8x, labels 2.1x); a file claiming more is
#: refused before anything is decompressed, so verifying a file costs a small multiple of its size.
IDX_MAX_GZIP_RATIO = 64

_GZIP_MAGIC = b"\x1f\x8b"


def _preview(data: bytes) -> str:
    """The first bytes of a file, for messages ("this is an HTML page, not IDX" is often the news)."""
    return repr(bytes(data[:16]))


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes or up to end of file (fewer only at EOF)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_idx(path: PathLike, *, max_bytes: int | None = None,
             max_ratio: float | None = IDX_MAX_GZIP_RATIO) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a native-endian array.

    IDX layout (big-endian): magic ``00 00 <type> <ndim>``; ``ndim`` uint32 dimensions; the data.
    Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
    Compression is recognised by the gzip magic bytes ``1f 8b``, not by the file name.

    Args:
        path: the file.
        max_bytes: optional cap on the data size a header may declare (``ValueError`` beyond it).
        max_ratio: a gzip file may declare at most this many times its own size (default
            :data:`IDX_MAX_GZIP_RATIO`); ``None`` allows up to what deflate can physically hold.

    Returns:
        An array of shape ``dims`` and the file's dtype (native byte order), C-contiguous, writable.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file and the problem — a FIFO, device or directory instead of a
            regular file (refused before any read, never blocking), wrong magic number, unknown type code, bad
            number of dimensions, truncated header or data, trailing data, a declared size larger
            than the file can hold or than ``max_bytes``, or a corrupt gzip stream.

    Memory is never allocated for what a header merely claims: the declared size is checked against
    the file size (plain) or against what is actually decompressed, in bounded chunks, stopping one
    byte past the declared size (gzip).
    """
    where = f"read_idx: {os.fspath(path)}"
    try:
        # Regular files only, opened non-blocking: a FIFO would block forever, a device never end.
        raw_file = open_regular(path, "IDX file")
    except NotARegularFileError as exc:
        raise ValueError(f"read_idx: {exc}") from None
    with raw_file as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        file_size = os.fstat(raw.fileno()).st_size
        if not compressed:
            return _read_idx_stream(raw, where, compressed=False, file_size=file_size,
                                    max_bytes=max_bytes, max_ratio=max_ratio)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_idx_stream(stream, where, compressed=True, file_size=file_size,
                                        max_bytes=max_bytes, max_ratio=max_ratio)
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile (an OSError), a CRC/length mismatch, or a stream that ends early.
            kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
            raise ValueError(
                f"{where}: corrupt gzip data ({kind}: {exc}); "
                "the file is damaged or truncated"
            ) from None


def _read_idx_stream(
    stream: BinaryIO, where: str, *, compressed: bool, file_size: int, max_bytes: int | None,
    max_ratio: float | None = IDX_MAX_GZIP_RATIO,
) -> np.ndarray:
    kind = "gzip-compressed IDX" if compressed else "IDX"
    magic = _read_up_to(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{where}: truncated {kind} header: {len(magic)} byte(s), the magic "
                         f"number alone needs 4")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{where}: not an IDX file: the magic number must start with 00 00, got "
                         f"{magic.hex(' ')} ({_preview(magic)})")
    code, ndim = magic[2], magic[3]
    if code not in IDX_TYPES:
        raise ValueError(f"{where}: unknown IDX type code 0x{code:02X} in magic number "
                         f"{magic.hex(' ')}; expected one of {_TYPE_LIST}")
    if not 1 <= ndim <= IDX_MAX_NDIM:
        raise ValueError(f"{where}: IDX header declares {ndim} dimensions; expected 1 to "
                         f"{IDX_MAX_NDIM}")
    dims_raw = _read_up_to(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(f"{where}: truncated {kind} header: {ndim} dimensions need "
                         f"{4 * ndim} bytes after the magic number, got {len(dims_raw)}")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = IDX_TYPES[code]
    nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow, whatever the header says
    header = 4 + 4 * ndim
    declared = f"shape {dims} of {dtype.newbyteorder('=').name} ({nbytes:,} bytes)"
    if max_bytes is not None and nbytes > max_bytes:
        raise ValueError(f"{where}: header declares {declared}, more than max_bytes={max_bytes:,}")
    if not compressed:
        actual = file_size - header
        if actual != nbytes:
            problem = "truncated data" if actual < nbytes else "trailing data"
            raise ValueError(f"{where}: {problem}: the header declares {declared} but "
                             f"{actual:,} bytes follow the {header}-byte header")
        buf = np.empty(nbytes, dtype=np.uint8)  # the file size vouches for nbytes
        got = stream.readinto(memoryview(buf)) if nbytes else 0
        if got != nbytes or stream.read(1):
            raise ValueError(f"{where}: the file changed size while being read "
                             f"(expected {nbytes:,} data bytes, read {got:,})")
        data: bytes | bytearray | np.ndarray = buf
    else:
        if nbytes > file_size * _DEFLATE_MAX_RATIO + 1024:
            raise ValueError(f"{where}: header declares {declared}, more than a gzip file of "
                             f"{file_size:,} bytes can possibly hold; truncated or corrupt")
        if max_ratio is not None and nbytes > file_size * max_ratio + 1024:
            raise ValueError(f"{where}: header declares {declared}, {nbytes / max(file_size, 1):,.0f} times "
                             f"the {file_size:,}-byte gzip file; refused before decompressing (real IDX "
                             f"data compresses far less than {max_ratio:g}x; pass max_ratio=None to allow)")
        # Decompress in bounded chunks up to one byte past the declared size: memory follows the
        # data actually present, and a decompression bomb stops at the declared size + 1.
        data = bytearray()
        cap = nbytes + 1
        while len(data) < cap:
            chunk = stream.read(min(_CHUNK, cap - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) < nbytes:
            raise ValueError(f"{where}: truncated data: the header declares {declared} but only "
                             f"{len(data):,} bytes follow the header after decompression")
        if len(data) > nbytes:
            raise ValueError(f"{where}: trailing data: more than the {declared} declared by the "
                             f"header follow it after decompression")
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(dims)
    except ValueError as exc:  # e.g. (0, 2**32-1, 2**32-1, ...): empty, yet too big for numpy
        raise ValueError(f"{where}: header declares {declared}, which numpy cannot represent "
                         f"({exc})") from None
    if dtype.itemsize > 1:
        return array.astype(dtype.newbyteorder("="))  # native order, own writable memory
    return array.view(dtype.newbyteorder("="))


def write_idx(
    path: PathLike, array: Any, *, compress: bool | None = None, compresslevel: int = 6
) -> None:
    """Write ``array`` as an IDX file, atomically; gzip-compressed when the name ends in ``.gz``.

    Args:
        path: destination; written through :func:`zerodl._fileio.atomic_write`, so a crash never
            leaves a half-written file behind.
        array: uint8, int8, int16, int32, float32 or float64; 1 to 32 dimensions, each < 2**32.
        compress: force (``True``) or prevent (``False``) gzip; ``None``: by the ``.gz`` suffix.
        compresslevel: gzip level (6: zlib's default speed/size balance; 9 is much slower).

    The gzip stream has mtime 0 and no file name, so equal arrays give byte-identical files.

    Raises:
        TypeError: the dtype has no IDX type code.
        ValueError: 0-d array, too many dimensions or a dimension ≥ 2**32.
    """
    where = f"write_idx: {os.fspath(path)}"
    a = np.asarray(array)
    native = a.dtype.newbyteorder("=") if a.dtype.byteorder in "<>" else a.dtype
    if native not in _IDX_CODES:
        raise TypeError(f"{where}: dtype {a.dtype} has no IDX type code; expected one of "
                        f"{_TYPE_LIST} (convert with .astype(...))")
    if not 1 <= a.ndim <= IDX_MAX_NDIM:
        raise ValueError(f"{where}: IDX needs 1 to {IDX_MAX_NDIM} dimensions, got a "
                         f"{a.ndim}-d array{' (use .reshape(1))' if a.ndim == 0 else ''}")
    if any(d >= 2**32 for d in a.shape):
        raise ValueError(f"{where}: dimension sizes must be < 2**32, got shape {a.shape}")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    big = np.ascontiguousarray(a, dtype=IDX_TYPES[code]).reshape(-1).view(np.uint8)
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    with atomic_write(path, "wb") as out:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                               compresslevel=compresslevel) as gz:
                gz.write(header)
                gz.write(big.data)
        else:
            out.write(header)
            out.write(big.data)


# --------------------------------------------------------------------------------------------------
# Labels and splits
# --------------------------------------------------------------------------------------------------


def to_one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """One-hot rows for integer class labels.

    Args:
        labels: integer labels ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of columns; default ``labels.max() + 1``.
        dtype: of the result (float32 by default; the book's loader makes float64).

    Returns:
        ``(N, num_classes)`` array of ``dtype``: 1 at ``[n, labels[n]]``, 0 elsewhere.
    """
    t = np.asarray(labels)
    if t.dtype.kind not in "iu":
        raise TypeError(f"to_one_hot: labels must be integers, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"to_one_hot: labels must be 1-d (N,), got shape {t.shape}")
    if num_classes is None:
        num_classes = int(t.max()) + 1 if t.size else 0
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 0:
        raise ValueError(f"to_one_hot: num_classes must be a non-negative int, got {num_classes!r}")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"to_one_hot: labels must lie in [0, {num_classes}), got values from "
                         f"{int(t.min())} to {int(t.max())}")
    out = np.zeros((t.shape[0], int(num_classes)), dtype=dtype)
    out[np.arange(t.shape[0]), t] = 1
    return out


def _as_class_labels(t: Any, where: str) -> np.ndarray:
    """Integer labels ``(N,)`` from integer labels or one-hot rows ``(N, C)``."""
    t = np.asarray(t)
    if t.ndim == 2:
        return t.argmax(axis=1)
    if t.ndim != 1 or t.dtype.kind not in "iu":
        raise ValueError(f"{where}: t must be integer labels (N,) or one-hot rows (N, C), got "
                         f"shape {t.shape} dtype {t.dtype}")
    return t


def _test_count(test_size: float, n: int, where: str) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer,
                                                                 np.floating)):
        raise TypeError(f"{where}: test_size must be a fraction in (0, 1) or a count, got "
                        f"{test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"{where}: test_size fraction must lie in (0, 1), got {test_size}")
        # ceil as scikit-learn does; the epsilon keeps 0.2 * 10000 at exactly 2000.
        n_test = math.ceil(test_size * n - 1e-9)
    else:
        n_test = int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"{where}: test_size={test_size!r} leaves {n_test} test and "
                         f"{n - n_test} training samples out of {n}; both must be at least 1")
    return n_test


def stratified_split_indices(
    labels: Any, test_size: float = 0.2, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test indices.

    Args:
        labels: integer labels ``(N,)`` (or one-hot rows ``(N, C)``).
        test_size: fraction in ``(0, 1)`` (test count rounded up, as scikit-learn does) or a count.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same split.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 index arrays partitioning ``range(N)``. Each class
        contributes to the test set in proportion to its size (largest-remainder rounding, so the
        counts add up exactly), drawn at random within the class.
    """
    where = "stratified_split"
    y = _as_class_labels(labels, where)
    n = y.shape[0]
    n_test = _test_count(test_size, n, where)
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    ideal = n_test * counts / n
    per_class = np.floor(ideal).astype(np.int64)
    short = n_test - int(per_class.sum())
    # Largest remainder: the classes closest to earning one more test sample get it (ties: order).
    order = np.argsort(-(ideal - per_class), kind="stable")
    per_class[order[:short]] += 1
    if not (seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence))
            or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0)):
        raise ValueError(f"{where}: seed must be None or an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    test_parts = []
    for k in range(classes.size):
        members = np.flatnonzero(y_idx == k)
        test_parts.append(rng.permutation(members)[: per_class[k]])
    is_test = np.zeros(n, dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def stratified_split(
    x: Any, t: Any, test_size: float = 0.2, seed: int | None = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split ``(x, t)`` into ``((x_train, t_train), (x_test, t_test))``, stratified by class.

    ``x``: ``(N, ...)``; ``t``: labels ``(N,)`` or one-hot ``(N, C)``. Rows keep their original
    relative order. See :func:`stratified_split_indices` for ``test_size`` and ``seed``.
    """
    x = np.asarray(x)
    t = np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or x.shape[0] != t.shape[0]:
        raise ValueError(f"stratified_split: x and t need the same first dimension, got shapes "
                         f"{x.shape} and {t.shape}")
    train_idx, test_idx = stratified_split_indices(t, test_size, seed)
    return (x[train_idx], t[train_idx]), (x[test_idx], t[test_idx])


# --------------------------------------------------------------------------------------------------
# Where files live, and downloading them
# --------------------------------------------------------------------------------------------------


class MnistFile(NamedTuple):
    """One official MNIST file: name, size in bytes and SHA-256 of the gzipped file."""

    name: str
    size: int
    sha256: str


#: The four official files (keys are the book's), with the official sizes and SHA-256 digests.
MNIST_FILES: dict[str, MnistFile] = {
    "train_img": MnistFile(
        "train-images-idx3-ubyte.gz", 9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_label": MnistFile(
        "train-labels-idx1-ubyte.gz", 28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_img": MnistFile(
        "t10k-images-idx3-ubyte.gz", 1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_label": MnistFile(
        "t10k-labels-idx1-ubyte.gz", 4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}

#: Mirrors tried in order (the original yann.lecun.com host no longer serves the files):
#: PyTorch's and TensorFlow Datasets' copies.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

MNIST_SPLITS = ("auto", "official", "t10k")
_TRAIN_KEYS = ("train_img", "train_label")
_TEST_KEYS = ("test_img", "test_label")


def user_cache_dir() -> Path:
    """zerodl's per-user cache: ``$XDG_CACHE_HOME/zerodl`` (``~/.cache/zerodl``) on Linux,
    ``~/Library/Caches/zerodl`` on macOS, ``%LOCALAPPDATA%\\zerodl\\Cache`` on Windows."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "zerodl" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "zerodl"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "zerodl"


def default_data_dir(dataset: str = "mnist") -> Path:
    """Where ``dataset``'s files are looked for and downloaded to when no ``data_dir`` is given.

    ``$ZERODL_DATA_DIR`` if set — either a data root holding a ``mnist/`` folder, or the MNIST
    folder itself (if it directly holds an official MNIST file and has no ``mnist/`` subfolder) —
    else ``user_cache_dir() / dataset``.
    """
    env = os.environ.get("ZERODL_DATA_DIR")
    if env:
        root = Path(env).expanduser()
        names = [f.name for f in MNIST_FILES.values()] if dataset == "mnist" else []
        if not (root / dataset).is_dir() and any((root / name).is_file() for name in names):
            return root
        return root / dataset
    return user_cache_dir() / dataset


class _BadDownload(Exception):
    """A mirror answered, but with the wrong bytes."""


def _describe_network_error(exc: BaseException) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}" if isinstance(
            exc.reason, BaseException) else f"URLError: {exc.reason}"
    if isinstance(exc, _BadDownload):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _is_unreachable(exc: BaseException) -> bool:
    """The server was never reached (as opposed to answering badly): DNS, refused, timeout."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return False
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, OSError)
    return isinstance(exc, (TimeoutError, ConnectionError))


def fetch_file(
    filename: str,
    directory: PathLike,
    *,
    size: int,
    sha256: str,
    mirrors: Iterable[str],
    timeout: float = 30.0,
    progress: bool | None = None,
    unreachable: set[str] | None = None,
) -> Path:
    """Download ``filename`` into ``directory`` from the first mirror that serves the right bytes.

    Each mirror URL is joined with ``filename``. The body is streamed (at most ``size + 1`` bytes are
    read) into a temporary file beside the destination while its SHA-256 is computed; only a file
    of exactly ``size`` bytes with digest ``sha256`` is renamed into place (atomically). A mirror
    that fails (HTTP error, no network, wrong size or digest) is skipped for the next one.

    Args:
        progress: tqdm bar on stderr; ``None``: only when stderr is a terminal.
        timeout: seconds per network operation (connect, each read).
        unreachable: optional set shared between calls: mirrors that could not be reached at all
            (no route, DNS failure, refused, timed out) are added to it and skipped afterwards, so
            fetching four files behind a firewall costs one timeout per mirror, not four.

    Returns:
        The path of the verified file.

    Raises:
        DatasetNotFoundError: every mirror failed; ``.attempts`` lists ``(url, reason)``.
    """
    import http.client  # deferred: only downloads need the network stack
    import urllib.request

    from tqdm.auto import tqdm

    from zerodl._version import __version__

    directory = Path(directory)
    dest = directory / filename
    attempts: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        if unreachable is not None and mirror in unreachable:
            attempts.append((url, "skipped: unreachable earlier"))
            continue
        try:
            request = urllib.request.Request(url, headers={"User-Agent": f"zerodl/{__version__}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                if announced is not None and announced.isdigit() and int(announced) != size:
                    raise _BadDownload(f"server announced {int(announced):,} bytes, expected "
                                       f"{size:,}")
                digest = hashlib.sha256()
                received = 0
                with atomic_write(dest, "wb") as out, tqdm(
                    total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=filename,
                    disable=None if progress is None else not progress,
                ) as bar:
                    while True:
                        chunk = response.read(min(_CHUNK, size + 1 - received))
                        if not chunk:
                            break
                        received += len(chunk)
                        if received > size:
                            raise _BadDownload(f"more than the expected {size:,} bytes")
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
                    # Raising here makes atomic_write discard the temporary file.
                    if received != size:
                        raise _BadDownload(f"got {received:,} bytes, expected {size:,}")
                    if digest.hexdigest() != sha256:
                        raise _BadDownload(f"SHA-256 {digest.hexdigest()} does not match the "
                                           f"expected {sha256}")
            return dest
        except (OSError, http.client.HTTPException, ValueError, _BadDownload) as exc:
            # OSError covers URLError/HTTPError, timeouts and connection resets; ValueError a
            # malformed mirror URL.
            attempts.append((url, _describe_network_error(exc)))
            if unreachable is not None and _is_unreachable(exc):
                unreachable.add(mirror)
    tried = "\n".join(f"  {u}: {r}" for u, r in attempts) or "  (no mirrors given)"
    raise DatasetNotFoundError(
        f"could not download {filename} into {directory}; mirrors tried:\n{tried}",
        missing=[dest], directory=directory, attempts=attempts,
    )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_mnist_file(path: Path, spec: MnistFile) -> None:
    """Size and SHA-256 against the official values; CorruptDatasetError if they differ."""
    actual_size = path.stat().st_size
    problem = None
    if actual_size != spec.size:
        problem = f"it has {actual_size:,} bytes, the official file {spec.size:,}"
    else:
        digest = _sha256_of(path)
        if digest != spec.sha256:
            problem = f"its SHA-256 is {digest}, the official file's {spec.sha256}"
    if problem:
        raise CorruptDatasetError(
            f"load_mnist: {path} is corrupt or not the official MNIST file: {problem}. Delete it "
            "(load_mnist(download=True) fetches it again) or replace it with a good copy; "
            "verify=False skips this check for deliberately modified files."
        )


def _not_found(
    directory: Path, names: Sequence[str], attempts: Sequence[tuple[str, str]], *,
    download: bool, mirrors: Sequence[str], missing: Sequence[Path],
) -> DatasetNotFoundError:
    """The one "files missing" error: what, where it looked, what was tried, how to fix it."""
    if download:
        tried = "\n".join(f"  {u}: {r}" for u, r in attempts) or "  (no mirrors given)"
        how = f"Downloading them failed from every mirror:\n{tried}\n"
    else:
        how = "download=False, so nothing was downloaded.\n"
    urls = "\n".join(f"  {m if m.endswith('/') else m + '/'}<file>" for m in mirrors)
    return DatasetNotFoundError(
        f"MNIST file(s) not found in {directory} ({_origin(directory)}): {', '.join(names)}.\n"
        f"{how}To provide them, download {', '.join(names)} on a machine with internet access "
        f"from one of\n{urls or '  (no mirrors given)'}\nand copy them (still gzipped) into "
        f"{directory}, or point the environment variable ZERODL_DATA_DIR (or "
        f"load_mnist(data_dir=...)) at a folder that holds them. With only the two t10k files, "
        f"split='t10k' trains on a split of the test set.",
        missing=missing, directory=directory, attempts=attempts,
    )


def _origin(directory: Path) -> str:
    """How ``directory`` was chosen, for error messages."""
    env = os.environ.get("ZERODL_DATA_DIR")
    if directory == default_data_dir("mnist"):
        return "from $ZERODL_DATA_DIR" if env else "the default cache folder"
    return "data_dir"


def _ensure_mnist_files(
    keys: Sequence[str],
    directory: Path,
    *,
    download: bool,
    mirrors: Sequence[str],
    timeout: float,
    progress: bool | None,
    unreachable: set[str] | None = None,
) -> dict[str, Path]:
    """Paths of the files ``keys`` in ``directory``, downloading missing ones if allowed."""
    paths = {key: directory / MNIST_FILES[key].name for key in keys}
    missing = [key for key in keys if not paths[key].is_file()]
    attempts: list[tuple[str, str]] = []
    failed: list[str] = []
    if missing and download:
        for key in missing:
            spec = MNIST_FILES[key]
            try:
                fetch_file(spec.name, directory, size=spec.size, sha256=spec.sha256,
                           mirrors=mirrors, timeout=timeout, progress=progress,
                           unreachable=unreachable)
            except DatasetNotFoundError as exc:
                attempts.extend(exc.attempts)
                failed.append(key)
        missing = failed
    if missing:
        raise _not_found(directory, [MNIST_FILES[key].name for key in missing], attempts,
                         download=download, mirrors=mirrors,
                         missing=[paths[key] for key in missing])
    return paths


def download_mnist(
    data_dir: PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Make sure all four official MNIST files are in ``data_dir`` (download the missing ones).

    Returns ``{key: path}`` for the book's keys ``train_img``, ``train_label``, ``test_img``,
    ``test_label``. Raises :class:`DatasetNotFoundError` if a file cannot be obtained.
    """
    directory = Path(data_dir) if data_dir is not None else default_data_dir("mnist")
    return _ensure_mnist_files(tuple(MNIST_FILES), directory, download=True,
                               mirrors=tuple(MNIST_MIRRORS if mirrors is None else mirrors),
                               timeout=timeout, progress=progress, unreachable=set())


# --------------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------------


def _read_mnist_pair(img_path: Path, lbl_path: Path, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(images (N, 28, 28) uint8, labels (N,) uint8)`` after every check."""
    for path in (img_path, lbl_path):
        spec = next((s for s in MNIST_FILES.values() if s.name == path.name), None)
        if verify and spec is not None:
            _verify_mnist_file(path, spec)
    try:
        images = read_idx(img_path)
        labels = read_idx(lbl_path)
    except ValueError as exc:
        raise CorruptDatasetError(f"load_mnist: {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise CorruptDatasetError(f"load_mnist: {img_path}: expected uint8 images (N, 28, 28) "
                                  f"(IDX magic 2051), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise CorruptDatasetError(f"load_mnist: {lbl_path}: expected uint8 labels (N,) "
                                  f"(IDX magic 2049), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise CorruptDatasetError(f"load_mnist: {img_path.name} holds {images.shape[0]} images "
                                  f"but {lbl_path.name} {labels.shape[0]} labels")
    if labels.size and int(labels.max()) > 9:
        raise CorruptDatasetError(f"load_mnist: {lbl_path}: labels must be digits 0-9, found "
                                  f"{int(labels.max())}")
    return images, labels


def _prepare(
    x: np.ndarray, t: np.ndarray, *, normalize: bool, flatten: bool, one_hot_label: bool,
    scale: float, num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The book's post-processing of raw uint8 images ``(N, H, W)`` and uint8 labels ``(N,)``."""
    n, h, w = x.shape
    if normalize:
        x = x.astype(np.float32)
        x /= np.float32(scale)  # float32 division, as the book's ``x /= 255.0`` on float32 does
    else:
        x = np.ascontiguousarray(x)
    x = x.reshape(n, h * w) if flatten else x.reshape(n, 1, h, w)
    t = to_one_hot(t, num_classes, np.float32) if one_hot_label else np.ascontiguousarray(t)
    return x, t


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: PathLike | None = None,
    download: bool = True,
    split: str = "auto",
    test_size: float = 0.2,
    seed: int | None = 0,
    mirrors: Sequence[str] | None = None,
    verify: bool = True,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> DatasetSplit:
    """MNIST as the book loads it: ``((x_train, t_train), (x_test, t_test))``.

    Args:
        normalize: float32 pixels in ``[0, 1]`` (``/ 255``); ``False``: raw uint8 ``0..255``.
        flatten: ``x`` of shape ``(N, 784)``; ``False``: ``(N, 1, 28, 28)``.
        one_hot_label: ``t`` as float32 one-hot rows ``(N, 10)``; ``False``: uint8 labels ``(N,)``.
        data_dir: folder holding the gzipped IDX files (default :func:`default_data_dir`).
        download: fetch missing files from ``mirrors`` (verified by SHA-256, cached in ``data_dir``).
        split: ``"official"`` — the 60,000/10,000 split (needs the training files);
            ``"t10k"`` — a stratified split of the 10,000 test images only (``test_size``, ``seed``);
            ``"auto"`` — official if the training files are present or can be downloaded, else
            ``"t10k"`` with a :class:`DatasetFallbackWarning`.
        test_size: for the t10k split: test fraction in ``(0, 1)`` or a count.
        seed: for the t10k split: the same seed gives the same split.
        mirrors: base URLs to download from (default :data:`MNIST_MIRRORS`).
        verify: check each official file's size and SHA-256 before reading it.
        timeout: seconds per network operation.
        progress: tqdm download bar; ``None``: only when stderr is a terminal.

    Returns:
        A :class:`DatasetSplit`; ``.split`` is ``"official"`` or ``"t10k"``, ``.description`` says
        which files were used and why.

    Raises:
        DatasetNotFoundError: files missing and not downloadable (message names files, folder,
            mirrors tried and how to provide them).
        CorruptDatasetError: a file fails its checksum, IDX header or length checks.
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"load_mnist: unknown split {split!r}; expected one of "
                         f"{', '.join(map(repr, MNIST_SPLITS))}")
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir("mnist")
    mirrors = tuple(MNIST_MIRRORS if mirrors is None else mirrors)
    # One set for the whole call: a mirror found unreachable is not tried again for other files.
    fetch = {"directory": directory, "mirrors": mirrors, "timeout": timeout, "progress": progress,
             "unreachable": set()}
    fallback_reason: str | None = None
    train_error: DatasetNotFoundError | None = None
    if split == "t10k":
        use_official = False
    elif split == "official":
        use_official = True
    else:
        train_present = all((directory / MNIST_FILES[k].name).is_file() for k in _TRAIN_KEYS)
        use_official = train_present
        if not train_present:
            try:
                _ensure_mnist_files(_TRAIN_KEYS, download=download, **fetch)
                use_official = True
            except DatasetNotFoundError as exc:
                if not download:
                    why = "download=False"
                else:  # the first reason is usually the whole story (no network, 404, ...)
                    first = exc.attempts[0][1] if exc.attempts else "no mirrors given"
                    why = f"could not be downloaded ({first})"
                fallback_reason = f"the official training files are not in {directory} and {why}"
                train_error = exc
    if use_official:
        paths = _ensure_mnist_files(tuple(MNIST_FILES), download=download, **fetch)
        x_train, t_train = _read_mnist_pair(paths["train_img"], paths["train_label"], verify)
        x_test, t_test = _read_mnist_pair(paths["test_img"], paths["test_label"], verify)
        meta = {"split": "official", "test_size": None, "seed": None, "description": (
            f"MNIST official split: {len(t_train):,} training images "
            f"({MNIST_FILES['train_img'].name}) and {len(t_test):,} test images "
            f"({MNIST_FILES['test_img'].name}) from {directory}")}
    else:
        try:
            paths = _ensure_mnist_files(_TEST_KEYS, download=download, **fetch)
        except DatasetNotFoundError as exc:
            if train_error is None:
                raise
            # auto mode, nothing usable at all: one error naming every missing file.
            missing = train_error.missing + exc.missing
            raise _not_found(directory, [p.name for p in missing],
                             train_error.attempts + exc.attempts, download=download,
                             mirrors=mirrors, missing=missing) from None
        images, labels = _read_mnist_pair(paths["test_img"], paths["test_label"], verify)
        n_test = _test_count(test_size, len(labels), "load_mnist")  # errors name the loader
        train_idx, test_idx = stratified_split_indices(labels, n_test, seed)
        x_train, t_train = images[train_idx], labels[train_idx]
        x_test, t_test = images[test_idx], labels[test_idx]
        description = (
            f"MNIST t10k split: the {len(labels):,} official test images "
            f"({MNIST_FILES['test_img'].name} from {directory}) split stratified into "
            f"{len(train_idx):,} training and {len(test_idx):,} test images "
            f"(test_size={test_size!r}, seed={seed!r}); the official training set was not used"
        )
        if fallback_reason is not None:
            description += f" because {fallback_reason}"
            warnings.warn(
                f"load_mnist(split='auto'): {fallback_reason}; training on a stratified split of "
                f"the {len(labels):,} t10k test images instead ({len(train_idx):,} train / "
                f"{len(test_idx):,} test). Pass split='t10k' to silence this, or provide the "
                f"training files for the official split.",
                DatasetFallbackWarning, stacklevel=2,
            )
        meta = {"split": "t10k", "test_size": test_size, "seed": seed, "description": description}
    kw = {"normalize": normalize, "flatten": flatten, "one_hot_label": one_hot_label,
          "scale": 255.0, "num_classes": 10}
    return DatasetSplit(_prepare(x_train, t_train, **kw), _prepare(x_test, t_test, **kw),
                        name="mnist", num_classes=10, image_shape=(1, 28, 28),
                        source=str(directory), **meta)


# --------------------------------------------------------------------------------------------------
# scikit-learn's 8×8 digits
# --------------------------------------------------------------------------------------------------

_DIGITS_RESOURCE = ("datasets", "data", "digits.csv.gz")


def _digits_file() -> Path | None:
    """scikit-learn's ``digits.csv.gz`` without importing scikit-learn (``import sklearn`` alone
    takes >1 s; ``find_spec`` of a top-level package only locates it)."""
    spec = importlib.util.find_spec("sklearn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*_DIGITS_RESOURCE)
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """``(images (1797, 8, 8) uint8, labels (1797,) uint8, source)``, read-only, parsed once."""
    path = _digits_file()
    if path is not None:
        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise CorruptDatasetError(f"load_digits: cannot parse {path}: {exc}") from None
        source = str(path)
    else:  # an unusual install (zipped, relocated data): let scikit-learn find its own file
        try:
            from sklearn.datasets import load_digits as sk_load_digits
        except ImportError:
            raise DatasetNotFoundError(
                "load_digits: the 8x8 digits come with scikit-learn, which is not installed "
                "(pip install scikit-learn)") from None
        bunch = sk_load_digits()
        table = np.column_stack([bunch.data, bunch.target]).astype(np.float64)
        source = "sklearn.datasets.load_digits()"
    if table.shape != (1797, 65):
        raise CorruptDatasetError(f"load_digits: {source}: expected 1797 rows of 64 pixels and a "
                                  f"label, got a table of shape {table.shape}")
    pixels, target = table[:, :64], table[:, 64]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 16
            and np.all(np.isin(target, np.arange(10)))):
        raise CorruptDatasetError(f"load_digits: {source}: pixels must be integers 0-16 and "
                                  "labels 0-9")
    images = pixels.astype(np.uint8).reshape(-1, 8, 8)
    labels = target.astype(np.uint8)
    images.flags.writeable = False  # cached: callers get copies (fancy indexing below)
    labels.flags.writeable = False
    return images, labels, source


def load_digits(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    test_size: float = 0.25,
    seed: int | None = 0,
) -> DatasetSplit:
    """The 1,797 8×8 handwritten digits shipped inside scikit-learn, shaped like :func:`load_mnist`.

    A small, always-available stand-in for MNIST (no download): 10 classes, pixels 0..16.

    Args:
        normalize: float32 pixels in ``[0, 1]`` (``/ 16``); ``False``: raw uint8 ``0..16``.
        flatten: ``x`` of shape ``(N, 64)``; ``False``: ``(N, 1, 8, 8)``.
        one_hot_label: float32 one-hot rows ``(N, 10)``; ``False``: uint8 labels ``(N,)``.
        test_size: test fraction in ``(0, 1)`` (rounded up: 450 of 1,797 for 0.25) or a count.
        seed: the same seed gives the same stratified split.

    Returns:
        A :class:`DatasetSplit` with ``split="stratified"``.
    """
    images, labels, source = _digits_arrays()
    n_test = _test_count(test_size, len(labels), "load_digits")  # errors name the loader
    train_idx, test_idx = stratified_split_indices(labels, n_test, seed)
    kw = {"normalize": normalize, "flatten": flatten, "one_hot_label": one_hot_label,
          "scale": 16.0, "num_classes": 10}
    return DatasetSplit(
        _prepare(images[train_idx], labels[train_idx], **kw),
        _prepare(images[test_idx], labels[test_idx], **kw),
        name="digits", split="stratified", num_classes=10, image_shape=(1, 8, 8), source=source,
        test_size=test_size, seed=seed,
        description=(f"scikit-learn's 8x8 digits ({len(labels):,} images from {source}) split "
                     f"stratified into {len(train_idx):,} training and {len(test_idx):,} test "
                     f"images (test_size={test_size!r}, seed={seed!r})"),
    )


#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("digits", "mnist")


def load_dataset(name: str, **kwargs: Any) -> DatasetSplit:
    """Load a dataset by name: ``"digits"`` (:func:`load_digits`) or ``"mnist"``
    (:func:`load_mnist`), passing the keyword arguments through.

    A keyword the chosen loader does not take is dropped if its value is ``None`` (so a CLI can
    pass ``data_dir=None`` for any dataset) and is a ``TypeError`` naming the accepted ones otherwise.
    """
    import inspect

    loaders: dict[str, Callable[..., DatasetSplit]] = {"digits": load_digits, "mnist": load_mnist}
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in loaders:
        raise ValueError(f"load_dataset: unknown dataset {name!r}; expected one of "
                         f"{', '.join(map(repr, DATASETS))}")
    loader = loaders[key]
    accepted = inspect.signature(loader).parameters
    unknown = sorted(k for k, v in kwargs.items() if k not in accepted and v is not None)
    if unknown:
        raise TypeError(f"load_dataset({key!r}): unexpected option(s) {', '.join(unknown)}; "
                        f"{loader.__name__} takes {', '.join(accepted)}")
    return loader(**{k: v for k, v in kwargs.items() if k in accepted})
