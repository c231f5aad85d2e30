"""An independent plain-NumPy transcription of the book's chapter 6 maths (float64).

BatchNormalization, Dropout (with the mask handed in instead of drawn from ``np.random``),
MultiLayerNetExtend's forward/backward, and the six optimizers of ``common/optimizer.py``. Written
from the book's formulas for the tests to hold zerodl to; it imports nothing from zerodl.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 10e-7
OPT_EPS = 1e-7


# ----------------------------------------------------------------------------- layers
class BookBatchNorm:
    """The book's BatchNormalization: flattens 4-d input, lazy float64 running stats, graph backward."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            self.xc = x - mu
            var = np.mean(self.xc**2, axis=0)
            self.std = np.sqrt(var + BN_EPS)
            self.xn = self.xc / self.std
            self.n = x.shape[0]
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
            xn = self.xn
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + BN_EPS)
        return (self.gamma * xn + self.beta).reshape(self.input_shape)

    def backward(self, dout):
        dout = dout.reshape(dout.shape[0], -1)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum(dxn * self.xc / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.n) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        return (dxc - dmu / self.n).reshape(self.input_shape)


class BookDropout:
    """The book's Dropout, but the training mask is given (``masks`` consumed in order)."""

    def __init__(self, ratio, masks=None):
        self.ratio, self.masks = ratio, list(masks or [])

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = self.masks.pop(0)
            return x * self.mask
        return x * (1.0 - self.ratio)

    def backward(self, dout):
        return dout * self.mask


class BookAffine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout):
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return np.dot(dout, self.W.T)


class BookRelu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


class BookSigmoid:
    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


def book_softmax_loss(a, t):
    """(loss, dscores) of softmax + mean cross-entropy with the book's 1e-7 inside the log."""
    a = a - a.max(axis=1, keepdims=True)
    y = np.exp(a) / np.sum(np.exp(a), axis=1, keepdims=True)
    n = y.shape[0]
    labels = t if t.ndim == 1 else t.argmax(axis=1)
    loss = -np.sum(np.log(y[np.arange(n), labels] + 1e-7)) / n
    d = y.copy()
    d[np.arange(n), labels] -= 1
    return loss, d / n


class BookMultiLayerNetExtend:
    """The book's MultiLayerNetExtend on a given parameter dict (copied), masks handed in per layer.

    ``masks``: ``{k: [mask, mask, ...]}`` the training masks Dropout ``k`` uses, in call order.
    """

    def __init__(self, params, hidden_layer_num, activation="relu", weight_decay_lambda=0.0,
                 use_dropout=False, dropout_ratio=0.5, use_batchnorm=False, masks=None):
        self.params = {k: v.astype(np.float64).copy() for k, v in params.items()}
        self.L = hidden_layer_num
        self.lam = weight_decay_lambda
        self.use_batchnorm = use_batchnorm
        self.layers = []
        for k in range(1, self.L + 1):
            self.layers.append(("Affine", k, BookAffine(self.params[f"W{k}"], self.params[f"b{k}"])))
            if use_batchnorm:
                self.layers.append(
                    ("BatchNorm", k, BookBatchNorm(self.params[f"gamma{k}"], self.params[f"beta{k}"]))
                )
            self.layers.append(("Act", k, BookRelu() if activation == "relu" else BookSigmoid()))
            if use_dropout:
                self.layers.append(("Dropout", k, BookDropout(dropout_ratio, (masks or {}).get(k))))
        k = self.L + 1
        self.layers.append(("Affine", k, BookAffine(self.params[f"W{k}"], self.params[f"b{k}"])))

    def predict(self, x, train_flg=False):
        for kind, _, layer in self.layers:
            x = layer.forward(x, train_flg) if kind in ("BatchNorm", "Dropout") else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        scores = self.predict(x, train_flg)
        loss, self._dscores = book_softmax_loss(scores, t)
        decay = 0
        for k in range(1, self.L + 2):
            decay += 0.5 * self.lam * np.sum(self.params[f"W{k}"] ** 2)
        return loss + decay

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self._dscores
        for _, _, layer in reversed(self.layers):
            dout = layer.backward(dout)
        grads = {}
        for kind, k, layer in self.layers:
            if kind == "Affine":
                grads[f"W{k}"] = layer.dW + self.lam * self.params[f"W{k}"]
                grads[f"b{k}"] = layer.db
            elif kind == "BatchNorm":
                grads[f"gamma{k}"] = layer.dgamma
                grads[f"beta{k}"] = layer.dbeta
        return grads

    def running_stats(self):
        return {
            name: getattr(layer, attr)
            for kind, k, layer in self.layers if kind == "BatchNorm"
            for name, attr in ((f"running_mean{k}", "running_mean"), (f"running_var{k}", "running_var"))
        }


# ----------------------------------------------------------------------------- optimizers
class BookSGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class BookMomentum:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(p) for k, p in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class BookNesterov(BookMomentum):
    # The book repository's current form (commit 89eadd0, 2021, "Fix Nesterov update function"):
    # the parameters move with the velocity of the previous step first, then the velocity is updated.
    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(p) for k, p in params.items()}
        for key in params:
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]


class BookAdaGrad:
    def __init__(self, lr=0.01):
        self.lr, self.h = lr, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(p) for k, p in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + OPT_EPS)


class BookRMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(p) for k, p in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + OPT_EPS)


class BookAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(p) for k, p in params.items()}
            self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + OPT_EPS)


BOOK_OPTIMIZERS = {
    "SGD": BookSGD, "Momentum": BookMomentum, "Nesterov": BookNesterov,
    "AdaGrad": BookAdaGrad, "RMSprop": BookRMSprop, "Adam": BookAdam,
}
