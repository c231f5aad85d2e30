"""Saving and loading: the npz format, rebuilding networks, atomic saves, the book's pickles."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import zerodl
from zerodl import io as zio
from zerodl.networks import MultiLayerNet, Sequential, TwoLayerNet

# Small constructor arguments for every network class zerodl.networks exports. A class added
# later that is missing here is still tested with its defaults (see _build).
SMALL_NETS = {
    "TwoLayerNet": {"input_size": 6, "hidden_size": 5, "output_size": 3},
    "MultiLayerNet": {"input_size": 6, "hidden_size_list": [5, 4], "output_size": 3, "activation": "sigmoid",
                          "weight_decay_lambda": 0.1},
    "MultiLayerNetExtend": {"input_size": 6, "hidden_size_list": [5, 4], "output_size": 3,
                                "use_batchnorm": True, "use_dropout": True},
    "SimpleConvNet": {"input_dim": (1, 8, 8), "hidden_size": 5, "output_size": 3,
                          "conv_param": {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}},
    "DeepConvNet": {"input_dim": (1, 12, 12), "hidden_size": 5, "output_size": 3},
}


def _build(cls, dtype="float64"):
    kwargs = SMALL_NETS.get(cls.__name__, {})
    return cls(**kwargs, dtype=dtype, seed=3)


def _sample_input(net, rng, n=4):
    config = net.config
    shape = tuple(config["input_dim"]) if "input_dim" in config else (config["input_size"],)
    x = rng.standard_normal((n, *shape)).astype(net.dtype)
    t = rng.integers(0, config["output_size"], size=n)
    return x, t


def _registry_classes():
    return [cls for name, cls in sorted(zio.network_registry().items()) if cls is not Sequential]


def _assert_same_arrays(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- round trips ------------------------------------------------------------------------------
def test_registry_lists_every_exported_network_class():
    from zerodl import networks

    registry = zio.network_registry()
    for name in networks.__all__:
        obj = getattr(networks, name)
        if isinstance(obj, type) and issubclass(obj, Sequential):
            assert registry[name] is obj
    assert {"TwoLayerNet", "MultiLayerNet"} <= set(registry)


@pytest.mark.parametrize("cls", _registry_classes(), ids=lambda c: c.__name__)
def test_load_network_rebuilds_each_network_type(cls, tmp_path, rng):
    net = _build(cls)
    x, t = _sample_input(net, rng)
    net.gradient(x, t)  # a training forward: creates batch-norm statistics where there are any
    path = net.save_params(tmp_path / "model.npz", metadata={"note": "round trip"})
    loaded = zerodl.load_network(path)
    assert type(loaded) is cls
    assert loaded.config == json.loads(json.dumps(net.config))
    assert loaded.metadata == {"note": "round trip"}
    _assert_same_arrays(net.params, loaded.params)
    if hasattr(net, "buffers"):
        _assert_same_arrays(net.buffers(), loaded.buffers())
    np.testing.assert_array_equal(loaded.predict(x, train_flg=False), net.predict(x, train_flg=False))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_npz_round_trip_is_exact_in_both_backends(backend, dtype, tmp_path, rng):
    net = MultiLayerNet(6, [5, 4], 3, dtype=dtype, seed=1)
    x = rng.standard_normal((7, 6)).astype(dtype)
    t = rng.integers(0, 3, size=7)
    optimizer = zerodl.Adam(lr=0.01)
    for _ in range(3):  # trained values, not just the initial ones
        optimizer.update(net.params, net.gradient(x, t))
    net.save_params(tmp_path / "m.npz")
    loaded = zerodl.load_network(tmp_path / "m.npz")
    _assert_same_arrays(net.params, loaded.params)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert loaded.loss(x, t) == net.loss(x, t)


def test_load_params_is_in_place_and_layers_keep_sharing(tmp_path):
    source = TwoLayerNet(6, 5, 3, seed=1)
    source.save_params(tmp_path / "m.npz")
    net = TwoLayerNet(6, 5, 3, seed=2)
    before = {k: v for k, v in net.params.items()}  # the array objects themselves
    net.load_params(tmp_path / "m.npz")
    for key, arr in net.params.items():
        assert arr is before[key]
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.layers["Affine2"].b is net.params["b2"]
    _assert_same_arrays(source.params, net.params)


def test_batchnorm_statistics_restored_into_a_fresh_network(tmp_path, rng):
    if "MultiLayerNetExtend" not in zio.network_registry():
        pytest.fail("MultiLayerNetExtend is expected in zerodl.networks")
    cls = zio.network_registry()["MultiLayerNetExtend"]
    net = _build(cls)
    x, t = _sample_input(net, rng)
    net.gradient(x, t)
    assert net.buffers(), "batch norm should have running statistics after a training forward"
    net.save_params(tmp_path / "bn.npz")
    fresh = _build(cls)  # statistics not created yet
    fresh.load_params(tmp_path / "bn.npz")
    _assert_same_arrays(net.buffers(), fresh.buffers())
    np.testing.assert_array_equal(fresh.predict(x), net.predict(x))


def test_sequential_without_config_saves_but_needs_load_params(tmp_path):
    layers = [zerodl.Affine(np.ones((3, 2)), np.zeros(2))]
    net = Sequential(layers)
    net.save_params(tmp_path / "seq.npz")
    with pytest.raises(zio.ModelFormatError, match="records no architecture config.*load_params"):
        zerodl.load_network(tmp_path / "seq.npz")
    other = Sequential([zerodl.Affine(np.zeros((3, 2)), np.zeros(2))])
    other.load_params(tmp_path / "seq.npz")
    np.testing.assert_array_equal(other.params["W1"], np.ones((3, 2)))


def test_load_network_with_a_user_class(tmp_path):
    class MyNet(TwoLayerNet):
        pass

    net = MyNet(4, 3, 2, seed=0)
    net.save_params(tmp_path / "my.npz")
    with pytest.raises(zio.ModelFormatError, match="unknown network class 'MyNet'.*classes="):
        zerodl.load_network(tmp_path / "my.npz")
    loaded = zerodl.load_network(tmp_path / "my.npz", classes={"MyNet": MyNet})
    assert type(loaded) is MyNet
    _assert_same_arrays(net.params, loaded.params)


def test_file_layout_is_plain_npz_with_json_metadata(tmp_path):
    net = TwoLayerNet(4, 3, 2, seed=0)
    net.save_params(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert set(data.files) == {"__zerodl__", "param/W1", "param/b1", "param/W2", "param/b2"}
        meta = json.loads(str(data["__zerodl__"][()]))
    assert meta["format"] == "zerodl-network"
    assert meta["format_version"] == zio.FORMAT_VERSION
    assert meta["zerodl_version"] == zerodl.__version__
    assert meta["class"] == "TwoLayerNet"
    assert meta["config"] == net.config
    assert zio.read_metadata(tmp_path / "m.npz") == meta


# -- atomicity --------------------------------------------------------------------------------
def test_crash_before_rename_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    TwoLayerNet(4, 3, 2, seed=0).save_params(path)
    good = path.read_bytes()

    def crash(fd):
        raise OSError("simulated power cut before the rename")

    monkeypatch.setattr("zerodl._fileio.os.fsync", crash)
    with pytest.raises(OSError, match="simulated power cut"):
        TwoLayerNet(4, 3, 2, seed=1).save_params(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left over
    monkeypatch.undo()
    loaded = zerodl.load_network(path)
    _assert_same_arrays(TwoLayerNet(4, 3, 2, seed=0).params, loaded.params)


def test_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    TwoLayerNet(4, 3, 2, seed=0).save_params(path)
    good = path.read_bytes()
    real_atomic_write = zio.atomic_write

    class HalfWriter:
        """Writes half of what it is given, then fails (a full disk, a killed process)."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            data = bytes(data)
            self.f.write(data[: len(data) // 2])
            raise OSError("simulated crash mid-write")

    def failing_atomic_write(p, mode="wb"):
        import contextlib

        @contextlib.contextmanager
        def cm():
            with real_atomic_write(p, mode) as f:
                yield HalfWriter(f)

        return cm()

    import zerodl._npz as npz_module  # the npz writer io saves through (shared with checkpoints)

    monkeypatch.setattr(npz_module, "atomic_write", failing_atomic_write)
    with pytest.raises(OSError, match="mid-write"):
        TwoLayerNet(4, 3, 2, seed=1).save_params(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


# -- mismatches -------------------------------------------------------------------------------
def test_shape_mismatch_names_the_parameter_and_leaves_the_network_untouched(tmp_path):
    MultiLayerNet(6, [5], 3, seed=0).save_params(tmp_path / "m.npz")
    net = MultiLayerNet(6, [7], 3, seed=1)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(zio.ModelFormatError, match=r"parameter 'W1' has shape \(6, 5\) in the file, "
                                                   r"the network expects \(6, 7\)"):
        net.load_params(tmp_path / "m.npz")
    _assert_same_arrays(before, net.params)


def test_name_mismatch_lists_missing_and_unexpected(tmp_path):
    MultiLayerNet(6, [5, 5], 3, seed=0).save_params(tmp_path / "m.npz")
    net = MultiLayerNet(6, [5], 3, seed=1)
    with pytest.raises(zio.ModelFormatError, match="unexpected W3, b3") as err:
        net.load_params(tmp_path / "m.npz")
    assert "MultiLayerNet" in str(err.value) or "W1, b1, W2, b2" in str(err.value)


def test_dtype_rules(tmp_path):
    MultiLayerNet(6, [5], 3, seed=0).save_params(tmp_path / "f64.npz")
    net32 = MultiLayerNet(6, [5], 3, dtype="float32", seed=1)
    net32.load_params(tmp_path / "f64.npz")  # float64 -> float32 rounds, documented
    source = MultiLayerNet(6, [5], 3, seed=0)
    np.testing.assert_array_equal(net32.params["W1"], source.params["W1"].astype(np.float32))
    assert net32.params["W1"].dtype == np.float32
    with pytest.raises(zio.ModelFormatError, match="'W1' has dtype float64 in the file, the network uses float32"):
        net32.load_params(tmp_path / "f64.npz", strict_dtype=True)


def test_integer_arrays_are_refused(tmp_path):
    path = tmp_path / "ints.pkl"
    with open(path, "wb") as f:
        pickle.dump({"W1": np.ones((4, 3), dtype=np.int64), "b1": np.zeros(3, dtype=np.int64),
                     "W2": np.ones((3, 2), dtype=np.int64), "b2": np.zeros(2, dtype=np.int64)}, f)
    with pytest.raises(zio.ModelFormatError, match="'W1' has dtype int64 in the file, expected a float array"):
        TwoLayerNet(4, 3, 2).load_params(path)


def test_newer_format_version_is_refused(tmp_path):
    net = TwoLayerNet(4, 3, 2, seed=0)
    meta = {"format": "zerodl-network", "format_version": zio.FORMAT_VERSION + 1, "class": "TwoLayerNet",
            "config": net.config, "zerodl_version": "9.9"}
    np.savez(tmp_path / "new.npz", __zerodl__=np.array(json.dumps(meta)),
             **{f"param/{k}": v for k, v in net.params.items()})
    with pytest.raises(zio.ModelFormatError, match="newer than this zerodl understands"):
        zerodl.load_network(tmp_path / "new.npz")


def test_foreign_npz_and_missing_files_are_clear(tmp_path):
    np.savez(tmp_path / "plain.npz", W1=np.ones(3))
    with pytest.raises(zio.ModelFormatError, match="not a zerodl model file"):
        zerodl.load_network(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        zerodl.load_network(tmp_path / "absent.npz")


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    net = TwoLayerNet(4, 3, 2, seed=0)
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays["param/W1"] = np.array([_Evil(f"touch {marker}")], dtype=object)
    meta = {"format": "zerodl-network", "format_version": 1, "class": "TwoLayerNet", "config": net.config}
    np.savez(tmp_path / "evil.npz", __zerodl__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(zio.ModelFormatError, match="need pickle"):
        zerodl.load_network(tmp_path / "evil.npz")
    assert not marker.exists()


# -- the book's pickles -----------------------------------------------------------------------
def _book_params(rng):
    """Arrays shaped like the book's ch03/sample_weight.pkl (784-50-100-10), float64."""
    sizes = [784, 50, 100, 10]
    params = {}
    for k in range(1, 4):
        params[f"W{k}"] = rng.standard_normal((sizes[k - 1], sizes[k])) * 0.1
        params[f"b{k}"] = rng.standard_normal(sizes[k]) * 0.1
    return params


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_book_pickle_loads_exactly_into_a_float64_net(tmp_path, rng, protocol):
    params = _book_params(rng)
    path = tmp_path / "sample_weight.pkl"
    with open(path, "wb") as f:  # what the book's save_params writes: pickle.dump(dict, f)
        pickle.dump(params, f, protocol=protocol)
    net = MultiLayerNet(784, [50, 100], 10, activation="sigmoid", seed=0)
    w1 = net.params["W1"]
    assert net.load_params(path) == {}
    assert net.params["W1"] is w1 and net.layers["Affine1"].W is w1
    _assert_same_arrays(params, net.params)


def test_book_pickle_from_numpy_1_names_loads(tmp_path, rng):
    """Files written before NumPy 2 name numpy.core.multiarray; they still load (quietly)."""
    params = {"W1": rng.standard_normal((4, 3)), "b1": np.zeros(3), "W2": np.ones((3, 2)), "b2": np.ones(2)}
    data = pickle.dumps(params, protocol=2)
    if b"numpy._core.multiarray" in data:  # NumPy 2 writes the new name; rewrite it as NumPy 1 did
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    (tmp_path / "old.pkl").write_bytes(data)
    net = TwoLayerNet(4, 3, 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.load_params(tmp_path / "old.pkl")
    _assert_same_arrays(params, net.params)


def test_load_book_pickle_returns_the_dict(tmp_path, rng):
    params = _book_params(rng)
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump(params, f)
    loaded = zio.load_book_pickle(tmp_path / "p.pkl")
    _assert_same_arrays(params, loaded)


def test_book_pickle_that_is_not_a_dict_of_arrays(tmp_path):
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([np.ones(2)], f)
    with pytest.raises(zio.ModelFormatError, match="expected a pickled dict"):
        zio.load_book_pickle(tmp_path / "list.pkl")
    with open(tmp_path / "str.pkl", "wb") as f:
        pickle.dump({"W1": "not an array"}, f)
    with pytest.raises(zio.ModelFormatError, match="'W1' is a str, not a numpy array"):
        zio.load_book_pickle(tmp_path / "str.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00garbage")
    with pytest.raises(zio.ModelFormatError, match="not a readable pickle"):
        zio.load_book_pickle(tmp_path / "junk.pkl")


class _Evil:
    """Unpickling this runs a shell command: exactly what must never happen."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("make", [
    lambda m: {"W1": _Evil(f"touch {m}")},                       # os.system as a parameter value
    lambda m: _Evil(f"touch {m}"),                               # the whole file
    lambda m: {"W1": np.ones(2), "nested": [(_EvilEval(m),)]},   # builtins.eval deep inside
], ids=["os.system-value", "os.system-top", "eval-nested"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(make(marker), protocol=2))
    net = TwoLayerNet(4, 3, 2, seed=0)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(zio.UnsafePickleError, match="refused to load: the pickle asks for") as err:
        net.load_params(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists(), "the malicious pickle ran"
    _assert_same_arrays(before, net.params)


def test_pickle_unsafe_error_is_also_raised_by_load_book_pickle(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    pickle.dump({"W1": _Evil(f"touch {marker}")}, buf)
    (tmp_path / "evil.pkl").write_bytes(buf.getvalue())
    with pytest.raises(zio.UnsafePickleError, match=r"posix\.system|nt\.system|os\.system"):
        zio.load_book_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_load_network_refuses_a_pickle_with_advice(tmp_path, rng):
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump(_book_params(rng), f)
    with pytest.raises(zio.ModelFormatError, match="holds no architecture.*load_params"):
        zerodl.load_network(tmp_path / "p.pkl")


def test_zip_that_is_not_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(zio.ModelFormatError):
        zerodl.load_network(tmp_path / "x.npz")
