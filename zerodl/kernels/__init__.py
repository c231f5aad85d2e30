"""The kernel registry: ``{(op, backend): function}``, resolved at call time.

Every kernel module in this package defines, for each op name in its ``OPS`` tuple, a NumPy
reference ``<op>_numpy`` and a compiled twin ``<op>_numba`` with the same signature and meaning.
Layers never import a twin directly; they call :func:`get` (``kernels.get("affine_forward")``),
which returns the twin of the backend active in the calling context, so
:func:`zerodl.use_backend` takes effect on the very next call.

Importing this package compiles nothing: numba compiles a kernel on its first call (and caches it
on disk, see ``_jit.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from zerodl.backend import BACKENDS, get_backend
from zerodl.kernels import affine, batchnorm, dropout, optim, relu, sigmoid, softmax_loss
from zerodl.kernels import conv_relu_pool, convolution, im2col, pooling
from zerodl.kernels import train_step

#: Kernel modules; each contributes the ops listed in its ``OPS``.
MODULES: tuple[ModuleType, ...] = (affine, relu, sigmoid, softmax_loss, optim, dropout, batchnorm,
                                   im2col, pooling, convolution, conv_relu_pool, train_step)

REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}


def register_module(module: ModuleType) -> None:
    """Register both twins of every op in ``module.OPS``; a missing twin is an import-time error."""
    for op in module.OPS:
        for backend in BACKENDS:
            name = f"{op}_{backend}"
            fn = getattr(module, name, None)
            if fn is None:
                raise ImportError(f"{module.__name__} lists op {op!r} but defines no {name}")
            REGISTRY[(op, backend)] = fn


for _module in MODULES:
    register_module(_module)


def ops(backend: str | None = None) -> list[str]:
    """Sorted op names registered for ``backend`` (default: the active one)."""
    backend = backend or get_backend()
    return sorted(op for op, b in REGISTRY if b == backend)


def get(op: str, backend: str | None = None) -> Callable[..., Any]:
    """The twin of ``op`` for ``backend`` (default: the backend active in this context)."""
    backend = backend or get_backend()
    try:
        return REGISTRY[(op, backend)]
    except KeyError:
        known = ", ".join(ops(backend)) or "none"
        raise KeyError(f"no kernel {op!r} for backend {backend!r}; known ops: {known}") from None
