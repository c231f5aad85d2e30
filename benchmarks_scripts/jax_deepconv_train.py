"""The book's chapter 8 DeepConvNet trained in JAX (``jax.jit``), the way ``zerodl train --net deep-conv`` trains it.

    python benchmarks_scripts/jax_deepconv_train.py --data-dir ../shared/datasets/mnist --epochs 5 \
        [--dtype float32] [--threads 2] [--train-images N]

The same work as ``torch_deepconv_train.py`` and ``zerodl train --net deep-conv --dataset mnist --split t10k
--epochs 5 --optimizer adam``: zerodl's stratified 8,000/2,000 split of the MNIST test files (seed 0); the
book's DeepConvNet with zerodl's initial weights for the seed (He initialisation, zero biases), the layers
of ``zerodl bench``'s JAX contender (``zerodl.bench._jax_functions``: NCHW convolutions, 2x2 max-pools,
the book's Dropout 0.5 masks and the book's softmax cross-entropy); the book's Adam (lr 0.001, epsilon
1e-7) written in ``jax.numpy`` (``zerodl.bench._jax_optimizer``); batches of 100 drawn with replacement,
``train size / batch`` steps per epoch, the loss recorded after each update (one more forward in training
mode), train and test accuracy at every epoch start (the book's test-time Dropout, chunks of 1,000).

One ``jax.jit`` per function: the training step (batch gather, forward, ``jax.value_and_grad``, update;
parameters and optimizer state donated), the loss, and the correct count of an evaluation chunk. All
three are compiled before the timed loop (``jit(...).lower(...).compile()``); their time is printed as
the compile time, apart from the wall time. ``jax_enable_x64`` is on so float64 stays float64 (every
array has an explicit dtype). ``--threads N`` sets ``NPROC`` before JAX starts: the size of XLA's CPU
thread pool (jax 0.10 ignores ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``).
JAX is an optional peer of zerodl, never a dependency: this script is for comparisons only.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _peer_report import peer_arguments, report_line


def main() -> int:
    p = peer_arguments(__doc__.splitlines()[0])
    args = p.parse_args()

    if args.threads:
        os.environ["NPROC"] = str(args.threads)  # before JAX's CPU client starts
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)

    from zerodl.bench import _jax_functions, _jax_optimizer, _zerodl_initial_params, step_specs
    from zerodl.datasets import load_mnist

    (xa, ta), (xb, tb) = load_mnist(data_dir=args.data_dir, split="t10k", download=False, seed=args.seed,
                                    flatten=False)
    if args.train_images:
        xa, ta = xa[: args.train_images], ta[: args.train_images]
    dt = jnp.dtype(args.dtype)
    x_train, t_train = jnp.asarray(np.asarray(xa), dt), jnp.asarray(np.asarray(ta), jnp.int64)
    x_test, t_test = jnp.asarray(np.asarray(xb), dt), jnp.asarray(np.asarray(tb), jnp.int64)
    spec = next(s for s in step_specs("full") if s.key == f"deep_conv_{args.dtype}")
    forward, loss_fn = _jax_functions(spec)
    init_state, update = _jax_optimizer("adam", 0.001, dt)
    params = [jnp.asarray(w, dt) for w in _zerodl_initial_params(spec, args.seed)]
    state = init_state(params)
    key = jax.random.key(args.seed)

    def train_step(params, state, key, xb, tb):
        key, sub = jax.random.split(key)
        _, grads = jax.value_and_grad(loss_fn)(params, xb, tb, sub)
        params, state = update(params, grads, state)
        return params, state, key

    def loss_after(params, key, xb, tb):
        key, sub = jax.random.split(key)
        return loss_fn(params, xb, tb, sub), key

    def correct(params, x, t):
        return jnp.sum(jnp.argmax(forward(params, x, None, False), axis=1) == t)

    batch_x, batch_t = x_train[:100], t_train[:100]
    start = time.perf_counter()
    step_c = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, state, key, batch_x, batch_t).compile()
    loss_c = jax.jit(loss_after).lower(params, key, batch_x, batch_t).compile()
    chunks = {min(1000, n - i) for n in (x_train.shape[0], x_test.shape[0]) for i in range(0, n, 1000)}
    correct_c = {c: jax.jit(correct).lower(params, x_test[:c], t_test[:c]).compile() for c in chunks}
    compile_seconds = time.perf_counter() - start

    def accuracy(params, x, t):
        total = sum(int(correct_c[min(1000, x.shape[0] - i)](params, x[i : i + 1000], t[i : i + 1000]))
                    for i in range(0, x.shape[0], 1000))
        return total / x.shape[0]

    n = x_train.shape[0]
    per_epoch = max(n // 100, 1)
    steps = args.epochs * per_epoch
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            accuracy(params, x_train, t_train), accuracy(params, x_test, t_test)
        idx = jnp.asarray(rng.choice(n, 100))
        xb, tb = x_train[idx], t_train[idx]
        params, state, key = step_c(params, state, key, xb, tb)
        loss, key = loss_c(params, key, xb, tb)
        float(loss)  # recorded, as the Trainer records it: waits for the step
    train_seconds = time.perf_counter() - start
    acc = accuracy(params, x_test, t_test)
    print(report_line(f"jax {jax.__version__}", args.dtype, args.epochs, steps, train_seconds, compile_seconds,
                      acc, x_test.shape[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
