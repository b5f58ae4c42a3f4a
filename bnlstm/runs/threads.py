"""The thread engine: runs as trainer threads of this process (a notebook without a
cluster, and tests), with the same handles and controls as the Dask engine."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..training.config import TrainConfig
from ..training.events import TERMINAL, state_record
from .handle import RECORD_FILES, START_MODE, RemotePage, RunHandle, apply_command
from .policy import FIFOPolicy
from .worker import warm_up

# ============================================================================== in-process threads
class ThreadEngine:
    """Runs as trainer threads of this process, at most ``max_runs`` at once, in the order
    of its ``policy`` (:class:`~bnlstm.runs.policy.FIFOPolicy`).

    For a notebook that wants no cluster, and for tests. Same handles and controls as
    :class:`DaskEngine`; a paused run keeps its slot (there is no one else to give it to).
    """

    kind = "threads"

    def __init__(self, max_runs: Optional[int] = None, data: Optional[Callable] = None,
                 policy: Optional[FIFOPolicy] = None):
        self.max_runs = max(1, int(max_runs or max(2, os.cpu_count() or 1)))
        self.policy = policy or FIFOPolicy()      # who takes a free slot
        self._data = data
        self._lock = threading.Lock()
        self._active: List[RunHandle] = []
        self._queue: "deque[RunHandle]" = deque()
        self._trainers: Dict[str, Any] = {}
        self._warming: Optional[threading.Thread] = None

    def start(self) -> "ThreadEngine":
        """Warm this process up in the background (once), so the first run waits for nothing."""
        with self._lock:
            if self._warming is not None:
                return self
            self._warming = threading.Thread(target=self._warm, name="bnlstm-warm-up",
                                             daemon=True)
        self._warming.start()
        return self

    @staticmethod
    def _warm() -> None:
        try:
            warm_up()
        except Exception as exc:                 # harmless: the first run pays instead
            sys.stderr.write(f"bnlstm: warm-up failed ({exc!r})\n")

    def submit(self, config: TrainConfig, mode: str = "run",
               data_options: Optional[Dict[str, Any]] = None) -> RunHandle:
        """The run keeps ``config`` and its live settings change it: give each run its own.
        ``data_options``: the task's data options for this run only (as the Dask engine's)."""
        h = RunHandle(self, config, mode)
        h.data_options = dict(data_options or {})
        with self._lock:
            self._queue.append(h)
        self._admit()
        self._positions()
        return h

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return {"active": len(self._active), "queued": len(self._queue),
                    "max_runs": self.max_runs}

    def _positions(self) -> None:
        with self._lock:
            for i, h in enumerate(self._queue):
                h.position = i + 1

    def _admit(self) -> None:
        while True:
            with self._lock:
                h = self.policy.next_run(self._queue, len(self._active), self.max_runs)
                if h is None:
                    return
                self._queue.remove(h)
                self._active.append(h)
            h.position = 0
            self._launch(h)

    def _launch(self, h: RunHandle) -> None:
        from ..training.assemble import assemble_run
        out = Path(tempfile.mkdtemp(prefix="bnlstm-run-"))
        try:
            data = self._data
            if h.data_options:
                from .worker import _data
                data = (lambda t=h.config.task, o=h.data_options: _data(t, None, o))
            trainer, recorder = assemble_run(h.config, data=data, out=out,
                                             callbacks=[lambda rec, h=h: h._receive([rec])])
        except Exception as exc:
            shutil.rmtree(out, ignore_errors=True)
            h._receive([state_record("failed", 0, f"{type(exc).__name__}: {exc}")])
            self._ended(h, {})
            return

        def on_end(rec, h=h, recorder=recorder, out=out):
            if rec.get("kind") == "state" and rec.get("state") in TERMINAL:
                recorder.close()
                files = {n: (out / n).read_bytes() for n in RECORD_FILES if (out / n).is_file()}
                shutil.rmtree(out, ignore_errors=True)
                trainer.experiment = None          # the model, optimizer and data views
                trainer.best = None
                self._ended(h, files)
        trainer.add_callback(on_end)
        self._trainers[h.id] = trainer
        if h.mode == "step":
            trainer.step()
        else:
            trainer.start(paused=h.mode == "paused")

    def _ended(self, h: RunHandle, files: Dict[str, bytes]) -> None:
        h.files = files
        with self._lock:
            if h in self._active:
                self._active.remove(h)
            self._trainers.pop(h.id, None)
        h.done.set()
        self._admit()
        self._positions()

    def _control(self, h: RunHandle, cmd: Dict[str, Any]) -> None:
        op = cmd["op"]
        with self._lock:
            trainer = self._trainers.get(h.id)
            queued = h in self._queue
            if queued and op == "stop":
                self._queue.remove(h)
        if trainer is not None:
            apply_command(trainer, cmd)     # "set": h.config, which the trainer reads, changed
        elif queued:
            if op == "stop":
                h._receive([state_record("stopped", 0, "stopped before it left the queue")])
                h.done.set()
                self._positions()
            else:
                h.mode = START_MODE.get(op, h.mode)

    def _forget(self, h: RunHandle) -> None:
        h.history = []
        h.files = {}

    def publish(self, token: str, runs: Optional[List[Dict[str, Any]]]) -> None:
        """Nothing: only this process's pages can follow a page here (see DaskEngine)."""

    def follow(self, token: str) -> Optional[RemotePage]:
        """``None``: a page of another process cannot be followed without a shared cluster."""
        return None

    def unfollow(self, page: RemotePage) -> None:
        pass

    def join(self, timeout: float = 60.0) -> bool:
        """Wait for every trainer thread (tests)."""
        deadline = time.monotonic() + timeout
        for t in list(self._trainers.values()):
            t.join(max(0.0, deadline - time.monotonic()))
        return not self._trainers

    def close(self) -> None:
        for h in list(self._queue) + list(self._active):
            h.stop()


