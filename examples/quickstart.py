"""zerodl in one minute: the chapter 5 computational graph, a gradient check, a short training run.

Run it with ``python examples/quickstart.py``; it needs nothing but zerodl (random data stands in for
MNIST so it works offline).
"""

import time

import numpy as np

import zerodl
from zerodl.gradient import gradient_check
from zerodl.layers import AddLayer, MulLayer


def apple_shopping() -> None:
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    all_price = add.forward(mul_apple.forward(apple, apple_num), mul_orange.forward(orange, orange_num))
    price = mul_tax.forward(all_price, tax)
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    print(f"price {price:.0f}  dApple {dapple:.1f}  dApple_num {dapple_num:.0f}  "
          f"dOrange {dorange:.1f}  dOrange_num {dorange_num:.0f}  dTax {dtax:.0f}")


def check_gradients() -> None:
    rng = np.random.default_rng(0)
    net = zerodl.TwoLayerNet(input_size=20, hidden_size=10, output_size=3, seed=0)
    x, t = rng.standard_normal((3, 20)), np.array([0, 2, 1])
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            diffs = gradient_check(net, x, t)
        print(f"gradient check ({backend}): " + "  ".join(f"{k}:{v:.1e}" for k, v in diffs.items()))


def short_training() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 784))  # ten well-separated "digit" prototypes
    t_train = rng.integers(0, 10, 2000)
    x_train = (centers[t_train] + 0.8 * rng.standard_normal((2000, 784))).astype(np.float32)
    net = zerodl.TwoLayerNet(784, 50, 10, seed=0)
    optimizer = zerodl.SGD(lr=0.1)
    start = time.perf_counter()
    for i in range(300):
        batch = rng.choice(2000, 100)
        grads = net.gradient(x_train[batch], t_train[batch])
        optimizer.update(net.params, grads)
    print(f"300 SGD steps in {time.perf_counter() - start:.2f} s, "
          f"train accuracy {net.accuracy(x_train, t_train):.3f}")


if __name__ == "__main__":
    apple_shopping()
    check_gradients()
    short_training()
