"""Fast whole-sequence paths for :class:`bnlstm.BNLSTM`, used by ``model.py``.

``BNLSTM._layer_forward_reference`` is the definition; everything here computes the
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
  (:class:`LoopTuner`, :data:`LOOP_THREADS`, :func:`_loop_threads`).
- ``norm="none"`` (no trace) goes to ``torch._VF.lstm``, nn.LSTM's own kernel
  (see :func:`lstm_none`).
- No double backward: the Functions are ``once_differentiable`` (the reference path
  supports ``create_graph=True``).

``ENABLED`` (or the :func:`disabled` context manager) switches all of it off, so that
tests and benchmarks can compare against the reference loop.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["ENABLED", "disabled", "layer_forward", "lstm_none", "Workspace", "workspace",
           "release_workspaces", "LoopTuner"]

#: Module-level switch: False makes BNLSTM take the reference per-step path everywhere.
ENABLED = True


@contextlib.contextmanager
def disabled():
    """``with bnlstm.fused.disabled(): ...`` runs BNLSTM on its reference path."""
    global ENABLED
    old = ENABLED
    ENABLED = False
    try:
        yield
    finally:
        ENABLED = old


#: How the per-step loops use torch's intra-op threads when there are 2+:
#: ``"auto"`` (measured, see :class:`LoopTuner`), or one of :data:`LOOP_MODES`.
LOOP_THREADS = "auto"
#: ``"threads"``: every op with torch's thread count, as nn.LSTM; ``"mkl"``: elementwise
#: ops and batch norms on one thread, MKL's matrix products with torch's count;
#: ``"serial"``: everything on one thread (see :func:`_loop_threads`).
LOOP_MODES = ("threads", "mkl", "serial")
#: Steps per chunk of the reverse loop ("full" mode: one dW_hh matmul per chunk).
_BWD_CHUNK = 64


@contextlib.contextmanager
def _loop_threads(mode: str):
    """Thread settings for the body (a per-step loop), restored after.

    Each step's ops are small ((B, 4H) = 40,000 elements at B=H=100, just over ATen's
    parallel grain size of 32,768): with 2 threads each elementwise op / BN forks
    and joins OpenMP threads (~12 ops per step each way); ``native_batch_norm`` on
    (100, 400) gets slower (22 -> 24-38 us), sigmoid faster (17 -> 12 us), and the
    step's matrix product (100, 100) @ (100, 400) goes from 82 to 58 us. Which mix is
    fastest depends on the machine's load (measured on a 2-core CPU, B=H=100, 2
    threads, step time / nn.LSTM's at T=28 and 784; quiet: threads 2.05x / 1.05x, mkl
    2.16x / 1.33x, serial 2.48x; one busy process on the other core: threads 2.32x /
    1.66x, mkl 2.09x / 1.18x, serial 1.67x / 0.62x), hence :class:`LoopTuner`.

    ``"serial"`` and ``"mkl"`` call ``torch.set_num_threads(1)`` (ATen's count, MKL's
    and this thread's OpenMP team size); ``"mkl"`` then gives MKL alone torch's count
    back through ``MKL_Set_Num_Threads_Local`` (thread-local; where torch has no MKL it
    is ``"serial"``). ``torch.set_num_threads`` costs well under a microsecond. Caveat:
    ATen's count is process-global, so another Python thread running torch ops while
    a loop is in flight may see 1 thread too.
    """
    n = torch.get_num_threads()
    if mode == "threads" or n <= 1:
        yield
        return
    torch.set_num_threads(1)
    if mode == "mkl":
        mkl = _mkl_set_local_threads()
        if mkl is not None:
            mkl(n)
    try:
        yield
    finally:
        torch.set_num_threads(n)


_MKL_LOCAL = []


def _mkl_set_local_threads():
    """MKL's ``MKL_Set_Num_Threads_Local`` (C interface: the count by value; it sets the
    calling thread's MKL thread count) as exported by libtorch_cpu on Linux builds
    with MKL, or None."""
    if not _MKL_LOCAL:
        fn = None
        if sys.platform.startswith("linux") and torch.backends.mkl.is_available():
            try:
                lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
                fn = lib.MKL_Set_Num_Threads_Local
                fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
            except (OSError, AttributeError):
                fn = None
        _MKL_LOCAL.append(fn)
    return _MKL_LOCAL[0]


class LoopTuner:
    """Chooses the loops' thread mode (:data:`LOOP_MODES`) by measuring them, as
    ``torch.backends.cudnn.benchmark`` chooses kernels, and measures again from time
    to time because the best mode follows the machine's load.

    One per model (on its :class:`Workspace`). A training forward asks :meth:`mode`;
    when its backward has run, the wall time of its forward and backward comes back
    through :meth:`record`. After a reset (first use; then once ``every`` steps and
    ``every_seconds`` have both passed since the last choice) the modes take turns,
    each until it has ``samples`` steps and ``min_seconds`` of them; the mode with
    the lowest time per time step is then used until the next reset. The first step
    after a reset is not counted (it may allocate). Numbers are the same in every
    mode up to rounding (reductions may split differently).
    """

    def __init__(self, modes=None, samples: int = 3, min_seconds: float = 0.25,
                 every: int = 200, every_seconds: float = 60.0):
        self.modes = tuple(modes) if modes is not None else self.available_modes()
        self.samples, self.min_seconds = samples, min_seconds
        self.every, self.every_seconds = every, every_seconds
        self.best = "mkl" if "mkl" in self.modes else self.modes[0]
        self.calls = 0
        self._seen = {m: [] for m in self.modes}      # seconds per time step
        self._spent = {m: 0.0 for m in self.modes}    # seconds
        self._chosen_at = None                        # (calls, time) of the last choice
        self._lock = threading.Lock()

    @staticmethod
    def available_modes():
        return LOOP_MODES if _mkl_set_local_threads() is not None else ("threads", "serial")

    def _done(self, m) -> bool:
        return len(self._seen[m]) >= self.samples and self._spent[m] >= self.min_seconds

    def mode(self) -> Tuple[str, bool]:
        """The mode for the next training step, and whether its time is to be recorded."""
        with self._lock:
            self.calls += 1
            if self.calls == 1 or (
                    self._chosen_at is not None and self.calls - self._chosen_at[0] >= self.every
                    and time.monotonic() - self._chosen_at[1] >= self.every_seconds):
                for m in self.modes:
                    self._seen[m].clear()
                    self._spent[m] = 0.0
                self._chosen_at = None
                return self.best, False             # warm-up step: not counted
            if self._chosen_at is not None:
                return self.best, False
            todo = [m for m in self.modes if not self._done(m)]
            return min(todo, key=lambda m: len(self._seen[m])), True   # take turns

    def record(self, mode: str, seconds: float, steps: int) -> None:
        """``seconds`` of forward and backward over ``steps`` time steps in ``mode``."""
        with self._lock:
            if self._chosen_at is not None or mode not in self._seen or self._done(mode):
                return
            self._seen[mode].append(seconds / max(steps, 1))
            self._spent[mode] += seconds
            if all(self._done(m) for m in self.modes):
                self.best = min(self.modes, key=lambda m: min(self._seen[m]))
                self._chosen_at = (self.calls, time.monotonic())

    def summary(self) -> dict:
        """The current choice and the last measurements (microseconds per time step)."""
        with self._lock:
            return {"best": self.best, "measuring": self._chosen_at is None,
                    "us_per_step": {m: [round(v * 1e6, 1) for v in s] for m, s in self._seen.items()}}


def _loop_mode(ws, device) -> Tuple[str, bool]:
    """The thread mode for a training Function on ``device``: (mode, record its time)."""
    if device.type != "cpu":
        return "threads", False        # GPU kernels: the CPU thread count does not matter
    if torch.get_num_threads() <= 1:
        return "serial", False
    if LOOP_THREADS != "auto":
        if LOOP_THREADS not in LOOP_MODES:
            raise ValueError(f"bnlstm.fused.LOOP_THREADS must be 'auto' or one of {LOOP_MODES}, "
                             f"not {LOOP_THREADS!r}")
        return LOOP_THREADS, False
    return ws.tuner.mode()


# ------------------------------------------------------------------- workspace
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _use_count(t: Tensor) -> int:
    return _storage_use_count(t.untyped_storage()._cdata)


class Workspace:
    """The training Function's activation buffers, kept per model and reused by the
    next step (CPU only; CUDA's caching allocator already reuses memory), and the
    model's :class:`LoopTuner` (``.tuner``).

    Why: at T=784, B=H=100 one step's buffers (gates, W_hh h, c, tanh(BN(c)), the
    reverse loop's gradients) are ~470 MB. glibc hands blocks that big back to the OS
    on free, so fresh ones cost a page fault (and a zeroed page) per 4 KiB on first
    touch: measured ~90,000 faults and ~170 ms of a ~670 ms step. nn.LSTM pays the
    same cost for its own buffers; this keeps ours resident instead.

    A buffer is lent only while nothing else holds its storage (counted with
    ``torch._C._storage_Use_Count``): a graph that has not run backward yet (tensors
    saved for backward), a second forward before the backward, or any view still
    alive all make it busy, and the caller then gets a fresh tensor. The memory stays
    with the model (one set per layer and buffer) until the model is freed or
    :meth:`clear` is called; a copied or pickled model starts with an empty one.
    """

    def __init__(self):
        self._bufs = {}
        self._lock = threading.Lock()
        self.tuner = LoopTuner()

    def take(self, tag, like: Tensor, *shape: int) -> Tensor:
        """A tensor of ``shape`` with ``like``'s dtype and device, uninitialised."""
        if like.device.type != "cpu" or _storage_use_count is None:
            return like.new_empty(shape)
        with self._lock:
            ent = self._bufs.get(tag)
            if ent is not None:
                buf, free = ent
                if buf.shape == shape and buf.dtype == like.dtype:
                    if _use_count(buf) == free:
                        return buf.view(shape)      # the view keeps it busy while used
                    return like.new_empty(shape)    # in use: a fresh one, not kept
            buf = like.new_empty(shape)             # new or other shape: (re)place it
            self._bufs[tag] = (buf, _use_count(buf))
            return buf.view(shape)

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b, _ in self._bufs.values())

    def __deepcopy__(self, memo):
        return Workspace()

    def __getstate__(self):
        return {"buffers": "not saved"}     # truthy, so that __setstate__ runs

    def __setstate__(self, state):
        self.__init__()


def release_workspaces(module) -> int:
    """Frees the kept buffers of every BNLSTM in ``module`` (e.g. when a run ends);
    returns the bytes released. Training again simply allocates them again."""
    freed = 0
    for m in module.modules():
        ws = m.__dict__.get("_fused_workspace")
        if ws is not None:
            freed += ws.nbytes()
            ws.clear()
    return freed


def workspace(mod) -> Workspace:
    """The :class:`Workspace` of a BNLSTM (made on first use)."""
    ws = mod.__dict__.get("_fused_workspace")
    if ws is None:
        ws = mod.__dict__["_fused_workspace"] = Workspace()
    return ws


_aten = torch.ops.aten
_nbn = torch.native_batch_norm
_nbn_bwd = _aten.native_batch_norm_backward.default
_sig_bwd_out = _aten.sigmoid_backward.grad_input
_tanh_bwd = _aten.tanh_backward.default


# --------------------------------------------------------------- running statistics
@torch.no_grad()
def _update_running(bn, mean: Tensor, var: Tensor, B: int, T: int) -> None:
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
def _projected_stats(x: Tensor, wT: Tensor):
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


def _input_term(mod, k: int, x: Tensor, training: bool, sv: Optional[Tensor] = None):
    """The folded input term of layer ``k``: per-step weight ``ws`` (T, I, 4H) and shift
    (T, 4H) such that ``BN(W_x x_t) + b = x_t @ ws[t] + shift[t]`` (autograd ops), each
    column times ``sv`` (4H,) when given."""
    w_ih, _, b_ih, b_hh, bn_ih, _, _ = mod._layer(k)
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
        mean, var, _, _ = _projected_stats(x, wT)
        _update_running(bn_ih, mean.detach(), var.detach(), B, T)
        scale = bn_ih.weight * torch.rsqrt(var + bn_ih.eps)       # (T, 4H)
    else:
        rows = _eval_rows(bn_ih, T, x.device)
        mean = bn_ih.running_mean[rows]
        scale = bn_ih.weight * torch.rsqrt(bn_ih.running_var[rows] + bn_ih.eps)
    if sv is not None:
        scale = scale * sv
    ws = wT.unsqueeze(0) * scale.unsqueeze(1)                     # (T, I, 4H)
    shift = -mean * scale
    if b is not None:
        shift = shift + b
    return ws, shift


class _InputBN(torch.autograd.Function):
    """The input term in training for input size > 1: ``p_t = BN_t(x_t W^T) * sv + b``
    (T, B, 4H) with per-step batch statistics, as one batched product with the BN
    folded into per-step weights (statistics from Cov(x_t), as in :func:`_input_term`),
    and a hand-written backward: autograd's chain through the folded statistics took
    twice as long (T=28, I=28, B=H=100: 1.8 ms)."""

    @staticmethod
    def forward(ctx, x, w, gamma, b, sv, eps, bn):
        T, B, _ = x.shape
        wT = w.t()                                                # (I, 4H)
        mean, var, xc, V = _projected_stats(x, wT)
        _update_running(bn, mean, var, B, T)
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


_GATE_SCALE = {}


def _gate_scale(w_hh: Tensor) -> Tensor:
    """(4H,): 1 for the i, f, o gates and 2 for g, cached per size, dtype and device."""
    key = (w_hh.shape[0], w_hh.dtype, w_hh.device)
    sv = _GATE_SCALE.get(key)
    if sv is None:
        H = w_hh.shape[0] // 4
        sv = torch.ones(4 * H, dtype=w_hh.dtype, device=w_hh.device)
        sv[2 * H:3 * H] = 2.0
        _GATE_SCALE[key] = sv
    return sv


def _eval_rows(bn, T: int, device) -> Tensor:
    if bn.stats == "shared":
        return torch.zeros(T, dtype=torch.long, device=device)
    return torch.arange(T, device=device).clamp_(max=bn.t_max - 1)


# ------------------------------------------------------------ training: Function
class _Cfg:
    __slots__ = ("full", "lowrank", "eps_h", "eps_c", "bn_h", "bn_c", "ws", "k", "mode", "record")


class _LayerTrain(torch.autograd.Function):
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
        with _loop_threads(cfg.mode):
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
            _update_running(cfg.bn_h, mean_h, istd_h.pow(-2).sub_(eh).clamp_min_(0.0), B, T)
            _update_running(cfg.bn_c, mean_c, istd_c.pow(-2).sub_(ec).clamp_min_(0.0), B, T)
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
            with _loop_threads(ctx.mode):
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


# ------------------------------------------------------------------ entry points
def layer_forward(mod, k: int, x: Tensor, h: Tensor, c: Tensor):
    """Layer ``k`` of ``mod`` over ``x`` (T, B, I_k) on the fast path, or None when this
    layer must take the reference path (the caller then falls back)."""
    T, B, I = x.shape
    if T == 0 or x.dtype not in (torch.float32, torch.float64):
        return None
    if not mod.training:
        return _layer_eval(mod, k, x, h, c)
    if B < 2 and mod.norm != "none":
        return None          # the reference raises the proper error
    w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = mod._layer(k)
    full = bn_hh is not None
    cfg = _Cfg()
    cfg.full = full
    cfg.lowrank = I == 1 and bn_ih is not None
    # the g gate's pre-activations enter the Function doubled (see its forward): its
    # rows of the input term, of gamma_h (full) or of W_hh (otherwise) are scaled by 2
    sv = _gate_scale(w_hh)
    if cfg.lowrank or bn_ih is None:
        ws, shift = _input_term(mod, k, x, True, sv)
    cfg.ws, cfg.k = workspace(mod), k
    cfg.mode, cfg.record = _loop_mode(cfg.ws, x.device)
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
        out, hT, cT = _LayerTrain.apply(cfg, h, c, w_hh, gh, gc, bc, x, ws.contiguous(),
                                        shift.contiguous(), None)
    else:
        if bn_ih is not None:
            b = (b_ih + b_hh) * sv if b_ih is not None else None
            p = _InputBN.apply(x, w_ih, bn_ih.weight, b, sv, bn_ih.eps, bn_ih)
        else:
            p = torch.baddbmm(shift.unsqueeze(1), x, ws)
        out, hT, cT = _LayerTrain.apply(cfg, h, c, w_hh, gh, gc, bc, None, None, None, p)
    return out, (hT, cT)


def _layer_eval(mod, k: int, x: Tensor, h: Tensor, c: Tensor):
    """Evaluation mode: every BN is a fixed per-step affine map (population statistics)."""
    w_ih, w_hh, b_ih, b_hh, bn_ih, bn_hh, bn_c = mod._layer(k)
    T, B, _ = x.shape
    ws, shift = _input_term(mod, k, x, False)
    whT = w_hh.t()
    if bn_hh is not None:
        rows = _eval_rows(bn_hh, T, x.device)
        sh = bn_hh.weight * torch.rsqrt(bn_hh.running_var[rows] + bn_hh.eps)   # (T, 4H)
        shift = shift - bn_hh.running_mean[rows] * sh
        shs = sh.unbind(0)
        rows = _eval_rows(bn_c, T, x.device)
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


def lstm_none(mod, x: Tensor, h0: Tensor, c0: Tensor):
    """``norm="none"`` without a trace: nn.LSTM's own kernel (``torch._VF.lstm``) on
    ``x`` (T, B, I); returns ``output, (h_n, c_n)`` with h_n, c_n (L, B, H), or None
    where the result could differ from the reference loop: cuDNN draws its own dropout
    masks, so training with dropout on a GPU keeps the per-layer path."""
    if mod.training and mod.dropout > 0 and mod.num_layers > 1 and x.device.type != "cpu":
        return None
    params: List[Tensor] = []
    for k in range(mod.num_layers):
        w_ih, w_hh, b_ih, b_hh = mod._layer(k)[:4]
        params += [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    out, h_n, c_n = torch._VF.lstm(x, (h0.contiguous(), c0.contiguous()), params, mod.bias,
                                   mod.num_layers, mod.dropout, mod.training, False, False)
    return out, (h_n, c_n)
