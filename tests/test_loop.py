"""The one training loop: the book's printed lines and global-state batches, stop signals, and
proof that the Trainer, the experiments and the search all run through ``TrainingLoop``."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

import zerodl
from zerodl import checkpoint as ck
from zerodl.experiments import _common, search
from zerodl.loop import StopSignals, TrainingLoop, data_fingerprint
from zerodl.networks import MultiLayerNet
from zerodl.optimizer import SGD
from zerodl.trainer import Trainer

POSIX = pytest.mark.skipif(os.name == "nt" or not hasattr(signal, "SIGTERM"), reason="POSIX signals")


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((3, 5)) * 3

    def make(n):
        t = rng.integers(0, 3, size=n)
        return (centers[t] + rng.standard_normal((n, 5))).astype(np.float64), t

    return make(300), make(90)


def _net(seed=0):
    return MultiLayerNet(5, [8], 3, seed=seed)


class Unfused:
    """No train_step: the book's gradient + update path."""

    def __init__(self, net):
        self.net, self.params = net, net.params

    def gradient(self, x, t):
        return self.net.gradient(x, t)

    def loss(self, x, t):
        return self.net.loss(x, t)

    def accuracy(self, x, t):
        return self.net.accuracy(x, t)


def _book_trainer_output(network, x_train, t_train, x_test, t_test, epochs, batch, lr):
    """The book's common/trainer.py, transcribed: np.random.choice batches, its printed lines."""
    out = []
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch, 1)
    opt = SGD(lr=lr)
    epoch = 0
    for i in range(int(epochs * iter_per_epoch)):
        mask = np.random.choice(train_size, batch)
        grads = network.gradient(x_train[mask], t_train[mask])
        opt.update(network.params, grads)
        out.append("train loss:" + str(network.loss(x_train[mask], t_train[mask])))
        if i % iter_per_epoch == 0:
            epoch += 1
            train_acc, test_acc = network.accuracy(x_train, t_train), network.accuracy(x_test, t_test)
            out.append("=== epoch:" + str(epoch) + ", train acc:" + str(train_acc) + ", test acc:"
                       + str(test_acc) + " ===")
    out += ["=============== Final Test Accuracy ===============",
            "test acc:" + str(network.accuracy(x_test, t_test))]
    return out


# -- the book's way: printed lines and np.random batches ------------------------------------------
def test_verbose_prints_the_books_lines_and_seed_none_draws_the_books_batches(data, capsys):
    (x_tr, t_tr), (x_te, t_te) = data
    with zerodl.use_backend("numpy"):
        np.random.seed(3)
        Trainer(Unfused(_net()), x_tr, t_tr, x_te, t_te, epochs=3, mini_batch_size=30,
                optimizer_param={"lr": 0.1}).train()
        printed = capsys.readouterr()
        np.random.seed(3)
        expected = _book_trainer_output(Unfused(_net()), x_tr, t_tr, x_te, t_te, 3, 30, 0.1)
    assert printed.out.splitlines() == expected
    assert printed.err == ""  # no progress bar when called the book's way
    assert len([line for line in expected if line.startswith("train loss:")]) == 30


def test_seed_none_follows_np_random_seed_and_an_explicit_seed_ignores_it(data):
    (x_tr, t_tr), (x_te, t_te) = data

    def run(seed, global_seed):
        np.random.seed(global_seed)
        return Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=20, verbose=False,
                       seed=seed).train().train_loss_list

    assert run(None, 1) == run(None, 1) != run(None, 2)
    assert run(5, 1) == run(5, 2)


def test_table_report_is_kept_as_an_option(data):
    (x_tr, t_tr), (x_te, t_te) = data
    out = io.StringIO()
    Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=100, report="table", progress=False,
            file=out, seed=0).train()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[0] == "epoch" and lines[-1].startswith("final test accuracy:")
    with pytest.raises(ValueError, match="report must be 'book' or 'table'"):
        Trainer(_net(), x_tr, t_tr, x_te, t_te, report="loud")


# -- one loop for everyone ----------------------------------------------------------------------
def test_trainer_experiments_and_search_all_run_the_one_loop(data, monkeypatch):
    (x_tr, t_tr), (x_te, t_te) = data
    owners = []
    real = TrainingLoop.train_step

    def spy(self):
        owners.append(type(self).__name__)
        return real(self)

    monkeypatch.setattr(TrainingLoop, "train_step", spy)
    Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, mini_batch_size=100, verbose=False, seed=0).train()
    assert owners == ["Trainer"] * 3
    owners.clear()
    hist = _common.train(_net(), SGD(0.1), x_tr, t_tr, batch_size=100, epochs=1, rng=np.random.default_rng(0),
                         x_test=x_te, t_test=t_te)
    assert owners == ["TrainingLoop"] * 3 and len(hist.loss) == 3 and len(hist.test_acc) == 2
    owners.clear()
    split = search.validation_split(x_tr, t_tr, 0.2, seed=0)
    spec = {"index": 0, "params": {"lr": 0.1, "weight_decay": 1e-5}, "seed": 1, "epochs": 2, "hidden": [8],
            "batch_size": 60, "backend": "numpy"}
    out = search.train_trial(spec, split)
    assert owners == ["TrainingLoop"] * 8 and len(out["val_acc_list"]) == 3


def test_experiment_loop_matches_a_transcription_of_the_old_inline_loop(data):
    """The chapter 6 loop (gradient + update, training-mode loss before the update, accuracies at
    each epoch's start and at the end, batches Generator.choice) gives the same numbers as before."""
    (x_tr, t_tr), (x_te, t_te) = data
    net_a, net_b = _net(), _net()
    hist = _common.train(net_a, SGD(0.1), x_tr[:250], t_tr[:250], batch_size=100, epochs=4,
                         rng=np.random.default_rng(9), x_test=x_te, t_test=t_te)
    rng, opt = np.random.default_rng(9), SGD(0.1)
    losses, accs = [], []
    for i in range(10):
        if i in (0, 3, 5, 8):  # ceil(k * 2.5)
            accs.append(net_b.accuracy(x_te, t_te))
        idx = rng.choice(250, 100)
        grads = net_b.gradient(x_tr[idx], t_tr[idx])
        losses.append(float(net_b.last_layer.loss) + float(net_b.weight_decay()))
        opt.update(net_b.params, grads)
    accs.append(net_b.accuracy(x_te, t_te))
    assert hist.loss == losses and hist.test_acc == accs
    for key in net_a.params:
        np.testing.assert_array_equal(net_a.params[key], net_b.params[key])


def test_loop_arguments_are_checked(data):
    (x_tr, t_tr), (x_te, t_te) = data
    for kwargs, message in [({"epochs": 1, "iterations": 3}, "exactly one of epochs and iterations"),
                            ({"iterations": -1}, "iterations must be an integer >= 0"),
                            ({"iterations": 3, "step": "fused"}, "step must be one of"),
                            ({"iterations": 3, "evaluate": "sometimes"}, "evaluate must be one of"),
                            ({"iterations": 3, "seed": -2}, "seed must be a non-negative integer")]:
        with pytest.raises(ValueError, match=message):
            TrainingLoop(_net(), SGD(), x_tr, t_tr, x_te, t_te, batch_size=10, **kwargs)
    with pytest.raises(ValueError, match="needs x_test and t_test"):
        TrainingLoop(_net(), SGD(), x_tr, t_tr, batch_size=10, iterations=3)


def test_data_fingerprint_sees_values_shapes_and_dtypes():
    x = np.arange(12.0).reshape(4, 3)
    assert data_fingerprint(x) == data_fingerprint(x.copy()) == data_fingerprint(np.asfortranarray(x))
    y = x.copy()
    y[3, 2] += 1e-12
    assert len({data_fingerprint(x), data_fingerprint(y), data_fingerprint(x.reshape(3, 4)),
                data_fingerprint(x.astype(np.float32))}) == 4


# -- stop signals -------------------------------------------------------------------------------
@POSIX
def test_handle_signals_true_stops_on_sigterm_between_steps_and_restores_handlers(data):
    (x_tr, t_tr), (x_te, t_te) = data
    seen = []

    def send_sigterm(trainer, epoch, logs):
        seen.append(signal.getsignal(signal.SIGTERM))
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # honoured at the end of this step

    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100, verbose=False, seed=0,
                      handle_signals=True, callbacks=[send_sigterm]).train()
    assert trainer.interrupted and trainer.stop_signal == signal.SIGTERM
    assert trainer.current_iter == 4 == len(trainer.train_loss_list) and trainer.final_test_acc is None
    assert signal.getsignal(signal.SIGTERM) is before
    assert all(callable(h) and h is not before for h in seen)


@POSIX
def test_by_default_the_trainer_leaves_sigterm_and_sighup_alone(data):
    # "Alone": as the process had them, which is not always SIG_DFL (under nohup SIGHUP is ignored).
    (x_tr, t_tr), (x_te, t_te) = data
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
    seen = []
    Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=1, verbose=False, seed=0,
            callbacks=[lambda tr, e, logs: seen.append((signal.getsignal(signal.SIGTERM),
                                                        signal.getsignal(signal.SIGHUP)))]).train()
    assert seen == [before]


@POSIX
def test_stop_signals_first_requests_second_interrupts_steps_only():
    stop = StopSignals((signal.SIGTERM,))
    with stop:
        with stop:  # nested: only the outer one installs and restores
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.name == "SIGTERM" and stop.exit_code == 143
            with stop.interruptible(), stop.hold():
                os.kill(os.getpid(), signal.SIGTERM)  # counted, interrupts nothing
            os.kill(os.getpid(), signal.SIGTERM)  # outside the steps: counted too
            assert stop.count == 3
        assert stop.installed == (signal.SIGTERM,)
        with pytest.raises(KeyboardInterrupt), stop.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
    assert stop.installed == () and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    stop.reset()
    assert not stop.requested and stop.count == 0


@POSIX
def test_training_continues_after_a_signal_stopped_it(data):
    (x_tr, t_tr), (x_te, t_te) = data

    def send_once(trainer, epoch, logs):
        if epoch == 1 and not trainer.train_loss_list[1:]:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=2, mini_batch_size=100, verbose=False, seed=0,
                      handle_signals=True, callbacks=[send_once])
    assert trainer.train().interrupted and trainer.current_iter == 1
    trainer.train()  # the Trainer's own StopSignals starts afresh
    assert not trainer.interrupted and trainer.stop_signal is None and trainer.current_iter == trainer.max_iter


@POSIX
def test_a_second_signal_during_the_final_checkpoint_leaves_no_partial_file(data, tmp_path, monkeypatch):
    (x_tr, t_tr), (x_te, t_te) = data
    path = tmp_path / "run.ckpt"
    real_write = ck.write_npz
    writes = []

    def write_and_get_signalled(*args, **kwargs):
        writes.append(1)
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal arrives while the final write runs
        return real_write(*args, **kwargs)

    def first_signal(trainer, epoch, logs):
        if epoch == 2:
            monkeypatch.setattr(ck, "write_npz", write_and_get_signalled)
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(_net(), x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100, verbose=False, seed=0,
                      handle_signals=True, checkpoint_path=path, checkpoint_every=1000,
                      callbacks=[first_signal]).train()
    assert writes == [1] and trainer.stop_signal == signal.SIGTERM
    assert ck.read_checkpoint(path)[0]["trainer"]["current_iter"] == trainer.current_iter == 4
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_without_signals_a_keyboard_interrupt_propagates_from_the_experiment_loop(data):
    (x_tr, t_tr), _ = data

    class Boom(_common.Callback):
        def on_step_end(self, loop, iteration, loss):
            if iteration == 2:
                raise KeyboardInterrupt

    loop = TrainingLoop(_net(), SGD(), x_tr, t_tr, batch_size=10, iterations=5, evaluate=None,
                        callbacks=[Boom()], check_finite=False, seed=0)
    with pytest.raises(KeyboardInterrupt):
        loop.train()
