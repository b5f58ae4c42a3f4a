"""Batch normalization folded into affine maps: the running-statistics update of a
whole sequence at once, the input term ``BN(W_x x_t)`` as per-step weights, and the
evaluation loop, where every BN is a fixed per-step affine map."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["update_running", "projected_stats", "input_term", "gate_scale", "eval_rows", "layer_eval"]


# --------------------------------------------------------------- running statistics
@torch.no_grad()
def update_running(bn, mean: Tensor, var: Tensor, B: int, T: int) -> None:
    """The running-statistics update of ``T`` steps at once: ``mean``/``var`` (T, F)
    are the biased batch statistics of every step."""
    unbiased = var * (B / (B - 1))
    nbt = bn.num_batches_tracked
    mom = bn.momentum
    if bn.stats == "shared":
        # T sequential updates of row 0, in closed form.
        n0 = int(nbt[0])
        f = [mom if mom is not None else 1.0 / float(n0 + t + 1) for t in range(T)]
        w, keep = [0.0] * T, 1.0
        for t in range(T - 1, -1, -1):
            w[t] = f[t] * keep
            keep *= 1.0 - f[t]
        wt = mean.new_tensor(w).unsqueeze(1)
        for buf, stat in ((bn.running_mean, mean), (bn.running_var, unbiased)):
            buf[0] = keep * buf[0] + (wt * stat).sum(0)
        nbt[0] += T
        return
    n = min(T, bn.max_length)
    if n == 0:
        return
    if mom is None:
        f = (nbt[:n] + 1).to(mean.dtype).reciprocal().unsqueeze(1)
    else:
        f = mom
    for buf, stat in ((bn.running_mean, mean), (bn.running_var, unbiased)):
        buf[:n] = f * stat[:n] + (1 - f) * buf[:n]
    nbt[:n] += 1


# ------------------------------------------------------------------- input term
def projected_stats(x: Tensor, wT: Tensor):
    """Per-step batch mean and biased variance of ``x_t @ wT`` without forming it, from
    those of ``x`` (T, B, I): ``mean = mean(x) W^T``, ``var = diag(W Cov(x) W^T)``.
    Returns ``mean, var`` (T, 4H) and, for a backward, ``xc = x - mean(x)`` (T, B, I)
    and ``V = Cov(x) W^T`` (T, I, 4H). Plain differentiable ops."""
    T, B, I = x.shape
    mx = x.mean(1)                                                # (T, I)
    xc = x - mx.unsqueeze(1)                                      # (T, B, I)
    cov = torch.bmm(xc.transpose(1, 2), xc) / B                   # (T, I, I) biased
    V = torch.mm(cov.reshape(T * I, I), wT).view(T, I, -1)        # (T, I, 4H)
    return mx @ wT, (V * wT).sum(1), xc, V


def input_term(mod, k: int, x: Tensor, training: bool, sv: Optional[Tensor] = None):
    """The folded input term of layer ``k``: per-step weight ``ws`` (T, I, 4H) and shift
    (T, 4H) such that ``BN(W_x x_t) + b = x_t @ ws[t] + shift[t]`` (autograd ops), each
    column times ``sv`` (4H,) when given."""
    w_ih, _, b_ih, b_hh, bn_ih, _, _ = mod.layer(k)
    T, B, _ = x.shape
    wT = w_ih.t()                                                 # (I, 4H)
    b = (b_ih + b_hh) if b_ih is not None else None
    if sv is not None and b is not None:
        b = b * sv
    if bn_ih is None:                                             # norm="none"
        if sv is not None:
            wT = wT * sv
        ws = wT.unsqueeze(0).expand(T, -1, -1)
        shift = (b if b is not None else w_ih.new_zeros(w_ih.shape[0])).expand(T, -1)
        return ws, shift
    if training:
        mean, var, _, _ = projected_stats(x, wT)
        update_running(bn_ih, mean.detach(), var.detach(), B, T)
        scale = bn_ih.weight * torch.rsqrt(var + bn_ih.eps)       # (T, 4H)
    else:
        rows = eval_rows(bn_ih, T, x.device)
        mean = bn_ih.running_mean[rows]
        scale = bn_ih.weight * torch.rsqrt(bn_ih.running_var[rows] + bn_ih.eps)
    if sv is not None:
        scale = scale * sv
    ws = wT.unsqueeze(0) * scale.unsqueeze(1)                     # (T, I, 4H)
    shift = -mean * scale
    if b is not None:
        shift = shift + b
    return ws, shift



_GATE_SCALE = {}


def gate_scale(w_hh: Tensor) -> Tensor:
    """(4H,): 1 for the i, f, o gates and 2 for g, cached per size, dtype and device."""
    key = (w_hh.shape[0], w_hh.dtype, w_hh.device)
    sv = _GATE_SCALE.get(key)
    if sv is None:
        H = w_hh.shape[0] // 4
        sv = torch.ones(4 * H, dtype=w_hh.dtype, device=w_hh.device)
        sv[2 * H:3 * H] = 2.0
        _GATE_SCALE[key] = sv
    return sv


def eval_rows(bn, T: int, device) -> Tensor:
    if bn.stats == "shared":
        return torch.zeros(T, dtype=torch.long, device=device)
    return torch.arange(T, device=device).clamp_(max=bn.t_max - 1)



def layer_eval(mod, k: int, x: Tensor, h: Tensor, c: Tensor):
    """Evaluation mode: every BN is a fixed per-step affine map (population statistics)."""
    w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = mod.layer(k)
    T, B, _ = x.shape
    ws, shift = input_term(mod, k, x, False)
    whT = w_hh.t()
    if bn_hh is not None:
        rows = eval_rows(bn_hh, T, x.device)
        sh = bn_hh.weight * torch.rsqrt(bn_hh.running_var[rows] + bn_hh.eps)   # (T, 4H)
        shift = shift - bn_hh.running_mean[rows] * sh
        shs = sh.unbind(0)
        rows = eval_rows(bn_c, T, x.device)
        sc = bn_c.weight * torch.rsqrt(bn_c.running_var[rows] + bn_c.eps)      # (T, H)
        bc = -bn_c.running_mean[rows] * sc
        if bn_c.bias is not None:
            bc = bc + bn_c.bias
        scs, bcs = sc.unbind(0), bc.unbind(0)
    p = torch.baddbmm(shift.unsqueeze(1), x, ws)                               # (T, B, 4H)
    outputs = []
    for t, p_t in enumerate(p.unbind(0)):
        wh = h @ whT
        gates = torch.addcmul(p_t, wh, shs[t]) if bn_hh is not None else p_t + wh
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_out = torch.addcmul(bcs[t], c, scs[t]) if bn_c is not None else c
        h = torch.sigmoid(o) * torch.tanh(c_out)
        outputs.append(h)
    return torch.stack(outputs), (h, c)

