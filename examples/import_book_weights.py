"""Import the book's pickled weights (ch03/sample_weight.pkl, or any file its ``save_params``
wrote) into a zerodl network, safely, and measure it on MNIST.

    python examples/import_book_weights.py path/to/sample_weight.pkl [--data-dir DIR]

``sample_weight.pkl`` holds the chapter 3 network: 784 -> 50 -> 100 -> 10 with sigmoid
activations, float64. The file is read with a restricted unpickler: only NumPy arrays and plain
containers are admitted, so a tampered file is refused instead of run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zerodl
from zerodl.datasets import load_mnist
from zerodl.networks import MultiLayerNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="the book's pickled parameter file")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST files")
    args = parser.parse_args()

    network = MultiLayerNet(784, [50, 100], 10, activation="sigmoid")
    network.load_params(args.weights)  # checks names, shapes and dtypes; copies in place
    data = load_mnist(normalize=True, flatten=True, data_dir=args.data_dir)
    print(data.description)
    _, (x_test, t_test) = data
    print(f"accuracy on {len(x_test):,} MNIST test images: {network.accuracy(x_test, t_test):.4f}")
    # The same weights in zerodl's pickle-free format, beside the original file.
    npz = network.save_params(Path(args.weights).with_suffix(".npz"))
    print(f"re-saved as {npz}; reload with zerodl.load_network({str(npz)!r})")
    assert zerodl.load_network(npz).accuracy(x_test, t_test) == network.accuracy(x_test, t_test)


if __name__ == "__main__":
    main()
