"""asv benchmarks of zerodl: one ``bench_<op>.py`` per kernel file, the training steps, compile cost.

Every kernel benchmark is parameterised by backend (``numpy`` / ``numba``) and dtype, warms the JIT
in ``setup`` (so a benchmark never times compilation, except ``bench_compile``'s on purpose), and
uses seeded, realistic inputs (MNIST MLPs, the book's convolution batch) from :mod:`.common`.
"""
