"""A training in another thread is not affected by the main thread switching backends with
``use_backend`` (context-local): its parameters are bit-identical to an undisturbed run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import zerodl
from zerodl.datasets import load_digits
from zerodl.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _train(digits, backend, progress_hook=None):
    (xtr, ttr), (xte, tte) = digits
    net = zerodl.MultiLayerNetExtend(64, [32, 32], 10, use_batchnorm=True, use_dropout=True,
                                     dropout_ration=0.1, seed=2)
    callbacks = [progress_hook] if progress_hook else []
    with zerodl.use_backend(backend):
        trainer = Trainer(net, xtr, ttr, xte, tte, epochs=3, mini_batch_size=50, optimizer="adam",
                          optimizer_param={"lr": 1e-3}, verbose=False, seed=4, callbacks=callbacks)
        trainer.train()
        seen = zerodl.get_backend()
    return trainer, seen


@pytest.mark.parametrize("thread_backend", zerodl.BACKENDS)
def test_backend_switching_in_main_thread_does_not_touch_a_training_thread(digits, thread_backend):
    reference, _ = _train(digits, thread_backend)
    other = {"numba": "numpy", "numpy": "numba"}[thread_backend]
    result: dict = {}
    switching = threading.Event()

    def hook(trainer, epoch, logs):
        # Hold the training at its first epoch until the main thread is switching backends, so the
        # rest of the run certainly overlaps the switches.
        assert switching.wait(timeout=60), "the main thread never started switching"

    def work():
        try:
            result["trainer"], result["seen"] = _train(digits, thread_backend, hook)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=work)
    probe = zerodl.TwoLayerNet(64, 8, 10, seed=0)
    x, t = digits[0][0][:20], digits[0][1][:20]
    thread.start()
    switches = 0
    while thread.is_alive():
        for name in (other, thread_backend, other):
            with zerodl.use_backend(name):
                assert zerodl.get_backend() == name
                probe.loss(x, t)  # the main thread really runs kernels of the other backend
                switches += 1
                switching.set()
    thread.join()
    if "error" in result:
        raise result["error"]
    assert switches >= 3
    assert result["seen"] == thread_backend
    trainer = result["trainer"]
    for key, value in reference.network.params.items():
        np.testing.assert_array_equal(trainer.network.params[key], value, err_msg=key)
    for key, value in reference.network.buffers().items():
        np.testing.assert_array_equal(trainer.network.buffers()[key], value, err_msg=key)
    assert trainer.train_loss_list == reference.train_loss_list


def test_a_thread_starts_on_the_process_default_not_the_callers_override():
    """``use_backend`` does not leak into threads started inside it (documented: a thread begins
    with a fresh context, on the process default set by set_backend / ZERODL_BACKEND)."""
    seen = []
    default = zerodl.get_backend()
    other = {"numba": "numpy", "numpy": "numba"}[default]
    with zerodl.use_backend(other):
        thread = threading.Thread(target=lambda: seen.append(zerodl.get_backend()))
        thread.start()
        thread.join()
    assert seen == [default]
