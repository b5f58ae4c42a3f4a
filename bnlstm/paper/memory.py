"""The distractor task (the paper's Figure 3b on MNIST): row-by-row digits followed by
noise steps, and how far each model's memory reaches past the length it was trained on.

See :mod:`bnlstm.paper` for the table of experiments.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..nn import reestimate_stats
from .common import _config, _load, _meta, _train
from .mnist import _accuracy

# =========================================================================== Figure 3b
class _SuffixBatches:
    """Row-by-row MNIST followed by ``suffix`` steps of Gaussian noise (std ``noise_std``).

    Wraps a :class:`bnlstm.tasks.mnist.data.Batches` of task ``row``: yields ``(x, y)`` with x of
    shape (B, 28 + suffix, 28). With ``fixed=True`` the noise of the i-th batch is the same
    on every pass (evaluation); otherwise fresh noise every batch (training).
    """

    def __init__(self, inner, suffix: int, noise_std: float, seed: int = 0, fixed: bool = False):
        self.inner, self.suffix, self.noise_std = inner, int(suffix), float(noise_std)
        self.seed, self.fixed = seed, fixed
        self.gen = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        if self.fixed:
            self.gen.manual_seed(self.seed)
        for x, y in self.inner:
            noise = torch.randn(x.shape[0], self.suffix, x.shape[2], generator=self.gen)
            yield torch.cat([x, self.noise_std * noise.to(x.device, x.dtype)], 1), y


def _suffix_experiment_class():
    from ..tasks.mnist.experiment import MNISTExperiment

    class SuffixExperiment(MNISTExperiment):
        """MNIST rows then ``suffix`` noise steps; the class is read from the last h."""

        def __init__(self, config, data, suffix: int, noise_std: float):
            super().__init__(config, data=data)
            self.suffix, self.noise_std = suffix, noise_std

        def prepare(self, data):
            info = super().prepare(data)
            self.seq_len = 28 + self.suffix        # the model's T_max (built after prepare)
            self.train_batches = _SuffixBatches(self.train_batches, self.suffix, self.noise_std,
                                                seed=self.config.seed + 100)
            info["seq_len"] = self.seq_len
            return info

        def eval_batches(self, split):
            b = super().eval_batches(split)
            if not isinstance(b, _SuffixBatches):
                b = self._eval_batches[split] = _SuffixBatches(b, self.suffix, self.noise_std,
                                                               seed=12345, fixed=True)
            return b

    return SuffixExperiment


def distractor_memory(train_suffix: int = 28, factors: Sequence[float] = (1, 2, 4, 8),
                      models: Sequence[str] = ("bnlstm", "lstm"), steps: Optional[int] = None,
                      seed: int = 0, hidden: Optional[int] = None, noise_std: float = 0.3,
                      val_limit: Optional[int] = None, eval_batch: int = 500,
                      small_batch: int = 32, reestimate_batches: Optional[int] = None,
                      quick: bool = False, data=None, data_dir=None, **config) -> Dict[str, Any]:
    """Memory across a long distractor: a digit's rows, then noise longer than in training.

    Not the paper's Figure 3b (that is :func:`bnlstm.paper.length_generalization`, on
    text): this measures whether a model trained with T_max steps (digit + noise) still
    knows the digit after 1x..8x as much noise, with the T_max rule (population
    statistics of step T_max reused beyond it) against batch statistics.

    The MNIST-derived task (designed so that the T_max rule's premise -- the process is
    stationary after T_max -- holds): the 28 rows of a digit, one per step, followed by
    ``suffix`` steps of i.i.d. Gaussian noise rows (std ``noise_std``; pixels are in
    [0, 1]); the class is read from the last hidden state. Training uses ``train_suffix``
    noise steps (T = 28 + train_suffix = 56 by default); testing uses total lengths
    ``factor * T`` (noise suffix ``factor * T - 28``), so the digit must be remembered
    across 1x..8x the training's noise. Noise after the digit (not before it) keeps the
    digit at the same steps in training and test, so the per-step statistics of steps
    < T_max describe the same thing at test time, and every step >= T_max is noise, like
    the last training steps whose statistics it reuses.

    Evaluated on the same validation digits and noise for every mode:
    ``population`` (per-step population statistics re-estimated over training batches,
    T_max rule beyond), ``batch`` (each test batch of ``eval_batch`` sequences normalized
    with its own per-step statistics), ``batch_small`` (the same with batches of
    ``small_batch``) for the BN-LSTM; and the plain ``lstm`` (no statistics) as reference.

    Returns ``lengths`` (L,), ``T_train``, ``accuracy[mode]`` (L,), ``val_curve``.
    """
    from ..tasks.mnist import data as data_mod
    t0 = time.perf_counter()
    steps = steps or (80 if quick else 800)
    hidden = hidden or (32 if quick else 100)
    val_limit = val_limit if val_limit is not None else (500 if quick else 2000)
    reestimate_batches = reestimate_batches or (10 if quick else 100)
    data = _load(data, data_dir)
    T_train = 28 + int(train_suffix)
    lengths = [int(round(f * T_train)) for f in factors]
    Exp = _suffix_experiment_class()
    acc: Dict[str, List[float]] = {}
    curves = {}
    for m in models:
        cfg = _config(quick, task="row", model=m, steps=steps, seed=seed, hidden=hidden,
                      eval_every=max(steps // 10, 1), val_limit=val_limit, **config)
        exp = Exp(cfg, data, int(train_suffix), noise_std)
        exp, trainer, c = _train(cfg, data, experiment=exp)
        curves[m] = {"val_step": c["val_step"], "val_acc": c["val_acc"]}
        model = exp.model
        if m != "lstm":
            tb = data_mod.Batches(*exp.splits["train"], task="row", batch_size=cfg.batch_size,
                                  seed=seed + 1, shuffle=True)
            sb = _SuffixBatches(tb, int(train_suffix), noise_std, seed=seed + 2)
            it = iter(sb)
            reestimate_stats(model, [next(it)[0] for _ in range(reestimate_batches)])
        vimgs, vlabels = exp.splits["val"]
        vimgs, vlabels = vimgs[:val_limit], vlabels[:val_limit]

        def batches(L, bs):
            vb = data_mod.Batches(vimgs, vlabels, task="row", batch_size=bs, shuffle=False)
            return _SuffixBatches(vb, L - 28, noise_std, seed=4242, fixed=True)

        if m == "lstm":
            acc["lstm"] = [_accuracy(model, batches(L, eval_batch)) for L in lengths]
        else:
            key = "" if m == "bnlstm" else m + "_"
            acc[key + "population"] = [_accuracy(model, batches(L, eval_batch)) for L in lengths]
            acc[key + "batch"] = [_accuracy(model, batches(L, eval_batch), batch_stats=True)
                                  for L in lengths]
            if small_batch:
                acc[key + "batch_small"] = [_accuracy(model, batches(L, small_batch), batch_stats=True)
                                            for L in lengths]
    out = {"lengths": np.asarray(lengths), "factors": np.asarray(factors, dtype=float),
           "T_train": T_train, "train_suffix": int(train_suffix), "noise_std": noise_std,
           "accuracy": {k: np.asarray(v) for k, v in acc.items()}, "val_curve": curves,
           "n_val": int(min(val_limit, len(data.train_labels)))}
    out.update(_meta("distractor", quick, t0, data, train_suffix=train_suffix, factors=list(factors),
                     models=list(models), steps=steps, seed=seed, hidden=hidden,
                     noise_std=noise_std, val_limit=val_limit, eval_batch=eval_batch,
                     small_batch=small_batch, reestimate_batches=reestimate_batches, **config))
    return out


