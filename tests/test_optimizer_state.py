"""Optimizer state: save after N steps, restore into a new optimizer, M more steps == N + M steps
uninterrupted, bit for bit; and the six optimizers equal the book's formulas (float64)."""

import numpy as np
import pytest

import zerodl
from tests.book_chapter6 import BOOK_OPTIMIZERS
from zerodl import SGD, AdaGrad, Adam, Momentum, MultiLayerNetExtend, Nesterov, RMSprop

#: Non-default hyper-parameters, so restoring them is tested too.
HYPER = {
    SGD: {"lr": 0.05},
    Momentum: {"lr": 0.02, "momentum": 0.8},
    Nesterov: {"lr": 0.02, "momentum": 0.85},
    AdaGrad: {"lr": 0.07},
    RMSprop: {"lr": 0.005, "decay_rate": 0.95},
    Adam: {"lr": 0.003, "beta1": 0.85, "beta2": 0.99},
}
N_STEPS, M_STEPS = 4, 5


def _batches(rng, count, n=8, d=5, c=3):
    return [(rng.standard_normal((n, d)), rng.integers(0, c, n)) for _ in range(count)]


def _net(dtype):
    # BatchNorm adds gamma/beta parameters and running statistics to the state that must carry over.
    return MultiLayerNetExtend(5, [6, 4], 3, use_batchnorm=True, weight_decay_lambda=0.01,
                               dtype=dtype, seed=0)


def _train(net, opt, batches):
    for x, t in batches:
        opt.update(net.params, net.gradient(x.astype(net.dtype), t))


@pytest.mark.parametrize("cls", list(HYPER), ids=lambda c: c.__name__)
def test_resume_is_bit_identical(backend, dtype, cls, rng):
    batches = _batches(rng, N_STEPS + M_STEPS)

    straight = _net(dtype)
    _train(straight, cls(**HYPER[cls]), batches)

    first = _net(dtype)
    opt = cls(**HYPER[cls])
    _train(first, opt, batches[:N_STEPS])
    state = opt.state_dict()
    params = {k: v.copy() for k, v in first.params.items()}
    buffers = {k: v.copy() for k, v in first.buffers().items()}
    del opt, first

    resumed = _net(dtype)
    resumed.params.update(params)
    resumed.load_buffers(buffers)
    opt2 = cls()  # default hyper-parameters: load_state_dict must restore the saved ones
    opt2.load_state_dict(state)
    assert opt2.hyperparams() == HYPER[cls]
    assert opt2.iter == N_STEPS
    _train(resumed, opt2, batches[N_STEPS:])

    for key, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[key], value, err_msg=key)
        assert resumed.params[key].dtype == dtype
    for key, value in straight.buffers().items():
        np.testing.assert_array_equal(resumed.buffers()[key], value, err_msg=key)


@pytest.mark.parametrize("cls", list(HYPER), ids=lambda c: c.__name__)
def test_state_dict_is_a_snapshot(backend, cls, rng):
    net = _net(np.float64)
    opt = cls(**HYPER[cls])
    _train(net, opt, _batches(rng, 2))
    state = opt.state_dict()
    frozen = {name: {k: v.copy() for k, v in table.items()} for name, table in state["state"].items()}
    _train(net, opt, _batches(rng, 2))  # further steps must not leak into the saved snapshot
    for name, table in frozen.items():
        assert set(table) == set(net.params)
        for k, v in table.items():
            np.testing.assert_array_equal(state["state"][name][k], v)
    opt2 = cls()
    opt2.load_state_dict(state)
    for name, table in state["state"].items():  # loading copies: the snapshot stays independent
        for k, v in table.items():
            assert opt2.state[name][k] is not v


def test_state_of_another_optimizer_is_refused():
    state = Adam().state_dict()
    with pytest.raises(ValueError, match="RMSprop.load_state_dict: state is for 'Adam'"):
        RMSprop().load_state_dict(state)


def _grad(params):
    """A non-quadratic gradient, so each step's gradient depends on where the last step landed."""
    return {k: 0.2 * p**3 + 3 * np.cos(3 * p) for k, p in params.items()}


@pytest.mark.parametrize("cls", list(HYPER), ids=lambda c: c.__name__)
def test_equal_to_the_books_formulas_after_n_updates(backend, cls, rng):
    params = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3), "W2": rng.standard_normal((3, 2))}
    book_params = {k: v.copy() for k, v in params.items()}
    start = {k: v.copy() for k, v in params.items()}
    opt = cls(**HYPER[cls])
    book = BOOK_OPTIMIZERS[cls.__name__](**HYPER[cls])
    for _ in range(25):
        opt.update(params, _grad(params))
        book.update(book_params, _grad(book_params))
    for key, value in params.items():
        np.testing.assert_allclose(value, book_params[key], rtol=1e-12, atol=1e-14, err_msg=key)
        assert value.dtype == np.float64
        assert not np.allclose(value, start[key]), f"{key} did not move"
    assert opt.iter == 25


def test_the_backends_agree_bit_for_bit_on_updates(rng):
    # Same formulas in the same order: the twins give identical float64 trajectories.
    start = {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    for cls, hyper in HYPER.items():
        finals = []
        for backend in zerodl.BACKENDS:
            with zerodl.use_backend(backend):
                params = {k: v.copy() for k, v in start.items()}
                opt = cls(**hyper)
                for _ in range(10):
                    opt.update(params, _grad(params))
                finals.append(params)
        for key, value in start.items():
            np.testing.assert_array_equal(finals[0][key], finals[1][key], err_msg=f"{cls.__name__} {key}")
            assert not np.array_equal(finals[0][key], value)
