"""Fixtures shared by the whole suite: backend, dtype and a seeded generator."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from hypothesis import settings

import zerodl

settings.register_profile("zerodl", max_examples=25, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "zerodl"))

#: The real MNIST test set shipped beside the project in CI (never copied into it).
MNIST_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


@pytest.fixture(params=zerodl.BACKENDS)
def backend(request):
    """Run the test once per backend, with that backend active."""
    with zerodl.use_backend(request.param):
        yield request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """Run the test once per floating dtype."""
    return np.dtype(request.param)


@pytest.fixture
def rng():
    """A seeded generator: every test sees the same numbers on every run."""
    return np.random.default_rng(12345)


@pytest.fixture
def mnist_dir():
    """Path of the real MNIST test files, or a skip naming where they were looked for."""
    path = pathlib.Path(os.environ.get("ZERODL_MNIST_DIR", MNIST_DIR))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {path} (set ZERODL_MNIST_DIR)")
    return path
