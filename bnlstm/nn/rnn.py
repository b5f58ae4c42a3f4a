"""The recurrent layers: :class:`BNLSTM` (the paper's BN-LSTM, a drop-in for ``nn.LSTM``)
and :class:`BNTanhRNN` (the tanh RNN of Figure 1a), over one base, as ``RNNBase`` serves
``LSTM`` and ``GRU`` in ``torch/nn/modules/rnn.py``.

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
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused as _fused
from .batchnorm import SequenceBatchNorm
from .options import INITS, NORMS, STATS, TANH_NORMS, check_choice as _check_choice
from .trace import Trace

__all__ = ["RecurrentBase", "BNLSTM", "BNTanhRNN", "LayerParams", "set_noise_generator"]

# A module's own generator for its h_0 noise (set_noise_generator); kept outside the module so
# that copying or pickling a model never has to copy a generator (a copy uses the global one).
_NOISE_GENERATORS: "weakref.WeakKeyDictionary[nn.Module, torch.Generator]" = weakref.WeakKeyDictionary()


def set_noise_generator(module: nn.Module, generator: Optional[torch.Generator]) -> None:
    """Draw the h_0 noise of every BNLSTM / BNTanhRNN in ``module`` from ``generator``
    (``None``: torch's global generator, the default). Runs that train side by side in
    threads of one process then draw their noise independently and repeat exactly."""
    for m in module.modules():
        if isinstance(m, RecurrentBase):
            if generator is None:
                _NOISE_GENERATORS.pop(m, None)
            else:
                _NOISE_GENERATORS[m] = generator


class LayerParams(NamedTuple):
    """One BNLSTM layer's tensors and norm modules (``None`` where the layer has none)."""
    w_ih: Tensor                              # (4H, I_k)
    w_hh: Tensor                              # (4H, H)
    b_ih: Optional[Tensor]                    # (4H,)
    b_hh: Optional[Tensor]                    # (4H,)
    bn_ih: Optional[SequenceBatchNorm]        # BN(W_x x_t), norm "input" and "full"
    bn_hh: Optional[SequenceBatchNorm]        # BN(W_h h_{t-1}), norm "full"
    bn_c: Optional[SequenceBatchNorm]         # BN(c_t), norm "full"


class RecurrentBase(nn.Module):
    """What :class:`BNLSTM` and :class:`BNTanhRNN` share: the argument checks, the norm
    modules (:meth:`norm_layers`, :meth:`reset_running_stats`), the h_0 noise and the
    ``extra_repr`` that names the arguments not at their default (``_REPR_DEFAULTS``).

    ``reset_parameters()`` (each subclass: the weights, then every norm's gamma/beta and
    statistics) is kept apart from ``reset_running_stats()`` (the statistics only), as in
    ``torch.nn.modules.batchnorm``.
    """

    _REPR_DEFAULTS: dict = {}
    h0_noise: float = 0.0

    @staticmethod
    def _check_common(*, init: str, stats: str, gamma_init: float, h0_noise: float,
                      **sizes: int) -> None:
        _check_choice("init", init, INITS)
        _check_choice("stats", stats, STATS)
        for name, v in sizes.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not (gamma_init > 0 and math.isfinite(gamma_init)):
            raise ValueError(f"gamma_init must be a positive number; got {gamma_init!r}")
        if not h0_noise >= 0:
            raise ValueError(f"h0_noise must be >= 0; got {h0_noise!r}")

    def norm_layers(self) -> List[SequenceBatchNorm]:
        """Every :class:`SequenceBatchNorm` of this layer."""
        return [m for m in self.modules() if isinstance(m, SequenceBatchNorm)]

    def reset_running_stats(self) -> None:
        for m in self.norm_layers():
            m.reset_running_stats()

    def _noisy_h0(self, h: Tensor) -> Tensor:
        """``h + h0_noise * N(0, 1)``, from the module's generator if it has one."""
        gen = _NOISE_GENERATORS.get(self)
        if gen is None:
            noise = torch.randn_like(h)
        else:
            noise = torch.randn(h.shape, generator=gen, dtype=h.dtype, device=h.device)
        return h + self.h0_noise * noise

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, d in self._REPR_DEFAULTS.items():
            v = getattr(self, name)
            if v != d:
                s += f", {name}={v!r}"
        return s


class BNLSTM(RecurrentBase):
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
        learn_h0: if True, ``h_0`` and ``c_0`` are parameters (``h0``, ``c0``: one
            ``(num_layers, H)`` each, zeros at init, shared by every sequence of a batch),
            used when ``hx`` is not given, as in the authors' code; the noise is added to
            them. If False (``nn.LSTM``'s way), an omitted ``hx`` means zeros.

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
                 learn_h0: bool = False, device=None, dtype=None):
        super().__init__()
        _check_choice("norm", norm, NORMS)
        self._check_common(init=init, stats=stats, gamma_init=gamma_init, h0_noise=h0_noise,
                           input_size=input_size, hidden_size=hidden_size,
                           num_layers=num_layers, max_length=max_length)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.norm, self.stats, self.gamma_init = norm, stats, float(gamma_init)
        self.max_length, self.momentum, self.eps = max_length, momentum, eps
        self.init, self.forget_bias, self.h0_noise = init, forget_bias, float(h0_noise)
        self.learn_h0 = bool(learn_h0)
        H = hidden_size
        if self.learn_h0:
            self.h0 = nn.Parameter(torch.zeros(num_layers, H, **factory))   # (L, H)
            self.c0 = nn.Parameter(torch.zeros(num_layers, H, **factory))   # (L, H)
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
    def layer(self, k: int) -> LayerParams:
        """Layer ``k``'s weights and norm modules (``None`` where absent), by name: what the
        fast path (:mod:`bnlstm.nn.fused`) and the reference loop both compute with."""
        if not 0 <= k < self.num_layers:
            raise IndexError(f"BNLSTM has {self.num_layers} layer(s); got layer {k}")
        g = lambda name: getattr(self, name, None)  # noqa: E731
        return LayerParams(g(f"weight_ih_l{k}"), g(f"weight_hh_l{k}"), g(f"bias_ih_l{k}"),
                           g(f"bias_hh_l{k}"), g(f"bn_ih_l{k}"), g(f"bn_hh_l{k}"), g(f"bn_c_l{k}"))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        H = self.hidden_size
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh, *bns = self.layer(k)
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
        if self.learn_h0:
            self.h0.zero_()
            self.c0.zero_()

    def flatten_parameters(self) -> None:  # nn.LSTM compatibility; nothing to do
        pass

    _REPR_DEFAULTS = dict(
        num_layers=1, bias=True, batch_first=False, dropout=0.0, norm="full",
        stats="per_step", gamma_init=0.1, max_length=784, momentum=0.1, eps=1e-5,
        init="paper", forget_bias=1.0, h0_noise=0.0, learn_h0=False)

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
        if hx is None and self.learn_h0:
            h0 = self.h0[:, None, :].expand(L, B, H).contiguous()         # (L, B, H)
            c0 = self.c0[:, None, :].expand(L, B, H).contiguous()
        elif hx is None:
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
            h0 = self._noisy_h0(h0)

        # nothing needs the per-step path with norm="none": nn.LSTM's own kernel
        res = (_fused.lstm_none(self, x, h0, c0)
               if trace is None and self.norm == "none" and _fused.enabled() else None)
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
        if trace is None and _fused.enabled() and t0 == 0:
            res = _fused.layer_forward(self, k, x, h, c)
            if res is not None:
                return res
        return self._layer_forward_reference(k, x, h, c, trace, t0)

    def _layer_forward_reference(self, k: int, x: Tensor, h: Tensor, c: Tensor,
                                 trace: Optional[Trace], t0: int = 0):
        """The straightforward per-step loop: the definition the fast paths are tested against."""
        w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = self.layer(k)
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




class BNTanhRNN(RecurrentBase):
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
        self._check_common(init=init, stats=stats, gamma_init=gamma_init, h0_noise=h0_noise,
                           input_size=input_size, hidden_size=hidden_size, max_length=max_length)
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

    _REPR_DEFAULTS = dict(
        batch_first=False, norm="sum", init="paper", stats="per_step", gamma_init=0.1,
        max_length=784, momentum=0.1, eps=1e-5, h0_noise=0.0)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None, *, trace: Optional[Trace] = None):
        x = input.transpose(0, 1) if self.batch_first else input       # (T, B, I)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"BNTanhRNN: expected input of shape (T, B, {self.input_size}) "
                             f"(batch first: (B, T, {self.input_size})); got {tuple(input.shape)}")
        h = x.new_zeros(x.shape[1], self.hidden_size) if hx is None else hx[0]
        if self.training and self.h0_noise > 0:
            h = self._noisy_h0(h)
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
