"""Probes: what a traced training step measures inside a (BN-)LSTM or BN tanh-RNN.

A task's experiment fills a :class:`~bnlstm.nn.Trace` on a probed update and hands
it here; the record that comes back (numpy arrays and numbers only) is what the
dashboard, the notebooks and the paper's experiments plot. Nothing here knows the
task: the probes apply to any model whose recurrent core is a ``BNLSTM`` or a
``BNTanhRNN``.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import torch
from torch import Tensor

from .rnn import BNLSTM
from .trace import Trace

# A tanh unit counts as saturated when it passes less than a tenth of its gradient:
# tanh'(x) = 1 - tanh(x)^2 < 0.1, i.e. |x| > atanh(sqrt(0.9)) ~= 1.818.
SATURATION_DERIVATIVE = 0.1
SATURATION_X = math.atanh(math.sqrt(1.0 - SATURATION_DERIVATIVE))
HIST_EDGES = np.linspace(-5.0, 5.0, 41)      # histogram bins of the tanh inputs
UNIT_EDGES = np.linspace(-1.0, 1.0, 41)      # histogram bins of the tanh outputs over the batch
UNIT_STEPS = 64                               # at most this many steps carry that histogram
PROBE_UNITS = 8                               # units per term sent in probe records (Fig. 5 shows 30)


def probe_summary(trace: Trace, rnn: BNLSTM, layer: int = -1) -> Dict[str, Any]:
    """Turn a filled :class:`Trace` (after backward) into a small record of numpy arrays.

    - ``stats[term]`` for term in ``wx``, ``wh``, ``c``: batch ``mean``/``var`` ``(T, K)``
      of K = PROBE_UNITS units (the g block's first units for the gate terms), their
      averages over all units ``mean_avg``/``var_avg`` ``(T,)``, and the population
      statistics ``pop_mean``/``pop_var`` ``(T, K)`` where that term is normalized.
    - ``hist[name]``: counts of the tanh inputs (``g``: the g gate, ``c_out``: the cell
      output) over ``HIST_EDGES``, as fractions; ``saturation[name]``: the fraction of
      saturated units (|x| > SATURATION_X); ``saturation_t[name]``: the same per step ``(T,)``.
    - ``units``: the distribution over the batch of the g gate's tanh output (for the tanh
      RNN: of ``h_t`` itself), pooled over units: ``steps`` (S,) (every step, or
      ``UNIT_STEPS`` of them spread evenly), ``edges`` ``UNIT_EDGES``, ``frac`` (S, 40)
      fractions; ``kurtosis`` (T,): its batch kurtosis averaged over units (3 for a
      Gaussian, 1 for two equal points; NaN where the batch has no spread). At gamma 1 in
      the BN tanh-RNN with identity W_h it falls to 1: the batch collapses onto two values.
    - ``grad_h``: ``(T,)`` the mean over the batch of each example's ``||dLoss/dh_t||``,
      as the authors plotted the paper's Figure 1a.
    """
    k = layer % len(trace.layers)
    rec = trace.layers[k]
    H = rnn.hidden_size
    K = min(PROBE_UNITS, H)
    is_lstm = isinstance(rnn, BNLSTM)
    g_units = slice(2 * H, 2 * H + K) if is_lstm else slice(0, K)
    bns = {"wx": getattr(rnn, f"bn_ih_l{k}", None), "wh": getattr(rnn, f"bn_hh_l{k}", None),
           "c": getattr(rnn, f"bn_c_l{k}", None)}
    T = rec["wh_mean"].shape[0]
    stats = {}
    terms = (("wx", g_units), ("wh", g_units)) + ((("c", slice(0, K)),) if is_lstm else ())
    for term, units in terms:
        m, v = rec[term + "_mean"], rec[term + "_var"]
        s = {"mean": m[:, units].cpu().numpy(), "var": v[:, units].cpu().numpy(),
             "mean_avg": m.mean(1).cpu().numpy(), "var_avg": v.mean(1).cpu().numpy()}
        bn = bns[term]
        if bn is not None:
            rows = torch.tensor([bn.row(t) for t in range(T)], device=bn.running_mean.device)
            s["pop_mean"] = bn.running_mean[rows][:, units].detach().cpu().numpy()
            s["pop_var"] = bn.running_var[rows][:, units].detach().cpu().numpy()
        stats[term] = s
    hist, sat, sat_t = {}, {}, {}
    for name, key in (("g", "g_pre"), ("c_out", "c_out_pre")):
        x = rec[key]
        if not isinstance(x, Tensor):
            continue
        x = x.float()
        counts = torch.histc(x.clamp(HIST_EDGES[0], HIST_EDGES[-1]), bins=len(HIST_EDGES) - 1,
                             min=float(HIST_EDGES[0]), max=float(HIST_EDGES[-1]))
        hist[name] = (counts / x.numel()).cpu().numpy()
        saturated = (x.abs() > SATURATION_X).float()
        sat[name] = float(saturated.mean())
        sat_t[name] = saturated.mean(dim=(1, 2)).cpu().numpy()
    out = {"t": np.arange(T), "stats": stats, "hist": hist, "hist_edges": HIST_EDGES,
           "saturation": sat, "saturation_t": sat_t}
    if isinstance(rec["g_pre"], Tensor):
        out["units"] = unit_distribution(rec["g_pre"])
    if rec["h"]:
        out["grad_h"] = trace.grad_norms(k, per_example=True).cpu().numpy()
    return out


def unit_distribution(pre: Tensor, steps=None) -> Dict[str, Any]:
    """The batch distribution of ``tanh(pre)``, ``pre`` (T, B, H): see :func:`probe_summary`.

    ``steps``: the (0-based) steps that get a histogram; default every step, or
    ``UNIT_STEPS`` of them spread evenly over a longer sequence.
    """
    y = torch.tanh(pre.double())                                   # (T, B, H)
    T = y.shape[0]
    if steps is None:
        steps = np.linspace(0, T - 1, min(T, UNIT_STEPS)).round()
    steps = np.unique(np.asarray(steps, dtype=int))
    sel = y[torch.as_tensor(steps, device=y.device)]
    n_bins = len(UNIT_EDGES) - 1
    frac = np.stack([torch.histc(s, bins=n_bins, min=-1.0, max=1.0).cpu().numpy() / s.numel()
                     for s in sel])
    dev = y - y.mean(1, keepdim=True)
    var = dev.pow(2).mean(1)                                       # (T, H)
    kurt = dev.pow(4).mean(1) / var.clamp_min(1e-30).pow(2)
    kurt = torch.where(var > 1e-12, kurt, torch.full_like(kurt, float("nan")))
    k_mean = torch.nanmean(kurt, dim=1).cpu().numpy()             # all-NaN rows stay NaN
    return {"steps": steps, "edges": UNIT_EDGES, "frac": frac, "kurtosis": k_mean}
