"""Where the tests find their data, in order (the first that has every file wins):

1. ``$BNLSTM_TEST_DATA/mnist`` and ``$BNLSTM_TEST_DATA/ptb``;
2. ``../shared/data/`` beside the clone (CI, and this project's machines);
3. the user cache (``$BNLSTM_CACHE_DIR``, else the platform's, as ``python -m bnlstm data``);
4. else fetched once into that cache with the project's verified download (sha256 for
   MNIST, git blob ids for Penn Treebank; a progress bar), from the usual mirrors or from
   ``$BNLSTM_MNIST_URL`` / ``$BNLSTM_PTB_URL`` (base URLs holding the same file names).

When none of these works (offline, nothing on disk), the run stops at the first test
that needs data with one message saying what to do, instead of a hundred errors.
Penn Treebank: only the validation and test files are needed (and kept here).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PTB_NAMES = ("ptb.char.valid.txt", "ptb.char.test.txt")

HOW = ("The tests need the four MNIST files and Penn Treebank's ptb.char.valid.txt and "
       "ptb.char.test.txt. Give them one of these ways:\n"
       "  - BNLSTM_TEST_DATA=/path/with/mnist-and-ptb-folders ./scripts/test\n"
       "  - go online once: they are downloaded, verified, into the user cache\n"
       "  - BNLSTM_MNIST_URL=... BNLSTM_PTB_URL=... (a mirror holding the same file names)")


def _complete(folder: Path, names) -> bool:
    return all((folder / n).is_file() for n in names)


def _candidates(kind: str, cache: Path):
    env = os.environ.get("BNLSTM_TEST_DATA", "").strip()
    if env:
        yield Path(env).expanduser() / kind, "$BNLSTM_TEST_DATA"
    yield SHARED / kind, "../shared/data"
    yield cache, "the user cache"


def _find(kind: str, names, cache: Path, download) -> Path:
    for folder, _ in _candidates(kind, cache):
        if _complete(folder, names):
            return folder
    try:
        download(cache)
    except Exception as exc:
        pytest.exit(f"test data: {kind} not found in $BNLSTM_TEST_DATA, ../shared/data or "
                    f"{cache}, and the download failed:\n{exc}\n\n{HOW}", returncode=4)
    assert _complete(cache, names), f"the {kind} download left {cache} incomplete"
    return cache


@functools.lru_cache(maxsize=None)
def mnist_dir() -> Path:
    from bnlstm.tasks.mnist import data
    return _find("mnist", MNIST_NAMES, data.cache_dir(),
                 lambda d: data.download_mnist(d, progress=True))


@functools.lru_cache(maxsize=None)
def ptb_dir() -> Path:
    from bnlstm.tasks.text import data
    return _find("ptb", PTB_NAMES, data.ptb_cache_dir(),
                 lambda d: data.download_ptb(d, progress=True, names=PTB_NAMES))
