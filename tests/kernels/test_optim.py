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


@pytest.mark.parametrize("op", ["adam_update", "adagrad_update", "rmsprop_update"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_in_halves_on_the_task_threads_give_the_same_bits(monkeypatch, op, dtype):
    # While BLAS is held to one thread (a conv net's fused step), the square-root updates run as two
    # halves of the parameters laid end to end (here cutting the middle array) on the task threads;
    # elementwise, so the same bits as in one call and as the NumPy twin (to its tolerance).
    import numba

    from tests.helpers import tolerance
    from zerodl import kernels
    from zerodl.kernels import _tasks, _threads, optim

    n_state, hyper = CASES[op]
    shapes = [(3, 5), (7, 11), (2,)]  # 15 + 77 + 2 elements: the middle (47) falls inside the second

    def arrays():
        r = np.random.default_rng(11)
        return ([r.standard_normal(s).astype(dtype) for s in shapes], [r.standard_normal(s).astype(dtype) for s in shapes],
                [[np.abs(r.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(n_state)])

    calls = []
    real_run_tasks = _tasks.run_tasks
    monkeypatch.setattr(optim, "run_tasks", lambda task, n: (calls.append(n), real_run_tasks(task, n))[1])
    results = {}
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        for name, split_min, limit in (("whole", 2**62, 1), ("halves", 1, 1), ("unlimited", 1, None)):
            monkeypatch.setattr(optim, "SPLIT_MIN_ELEMENTS", split_min)
            params, grads, states = arrays()
            before = len(calls)
            if limit is None:
                kernels.get(op, "numba")(params, grads, *states, *hyper)
            else:
                with _threads.limited(limit):
                    kernels.get(op, "numba")(params, grads, *states, *hyper)
            results[name] = (params, states, len(calls) - before)
    finally:
        numba.set_num_threads(old)
    assert results["whole"][2] == 0 and results["halves"][2] == 1  # the halves took one call
    assert results["unlimited"][2] == 0  # BLAS free to use both cores: the update stays whole

    def every_array(name):
        params, states, _ = results[name]
        return params + [a for state in states for a in state]

    for name in ("halves", "unlimited"):
        for a, b in zip(every_array("whole"), every_array(name)):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == dtype
    params, grads, states = arrays()
    kernels.get(op, "numpy")(params, grads, *states, *hyper)
    for a, b in zip(params, results["halves"][0]):
        np.testing.assert_allclose(b, a, **tolerance(dtype))
