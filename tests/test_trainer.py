"""Trainer: the book's recorded numbers, seeds, callbacks, early stopping, Ctrl-C."""

from __future__ import annotations

import inspect
import io
import math
import os
import signal

import numpy as np
import pytest

import zerodl
from zerodl.networks import MultiLayerNet, TwoLayerNet
from zerodl.optimizer import OPTIMIZERS, SGD, Adam
from zerodl.trainer import (
    Callback,
    EarlyStopping,
    Trainer,
    confusion_matrix,
    predict_labels,
)


@pytest.fixture
def data():
    """A small separable 3-class problem: 300 train / 90 test samples of 5 features."""
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((3, 5)) * 3

    def make(n):
        t = rng.integers(0, 3, size=n)
        return (centers[t] + rng.standard_normal((n, 5))).astype(np.float64), t

    return make(300), make(90)


def _net(seed=0, dtype="float64"):
    return MultiLayerNet(5, [8], 3, dtype=dtype, seed=seed)


class Unfused:
    """A network without ``train_step``: the Trainer must take the book's three-call path."""

    def __init__(self, net):
        self.net = net
        self.params = net.params

    def gradient(self, x, t):
        return self.net.gradient(x, t)

    def loss(self, x, t):
        return self.net.loss(x, t)

    def accuracy(self, x, t):
        return self.net.accuracy(x, t)


def _book_loop(network, x_train, t_train, x_test, t_test, epochs, batch, optimizer, rng):
    """The book's common/trainer.py loop, transcribed (with the Generator for the batch choice)."""
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch, 1)
    max_iter = int(epochs * iter_per_epoch)
    losses, train_accs, test_accs = [], [], []
    for i in range(max_iter):
        mask = rng.integers(0, train_size, size=batch)
        grads = network.gradient(x_train[mask], t_train[mask])
        optimizer.update(network.params, grads)
        losses.append(float(network.loss(x_train[mask], t_train[mask])))
        if i % iter_per_epoch == 0:
            train_accs.append(network.accuracy(x_train, t_train))
            test_accs.append(network.accuracy(x_test, t_test))
    return losses, train_accs, test_accs, network.accuracy(x_test, t_test)


# -- the book's semantics ---------------------------------------------------------------------
def test_lists_match_the_books_loop_exactly_without_fused_step(data):
    (x_tr, t_tr), (x_te, t_te) = data
    with zerodl.use_backend("numpy"):
        trainer = Trainer(Unfused(_net()), x_tr, t_tr, x_te, t_te, epochs=4, mini_batch_size=30,
                          optimizer="SGD", optimizer_param={"lr": 0.1}, verbose=False, seed=5).train()
        book = _book_loop(_net(), x_tr, t_tr, x_te, t_te, 4, 30, SGD(lr=0.1), np.random.default_rng(5))
    assert trainer.iter_per_epoch == 10 and trainer.max_iter == 40
    assert trainer.train_loss_list == book[0]
    assert trainer.train_acc_list == book[1]
    assert trainer.test_acc_list == book[2]
    assert trainer.final_test_acc == book[3]
    assert len(trainer.train_acc_list) == 4
    # The book's first evaluation happens after the first update (iteration 0).
    assert [h["iteration"] for h in trainer.history] == [1, 11, 21, 31]


def test_fused_step_records_the_same_numbers(backend, data):
    (x_tr, t_tr), (x_te, t_te) = data
    net = _net()
    assert hasattr(net, "train_step"), "Sequential is expected to provide the fused train_step"
    trainer = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=3, mini_batch_size=30, optimizer="Adam",
                      optimizer_param={"lr": 0.01}, verbose=False, seed=5).train()
    book = _book_loop(_net(), x_tr, t_tr, x_te, t_te, 3, 30, Adam(lr=0.01), np.random.default_rng(5))
    # The fused step equals gradient + update "to rounding"; the losses are recorded after it.
    np.testing.assert_allclose(trainer.train_loss_list, book[0], rtol=1e-9, atol=1e-12)
    assert trainer.test_acc_list == book[2]


def test_fused_train_step_is_used_and_loss_recorded_after_update(data):
    (x_tr, t_tr), (x_te, t_te) = data
    net = _net()
    calls = []
    real = net.train_step

    def spy(x, t, optimizer):
        calls.append(len(x))
        return real(x, t, optimizer)

    net.train_step = spy
    trainer = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=50, verbose=False, seed=0)
    x_b, t_b = x_tr[:50], t_tr[:50]
    before_loss = float(net.loss(x_b, t_b, train_flg=True))
    recorded = trainer._train_step(x_b, t_b)
    assert calls == [50]
    assert recorded == float(net.loss(x_b, t_b))  # the loss after the update, as the book
    assert recorded != before_loss
    trainer_fast = Trainer(_net(), x_tr, t_tr, x_te, t_te, verbose=False, record_loss="before_update")
    fresh = _net()
    assert trainer_fast._train_step(x_b, t_b) == pytest.approx(float(fresh.loss(x_b, t_b, train_flg=True)))


def test_epoch_boundaries_when_batches_do_not_divide_the_set(data):
    (x_tr, t_tr), (x_te, t_te) = data
    # 250 / 100 = 2.5 iterations per epoch: the book's float modulo would evaluate only once.
    trainer = Trainer(_net(), x_tr[:250], t_tr[:250], x_te, t_te, epochs=4, mini_batch_size=100,
                      verbose=False, seed=0).train()
    assert trainer.max_iter == 10
    assert [h["iteration"] - 1 for h in trainer.history] == [0, 3, 5, 8]  # ceil(k * 2.5)
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 4 == trainer.total_epochs
    assert all(trainer.is_epoch_boundary(i) == (i in (0, 3, 5, 8)) for i in range(10))


@pytest.mark.parametrize("n, batch, epochs", [(300, 100, 3), (250, 100, 4), (299, 7, 2.5), (40, 100, 3),
                                               (100, 100, 2), (1347, 100, 30)])
def test_total_epochs_counts_the_boundaries(n, batch, epochs):
    x = np.zeros((n, 1))
    t = np.zeros(n, dtype=int)
    trainer = Trainer(_net(), x, t, x, t, epochs=epochs, mini_batch_size=batch, verbose=False)
    boundaries = [i for i in range(trainer.max_iter) if trainer.is_epoch_boundary(i)]
    assert trainer.total_epochs == len(boundaries)
    if n % batch == 0:  # the book's own test, where it is well defined
        assert boundaries == [i for i in range(trainer.max_iter) if i % trainer.iter_per_epoch == 0]


def test_small_train_set_evaluates_every_iteration(data):
    (x_tr, t_tr), (x_te, t_te) = data
    trainer = Trainer(_net(), x_tr[:40], t_tr[:40], x_te, t_te, epochs=3, mini_batch_size=100,
                      verbose=False, seed=0).train()
    assert trainer.iter_per_epoch == 1 and trainer.max_iter == 3
    assert len(trainer.train_loss_list) == len(trainer.test_acc_list) == 3


def test_evaluate_sample_num_per_epoch_uses_the_first_samples(data):
    (x_tr, t_tr), (x_te, t_te) = data
    seen = []
    net = _net()
    real = net.accuracy

    def spy(x, t, *args):
        seen.append(len(x))
        return real(x, t)

    net.accuracy = spy
    Trainer(net, x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=100,
            evaluate_sample_num_per_epoch=25, verbose=False, seed=0).train()
    assert seen == [25, 25, 25, 25, 90]  # two epochs of (train, test), then the full final test


# -- seeds ------------------------------------------------------------------------------------
def test_same_seed_same_results_different_seed_different_batches(data):
    (x_tr, t_tr), (x_te, t_te) = data

    def run(seed):
        net = _net()
        tr = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=20, optimizer="adam",
                     optimizer_param={"lr": 0.01}, verbose=False, seed=seed).train()
        return tr, net

    a, net_a = run(11)
    b, net_b = run(11)
    c, _ = run(12)
    assert a.train_loss_list == b.train_loss_list
    assert a.test_acc_list == b.test_acc_list and a.final_test_acc == b.final_test_acc
    for key in net_a.params:
        np.testing.assert_array_equal(net_a.params[key], net_b.params[key])
    assert a.train_loss_list != c.train_loss_list
    gen = np.random.default_rng(3)
    assert Trainer(_net(), x_tr, t_tr, x_te, t_te, verbose=False, seed=gen).rng is gen


# -- optimizers and arguments -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "adam", "SgD"])
def test_every_optimizer_name_case_insensitive(name, data):
    (x_tr, t_tr), (x_te, t_te) = data
    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, optimizer=name, verbose=False)
    assert type(trainer.optimizer) is OPTIMIZERS[name.lower()]
    assert trainer.optimizer.lr == 0.01  # the book's default optimizer_param {'lr': 0.01}


def test_optimizer_instance_and_errors(data):
    (x_tr, t_tr), (x_te, t_te) = data
    opt = Adam(lr=0.002)
    assert Trainer(_net(), x_tr, t_tr, x_te, t_te, optimizer=opt, verbose=False).optimizer is opt
    with pytest.raises(ValueError, match="optimizer_param must be None"):
        Trainer(_net(), x_tr, t_tr, x_te, t_te, optimizer=opt, optimizer_param={"lr": 1}, verbose=False)
    with pytest.raises(ValueError, match="unknown optimizer 'Lion'.*SGD, Momentum"):
        Trainer(_net(), x_tr, t_tr, x_te, t_te, optimizer="Lion", verbose=False)
    with pytest.raises(ValueError, match="bad optimizer_param"):
        Trainer(_net(), x_tr, t_tr, x_te, t_te, optimizer="SGD", optimizer_param={"momentum": 0.9},
                verbose=False)


def test_no_mutable_default_arguments():
    for fn in (Trainer.__init__, EarlyStopping.__init__):
        for param in inspect.signature(fn).parameters.values():
            assert not isinstance(param.default, (list, dict, set)), f"{fn.__qualname__}({param.name})"


@pytest.mark.parametrize("kwargs, message", [
    ({"mini_batch_size": 0}, "mini_batch_size must be a positive integer"),
    ({"epochs": 0}, "epochs must be a positive number"),
    ({"evaluate_sample_num_per_epoch": -1}, "evaluate_sample_num_per_epoch"),
    ({"record_loss": "sometimes"}, "record_loss"),
    ({"seed": "x"}, "seed must be"),
])
def test_bad_arguments(kwargs, message, data):
    (x_tr, t_tr), (x_te, t_te) = data
    with pytest.raises((ValueError, TypeError), match=message):
        Trainer(_net(), x_tr, t_tr, x_te, t_te, verbose=False, **kwargs)


def test_mismatched_lengths(data):
    (x_tr, t_tr), (x_te, t_te) = data
    with pytest.raises(ValueError, match="x_train has 300 samples but t_train has 299"):
        Trainer(_net(), x_tr, t_tr[:-1], x_te, t_te, verbose=False)


# -- output -----------------------------------------------------------------------------------
def test_verbose_prints_a_table_and_the_final_accuracy(data):
    (x_tr, t_tr), (x_te, t_te) = data
    out = io.StringIO()
    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=100, verbose=True,
                      report="table", progress=False, file=out, seed=0).train()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["epoch", "iter", "loss", "train", "acc", "test", "acc", "time"]
    assert lines[1].split()[:2] == ["1/2", "1"] and lines[2].split()[:2] == ["2/2", "4"]
    assert float(lines[2].split()[4]) == pytest.approx(trainer.test_acc_list[1], abs=5e-5)
    assert lines[3].startswith(f"final test accuracy: {trainer.final_test_acc:.4f}")
    assert "samples/s" in lines[3]
    assert trainer.samples_seen == 100 * trainer.max_iter and trainer.samples_per_sec > 0


def test_progress_bar_shows_loss_and_throughput(data, capsys):
    (x_tr, t_tr), (x_te, t_te) = data
    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=100, verbose=True,
                      report="table", file=io.StringIO(), seed=0)
    trainer.progress_interval = 0  # refresh on every step, however fast
    trainer.train()
    err = capsys.readouterr().err
    assert "3/3" in err and "loss=" in err and "samples/s=" in err


def test_quiet_prints_nothing(data, capsys):
    (x_tr, t_tr), (x_te, t_te) = data
    Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, verbose=False, seed=0).train()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- callbacks and early stopping ---------------------------------------------------------------
def test_function_callback_stops_and_final_accuracy_is_still_measured(data):
    (x_tr, t_tr), (x_te, t_te) = data
    received = []

    def stop_at_two(trainer, epoch, logs):
        received.append((epoch, dict(logs)))
        return epoch == 2

    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100, verbose=False,
                      seed=0, callbacks=[stop_at_two]).train()
    assert [e for e, _ in received] == [1, 2]
    assert set(received[0][1]) == {"epoch", "iteration", "loss", "train_acc", "test_acc", "elapsed",
                                   "samples_per_sec"}
    assert trainer.stop_training and not trainer.interrupted
    assert trainer.current_iter == 4 and len(trainer.train_loss_list) == 4
    assert trainer.final_test_acc == trainer.network.accuracy(x_te, t_te)


def test_callback_hooks_order(data):
    (x_tr, t_tr), (x_te, t_te) = data
    events = []

    class Recorder(Callback):
        def on_train_begin(self, trainer):
            events.append("begin")

        def on_epoch_end(self, trainer, epoch, logs):
            events.append(epoch)

        def on_train_end(self, trainer):
            events.append("end")

    Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=100, verbose=False,
            callbacks=[Recorder()]).train()
    assert events == ["begin", 1, 2, "end"]


def test_early_stopping_logic():
    stopper = EarlyStopping(monitor="test_acc", patience=2, min_delta=0.01)
    stopper.on_train_begin(None)
    results = [stopper.on_epoch_end(None, e, {"test_acc": acc})
               for e, acc in enumerate([0.5, 0.6, 0.605, 0.609], start=1)]
    assert results == [False, False, False, True]
    assert stopper.best == 0.6 and stopper.best_epoch == 2 and stopper.stopped_epoch == 4
    loss_stopper = EarlyStopping(monitor="loss", patience=1)
    assert loss_stopper.mode == "min"
    assert loss_stopper.on_epoch_end(None, 1, {"loss": 1.0}) is False
    assert loss_stopper.on_epoch_end(None, 2, {"loss": 1.5}) is True
    with pytest.raises(KeyError, match="monitor 'val_acc'"):
        EarlyStopping(monitor="val_acc").on_epoch_end(None, 1, {"test_acc": 1})
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_early_stopping_in_training_restores_the_best_parameters(data):
    (x_tr, t_tr), (x_te, t_te) = data
    snapshots = {}

    def snapshot(trainer, epoch, logs):
        snapshots[epoch] = {k: v.copy() for k, v in trainer.network.params.items()}

    # min_delta > 1: nothing ever counts as an improvement after epoch 1.
    stopper = EarlyStopping(monitor="test_acc", patience=2, min_delta=1.5, restore_best=True)
    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=10, mini_batch_size=100, verbose=False,
                      seed=0, callbacks=[snapshot, stopper], optimizer="adam").train()
    assert stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    assert len(trainer.test_acc_list) == 3
    for key, value in trainer.network.params.items():
        np.testing.assert_array_equal(value, snapshots[1][key])
    assert trainer.network.layers["Affine1"].W is trainer.network.params["W1"]


# -- Ctrl-C -----------------------------------------------------------------------------------
def test_keyboard_interrupt_keeps_what_was_trained(data):
    (x_tr, t_tr), (x_te, t_te) = data
    seen = {}

    def interrupt(trainer, epoch, logs):
        if epoch == 2:
            seen.update({k: v.copy() for k, v in trainer.network.params.items()})
            raise KeyboardInterrupt

    out = io.StringIO()
    net = _net()
    initial = {k: v.copy() for k, v in net.params.items()}
    trainer = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100, verbose=True,
                      progress=False, file=out, seed=0, callbacks=[interrupt]).train()
    assert trainer.interrupted
    assert trainer.final_test_acc is None
    assert len(trainer.train_loss_list) == 4 and len(trainer.test_acc_list) == 2
    for key in net.params:
        np.testing.assert_array_equal(net.params[key], seen[key])
        assert not np.array_equal(net.params[key], initial[key]) or key.startswith("b")
    assert "interrupted at iteration" in out.getvalue()


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_sigint_stops_between_steps_and_restores_the_handler(data):
    (x_tr, t_tr), (x_te, t_te) = data
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        def press_ctrl_c(trainer, epoch, logs):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

        trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100,
                          verbose=False, seed=0, callbacks=[press_ctrl_c]).train()
        assert trainer.interrupted
        # The request is honoured at the end of the step in which it arrived: nothing half-updated.
        assert trainer.current_iter == 4 == len(trainer.train_loss_list)
        assert all(np.all(np.isfinite(v)) for v in trainer.network.params.values())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_training_can_continue_after_an_interrupt(data):
    (x_tr, t_tr), (x_te, t_te) = data

    def interrupt_once(trainer, epoch, logs):
        if epoch == 1 and not getattr(trainer, "_was", False):
            trainer._was = True
            raise KeyboardInterrupt

    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=100, verbose=False,
                      seed=0, callbacks=[interrupt_once])
    trainer.train()
    assert trainer.interrupted and trainer.current_iter == 1
    trainer.train()  # resumes from current_iter with the same rng
    assert not trainer.interrupted and trainer.current_iter == trainer.max_iter == 6
    assert len(trainer.train_loss_list) == 6 and trainer.final_test_acc is not None


# -- evaluation helpers -----------------------------------------------------------------------
def test_predict_labels_and_confusion_matrix(data):
    (_x_tr, _t_tr), (x_te, t_te) = data
    net = _net()
    pred = predict_labels(net, x_te, batch_size=7)
    np.testing.assert_array_equal(pred, np.argmax(net.predict(x_te), axis=1))
    cm = confusion_matrix(t_te, pred, 3)
    assert cm.shape == (3, 3) and cm.sum() == len(t_te)
    assert np.trace(cm) / len(t_te) == net.accuracy(x_te, t_te)
    np.testing.assert_array_equal(confusion_matrix(np.eye(3)[t_te], pred, 3), cm)
    np.testing.assert_array_equal(confusion_matrix([0, 1, 1], [1, 1, 0]), [[0, 1], [1, 1]])
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        confusion_matrix([0, 2], [0, 1], 2)


def test_trains_a_two_layer_net_to_high_accuracy(data):
    (x_tr, t_tr), (x_te, t_te) = data
    trainer = Trainer(TwoLayerNet(5, 10, 3, seed=0), x_tr, t_tr, x_te, t_te, epochs=10,
                      mini_batch_size=30, optimizer="Adam", optimizer_param={"lr": 0.05},
                      verbose=False, seed=0).train()
    assert trainer.final_test_acc >= 0.9
    assert math.isfinite(trainer.train_loss_list[-1]) and trainer.train_loss_list[-1] < trainer.train_loss_list[0]


def test_the_loss_after_the_update_is_recorded_without_layer_caches(data, monkeypatch):
    # The Trainer records network.loss after each fused update through Sequential.loss_value (no
    # layer caches, the same value): the recorded list is the one network.loss gives.
    (x_tr, t_tr), (x_te, t_te) = data
    used = []
    real = MultiLayerNet.loss_value

    def spy(self, x, t, train_flg=None):
        used.append(len(x))
        return real(self, x, t, train_flg)

    monkeypatch.setattr(MultiLayerNet, "loss_value", spy, raising=False)
    fast = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=50, verbose=False, seed=0)
    fast.train()
    assert used and set(used) == {50}
    monkeypatch.setattr(MultiLayerNet, "loss_value", lambda self, x, t, train_flg=None: self.loss(x, t, train_flg),
                        raising=False)
    book = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=50, verbose=False, seed=0)
    book.train()
    assert fast.train_loss_list == book.train_loss_list
