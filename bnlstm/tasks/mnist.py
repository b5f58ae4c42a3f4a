"""Sequential MNIST: one task family (row, pixel14, pixel7, pixel, permuted).

Each view of the digits is a task of family ``"mnist"``: the image read as a sequence
(:data:`bnlstm.data.TASKS`), the last step's hidden state classified into ten digits,
accuracy as the metric. Data: :func:`bnlstm.data.load_mnist` (checksums, cache,
download, the bundled sample).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import data as data_mod
from ..experiment import SequenceExperiment, build_model
from ..model import Trace
from . import ACCURACY, Task, register

_VIEWS = {
    "row": ("MNIST by rows", "28 steps of 28 pixels: one image row per step"),
    "pixel14": ("MNIST 14x14 by pixels", "the image pooled to 14x14, one pixel per step (196 steps)"),
    "pixel7": ("MNIST 7x7 by pixels", "the image pooled to 7x7, one pixel per step (49 steps)"),
    "pixel": ("sequential MNIST", "784 steps of one pixel, row-major (the paper's MNIST)"),
    "permuted": ("permuted MNIST", "784 pixels in one fixed random order (the paper's pMNIST)"),
}


class MNISTExperiment(SequenceExperiment):
    """Sequential MNIST classification: builds data, model and optimizer from a config
    (the contract: :class:`bnlstm.tasks.Experiment`)."""

    metrics = (ACCURACY,)

    def load_data(self):
        return data_mod.load_mnist(self._data_dir, download=self._download)

    def prepare(self, data) -> Dict[str, Any]:
        cfg = self.config
        splits = data_mod.make_splits(data)
        self.seq_len, self.input_size = data_mod.TASKS[cfg.task]
        self.train_batches = data_mod.Batches(*splits["train"], task=cfg.task,
                                              batch_size=cfg.batch_size, device=self.device,
                                              seed=cfg.seed, shuffle=True, endless=True)
        self.splits = splits
        self._eval_batches: Dict[str, Any] = {}
        self.data_is_full = data.is_full
        return {"data_is_full": data.is_full, "seq_len": self.seq_len,
                "n_train": len(splits["train"][1]), "n_val": len(splits["val"][1]),
                "n_test": len(splits["test"][1])}

    def build_model(self):
        return build_model(self.config, self.seq_len, self.input_size)

    def train_loss(self, batch, trace: Optional[Trace]) -> Tuple[Tensor, Dict[str, float]]:
        x, y = batch                                   # (B, T, F), (B,)
        logits = self.model(x, trace=trace)            # (B, 10)
        loss = F.cross_entropy(logits, y)
        return loss, {"acc": float((logits.argmax(1) == y).float().mean())}

    def eval_batches(self, split: str):
        if split not in self._eval_batches:
            imgs, labels = self.splits[split]
            limit = self.config.val_limit if split == "val" and self.config.val_limit else None
            if limit:
                imgs, labels = imgs[:limit], labels[:limit]
            self._eval_batches[split] = data_mod.Batches(
                imgs, labels, task=self.config.task, batch_size=max(self.config.batch_size, 500),
                device=self.device, shuffle=False)
        return self._eval_batches[split]

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> Dict[str, Any]:
        model = self.model
        was = model.training
        model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in self.eval_batches(split):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        model.train(was)
        return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1), "n": total}

    def stat_batches(self, n: int) -> Iterator[Tensor]:
        batches = data_mod.Batches(*self.splits["train"], task=self.config.task,
                                   batch_size=self.config.batch_size, device=self.device,
                                   seed=self.config.seed + 1, shuffle=True)
        it = iter(batches)
        return (next(it)[0] for _ in range(n))


class MNISTTask(Task):
    """One sequence view of MNIST (``name`` in :data:`bnlstm.data.TASKS`)."""

    family = "mnist"
    metrics = (ACCURACY,)
    views = ("probes", "digits")
    excludes = frozenset({"seq_len", "temperature"})      # the text task's
    experiment_class = MNISTExperiment

    def __init__(self, name: str):
        if name not in data_mod.TASKS:
            raise ValueError(f"no MNIST view {name!r}; views: {', '.join(data_mod.TASKS)}")
        self.name = name
        self.label, self.description = _VIEWS.get(name, (name, name))
        self.seq_len, self.input_size = data_mod.TASKS[name]

    def load_data(self, data_dir=None, download: bool = False, **options):
        if options:
            raise ValueError(f"MNIST tasks take no {', '.join(sorted(options))}")
        return data_mod.load_mnist(data_dir, download=download)

    def experiment(self, config, data=None, data_dir=None, download: bool = False, **options):
        if options:
            raise ValueError(f"MNIST tasks take no {', '.join(sorted(options))}")
        return self.experiment_class(config, data=data, data_dir=data_dir, download=download)

    def build_model(self, config, meta: Dict[str, Any]):
        return build_model(config, self.seq_len, self.input_size)


for _name in _VIEWS:                      # the order menus show
    register(MNISTTask(_name))
