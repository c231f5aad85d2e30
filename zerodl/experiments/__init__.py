"""The book's chapter 6 experiments, each a module with ``run(out, *, quick, seed, backend, ...)``.

* :mod:`~zerodl.experiments.optimizers`: the six optimizers on x²/20 + y² and on real digits;
* :mod:`~zerodl.experiments.init`: weight initialisation (std 0.01, Xavier, He);
* :mod:`~zerodl.experiments.batchnorm`: batch normalization vs none over weight scales;
* :mod:`~zerodl.experiments.overfit`: overfitting, weight decay and dropout;
* :mod:`~zerodl.experiments.search`: hyperparameter random search, serial / processes / Dask.

``run`` returns an :class:`~zerodl.experiments._common.ExperimentResult` (table, figure path, raw
numbers). On the command line: ``zerodl experiment NAME`` (:mod:`zerodl.experiments.cli`).
Nothing here is imported by ``import zerodl``; matplotlib is imported only when a figure is drawn.
"""

from zerodl.experiments._common import ExperimentResult

__all__ = ["ExperimentResult"]
