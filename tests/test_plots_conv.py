"""plots_conv: valid PNG files, written atomically, and clear errors."""

import numpy as np
import pytest

from zerodl.plots_conv import plot_filters, plot_misclassified

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)


def test_plot_filters_single_and_before_after(tmp_path, rng):
    W = rng.standard_normal((10, 1, 5, 5))
    out = plot_filters(W, tmp_path / "filters.png", title="conv1")
    assert out == tmp_path / "filters.png" and _is_png(out)
    pair = plot_filters((W, W * 2 + 1), tmp_path / "sub" / "pair.png", title="before / after")
    assert _is_png(pair)
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "sub").glob(".*.tmp"))


def test_plot_filters_errors(tmp_path, rng):
    with pytest.raises(ValueError, match=r"plot_filters: W must be real filters of shape \(FN, C, FH, FW\)"):
        plot_filters(rng.standard_normal((5, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="the two filter sets must have one shape"):
        plot_filters((rng.standard_normal((2, 1, 3, 3)), rng.standard_normal((3, 1, 3, 3))), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_misclassified(tmp_path, rng):
    x = rng.random((12, 1, 8, 8))
    t = np.arange(12) % 3
    scores = np.eye(3)[t]
    scores[[1, 4, 7]] = np.eye(3)[[0, 0, 0]]  # three mistakes (their labels are 1)
    n_wrong = plot_misclassified(x, t, scores, tmp_path / "wrong.png", max_images=2)
    assert n_wrong == 3 and _is_png(tmp_path / "wrong.png")
    # flat rows, one-hot labels, nothing wrong: still a PNG that says so
    assert plot_misclassified(x.reshape(12, -1), np.eye(3)[t], t, tmp_path / "none.png") == 0
    assert _is_png(tmp_path / "none.png")


def test_plot_misclassified_errors(tmp_path, rng):
    x = rng.random((4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"y_pred must be labels \(4,\)"):
        plot_misclassified(x, np.zeros(4, int), np.zeros(3, int), tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        plot_misclassified(x, np.zeros(4, int), np.zeros(4, int), tmp_path / "x.png", max_images=0)
    with pytest.raises(ValueError, match="x must be images"):
        plot_misclassified(rng.random((4, 7)), np.zeros(4, int), np.zeros(4, int), tmp_path / "x.png")
