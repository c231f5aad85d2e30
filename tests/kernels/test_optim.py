"""Optimizer update kernels: numpy vs numba, in place, both dtypes, several steps."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree

# op → (number of state arrays, hyper-parameters after the state)
CASES = {
    "sgd_update": (0, (0.1,)),
    "momentum_update": (1, (0.01, 0.9)),
    "nesterov_update": (1, (0.01, 0.9)),
    "adagrad_update": (1, (0.01, 1e-7)),
    "rmsprop_update": (1, (0.01, 0.99, 1e-7)),
    "adam_update": (2, (0.001 * np.sqrt(1 - 0.999) / (1 - 0.9), 0.9, 0.999, 1e-7)),
}


@pytest.mark.parametrize("op", sorted(CASES))
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=6), seed=st.integers(0, 2**16))
def test_twins_agree_in_place(op, shape, seed):
    n_state, hyper = CASES[op]
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        param = rng.standard_normal(shape).astype(dtype)
        grad = rng.standard_normal(shape).astype(dtype)
        state = [np.abs(rng.standard_normal(shape)).astype(dtype) for _ in range(n_state)]
        inplace = [0] + [2 + i for i in range(n_state)]
        out = assert_backends_agree(op, param, grad, *state, *hyper, inplace=inplace)
        assert out == (None, None), f"{op} must update in place and return None"


@pytest.mark.parametrize("op", sorted(CASES))
def test_writes_into_the_callers_arrays(op, backend):
    from zerodl import kernels

    n_state, hyper = CASES[op]
    param = np.ones((3, 4))
    state = [np.zeros((3, 4)) for _ in range(n_state)]
    alias, state_alias = param, list(state)
    kernels.get(op)(param, np.full((3, 4), 0.5), *state, *hyper)
    assert alias is param and not np.all(param == 1)
    for s, a in zip(state, state_alias):
        assert s is a
