"""What happens inside a recurrent forward pass, recorded for probes (:class:`Trace`)."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ["Trace"]


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

