"""numerical_gradient: central differences, any ndim, x restored."""

import numpy as np
import pytest

from zerodl.gradient import numerical_gradient


def test_book_function_2():
    f = lambda x: np.sum(x**2)
    np.testing.assert_allclose(numerical_gradient(f, np.array([3.0, 4.0])), [6, 8], rtol=1e-6)


def test_any_ndim_and_restored():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 10
    before = x.copy()
    g = numerical_gradient(lambda a: np.sum(np.sin(a)), x)
    np.testing.assert_allclose(g, np.cos(before), rtol=1e-6)
    np.testing.assert_array_equal(x, before)


def test_restored_even_when_f_raises():
    x = np.ones(3)

    def f(a):
        if a[0] != 1:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, np.ones(3))


def test_refuses_integer_arrays():
    with pytest.raises(TypeError, match="float array"):
        numerical_gradient(lambda a: 0.0, np.arange(3))
