"""Start-up cost: ``import zerodl`` plus the first training step, with a cold or a warm numba cache.

``timeraw_`` runs the code in a fresh interpreter each time. ``cache="cold"`` points
``NUMBA_CACHE_DIR`` at a new empty directory (every kernel the step needs compiles);
``cache="warm"`` at a directory filled once in ``setup_cache`` (kernels load from disk).
"""

import os
import subprocess
import sys
import tempfile
import textwrap

FIRST_STEP = textwrap.dedent(
    """
    import numpy as np
    import zerodl
    net = zerodl.TwoLayerNet(784, 50, 10, seed=0)
    x = np.random.default_rng(0).random((100, 784))
    t = np.arange(100) % 10
    if {fused}:
        net.train_step(x, t, zerodl.SGD(0.1))
    else:
        zerodl.SGD(0.1).update(net.params, net.gradient(x, t))
    """
)


def _setup(cache_dir):
    # Untimed, before the timed code imports numba (which reads NUMBA_CACHE_DIR at import).
    return (
        "import os, tempfile\n"
        f"os.environ['NUMBA_CACHE_DIR'] = {cache_dir!r} or tempfile.mkdtemp(prefix='zerodl-cold-')\n"
        "os.environ['ZERODL_BACKEND'] = 'numba'\n"
    )


class ImportAndFirstStep:
    params = (["cold", "warm"], ["fused", "layers"])
    param_names = ["cache", "path"]
    timeout = 600
    repeat = (1, 3, 60.0)
    number = 1

    def setup_cache(self):
        warm_dir = tempfile.mkdtemp(prefix="zerodl-warm-")
        env = dict(os.environ, NUMBA_CACHE_DIR=warm_dir, ZERODL_BACKEND="numba")
        for fused in (True, False):
            subprocess.run([sys.executable, "-c", FIRST_STEP.format(fused=fused)], env=env, check=True)
        return warm_dir

    def timeraw_import_first_step(self, warm_dir, cache, path):
        code = FIRST_STEP.format(fused=path == "fused")
        return code, _setup(warm_dir if cache == "warm" else "")
