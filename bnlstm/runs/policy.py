"""Who runs next, kept apart from how runs execute (as Ray Tune's ``FIFOScheduler`` is
apart from its trial executor): the queue's order, the runs one page may have at once,
when a paused run gives its slot back (parking), and the Dask settings that make the
cluster's scheduler keep that order. Both engines and the dashboard read one
:class:`FIFOPolicy`; another policy is another class with the same methods.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence, TypeVar

__all__ = ["FIFOPolicy", "EMBEDDED_CLUSTER_CONFIG", "env_float", "env_str"]

T = TypeVar("T")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def env_float(name: str, default: float) -> float:
    raw = env_str(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        sys.stderr.write(f"bnlstm: ignoring {name}={raw!r} (not a number); using {default}\n")
        return default


# Dask settings for the embedded cluster (see DaskEngine._connect)
EMBEDDED_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,        # a dead worker fails its run
    "distributed.scheduler.worker-saturation": 1.0,     # queued runs wait on the scheduler
    "distributed.scheduler.work-stealing": False,       # runs wait on the scheduler (see
                                                        # _queued_task): nothing to steal
    "distributed.admin.tick.interval": "500ms",         # event-loop health check (was 20 ms)
    "distributed.admin.system-monitor.interval": "5s",  # host CPU/memory samples (was 500 ms)
    "distributed.worker.memory.monitor-interval": "250ms",  # the memory limit's check (100 ms)
    "distributed.worker.profile.enabled": False,        # no stack sampling of the training
}


class FIFOPolicy:
    """First come, first served, a few runs per page, paused runs parked after a while.

    Args:
        session_runs: runs one page (a dashboard session) may have queued or training
            at once (default ``$BNLSTM_SESSION_RUNS``, else 2: a comparison's pair), so a
            class shares the workers fairly.
        pause_timeout: seconds a run may stay paused before it hands its worker to the
            next run in the queue, keeping a resumable snapshot (default
            ``$BNLSTM_PAUSE_TIMEOUT``, else 300).
    """

    def __init__(self, session_runs: Optional[int] = None, pause_timeout: Optional[float] = None):
        if session_runs is None:
            session_runs = int(env_float("BNLSTM_SESSION_RUNS", 2))
        self.session_runs = max(1, int(session_runs))
        self.pause_timeout = float(pause_timeout if pause_timeout is not None
                                   else env_float("BNLSTM_PAUSE_TIMEOUT", 300.0))

    BATCH_OFFSET = 10 ** 15     # below any live run's priority (-1.8e12 in 2026)

    def priority(self, submitted_at: float, batch: bool = False) -> int:
        """The Dask priority of a run submitted at ``submitted_at`` (``time.time()``):
        higher goes first, so earlier runs go first; a ``batch`` run (a sweep's) goes after
        every live run of a page on the same cluster, in its own first-come order."""
        return -int(submitted_at * 1000) - (self.BATCH_OFFSET if batch else 0)

    def next_run(self, queue: Sequence[T], active: int, slots: int) -> Optional[T]:
        """Which queued run takes a free slot now (``None``: none may start)."""
        return queue[0] if queue and active < slots else None

    def may_queue(self, owned: int) -> bool:
        """May a page that has ``owned`` runs queued or training queue another?"""
        return owned < self.session_runs

    def __repr__(self) -> str:
        return f"FIFOPolicy(session_runs={self.session_runs}, pause_timeout={self.pause_timeout:g})"
