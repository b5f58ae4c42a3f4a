"""How the fast path's per-step loops use torch's intra-op threads: the modes, the
thread settings they make (:func:`loop_threads`) and the tuner that picks one by
measurement (:class:`LoopTuner`)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from typing import Tuple

import torch

__all__ = ["LOOP_MODES", "LoopTuner", "loop_threads", "loop_mode"]

#: ``"threads"``: every op with torch's thread count, as nn.LSTM; ``"mkl"``: elementwise
#: ops and batch norms on one thread, MKL's matrix products with torch's count;
#: ``"serial"``: everything on one thread (see :func:`loop_threads`).
LOOP_MODES = ("threads", "mkl", "serial")


@contextlib.contextmanager
def loop_threads(mode: str):
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



def loop_mode(ws, device, setting: str = "auto") -> Tuple[str, bool]:
    """The thread mode for a training Function on ``device``: (mode, record its time).
    ``setting``: :data:`bnlstm.nn.fused.LOOP_THREADS`."""
    if device.type != "cpu":
        return "threads", False        # GPU kernels: the CPU thread count does not matter
    if torch.get_num_threads() <= 1:
        return "serial", False
    if setting != "auto":
        if setting not in LOOP_MODES:
            raise ValueError(f"bnlstm.nn.fused.LOOP_THREADS must be 'auto' or one of {LOOP_MODES}, "
                             f"not {setting!r}")
        return setting, False
    return ws.tuner.mode()
