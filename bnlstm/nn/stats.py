"""One way to keep, reset, restore and re-estimate the population statistics of every
:class:`SequenceBatchNorm` in a module.

- :func:`batch_statistics`: evaluate with each batch's own statistics (the paper's
  "batch statistics" at test time); the population statistics are kept and restored.
- :func:`reestimate_stats`: reset them and average them again over some batches, in
  training mode without gradients (``momentum=None``: the plain average, as the authors
  did before testing; a number: the running average training would have kept).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .batchnorm import SequenceBatchNorm
from .rnn import RecurrentBase

__all__ = ["batch_statistics", "reestimate_stats", "saved_statistics"]


def _norms(module: nn.Module) -> List[SequenceBatchNorm]:
    return [m for m in module.modules() if isinstance(m, SequenceBatchNorm)]


@contextmanager
def _training_mode(module: nn.Module, h0_noise: bool = True) -> Iterator[nn.Module]:
    """``module`` in training mode (without its h_0 noise unless ``h0_noise``) inside the
    block; its mode and noise as they were after it."""
    noise = [(m, m.h0_noise) for m in module.modules() if isinstance(m, RecurrentBase)]
    was_training = module.training
    if not h0_noise:
        for m, _ in noise:
            m.h0_noise = 0.0
    module.train()
    try:
        yield module
    finally:
        for m, s in noise:
            m.h0_noise = s
        module.train(was_training)       # also drops each norm's cached T_max


@contextmanager
def saved_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the population statistics (running averages and counts) may
    change; after it they are as they were."""
    kept: List[Tuple[SequenceBatchNorm, List[torch.Tensor]]] = [
        (m, [b.detach().clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
        for m in _norms(module)]
    try:
        yield module
    finally:
        with torch.no_grad():
            for m, (mean, var, tracked) in kept:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
                m._t_max = None              # T_max follows the restored counts


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``module`` normalizes every batch with its own per-step statistics
    (training mode, without h_0 noise): the paper's "batch statistics" at test time. After
    it, the population statistics (running averages, counts) and the module's mode are as
    they were: nothing evaluated this way changes the model."""
    with saved_statistics(module), _training_mode(module, h0_noise=False):
        yield module


@torch.no_grad()
def reestimate_stats(module: nn.Module, batches: Iterable, forward=None,
                     h0_noise: bool = True, momentum: Optional[float] = None) -> int:
    """Re-estimate every :class:`SequenceBatchNorm`'s population statistics over ``batches``.

    Resets the running statistics, then runs ``module`` (or ``forward(batch)``) in
    training mode without gradients over every batch. ``momentum=None`` (the default)
    makes each statistic the plain average of its minibatch estimates (as the authors
    did before testing); a number instead gives the running average with that momentum
    (what a ``BatchNorm1d`` reused at every step holds after training on ``batches``).
    Restores the module's mode and momenta. Returns the number of batches used.

    ``h0_noise``: keep each model's h_0 noise while estimating (the default), so that the
    statistics are those of the computation the weights were trained in, as the running
    averages are and as in the authors' code (their population statistics come from the
    graph with the noise). ``False`` turns it off, which on pixel-order MNIST leaves the
    first, black steps with almost no batch variance and cost 2 to 25 points of test
    accuracy in our runs (``docs/results.md``).
    """
    norms = _norms(module)
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = momentum
    n = 0
    try:
        with _training_mode(module, h0_noise=h0_noise):
            for batch in batches:
                if forward is not None:
                    forward(batch)
                else:
                    module(batch)
                n += 1
    finally:
        for m, mom in saved:
            m.momentum = mom
    return n
