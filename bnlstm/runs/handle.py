"""A run as its owner sees it (:class:`RunHandle`: controls, state, every record so far),
its readers, a followed run of another web process, and the control commands a trainer obeys.
The engines (``threads.py``, ``dask.py``) make handles; nothing here knows which one."""
from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Dict, List, Optional

from ..training.config import TrainConfig
from ..training.events import RunState

RECORD_FILES = ("config.json", "summary.json", "checkpoint.pt", "error.txt")

START_MODE = {"pause": "paused", "resume": "run", "step": "step"}   # a control -> how a
                                        # run that has not reached a worker yet will start

class EngineError(RuntimeError):
    """The engine cannot run anything (no cluster, a bad address), with the reason."""


# =============================================================================== the run handle
class RunHandle:
    """One run as its owner sees it: controls, state, its records so far.

    ``state`` is what the records said last (``queued`` before the first); ``position``
    the 1-based place in the cluster's queue (0 when training or done); ``files`` the
    run record (summary, checkpoint, ...) once it has ended. Controls never block.
    """

    def __init__(self, engine, config: TrainConfig, mode: str = "run"):
        self.engine = engine
        self.config = config          # the run's own: its submitter made it for this run
        self.mode = mode                         # before it starts: run, paused or step
        self.data_options: Dict[str, Any] = {}   # the task's data options (a page's own text)
        self.id = uuid.uuid4().hex[:12]
        self.seen = RunState()                   # what its records say (state, step)
        self.position = 0
        self.files: Dict[str, bytes] = {}
        self.history: List[Dict[str, Any]] = []  # every record, in order
        self._lock = threading.Lock()
        self.done = threading.Event()            # set once the run record is complete
        self.closed = False
        self.listeners: List[Callable[[Dict[str, Any]], None]] = []

    # ---- what the engine feeds in (any thread)
    def _receive(self, recs: List[Dict[str, Any]]) -> None:
        with self._lock:
            for rec in recs:
                self.seen.apply(rec)
                if rec.get("kind") == "state" and self.seen.state != "queued":
                    self.position = 0
                self.history.append(rec)
        for rec in recs:
            for fn in list(self.listeners):
                try:
                    fn(rec)
                except Exception:        # a broken listener must not stop the records
                    pass

    @property
    def state(self) -> str:
        """What the records said last (``queued`` before the first)."""
        return self.seen.state

    @property
    def reason(self) -> str:
        return self.seen.reason

    @property
    def step(self) -> int:
        return self.seen.step

    @property
    def ended(self) -> bool:
        return self.seen.ended

    @property
    def live(self) -> bool:
        """Queued, training, paused or parked: not ended and not closed."""
        return not self.ended and not self.closed

    # ---- reading
    def reader(self) -> "Reader":
        """A cursor over this run's records, from the first (any number of them)."""
        return Reader(self)

    def records_since(self, cursor: int, limit: int = 5000):
        with self._lock:
            out = self.history[cursor:cursor + limit]
        return out, cursor + len(out)

    # ---- controls (never block)
    def pause(self) -> None:
        self.engine._control(self, {"op": "pause"})

    def resume(self) -> None:
        self.engine._control(self, {"op": "resume"})

    def step_once(self) -> None:
        self.engine._control(self, {"op": "step"})

    def stop(self) -> None:
        self.engine._control(self, {"op": "stop"})

    def set(self, name: str, value: Any) -> None:
        """A live setting (one of ``TrainConfig.LIVE``) for the rest of the run."""
        setattr(self.config, name, value)
        self.engine._control(self, {"op": "set", "name": name, "value": value})

    def close(self) -> None:
        """Stop the run if it is live and forget it (its records and files are dropped)."""
        if self.closed:
            return
        if self.live:
            self.stop()
        self.closed = True
        self.engine._forget(self)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the run has ended and its files are in (True) or ``timeout``."""
        return self.done.wait(timeout)

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} {self.state} step {self.step}>"


class Reader:
    """Records of one run not yet read by this reader (:meth:`drain`)."""

    def __init__(self, handle: RunHandle):
        self.handle = handle
        self.cursor = 0

    def drain(self, limit: int = 5000) -> List[Dict[str, Any]]:
        out, self.cursor = self.handle.records_since(self.cursor, limit)
        return out


class FollowedHandle(RunHandle):
    """Another web process's run, as a follower on the same cluster sees it: its records
    (forwarded by the process that owns it, from the first), no controls."""

    def __init__(self, engine, run_id: str, config: TrainConfig):
        super().__init__(engine, config)
        self.id = run_id

    def _ignore(self, *args) -> None:
        """A follower's controls change nothing."""

    pause = resume = step_once = stop = set = close = _ignore    # the engine lets go of it


class RemotePage:
    """A page of another web process on this cluster, as :meth:`DaskEngine.follow` sees it.

    ``found``: ``None`` until the first look-up, then whether the page is (or was) open;
    ``closed``: it has closed since; ``runs``: its runs as it published them (dicts with
    ``id``, the run's handle id, and what the page shows of it: ``run``, ``config``,
    ``slot``, ``color``, ``label``, ``mode``); ``handles``: a read-only
    :class:`FollowedHandle` per run, fed with the run's records from the first.
    """

    def __init__(self, token: str):
        self.token = token
        self.found: Optional[bool] = None
        self.closed = False
        self.runs: List[Dict[str, Any]] = []
        self.handles: Dict[str, FollowedHandle] = {}
        self.users = 0
        self.requests = None       # the owner's queue of follow requests, once found


def apply_command(trainer, cmd: Dict[str, Any], config: Optional[TrainConfig] = None) -> None:
    """One control command on a trainer: ``pause``, ``resume``, ``step``, ``stop``, or
    ``set`` (a live setting of ``config``, the trainer's own)."""
    op = cmd.get("op")
    if op == "pause":
        trainer.pause()
    elif op == "resume":
        trainer.resume()
    elif op == "step":
        trainer.step()
    elif op == "stop":
        trainer.stop()
    elif op == "set" and config is not None and cmd.get("name") in TrainConfig.LIVE:
        try:
            setattr(config, cmd["name"], cmd["value"])
        except Exception:         # a bad value leaves the setting as it was
            pass


