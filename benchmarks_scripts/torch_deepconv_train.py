"""The book's chapter 8 DeepConvNet trained in PyTorch eager (or ``torch.compile``), the way ``zerodl train --net deep-conv`` trains it.

    python benchmarks_scripts/torch_deepconv_train.py --data-dir ../shared/datasets/mnist --epochs 5 \
        [--dtype float32] [--threads 2] [--compile [MODE]] [--train-images N]

Same data (zerodl's stratified 8,000/2,000 split of the MNIST test files, seed 0), same work per epoch (the
loss recorded after each update, train and test accuracy at every epoch start), same network (six 3x3
convolutions 16-16-32-32(pad 2)-64-64 with ReLU, three 2x2 max-pools, Affine 50 + ReLU + Dropout 0.5,
Affine 10 + Dropout 0.5, He initialisation), same training (Adam lr 0.001, epsilon 1e-7, batch 100, batches
drawn with replacement, ``train size / batch`` steps per epoch), and the same evaluation (test accuracy in
eval mode). Prints the wall time of the training loop (evaluations included), the compile time, the final
test accuracy and the peak resident set (``_peer_report.py``), to set beside
``zerodl train --net deep-conv --dataset mnist --split t10k --epochs 5 --optimizer adam``.

``--compile [MODE]``: ``torch.compile`` the model (mode ``default`` unless named; ``dynamic=False``: the
three shapes it meets, training batch, no-grad loss batch and evaluation chunk, each get a static graph).
The optimizer step stays eager (compiling it broke its graph and was slower, see ``zerodl/bench.py``).
Every graph is compiled before the timed loop, by one training step, one no-grad loss and one evaluation
of each chunk size; then the weights, the optimizer and the random generators are put back as they were, so the timed
loop does exactly the eager run's work. Eager runs report compile 0.
``--train-images N``: train on the first N images of the split only (a quick check that it runs).
PyTorch is an optional peer of zerodl, never a dependency: this script is for comparisons only.
"""

from __future__ import annotations

import time

import numpy as np
from _peer_report import peer_arguments, report_line


def main() -> int:
    p = peer_arguments(__doc__.splitlines()[0])
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                   help="torch.compile the model (MODE default: 'default')")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn

    from zerodl.datasets import load_mnist

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (xa, ta), (xb, tb) = load_mnist(data_dir=args.data_dir, split="t10k", download=False, seed=args.seed,
                                    flatten=False)
    if args.train_images:
        xa, ta = xa[: args.train_images], ta[: args.train_images]
    dtype = getattr(torch, args.dtype)
    x_train = torch.from_numpy(np.asarray(xa, dtype=args.dtype))
    t_train = torch.from_numpy(np.asarray(ta).astype(np.int64))
    x_test = torch.from_numpy(np.asarray(xb, dtype=args.dtype))
    t_test = torch.from_numpy(np.asarray(tb).astype(np.int64))
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, 10), nn.Dropout(0.5),
    ).to(dtype)
    for m in model.modules():  # He initialisation, zero biases, as the book's DeepConvNet
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=float(np.sqrt(2.0 / (m.weight[0].numel()))))
            nn.init.zeros_(m.bias)
    run = model if args.compile is None else torch.compile(model, mode=args.compile, dynamic=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)
    n = x_train.shape[0]
    per_epoch = max(n // 100, 1)
    steps = args.epochs * per_epoch

    def accuracy(x, t):
        model.eval()
        with torch.no_grad():
            correct = sum(int((run(x[i : i + 1000]).argmax(1) == t[i : i + 1000]).sum())
                          for i in range(0, x.shape[0], 1000))
        model.train()
        return correct / x.shape[0]

    def train_step(xb, tb):
        opt.zero_grad()
        loss = F.cross_entropy(run(xb), tb)
        loss.backward()
        opt.step()
        with torch.no_grad():
            F.cross_entropy(run(xb), tb)

    compile_seconds = 0.0
    if args.compile is not None:
        # Compile every graph the loop uses, then put the weights, the optimizer and the RNG back.
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        opt_state = opt.state_dict()
        start = time.perf_counter()
        model.train()
        train_step(x_train[:100], t_train[:100])
        chunks = {min(1000, len(x) - i) for x in (x_train, x_test) for i in range(0, len(x), 1000)}
        for c in sorted(chunks):  # every evaluation chunk size the loop meets (1,000 on the full split)
            accuracy(x_test[:c], t_test[:c])
        compile_seconds = time.perf_counter() - start
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(weights[k])  # in place: the compiled graphs keep seeing the same tensors
        opt.state.clear()
        opt.load_state_dict(opt_state)
        torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # What `zerodl train` (the book's Trainer) does: the loss of each batch recorded after the update
    # (one more forward, dropout in training mode as the book's DeepConvNet.loss), and the train and
    # test accuracies at the start of every epoch.
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        if step % per_epoch == 0:
            accuracy(x_train, t_train), accuracy(x_test, t_test)
        idx = torch.from_numpy(rng.choice(n, 100))
        train_step(x_train[idx], t_train[idx])
    train_seconds = time.perf_counter() - start
    correct = round(accuracy(x_test, t_test) * x_test.shape[0])
    peer = f"torch {torch.__version__}" + ("" if args.compile is None else f" torch.compile({args.compile!r})")
    print(report_line(peer, args.dtype, args.epochs, steps, train_seconds, compile_seconds,
                      correct / x_test.shape[0], x_test.shape[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
