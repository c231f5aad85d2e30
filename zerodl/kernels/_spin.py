"""Waiting without the GIL: the compiled spin loops behind :func:`~zerodl.kernels._tasks.run_tasks`.

A call of ``run_tasks`` hands tasks to a worker thread and waits for it. Handing over through Python
(a lock, an event, a future) costs 80-200 µs a call on these machines: the thread that waits sleeps,
and waking a sleeping virtual CPU is slow; worse, the caller's last task, a compiled call, must wait
for the GIL at its end while the worker holds it for its own bookkeeping, and that wait sleeps too
(``benchmarks_scripts/conv_notes.md``, session 8). Here both sides wait in compiled ``nogil`` code
instead, spinning on an ``int64`` counter that the other side moves with an atomic operation, for a
bounded number of ``pause`` instructions, before falling back to sleeping in Python:

* :func:`signal_and_wait` — a worker reports the job it finished (an atomic add) and spins until a
  new job is posted. The report is made *after* the worker's Python bookkeeping, from inside this
  GIL-free call, so a caller that sees it finds the GIL free.
* :func:`wait_until_at_least` — the caller spins until every engaged worker has reported.

Arrays in, integers out; nothing here knows about tasks. Each function has a plain Python body, so
with ``NUMBA_DISABLE_JIT=1`` the same code runs (callers then pass ``spins=0`` and go straight to
their sleeping fallback rather than spin in Python while holding the GIL).
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from zerodl.kernels._jit import jit

#: Index of the posted-job counter in the state array; the done counter sits a cache line away so
#: the caller's and the workers' writes do not share a line.
POSTED = 0
DONE = 8
STATE_SIZE = 16

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


# ------------------------------------------------------------ atomics (Python bodies for no-JIT runs)
def load_acquire(state: np.ndarray, i: int) -> int:
    """``state[i]``, read with acquire ordering (compiled: an atomic load the loop cannot hoist)."""
    return int(state[i])


def fetch_add(state: np.ndarray, i: int, value: int) -> int:
    """``state[i] += value`` as one atomic read-modify-write; returns the old value."""
    old = int(state[i])
    state[i] = old + value
    return old


def cpu_pause() -> None:
    """x86's ``pause`` (a spin-wait hint: less power, no memory-order mis-speculation); nothing on
    other machines."""


def _element_pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


def _int64_state(state) -> bool:
    return isinstance(state, types.Array) and state.dtype == types.int64 and state.ndim == 1


@intrinsic
def _load_acquire_ir(typingctx, state, i):
    if not (_int64_state(state) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_element_pointer(context, builder, sig, args), "acquire", 8)

    return types.int64(state, i), codegen


@intrinsic
def _fetch_add_ir(typingctx, state, i, value):
    if not (_int64_state(state) and isinstance(i, types.Integer) and value == types.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _element_pointer(context, builder, sig, args), args[2], "seq_cst")

    return types.int64(state, i, value), codegen


@intrinsic
def _cpu_pause_ir(typingctx):
    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@overload(load_acquire, inline="always")
def _load_acquire_overload(state, i):
    return lambda state, i: _load_acquire_ir(state, i)


@overload(fetch_add, inline="always")
def _fetch_add_overload(state, i, value):
    return lambda state, i, value: _fetch_add_ir(state, i, value)


@overload(cpu_pause, inline="always")
def _cpu_pause_overload():
    return lambda: _cpu_pause_ir()


# ----------------------------------------------------------------------------------- the waits
@jit
def signal_and_wait(state: np.ndarray, finished: int, seen: int, spins: int) -> int:
    """A worker's hand-over, GIL released: add ``finished`` (0 or 1) to ``state[DONE]``, then spin
    (at most ``spins`` pauses) until ``state[POSTED]`` differs from ``seen``. Returns the posted
    value, or -1 when the spins ran out (the caller then sleeps in Python)."""
    if finished:
        fetch_add(state, DONE, np.int64(finished))
    for _ in range(spins):
        posted = load_acquire(state, POSTED)
        if posted != seen:
            return posted
        cpu_pause()
    posted = load_acquire(state, POSTED)
    return posted if posted != seen else -1


@jit
def wait_until_at_least(state: np.ndarray, i: int, target: int, spins: int) -> bool:
    """Spin, GIL released, until ``state[i] >= target`` (True) or ``spins`` pauses have passed and
    it still is not (False)."""
    for _ in range(spins):
        if load_acquire(state, i) >= target:
            return True
        cpu_pause()
    return load_acquire(state, i) >= target


@jit
def add(state: np.ndarray, i: int, value: int) -> int:
    """:func:`fetch_add` callable from Python (an atomic add that races safely with the spinning
    threads' own); returns the old value."""
    return fetch_add(state, i, np.int64(value))
