"""Train the book's MultiLayerNet on scikit-learn's embedded 8x8 digits with the Trainer, save it,
reload it and plot its learning curves.

    python examples/train_digits.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zerodl
from zerodl.datasets import load_digits
from zerodl.networks import MultiLayerNet
from zerodl.plots import plot_trainer
from zerodl.trainer import EarlyStopping, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write model and plot")
    args = parser.parse_args()

    data = load_digits(normalize=True, flatten=True)
    print(data.description)
    (x_train, t_train), (x_test, t_test) = data

    network = MultiLayerNet(input_size=64, hidden_size_list=[100, 100], output_size=10, seed=0)
    trainer = Trainer(network, x_train, t_train, x_test, t_test,
                      epochs=30, mini_batch_size=100,
                      optimizer="Adam", optimizer_param={"lr": 0.003},
                      seed=0, callbacks=[EarlyStopping(monitor="test_acc", patience=10)])
    trainer.train()

    model = network.save_params(args.out / "digits_mlp.npz")
    reloaded = zerodl.load_network(model)
    assert reloaded.accuracy(x_test, t_test) == trainer.final_test_acc
    print(f"saved {model}; reloaded accuracy {reloaded.accuracy(x_test, t_test):.4f}")
    print(f"learning curves: {plot_trainer(trainer, args.out / 'digits_mlp.png')}")


if __name__ == "__main__":
    main()
