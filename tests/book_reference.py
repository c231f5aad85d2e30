"""An independent plain-NumPy transcription of the book's chapter 5–6 formulas.

This is the *specification* the NumPy and Numba backends are held to (float64). It is deliberately
written as directly as possible from the book's maths — a dict of parameters in, numbers out — and
shares no code with zerodl.
"""

from __future__ import annotations

import numpy as np


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy(y, t):
    if t.size == y.size:
        t = t.argmax(axis=1)
    n = y.shape[0]
    return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n


def mlp_loss_and_grads(params, x, t, n_affine, activation="relu", weight_decay_lambda=0.0):
    """Loss (with L2 decay) and backprop gradients of Affine→act→…→Affine→SoftmaxWithLoss."""
    cache = []
    h = x
    for k in range(1, n_affine + 1):
        W, b = params[f"W{k}"], params[f"b{k}"]
        a = np.dot(h, W) + b
        cache.append(h)
        if k < n_affine:
            if activation == "relu":
                h = np.where(a <= 0, 0, a)
            else:
                h = 1 / (1 + np.exp(-a))
            cache.append(h if activation == "sigmoid" else a)
        else:
            h = a
    y = softmax(h)
    decay = 0
    for k in range(1, n_affine + 1):
        decay += 0.5 * weight_decay_lambda * np.sum(params[f"W{k}"] ** 2)
    loss = cross_entropy(y, t) + decay

    n = x.shape[0]
    one_hot = t if t.size == y.size else np.eye(y.shape[1])[t]
    dout = (y - one_hot) / n
    grads = {}
    for k in range(n_affine, 0, -1):
        inp = cache[2 * (k - 1)]
        W = params[f"W{k}"]
        grads[f"W{k}"] = np.dot(inp.T, dout) + weight_decay_lambda * W
        grads[f"b{k}"] = np.sum(dout, axis=0)
        dout = np.dot(dout, W.T)
        if k > 1:
            pre = cache[2 * (k - 1) - 1]
            if activation == "relu":
                dout = np.where(pre <= 0, 0, dout)
            else:
                dout = dout * (1.0 - pre) * pre
    return loss, grads


def mlp_accuracy(params, x, t, n_affine, activation="relu"):
    h = x
    for k in range(1, n_affine + 1):
        h = np.dot(h, params[f"W{k}"]) + params[f"b{k}"]
        if k < n_affine:
            h = np.maximum(h, 0) if activation == "relu" else 1 / (1 + np.exp(-h))
    if t.ndim != 1:
        t = np.argmax(t, axis=1)
    return np.sum(np.argmax(h, axis=1) == t) / float(x.shape[0])


class BookOptimizer:
    """The book's six update rules on dicts of arrays (state created lazily, like the book)."""

    def __init__(self, name, lr, **hyper):
        self.name, self.lr, self.hyper = name, lr, hyper
        self.s1, self.s2, self.iter = None, None, 0

    def update(self, params, grads):
        name, lr = self.name, self.lr
        if self.s1 is None:
            self.s1 = {k: np.zeros_like(v) for k, v in params.items()}
            self.s2 = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        if name == "adam":
            b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
            lr_t = lr * np.sqrt(1.0 - b2**self.iter) / (1.0 - b1**self.iter)
        for k in params:
            g = grads[k]
            if name == "sgd":
                params[k] -= lr * g
            elif name == "momentum":
                self.s1[k] = self.hyper.get("momentum", 0.9) * self.s1[k] - lr * g
                params[k] += self.s1[k]
            elif name == "nesterov":
                # The book repository's current order (commit 89eadd0): parameters first, with
                # the previous step's velocity, then the velocity.
                m = self.hyper.get("momentum", 0.9)
                params[k] += m * m * self.s1[k]
                params[k] -= (1 + m) * lr * g
                self.s1[k] *= m
                self.s1[k] -= lr * g
            elif name == "adagrad":
                self.s1[k] += g * g
                params[k] -= lr * g / (np.sqrt(self.s1[k]) + 1e-7)
            elif name == "rmsprop":
                d = self.hyper.get("decay_rate", 0.99)
                self.s1[k] *= d
                self.s1[k] += (1 - d) * g * g
                params[k] -= lr * g / (np.sqrt(self.s1[k]) + 1e-7)
            elif name == "adam":
                self.s1[k] += (1 - b1) * (g - self.s1[k])
                self.s2[k] += (1 - b2) * (g**2 - self.s2[k])
                params[k] -= lr_t * self.s1[k] / (np.sqrt(self.s2[k]) + 1e-7)
