"""The sequential-MNIST experiment: one run's data, model, loss and evaluation."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...nn import Trace, batch_statistics
from .. import ACCURACY
from ..sequence import SequenceExperiment, build_model
from . import data as data_mod


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
                                              seed=cfg.seed, shuffle=True, endless=True,
                                              permutation=cfg.permutation)
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
            limit = (self.config.val_limit if split == "val" else
                     self.config.train_score if split == "train" else 0) or None
            if limit:
                imgs, labels = imgs[:limit], labels[:limit]
            self._eval_batches[split] = data_mod.Batches(
                imgs, labels, task=self.config.task, batch_size=max(self.config.batch_size, 500),
                device=self.device, shuffle=False, permutation=self.config.permutation)
        return self._eval_batches[split]

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> Dict[str, Any]:
        """``loss``, ``acc`` and ``n`` over ``split``, with the population statistics; the
        validation split with each batch's own when ``val_stats`` is "batch"."""
        model = self.model
        was = model.training
        batch = split == "val" and self.config.val_stats == "batch"
        if not batch:
            model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        with batch_statistics(model) if batch else contextlib.nullcontext():
            for x, y in self.eval_batches(split):
                logits = model(x)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
        model.train(was)
        return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1), "n": total}

    def stat_batches(self, n: int) -> Iterator[Tensor]:
        """``n`` random training batches; ``n == -1``: the whole training split in order,
        in batches of 5000 (the authors' ``sequential_mnist_evaluate.py``)."""
        whole = n == -1
        batches = data_mod.Batches(*self.splits["train"], task=self.config.task,
                                   batch_size=5000 if whole else self.config.batch_size,
                                   device=self.device, seed=self.config.seed + 1,
                                   shuffle=not whole, permutation=self.config.permutation)
        if whole:
            return (x for x, _ in batches)
        it = iter(batches)
        return (next(it)[0] for _ in range(n))
