"""``save_params("x.pkl")`` writes the book's format (issue 13, item 6), and zerodl.io sits below the
networks (issue 11, item 1): it imports neither them nor the package, the networks register their
classes with it."""

from __future__ import annotations

import ast
import pathlib
import pickle

import numpy as np
import pytest

import zerodl
from zerodl import io as zio
from zerodl._version import __version__
from zerodl.networks import (
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)


# -- the book's pickle format ----------------------------------------------------------------------
def _book_load_params(path):
    """What the book's ``load_params`` does with the file: a plain ``pickle.load``, nothing else."""
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("suffix", [".pkl", ".PKL", ".pickle"])
def test_save_params_to_pkl_writes_a_plain_pickled_dict_the_book_reads(tmp_path, suffix):
    net = SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=5, output_size=3, seed=0)
    path = tmp_path / f"params{suffix}"
    assert net.save_params(path) == path
    loaded = _book_load_params(path)
    assert type(loaded) is dict and list(loaded) == list(net.params)
    for key, value in loaded.items():
        assert type(value) is np.ndarray, key
        assert value.dtype == net.params[key].dtype and value.shape == net.params[key].shape
        np.testing.assert_array_equal(value, net.params[key])
    assert not path.read_bytes().startswith(b"PK")  # not an npz under a .pkl name


def test_pkl_round_trip_through_the_restricted_loader(tmp_path):
    net = MultiLayerNet(6, [5, 4], 3, seed=1)
    net.save_params(tmp_path / "p.pkl")
    other = MultiLayerNet(6, [5, 4], 3, seed=2)
    assert other.load_params(tmp_path / "p.pkl") == {}
    for key in net.params:
        np.testing.assert_array_equal(other.params[key], net.params[key])


def test_npz_stays_the_default(tmp_path):
    net = TwoLayerNet(4, 3, 2, seed=0)
    path = net.save_params(tmp_path / "model")  # no suffix: npz content, name as given
    assert path.read_bytes().startswith(b"PK")
    assert type(zerodl.load_network(path)) is TwoLayerNet


def test_pkl_refuses_what_the_book_format_cannot_hold(tmp_path):
    net = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, seed=0)
    net.predict(np.ones((2, 6)), train_flg=True)  # running statistics exist now
    with pytest.raises(ValueError, match="buffers .*running_mean.*cannot hold.*npz"):
        net.save_params(tmp_path / "bn.pkl")
    with pytest.raises(ValueError, match="metadata needs a .npz"):
        zerodl.save_network(TwoLayerNet(4, 3, 2), tmp_path / "m.pkl", metadata={"dataset": "digits"})
    assert list(tmp_path.iterdir()) == []


def test_pkl_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.pkl"
    TwoLayerNet(4, 3, 2, seed=0).save_params(path)
    good = path.read_bytes()

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("zerodl._fileio.os.fsync", crash)
    with pytest.raises(OSError, match="No space left") as info:
        TwoLayerNet(4, 3, 2, seed=5).save_params(path)
    assert info.value.filename == str(path)  # the write error names the file
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["p.pkl"]


# -- layering: io imports nothing above it ------------------------------------------------------------
def _imports(module_path: pathlib.Path) -> set[str]:
    """Every module imported anywhere in the file (inside functions too: they only hide a circle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_io_imports_neither_the_networks_nor_the_package():
    zerodl_imports = {m for m in _imports(pathlib.Path(zio.__file__)) if m.split(".")[0] == "zerodl"}
    allowed = {"zerodl._fileio", "zerodl._version", "zerodl._npz"}
    assert {m.rsplit(".", 1)[0] if m.rsplit(".", 1)[0] in allowed else m for m in zerodl_imports} <= allowed, \
        zerodl_imports


def test_every_exported_network_class_is_registered():
    from zerodl import networks

    registry = zio.network_registry()
    for name in networks.__all__:
        obj = getattr(networks, name)
        if isinstance(obj, type) and issubclass(obj, Sequential):
            assert registry[name] is obj


def test_register_network_class(tmp_path):
    class Tiny(TwoLayerNet):
        pass

    Tiny(4, 3, 2).save_params(tmp_path / "t.npz")
    with pytest.raises(zio.ModelFormatError, match="unknown network class 'Tiny'"):
        zerodl.load_network(tmp_path / "t.npz")
    try:
        assert zio.register_network_class(Tiny) is Tiny
        assert zio.register_network_class(Tiny) is Tiny  # the same class again: fine
        assert type(zerodl.load_network(tmp_path / "t.npz")) is Tiny

        class Other:
            pass

        with pytest.raises(ValueError, match="'Tiny' is already registered"):
            zio.register_network_class(Other, "Tiny")
        with pytest.raises(TypeError, match="expected a class"):
            zio.register_network_class(Tiny(4, 3, 2))
    finally:
        zio._NETWORK_CLASSES.pop("Tiny", None)


def test_one_version_string(tmp_path):
    assert zerodl.__version__ == __version__
    meta = zio.read_metadata(zerodl.save_network(TwoLayerNet(4, 3, 2), tmp_path / "v.npz"))
    assert meta["zerodl_version"] == __version__
