"""affine_forward / affine_backward: numpy vs numba on random shapes, both dtypes."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import assert_backends_agree, tolerance
from zerodl import kernels

dims = st.integers(1, 9)


@given(n=dims, d=dims, h=dims, seed=st.integers(0, 2**16))
def test_forward_twins_agree(n, d, h, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((n, d)).astype(dtype)
        W = rng.standard_normal((d, h)).astype(dtype)
        b = rng.standard_normal(h).astype(dtype)
        out, _ = assert_backends_agree("affine_forward", x, W, b)
        np.testing.assert_allclose(out, x.astype(np.float64) @ W + b, **tolerance(dtype))


@given(n=dims, d=dims, h=dims, seed=st.integers(0, 2**16))
def test_backward_twins_agree(n, d, h, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        dout = rng.standard_normal((n, h)).astype(dtype)
        x = rng.standard_normal((n, d)).astype(dtype)
        W = rng.standard_normal((d, h)).astype(dtype)
        (dx, dW, db), _ = assert_backends_agree("affine_backward", dout, x, W)
        assert dx.shape == (n, d) and dW.shape == (d, h) and db.shape == (h,)
        # need_dx=False: no dx, the same dW and db (bit for bit: the same products).
        for backend in ("numpy", "numba"):
            full = kernels.get("affine_backward", backend)(dout, x, W)
            none_dx, dW_only, db_only = kernels.get("affine_backward", backend)(dout, x, W, False)
            assert none_dx is None
            np.testing.assert_array_equal(dW_only, full[1])
            np.testing.assert_array_equal(db_only, full[2])
        np.testing.assert_allclose(db, dout.sum(axis=0, dtype=np.float64), **tolerance(dtype))
