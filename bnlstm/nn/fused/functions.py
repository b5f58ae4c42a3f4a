"""The training fast path's autograd Functions: the input term for input size > 1
(:class:`InputBN`) and one layer over a whole sequence (:class:`LayerTrain`), with
hand-written reverse loops; :func:`layer_train` builds and applies them."""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .folding import gate_scale, input_term, projected_stats, update_running
from .threads import loop_mode, loop_threads
from .workspace import workspace

__all__ = ["InputBN", "LayerTrain", "layer_train"]

#: Steps per chunk of the reverse loop ("full" mode: one dW_hh matmul per chunk).
_BWD_CHUNK = 64

_aten = torch.ops.aten
_nbn = torch.native_batch_norm
_nbn_bwd = _aten.native_batch_norm_backward.default
_sig_bwd_out = _aten.sigmoid_backward.grad_input
_tanh_bwd = _aten.tanh_backward.default



class InputBN(torch.autograd.Function):
    """The input term in training for input size > 1: ``p_t = BN_t(x_t W^T) * sv + b``
    (T, B, 4H) with per-step batch statistics, as one batched product with the BN
    folded into per-step weights (statistics from Cov(x_t), as in :func:`input_term`),
    and a hand-written backward: autograd's chain through the folded statistics took
    twice as long (T=28, I=28, B=H=100: 1.8 ms)."""

    @staticmethod
    def forward(ctx, x, w, gamma, b, sv, eps, bn):
        T, B, _ = x.shape
        wT = w.t()                                                # (I, 4H)
        mean, var, xc, V = projected_stats(x, wT)
        update_running(bn, mean, var, B, T)
        istd = torch.rsqrt(var + eps)
        s = istd * (gamma * sv)                                   # (T, 4H)
        ws = wT.unsqueeze(0) * s.unsqueeze(1)                     # (T, I, 4H)
        p = torch.bmm(xc, ws) if b is None else torch.baddbmm(b.view(1, 1, -1), xc, ws)
        ctx.save_for_backward(xc, w, V, istd, s, sv)
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        # p_tb = (xc_tb W^T) s_t + b,  s_t = gamma sv / sqrt(var_t + eps),
        # var_t = diag(W Cov_t W^T),  Cov_t = xc_t^T xc_t / B,  xc = x - mean_b(x)
        xc, w, V, istd, s, sv = ctx.saved_tensors
        need_x, need_w, need_gamma, need_b = ctx.needs_input_grad[:4]
        T, B, I = xc.shape
        wT = w.t()
        G = G.contiguous()
        A = torch.bmm(xc.transpose(1, 2), G)                      # (T, I, 4H)
        g_s = (A * wT).sum(1)                                     # (T, 4H) dL/ds
        g_var = g_s * s * istd.square() * -0.5                    # ds/dvar = -s istd^2 / 2
        g_x = g_w = g_gamma = g_b = None
        if need_w:       # direct, and through var (dvar_t/dW^T = 2 Cov_t W^T = 2 V_t)
            g_w = ((A * s.unsqueeze(1)).sum(0) + 2.0 * (V * g_var.unsqueeze(1)).sum(0)).t()
        if need_gamma:
            g_gamma = (g_s * istd).sum(0) * sv
        if need_b:
            g_b = G.sum((0, 1))
        if need_x:
            g_xc = torch.matmul(G * s.unsqueeze(1), w)            # (T, B, I)
            g_cov = torch.matmul(wT.unsqueeze(0) * g_var.unsqueeze(1), w)   # W^T diag(g_var) W
            g_xc.baddbmm_(xc, g_cov, alpha=2.0 / B)               # (g_cov is symmetric)
            g_x = g_xc - g_xc.mean(1, keepdim=True)
        return g_x, g_w, g_gamma, g_b, None, None, None



# ------------------------------------------------------------ training: Function
class _Cfg:
    __slots__ = ("full", "lowrank", "eps_h", "eps_c", "bn_h", "bn_c", "ws", "k", "mode", "record")


class LayerTrain(torch.autograd.Function):
    """One layer over a whole sequence in training mode (norm "input"/"full")."""

    @staticmethod
    def forward(ctx, cfg: _Cfg, h0: Tensor, c0: Tensor, w_hh: Tensor, gh: Optional[Tensor],
                gc: Optional[Tensor], bc: Optional[Tensor], x: Optional[Tensor],
                ws: Optional[Tensor], shift: Optional[Tensor], p: Optional[Tensor]):
        full, lowrank = cfg.full, cfg.lowrank
        B, H = h0.shape
        T = x.shape[0] if lowrank else p.shape[0]
        whT = w_hh.t()
        ws_, k = cfg.ws, cfg.k
        act = ws_.take((k, "act"), h0, T, B, 4 * H)
        cs = ws_.take((k, "c"), h0, T, B, H)
        tcs = ws_.take((k, "tanh c"), h0, T, B, H)
        g_all = ws_.take((k, "g"), h0, T, B, H)
        gs = g_all.unbind(0)
        out = h0.new_empty(T, B, H)
        act4 = act.view(T, B, 4, H).unbind(2)
        a_i, a_f, a_g, a_o = (v.unbind(0) for v in act4)
        acts = act.unbind(0)
        cs_t, tcs_t, out_t = cs.unbind(0), tcs.unbind(0), out.unbind(0)
        if lowrank:
            xs, wss, shifts = x.unbind(0), ws.unbind(0), shift.unbind(0)
        else:
            ps = p.unbind(0)
        if full:
            wh_all = ws_.take((k, "whh h"), h0, T, B, 4 * H)
            whs = wh_all.unbind(0)
            eh, ec = cfg.eps_h, cfg.eps_c
            mean_h, istd_h, mean_c, istd_c = [], [], [], []
            gc2 = gc * 2.0
            bc2 = bc * 2.0 if bc is not None else None
        h, c = h0, c0
        t_start = time.perf_counter()
        with loop_threads(cfg.mode):
            for t in range(T):
                if full:
                    wh = torch.mm(h, whT, out=whs[t])
                    gates, m, s = _nbn(wh, gh, shifts[t] if lowrank else None, None, None, True,
                                       0.0, eh)
                    mean_h.append(m)
                    istd_h.append(s)
                    if lowrank:
                        gates.addcmul_(xs[t], wss[t])
                    else:
                        gates.add_(ps[t])
                elif lowrank:
                    gates = torch.addmm(shifts[t], h, whT)
                    gates.addcmul_(xs[t], wss[t])
                else:
                    gates = torch.mm(h, whT)
                    gates.add_(ps[t])
                # tanh(z) = 2 sigmoid(2z) - 1: torch.tanh is several times slower than
                # torch.sigmoid on this CPU, so one sigmoid covers all four gates; the g
                # pre-activations arrive doubled (layer_forward scales their weights).
                torch.sigmoid(gates, out=acts[t])            # i, f, sigmoid(2 z_g), o
                g_t = torch.mul(a_g[t], 2.0, out=gs[t]).sub_(1.0)   # tanh(z_g)
                c_new = torch.mul(a_f[t], c, out=cs_t[t])
                c_new.addcmul_(a_i[t], g_t)
                c = c_new
                if full:
                    y2, m, s = _nbn(c, gc2, bc2, None, None, True, 0.0, ec)  # 2 BN(c)
                    mean_c.append(m)
                    istd_c.append(s)
                else:
                    y2 = c * 2.0
                tc = torch.sigmoid(y2, out=tcs_t[t])
                tc.mul_(2.0).sub_(1.0)
                h = torch.mul(a_o[t], tc, out=out_t[t])
        saved = [h0, c0, w_hh, act, cs, tcs, out, g_all]
        if full:
            mean_h, istd_h = torch.stack(mean_h), torch.stack(istd_h)      # (T, 4H)
            mean_c, istd_c = torch.stack(mean_c), torch.stack(istd_c)      # (T, H)
            # running statistics of all steps at once (biased var = 1 / istd^2 - eps,
            # which rounding can take a hair below 0 when the batch variance is 0)
            update_running(cfg.bn_h, mean_h, istd_h.pow(-2).sub_(eh).clamp_min_(0.0), B, T)
            update_running(cfg.bn_c, mean_c, istd_c.pow(-2).sub_(ec).clamp_min_(0.0), B, T)
            saved += [gh, gc, wh_all, mean_h, istd_h, mean_c, istd_c]
        if lowrank:
            saved += [x, ws]
        ctx.cfg_full, ctx.cfg_lowrank = full, lowrank
        ctx.ws, ctx.k = ws_, k
        ctx.mode, ctx.record = cfg.mode, cfg.record
        ctx.t_fwd = time.perf_counter() - t_start
        if full:
            ctx.eps = (cfg.eps_h, cfg.eps_c)
            ctx.has_bc = bc is not None
        ctx.save_for_backward(*saved)
        return out, out[T - 1].clone(), cs[T - 1].clone()

    @staticmethod
    @once_differentiable     # no double backward: say so instead of a silently wrong one
    def backward(ctx, d_out: Tensor, d_hT: Tensor, d_cT: Tensor):
        t_start = time.perf_counter()
        full, lowrank = ctx.cfg_full, ctx.cfg_lowrank
        saved = list(ctx.saved_tensors)
        h0, c0, w_hh, act, cs, tcs, out, g_all = saved[:8]
        rest = saved[8:]
        if full:
            gh, gc, wh_all, mean_h, istd_h, mean_c, istd_c = rest[:7]
            rest = rest[7:]
            eh, ec = ctx.eps
        if lowrank:
            x, ws = rest
        (_, need_h0, need_c0, need_whh, need_gh, need_gc, need_bc, need_x, need_ws, need_shift,
         need_p) = ctx.needs_input_grad
        T, B, H4 = act.shape
        H = H4 // 4
        a_i, a_f, a_o = (act.view(T, B, 4, H)[:, :, j].unbind(0) for j in (0, 1, 3))
        cs_t, tcs_t, g_t = cs.unbind(0), tcs.unbind(0), g_all.unbind(0)
        acts = act.unbind(0)
        zero = act.new_zeros(())
        d_out = d_out.contiguous()
        douts = d_out.unbind(0)
        ws_, k = ctx.ws, ctx.k
        # dA is returned as the gradient of p when not lowrank: a fresh tensor then
        dA = ws_.take((k, "d gates"), act, T, B, H4) if lowrank else act.new_empty(T, B, H4)
        dAs = dA.unbind(0)
        d_i, d_f, d_g, d_o = (v.unbind(0) for v in dA.view(T, B, 4, H).unbind(2))
        if full:
            # per-step parameter gradients of the two in-loop BNs, summed at the end
            dgh_l, dsh_l, dgc_l, dbc_l = [], [], [], []
            whs = wh_all.unbind(0)
            mh, sh, mc, sc = (v.unbind(0) for v in (mean_h, istd_h, mean_c, istd_c))
            mask3 = [True, True, True]
            g_whh = torch.zeros_like(w_hh) if need_whh else None
        dh = douts[T - 1] + d_hT
        dc = d_cT
        dwh = None
        # Steps run in chunks of C, each in the thread mode of the forward; in "full"
        # mode the chunk's dwh_t land in dwh_buf and dW_hh += sum_t dwh_t^T h_{t-1} is
        # one matmul per chunk, with threads, after the chunk.
        C = min(T, _BWD_CHUNK)
        if full and need_whh:
            dwh_buf = ws_.take((k, "d whh h"), act, C, B, H4)
            dwh_bs = dwh_buf.unbind(0)
        for hi in range(T, 0, -C):
            lo = max(0, hi - C)
            with loop_threads(ctx.mode):
                for t in range(hi - 1, lo - 1, -1):
                    if dwh is not None:
                        dh = torch.addmm(douts[t], dwh, w_hh)
                    tc = tcs_t[t]
                    dtc = dh * a_o[t]
                    torch.mul(dh, tc, out=d_o[t])
                    if full:
                        dcn = _tanh_bwd(dtc, tc)
                        dcb, dgc_i, dbc_i = _nbn_bwd(dcn, cs_t[t], gc, None, None, mc[t], sc[t], True, ec,
                                                     mask3)
                        dgc_l.append(dgc_i)
                        dbc_l.append(dbc_i)
                        dc = dcb.add_(dc)
                    else:
                        dc = _tanh_bwd(dtc, tc).add_(dc)
                    c_prev = cs_t[t - 1] if t > 0 else c0
                    # d(loss)/d(gate activation) into dA[t], then one sigmoid backward over
                    # all four: the g slot holds sigmoid(2 z_g), and d tanh / d(2 z_g) =
                    # 2 sigmoid'(2 z_g), hence the factor 2
                    torch.mul(dc, g_t[t], out=d_i[t])
                    torch.mul(dc, c_prev, out=d_f[t])
                    torch.addcmul(zero, dc, a_i[t], value=2.0, out=d_g[t])
                    _sig_bwd_out(dAs[t], acts[t], grad_input=dAs[t])
                    dc = dc * a_f[t]
                    if full:
                        dwh, dgh_i, dsh_i = _nbn_bwd(dAs[t], whs[t], gh, None, None, mh[t],
                                                     sh[t], True, eh, mask3)
                        if need_whh:
                            dwh_bs[t - lo].copy_(dwh)
                        dgh_l.append(dgh_i)
                        dsh_l.append(dsh_i)
                    else:
                        dwh = dAs[t]
            if full and need_whh:   # dW_hh += dwh_t^T h_{t-1}, t in [lo, hi)
                n = hi - lo
                if lo > 0:
                    g_whh.addmm_(dwh_buf[:n].reshape(-1, H4).t(), out[lo - 1:hi - 1].reshape(-1, H))
                else:
                    g_whh.addmm_(dwh_buf[0].t(), h0)
                    if n > 1:
                        g_whh.addmm_(dwh_buf[1:n].reshape(-1, H4).t(), out[:n - 1].reshape(-1, H))
        g_h0 = torch.mm(dwh, w_hh) if need_h0 else None
        g_c0 = dc if need_c0 else None
        if not full and need_whh:
            # dW_hh = sum_t dwh_t^T h_{t-1}: one matmul over all steps
            g_whh = torch.mm(dA[0].t(), h0)
            if T > 1:
                g_whh.addmm_(dA[1:].reshape(-1, H4).t(), out[:-1].reshape(-1, H))
        elif not full:
            g_whh = None
        g_gh = torch.stack(dgh_l).sum(0) if full and need_gh else None
        g_gc = torch.stack(dgc_l).sum(0) if full and need_gc else None
        g_bc = torch.stack(dbc_l).sum(0) if full and need_bc and ctx.has_bc else None
        if full and lowrank and need_shift:
            dsh_all = torch.stack(dsh_l[::-1])
        g_x = g_ws = g_shift = g_p = None
        if lowrank:
            if need_x:
                g_x = torch.bmm(dA, ws.transpose(1, 2))
            if need_ws:
                g_ws = torch.bmm(x.transpose(1, 2), dA)
            if need_shift:
                g_shift = dsh_all if full else dA.sum(1)
        elif need_p:
            g_p = dA
        if ctx.record:
            ctx.ws.tuner.record(ctx.mode, ctx.t_fwd + time.perf_counter() - t_start, T)
        return None, g_h0, g_c0, g_whh, g_gh, g_gc, g_bc, g_x, g_ws, g_shift, g_p




def layer_train(mod, k: int, x: Tensor, h: Tensor, c: Tensor, loop_setting: str = "auto"):
    """Layer ``k`` of ``mod`` (training mode, B >= 2) over ``x`` (T, B, I_k) through the
    Functions: ``output (T, B, H), (h_T, c_T)``. ``loop_setting``: see :func:`loop_mode`."""
    T, B, I = x.shape
    w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = mod.layer(k)
    full = bn_hh is not None
    cfg = _Cfg()
    cfg.full = full
    cfg.lowrank = I == 1 and bn_ih is not None
    # the g gate's pre-activations enter the Function doubled (see its forward): its
    # rows of the input term, of gamma_h (full) or of W_hh (otherwise) are scaled by 2
    sv = gate_scale(w_hh)
    if cfg.lowrank or bn_ih is None:
        ws, shift = input_term(mod, k, x, True, sv)
    cfg.ws, cfg.k = workspace(mod), k
    cfg.mode, cfg.record = loop_mode(cfg.ws, x.device, loop_setting)
    if full:
        cfg.eps_h, cfg.eps_c = bn_hh.eps, bn_c.eps
        cfg.bn_h, cfg.bn_c = bn_hh, bn_c
        gh, gc, bc = bn_hh.weight * sv, bn_c.weight, bn_c.bias
    else:
        gh = gc = bc = None
        w_hh = w_hh * sv.unsqueeze(1)
    h = h.contiguous()
    c = c.contiguous()
    if cfg.lowrank:
        out, hT, cT = LayerTrain.apply(cfg, h, c, w_hh, gh, gc, bc, x, ws.contiguous(),
                                        shift.contiguous(), None)
    else:
        if bn_ih is not None:
            b = (b_ih + b_hh) * sv if b_ih is not None else None
            p = InputBN.apply(x, w_ih, bn_ih.weight, b, sv, bn_ih.eps, bn_ih)
        else:
            p = torch.baddbmm(shift.unsqueeze(1), x, ws)
        out, hT, cT = LayerTrain.apply(cfg, h, c, w_hh, gh, gc, bc, None, None, None, p)
    return out, (hT, cT)

