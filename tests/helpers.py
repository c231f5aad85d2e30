"""The one comparison helper every kernel test uses, and the tolerance table.

``assert_backends_agree(op, *args)`` runs the NumPy and the Numba twin of ``op`` on copies of the
same inputs and checks: outputs equal within the dtype's tolerance, output dtypes equal, inputs not
modified (except the ones the contract says are written, listed in ``inplace``, which are compared
between the twins instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zerodl import kernels

#: Tolerances by dtype. float32 allows for a different summation order (pairwise vs sequential).
TOLERANCES: dict[np.dtype, dict[str, float]] = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def tolerance(dtype: Any) -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` for ``dtype`` (float64 for non-float dtypes)."""
    return TOLERANCES.get(np.dtype(dtype), TOLERANCES[np.dtype(np.float64)])


def _copy(a: Any) -> Any:
    return a.copy() if isinstance(a, np.ndarray) else a


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _flatten(item)]
    return [out]


def assert_close(actual: Any, expected: Any, dtype: Any = None, what: str = "") -> None:
    """Equal within :func:`tolerance`; arrays and NumPy scalars must also agree in dtype."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{what}: expected an array, got {type(actual)}"
        assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if isinstance(expected, (np.ndarray, np.generic)):
        assert np.asarray(actual).dtype == expected.dtype, (
            f"{what}: dtype {np.asarray(actual).dtype} != {expected.dtype}"
        )
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(actual, expected, err_msg=what)
            return
        dtype = dtype or expected.dtype
    np.testing.assert_allclose(actual, expected, err_msg=what, **tolerance(dtype or np.float64))


def assert_backends_agree(
    op: str,
    *args: Any,
    inplace: Sequence[int] = (),
    dtype: Any = None,
) -> tuple[Any, Any]:
    """Run both twins of ``op`` on copies of ``args``; assert they agree. Returns (numpy, numba) outputs."""
    originals = [_copy(a) for a in args]
    args_np = [_copy(a) for a in args]
    args_nb = [_copy(a) for a in args]
    out_np = kernels.get(op, "numpy")(*args_np)
    out_nb = kernels.get(op, "numba")(*args_nb)
    for i, (orig, a_np, a_nb) in enumerate(zip(originals, args_np, args_nb)):
        if not isinstance(orig, np.ndarray):
            continue
        if i in inplace:
            assert_close(a_nb, a_np, dtype, f"{op}: in-place argument {i}")
            assert a_nb.dtype == orig.dtype, f"{op}: argument {i} changed dtype"
        else:
            np.testing.assert_array_equal(a_np, orig, err_msg=f"{op} (numpy) modified argument {i}")
            np.testing.assert_array_equal(a_nb, orig, err_msg=f"{op} (numba) modified argument {i}")
    leaves_np, leaves_nb = _flatten(out_np), _flatten(out_nb)
    assert len(leaves_np) == len(leaves_nb), f"{op}: twins return different numbers of outputs"
    for k, (a, b) in enumerate(zip(leaves_nb, leaves_np)):
        if a is None and b is None:
            continue
        assert_close(a, b, dtype, f"{op}: output {k}")
    return out_np, out_nb


def check_layer_gradient(forward, x: np.ndarray, dout: np.ndarray, dx: np.ndarray, h: float = 1e-6,
                         atol: float = 1e-6) -> None:
    """Check an analytic ``dx`` against central differences of ``sum(forward(x) * dout)`` (float64).

    ``x`` is perturbed in place (and restored), so it may be a parameter ``forward`` reads itself.
    """
    from zerodl.gradient import numerical_gradient

    num = numerical_gradient(lambda _: float(np.sum(forward(x) * dout)), x, h=h)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=atol)
