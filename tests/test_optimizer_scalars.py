"""The book's loose optimizer inputs: plain numbers as parameters (ch06/optimizer_compare_naive.py).

The book optimises ``params = {'x': -7.0, 'y': 2.0}`` on ``f(x, y) = x²/20 + y²``; its
``params[key] -= ...`` leaves new numbers in the dict. zerodl does the same (arrays are still updated
in place), with the same values as the book's formulas (tests/book_chapter6.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.book_chapter6 import BOOK_OPTIMIZERS
from zerodl import optimizer as zopt

HYPER = {"SGD": {"lr": 0.95}, "Momentum": {"lr": 0.1}, "Nesterov": {"lr": 0.1}, "AdaGrad": {"lr": 1.5},
         "RMSprop": {"lr": 0.2}, "Adam": {"lr": 0.3}}


def _df(x, y):
    return x / 10.0, 2.0 * y


@pytest.mark.parametrize("name", sorted(HYPER))
def test_plain_floats_follow_the_books_trajectory(name, backend):
    ours = getattr(zopt, name)(**HYPER[name])
    book = BOOK_OPTIMIZERS[name](**HYPER[name])
    params = {"x": -7.0, "y": 2.0}
    book_params = {"x": -7.0, "y": 2.0}
    for _ in range(30):
        gx, gy = _df(params["x"], params["y"])
        ours.update(params, {"x": gx, "y": gy})
        bx, by = _df(book_params["x"], book_params["y"])
        book.update(book_params, {"x": bx, "y": by})
        assert isinstance(params["x"], float) and isinstance(params["y"], float)
        # The same type as the book's: NumPy scalars once the 0-d state arrays took part.
        assert type(params["x"]) is type(book_params["x"]), (type(params["x"]), type(book_params["x"]))
    np.testing.assert_allclose([params["x"], params["y"]],
                               [float(book_params["x"]), float(book_params["y"])], rtol=1e-12, atol=1e-14)


def test_numpy_scalars_keep_their_type(backend):
    params = {"w": np.float32(1.5), "v": np.float64(-2.0)}
    zopt.SGD(0.5).update(params, {"w": np.float32(1.0), "v": 2.0})
    assert type(params["w"]) is np.float32 and params["w"] == np.float32(1.0)
    assert type(params["v"]) is np.float64 and params["v"] == -3.0


def test_arrays_are_still_updated_in_place(backend):
    w = np.ones(3)
    params = {"w": w, "s": 1.0}
    zopt.Momentum(0.1).update(params, {"w": np.ones(3), "s": 1.0})
    assert params["w"] is w and np.all(w < 1) and params["s"] < 1


@pytest.mark.parametrize("bad,err,match", [
    ("text", TypeError, "parameter 'p' must be a NumPy array or a real number, got str"),
    (True, TypeError, "parameter 'p' must be a NumPy array or a real number, got bool"),
    (np.ones(2, dtype=np.float16), TypeError, "parameter 'p' must be a float32 or float64 array"),
    (np.ones(2, dtype=np.int64), TypeError, "parameter 'p' must be a float32 or float64 array"),
])
def test_wrong_parameters_are_clear_errors(bad, err, match, backend):
    opt = zopt.Adam()
    with pytest.raises(err, match=match):
        opt.update({"p": bad}, {"p": np.ones(np.shape(bad))})
    assert opt.iter == 0


def test_read_only_and_complex_are_refused_the_same_in_both_backends(backend):
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 'p' is read-only"):
        zopt.SGD().update({"p": ro}, {"p": np.ones(3)})
    with pytest.raises(TypeError, match="gradient for 'p' must hold real numbers, got dtype complex128"):
        zopt.SGD().update({"p": np.ones(3)}, {"p": np.ones(3) * 1j})
