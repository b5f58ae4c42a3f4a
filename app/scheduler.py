"""A server-wide limit on how many runs train at once, with a queue for the rest.

The module is imported once per server process, so every browser session shares
one :class:`RunScheduler` (:func:`get_scheduler`). A run that is admitted holds a
slot until its trainer reaches a terminal state (finished, stopped, diverged,
failed) or it is cancelled; a paused run keeps its slot (its model stays in
memory). Queued runs start in arrival order as slots free up.

Settings (environment variables, read when the module is first imported):

- ``BNLSTM_MAX_RUNS``: runs training at once (default ``max(2, os.cpu_count())``).
- ``BNLSTM_TORCH_THREADS``: ``torch.set_num_threads`` for the server process
  (default: cores divided by ``BNLSTM_MAX_RUNS``, at least 1, so concurrent runs
  do not thrash the CPU; ``0`` leaves PyTorch's default).
- ``BNLSTM_APP_LOG=1``: log run and session events to stderr (the browser tests
  read these lines to check that closing a tab stops its training thread).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

_LOG = os.environ.get("BNLSTM_APP_LOG", "") not in ("", "0", "false", "no")


def log(msg: str) -> None:
    """One line on stderr when ``BNLSTM_APP_LOG`` is set (never raises)."""
    if _LOG:
        try:
            sys.stderr.write(f"[bnlstm-app {time.strftime('%H:%M:%S')}] {msg}\n")
            sys.stderr.flush()
        except Exception:
            pass


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.stderr.write(f"bnlstm app: ignoring {name}={raw!r} (not an integer); using {default}\n")
        return default
    return max(minimum, value)


def default_max_runs() -> int:
    return max(2, os.cpu_count() or 1)


class RunScheduler:
    """Admits at most ``max_runs`` runs at once; queues the others (FIFO).

    A *run* here is any object with ``launch()`` (called, outside the lock, when
    it is admitted; it must not block) and a ``label`` for logs. Thread-safe: the
    worker threads call :meth:`release` when their run ends.
    """

    def __init__(self, max_runs: Optional[int] = None):
        self.max_runs = max(1, int(max_runs if max_runs is not None else default_max_runs()))
        self._lock = threading.Lock()
        self._active: List[Any] = []
        self._queue: Deque[Any] = deque()

    def submit(self, run) -> int:
        """Start ``run`` now if a slot is free (returns 0) or queue it (returns its position)."""
        with self._lock:
            if run in self._active or run in self._queue:
                return self._position(run)
            if len(self._active) < self.max_runs:
                self._active.append(run)
                start = True
            else:
                self._queue.append(run)
                start = False
            pos = 0 if start else len(self._queue)
        if start:
            self._launch(run)
        log(f"submit {getattr(run, 'label', run)}: {'started' if start else f'queued at {pos}'}")
        return pos

    def release(self, run) -> None:
        """``run`` ended or was cancelled: free its slot or queue place; start the next."""
        to_start = []
        with self._lock:
            if run in self._active:
                self._active.remove(run)
            else:
                try:
                    self._queue.remove(run)
                except ValueError:
                    pass
            while self._queue and len(self._active) < self.max_runs:
                nxt = self._queue.popleft()
                self._active.append(nxt)
                to_start.append(nxt)
        for nxt in to_start:
            self._launch(nxt)

    def _launch(self, run) -> None:
        try:
            run.launch()
        except Exception as exc:     # a broken run must not block the queue
            log(f"launch of {getattr(run, 'label', run)} failed: {exc!r}")
            self.release(run)

    def _position(self, run) -> int:
        try:
            return list(self._queue).index(run) + 1
        except ValueError:
            return 0

    def position(self, run) -> int:
        """1-based place in the queue, 0 if not queued (admitted or gone)."""
        with self._lock:
            return self._position(run)

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return {"active": len(self._active), "queued": len(self._queue),
                    "max_runs": self.max_runs}


_SCHEDULER: Optional[RunScheduler] = None
_SCHED_LOCK = threading.Lock()


def configure_torch_threads(max_runs: int) -> int:
    """Give each concurrent run a fair share of the cores (``BNLSTM_TORCH_THREADS`` overrides)."""
    cores = os.cpu_count() or 1
    n = _env_int("BNLSTM_TORCH_THREADS", max(1, cores // max(1, max_runs)))
    if n > 0:
        try:
            import torch
            torch.set_num_threads(n)
        except Exception:
            pass
    return n


def get_scheduler() -> RunScheduler:
    """The server-wide scheduler (created on first use from ``BNLSTM_MAX_RUNS``)."""
    global _SCHEDULER
    with _SCHED_LOCK:
        if _SCHEDULER is None:
            _SCHEDULER = RunScheduler(_env_int("BNLSTM_MAX_RUNS", default_max_runs(), minimum=1))
            configure_torch_threads(_SCHEDULER.max_runs)
        return _SCHEDULER
