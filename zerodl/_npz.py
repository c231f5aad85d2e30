"""What zerodl's two ``.npz`` formats share: entry prefixes, the JSON metadata entry, versions.

A model file (:mod:`zerodl.io`, ``"zerodl-network"``) and a checkpoint (:mod:`zerodl.checkpoint`,
``"zerodl-checkpoint"``) are both one ``.npz`` archive of plain arrays plus one scalar string entry
holding JSON metadata (``format``, ``format_version``, ``zerodl_version``, ...). This module holds the
pieces both need, so that they are written once: it sits beside the floors (it imports nothing of
zerodl but :mod:`zerodl._fileio`), and both format modules import from it.

* ``param/<name>``, ``buffer/<name>``: a network's parameters and non-trainable buffers
  (:func:`network_arrays`, :func:`strip_prefix`);
* :func:`render_npz` / :func:`write_npz`: the archive rendered in memory, then written atomically;
* :func:`read_meta_entry`: the metadata entry checked (a 0-d unicode array of JSON) and decoded;
* :func:`check_format`: the format name and a version this reader understands.
"""

from __future__ import annotations

import io as _io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write
from zerodl._version import __version__

PARAM_PREFIX = "param/"
BUFFER_PREFIX = "buffer/"
OPTIMIZER_PREFIX = "optimizer/"

PathLike = str | os.PathLike[str]
ErrorFactory = Callable[[str], Exception]


def zerodl_version() -> str:
    """``zerodl.__version__`` (from :mod:`zerodl._version`: no import of the package's top level)."""
    return __version__


def network_buffers(network: Any) -> dict[str, np.ndarray]:
    """``network.buffers()`` when the network has non-trainable state, else ``{}``."""
    method = getattr(network, "buffers", None)
    return dict(method()) if callable(method) else {}


def network_arrays(network: Any, *, copy: bool) -> dict[str, np.ndarray]:
    """``param/<name>`` and ``buffer/<name>`` entries of ``network`` (copies when ``copy``)."""
    arrays = {PARAM_PREFIX + k: np.array(v, copy=True) if copy else np.asarray(v)
              for k, v in network.params.items()}
    for k, v in network_buffers(network).items():
        arrays[BUFFER_PREFIX + k] = np.array(v, copy=True) if copy else np.asarray(v)
    return arrays


def strip_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries whose key starts with ``prefix``, keyed by the rest of the key."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def render_npz(arrays: Mapping[str, np.ndarray], meta_key: str, meta: Mapping[str, Any]) -> bytes:
    """The ``.npz`` bytes of ``arrays`` plus ``meta`` as JSON under ``meta_key``.

    Rendered in memory: a failure while serialising never touches the destination file.
    Raises ``TypeError``/``ValueError`` when ``meta`` is not JSON-serialisable, ``ValueError``
    when an array is named ``meta_key``.
    """
    if meta_key in arrays:
        raise ValueError(f"an array is named {meta_key!r}, the metadata entry's name")
    entries = dict(arrays)
    entries[meta_key] = np.array(json.dumps(meta))
    buf = _io.BytesIO()
    np.savez(buf, **entries)
    return buf.getvalue()


def write_npz(path: PathLike, arrays: Mapping[str, np.ndarray], meta_key: str, meta: Mapping[str, Any]) -> Path:
    """:func:`render_npz`, then write the bytes to ``path`` atomically; returns the path."""
    path = Path(path)
    data = render_npz(arrays, meta_key, meta)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def read_meta_entry(files: dict[str, np.ndarray], meta_key: str, where: str, error: ErrorFactory) -> Any:
    """Pop ``meta_key`` from ``files`` and decode its JSON; ``error(message)`` for anything wrong."""
    if meta_key not in files:
        raise error(f"{where}: no {meta_key!r} entry")
    raw = files.pop(meta_key)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise error(f"{where}: corrupt metadata entry {meta_key!r} (dtype {raw.dtype}, shape {raw.shape})")
    try:
        return json.loads(str(raw[()]))
    except (ValueError, RecursionError) as exc:
        raise error(f"{where}: corrupt metadata ({exc})") from None


def check_format(meta: Any, name: str, version: int, where: str, error: ErrorFactory) -> int:
    """Check that ``meta`` describes a ``name`` file of a version in ``1..version``; return it."""
    if not isinstance(meta, dict) or meta.get("format") != name:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise error(f"{where}: not a {name!r} file (metadata format {found!r})")
    found_version = meta.get("format_version")
    written_by = f"written by zerodl {meta.get('zerodl_version')!r}"
    if isinstance(found_version, int) and not isinstance(found_version, bool) and found_version > version:
        raise error(f"{where}: format version {found_version} is newer than this zerodl understands "
                    f"({version}); upgrade zerodl ({written_by})")
    if not isinstance(found_version, int) or isinstance(found_version, bool) or found_version < 1:
        raise error(f"{where}: format version {found_version!r} is not one this zerodl reads (1..{version}); "
                    f"{written_by}")
    return found_version


__all__ = [
    "BUFFER_PREFIX", "OPTIMIZER_PREFIX", "PARAM_PREFIX", "check_format", "network_arrays", "network_buffers",
    "read_meta_entry", "render_npz", "strip_prefix", "write_npz", "zerodl_version",
]
