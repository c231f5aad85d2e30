"""Files: atomic writes, output paths checked before any work, inputs that are really files.

* :func:`atomic_write` — a crash mid-write never leaves a half-written file over a good one.
* :func:`check_output_paths` — every output of a command checked up front (writable, not a
  directory, a name the file system takes, distinct from the inputs and from each other), so a long
  run never ends in a traceback that loses its result.
* :func:`open_regular` / :func:`read_regular_file` — loaders open only regular files: a FIFO, a
  device or a directory is refused before any read (a FIFO would block forever, ``/dev/zero`` never
  ends).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

PathLike = str | os.PathLike[str]

try:  # POSIX: a writer locks its temporary file, so a cleaner can tell a live write from a dead one
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    # mkstemp(prefix=".<name>.", suffix=".tmp") inserts 8 characters of [a-z0-9_].
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that writes of ``path`` killed mid-way (SIGKILL, power loss) left
    beside it; returns those removed.

    A temporary file still being written is locked by its writer (``flock``) and left alone. Where
    file locks do not exist (Windows) nothing is removed.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if fcntl is None or not directory.is_dir():
        return []
    pattern = _temporary_pattern(path)
    removed = []
    for entry in os.scandir(directory):
        if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live write
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left exactly as it was.

    >>> with atomic_write("model.npz") as f:  # doctest: +SKIP
    ...     np.savez(f, **arrays)
    """
    path = Path(path)
    try:
        existing = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        existing = None
    if existing is not None and not stat.S_ISREG(existing):
        # The rename would replace a directory entry that is no file: a device (/dev/null as root),
        # a FIFO, a socket. A directory fails the rename anyway; say so before writing anything.
        raise NotARegularFileError(f"{path}: is {_kind(existing)}; refusing to replace it with a file")
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # held until the rename: see remove_stale_temporaries
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # while the lock is held: a cleaner never sees it unlocked
        if fcntl is None:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None and exc.strerror:
            # A write error (ENOSPC, EIO, EDQUOT) names no file by itself; say which one failed.
            exc.filename = str(path)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- inputs: regular files only ---------------------------------------------------------------------
class NotARegularFileError(ValueError):
    """A path that exists but is a directory, FIFO, device or socket where a file is read."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: PathLike, what: str = "file",
                 error: type[Exception] = NotARegularFileError) -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor (no window
    between a check and the open): a FIFO, device, socket or directory raises ``error`` (a
    ValueError subclass) naming ``what`` and the path, without ever blocking or reading.

    Raises:
        FileNotFoundError: ``path`` does not exist (message ``"<what> not found: <path>"``).
        error: ``path`` is not a regular file.
        OSError: permission denied, a symlink loop, a name too long (the OS's message, with the path).
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {name}") from None
    except IsADirectoryError:  # Windows and some systems refuse to open directories at all
        raise error(f"{name}: {what} is a directory, not a regular file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{name}: {what} is {_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # regular files ignore O_NONBLOCK; leave the usual mode anyway
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: PathLike, what: str = "file",
                      error: type[Exception] = NotARegularFileError) -> bytes:
    """All bytes of a regular file (see :func:`open_regular`); no more than its size is read."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(size + 1)
    if len(data) != size:
        raise error(f"{os.fspath(path)}: {what} changed size while being read")
    return data


# -- outputs: checked before any work -------------------------------------------------------------
#: An output refused up front when its file system has less free space than this (a full disk
#: would otherwise be found only when the result of the whole run is written).
MIN_FREE_BYTES = 1 << 16


class OutputPathError(ValueError):
    """An output path that cannot be written, or that would overwrite an input or another output."""


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer: the usual limit
        return 255


def _path_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


def _nearest_existing(path: str) -> tuple[str, list[str]]:
    """The deepest existing ancestor of ``path`` and the components below it that do not exist yet."""
    missing: list[str] = []
    current = path
    while True:
        parent = os.path.dirname(current)
        missing.append(os.path.basename(current))
        if parent == current or not parent:
            return parent or os.curdir, missing[::-1]
        if os.path.lexists(parent):
            return parent, missing[::-1]
        current = parent


def check_output_path(label: str, path: PathLike) -> str:
    """Check one output path before any work; return it absolute (symlinks not resolved).

    ``label`` names the option (``"--save"``) in the message. The path must not be empty or end in
    a separator; an existing path must be a regular file (a directory, FIFO or device is refused:
    writing would fail, or replace the device); every component must fit the file system's name
    length (``PC_NAME_MAX``) and the whole its path length; the nearest existing ancestor must be a
    directory the user can write into on a writable file system (missing folders below it are created
    by :func:`atomic_write`).

    Raises:
        OutputPathError: one line, ``"<label> <path>: <what is wrong>"``.
    """
    text = os.fspath(path)
    if not isinstance(text, str) or text.strip() == "":
        raise OutputPathError(f"{label}: expected a file name, got {text!r}")

    def fail(message: str) -> OutputPathError:
        return OutputPathError(f"{label} {text}: {message}")

    if "\x00" in text:
        raise fail("the name contains a NUL character")
    if text.endswith(("/", os.sep)) or os.path.basename(text) in ("", ".", ".."):
        raise fail("is a directory name; expected a file name")
    full = os.path.abspath(text)
    try:
        st = os.stat(full)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # a symlink loop, a component that is a file, permission denied above it
        if exc.errno == errno.ENOTDIR:
            raise fail("a folder on its path is a file") from None
        if exc.errno != errno.ENAMETOOLONG:  # too long: the checks below say which part
            raise fail(exc.strerror or str(exc)) from None
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise fail(f"is {_kind(st.st_mode)}; expected a file name")
    if os.path.lexists(full):  # an existing file (or a dangling symlink, which the write replaces)
        anchor, missing = os.path.dirname(full), [os.path.basename(full)]
    else:
        anchor, missing = _nearest_existing(full)
    if not os.path.isdir(anchor):
        raise fail(f"{anchor} is not a directory")
    limit = _name_max(anchor)
    for part in missing:
        if len(os.fsencode(part)) > limit:
            raise fail(f"the name {part[:40]!r}... is {len(os.fsencode(part))} bytes long, more than the "
                       f"{limit} this file system takes")
    # atomic_write's temporary name adds a dot before and ".<random>.tmp" after the file name.
    temporary = len(os.fsencode(missing[-1])) + 1 + 14
    if temporary > limit:
        raise fail(f"the name is too long for a temporary file beside it ({limit} bytes at most, "
                   f"keep it under {limit - 15})")
    if len(os.fsencode(full)) + 16 >= _path_max(anchor):
        raise fail(f"the path is longer than this file system takes ({_path_max(anchor)} bytes)")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise fail(f"permission denied: cannot create files in {anchor}")
    try:
        fs = os.statvfs(anchor)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will tell
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        raise fail(f"{anchor} is on a read-only file system")
    if fs is not None and fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
        raise fail(f"the file system of {anchor} is full ({fs.f_bavail * fs.f_frsize:,} bytes free)")
    return full


def _same(a: str, b: str) -> bool:
    if os.path.normcase(a) == os.path.normcase(b):
        return True
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


#: What an output holds, recognised from an existing file's first bytes (see :func:`file_kind`).
FILE_KINDS: dict[str, str] = {"model": "a zerodl model", "checkpoint": "a zerodl checkpoint",
                              "npz": "a zip/.npz archive", "png": "a PNG picture", "json": "a JSON document",
                              "pickle": "a pickle"}


def file_kind(path: PathLike) -> str | None:
    """What a regular file holds, from its first bytes: a key of :data:`FILE_KINDS`, or ``None``.

    Zip archives are told apart by their entry names (``__zerodl__.npy``: a model,
    ``__checkpoint__.npy``: a checkpoint; the central directory only is read). Never blocks: a
    FIFO, device or unreadable file gives ``None``.
    """
    try:
        with open_regular(path) as f:
            head = f.read(16)
            if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                import zipfile

                f.seek(0)
                try:
                    with zipfile.ZipFile(f) as archive:
                        names = set(archive.namelist())
                except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
                    return "npz"
                return ("model" if "__zerodl__.npy" in names else
                        "checkpoint" if "__checkpoint__.npy" in names else "npz")
    except (OSError, ValueError):
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return None


def check_output_paths(outputs: Sequence[tuple[str, PathLike | None] | tuple[str, PathLike | None, str]],
                       inputs: Sequence[tuple[str, PathLike | None]] = ()) -> None:
    """Check every output of a command before any work: one :class:`OutputPathError` or nothing.

    Args:
        outputs: ``(label, path)`` or ``(label, path, kind)`` tuples, e.g. ``[("--save", "m.npz",
            "npz"), ("--plot", None, "png")]``; ``None`` paths (an option not given) are skipped.
            Each is checked by :func:`check_output_path`. With a ``kind`` (a key of
            :data:`FILE_KINDS`), an existing file of *another* recognised kind is not replaced: a
            picture written over a model (``--misclassified-png m.npz``) is a slip that loses the
            model. Replacing a file of the same kind, or of no recognised kind, is ordinary.
        inputs: ``(label, path)`` pairs of the files the command reads. No output may be the same
            file as an input (same path, same file through a symlink or a hard link) or as another
            output: ``zerodl evaluate m.npz --plot m.npz`` would replace the model with a picture.
    """
    seen: list[tuple[str, str]] = []
    for label, path, *rest in outputs:
        if path is None:
            continue
        full = check_output_path(label, path)
        for other_label, other in inputs:
            if other is not None and _same(full, os.path.abspath(os.fspath(other))):
                raise OutputPathError(f"{label} {os.fspath(path)}: is the same file as {other_label} "
                                      f"{os.fspath(other)}; writing it would destroy the input")
        for other_label, other in seen:
            if _same(full, other):
                raise OutputPathError(f"{label} {os.fspath(path)}: is the same file as {other_label}; "
                                      "each output needs its own file")
        kind = rest[0] if rest else None
        found = file_kind(full) if kind is not None and os.path.isfile(full) else None
        if found is not None and found != kind:
            raise OutputPathError(
                f"{label} {os.fspath(path)}: exists and holds {FILE_KINDS[found]}; writing "
                f"{FILE_KINDS.get(kind, kind)} over it would lose it (choose another name, or delete it first)")
        seen.append((label, full))
