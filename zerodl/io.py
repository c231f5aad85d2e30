"""Saving and loading networks: a safe ``.npz`` format, and the book's pickled parameter files.

The zerodl format
-----------------
One ``.npz`` archive (read back with ``allow_pickle=False``, so loading it never runs code):

* ``param/<name>`` — every entry of ``net.params`` (``param/W1``, ``param/b1``, …), dtype kept;
* ``buffer/<name>`` — non-trainable state from ``net.buffers()`` when the network has that method
  (batch-norm running statistics: ``buffer/running_mean1``, …);
* ``__zerodl__`` — a 0-d unicode array holding JSON metadata: the format name and version, the
  zerodl version, the network's class name and ``net.config`` (its JSON-able constructor
  arguments), the parameter and buffer names, and optional user metadata (the CLI records the
  dataset it trained on).

:func:`load_network` rebuilds the network from the class name and config (``cls(**config)``,
classes looked up in :func:`network_registry`, which :mod:`zerodl.networks` fills: this module sits
below the networks and imports neither them nor the package), then copies the arrays in. Files are
written with :func:`zerodl._fileio.atomic_write`: a crash mid-save never leaves a half-written file
over a good one.

Untrusted files cost a small multiple of their size to verify, whatever they declare: a file must be a
regular file (FIFOs, devices, directories refused before reading); every ``.npy`` header is checked
against the bytes the archive really holds, and all entries together may expand to at most
:data:`MAX_EXPANSION` times the file (:func:`scan_npz`); the metadata's types are checked before use;
the config's sizes against the stored arrays before the network is built, which then draws no more
weights than the file stores (:class:`_BudgetGenerator`); non-finite parameters are refused.

The book's pickles
------------------
The book's ``save_params`` pickles a plain dict ``{"W1": ndarray, "b1": ndarray, ...}`` (its
``ch03/sample_weight.pkl`` is the same kind of file). :func:`load_book_pickle` reads such files with
a restricted unpickler that admits only NumPy arrays, dtypes, NumPy scalars and plain containers; a
pickle that asks for any other callable (``os.system``, ``builtins.eval``, …) is refused with
:class:`UnsafePickleError` *before* anything is called; even the admitted names resolve to checked
stand-ins, so a pickle cannot make NumPy allocate what it merely declares (see
:func:`load_book_pickle`). zerodl writes this format only when asked to: :func:`save_network` (and
``net.save_params``) to a name ending in ``.pkl`` writes the book's plain pickled dict.

Loading rules (both formats, :func:`load_params`)
-------------------------------------------------
* Names must match ``net.params`` exactly (and the buffers, for zerodl files); missing and
  unexpected names are listed.
* Shapes must match exactly; the message names the parameter, the expected and the found shape.
* Dtypes: a floating array is copied into the network's dtype. float64 → float64 (the book's files
  into a float64 net) is bit-exact; float32 → float64 is exact; float64 → float32 rounds each value
  to the nearest float32 (the only way to use the book's float64 weights in a float32 net; pass
  ``strict_dtype=True`` to refuse instead). Non-float arrays are always refused.
* Everything is checked before anything is written: a refused file leaves the network untouched.
* Arrays are copied **in place** (``np.copyto``) into the existing parameter arrays, so layers,
  ``net.params`` and any optimizer state keep sharing them.
"""

from __future__ import annotations

import inspect
import io as _io
import json
import math
import os
import pickle
import pickletools
import re
import reprlib
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write, open_regular, read_regular_file
from zerodl._npz import (
    BUFFER_PREFIX,
    PARAM_PREFIX,
    network_buffers,
    strip_prefix,
    write_npz,
    zerodl_version,
)

#: Name of the format written in the metadata, and its version. Bump the version on any change a
#: reader of the old version would misread; readers refuse files newer than they understand.
FORMAT_NAME = "zerodl-network"
FORMAT_VERSION = 1

META_KEY = "__zerodl__"
# The entry prefixes are the ones checkpoints use too (zerodl._npz, shared by both formats).

PathLike = str | os.PathLike[str]


class ModelFormatError(ValueError):
    """A model file that cannot be read, or whose contents do not fit the network."""


class UnsafePickleError(ModelFormatError, pickle.UnpicklingError):
    """A pickle that asks to build something other than NumPy arrays and plain containers."""


# -- the registry of network classes -------------------------------------------------------------
# io sits beside the networks, below them: it must not import them (that made the import circle
# io -> networks -> io). The networks package registers its classes here when it is imported.
_NETWORK_CLASSES: dict[str, type] = {}


def register_network_class(cls: type, name: str | None = None) -> type:
    """Make ``cls`` rebuildable by :func:`load_network` under ``name`` (default ``cls.__name__``).

    :mod:`zerodl.networks` registers every network class it exports; a user's own class can be
    registered the same way (or passed as ``load_network(path, classes={...})``). Returns ``cls``, so
    it also works as a class decorator. Registering another class under a taken name is an error
    (re-registering the same class, or a reloaded module's new version of it, is not).
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_network_class: expected a class, got {type(cls).__name__}")
    key = cls.__name__ if name is None else name
    if not isinstance(key, str) or not key:
        raise TypeError(f"register_network_class: name must be a non-empty str, got {key!r}")
    existing = _NETWORK_CLASSES.get(key)
    if existing is not None and existing is not cls and (
            (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__)):
        raise ValueError(f"register_network_class: {key!r} is already registered for "
                         f"{existing.__module__}.{existing.__qualname__}")
    _NETWORK_CLASSES[key] = cls
    return cls


def network_registry() -> dict[str, type]:
    """Class name -> class of every registered network class (a copy).

    :mod:`zerodl.networks` registers each class it exports when it is imported (``import zerodl``
    does that), so networks added to the package later can be rebuilt without editing this module.
    """
    return dict(_NETWORK_CLASSES)


# -- helpers ------------------------------------------------------------------------------------
def _json_config(network: Any) -> dict[str, Any] | None:
    config = getattr(network, "config", None)
    if config is None:
        return None
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(
            f"save_network: {type(network).__name__}.config must be JSON-serialisable to be saved: {exc}"
        ) from exc
    return dict(config)


# -- saving -------------------------------------------------------------------------------------
#: File name suffixes (any case) that :func:`save_network` writes in the book's pickle format.
PICKLE_SUFFIXES: tuple[str, ...] = (".pkl", ".pickle")


def save_network(network: Any, path: PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``network``'s parameters, buffers and architecture to ``path`` (an ``.npz`` file).

    A name ending in ``.pkl`` (or ``.pickle``) is written in the book's format instead: a plain
    pickled ``dict`` of the parameter arrays (:func:`save_book_pickle`), which the book's own
    ``load_params`` reads. That format has no place for buffers, the architecture or metadata: a
    network with buffers (batch-norm running statistics) or a ``metadata`` argument is refused
    there rather than saved without them; ``.npz`` stays the default and recommended format.

    Args:
        network: a zerodl network (anything with ``params``; ``config`` and ``buffers()`` are used
            when present — a :class:`~zerodl.networks.Sequential` built by hand has no config and can
            then only be reloaded with ``net.load_params``, not rebuilt by :func:`load_network`).
        path: destination; written atomically, any existing file is replaced only once the new one
            is complete. The name is used as given (no suffix is added).
        metadata: optional JSON-able extra information stored with the model (e.g. the dataset).

    Returns:
        The path written.
    """
    path = Path(path)
    params = getattr(network, "params", None)
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"save_network: expected a network with a non-empty params dict, got {type(network).__name__}")
    buffers = network_buffers(network)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if metadata:
            raise ValueError(f"save_network: {path}: the book's pickle format holds only the parameters; "
                             "metadata needs a .npz file")
        if buffers:
            raise ValueError(f"save_network: {path}: {type(network).__name__} has buffers "
                             f"({_names(buffers)}) that the book's pickle format cannot hold; save it "
                             "as .npz to keep them")
        return save_book_pickle(params, path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in params.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":  # an object array would need pickle to be read back
            raise TypeError(f"save_network: parameter {name!r} must be a numeric array, got dtype {array.dtype}")
        arrays[PARAM_PREFIX + name] = array
    for name, value in buffers.items():
        if value is None:
            raise ModelFormatError(f"save_network: buffer {name!r} is None (not initialised yet)")
        arrays[BUFFER_PREFIX + name] = np.asarray(value)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "zerodl_version": zerodl_version(),
        "class": type(network).__name__,
        "config": _json_config(network),
        "params": list(params),
        "buffers": list(buffers),
        "metadata": dict(metadata) if metadata else {},
    }
    try:
        meta_json = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"save_network: metadata must be JSON-serialisable: {exc}") from exc
    del meta_json  # checked above (no NaN, JSON-able); written by the shared npz writer
    # Rendered in memory first: a failure while serialising never even creates the temporary file.
    return write_npz(path, arrays, META_KEY, meta)


# -- reading ------------------------------------------------------------------------------------
def _open_model(path: Path, what: str = "model file") -> Any:
    """Open a model file for reading: regular files only, never blocking (FIFOs, devices refused)."""
    return open_regular(path, what, ModelFormatError)


def _is_zip(path: Path) -> bool:
    with _open_model(path) as f:
        return f.read(4) == b"PK\x03\x04"


#: Deflate expands data at most ~1032:1; an archive entry claiming more than that is lying (a bomb).
MAX_DEFLATE_RATIO = 1032

#: All entries of an archive together may expand to at most this many times the archive's size
#: (plus :data:`EXPANSION_SLACK`). zerodl writes uncompressed archives (ratio <= 1); float weights
#: compress by a few percent at most, so even a ``savez_compressed`` copy stays far below this, while
#: a small hostile file cannot make the loader allocate more than a small multiple of itself.
MAX_EXPANSION = 16
EXPANSION_SLACK = 1 << 16


def scan_npz(path: PathLike | Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check every entry of an ``.npz`` archive *before* anything is allocated: ``{name: (shape, dtype)}``.

    ``np.load`` allocates the shape a ``.npy`` header declares and only then finds out whether the
    data is there. This reads the headers alone and requires the declared ``shape x itemsize`` to
    equal the bytes the entry really holds, and each entry's size to be backed by bytes of the file
    (stored entries: no more than the archive; deflated ones: at most :data:`MAX_DEFLATE_RATIO` times
    their compressed size), and all entries together to expand to no more than
    :data:`MAX_EXPANSION` times the archive — so reading a file never costs more than a small
    multiple of its size. Object dtypes (which need pickle) and anything but ``.npy`` entries are
    refused. ``path`` may be a path (regular files only) or an open binary file. Raises
    :class:`ModelFormatError` naming the file and the entry.
    """
    if hasattr(path, "read"):
        fileobj, close = path, False
        name = Path(str(getattr(path, "name", "<file>")))
    else:
        name = Path(path)
        fileobj, close = _open_model(name), True
    try:
        return _scan_npz(fileobj, name)
    finally:
        if close:
            fileobj.close()


def _scan_npz(fileobj: Any, path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    fileobj.seek(0, os.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelFormatError(f"{path}: not a readable .npz archive ({exc})") from exc
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with archive:
        infos = archive.infolist()
        total = sum(info.file_size for info in infos)
        if total > MAX_EXPANSION * size + EXPANSION_SLACK:
            raise ModelFormatError(
                f"{path}: its {len(infos)} entries declare {total:,} bytes in all, more than "
                f"{MAX_EXPANSION} times the {size:,}-byte file; refused before reading (a zip bomb or corrupt)")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ModelFormatError(f"{path}: the archive holds the same entry name twice")
        for info in infos:
            where = f"{path}: entry {info.filename!r}"
            if not info.filename.endswith(".npy"):
                raise ModelFormatError(f"{where} is not a .npy array")
            if info.flag_bits & 0x1:
                raise ModelFormatError(f"{where} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ModelFormatError(f"{where} uses zip compression method {info.compress_type}, "
                                       "expected stored or deflated")
            stored = info.compress_type == zipfile.ZIP_STORED
            if (info.compress_size > size or (stored and info.file_size != info.compress_size)
                    or info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024):
                raise ModelFormatError(f"{where} declares {info.file_size:,} bytes, more than its "
                                       f"{info.compress_size:,} bytes in a {size:,}-byte file can hold")
            try:
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ModelFormatError(f"{where} has .npy format version {version}, expected 1.0 or 2.0")
                    header_len = f.tell()
            except ModelFormatError:
                raise
            except (ValueError, TypeError, SyntaxError, OSError, EOFError, RuntimeError, NotImplementedError,
                    zipfile.BadZipFile, zlib.error, MemoryError, RecursionError, OverflowError) as exc:
                raise ModelFormatError(f"{where}: unreadable .npy header ({type(exc).__name__}: {exc})") from exc
            if dtype.hasobject:
                raise ModelFormatError(f"{where}: refused, dtype {dtype} holds Python objects that need pickle")
            declared = math.prod(shape) * dtype.itemsize
            if declared != info.file_size - header_len:
                raise ModelFormatError(
                    f"{where} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
                    f"{info.file_size - header_len:,} bytes of data"
                )
            found[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    return found


def read_npz_arrays(path: PathLike, what: str = "model file") -> dict[str, np.ndarray]:
    """Every array of an untrusted ``.npz`` file, each entry checked by :func:`scan_npz` first.

    The file is opened once (a regular file, never blocking), scanned and read through the same
    descriptor, with ``allow_pickle=False``. Raises :class:`ModelFormatError` naming the file.
    """
    path = Path(path)
    with open_regular(path, what, ModelFormatError) as f:
        _scan_npz(f, path)
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError,
                KeyError, MemoryError) as exc:
            raise ModelFormatError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from exc
        except ValueError as exc:  # object arrays need pickle: refused
            raise ModelFormatError(f"{path}: refused, the archive holds arrays that need pickle ({exc})") from exc


def read_npz(path: PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read a zerodl ``.npz`` file: ``(metadata, params, buffers)``. Never unpickles.

    Every entry's header is checked by :func:`scan_npz` before any array is allocated, and the
    metadata's structure (types of its fields) before anything uses it.
    """
    path = Path(path)
    files = read_npz_arrays(path)
    if META_KEY not in files:
        raise ModelFormatError(
            f"{path}: not a zerodl model file (no {META_KEY!r} entry); "
            "was it written by zerodl.save_network / net.save_params?"
        )
    raw = files.pop(META_KEY)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ModelFormatError(f"{path}: corrupt zerodl metadata (dtype {raw.dtype}, shape {raw.shape}; "
                               "expected a JSON string)")
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: corrupt zerodl metadata ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: metadata does not describe a {FORMAT_NAME!r} file")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path}: metadata format_version {_short(version)} is not a version number")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: format version {version!r} is newer than this zerodl understands "
            f"({FORMAT_VERSION}); upgrade zerodl (file written by zerodl {_short(meta.get('zerodl_version'))})"
        )
    for key, kinds, what in (("class", (str,), "a class name"), ("config", (dict, type(None)), "an object or null"),
                             ("metadata", (dict, type(None)), "an object")):
        if key in meta and not isinstance(meta[key], kinds):
            raise ModelFormatError(f"{path}: metadata field {key!r} is {_short(meta[key])}, expected {what}")
    return meta, strip_prefix(files, PARAM_PREFIX), strip_prefix(files, BUFFER_PREFIX)


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON metadata of a zerodl model file (class, config, versions, user metadata)."""
    return read_npz(path)[0]


# The only globals a pickle of plain NumPy arrays needs. NumPy 2 moved numpy.core to numpy._core;
# files written by either (and by Python 2, the book's era) name one or the other.
_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [(mod, "_reconstruct") for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(mod, "scalar") for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1").
    + [("_codecs", "encode")]
    + [("builtins", name) for name in ("set", "frozenset", "bytearray", "list", "dict", "tuple")]
    + [("collections", "OrderedDict")]
)

#: Dtypes an array or scalar in a parameter pickle may have: booleans, integers, floats, complex
#: numbers (``"f8"``, ``"<i4"``...). Object, string, void and datetime dtypes are refused *before*
#: NumPy sees them: ``ndarray.__setstate__`` with an object dtype and a short list crashes the
#: interpreter (NumPy 2.4), and string dtypes can declare gigabyte items.
_PICKLE_DTYPE = re.compile(r"^[<>|=]?[biufc][0-9]{1,2}$")


class _PickleBudget:
    """Bytes the restricted unpickler may create beyond the file's own (see :func:`load_book_pickle`).

    The pickle machine creates at most one object per opcode, each no larger than the bytes that
    opcode holds; only the admitted callables can create more (an array shape, ``bytearray(n)``, a
    memoised string decoded again and again). Each of them charges what it creates here; a genuine
    file creates at most a few times its own size (its arrays' bytes, decoded once, then copied).
    """

    def __init__(self, path: Path, file_size: int) -> None:
        self.path = path
        self.left = 8 * file_size + (1 << 20)

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise ModelFormatError(
                f"{self.path}: refused, the pickle asks for {what} ({nbytes:,} bytes), more than its "
                "own bytes can hold; truncated, corrupt or hostile"
            )
        self.left -= nbytes


class _Built:
    """What an admitted NumPy call returns inside the restricted unpickler: a placeholder.

    NumPy's own functions are never handed the pickle's arguments: ``_reconstruct`` and ``dtype``
    return placeholders that record the state the pickle then ``BUILD``s into them, checked, and the
    arrays are made from checked ``(shape, dtype, bytes)`` only, never larger than those bytes.
    """

    kind = "value"

    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.done = value is not None

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError(f"a {self.kind} was given a state twice or where it takes none")


class _DtypeStub(_Built):
    kind = "dtype"

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or not _PICKLE_DTYPE.match(spec):
            raise ModelFormatError(
                f"refused, the pickle asks for dtype {spec!r}; parameter files hold only boolean, "
                "integer, float or complex arrays"
            )
        try:
            super().__init__(np.dtype(spec))
        except TypeError as exc:  # e.g. "f3": no such type
            raise ModelFormatError(f"the pickle names an unknown dtype {spec!r} ({exc})") from None
        self.done = False  # numpy pickles follow the constructor with a BUILD of the byte order

    def __setstate__(self, state: Any) -> None:
        if self.done:
            super().__setstate__(state)
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if (not isinstance(state, tuple) or len(state) < 5 or state[0] not in (3, 4)
                or any(part is not None for part in state[2:5])):
            raise ModelFormatError(f"refused, a dtype state {_short(state)} describes a structured or "
                                   "sub-array dtype; parameter files hold plain arrays")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise ModelFormatError(f"the pickle gives a dtype the byte order {order!r}")
        if order in "<>":
            self.value = self.value.newbyteorder(order)
        self.done = True


def _short(value: Any, limit: int = 60) -> str:
    """A bounded repr for messages: a hostile value may be huge or nested thousands deep."""
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 4, limit, limit
    text = shortener.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _checked_array(shape: Any, dtype: Any, raw: Any, fortran: Any, budget: _PickleBudget) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` from exactly the bytes ``raw`` holds (a copy), or an error."""
    if isinstance(dtype, _DtypeStub):
        dtype = dtype.value
    if not isinstance(dtype, np.dtype):
        raise ModelFormatError(f"an array's dtype is a {type(dtype).__name__}, not a dtype")
    if (not isinstance(shape, tuple) or len(shape) > 64
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ModelFormatError(f"an array's shape {_short(shape)} is not a tuple of sizes >= 0")
    if isinstance(raw, str):  # Python 2 pickles hold the data as a str (read with latin1)
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise ModelFormatError(f"an array's data is a {type(raw).__name__}, not bytes")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != len(raw):
        raise ModelFormatError(f"an array declares shape {shape} of {dtype} ({nbytes:,} bytes) but holds "
                               f"{len(raw):,} bytes of data")
    budget.charge(nbytes, f"an array of shape {shape}")
    flat = np.frombuffer(raw, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


class _ArrayStub(_Built):
    kind = "array"

    def __init__(self, budget: _PickleBudget) -> None:
        super().__init__()
        self.budget = budget

    def __setstate__(self, state: Any) -> None:
        if self.done:
            super().__setstate__(state)
        # ndarray.__reduce__ state: (version, shape, dtype, is_fortran, rawdata); version-less of old.
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise ModelFormatError(f"an array state {_short(state)} is not (shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state
        self.value = _checked_array(shape, dtype, raw, bool(fortran), self.budget)
        self.done = True


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_SAFE_GLOBALS`; everything else is refused before it can be called.

    Even the admitted names resolve to checked stand-ins (:class:`_Built` placeholders and wrappers
    that charge a :class:`_PickleBudget`), never to NumPy's own constructors, so a pickle can neither
    make NumPy allocate what it merely declares nor reach NumPy code that trusts its arguments.
    """

    def __init__(self, file: Any, budget: _PickleBudget, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise UnsafePickleError(
                f"refused to load: the pickle asks for {module}.{name}, which is not a NumPy array, dtype or "
                "plain container; this loader only imports the book's parameter files (a dict of arrays)"
            )
        budget = self.budget
        if name == "ndarray":
            return _NDARRAY
        if name == "dtype":
            return _DtypeStub
        if name == "_reconstruct":
            def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayStub:
                if subtype is not _NDARRAY:
                    raise ModelFormatError("refused, the pickle reconstructs something other than an ndarray")
                return _ArrayStub(budget)
            return _reconstruct
        if name == "_frombuffer":
            def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> _Built:
                raw = bytes(buf) if isinstance(buf, (bytes, bytearray)) else buf
                return _Built(_checked_array(shape, dtype, raw, order == "F", budget))
            return _frombuffer
        if name == "scalar":
            def _scalar(dtype: Any, raw: Any = b"") -> _Built:
                return _Built(_checked_array((), dtype, raw, False, budget)[()])
            return _scalar
        if name == "encode":
            def _encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
                if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
                    raise ModelFormatError(f"refused, the pickle encodes a {type(text).__name__} "
                                           f"as {encoding!r} (only latin1 text is admitted)")
                budget.charge(len(text), "a decoded string")
                return text.encode("latin1")
            return _encode
        if name == "bytearray":
            def _bytearray(source: Any = b"", *args: Any) -> bytearray:
                if isinstance(source, int):
                    raise ModelFormatError("refused, the pickle asks for a bytearray of a given length")
                result = bytearray(source, *args)
                budget.charge(len(result), "a bytearray")
                return result
            return _bytearray
        # Plain containers; OrderedDict arrives as a dict (equal for every use a loader makes of it).
        container = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
                     "OrderedDict": dict}[name]

        def _container(*args: Any) -> Any:
            if len(args) > 1 or (args and isinstance(args[0], (int, float))):
                raise ModelFormatError(f"refused, the pickle calls {name} with {_short(args)}")
            result = container(*args)
            budget.charge(16 * len(result), f"a {name} of {len(result):,} items")
            return result
        return _container

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused to load: the pickle uses persistent ids")


#: Deepest nesting of containers a parameter pickle may build (a dict of arrays needs about 5).
MAX_PICKLE_DEPTH = 64

#: Opcodes that modify the container below their arguments and leave it on the stack.
_IN_PLACE_OPS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


def _check_pickle_opcodes(data: bytes, path: Path) -> None:
    """Walk the opcodes without running any: declared lengths and nesting, before unpickling.

    * A length-prefixed opcode (BINBYTES8, FRAME, ...) makes the C unpickler allocate the length it
      declares before reading; ``pickletools.genops`` reads each argument and fails if the bytes are
      not there, so every declared length is proven to be backed by bytes of the file.
    * Nesting: a tuple nested a million deep (two bytes per level) crashes CPython itself when it
      is hashed as a dict key (a C stack overflow, not an exception). The stack machine is simulated
      here with the nesting depth of each stack item, and a pickle nesting deeper than
      :data:`MAX_PICKLE_DEPTH` is refused.
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[Any, int] = {}
    try:
        for op, arg, _ in pickletools.genops(_io.BytesIO(data)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):  # the top item stays where it is
                memo[len(memo) if op.name == "MEMOIZE" else arg] = stack[-1] if stack else 0
                continue
            before, after = op.stack_before, op.stack_after
            sliced: list[int] = []
            if pickletools.markobject in before:
                mark = marks.pop()
                sliced, stack[mark:] = stack[mark:], []
                n_plain = before.index(pickletools.markobject)  # items below the mark (APPENDS' list)
            else:
                n_plain = len(before)
            if n_plain > len(stack):
                raise ValueError(f"opcode {op.name} needs {n_plain} stack items, finds {len(stack)}")
            plain = stack[len(stack) - n_plain:] if n_plain else []
            del stack[len(stack) - n_plain:]
            if op.name == "MARK":
                marks.append(len(stack))
                continue
            if op.name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, 0))
                continue
            if op.name == "DUP":
                stack.append(stack[-1] if stack else 0)
                continue
            inner = max([*plain[1:], *sliced], default=-1) + 1 if op.name in _IN_PLACE_OPS else None
            if inner is not None:
                depth = max(plain[0] if plain else 0, inner)
            else:
                depth = max([*plain, *sliced], default=-1) + 1
            if depth > MAX_PICKLE_DEPTH:
                raise ModelFormatError(f"{path}: refused, the pickle nests containers more than "
                                       f"{MAX_PICKLE_DEPTH} deep (a parameter file needs a handful)")
            stack.extend([depth] * len(after))
    except ModelFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a broken file
        raise ModelFormatError(f"{path}: not a readable pickle of parameters ({type(exc).__name__}: {exc})") from None


#: Stands for ``numpy.ndarray`` inside the restricted unpickler: only ``_reconstruct`` accepts it,
#: and calling it (which would allocate the shape it is given) is a TypeError.
_NDARRAY = object()


def load_book_pickle(path: PathLike) -> dict[str, np.ndarray]:
    """Read a parameter file written by the book's ``save_params`` (a pickled ``{name: ndarray}``).

    Only NumPy arrays, dtypes and plain containers are admitted (see :class:`_RestrictedUnpickler`);
    a pickle that would run any other code raises :class:`UnsafePickleError` without running it.
    Python 2 pickles (the book's era) are read with ``encoding="latin1"``, as NumPy recommends.

    Verifying a file costs a small multiple of its size, whatever it declares: every
    length-prefixed opcode is checked against the bytes present before unpickling, arrays are
    built only from data of exactly their declared size, and everything the admitted callables
    create is charged to a budget of a few times the file's size (:class:`_PickleBudget`).

    Returns:
        ``{name: ndarray}`` with numeric (non-object) arrays.
    """
    path = Path(path)
    try:
        data = read_regular_file(path, "model file", ModelFormatError)
    except MemoryError:
        raise ModelFormatError(f"{path}: too large to read into memory as a parameter pickle") from None
    _check_pickle_opcodes(data, path)
    budget = _PickleBudget(path, len(data))
    try:
        obj = _RestrictedUnpickler(_io.BytesIO(data), budget, encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except ModelFormatError as exc:
        message = str(exc)
        raise ModelFormatError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, OverflowError, UnicodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable pickle of parameters ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, Mapping):
        raise ModelFormatError(
            f"{path}: expected a pickled dict of parameter name -> array (the book's save_params format), "
            f"got {type(obj).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ModelFormatError(f"{path}: parameter names must be strings, got {_short(key)}")
        array = value.value if isinstance(value, _Built) else value
        if not isinstance(array, np.ndarray) or (isinstance(value, _Built) and not value.done):
            what = "an incomplete array" if isinstance(value, _ArrayStub) else type(array).__name__
            if isinstance(value, _DtypeStub):
                what = "dtype"
            raise ModelFormatError(f"{path}: parameter {key!r} is a {what}, not a numpy array")
        if array.dtype.kind not in "fiu":
            raise ModelFormatError(f"{path}: parameter {key!r} has dtype {array.dtype}, not a numeric dtype")
        out[key] = array
    return out


def save_book_pickle(params: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``params`` as the book's ``save_params`` does: a pickled plain ``dict`` of NumPy arrays.

    The book's own ``load_params`` (``pickle.load``) reads the file, and so does
    :func:`load_book_pickle`. Pickle protocol 4 (Python 3.4+): arrays are stored with their raw bytes,
    dtype and shape, exactly as NumPy pickles them. Written atomically.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        array = np.asarray(value)  # a plain ndarray (never a subclass): any pickle.load reads it
        if not isinstance(name, str) or array.dtype.kind not in "fiu":
            raise TypeError(f"save_params: parameter {name!r} must be a named numeric array to go into "
                            f"the book's pickle format, got {type(value).__name__} {array.dtype}")
        out[name] = array
    buf = _io.BytesIO()
    pickle.dump(out, buf, protocol=4)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


# -- loading into a network ---------------------------------------------------------------------
def _names(names: Any, limit: int = 12) -> str:
    """``"a, b, c"``, cut after ``limit`` names (a hostile file may hold thousands)."""
    names = list(names)
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_names(kind: str, expected: Mapping[str, Any], found: Mapping[str, Any], path: Path) -> None:
    missing = [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        raise ModelFormatError(
            f"{path}: {kind} names do not match the network ({'; '.join(parts)}); "
            f"the network has {_names(expected) or 'none'}"
        )


def _check_array(kind: str, name: str, target: Any, source: np.ndarray, path: Path, strict_dtype: bool) -> None:
    if not isinstance(target, np.ndarray):
        raise ModelFormatError(
            f"{path}: the network's {kind} {name!r} is {type(target).__name__}, not an array to load into"
        )
    if source.shape != target.shape:
        raise ModelFormatError(
            f"{path}: {kind} {name!r} has shape {source.shape} in the file, the network expects {target.shape}"
        )
    if source.dtype.kind != "f":
        raise ModelFormatError(
            f"{path}: {kind} {name!r} has dtype {source.dtype} in the file, expected a float array "
            f"({target.dtype})"
        )
    if strict_dtype and source.dtype != target.dtype:
        raise ModelFormatError(
            f"{path}: {kind} {name!r} has dtype {source.dtype} in the file, the network uses {target.dtype} "
            "(strict_dtype=True; pass strict_dtype=False to convert)"
        )
    finite = np.isfinite(source)
    if not finite.all():
        # A trained network never holds NaN/inf (the Trainer's guard stops before); loading one would
        # make every prediction class 0 and report a silently meaningless accuracy.
        raise ModelFormatError(f"{path}: {kind} {name!r} holds {int(finite.size - finite.sum()):,} NaN or "
                               f"infinite value(s) of {finite.size:,}; refusing to load a broken network")


def _buffer_names(network: Any) -> list[str]:
    """Every buffer name the network can hold, created yet or not (lazily created statistics)."""
    index = getattr(network, "_buffer_index", None)
    if callable(index):
        return [name for name, _, _ in index()]
    return list(network_buffers(network))


def copy_into(
    network: Any,
    params: Mapping[str, np.ndarray],
    buffers: Mapping[str, np.ndarray] | None = None,
    *,
    path: PathLike = "<arrays>",
    strict_dtype: bool = False,
) -> None:
    """Check ``params`` (and ``buffers``) against ``network`` and copy them in place.

    All names, shapes and dtypes are checked first; only if everything fits is anything written.
    ``buffers=None`` leaves the network's buffers alone (the book's files carry none). A buffer the
    network has not created yet (batch-norm statistics appear on the first forward) is created by
    ``network.load_buffers``.
    """
    path = Path(path)
    targets = network.params
    _check_names("parameter", targets, params, path)
    for name, target in targets.items():
        _check_array("parameter", name, target, np.asarray(params[name]), path, strict_dtype)
    existing: dict[str, np.ndarray] = {}
    if buffers is not None:
        existing = network_buffers(network)
        known = _buffer_names(network)
        unexpected = [n for n in buffers if n not in known]
        missing = [n for n in existing if n not in buffers]
        if unexpected or missing:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
            raise ModelFormatError(
                f"{path}: buffer names do not match the network ({'; '.join(parts)}); "
                f"the network has {', '.join(known) or 'none'}"
            )
        for name, value in buffers.items():
            source = np.asarray(value)
            if name in existing:
                _check_array("buffer", name, existing[name], source, path, strict_dtype)
            elif source.dtype.kind != "f":
                raise ModelFormatError(f"{path}: buffer {name!r} has dtype {source.dtype}, expected floats")
    # Everything fits: copy into the very arrays the layers hold (layers keep sharing them).
    for name, target in targets.items():
        np.copyto(target, params[name], casting="same_kind")
    if buffers:
        loader = getattr(network, "load_buffers", None)
        if callable(loader):
            loader(dict(buffers))
        else:
            for name, target in existing.items():
                np.copyto(target, buffers[name], casting="same_kind")


def load_params(network: Any, path: PathLike, *, strict_dtype: bool = False) -> dict[str, Any]:
    """Load a zerodl ``.npz`` file or a book pickle into ``network``, in place.

    The format is recognised from the file's first bytes (a zip archive is a zerodl file; anything
    else is read as a book pickle through the restricted unpickler).

    Returns:
        The file's metadata (``{}`` for a book pickle).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFormatError: unreadable file, or names / shapes / dtypes that do not fit (the message
            names the parameter and what differed); the network is then unchanged.
        UnsafePickleError: a pickle that would build anything but arrays and plain containers.
    """
    path = Path(path)
    if _is_zip(path):  # FileNotFoundError, or ModelFormatError for a FIFO, device or directory
        meta, params, buffers = read_npz(path)
        saved_class = meta.get("class")
        if saved_class and saved_class != type(network).__name__:
            # Same parameter layout is all that matters for copying, but say what happened if it fails.
            try:
                copy_into(network, params, buffers, path=path, strict_dtype=strict_dtype)
            except ModelFormatError as exc:
                raise ModelFormatError(f"{exc} (the file holds a {saved_class}, the network is a "
                                       f"{type(network).__name__})") from None
        else:
            copy_into(network, params, buffers, path=path, strict_dtype=strict_dtype)
        return meta
    copy_into(network, load_book_pickle(path), None, path=path, strict_dtype=strict_dtype)
    return {}


def _config_ints(value: Any) -> list[int]:
    """Every integer in a JSON config, depth first (iterative: a hostile config may nest deeply)."""
    found: list[int] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def _check_config_scale(config: Mapping[str, Any], stored_elements: int, stored_arrays: int, path: Path) -> None:
    """Refuse a config whose sizes the file's own arrays cannot back, before building the network.

    Building runs the constructor, which allocates what the config says; a hostile file could ask
    for terabytes with a few bytes of JSON. Consecutive sizes in a config (input, hidden..., output;
    channels, height, width) multiply into weight shapes, so a product far beyond the number of
    elements the file actually stores cannot belong to a genuine file (the exact shapes are checked
    after building).
    """
    ints = _config_ints(dict(config))
    if len(ints) > 2 * stored_arrays + 64:  # each layer size brings at least one array (W or b)
        raise ModelFormatError(
            f"{path}: the saved config lists {len(ints)} sizes for the {stored_arrays} arrays the file "
            "stores; refusing to build it"
        )
    bound = 64 * (stored_elements + 1024)
    for a, b in zip(ints, ints[1:] + [1]):
        if abs(a) * max(abs(b), 1) > bound:
            raise ModelFormatError(
                f"{path}: the saved config asks for sizes ({a} x {b}) far larger than the "
                f"{stored_elements:,} values the file stores; refusing to build it"
            )


class _BudgetGenerator(np.random.Generator):
    """The generator a network is rebuilt with: it refuses to draw more values than a budget.

    Rebuilding runs the constructor, which draws its initial weights from ``seed`` (they are
    replaced by the file's arrays right after). A genuine file stores every weight the constructor
    draws, so drawing more than the file stores means the config asks for layers the file cannot
    back: refused *before* that draw allocates (a config can name gigabytes of weights whose sizes
    individually look harmless, e.g. 270x270 images and 7,000 hidden units). After construction the
    budget is lifted (:meth:`disarm`) and it is an ordinary generator of fresh entropy (what the
    network's dropout layers, if any, then draw their masks from).
    """

    def __init__(self, budget: int, path: Path) -> None:
        super().__init__(np.random.PCG64())
        self._left: int | None = budget
        self._path = path

    def disarm(self) -> None:
        self._left = None

    def _charge(self, size: Any) -> None:
        if self._left is None:
            return
        n = 1
        for dim in np.atleast_1d(np.asarray(1 if size is None else size, dtype=object)).ravel():
            n *= int(dim)
        if n > self._left:
            raise ModelFormatError(
                f"{self._path}: the saved config asks the network for weights of {n:,} values, more than "
                f"the {self._left:,} values the file stores (beyond those already drawn); refusing to build it"
            )
        self._left -= max(n, 0)

    def standard_normal(self, size: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._charge(size)
        return super().standard_normal(size, *args, **kwargs)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        self._charge(size)
        return super().normal(loc, scale, size)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        self._charge(size)
        return super().uniform(low, high, size)

    def random(self, size: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._charge(size)
        return super().random(size, *args, **kwargs)


def _takes_seed(cls: type) -> bool:
    try:
        return "seed" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def load_network(path: PathLike, classes: Mapping[str, type] | None = None) -> Any:
    """Rebuild the network saved in ``path`` (class + config) and load its parameters and buffers.

    Args:
        path: a file written by :func:`save_network` / ``net.save_params``.
        classes: extra class name → class entries for networks not registered with
            :func:`register_network_class` (they are constructed as ``cls(**config)``).

    The returned network also carries the file's metadata as ``net.metadata`` (a dict).

    An untrusted file costs no more than a small multiple of its size: entry headers are checked
    before anything is read (:func:`scan_npz`), the metadata's types before they are used, and the
    config's sizes against the arrays the file really stores before the network is built.
    """
    path = Path(path)
    if not _is_zip(path):  # FileNotFoundError, or ModelFormatError for a FIFO, device or directory
        raise ModelFormatError(
            f"{path}: not a zerodl .npz model; a book pickle holds no architecture: build the network "
            "yourself and call net.load_params(path)"
        )
    meta, params, buffers = read_npz(path)
    name = meta.get("class")
    config = meta.get("config")
    if config is None:
        raise ModelFormatError(
            f"{path}: the {name} saved here records no architecture config (a Sequential built from "
            "layers); build the same network and call net.load_params(path)"
        )
    registry = network_registry()
    if classes:
        registry.update(classes)
    cls = registry.get(name)
    if cls is None:
        raise ModelFormatError(
            f"{path}: unknown network class {name!r}; known: {', '.join(sorted(registry)) or 'none registered'} "
            "(pass classes={name: cls} for your own networks)"
        )
    stored = sum(a.size for a in (*params.values(), *buffers.values()))
    _check_config_scale(config, stored, len(params) + len(buffers), path)
    guard = _BudgetGenerator(stored + 1024, path) if _takes_seed(cls) else None
    try:
        network = cls(**config) if guard is None else cls(**{**config, "seed": guard})
    except ModelFormatError:
        raise
    except MemoryError as exc:
        raise ModelFormatError(f"{path}: the saved config of {name} asks for more memory than there is") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of the constructor means a config it refuses
        raise ModelFormatError(f"{path}: cannot rebuild {name} from its saved config "
                               f"{_short(config, 200)}: {type(exc).__name__}: {exc}") from None
    finally:
        if guard is not None:
            guard.disarm()
    copy_into(network, params, buffers, path=path, strict_dtype=True)
    network.metadata = dict(meta.get("metadata") or {})
    return network
