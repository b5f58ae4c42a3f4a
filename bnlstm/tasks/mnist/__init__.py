"""Sequential MNIST: one task family (row, pixel14, pixel7, pixel, permuted).

Each view of the digits is a task of family ``"mnist"``: the image read as a sequence
(:data:`bnlstm.tasks.mnist.data.TASKS`), the last step's hidden state classified into ten digits,
accuracy as the metric. Data: :func:`bnlstm.tasks.mnist.data.load_mnist` (checksums, cache,
download, the bundled sample); the experiment: ``experiment.py``. This file imports no
torch, so that the registry (the dashboard's menus) costs nothing to read.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from .. import ACCURACY, Task, register

TASKS: Dict[str, Tuple[int, int]] = {     # view -> (steps, features per step)
    "row": (28, 28),        # one image row per step
    "pixel": (784, 1),      # one pixel per step, row-major (sequential MNIST)
    "pixel14": (196, 1),    # 2x2 average pooled to 14x14, then pixel by pixel
    "pixel7": (49, 1),      # 4x4 average pooled to 7x7, then pixel by pixel
    "permuted": (784, 1),   # one pixel per step in the fixed order permutation()
}


_VIEWS = {
    "row": ("MNIST by rows", "28 steps of 28 pixels: one image row per step"),
    "pixel14": ("MNIST 14x14 by pixels", "the image pooled to 14x14, one pixel per step (196 steps)"),
    "pixel7": ("MNIST 7x7 by pixels", "the image pooled to 7x7, one pixel per step (49 steps)"),
    "pixel": ("sequential MNIST", "784 steps of one pixel, row-major (the paper's MNIST)"),
    "permuted": ("permuted MNIST", "784 pixels in one fixed random order (the paper's pMNIST)"),
}


class MNISTTask(Task):
    """One sequence view of MNIST (``name`` in :data:`bnlstm.tasks.mnist.data.TASKS`)."""

    family = "mnist"
    metrics = (ACCURACY,)
    views = ("probes", "digits")
    excludes = frozenset({"seq_len", "temperature", "windows", "text_test"})      # the text task's

    def __init__(self, name: str):
        if name not in TASKS:
            raise ValueError(f"no MNIST view {name!r}; views: {', '.join(TASKS)}")
        self.name = name
        self.label, self.description = _VIEWS.get(name, (name, name))
        self.seq_len, self.input_size = TASKS[name]
        if name != "permuted":                             # the pixel order of pMNIST only
            self.excludes = self.excludes | {"permutation"}

    def load_data(self, data_dir=None, download: bool = False, **options):
        if options:
            raise ValueError(f"MNIST tasks take no {', '.join(sorted(options))}")
        from .data import load_mnist
        return load_mnist(data_dir, download=download)

    @property
    def experiment_class(self):
        """The experiment a run of this task makes (a subclass may name another)."""
        from .experiment import MNISTExperiment
        return MNISTExperiment

    def experiment(self, config, data=None, data_dir=None, download: bool = False, **options):
        if options:
            raise ValueError(f"MNIST tasks take no {', '.join(sorted(options))}")
        return self.experiment_class(config, data=data, data_dir=data_dir, download=download)

    def build_model(self, config, meta: Dict[str, Any]):
        from ..sequence import build_model
        return build_model(config, self.seq_len, self.input_size)


for _name in _VIEWS:                      # the order menus show
    register(MNISTTask(_name))
