"""Bad input at every public boundary — layers, networks, optimizers, Trainer, loaders, model and
checkpoint files, the command line: clear errors naming the place, what was expected and what came;
never a Numba typing traceback, never a silent broadcast. Every case runs in both backends."""

import contextlib
import io
import pickle

import numpy as np
import pytest

import zerodl
from zerodl import MultiLayerNet, TwoLayerNet, cli, datasets
from zerodl import checkpoint as ck
from zerodl.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from zerodl.trainer import EarlyStopping, Trainer

#: Scratch directory of the file cases (set by the autouse fixture below).
_TMP = {}


@pytest.fixture(autouse=True)
def _scratch(tmp_path):
    _TMP["dir"] = tmp_path
    yield
    _TMP.clear()


def _file(name, data=b""):
    path = _TMP["dir"] / name
    path.write_bytes(data)
    return path


def _data(n=6, d=4):
    x = np.random.default_rng(0).random((n, d))
    return x, np.arange(n) % 2


def _trainer(x=None, t=None, x_test=None, t_test=None, **kw):
    xd, td = _data()
    return Trainer(_net(), xd if x is None else x, td if t is None else t,
                   xd if x_test is None else x_test, td if t_test is None else t_test,
                   epochs=1, mini_batch_size=3, verbose=False, seed=0, **kw)


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


def _cli(*argv):
    """Run the command; a non-zero exit becomes SystemExit("exit <code>: <stderr>") for the table."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's exit 2
            code = exc.code
    if code:  # keep the error line, not argparse's usage text
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        raise SystemExit(f"exit {code}: {' '.join(lines) or err.getvalue()}")


def _saved_two_layer():
    return zerodl.save_network(TwoLayerNet(5, 3, 2, seed=0), _TMP["dir"] / "other.npz")


def _checkpoint_for_batch(batch):
    x, t = _data()
    other = Trainer(_net(), x, t, x, t, epochs=1, mini_batch_size=batch, verbose=False, seed=0)
    other.train_step()
    return ck.save_checkpoint(other, _TMP["dir"] / "run.ckpt")


def _affine():
    return Affine(np.zeros((4, 3)), np.zeros(3))


def _forwarded_affine():
    layer = _affine()
    layer.forward(np.ones((2, 4)))
    return layer


def _forwarded_relu():
    layer = Relu()
    layer.forward(np.ones((2, 2)))
    return layer


def _net():
    return TwoLayerNet(4, 3, 2, seed=0)


CASES = [
    # (id, callable, exception, message fragments)
    ("affine-columns", lambda: _affine().forward(np.ones((2, 5))), ValueError,
     ["Affine.forward", "5 features", "expects 4", "(4, 3)"]),
    ("affine-1d", lambda: _affine().forward(np.ones(4)), ValueError, ["Affine.forward", "(N, 4)", "x[np.newaxis]"]),
    ("affine-int", lambda: _affine().forward(np.ones((2, 4), dtype=int)), TypeError,
     ["Affine.forward", "float32 or float64", "int64"]),
    ("affine-object", lambda: _affine().forward(np.array([[1, "a", None, 2]], dtype=object)), TypeError,
     ["Affine.forward", "object"]),
    ("affine-empty", lambda: _affine().forward(np.ones((0, 4))), ValueError, ["Affine.forward", "empty"]),
    ("affine-dout-shape", lambda: _forwarded_affine().backward(np.ones((2, 4))), ValueError,
     ["Affine.backward", "dout", "(2, 3)", "(2, 4)"]),
    ("affine-bias", lambda: Affine(np.zeros((4, 3)), np.zeros(4)), ValueError, ["Affine", "b", "(3,)", "(4,)"]),
    ("affine-W-1d", lambda: Affine(np.zeros(4), np.zeros(4)), ValueError, ["Affine", "W", "(D, H)"]),
    ("relu-int", lambda: Relu().forward(np.arange(3)), TypeError, ["Relu.forward", "int64"]),
    ("relu-bool", lambda: Relu().forward(np.ones(3, dtype=bool)), TypeError, ["Relu.forward", "bool"]),
    ("sigmoid-complex", lambda: Sigmoid().forward(np.ones(2, dtype=complex)), TypeError, ["Sigmoid.forward", "complex"]),
    ("relu-dout-shape", lambda: _forwarded_relu().backward(np.ones(3)),
     ValueError, ["Relu.backward", "(2, 2)", "(3,)"]),
    ("softmax-label-range", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     ["SoftmaxWithLoss.forward", "label 3", "3 classes", "0..2"]),
    ("softmax-negative-label", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([-1, 0])),
     ValueError, ["label -1"]),
    ("softmax-batch-mismatch", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 1, 2])),
     ValueError, ["SoftmaxWithLoss.forward", "(2,)", "(2, 3)", "(3,)"]),
    ("softmax-float-labels", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0.0, 1.0])),
     TypeError, ["integers", "float64"]),
    ("softmax-bad-one-hot", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([[1, 1, 0], [0, 1, 0]])),
     ValueError, ["one-hot", "row 0"]),
    ("softmax-1d-scores", lambda: SoftmaxWithLoss().forward(np.zeros(3), np.array([1])), ValueError,
     ["SoftmaxWithLoss.forward", "(N, C)"]),
    ("softmax-string-labels", lambda: SoftmaxWithLoss().forward(np.zeros((1, 3)), np.array(["a"])), TypeError,
     ["SoftmaxWithLoss.forward", "dtype"]),
    ("net-columns", lambda: _net().loss(np.ones((2, 5)), np.array([0, 1])), ValueError, ["Affine.forward", "5 features"]),
    ("net-labels", lambda: _net().gradient(np.ones((2, 4)), np.array([0, 2])), ValueError, ["label 2", "2 classes"]),
    ("net-batch", lambda: _net().loss(np.ones((3, 4)), np.array([0, 1])), ValueError, ["(3,)", "(2,)"]),
    ("accuracy-batch", lambda: _net().accuracy(np.ones((3, 4)), np.array([0, 1])), ValueError,
     ["accuracy", "3 samples", "t has 2"]),
    ("net-size", lambda: TwoLayerNet(0, 3, 2), ValueError, ["input_size", "positive integer", "0"]),
    ("net-dtype", lambda: TwoLayerNet(4, 3, 2, dtype=np.int32), TypeError, ["float32 or float64", "int32"]),
    ("net-activation", lambda: MultiLayerNet(4, [3], 2, activation="tanh"), ValueError, ["activation", "tanh"]),
    ("net-init", lambda: MultiLayerNet(4, [3], 2, weight_init_std="glorot"), ValueError, ["weight_init_std", "glorot"]),
    ("net-seed", lambda: TwoLayerNet(4, 3, 2, seed="abc"), TypeError, ["seed", "str"]),
    ("optimizer-lr", lambda: zerodl.SGD(lr=-1), ValueError, ["SGD", "lr", "-1"]),
    ("optimizer-missing-grad", lambda: zerodl.SGD().update({"W1": np.zeros(2)}, {}), KeyError, ["SGD.update", "W1"]),
    ("optimizer-shape", lambda: zerodl.Adam().update({"W1": np.zeros(2)}, {"W1": np.zeros(3)}), ValueError,
     ["Adam.update", "W1", "(3,)", "(2,)"]),
    ("optimizer-name", lambda: zerodl.optimizer.get_optimizer("lbfgs"), ValueError, ["lbfgs", "Adam"]),
    # -- more layers -----------------------------------------------------------------------------
    ("batchnorm-features", lambda: BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones((2, 4))),
     ValueError, ["BatchNormalization.forward", "4 features", "gamma has 3"]),
    ("conv-channels", lambda: Convolution(np.ones((2, 1, 3, 3)), np.zeros(2)).forward(np.ones((1, 2, 5, 5))),
     ValueError, ["Convolution.forward", "2 channels", "expects 1"]),
    ("pool-tiling", lambda: Pooling(2, 2).forward(np.ones((1, 1, 3, 3))), ValueError,
     ["Pooling.forward", "does not tile", "height 3"]),
    ("dropout-ratio-nan", lambda: Dropout(float("nan")), ValueError, ["Dropout", "dropout_ratio", "[0, 1]", "nan"]),
    # -- empty batches -----------------------------------------------------------------------------
    ("empty-softmax", lambda: SoftmaxWithLoss().forward(np.zeros((0, 3)), np.zeros(0, dtype=int)), ValueError,
     ["SoftmaxWithLoss.forward", "empty", "(0, 3)"]),
    ("empty-net-loss", lambda: _net().loss(np.ones((0, 4)), np.zeros(0, dtype=int)), ValueError,
     ["Affine.forward", "empty"]),
    ("empty-train-step", lambda: _net().train_step(np.ones((0, 4)), np.zeros(0, dtype=int), zerodl.SGD()),
     ValueError, ["TwoLayerNet.train_step", "empty"]),
    ("empty-accuracy", lambda: _net().accuracy(np.ones((0, 4)), np.zeros(0, dtype=int)), ValueError,
     ["TwoLayerNet.accuracy", "empty"]),
    # -- non-finite numbers --------------------------------------------------------------------------
    ("optimizer-lr-nan", lambda: zerodl.SGD(lr=float("nan")), ValueError, ["SGD", "lr", "finite", "nan"]),
    ("optimizer-momentum-nan", lambda: zerodl.Momentum(momentum=float("nan")), ValueError,
     ["Momentum", "momentum", "[0, 1)", "nan"]),
    ("optimizer-beta-one", lambda: zerodl.Adam(beta2=1.0), ValueError, ["Adam", "beta2", "[0, 1)"]),
    ("trainer-nan-x", lambda: _trainer(x=_with(_data()[0], (2, 1), np.nan)), ValueError,
     ["Trainer", "x_train[2]", "NaN or inf", "1 of 6 samples"]),
    ("trainer-inf-x-test", lambda: _trainer(x_test=_with(_data()[0], (0, 0), np.inf)), ValueError,
     ["Trainer", "x_test[0]", "NaN or inf"]),
    ("early-stopping-delta-nan", lambda: EarlyStopping(min_delta=float("nan")), ValueError,
     ["EarlyStopping", "min_delta", "nan"]),
    # -- the Trainer ---------------------------------------------------------------------------------
    ("trainer-empty", lambda: _trainer(x=np.ones((0, 4)), t=np.zeros(0, dtype=int)), ValueError,
     ["Trainer", "x_train is empty", "(0, 4)"]),
    ("trainer-lengths", lambda: _trainer(t=np.array([0, 1, 0])), ValueError,
     ["Trainer", "x_train has 6 samples", "t_train has 3"]),
    ("trainer-epochs", lambda: Trainer(_net(), *_data(), *_data(), epochs=0),
     ValueError, ["Trainer", "epochs", "positive", "0"]),
    ("trainer-batch", lambda: Trainer(_net(), *_data(), *_data(), mini_batch_size=0), ValueError,
     ["Trainer", "mini_batch_size", "positive integer", "0"]),
    ("trainer-optimizer", lambda: _trainer(optimizer="lbfgs"), ValueError, ["Trainer", "lbfgs", "Adam"]),
    ("trainer-optimizer-param", lambda: _trainer(optimizer="sgd", optimizer_param={"momentum": 0.9}), ValueError,
     ["Trainer", "optimizer_param", "momentum", "sgd"]),
    ("trainer-seed", lambda: Trainer(_net(), *_data(), *_data(), seed="abc"), TypeError, ["Trainer", "seed", "str"]),
    ("trainer-checkpoint-every", lambda: _trainer(checkpoint_every=5), ValueError,
     ["checkpoint_every", "without checkpoint_path"]),
    ("trainer-labels", lambda: _trainer(t=np.array([0, 1, 2, 0, 1, 0])), ValueError,
     ["Trainer: t_train", "label 2", "2 classes", "0..1"]),
    ("trainer-one-hot", lambda: _trainer(t_test=np.eye(2)[[0, 1, 0, 1, 0, 1]] * 2), ValueError,
     ["Trainer: t_test", "one-hot", "row 0"]),
    ("trainer-features", lambda: _trainer(x=np.ones((6, 5)), x_test=np.ones((6, 5))).train(), ValueError,
     ["5 features", "4"]),
    ("trainer-foreign-checkpoint", lambda: _trainer().resume(_checkpoint_for_batch(2)), ck.CheckpointError,
     ["run.ckpt", "batches of 2", "batches of 3"]),
    # -- loaders ---------------------------------------------------------------------------------------
    ("idx-html", lambda: datasets.read_idx(_file("page.idx", b"<html>not found</html>")), ValueError,
     ["read_idx", "page.idx", "not an IDX file", "00 00"]),
    ("idx-truncated", lambda: datasets.read_idx(_file("cut.idx", b"\0\0\x08\x03" + (5).to_bytes(4, "big")
                                                      + (28).to_bytes(4, "big") * 2 + b"\0" * 100)),
     ValueError, ["read_idx", "cut.idx", "truncated", "(5, 28, 28)", "100 bytes"]),
    ("idx-missing", lambda: datasets.read_idx(_TMP["dir"] / "absent.idx"), FileNotFoundError, ["absent.idx"]),
    ("mnist-missing", lambda: datasets.load_mnist(data_dir=_TMP["dir"], download=False), FileNotFoundError,
     ["MNIST", "not found", "download=False"]),
    ("digits-test-size", lambda: datasets.load_digits(test_size=2.0), ValueError, ["load_digits", "test_size", "2.0"]),
    ("dataset-name", lambda: datasets.load_dataset("cifar"), ValueError, ["load_dataset", "cifar", "digits", "mnist"]),
    ("dataset-option", lambda: datasets.load_dataset("digits", bogus=1), TypeError, ["load_dataset", "bogus", "test_size"]),
    ("one-hot-range", lambda: datasets.to_one_hot([0, 5], 3), ValueError, ["to_one_hot", "[0, 3)", "5"]),
    # -- model files -----------------------------------------------------------------------------------
    ("model-missing", lambda: zerodl.load_network(_TMP["dir"] / "absent.npz"), FileNotFoundError,
     ["model file not found", "absent.npz"]),
    ("model-garbage", lambda: zerodl.load_network(_file("junk.npz", b"not a model")), ValueError,
     ["junk.npz", "not a zerodl .npz model"]),
    ("model-shape", lambda: _net().load_params(_saved_two_layer()), ValueError,
     ["other.npz", "'W1'", "(5, 3) in the file", "expects (4, 3)"]),
    ("model-truncated", lambda: zerodl.load_network(_file("cut.npz", _saved_two_layer().read_bytes()[:300])),
     ValueError, ["cut.npz", "not a readable .npz archive"]),
    ("book-pickle-evil", lambda: _net().load_params(_file("evil.pkl", b"cos\nsystem\n(Vtrue\ntR.")), ValueError,
     ["evil.pkl", "refused", "os.system"]),
    ("book-pickle-not-dict", lambda: _net().load_params(_file("list.pkl", pickle.dumps([1, 2]))), ValueError,
     ["list.pkl", "dict", "list"]),
    ("save-non-network", lambda: zerodl.save_network(object(), _TMP["dir"] / "x.npz"), TypeError,
     ["save_network", "params", "object"]),
    # -- the command line (exit code and the one-line message) ---------------------------------------
    ("cli-epochs", lambda: _cli("train", "--epochs", "0"), SystemExit, ["exit 2", "--epochs", "positive integer", "'0'"]),
    ("cli-lr-inf", lambda: _cli("train", "--lr", "inf"), SystemExit, ["exit 2", "--lr", "positive number", "'inf'"]),
    ("cli-optimizer", lambda: _cli("train", "--optimizer", "lbfgs"), SystemExit, ["exit 2", "--optimizer", "lbfgs"]),
    ("cli-backend", lambda: _cli("train", "--backend", "cuda"), SystemExit, ["exit 2", "--backend", "cuda"]),
    ("cli-resume", lambda: _cli("train", "--resume"), SystemExit, ["exit 1", "--resume needs --checkpoint"]),
    ("cli-model-missing", lambda: _cli("evaluate", str(_TMP["dir"] / "absent.npz")), SystemExit,
     ["exit 1", "zerodl evaluate: error", "model file not found"]),
    ("cli-model-garbage", lambda: _cli("evaluate", str(_file("junk.npz", b"PK\x03\x04junk"))), SystemExit,
     ["exit 1", "zerodl evaluate: error", "junk.npz"]),
    ("cli-checkpoint-garbage", lambda: _cli("train", "--epochs", "1", "--checkpoint",
                                            str(_file("bad.ckpt", b"garbage")), "--resume"),
     SystemExit, ["exit 1", "zerodl train: error", "bad.ckpt"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(backend, case):
    _, fn, exc, fragments = case
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Never a Numba typing error or a traceback in place of a message.
    assert "typingerror" not in message.lower() and "numba.core" not in message and "Traceback" not in message


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_float32_input_meets_float64_net(backend):
    """The book's float32 images and float64 weights: converted to the net's dtype, not an error."""
    net = _net()
    assert np.asarray(net.loss(np.ones((2, 4), dtype=np.float32), np.array([0, 1]))).dtype == np.float64
