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
classes looked up in :func:`network_registry`), then copies the arrays in. Files are written with
:func:`zerodl._fileio.atomic_write`: a crash mid-save never leaves a half-written file over a good one.

The book's pickles
------------------
The book's ``save_params`` pickles a plain dict ``{"W1": ndarray, "b1": ndarray, ...}`` (its
``ch03/sample_weight.pkl`` is the same kind of file). :func:`load_book_pickle` reads such files with
a restricted unpickler that admits only NumPy arrays, dtypes, NumPy scalars and plain containers; a
pickle that asks for any other callable (``os.system``, ``builtins.eval``, …) is refused with
:class:`UnsafePickleError` *before* anything is called. zerodl never writes pickles.

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

import io as _io
import json
import math
import os
import pickle
import pickletools
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write

#: Name of the format written in the metadata, and its version. Bump the version on any change a
#: reader of the old version would misread; readers refuse files newer than they understand.
FORMAT_NAME = "zerodl-network"
FORMAT_VERSION = 1

META_KEY = "__zerodl__"
PARAM_PREFIX = "param/"
BUFFER_PREFIX = "buffer/"

PathLike = str | os.PathLike[str]


class ModelFormatError(ValueError):
    """A model file that cannot be read, or whose contents do not fit the network."""


class UnsafePickleError(ModelFormatError, pickle.UnpicklingError):
    """A pickle that asks to build something other than NumPy arrays and plain containers."""


# -- the registry of network classes -------------------------------------------------------------
def network_registry() -> dict[str, type]:
    """Class name → class for every network class exported by :mod:`zerodl.networks`.

    Discovered at call time from ``zerodl.networks.__all__``, so networks added to the package later
    (convolutional nets, ``MultiLayerNetExtend``) can be rebuilt without editing this module.
    """
    from zerodl import networks

    registry: dict[str, type] = {}
    for name in getattr(networks, "__all__", dir(networks)):
        obj = getattr(networks, name, None)
        if isinstance(obj, type) and issubclass(obj, networks.Sequential):
            registry[obj.__name__] = obj
    return registry


# -- helpers ------------------------------------------------------------------------------------
def _buffers(network: Any) -> dict[str, np.ndarray]:
    """``network.buffers()`` when the network has non-trainable state, else ``{}``."""
    method = getattr(network, "buffers", None)
    if method is None or not callable(method):
        return {}
    return dict(method())


def _version() -> str:
    import zerodl

    return getattr(zerodl, "__version__", "unknown")


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
def save_network(network: Any, path: PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``network``'s parameters, buffers and architecture to ``path`` (an ``.npz`` file).

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
    buffers = _buffers(network)
    arrays: dict[str, np.ndarray] = {}
    for name, value in params.items():
        arrays[PARAM_PREFIX + name] = np.asarray(value)
    for name, value in buffers.items():
        if value is None:
            raise ModelFormatError(f"save_network: buffer {name!r} is None (not initialised yet)")
        arrays[BUFFER_PREFIX + name] = np.asarray(value)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "zerodl_version": _version(),
        "class": type(network).__name__,
        "config": _json_config(network),
        "params": list(params),
        "buffers": list(buffers),
        "metadata": dict(metadata) if metadata else {},
    }
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"save_network: metadata must be JSON-serialisable: {exc}") from exc
    arrays[META_KEY] = np.array(meta_json)
    # Render in memory first: a failure while serialising never even creates the temporary file.
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


# -- reading ------------------------------------------------------------------------------------
def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


#: Deflate expands data at most ~1032:1; an archive entry claiming more than that is lying (a bomb).
MAX_DEFLATE_RATIO = 1032


def scan_npz(path: PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check every entry of an ``.npz`` archive *before* anything is allocated: ``{name: (shape, dtype)}``.

    ``np.load`` allocates the shape a ``.npy`` header declares and only then finds out whether the
    data is there. This reads the headers alone and requires the declared ``shape x itemsize`` to
    equal the bytes the entry really holds, and each entry's size to be backed by bytes of the file
    (stored entries: no more than the archive; deflated ones: at most :data:`MAX_DEFLATE_RATIO` times
    their compressed size). Object dtypes (which need pickle) and anything but ``.npy`` entries are
    refused. Raises :class:`ModelFormatError` naming the file and the entry.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelFormatError(f"{path}: not a readable .npz archive ({exc})") from exc
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with archive:
        for info in archive.infolist():
            where = f"{path}: entry {info.filename!r}"
            if not info.filename.endswith(".npy"):
                raise ModelFormatError(f"{where} is not a .npy array")
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
                    zipfile.BadZipFile, zlib.error) as exc:
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


def read_npz(path: PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read a zerodl ``.npz`` file: ``(metadata, params, buffers)``. Never unpickles.

    Every entry's header is checked by :func:`scan_npz` before any array is allocated.
    """
    path = Path(path)
    scan_npz(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            files = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, KeyError) as exc:
        raise ModelFormatError(f"{path}: not a readable .npz archive ({exc})") from exc
    except ValueError as exc:  # object arrays need pickle: refused
        raise ModelFormatError(f"{path}: refused, the archive holds arrays that need pickle ({exc})") from exc
    if META_KEY not in files:
        raise ModelFormatError(
            f"{path}: not a zerodl model file (no {META_KEY!r} entry); "
            "was it written by zerodl.save_network / net.save_params?"
        )
    try:
        meta = json.loads(str(files.pop(META_KEY)[()]))
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: corrupt zerodl metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: metadata does not describe a {FORMAT_NAME!r} file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: format version {version!r} is newer than this zerodl understands "
            f"({FORMAT_VERSION}); upgrade zerodl (file written by zerodl {meta.get('zerodl_version')})"
        )
    params = {k[len(PARAM_PREFIX):]: v for k, v in files.items() if k.startswith(PARAM_PREFIX)}
    buffers = {k[len(BUFFER_PREFIX):]: v for k, v in files.items() if k.startswith(BUFFER_PREFIX)}
    return meta, params, buffers


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


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_SAFE_GLOBALS`; everything else is refused before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            if module.startswith("numpy.core."):
                # numpy.core.* warns under NumPy 2; resolve the same function from its new home.
                new = "numpy._core." + module[len("numpy.core."):]
                try:
                    return super().find_class(new, name)
                except (ImportError, AttributeError):
                    pass
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused to load: the pickle asks for {module}.{name}, which is not a NumPy array, dtype or "
            "plain container; this loader only imports the book's parameter files (a dict of arrays)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused to load: the pickle uses persistent ids")


def load_book_pickle(path: PathLike) -> dict[str, np.ndarray]:
    """Read a parameter file written by the book's ``save_params`` (a pickled ``{name: ndarray}``).

    Only NumPy arrays, dtypes and plain containers are admitted (see :class:`_RestrictedUnpickler`);
    a pickle that would run any other code raises :class:`UnsafePickleError` without running it.
    Python 2 pickles (the book's era) are read with ``encoding="latin1"``, as NumPy recommends.

    Returns:
        ``{name: ndarray}`` with numeric (non-object) arrays.
    """
    path = Path(path)
    data = path.read_bytes()
    # A length-prefixed opcode (BINBYTES8, FRAME, ...) makes the C unpickler allocate the length it
    # declares before reading; walking the opcodes first (pickletools reads, never calls anything)
    # proves every declared length is backed by bytes of the file.
    try:
        for _ in pickletools.genops(_io.BytesIO(data)):
            pass
    except Exception as exc:
        raise ModelFormatError(f"{path}: not a readable pickle of parameters ({type(exc).__name__}: {exc})") from None
    try:
        obj = _RestrictedUnpickler(_io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: not a readable pickle of parameters ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping):
        raise ModelFormatError(
            f"{path}: expected a pickled dict of parameter name -> array (the book's save_params format), "
            f"got {type(obj).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ModelFormatError(f"{path}: parameter names must be strings, got {key!r}")
        if not isinstance(value, np.ndarray) or type(value) is not np.ndarray:
            raise ModelFormatError(f"{path}: parameter {key!r} is a {type(value).__name__}, not a numpy array")
        if value.dtype.kind not in "fiu":
            raise ModelFormatError(f"{path}: parameter {key!r} has dtype {value.dtype}, not a numeric dtype")
        out[key] = value
    return out


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


def _buffer_names(network: Any) -> list[str]:
    """Every buffer name the network can hold, created yet or not (lazily created statistics)."""
    index = getattr(network, "_buffer_index", None)
    if callable(index):
        return [name for name, _, _ in index()]
    return list(_buffers(network))


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
        existing = _buffers(network)
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
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if _is_zip(path):
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
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _config_ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _config_ints(v)]
    return []


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


def load_network(path: PathLike, classes: Mapping[str, type] | None = None) -> Any:
    """Rebuild the network saved in ``path`` (class + config) and load its parameters and buffers.

    Args:
        path: a file written by :func:`save_network` / ``net.save_params``.
        classes: extra class name → class entries for networks defined outside
            :mod:`zerodl.networks` (they are constructed as ``cls(**config)``).

    The returned network also carries the file's metadata as ``net.metadata`` (a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not _is_zip(path):
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
            f"{path}: unknown network class {name!r}; known: {', '.join(sorted(registry))} "
            "(pass classes={name: cls} for your own networks)"
        )
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: the saved config of {name} is a {type(config).__name__}, not a dict")
    _check_config_scale(config, sum(a.size for a in (*params.values(), *buffers.values())),
                        len(params) + len(buffers), path)
    try:
        network = cls(**config)
    except MemoryError as exc:
        raise ModelFormatError(f"{path}: the saved config of {name} asks for more memory than there is") from exc
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: cannot rebuild {name} from its saved config {config}: {exc}") from exc
    copy_into(network, params, buffers, path=path, strict_dtype=True)
    network.metadata = dict(meta.get("metadata") or {})
    return network
