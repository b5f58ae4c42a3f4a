"""Shared pytest fixtures."""
from pathlib import Path

import pytest
import torch

import testdata

# The models in the tests are small: one intra-op thread is as fast as two on
# them and does not thrash when other processes (a server, a browser) share the
# machine's two cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four original MNIST IDX gzip files (found or fetched, verified:
    ``tests/testdata.py``; never skipped)."""
    return testdata.mnist_dir()


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    """Penn Treebank's character-level validation and test files (``tests/testdata.py``)."""
    return testdata.ptb_dir()
