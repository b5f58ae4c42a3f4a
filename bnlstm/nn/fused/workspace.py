"""The training Function's activation buffers, kept per model and reused (:class:`Workspace`)."""
from __future__ import annotations

import threading

import torch
from torch import Tensor

from .threads import LoopTuner

__all__ = ["Workspace", "workspace", "release_workspaces"]

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

