"""Fast whole-sequence paths for :class:`bnlstm.nn.BNLSTM`, used by ``rnn.py``.

``BNLSTM._layer_forward_reference`` (``rnn.py``) is the definition; everything here computes the
same function (to rounding), with the same running-statistics updates, only faster:

- **Training** (``norm="input"`` or ``"full"``): one :class:`torch.autograd.Function`
  per layer and sequence. Autograd records nothing inside the loop; the forward keeps
  only what the hand-written reverse loop needs (activated gates, ``W_hh h_{t-1}``,
  ``c_t``, ``tanh(BN(c_t))``, the outputs and the per-step batch mean / inverse std of
  the two in-loop BNs). One sigmoid covers all four gates (``tanh(z) = 2 sigmoid(2z) -
  1``, the g rows scaled by 2 outside the Function) and one sigmoid backward all four
  gate gradients; the reverse loop uses PyTorch's fused kernels
  (``native_batch_norm_backward``, ``sigmoid_backward``, ``tanh_backward``) writing
  into preallocated buffers; ``dW_hh`` is one matmul per 64 steps; the running
  statistics are updated once, after the loop.
- **The input term** ``BN(W_x x_t)`` never exists as a ``(T, B, 4H)`` tensor when the
  input size is 1 (pixel MNIST): its per-step batch statistics follow from those of
  ``x`` (``mean(W x) = W mean(x)``, ``var(W x) = diag(W Cov(x) W^T)``), so it folds into
  a per-step weight ``W_s[t] = W^T * gamma_x / std_t`` and shift, applied inside the loop
  as one ``addcmul``. Those small ``(T, I, 4H)`` / ``(T, 4H)`` tensors are built with
  ordinary autograd ops, so their backward (through the statistics) is autograd's. For
  larger inputs the term is one batched ``baddbmm`` before the loop, with the same
  folded statistics and a hand-written backward (:class:`_InputBN`).
- **Evaluation**: every BN is a fixed per-step affine map; it is folded in, and the loop
  is a plain autograd loop of few ops.
- **Buffers** of the training Function are reused from step to step (CPU), see
  :class:`Workspace`: fresh ones cost page faults that were a quarter of a step at T=784.
- **Threads**: with 2+ torch threads the loops' thread mode is chosen by measurement
  (:class:`LoopTuner`, :data:`LOOP_THREADS`, :func:`loop_threads`).
- ``norm="none"`` (no trace) goes to ``torch._VF.lstm``, nn.LSTM's own kernel
  (see :func:`lstm_none`).
- No double backward: the Functions are ``once_differentiable`` (the reference path
  supports ``create_graph=True``).

``ENABLED`` (or the :func:`disabled` context manager) switches all of it off, so that
tests and benchmarks can compare against the reference loop; :data:`CALLS` counts the
calls each fast path answered, so that a test can say which path it measured.

The modules, one job each: ``functions.py`` (the training Functions), ``folding.py`` (BN
folded into affine maps; the evaluation loop), ``workspace.py`` (the buffer pool),
``threads.py`` (the loops' thread modes and their tuner). This file only dispatches.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import List

import torch
from torch import Tensor

from .folding import layer_eval
from .functions import layer_train
from .threads import LOOP_MODES, LoopTuner
from .workspace import Workspace, release_workspaces, workspace

__all__ = ["ENABLED", "LOOP_THREADS", "LOOP_MODES", "CALLS", "disabled", "enabled", "layer_forward",
           "lstm_none", "Workspace", "workspace", "release_workspaces", "LoopTuner"]

#: Module-level switch: False makes BNLSTM take the reference per-step path everywhere.
ENABLED = True

#: How the per-step loops use torch's intra-op threads when there are 2+:
#: ``"auto"`` (measured, see :class:`LoopTuner`), or one of :data:`LOOP_MODES`:
#: ``"threads"``: every op with torch's thread count, as nn.LSTM; ``"mkl"``: elementwise
#: ops and batch norms on one thread, MKL's matrix products with torch's count;
#: ``"serial"``: everything on one thread (see :func:`threads.loop_threads`).
LOOP_THREADS = "auto"

#: Calls answered by each fast path: ``"train"`` (a layer through the training
#: Functions), ``"eval"`` (a layer through the folded evaluation loop), ``"lstm"``
#: (every layer through ``torch._VF.lstm``, ``norm="none"``).
CALLS: Counter = Counter()


def enabled() -> bool:
    return ENABLED


@contextlib.contextmanager
def disabled():
    """``with bnlstm.nn.fused.disabled(): ...`` runs BNLSTM on its reference path."""
    global ENABLED
    old = ENABLED
    ENABLED = False
    try:
        yield
    finally:
        ENABLED = old


def layer_forward(mod, k: int, x: Tensor, h: Tensor, c: Tensor):
    """Layer ``k`` of ``mod`` over ``x`` (T, B, I_k) on the fast path, or None when this
    layer must take the reference path (the caller then falls back)."""
    T, B, _ = x.shape
    if T == 0 or x.dtype not in (torch.float32, torch.float64):
        return None
    if not mod.training:
        return _answered("eval", layer_eval(mod, k, x, h, c))
    if B < 2 and mod.norm != "none":
        return None          # the reference raises the proper error
    return _answered("train", layer_train(mod, k, x, h, c, LOOP_THREADS))


def _answered(path: str, result):
    if result is not None:
        CALLS[path] += 1
    return result


def lstm_none(mod, x: Tensor, h0: Tensor, c0: Tensor):
    """``norm="none"`` without a trace: nn.LSTM's own kernel (``torch._VF.lstm``) on
    ``x`` (T, B, I); returns ``output, (h_n, c_n)`` with h_n, c_n (L, B, H), or None
    where the result could differ from the reference loop: cuDNN draws its own dropout
    masks, so training with dropout on a GPU keeps the per-layer path."""
    if mod.training and mod.dropout > 0 and mod.num_layers > 1 and x.device.type != "cpu":
        return None
    params: List[Tensor] = []
    for k in range(mod.num_layers):
        w_ih, w_hh, b_ih, b_hh = mod.layer(k)[:4]
        params += [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    out, h_n, c_n = torch._VF.lstm(x, (h0.contiguous(), c0.contiguous()), params, mod.bias,
                                   mod.num_layers, mod.dropout, mod.training, False, False)
    return _answered("lstm", (out, (h_n, c_n)))
