"""The CLI's convolutional choices: ``zerodl train --net simple-conv|deep-conv``, the filter and
misclassified-image pictures, ``zerodl evaluate`` of a conv model (on the embedded digits)."""

import pytest

from zerodl.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(path):
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE)


def test_train_and_evaluate_simple_conv_on_digits(tmp_path, capsys):
    model = tmp_path / "conv.npz"
    code = main(["train", "--net", "simple-conv", "--dataset", "digits", "--epochs", "1", "--filters", "4",
                 "--conv-hidden", "16", "--filters-png", str(tmp_path / "filters.png"),
                 "--misclassified-png", str(tmp_path / "wrong.png"), "--save", str(model)])
    out = capsys.readouterr().out
    assert code == 0
    assert "network: SimpleConvNet (4, 1, 3, 3) -> (36, 16) -> (16, 10)" in out  # 8x8 → 3x3 filters
    assert _png(tmp_path / "filters.png") and _png(tmp_path / "wrong.png")
    code = main(["evaluate", str(model), "--misclassified-png", str(tmp_path / "wrong2.png")])
    out = capsys.readouterr().out
    assert code == 0 and "test accuracy:" in out and _png(tmp_path / "wrong2.png")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--net", "deep-conv"], "--net deep-conv is the book's MNIST network and needs 28x28 images"),
        (["--net", "mlp", "--filters-png", "f.png"], "--filters-png draws convolution filters"),
        (["--net", "simple-conv", "--filter-size", "9"], "--net simple-conv on images of shape (1, 8, 8)"),
    ],
)
def test_clear_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--epochs", "1", *argv]) == 1
    assert message in capsys.readouterr().err
