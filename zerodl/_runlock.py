"""One run owns its output files: an advisory lock beside each output, held for the run's life.

A run that writes ``ck.npz`` holds ``ck.npz.lock`` open with an exclusive ``flock`` until it ends;
the file says which process holds it (pid, start time, command). A second run naming the same
output — another process, or another ``Trainer`` in the same process — is refused up front with an
:class:`OutputInUseError` naming the file and the holder::

    ck.npz is in use by another run (pid 1234, started 2026-12-03 06:53:40 UTC: zerodl train ...);
    wait for it or choose another path

Why ``flock`` on an open descriptor: the kernel releases it when the process ends in any way
(SIGKILL, a crash, the OOM killer), so the lock file of a dead run never blocks the next one and
nothing ever has to decide whether a pid is still alive ("delete a stale lock, then create it" races
between two newcomers). The holder removes its lock file when it releases it, *while still holding
the lock*; a newcomer that got the lock on a file just removed sees that the path no longer names
the file it locked and tries again, so two runs never both believe they hold the same output.

:class:`RunLock` takes the locks of a set of outputs all-or-nothing: if one is in use, the ones
already taken are released before the error is raised. A lock taken with ``inherit=True`` (what the
``zerodl`` command does for all its outputs before any work) is shared with the code it runs: a
``Trainer`` inside it, asked to lock the same checkpoint, finds it already held by its own run and
takes nothing more. Anything else asking for a held output — even in the same process — is refused.

Where ``fcntl`` does not exist (Windows) or the file system refuses ``flock`` (some network file
systems), outputs are not locked: a warning says so once and the run goes on as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the package supports 3.10
    from typing import Self

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = str | os.PathLike[str]

#: Appended to an output's file name to name its lock file (``ck.npz`` → ``ck.npz.lock``).
LOCK_SUFFIX = ".lock"
#: At most this much of a lock file is read to say who holds it (it is a one-line JSON record).
_MAX_RECORD = 4096

#: Locks taken with ``inherit=True`` that enclose the code now running (see :class:`RunLock`).
_INHERITED: contextvars.ContextVar[tuple[RunLock, ...]] = contextvars.ContextVar("zerodl_run_locks", default=())
_warned_unsupported = False


class OutputInUseError(ValueError):
    """An output file that another run (another process, or another object in this one) is writing.

    Attributes:
        path: the output as the caller named it.
        pid: the holder's process id (``None`` if its lock file could not be read yet).
        holder: what the holder's lock file says (``pid``, ``started``, ``command``), possibly empty.
    """

    def __init__(self, path: PathLike, holder: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self.holder = holder
        pid = holder.get("pid")
        self.pid = pid if isinstance(pid, int) else None
        details = [f"pid {self.pid}" if self.pid is not None else "pid unknown"]
        if pid == os.getpid():
            details[0] += ", this process"
        started = holder.get("started")
        if isinstance(started, str) and started:
            details.append(f"started {started}")
        text = ", ".join(details)
        command = holder.get("command")
        if isinstance(command, str) and command:
            text += f": {command[:200]}"
        super().__init__(f"{self.path} is in use by another run ({text}); wait for it or choose another path")


def lock_path(path: PathLike) -> str:
    """The lock file of output ``path``: ``<real folder>/<name>.lock`` (one per file, however named)."""
    full = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(full)
    return os.path.join(os.path.realpath(directory), name + LOCK_SUFFIX)


def _default_command() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return " ".join(argv)


def _read_holder(fd: int) -> dict[str, Any]:
    """What a lock file held by someone else says (empty if it is not written yet or unreadable)."""
    try:
        data = os.pread(fd, _MAX_RECORD, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _warn_unsupported(reason: str) -> None:
    global _warned_unsupported
    if not _warned_unsupported:
        _warned_unsupported = True
        warnings.warn(f"output files are not locked against concurrent runs: {reason}", RuntimeWarning,
                      stacklevel=4)


class _FileLock:
    """One held lock: the open descriptor of ``<output>.lock`` with an exclusive ``flock`` on it."""

    def __init__(self, output: PathLike, record: dict[str, Any]) -> None:
        self.output = os.fspath(output)
        self.path = lock_path(output)
        self.fd: int | None = None
        self._acquire(record)

    def _acquire(self, record: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputInUseError(self.output, holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    _warn_unsupported(f"the file system of {directory} has no flock ({exc.strerror})")
                    return
                raise
            # The holder before us may have removed this file (it does so while still holding the
            # lock, then closes): the lock is then on a file nobody else can find. Start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                payload = (json.dumps(record) + "\n").encode("utf-8")
                os.ftruncate(fd, 0)
                os.pwrite(fd, payload, 0)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            return

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                # Still holding the lock: a newcomer that opened this file will see it is gone.
                if os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False)):
                    os.unlink(self.path)
        finally:
            os.close(fd)  # releases the flock


class RunLock:
    """The locks of a run's output files, taken all-or-nothing and held until :meth:`release`.

    >>> with RunLock(["ck.npz", "model.npz"], command="zerodl train"):  # doctest: +SKIP
    ...     train_and_write()

    Args:
        paths: the outputs (``None`` entries are skipped, duplicates and aliases locked once).
        command: what the lock files say the holder is doing (default: this process's command line).
        inherit: share these locks with the code run inside ``with`` (see the module docstring);
            a nested :class:`RunLock` then skips the outputs this one holds.

    Raises:
        OutputInUseError: an output is held by another run; nothing is held after the error.
        OSError: a lock file cannot be created (permission denied, read-only file system).
    """

    def __init__(self, paths: Iterable[PathLike | None], *, command: str | None = None,
                 inherit: bool = False) -> None:
        self.inherit = bool(inherit)
        self._locks: list[_FileLock] = []
        self._token: contextvars.Token[tuple[RunLock, ...]] | None = None
        record = {"pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "command": command if command is not None else _default_command()}
        held_by_caller = {key for lock in _INHERITED.get() for key in lock.lock_files}
        seen: set[str] = set()
        try:
            for path in paths:
                if path is None:
                    continue
                key = lock_path(path)
                if key in seen or key in held_by_caller:
                    continue
                seen.add(key)
                if fcntl is None:  # pragma: no cover - Windows
                    _warn_unsupported("this platform has no flock")
                    break
                lock = _FileLock(path, record)
                if lock.fd is not None:
                    self._locks.append(lock)
        except BaseException:
            self.release()
            raise

    @property
    def lock_files(self) -> list[str]:
        """The lock files held (absolute paths)."""
        return [lock.path for lock in self._locks if lock.fd is not None]

    @property
    def held(self) -> bool:
        return any(lock.fd is not None for lock in self._locks)

    def release(self) -> None:
        """Release every lock (idempotent) and remove the lock files."""
        while self._locks:
            self._locks.pop().release()

    def __enter__(self) -> Self:
        if self.inherit:
            self._token = _INHERITED.set((*_INHERITED.get(), self))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            with contextlib.suppress(ValueError):  # reset from another context: nothing to undo
                _INHERITED.reset(self._token)
            self._token = None
        self.release()

    def __del__(self) -> None:  # an abandoned holder does not keep its outputs locked forever
        with contextlib.suppress(Exception):
            self.release()


@contextlib.contextmanager
def hold_outputs(paths: Iterable[PathLike | None], *, command: str | None = None,
                 inherit: bool = True) -> Iterator[RunLock]:
    """``with hold_outputs([...]):`` — :class:`RunLock` as a context manager, inherited by default."""
    with RunLock(paths, command=command, inherit=inherit) as lock:
        yield lock


__all__ = ["LOCK_SUFFIX", "OutputInUseError", "RunLock", "hold_outputs", "lock_path"]
