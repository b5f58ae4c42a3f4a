"""The BN-LSTM of Cooijmans et al., "Recurrent Batch Normalization" (ICLR 2017).

    (f~, i~, o~, g~) = BN(W_h h_{t-1}; gamma_h, 0) + BN(W_x x_t; gamma_x, 0) + b
    c_t = sigmoid(f~) * c_{t-1} + sigmoid(i~) * tanh(g~)
    h_t = sigmoid(o~) * tanh(BN(c_t; gamma_c, beta_c))

with statistics kept separately for every time step (population statistics in
evaluation mode, steps beyond ``max_length`` reusing the last step's). See
``docs/DESIGN.md`` and the paper digest for the choices made here.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused as _fused

__all__ = ["BNLSTM", "BNTanhRNN", "SequenceBatchNorm", "Trace", "reestimate_stats", "NORMS", "STATS", "INITS",
           "TANH_NORMS"]

NORMS = ("none", "input", "full")
STATS = ("per_step", "shared")
INITS = ("paper", "authors", "orthogonal", "pytorch")


# A module's own generator for its h_0 noise (set_noise_generator); kept outside the module so
# that copying or pickling a model never has to copy a generator (a copy uses the global one).
_NOISE_GENERATORS: "weakref.WeakKeyDictionary[nn.Module, torch.Generator]" = weakref.WeakKeyDictionary()


def set_noise_generator(module: nn.Module, generator: Optional[torch.Generator]) -> None:
    """Draw the h_0 noise of every BNLSTM / BNTanhRNN in ``module`` from ``generator``
    (``None``: torch's global generator, the default). Runs that train side by side in
    threads of one process then draw their noise independently and repeat exactly."""
    for m in module.modules():
        if hasattr(m, "h0_noise"):
            if generator is None:
                _NOISE_GENERATORS.pop(m, None)
            else:
                _NOISE_GENERATORS[m] = generator


def h0_noise_like(module: nn.Module, h: Tensor) -> Tensor:
    """Standard Gaussian noise shaped like ``h``, from the module's generator if it has one."""
    gen = _NOISE_GENERATORS.get(module)
    if gen is None:
        return torch.randn_like(h)
    return torch.randn(h.shape, generator=gen, dtype=h.dtype, device=h.device)


def _sizes_and_changed(module: nn.Module, defaults: dict) -> str:
    """``extra_repr`` of a recurrent layer: its sizes, then the arguments not at their default."""
    s = f"{module.input_size}, {module.hidden_size}"
    for name, d in defaults.items():
        v = getattr(module, name)
        if v != d:
            s += f", {name}={v!r}"
    return s


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


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


class Trace:
    """Records what happens inside a :class:`BNLSTM` forward pass, for probes.

    Pass ``trace=Trace()`` to ``BNLSTM.forward``; the model then takes its
    straightforward per-step path and fills ``trace.layers[k]`` (one dict per layer):

    - ``"wx_mean"``, ``"wx_var"``, ``"wh_mean"``, ``"wh_var"``: ``(T, 4H)`` batch mean
      and biased variance of ``W_x x_t`` and ``W_h h_{t-1}`` before normalization;
      ``"c_mean"``, ``"c_var"``: ``(T, H)`` the same for ``c_t``. Recorded for every
      ``norm``, so a plain LSTM can be compared.
    - ``"g_pre"``: ``(T, B, H)`` the input of the g gate's tanh;
      ``"c_out_pre"``: ``(T, B, H)`` the input of the output tanh (``BN(c_t)`` or ``c_t``).
    - ``"h"``: the ``T`` hidden states ``h_t`` ``(B, H)``, kept in the autograd graph
      with ``retain_grad()``, so that after ``backward`` :meth:`grad_norms` gives
      ``||dLoss/dh_t||`` for every ``t`` (the paper's Figure 1a).

    Everything but ``"h"`` is detached. ``keep_tanh_inputs=False`` skips the
    ``(T, B, H)`` tensors.
    """

    def __init__(self, keep_tanh_inputs: bool = True, keep_h: bool = True):
        self.keep_tanh_inputs = keep_tanh_inputs
        self.keep_h = keep_h
        self.layers: List[dict] = []

    def _new_layer(self) -> dict:
        d = {k: [] for k in ("wx_mean", "wx_var", "wh_mean", "wh_var", "c_mean", "c_var",
                             "g_pre", "c_out_pre", "h")}
        self.layers.append(d)
        return d

    @staticmethod
    def _record_moments(rec: dict, **terms: Tensor) -> None:
        """Append the batch mean and biased variance of each term (detached)."""
        for name, v in terms.items():
            m, var = _batch_moments(v.detach())
            rec[name + "_mean"].append(m)
            rec[name + "_var"].append(var)

    def _record_step(self, rec: dict, h: Tensor, **tanh_inputs: Tensor) -> None:
        """Append one step's tanh inputs (detached) and h_t (kept in the graph)."""
        if self.keep_tanh_inputs:
            for name, v in tanh_inputs.items():
                rec[name].append(v.detach())
        if self.keep_h and h.requires_grad:
            h.retain_grad()
            rec["h"].append(h)

    @staticmethod
    def _finish(d: dict) -> None:
        for k, v in d.items():
            if k != "h" and isinstance(v, list) and v:
                d[k] = torch.stack(v)

    def grad_norms(self, layer: int = -1, per_example: bool = False) -> Tensor:
        """``(T,)`` norms of ``dLoss/dh_t``; call after backward.

        By default the Frobenius norm over the whole batch ``(B, H)``; with
        ``per_example=True`` the mean over the batch of each example's norm ``||dLoss/dh_t[b]||``
        (what the authors plotted for Figure 1a: ``plot_rnn_gradnorm.py``). A step the
        loss does not depend on has norm 0.
        """
        hs = self.layers[layer]["h"]
        if not hs:
            raise RuntimeError("this trace kept no hidden states (keep_h=False)")
        out = []
        for h in hs:
            if h.grad is None:
                out.append(torch.zeros((), dtype=h.dtype, device=h.device))
            elif per_example:
                out.append(h.grad.detach().norm(dim=-1).mean())
            else:
                out.append(h.grad.detach().norm())
        return torch.stack(out)


def _batch_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    m = x.mean(0)
    return m, (x - m).pow(2).mean(0)


class BNLSTM(nn.Module):
    r"""A multi-layer LSTM with recurrent batch normalization; a drop-in for :class:`torch.nn.LSTM`.

    For each layer and each step ``t``::

        gates = BN(W_ih x_t; gamma_x) + BN(W_hh h_{t-1}; gamma_h) + b_ih + b_hh
        i, f, g, o = gates.chunk(4)          # nn.LSTM's gate order
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(BN(c_t; gamma_c, beta_c))

    ``norm="none"`` drops every BN (the plain LSTM: it computes exactly what
    ``nn.LSTM`` computes), ``norm="input"`` keeps only the BN of ``W_ih x_t`` (the
    earlier "vertical" normalization), ``norm="full"`` is the paper's BN-LSTM.
    Parameters are named and laid out as in ``nn.LSTM``, so its state dict loads
    here (``strict=False``, or with the BN entries present).

    Args:
        input_size: number of features of ``x``.
        hidden_size: H.
        num_layers: stacked layers.
        bias: if False, no ``b_ih``/``b_hh``.
        batch_first: if True, ``x`` and ``output`` are ``(B, T, *)``.
        dropout: dropout on the outputs of every layer but the last, as ``nn.LSTM``.
        norm: ``"none"`` | ``"input"`` | ``"full"``.
        stats: ``"per_step"`` (the paper) | ``"shared"`` (one set of population
            statistics for all steps; see :class:`SequenceBatchNorm`).
        gamma_init: initial gamma of every BN (paper: 0.1; 1.0 saturates tanh).
        max_length: T_max, the steps with their own population statistics; later
            steps use the statistics of step ``max_length - 1``.
        momentum: of the running statistics, as ``nn.BatchNorm1d``.
        eps: of every BN.
        init: ``"paper"``: orthogonal ``W_ih`` and identity ``W_hh`` blocks (the paper
            on MNIST); ``"authors"``: orthogonal everywhere but an identity g block in
            ``W_hh`` (the authors' code); ``"orthogonal"``: every block orthogonal (the
            paper on language modelling); ``"pytorch"``: ``nn.LSTM``'s uniform init.
            Biases start at 0, except for ``"pytorch"``.
        forget_bias: the forget gate's total bias ``b_ih + b_hh`` at init (the authors'
            code: 1); None keeps what ``init`` made.
        h0_noise: standard deviation of Gaussian noise added to ``h_0`` in training
            mode (the paper: 0.1 on pixel MNIST, against zero batch variance).

    Inputs: ``input, (h_0, c_0)`` as ``nn.LSTM``; ``trace`` (keyword): a :class:`Trace`.

    Shape:
        - input: ``(T, B, input_size)``, ``(B, T, input_size)`` with ``batch_first``,
          or ``(T, input_size)`` unbatched.
        - h_0, c_0: ``(num_layers, B, H)`` (``(num_layers, H)`` unbatched); zeros if omitted.
        - output: ``(T, B, H)`` (``(B, T, H)`` with ``batch_first``): ``h_t`` of the last layer.
        - h_n, c_n: ``(num_layers, B, H)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, norm: str = "full",
                 stats: str = "per_step", gamma_init: float = 0.1, max_length: int = 784,
                 momentum: Optional[float] = 0.1, eps: float = 1e-5, init: str = "paper",
                 forget_bias: Optional[float] = 1.0, h0_noise: float = 0.0,
                 device=None, dtype=None):
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("stats", stats, STATS)
        _check_choice("init", init, INITS)
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("max_length", max_length)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        if not (gamma_init > 0 and math.isfinite(gamma_init)):
            raise ValueError(f"gamma_init must be a positive number; got {gamma_init!r}")
        if not h0_noise >= 0:
            raise ValueError(f"h0_noise must be >= 0; got {h0_noise!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.norm, self.stats, self.gamma_init = norm, stats, float(gamma_init)
        self.max_length, self.momentum, self.eps = max_length, momentum, eps
        self.init, self.forget_bias, self.h0_noise = init, forget_bias, float(h0_noise)
        H = hidden_size
        for k in range(num_layers):
            n_in = input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * H, n_in, **factory)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * H, H, **factory)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * H, **factory)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * H, **factory)))
            bn = dict(max_length=max_length, stats=stats, gamma_init=gamma_init,
                      momentum=momentum, eps=eps, **factory)
            if norm in ("input", "full"):
                setattr(self, f"bn_ih_l{k}", SequenceBatchNorm(4 * H, **bn))
            if norm == "full":
                setattr(self, f"bn_hh_l{k}", SequenceBatchNorm(4 * H, **bn))
                setattr(self, f"bn_c_l{k}", SequenceBatchNorm(H, learn_beta=True, **bn))
        self.reset_parameters()

    # ----------------------------------------------------------------- set-up
    def _layer(self, k: int):
        g = lambda name: getattr(self, name, None)  # noqa: E731
        return (g(f"weight_ih_l{k}"), g(f"weight_hh_l{k}"), g(f"bias_ih_l{k}"), g(f"bias_hh_l{k}"),
                g(f"bn_ih_l{k}"), g(f"bn_hh_l{k}"), g(f"bn_c_l{k}"))

    def norm_layers(self) -> List[SequenceBatchNorm]:
        return [m for m in self.modules() if isinstance(m, SequenceBatchNorm)]

    def reset_running_stats(self) -> None:
        for m in self.norm_layers():
            m.reset_running_stats()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        H = self.hidden_size
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh, *bns = self._layer(k)
            if self.init == "pytorch":
                bound = 1.0 / math.sqrt(H)
                for p in (w_ih, w_hh, b_ih, b_hh):
                    if p is not None:
                        nn.init.uniform_(p, -bound, bound)
            else:
                for gate in range(4):
                    rows = slice(gate * H, (gate + 1) * H)
                    nn.init.orthogonal_(w_ih[rows])
                    identity = self.init == "paper" or (self.init == "authors" and gate == 2)
                    if identity:
                        w_hh[rows].copy_(torch.eye(H, dtype=w_hh.dtype, device=w_hh.device))
                    else:
                        nn.init.orthogonal_(w_hh[rows])
                for p in (b_ih, b_hh):
                    if p is not None:
                        p.zero_()
            if self.forget_bias is not None and b_ih is not None:
                b_ih[H:2 * H].fill_(self.forget_bias)
                b_hh[H:2 * H].zero_()
            for bn in bns:
                if bn is not None:
                    bn.reset_parameters()

    def flatten_parameters(self) -> None:  # nn.LSTM compatibility; nothing to do
        pass

    def extra_repr(self) -> str:
        return _sizes_and_changed(self, dict(
            num_layers=1, bias=True, batch_first=False, dropout=0.0, norm="full",
            stats="per_step", gamma_init=0.1, max_length=784, momentum=0.1, eps=1e-5,
            init="paper", forget_bias=1.0, h0_noise=0.0))

    # ---------------------------------------------------------------- forward
    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None, *,
                trace: Optional[Trace] = None, t0: int = 0):
        """``t0``: the time step of the input's first step (default 0): with ``hx`` from a
        previous call, a sequence goes on where it stopped and each step is normalized
        with its own step's statistics (generating text one character at a time)."""
        batched = input.dim() == 3
        if input.dim() not in (2, 3):
            raise ValueError(f"BNLSTM: expected input of 2 or 3 dimensions; got shape {tuple(input.shape)}")
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        # x: (T, B, I)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"BNLSTM: expected input_size {self.input_size}; got {x.shape[-1]}")
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        if hx is None:
            h0 = x.new_zeros(L, B, H)
            c0 = x.new_zeros(L, B, H)
        else:
            h0, c0 = hx
            if not batched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            if h0.shape != (L, B, H) or c0.shape != (L, B, H):
                raise ValueError(f"BNLSTM: expected hidden state of shape {(L, B, H)}; "
                                 f"got {tuple(h0.shape)} and {tuple(c0.shape)}")
        t0 = int(t0)
        if t0 < 0:
            raise ValueError(f"BNLSTM: t0 must be >= 0; got {t0}")
        if self.training and self.h0_noise > 0 and t0 == 0:
            h0 = h0 + self.h0_noise * h0_noise_like(self, h0)

        # nothing needs the per-step path with norm="none": nn.LSTM's own kernel
        res = (_fused.lstm_none(self, x, h0, c0)
               if trace is None and self.norm == "none" and _fused.ENABLED else None)
        if res is not None:
            output, (h_n, c_n) = res
        else:
            output, (h_n, c_n) = self._layers_forward(x, h0, c0, trace, t0)
        if batched and self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _layers_forward(self, x: Tensor, h0: Tensor, c0: Tensor, trace: Optional[Trace],
                        t0: int = 0):
        """Every layer, with dropout between them: x (T, B, I) -> (T, B, H), ((L, B, H), (L, B, H))."""
        h_n, c_n = [], []
        layer_in = x
        for k in range(self.num_layers):
            out, (h, c) = self._layer_forward(k, layer_in, h0[k], c0[k], trace, t0)
            h_n.append(h)
            c_n.append(c)
            layer_in = out
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        return layer_in, (torch.stack(h_n), torch.stack(c_n))

    def _layer_forward(self, k: int, x: Tensor, h: Tensor, c: Tensor, trace: Optional[Trace],
                       t0: int = 0):
        """One layer over the whole sequence: x (T, B, I_k) -> output (T, B, H), (h_T, c_T)."""
        if trace is None and _fused.ENABLED and t0 == 0:
            res = _fused.layer_forward(self, k, x, h, c)
            if res is not None:
                return res
        return self._layer_forward_reference(k, x, h, c, trace, t0)

    def _layer_forward_reference(self, k: int, x: Tensor, h: Tensor, c: Tensor,
                                 trace: Optional[Trace], t0: int = 0):
        """The straightforward per-step loop: the definition the fast paths are tested against."""
        w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = self._layer(k)
        rec = trace._new_layer() if trace is not None else None
        outputs = []
        for t, x_t in enumerate(x.unbind(0), start=t0):
            wx = x_t @ w_ih.t()                              # (B, 4H)
            wh = h @ w_hh.t()                                # (B, 4H)
            if rec is not None:
                Trace._record_moments(rec, wx=wx, wh=wh)
            if bn_ih is not None:
                wx = bn_ih(wx, t)
            if bn_hh is not None:
                wh = bn_hh(wh, t)
            gates = wx + wh
            if b_ih is not None:
                gates = gates + b_ih + b_hh
            i, f, g, o = gates.chunk(4, 1)                    # each (B, H)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = bn_c(c, t) if bn_c is not None else c
            h = torch.sigmoid(o) * torch.tanh(c_out)
            if rec is not None:
                Trace._record_moments(rec, c=c)
                trace._record_step(rec, h, g_pre=g, c_out_pre=c_out)
            outputs.append(h)
        if rec is not None:
            Trace._finish(rec)
        return torch.stack(outputs), (h, c)


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``module`` normalizes every batch with its own per-step statistics
    (training mode, without h_0 noise): the paper's "batch statistics" at test time. After
    it, the population statistics (running averages, counts) and the module's mode are as
    they were: nothing evaluated this way changes the model."""
    norms = [m for m in module.modules() if isinstance(m, SequenceBatchNorm)]
    lstms = [m for m in module.modules() if isinstance(m, (BNLSTM, BNTanhRNN))]
    kept = [(m, [b.detach().clone() for b in (m.running_mean, m.running_var,
                                              m.num_batches_tracked)]) for m in norms]
    noise = [(m, m.h0_noise) for m in lstms]
    was_training = module.training
    for m in lstms:
        m.h0_noise = 0.0
    module.train()
    try:
        yield module
    finally:
        with torch.no_grad():
            for m, (mean, var, tracked) in kept:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        for m, h0 in noise:
            m.h0_noise = h0
        module.train(was_training)       # also drops each norm's cached T_max


@torch.no_grad()
def reestimate_stats(module: nn.Module, batches: Iterable, forward=None,
                     h0_noise: bool = True) -> int:
    """Re-estimate every :class:`SequenceBatchNorm`'s population statistics over ``batches``.

    Resets the running statistics, then runs ``module`` (or ``forward(batch)``) in
    training mode without gradients over every batch, with ``momentum=None`` so that
    each statistic becomes the plain average of its minibatch estimates (as the
    authors did before testing). Restores the module's mode and momenta. Returns the
    number of batches used.

    ``h0_noise``: keep each model's h_0 noise while estimating (the default), so that the
    statistics are those of the computation the weights were trained in, as the running
    averages are and as in the authors' code (their population statistics come from the
    graph with the noise). ``False`` turns it off, which on pixel-order MNIST leaves the
    first, black steps with almost no batch variance and cost 2 to 25 points of test
    accuracy in our runs (``docs/results.md``).
    """
    norms = [m for m in module.modules() if isinstance(m, SequenceBatchNorm)]
    lstms = [m for m in module.modules() if isinstance(m, (BNLSTM, BNTanhRNN))]
    saved = [(m, m.momentum) for m in norms]
    noise = [(m, m.h0_noise) for m in lstms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    if not h0_noise:
        for m in lstms:
            m.h0_noise = 0.0
    module.train()
    n = 0
    try:
        for batch in batches:
            if forward is not None:
                forward(batch)
            else:
                module(batch)
            n += 1
    finally:
        for m, mom in saved:
            m.momentum = mom
        for m, s in noise:
            m.h0_noise = s
        module.train(was_training)
    return n


TANH_NORMS = ("sum", "full", "input", "none")


class BNTanhRNN(nn.Module):
    r"""The batch-normalized tanh RNN of the paper's Figure 1a (an ``nn.RNN``-like layer).

    ``norm`` says what is normalized at each step ``t``::

        "sum":   h_t = tanh(BN(W_hh h_{t-1} + W_ih x_t; gamma) + b)          (the authors' Fig. 1a model)
        "full":  h_t = tanh(BN(W_hh h_{t-1}; gamma) + BN(W_ih x_t; gamma) + b)  (separate, as the BN-LSTM)
        "input": h_t = tanh(W_hh h_{t-1} + BN(W_ih x_t; gamma) + b)
        "none":  h_t = tanh(W_hh h_{t-1} + W_ih x_t + b)                      (a plain tanh RNN)

    with per-step (or shared) statistics as in :class:`BNLSTM`, beta fixed at 0 (the bias
    ``b`` plays its part). ``"sum"`` is what the authors' ``sequential_mnist.py`` builds for
    the figure (``construct_rnn``: one BN over ``dot(h, Wh) + xtilde``, gradients through
    the batch statistics, eps 1e-5).

    ``init`` sets the weights (``b = 0`` always):

    - ``"paper"`` (and ``"authors"``, the same for a tanh RNN): ``W_hh`` the identity,
      ``W_ih`` orthogonal, as the paper's Sec. 5.1 and the authors' code do on MNIST;
    - ``"orthogonal"``: both orthogonal;
    - ``"pytorch"``: ``nn.RNN``'s uniform(-1/sqrt(H), 1/sqrt(H)).

    Which one matters more than gamma's size suggests: with ``W_hh = I`` each unit iterates
    ``u <- tanh(gamma * standardize_over_batch(u + input))``; at ``gamma = 1`` the batch
    collapses onto two points near ``+-tanh(1)``, where the per-step gain is about
    ``tanh'(1) / tanh(1) = 0.55`` and the gradient vanishes through time (Figure 1a); an
    orthogonal ``W_hh`` keeps mixing units, the pre-activations stay Gaussian and the
    gradient grows going back instead (``docs/results.md``). One layer.

    Args:
        input_size, hidden_size: I and H.
        batch_first: input and output as ``(B, T, ...)``.
        norm, init: see above.
        stats, gamma_init, max_length, momentum, eps: as :class:`SequenceBatchNorm`.
        h0_noise: std of Gaussian noise added to ``h_0`` in training mode (the authors'
            ``--noise``; their default is none).

    Shape: ``input`` (T, B, I) (``(B, T, I)`` with ``batch_first``) -> ``output``
    (T, B, H) and ``h_n`` (1, B, H), as ``nn.RNN``. ``trace`` as :class:`BNLSTM`: the
    moments of ``W_ih x_t`` and ``W_hh h_{t-1}`` (before normalization), the tanh input as
    ``"g_pre"`` and every ``h_t`` for :meth:`Trace.grad_norms`; there is no cell.

    Parameters ``weight_ih_l0`` (H, I), ``weight_hh_l0`` (H, H), ``bias_l0`` (H,); norm
    modules ``bn_l0`` (``"sum"``), ``bn_ih_l0`` (``"full"``, ``"input"``), ``bn_hh_l0``
    (``"full"``).
    """

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = False,
                 norm: str = "sum", init: str = "paper", stats: str = "per_step",
                 gamma_init: float = 0.1, max_length: int = 784,
                 momentum: Optional[float] = 0.1, eps: float = 1e-5,
                 h0_noise: float = 0.0, device=None, dtype=None):
        super().__init__()
        _check_choice("norm", norm, TANH_NORMS)
        _check_choice("init", init, INITS)
        _check_choice("stats", stats, STATS)
        if not (gamma_init > 0 and math.isfinite(gamma_init)):
            raise ValueError(f"gamma_init must be a positive number; got {gamma_init!r}")
        if not h0_noise >= 0:
            raise ValueError(f"h0_noise must be >= 0; got {h0_noise!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, 1
        self.batch_first, self.norm, self.init = batch_first, norm, init
        self.stats, self.gamma_init, self.max_length = stats, float(gamma_init), max_length
        self.momentum, self.eps, self.h0_noise = momentum, eps, float(h0_noise)
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        self.bias_l0 = nn.Parameter(torch.empty(hidden_size, **factory))
        bn = dict(max_length=max_length, stats=stats, gamma_init=gamma_init, momentum=momentum,
                  eps=eps, **factory)
        if norm == "sum":
            self.bn_l0 = SequenceBatchNorm(hidden_size, **bn)
        if norm in ("input", "full"):
            self.bn_ih_l0 = SequenceBatchNorm(hidden_size, **bn)
        if norm == "full":
            self.bn_hh_l0 = SequenceBatchNorm(hidden_size, **bn)
        self.reset_parameters()

    def norm_layers(self) -> List[SequenceBatchNorm]:
        return [m for m in self.modules() if isinstance(m, SequenceBatchNorm)]

    def reset_running_stats(self) -> None:
        for m in self.norm_layers():
            m.reset_running_stats()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.init == "pytorch":
            bound = 1.0 / math.sqrt(self.hidden_size)
            for p in (self.weight_ih_l0, self.weight_hh_l0, self.bias_l0):
                nn.init.uniform_(p, -bound, bound)
        else:
            nn.init.orthogonal_(self.weight_ih_l0)
            if self.init in ("paper", "authors"):
                self.weight_hh_l0.copy_(torch.eye(self.hidden_size, dtype=self.weight_hh_l0.dtype,
                                                  device=self.weight_hh_l0.device))
            else:
                nn.init.orthogonal_(self.weight_hh_l0)
            self.bias_l0.zero_()
        for m in self.norm_layers():
            m.reset_parameters()

    def extra_repr(self) -> str:
        return _sizes_and_changed(self, dict(
            batch_first=False, norm="sum", init="paper", stats="per_step", gamma_init=0.1,
            max_length=784, momentum=0.1, eps=1e-5, h0_noise=0.0))

    def forward(self, input: Tensor, hx: Optional[Tensor] = None, *, trace: Optional[Trace] = None):
        x = input.transpose(0, 1) if self.batch_first else input       # (T, B, I)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"BNTanhRNN: expected input of shape (T, B, {self.input_size}) "
                             f"(batch first: (B, T, {self.input_size})); got {tuple(input.shape)}")
        h = x.new_zeros(x.shape[1], self.hidden_size) if hx is None else hx[0]
        if self.training and self.h0_noise > 0:
            h = h + self.h0_noise * h0_noise_like(self, h)
        bn_sum = getattr(self, "bn_l0", None)
        bn_ih, bn_hh = getattr(self, "bn_ih_l0", None), getattr(self, "bn_hh_l0", None)
        rec = trace._new_layer() if trace is not None else None
        wxs = x @ self.weight_ih_l0.t()                                # (T, B, H)
        outputs = []
        for t, wx in enumerate(wxs.unbind(0)):
            wh = h @ self.weight_hh_l0.t()                             # (B, H)
            if rec is not None:
                Trace._record_moments(rec, wx=wx, wh=wh)
            if bn_sum is not None:
                pre = bn_sum(wh + wx, t) + self.bias_l0
            else:
                pre = (bn_ih(wx, t) if bn_ih is not None else wx) + \
                      (bn_hh(wh, t) if bn_hh is not None else wh) + self.bias_l0
            h = torch.tanh(pre)
            if rec is not None:
                trace._record_step(rec, h, g_pre=pre)
            outputs.append(h)
        if rec is not None:
            Trace._finish(rec)
        out = torch.stack(outputs)
        return (out.transpose(0, 1) if self.batch_first else out), h.unsqueeze(0)
