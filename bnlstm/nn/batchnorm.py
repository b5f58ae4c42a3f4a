"""Batch normalization with statistics kept for every time step (the paper's Sec. 3)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .options import STATS, check_choice as _check_choice

__all__ = ["SequenceBatchNorm"]


class SequenceBatchNorm(nn.Module):
    r"""Batch normalization with statistics kept separately for each time step.

    In training mode step ``t`` is normalized with the mean and (biased) variance
    of its minibatch; in evaluation mode with the population statistics of step
    ``min(t, t_max - 1)``, where ``t_max`` (at most ``max_length``) is the length of the
    longest sequence training has seen (see :attr:`t_max`). ``gamma`` and ``beta`` are
    shared over time.

    Population statistics are updated, in training mode only, as in
    :class:`torch.nn.BatchNorm1d`::

        running = (1 - momentum) * running + momentum * batch_stat

    with the unbiased batch variance; ``momentum=None`` makes it a cumulative
    average (used by :func:`reestimate_stats`). With per-step statistics, training
    steps at or beyond ``max_length`` use batch statistics and update nothing; with
    shared statistics every step updates the one row.

    Args:
        num_features: F, the size of the normalized vectors.
        max_length: T_max, the number of per-step statistics kept.
        stats: ``"per_step"`` (the paper) or ``"shared"``: one set of population
            statistics for all steps, updated at every step, which is what a single
            ``nn.BatchNorm1d`` reused at every step gives (the mistake the paper
            warns about). Training normalizes with batch statistics either way.
        gamma_init: initial value of the scale gamma (paper: 0.1).
        learn_beta: if False, beta is fixed at 0 (no parameter).
        momentum: see the update rule above.
        eps: added to the variance for numerical stability.

    Shape:
        - Input: ``(B, F)`` and the step index ``t``.
        - Output: ``(B, F)``.

    Buffers: ``running_mean``, ``running_var`` of shape ``(max_length, F)`` (or
    ``(1, F)`` when shared) and ``num_batches_tracked`` of shape ``(rows,)``:
    the number of updates each row has had.
    """

    def __init__(self, num_features: int, max_length: int = 784, stats: str = "per_step",
                 gamma_init: float = 0.1, learn_beta: bool = False,
                 momentum: Optional[float] = 0.1, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        _check_choice("stats", stats, STATS)
        if int(max_length) < 1:
            raise ValueError(f"max_length must be >= 1; got {max_length!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None; got {momentum!r}")
        factory = {"device": device, "dtype": dtype}
        self._t_max: Optional[int] = None
        self.num_features = int(num_features)
        self.max_length = int(max_length)
        self.stats = stats
        self.gamma_init = float(gamma_init)
        self.momentum = momentum
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(self.num_features, **factory))
        if learn_beta:
            self.bias = nn.Parameter(torch.empty(self.num_features, **factory))
        else:
            self.register_parameter("bias", None)
        rows = self.max_length if stats == "per_step" else 1
        self.register_buffer("running_mean", torch.zeros(rows, self.num_features, **factory))
        self.register_buffer("running_var", torch.ones(rows, self.num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.zeros(rows, dtype=torch.long, device=device))
        self.reset_parameters()

    @property
    def rows(self) -> int:
        return self.running_mean.shape[0]

    def reset_running_stats(self) -> None:
        self._t_max = None
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.weight.fill_(self.gamma_init)
            if self.bias is not None:
                self.bias.zero_()

    def train(self, mode: bool = True):
        self._t_max = None              # the statistics may change: recompute T_max when needed
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._t_max = None
        return super()._load_from_state_dict(*args, **kwargs)

    @property
    def t_max(self) -> int:
        """T_max: the number of leading steps whose population statistics training has updated.

        Evaluation steps ``t >= t_max`` use row ``t_max - 1`` (the paper's rule: steps beyond
        the longest training sequence reuse its last step's statistics), so rows that training
        never reached are never used. With nothing tracked yet, all ``max_length`` rows count.
        """
        if self._t_max is None:
            tracked = torch.nonzero(self.num_batches_tracked > 0)
            self._t_max = int(tracked.max()) + 1 if len(tracked) else self.rows
        return self._t_max

    def row(self, t: int) -> int:
        """The row of the population statistics that step ``t`` uses (updates, in training)."""
        if self.stats == "shared":
            return 0
        return min(t, (self.max_length if self.training else self.t_max) - 1)

    def _factor(self, row: int) -> float:
        # The weight of the new batch statistic in the running average.
        self.num_batches_tracked[row] += 1
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked[row])
        return self.momentum

    def forward(self, x: Tensor, t: int) -> Tensor:
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("batch normalization in training mode needs a batch of at least 2 "
                                 f"sequences; got {x.shape[0]}")
            if t < self.max_length or self.stats == "shared":
                r = self.row(t)
                return F.batch_norm(x, self.running_mean[r], self.running_var[r], self.weight,
                                    self.bias, True, self._factor(r), self.eps)
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        r = self.row(t)
        return F.batch_norm(x, self.running_mean[r], self.running_var[r], self.weight, self.bias,
                            False, 0.0, self.eps)

    def extra_repr(self) -> str:
        s = f"{self.num_features}, max_length={self.max_length}, stats={self.stats!r}"
        s += f", gamma_init={self.gamma_init}, learn_beta={self.bias is not None}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum}"
        if self.eps != 1e-5:
            s += f", eps={self.eps}"
        return s
