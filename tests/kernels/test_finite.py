"""count_nonfinite: numpy vs numba vs a per-element loop and np.isfinite, any shape and layout,
both dtypes, NaN/±inf at random places, inputs untouched."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests import naive
from tests.helpers import assert_backends_agree
from zerodl import kernels

SPECIALS = (np.nan, np.inf, -np.inf)


def _with_specials(rng: np.random.Generator, shape: tuple[int, ...], dtype, fraction: float) -> np.ndarray:
    """Random normals with a random ``fraction`` of entries set to NaN, +inf or -inf (also the
    extremes of the finite range, and negative NaNs: sign and payload must not matter)."""
    x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(dtype)
    flat = x.reshape(-1)
    bad = rng.random(flat.size) < fraction
    flat[bad] = rng.choice(SPECIALS, int(bad.sum())).astype(dtype)
    if flat.size > 2:
        info = np.finfo(dtype)
        flat[0] = info.max if not bad[0] else flat[0]
        flat[-1] = -info.tiny if not bad[-1] else flat[-1]
    negative_nan = np.array([np.nan], dtype=dtype)
    negative_nan.view(np.uint32 if dtype == np.float32 else np.uint64)[0] |= 1 << (negative_nan.itemsize * 8 - 1)
    if flat.size > 3 and rng.random() < 0.5:
        flat[1] = negative_nan[0]
    return x


def _expected(x: np.ndarray) -> int:
    return int(np.count_nonzero(~np.isfinite(x)))


@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=7), seed=st.integers(0, 2**16),
       fraction=st.sampled_from([0.0, 0.01, 0.2, 1.0]))
def test_twins_agree_with_isfinite_and_the_loop(shape, seed, fraction):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = _with_specials(rng, shape, dtype, fraction)
        n_np, n_nb = assert_backends_agree("count_nonfinite", x)
        assert n_np == n_nb == _expected(x) == naive.count_nonfinite(x)
        assert type(n_np) is int and type(n_nb) is int


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", SPECIALS, ids=["nan", "+inf", "-inf"])
def test_one_special_anywhere(dtype, special):
    # Every position of a vector long enough for the compiled loop's vector body and its tail.
    for size in (1, 7, 64, 67):
        for pos in range(size):
            x = np.linspace(-1e3, 1e3, size).astype(dtype)
            x[pos] = special
            for backend in ("numpy", "numba"):
                assert kernels.get("count_nonfinite", backend)(x) == 1, (size, pos, backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_and_odd_layouts(dtype, rng):
    x = _with_specials(rng, (6, 5, 4, 3), dtype, 0.1)
    views = {
        "every other sample": x[::2],
        "channel slice": x[:, 1:4, :, ::2],
        "reversed": x[::-1, :, ::-1],
        "fortran": np.asfortranarray(x),
        "transposed": x.transpose(3, 1, 0, 2),
        "1-d strided": x.reshape(-1)[::3],
        "broadcast (read-only)": np.broadcast_to(x[0, 0, 0], (5, 3)),
        "0-d": np.asarray(x[0, 0, 0, 0]),
    }
    readonly = x.copy()
    readonly.setflags(write=False)
    views["read-only"] = readonly
    for name, view in views.items():
        n_np, n_nb = assert_backends_agree("count_nonfinite", view)
        assert n_np == n_nb == _expected(view), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_and_all_special(dtype):
    for backend in ("numpy", "numba"):
        count = kernels.get("count_nonfinite", backend)
        assert count(np.empty((0, 5), dtype=dtype)) == 0
        assert count(np.full((3, 4), np.nan, dtype=dtype)) == 12
        assert count(np.array([np.finfo(dtype).max, -np.finfo(dtype).max, 0.0, -0.0], dtype=dtype)) == 0


@pytest.mark.parametrize("bad", [np.arange(3), np.zeros(3, np.float16), np.zeros(3, np.complex128),
                                 np.array([True])], ids=["int64", "float16", "complex128", "bool"])
def test_other_dtypes_are_refused_by_both_twins(bad):
    for backend in ("numpy", "numba"):
        with pytest.raises(TypeError, match=r"count_nonfinite: x must be a float32 or float64 array, got dtype"):
            kernels.get("count_nonfinite", backend)(bad)
