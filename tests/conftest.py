"""Shared pytest fixtures."""
from pathlib import Path

import pytest
import torch

# The models in the tests are small: one intra-op thread is as fast as two on
# them and does not thrash when other processes (a server, a browser) share the
# machine's two cores.
torch.set_num_threads(1)

# The original MNIST files live next to the repository (shared/ is a sibling of the
# clone, in CI too); see shared/data/mnist/SOURCE.md. Tests point the project at them.
SHARED_MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four original MNIST IDX gzip files (a hard requirement: no skip)."""
    missing = [n for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
               if not (SHARED_MNIST_DIR / n).is_file()]
    assert not missing, f"MNIST test files missing from {SHARED_MNIST_DIR}: {missing}"
    return SHARED_MNIST_DIR


SHARED_PTB_DIR = SHARED_MNIST_DIR.parent / "ptb"


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    """The Penn Treebank character-level validation and test files (no training file
    exists here; see shared/data/ptb/SOURCE.md). A hard requirement: no skip."""
    missing = [n for n in ("ptb.char.valid.txt", "ptb.char.test.txt")
               if not (SHARED_PTB_DIR / n).is_file()]
    assert not missing, f"Penn Treebank test files missing from {SHARED_PTB_DIR}: {missing}"
    return SHARED_PTB_DIR
