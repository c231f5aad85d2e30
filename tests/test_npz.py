"""zerodl._npz: what model files and checkpoints share (prefixes, metadata entry, versions)."""

import io

import numpy as np
import pytest

from zerodl import _npz
from zerodl.networks import MultiLayerNetExtend


class Bad(ValueError):
    pass


def test_render_and_read_back_the_metadata_entry(tmp_path):
    arrays = {"param/W1": np.arange(6.0).reshape(2, 3)}
    path = _npz.write_npz(tmp_path / "f.npz", arrays, "__meta__", {"format": "x", "format_version": 1})
    with np.load(path, allow_pickle=False) as data:
        files = {k: data[k] for k in data.files}
    meta = _npz.read_meta_entry(files, "__meta__", "f.npz", Bad)
    assert meta == {"format": "x", "format_version": 1} and list(files) == ["param/W1"]
    assert _npz.check_format(meta, "x", 2, "f.npz", Bad) == 1
    with pytest.raises(ValueError, match="an array is named '__meta__'"):
        _npz.render_npz({"__meta__": np.zeros(1)}, "__meta__", {})
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]


@pytest.mark.parametrize("meta, fragment", [
    ({"format": "y", "format_version": 1}, "not a 'x' file"),
    ({"format": "x", "format_version": 3}, "format version 3 is newer than this zerodl understands (2)"),
    ({"format": "x", "format_version": 0}, "format version 0 is not one this zerodl reads (1..2)"),
    ({"format": "x", "format_version": True}, "format version True"),
    ([], "not a 'x' file"),
])
def test_check_format_refuses_other_formats_and_versions(meta, fragment):
    with pytest.raises(Bad, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        _npz.check_format(meta, "x", 2, "f.npz", Bad)


def test_read_meta_entry_refuses_missing_and_corrupt_entries():
    with pytest.raises(Bad, match="no '__m__' entry"):
        _npz.read_meta_entry({}, "__m__", "f", Bad)
    with pytest.raises(Bad, match="corrupt metadata entry"):
        _npz.read_meta_entry({"__m__": np.zeros(2)}, "__m__", "f", Bad)
    with pytest.raises(Bad, match="corrupt metadata"):
        _npz.read_meta_entry({"__m__": np.array("{not json")}, "__m__", "f", Bad)


def test_network_arrays_prefixes_and_copies():
    net = MultiLayerNetExtend(4, [3], 2, use_batchnorm=True, seed=0)
    copied, viewed = _npz.network_arrays(net, copy=True), _npz.network_arrays(net, copy=False)
    assert set(copied) == {"param/" + k for k in net.params} | {"buffer/" + k for k in net.buffers()}
    assert viewed["param/W1"] is net.params["W1"] and copied["param/W1"] is not net.params["W1"]
    np.testing.assert_array_equal(copied["param/W1"], net.params["W1"])
    assert set(_npz.strip_prefix(copied, "buffer/")) == set(net.buffers())
    assert _npz.zerodl_version() != "unknown"
    buf = io.BytesIO(_npz.render_npz(copied, "__meta__", {}))
    with np.load(buf) as data:
        assert sorted(data.files) == sorted([*copied, "__meta__"])
