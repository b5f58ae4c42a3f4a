"""The run engine: live, controllable training runs, on Dask worker processes or in threads.

The dashboard (and a notebook) never trains in its own process when it uses
:class:`DaskEngine`: each run is one long Dask task (:func:`train_on_worker`) on a
worker process, so the cluster is the queue (a run waits for a free worker thread;
one thread per worker, one run per thread). The web process only sends commands and
reads records:

    web process                              scheduler                 worker process
    RunHandle.pause() --> engine outbox --> Queue "<key>-cmd"    -->  Trainer.pause()
                                            Event "<key>-bell"   -->  (wakes the worker)
    RunHandle.read()  <-- handle history <-- Queue "<inbox>"     <--  records, in batches
                     (wakes the pump)   <-- Event "<inbox>-bell" <--  (an answer is in)

The worker sends its records every ``FLUSH_S`` and the pump takes them every ``TICK_S``,
but what a click waits for goes at once: a command rings the run's bell, so the worker
reads it when it comes; the trainer's answer (a state record: paused, running, ended; or
the update a Step asked for) rings it too, so the worker sends it when it happens; and a
batch with such an answer in it rings the web process's bell, so its pump takes it then.
(The worker still reads its command queue once a second without a ring, in case one
was lost.)

One *pump* thread per web process does all Dask calls (the server's event loop never
blocks on the cluster): it submits runs, forwards commands, takes every run's record
batches off the process's one inbox queue (one call per tick, however many runs), reads
the queue positions once a second and renews the process's lease. A run:

- streams the trainer's records (batched every ``FLUSH_S`` on the worker);
- obeys ``pause``/``resume``/``step``/``stop`` and live settings (``lr``, ...) at its
  next update;
- *parks* when paused for longer than ``pause_timeout`` s: it hands its worker to the
  next run in the queue and keeps a resumable snapshot in the web process; ``resume``
  or ``step`` queues it again and it goes on from that step;
- ends ``failed``, with the reason, when its worker dies (killed, or over its memory
  limit); a run never restarts on its own;
- stops when the web process that owns it goes (its lease lapses for ``LEASE_S``).

:class:`ThreadEngine` does the same with the trainer in a thread of this process (for a
notebook that wants no cluster, and for tests); its handles have the same methods.

Every handle keeps the run's records (its *history*): any number of readers
(:meth:`RunHandle.reader`) get every record from the first, so a read-only view of a
run can open at any time. Nothing here imports Panel.
"""
from __future__ import annotations

import copy
import functools
import io
import itertools
import logging
import os
import pickle
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .config import TrainConfig
from .trainer import TERMINAL

RUN_PREFIX = "bnlstm-run"
FLUSH_S = 0.1           # the worker sends its records this often (commands, and the state
                        # records that answer them, go at once: see _wait_for_bell)
TICK_S = 0.1            # the pump's period in the web process while runs are on the cluster
IDLE_TICK_S = 1.0       # ... and while none is
POSITIONS_S = 1.0       # queue positions are read this often
FOLLOW_S = 0.25         # a followed run's new records go to the other web processes this often
FOLLOW_POLL_S = 1.0     # a follower looks up the page it follows (its runs) this often
FOLLOW_KEY = "bnlstm-follow"   # scheduler metadata [key][token]: a page other processes may follow
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
LEASE_S = 60.0          # a run whose web process has not renewed its lease for this long stops
UNREAD_LIMIT = 4000     # record batches left unread in the inbox before a run stops itself
START_MODE = {"pause": "paused", "resume": "run", "step": "step"}   # a control -> how a
                                        # run that has not reached a worker yet will start
RECORD_FILES = ("config.json", "summary.json", "checkpoint.pt", "error.txt")
WORKER_DIED = ("its worker process died (it went over the worker's memory limit, or was "
               "killed); the server and the other runs go on. Press Start for a new run")


WORKER_OUT_OF_MEMORY = (
    "its worker went over its memory limit ({used} used, the limit is {limit}) and was "
    "restarted: this run's model or batch is too big for one worker. Press Start with a "
    "smaller hidden size or batch (or give the workers more: BNLSTM_WORKER_MEMORY); the "
    "server and the other runs go on")


class EngineError(RuntimeError):
    """The engine cannot run anything (no cluster, a bad address), with the reason."""


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        sys.stderr.write(f"bnlstm: ignoring {name}={raw!r} (not a number); using {default}\n")
        return default


@functools.lru_cache(maxsize=None)
def _root_task_class():
    """Dask's ``Task`` class if it takes the root-task flag (``data_producer``), else
    ``None`` (an older Dask: the runs are then ``client.submit``-ted). Checked once."""
    try:
        from dask._task_spec import Task
        Task("bnlstm-check", print, _data_producer=True)
        return Task
    except (ImportError, TypeError):
        return None


def _queued_task(key: str, fn: Callable, args: tuple):
    """The run's Dask task, marked so that it waits on the scheduler for a free worker.

    Dask's scheduler keeps a task back until a worker has a free thread only when it
    takes the task for a "root" task; a task of a small group (a few runs: fewer than
    twice the cluster's threads) goes straight to the least busy worker, busy or not, and
    would wait there behind that worker's run (a teacher's run of 100,000 updates) while
    another worker is free. Dask's task spec has a flag for this (``data_producer``: a
    task that only produces data is a root task). ``None`` on a Dask without it (then
    the runs are ``client.submit``-ted as before).
    """
    task_class = _root_task_class()
    return None if task_class is None else task_class(key, fn, *args, _data_producer=True)


def _saturation_warning(client) -> str:
    """What is wrong with a cluster's queue for runs ('' if nothing): its scheduler must
    send a worker thread one run at a time (``worker-saturation`` 1.0)."""
    try:
        sat = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    except Exception:
        return ""
    if sat <= 1.0:
        return ""
    return (f"the Dask scheduler at {client.scheduler.address} sends each worker thread up to "
            f"{sat:g} times its share of runs (worker-saturation {sat:g}), so a run can wait "
            "behind another on a busy worker while a worker is free; start the scheduler "
            "with DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0")


# =============================================================================== the run handle
class RunHandle:
    """One run as its owner sees it: controls, state, its records so far.

    ``state`` is what the records said last (``queued`` before the first); ``position``
    the 1-based place in the cluster's queue (0 when training or done); ``files`` the
    run record (summary, checkpoint, ...) once it has ended. Controls never block.
    """

    def __init__(self, engine, config: TrainConfig, mode: str = "run"):
        self.engine = engine
        self.config = TrainConfig.from_dict(config.to_dict())     # the run's own copy
        self.mode = mode                         # before it starts: run, paused or step
        self.id = uuid.uuid4().hex[:12]
        self.state = "queued"
        self.reason = ""
        self.step = 0
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
                if rec.get("kind") == "state":
                    self.state, self.reason = rec["state"], rec.get("reason", "")
                    if self.state != "queued":
                        self.position = 0
                if rec.get("step"):
                    self.step = rec["step"]
                self.history.append(rec)
        for rec in recs:
            for fn in list(self.listeners):
                try:
                    fn(rec)
                except Exception:        # a broken listener must not stop the records
                    pass

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

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


def _state(state: str, step: int = 0, reason: str = "") -> Dict[str, Any]:
    return {"kind": "state", "state": state, "step": step, "reason": reason, "elapsed": 0.0}


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


# ============================================================================== in-process threads
class ThreadEngine:
    """Runs as trainer threads of this process, at most ``max_runs`` at once (FIFO queue).

    For a notebook that wants no cluster, and for tests. Same handles and controls as
    :class:`DaskEngine`; a paused run keeps its slot (there is no one else to give it to).
    """

    kind = "threads"

    def __init__(self, max_runs: Optional[int] = None, data: Optional[Callable] = None):
        self.max_runs = max(1, int(max_runs or max(2, os.cpu_count() or 1)))
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

    def submit(self, config: TrainConfig, mode: str = "run") -> RunHandle:
        h = RunHandle(self, config, mode)
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
                if not self._queue or len(self._active) >= self.max_runs:
                    return
                h = self._queue.popleft()
                self._active.append(h)
            h.position = 0
            self._launch(h)

    def _launch(self, h: RunHandle) -> None:
        from . import tasks
        from .records import RunRecorder
        from .trainer import Trainer
        out = Path(tempfile.mkdtemp(prefix="bnlstm-run-"))
        try:
            task = tasks.get(h.config.task)
            data = self._data or (lambda t=h.config.task: tasks.shared_data(t))
            trainer = Trainer(h.config, experiment=task.experiment(h.config, data=data),
                              callbacks=[lambda rec, h=h: h._receive([rec])])
        except Exception as exc:
            shutil.rmtree(out, ignore_errors=True)
            h._receive([_state("failed", 0, f"{type(exc).__name__}: {exc}")])
            self._ended(h, {})
            return
        recorder = RunRecorder(out).attach(trainer)

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
                h._receive([_state("stopped", 0, "stopped before it left the queue")])
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


# ================================================================================ the worker side
_NICED = False


def _lower_priority() -> None:
    """Once per worker process: a lower CPU priority (``$BNLSTM_WORKER_NICE``, default 10;
    0 keeps it), so that on a machine shared with the web server, its pages and clicks
    always get the CPU first and training takes what is left."""
    global _NICED
    if _NICED:
        return
    _NICED = True
    try:
        n = int(_env_float("BNLSTM_WORKER_NICE", 10))
        if n > 0:
            os.nice(n)
    except (OSError, AttributeError, ValueError):
        pass


def train_on_worker(key: str, run_id: str, config: Dict[str, Any], inbox: str, lease: str,
                    mode: str = "run", resume: Optional[bytes] = None, threads: int = 1,
                    pause_timeout: float = 300.0, lease_s: float = LEASE_S,
                    flush_s: float = FLUSH_S) -> Dict[str, Any]:
    """The body of a run's Dask task: train ``config`` on this worker, live.

    Records go to the ``inbox`` queue as pickled ``(run_id, [records])`` batches, every
    ``flush_s`` and whenever the event ``<key>-bell`` rings (a command came, or the
    trainer answered one); commands come from the queue ``<key>-cmd``. Returns
    ``{"state", "files"}`` (the run record's files as bytes) or, for a parked run,
    ``{"state": "parked", "snapshot": bytes}``.
    """
    import torch
    from distributed import Event, Queue, Variable, get_client

    from . import tasks
    from .records import RunRecorder
    from .trainer import Trainer

    _lower_priority()
    client = get_client()
    out_q = Queue(inbox, client=client)
    cmd_q = Queue(key + "-cmd", client=client)
    bell = Event(key + "-bell", client=client)          # a command, or the trainer's answer
    pump_bell = Event(inbox + "-bell", client=client)   # we ring it: an answer is in
    buf: "deque[Dict[str, Any]]" = deque()
    parked: Optional[bytes] = None      # a snapshot, once the run gives its worker back
    why_stop = ""                       # set when the worker stops the run itself

    def relabel(batch: List[Dict[str, Any]]) -> None:
        """The trainer's "stopped" record says why the worker stopped it."""
        for i, rec in enumerate(batch):
            if rec.get("kind") != "state" or rec.get("state") != "stopped":
                continue
            if parked is not None:
                batch[i] = _state("parked", rec.get("step", 0), (
                    f"paused for more than {pause_timeout:.0f} s, so its training slot went "
                    "to the next run; Resume or Step puts it back in the queue and it goes "
                    "on from here"))
            elif why_stop:
                batch[i] = {**rec, "reason": f"stopped at step {rec.get('step', 0)}: {why_stop}"}

    trainer = None
    answer = threading.Event()          # the trainer answered a command (set on its thread)

    def on_record(rec: Dict[str, Any]) -> None:       # on the trainer's thread
        buf.append(rec)
        kind = rec.get("kind")
        if kind == "state" or (kind == "train" and trainer is not None and trainer.paused):
            answer.set()                # paused, resumed, a Step's update, ended: sent now,
            _ring(bell)                 # not at the next flush

    def flush() -> None:
        batch = []
        while buf:                      # the trainer thread appends meanwhile: pop, never iterate
            batch.append(buf.popleft())
        if batch:
            relabel(batch)
            out_q.put(pickle.dumps((run_id, batch), protocol=pickle.HIGHEST_PROTOCOL))
            if answer.is_set():         # after the put: the pump finds the batch when woken
                answer.clear()
                _ring(pump_bell)

    started = Event(key + "-started", client=client)
    if started.is_set():             # Dask started this task again: its first worker died
        buf.append(_state("failed", 0, WORKER_DIED))
        flush()
        return {"state": "failed", "files": {}}
    started.set()
    if threads:
        torch.set_num_threads(int(threads))
    cfg = TrainConfig.from_dict(config)
    tmp = Path(tempfile.mkdtemp(prefix="bnlstm-worker-run-"))
    try:
        snap = (torch.load(io.BytesIO(resume), map_location="cpu", weights_only=True)
                if resume else None)
        task = tasks.get(cfg.task)
        trainer = Trainer(cfg, task.experiment(cfg, data=lambda: tasks.shared_data(cfg.task)),
                          callbacks=[on_record], resume=snap)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        buf.append(_state("failed", 0, f"{type(exc).__name__}: {exc}"))
        flush()
        return {"state": "failed", "files": {}}
    recorder = RunRecorder(tmp, prior_wall_time=snap.get("elapsed", 0.0) if snap else 0.0)
    recorder.attach(trainer)
    if mode == "step":
        trainer.step()
    else:
        trainer.start(paused=mode == "paused")
    lease_var = Variable(lease, client=client)
    lease_seen, lease_at = None, time.monotonic()
    checked_at = time.monotonic()
    paused_since: Optional[float] = None
    read_at = 0.0                       # the command queue is read when the bell rings, and
    try:                                # once a second anyway (a ring that failed)
        while trainer.alive or trainer.state == "idle":
            rung = _wait_for_bell(bell, flush_s)     # flush_s, or less when it rings
            if rung or time.monotonic() - read_at >= 1.0:
                read_at = time.monotonic()
                cmds = cmd_q.get(batch=True)         # never blocks (a timed-out get logs
            else:                                    # errors)
                cmds = []
            for c in cmds:
                apply_command(trainer, c, cfg)
                if c.get("op") == "step":
                    paused_since = None
            now = time.monotonic()
            if trainer.waiting:
                paused_since = paused_since or now
                if now - paused_since > pause_timeout:           # give the worker back
                    blob = io.BytesIO()
                    torch.save(trainer.snapshot(), blob)
                    parked = blob.getvalue()
                    trainer.stop()
            else:
                paused_since = None
            if now - checked_at > 5.0:          # is anyone still there?
                checked_at = now
                try:
                    seen = lease_var.get(timeout=2)
                except Exception:
                    seen = lease_seen
                if seen != lease_seen:
                    lease_seen, lease_at = seen, now
                elif now - lease_at > lease_s and not why_stop:
                    why_stop = "the web server that started it is gone"
                    trainer.stop()
                try:
                    unread = out_q.qsize()
                except Exception:
                    unread = 0
                if unread > UNREAD_LIMIT and not why_stop:
                    why_stop = "no one has read its records for a long time"
                    trainer.stop()
            flush()
        trainer.join(30)
        flush()
        recorder.close()
        if parked is not None:
            return {"state": "parked", "snapshot": parked, "files": {}}
        files = {n: (tmp / n).read_bytes() for n in RECORD_FILES if (tmp / n).is_file()}
        return {"state": trainer.state, "files": files}
    finally:
        trainer.stop()
        trainer.join(30)                # its recorder writes in tmp until it has ended
        shutil.rmtree(tmp, ignore_errors=True)
        for q in (out_q, cmd_q):
            try:
                q.close()
            except Exception:
                pass


def _wait_for_bell(bell, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``bell`` (a Dask ``Event``) to ring, and clear it: True if
    it rang. Cleared before the caller reads what it rang for, so a later ring is never lost."""
    try:
        rung = bell.wait(timeout)
        if rung:
            bell.clear()
        return rung
    except Exception:                   # the scheduler is away: poll as before
        time.sleep(timeout)
        return True


def _ring(bell) -> None:
    try:
        bell.set()
    except Exception:                   # the reader polls anyway: only later
        pass


def warm_worker() -> float:
    """:func:`warm_up` on a worker (run on each at start), at the workers' lower priority."""
    _lower_priority()
    return warm_up()


def warm_up() -> float:
    """Pay a process's one-off costs before its first run, not during it: load MNIST, and
    take one step of a tiny model (the first ``torch.optim`` optimizer imports
    ``torch._dynamo``, about 1.3 s here; the first forward and backward set up kernels).
    Returns the seconds it took."""
    t0 = time.perf_counter()
    import torch
    import torch.nn.functional as F

    from . import tasks
    from .experiment import build_model, make_optimizer
    try:
        tasks.shared_data("row")
    except Exception:
        pass
    cfg = TrainConfig(task="row", hidden=8, batch_size=4)
    model = build_model(cfg, 28, 28)
    opt = make_optimizer(cfg, model.parameters())
    F.cross_entropy(model(torch.zeros(4, 28, 28)), torch.zeros(4, dtype=torch.long)).backward()
    opt.step()
    return time.perf_counter() - t0


def queue_view(dask_scheduler=None, prefix: str = RUN_PREFIX) -> Dict[str, Any]:
    """On the scheduler: the runs waiting for a worker (keys, first in line first), how many
    train, and how many worker threads there are. Shared by every web process."""
    events = getattr(dask_scheduler.extensions.get("events"), "_events", {})
    waiting, running = [], 0
    for key, ts in dask_scheduler.tasks.items():
        if not (isinstance(key, str) and key.startswith(prefix)):
            continue
        if ts.state not in ("queued", "no-worker", "processing", "waiting", "released"):
            continue
        ev = events.get(key + "-started")
        if ev is not None and ev.is_set():
            running += 1
        else:
            waiting.append((ts.priority or (0,), key))
    waiting.sort()
    return {"waiting": [k for _, k in waiting], "running": running,
            "slots": sum(ws.nthreads for ws in dask_scheduler.workers.values())}


# ================================================================================ the Dask engine
class DaskEngine:
    """Runs as Dask tasks on worker processes; this process only streams and controls.

    Args:
        address: an existing scheduler (``tcp://host:8786``; default
            ``$BNLSTM_DASK_SCHEDULER``); without one, an embedded ``LocalCluster`` of
            ``n_workers`` processes on loopback, started on first use.
        n_workers: worker processes of the embedded cluster (default ``$BNLSTM_MAX_RUNS``,
            else the machine's cores, at least 2): runs that train at once.
        memory_limit: per worker (default ``$BNLSTM_WORKER_MEMORY``, else the machine's
            memory shared by the workers and this process); a run over it ends ``failed``.
        threads: torch threads per run.
        pause_timeout: seconds a run may stay paused before it gives its worker back
            (default ``$BNLSTM_PAUSE_TIMEOUT``, else 300).
    """

    kind = "dask"
    flush_s = FLUSH_S         # how often a run's worker sends its records (see train_on_worker)

    def __init__(self, address: Optional[str] = None, n_workers: Optional[int] = None,
                 memory_limit: Optional[str] = None, threads: int = 1,
                 pause_timeout: Optional[float] = None, log: Callable[[str], None] = None):
        self.address = address if address is not None else _env("BNLSTM_DASK_SCHEDULER")
        self.n_workers = int(n_workers or int(_env_float("BNLSTM_MAX_RUNS", 0))
                             or max(2, os.cpu_count() or 1))
        self.memory_limit = memory_limit or _env("BNLSTM_WORKER_MEMORY") or None
        self.threads = max(1, int(threads))
        self.pause_timeout = float(pause_timeout if pause_timeout is not None
                                   else _env_float("BNLSTM_PAUSE_TIMEOUT", 300.0))
        self.log = log or (lambda msg: None)
        self.inbox = f"bnlstm-inbox-{uuid.uuid4().hex[:12]}"
        self.lease = self.inbox + "-lease"
        self.client = None
        self.cluster = None
        self.error: Optional[str] = None
        self.ready = threading.Event()
        self._outbox: "queue.Queue[tuple]" = queue.Queue()
        self._wake = threading.Event()
        self._handles: Dict[str, RunHandle] = {}       # run id -> handle (live or ending)
        self._futures: Dict[str, Any] = {}             # run id -> its current future
        self._keys: Dict[str, str] = {}                # run id -> its current task key
        self._cmd_queues: Dict[str, Any] = {}          # task key -> its command Queue
        self._snapshots: Dict[str, bytes] = {}         # run id -> parked snapshot
        self._attempts = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._counts = {"active": 0, "queued": 0, "max_runs": self.n_workers}
        # following across web processes (only on a shared cluster: self.address)
        self._follows: Dict[str, RemotePage] = {}       # token -> a page followed here
        self._published: Dict[str, Any] = {}            # token -> what was last published
        self._unpublish_at: Dict[str, float] = {}       # token -> when its entry goes
        self._subs: Dict[str, Dict[str, list]] = {}     # run id -> {follower inbox: [Queue, cursor]}

    # ---------------------------------------------------------------- public
    def start(self) -> "DaskEngine":
        """Start the pump thread (which starts or joins the cluster); returns at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._pump, name="bnlstm-engine",
                                                daemon=True)
                self._thread.start()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the cluster is up; :class:`EngineError` if it cannot be."""
        self.start()
        if not self.ready.wait(timeout):
            raise EngineError(f"the Dask cluster did not start within {timeout:.0f} s")
        if self.error:
            raise EngineError(self.error)

    def submit(self, config: TrainConfig, mode: str = "run") -> RunHandle:
        """Queue a run; returns its handle at once (the pump submits it)."""
        self.start()
        h = RunHandle(self, config, mode)
        with self._lock:
            self._handles[h.id] = h
        self._send(("submit", h))
        return h

    def counts(self) -> Dict[str, int]:
        """Runs training, runs waiting, worker threads: the whole cluster's (every web
        process's runs), as of the last second."""
        return dict(self._counts)

    # ---------------------------------------------------------------- follow
    @property
    def shared(self) -> bool:
        """Whether other web processes use this cluster (``address`` given): only then can
        a page of one process follow a page of another."""
        return bool(self.address)

    def publish(self, token: str, runs: Optional[List[Dict[str, Any]]]) -> None:
        """Let pages of other web processes on this cluster follow page ``token``: ``runs``
        its runs now (dicts with ``id``, the handle's, and what a follower shows, such as
        ``config`` as a dict); ``None`` once the page has closed. Never blocks."""
        if self.shared:
            self._send(("publish", token, None if runs is None else list(runs)))

    def follow(self, token: str) -> Optional[RemotePage]:
        """Page ``token`` of another web process on this cluster, kept up to date by the
        pump (``None`` without a shared cluster). Call :meth:`unfollow` when done."""
        if not self.shared:
            return None
        self.start()
        with self._lock:
            page = self._follows.get(token)
            if page is None:
                page = self._follows[token] = RemotePage(token)
                self.log(f"engine: looking for page {token[:4]} in the other web processes")
            page.users += 1
        self._wake.set()
        return page

    def unfollow(self, page: RemotePage) -> None:
        """One page fewer follows ``page``; with none left, its runs' records stop coming."""
        with self._lock:
            page.users -= 1
        self._wake.set()

    def describe(self) -> str:
        if self.error:
            return f"no cluster ({self.error})"
        if self.cluster is not None:
            return f"a local Dask cluster of {self.n_workers} worker processes"
        return f"the Dask cluster at {self.address}" if self.address else "starting"

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    # ------------------------------------------------------------- controls
    def _send(self, item: tuple) -> None:
        self._outbox.put(item)
        self._wake.set()

    def _control(self, h: RunHandle, cmd: Dict[str, Any]) -> None:
        if h.closed:
            return
        self._send(("control", h, cmd))

    def _forget(self, h: RunHandle) -> None:
        self._send(("forget", h))

    # ------------------------------------------------------------------ pump
    def _connect(self) -> None:
        from distributed import Queue, Variable
        if self.address:
            self.client, _ = open_cluster(self.address, source="BNLSTM_DASK_SCHEDULER")
            warning = _saturation_warning(self.client)
            if warning:
                sys.stderr.write(f"bnlstm: {warning}\n")
        else:
            if _forked_web_process():
                sys.stderr.write(
                    "bnlstm: this web process is one of several (panel serve --num-procs) and "
                    "starts a Dask cluster of its own, so the processes do not share one queue; "
                    "start one cluster and set BNLSTM_DASK_SCHEDULER to its address\n")
            # EMBEDDED_CLUSTER_CONFIG says why each setting: the scheduler and the nannies
            # live in this (the web) process, so their timers cost the pages' CPU
            settings = dict(EMBEDDED_CLUSTER_CONFIG)
            if _root_task_class() is None:     # runs go straight to workers:
                settings["distributed.scheduler.work-stealing"] = True   # a free one steals
            self.client, self.cluster = open_cluster(
                None, n_workers=self.n_workers, threads=self.threads,
                memory_limit=self.memory_limit, settings=settings)
        if self.cluster is not None:       # the in-process scheduler: no line per poll
            logging.getLogger("distributed.worker").addFilter(_QuietQueueView())   # its run()
        self._inbox = Queue(self.inbox, client=self.client)
        self._lease = Variable(self.lease, client=self.client)
        self._lease_n = 0
        self._lease.set(self._lease_n)
        self._follow_requests = Queue(self.inbox + "-follow", client=self.client) \
            if self.shared else None
        threading.Thread(target=self._listen_for_bell, name="bnlstm-engine-bell",
                         daemon=True).start()
        threading.Thread(target=self._warm_workers, name="bnlstm-engine-warm",
                         daemon=True).start()

    def _warm_workers(self) -> None:
        """Data and torch on every worker before the first run needs them (not waited for)."""
        try:
            took = self.client.run(warm_worker)
            self.log(f"engine: workers warmed up in {max(took.values()):.1f} s")
        except Exception as exc:
            self.log(f"engine: warm-up failed (harmless): {exc!r}")

    def _listen_for_bell(self) -> None:
        """Wake the pump when a worker rings this process's bell (an answer to a command is
        in the inbox), so a Pause or Resume is shown without waiting for the pump's next
        tick."""
        from distributed import Event
        bell = Event(self.inbox + "-bell", client=self.client)
        while not self._closing:
            if _wait_for_bell(bell, 1.0):
                self._wake.set()

    def _pump(self) -> None:
        t0 = time.perf_counter()
        try:
            self._connect()
            self.log(f"engine: {self.describe()} ready in {time.perf_counter() - t0:.1f} s")
        except Exception as exc:
            self.error = str(exc) if isinstance(exc, EngineError) else \
                f"the Dask cluster did not start: {type(exc).__name__}: {exc}"
            self.log(f"engine: {self.error}")
            self.ready.set()
            self._fail_everything(self.error)
            return
        self.ready.set()
        last_pos = last_lease = last_forward = last_poll = last_requests = last_check = 0.0
        while not self._closing:
            busy = (bool(self._futures) or not self._outbox.empty() or bool(self._subs)
                    or bool(self._follows))
            self._wake.wait(TICK_S if busy else IDLE_TICK_S)    # a command wakes it at once
            self._wake.clear()
            try:
                self._handle_outbox()
                self._take_records()
                self._check_futures()
                now = time.monotonic()
                queued = any(h.state == "queued" for h in list(self._handles.values()))
                if now - last_pos >= (POSITIONS_S if queued else 5 * POSITIONS_S):
                    last_pos = now
                    self._read_positions()
                if now - last_lease >= 5.0:
                    last_lease = now
                    self._lease_n += 1
                    self._lease.set(self._lease_n)
                if self.shared:
                    if now - last_requests >= (FOLLOW_S if self._subs else FOLLOW_POLL_S):
                        last_requests = now
                        self._take_follow_requests()
                    if self._subs and now - last_forward >= FOLLOW_S:
                        last_forward = now
                        check = now - last_check >= 5.0
                        last_check = now if check else last_check
                        self._forward(check=check)
                    if now - last_poll >= FOLLOW_POLL_S:
                        last_poll = now
                        self._poll_follows()
                        self._expire_published(now)
            except Exception as exc:          # the pump never dies of one bad call
                self.log(f"engine: pump error {type(exc).__name__}: {exc}")
                time.sleep(0.5)
        try:
            for h in list(self._handles.values()):
                if h.live:
                    self._command(h, {"op": "stop"})
            time.sleep(0.5)
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        except Exception:
            pass

    def _fail_everything(self, why: str) -> None:
        for h in list(self._handles.values()):
            if h.live:
                h._receive([_state("failed", h.step, why)])
                h.done.set()
        while True:           # later submissions fail too, as they come
            try:
                item = self._outbox.get(timeout=1.0)
            except queue.Empty:
                if self._closing:
                    return
                continue
            if item[0] == "submit":
                item[1]._receive([_state("failed", 0, why)])
                item[1].done.set()

    def _submit_task(self, h: RunHandle, resume: Optional[bytes] = None) -> None:
        from distributed import Queue
        key = f"{RUN_PREFIX}-{h.id}-{next(self._attempts)}"
        # the run's command queue, made once, before the worker asks for it
        self._cmd_queues[key] = Queue(key + "-cmd", client=self.client)
        args = (key, h.id, h.config.to_dict(), self.inbox, self.lease, h.mode, resume,
                self.threads, self.pause_timeout, LEASE_S, self.flush_s)
        priority = -int(time.time() * 1000)            # first come, first served
        task = _queued_task(key, train_on_worker, args)
        if task is not None:
            fut = self.client.get({key: task}, key, sync=False, retries=0, priority=priority)
        else:                                          # an older Dask: see _queued_task
            fut = self.client.submit(train_on_worker, *args, key=key, pure=False, retries=0,
                                     priority=priority)
        self._keys[h.id], self._futures[h.id] = key, fut
        self.log(f"engine: run {h.id} submitted ({h.config.summary()})")

    def _command(self, h: RunHandle, cmd: Dict[str, Any]) -> None:
        from distributed import Event
        key = self._keys.get(h.id)
        q = self._cmd_queues.get(key)
        if q is not None:
            q.put(cmd)
            _ring(Event(key + "-bell", client=self.client))   # after the put (see _wait_for_bell)

    def _handle_outbox(self) -> None:
        while True:
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                return
            what, h = item[0], item[1]
            if what == "publish":
                self._publish(item[1], item[2])
            elif what == "submit":
                if not h.closed:
                    self._submit_task(h)
            elif what == "control":
                self._on_control(h, item[2])
            elif what == "forget":        # a run on a worker goes once its worker has let go
                if h.id not in self._futures:
                    self._drop(h)

    def _on_control(self, h: RunHandle, cmd: Dict[str, Any]) -> None:
        op = cmd["op"]
        if h.ended:
            return
        if h.id in self._snapshots:                      # parked
            if op in ("resume", "step"):
                h.mode = START_MODE[op]
                h._receive([_state("queued", h.step, "back in the queue")])
                self._submit_task(h, resume=self._snapshots.pop(h.id))
            elif op == "stop":
                self._snapshots.pop(h.id, None)
                h._receive([_state("stopped", h.step, f"stopped at step {h.step} (parked)")])
                h.done.set()
            return
        if h.state == "queued":                          # not on a worker yet
            if op == "stop":
                self._command(h, cmd)      # in case a worker has just taken it
                fut = self._futures.pop(h.id, None)
                if fut is not None:
                    fut.cancel()
                h._receive([_state("stopped", 0, "stopped before it left the queue")])
                h.done.set()
                return
            if op in ("pause", "resume", "step"):
                h.mode = START_MODE[op]
        self._command(h, cmd)          # also when queued: the worker reads it at its start

    def _drop(self, h: RunHandle) -> None:
        if h.id in self._subs:             # followers get its last records first
            self._forward(only=h.id)
            self._subs.pop(h.id, None)
        fut = self._futures.pop(h.id, None)
        if fut is not None and not fut.done():
            fut.cancel()
        self._snapshots.pop(h.id, None)
        key = self._keys.pop(h.id, None)
        if key is not None:
            self._release_key(key)
        with self._lock:
            self._handles.pop(h.id, None)
        h.history = []
        h.files = {}

    def _release_key(self, key: str) -> None:
        """Let go of a task's command queue (the scheduler drops it once the worker has let
        go too) and its started event."""
        from distributed import Event
        q = self._cmd_queues.pop(key, None)
        for fn in ((q.close if q is not None else (lambda: None)),
                   lambda: Event(key + "-started", client=self.client).clear(),
                   lambda: Event(key + "-bell", client=self.client).clear()):
            try:
                fn()
            except Exception:
                pass

    def _take_records(self) -> None:
        for blob in self._inbox.get(batch=True):
            try:
                run_id, recs = pickle.loads(blob)
            except Exception:
                continue
            h = self._handles.get(run_id)
            if h is not None:
                h._receive(recs)

    def _check_futures(self) -> None:
        for run_id, fut in list(self._futures.items()):
            if not fut.done():
                continue
            h = self._handles.get(run_id)
            self._futures.pop(run_id, None)
            key = self._keys.get(run_id)
            try:
                res = fut.result(timeout=5)
                err = None
            except Exception as exc:
                res, err = None, exc
            if key is not None:
                self._release_key(key)
            if h is None:
                continue
            self._take_records()                      # the run's last records come first
            if res is not None and res.get("state") == "parked":
                if h.closed:
                    self._drop(h)
                    continue
                self._snapshots[run_id] = res["snapshot"]
                if h.state != "parked":
                    h._receive([_state("parked", h.step, "paused too long: slot given back")])
                continue
            if err is not None and not h.ended:
                name = type(err).__name__
                why = self._death_reason(err) if name == "KilledWorker" else f"{name}: {err}"
                h._receive([_state("failed", h.step, why)])
            elif res is not None and not h.ended:     # ended without a last state record
                h._receive([_state(res.get("state", "failed"), h.step, "")])
            h.files = dict((res or {}).get("files") or {})
            h.done.set()
            self.log(f"engine: run {run_id} ended: {h.state} ({h.reason})")
            if h.closed:
                self._drop(h)

    def _death_reason(self, err: Exception) -> str:
        """Why a run's worker died: over its memory limit (the nanny's event for it), or
        :data:`WORKER_DIED` (killed, crashed, or no event found)."""
        worker = getattr(err, "last_worker", None)
        address = getattr(worker, "address", None)
        for attempt in range(3):        # the nanny's event may come a moment after the news
            if attempt:
                time.sleep(0.2)
            try:
                events = self.client.get_events("worker-restart-memory")
            except Exception:
                events = ()
            for _, event in events:
                if isinstance(event, dict) and event.get("worker") == address:
                    limit = getattr(worker, "memory_limit", 0) or 0
                    return WORKER_OUT_OF_MEMORY.format(
                        used=_bytes(event.get("rss", 0)),
                        limit=_bytes(limit) if limit else "unknown")
            if address is None:
                break
        return WORKER_DIED

    def _read_positions(self) -> None:
        try:
            view = self.client.run_on_scheduler(queue_view)
        except Exception:
            return
        waiting = {k: i + 1 for i, k in enumerate(view["waiting"])}
        for run_id, key in list(self._keys.items()):
            h = self._handles.get(run_id)
            if h is not None:
                h.position = waiting.get(key, 0) if h.state == "queued" else 0
        self._counts = {"active": view["running"], "queued": len(waiting),
                        "max_runs": view["slots"] or self.n_workers}


    # ------------------------------------------------- following across processes
    def _publish(self, token: str, runs: Optional[List[Dict[str, Any]]]) -> None:
        """The owner's side: page ``token``'s runs in the scheduler's metadata, where
        followers read them."""
        value = {"inbox": self.inbox, "runs": runs if runs is not None else
                 (self._published.get(token) or {}).get("runs", []), "closed": runs is None}
        if self._published.get(token) == value:
            return
        self._published[token] = value
        self.client.set_metadata([FOLLOW_KEY, token], value)
        if runs is None:                   # followers open now have seen it by then
            self._unpublish_at[token] = time.monotonic() + 60.0

    def _expire_published(self, now: float) -> None:
        for token, at in list(self._unpublish_at.items()):
            if now >= at:
                self._unpublish_at.pop(token)
                self._published.pop(token, None)
                try:
                    self.client.run_on_scheduler(_forget_page, token=token)
                except Exception:
                    pass

    def _take_follow_requests(self) -> None:
        """The owner's side: followers (other web processes) ask for a run's records."""
        from distributed import Queue
        for req in self._follow_requests.get(batch=True):
            run, inbox = req.get("run"), req.get("inbox")
            if req.get("op") == "unsubscribe":
                subs = self._subs.get(run)
                if subs is not None:
                    subs.pop(inbox, None)
                    if not subs:
                        self._subs.pop(run, None)
            elif req.get("op") == "subscribe" and run in self._handles and inbox:
                self._subs.setdefault(run, {})[inbox] = [Queue(inbox, client=self.client), 0]

    def _forward(self, check: bool = False, only: Optional[str] = None) -> None:
        """The owner's side: each followed run's new records to each follower's inbox (up
        to 5 batches of 2,000 a time); ``check``: drop followers that no longer read."""
        for run, subs in list(self._subs.items()):
            if only is not None and run != only:
                continue
            h = self._handles.get(run)
            if h is None:
                self._subs.pop(run, None)
                continue
            for inbox, sub in list(subs.items()):
                q, cursor = sub
                for _ in range(5):
                    recs, nxt = h.records_since(cursor, 2000)
                    if not recs:
                        break
                    q.put(pickle.dumps((run, recs), protocol=pickle.HIGHEST_PROTOCOL))
                    cursor = sub[1] = nxt
                if check:
                    try:
                        gone = q.qsize() > UNREAD_LIMIT      # a follower that went away
                    except Exception:
                        gone = False
                    if gone:
                        subs.pop(inbox, None)
            if not subs:
                self._subs.pop(run, None)

    def _poll_follows(self) -> None:
        """The follower's side: look up each followed page; subscribe to its new runs, let
        go of the ones it no longer has and of pages no one here follows any more."""
        from distributed import Queue
        for token, page in list(self._follows.items()):
            if page.users <= 0:
                with self._lock:
                    if page.users <= 0:
                        self._follows.pop(token, None)
                self._let_go(page, list(page.handles))
                continue
            value = self.client.get_metadata([FOLLOW_KEY, token], default=None)
            if not isinstance(value, dict):          # not published (yet, or any more)
                page.found = bool(page.found)          # once seen, it stays found
                if page.found:
                    page.closed = True
                continue
            page.found, page.closed = True, bool(value.get("closed"))
            if page.requests is None and value.get("inbox"):
                page.requests = Queue(value["inbox"] + "-follow", client=self.client)
            runs = [r for r in value.get("runs") or [] if isinstance(r, dict) and r.get("id")]
            if page.closed:                 # its runs stay as they ended
                continue
            ids = {r["id"] for r in runs}
            self._let_go(page, [rid for rid in page.handles if rid not in ids])
            if page.requests is None:
                continue
            for r in runs:
                if r["id"] in page.handles:
                    continue
                try:
                    config = TrainConfig.from_dict(r.get("config") or {})
                except Exception:
                    continue
                h = FollowedHandle(self, r["id"], config)
                with self._lock:
                    self._handles.setdefault(h.id, h)
                page.handles[h.id] = h
                page.requests.put({"op": "subscribe", "run": h.id, "inbox": self.inbox})
            page.runs = runs

    def _let_go(self, page: RemotePage, run_ids: List[str]) -> None:
        requests = page.requests if not page.closed else None
        for rid in run_ids:
            h = page.handles.pop(rid, None)
            if h is None:
                continue
            if requests is not None:
                try:
                    requests.put({"op": "unsubscribe", "run": rid, "inbox": self.inbox})
                except Exception:
                    pass
            with self._lock:
                if self._handles.get(rid) is h:
                    self._handles.pop(rid, None)


def _forget_page(dask_scheduler=None, token: str = "") -> None:
    """On the scheduler: drop a closed page's entry from the follow metadata."""
    pages = dask_scheduler.task_metadata.get(FOLLOW_KEY)
    if isinstance(pages, dict):
        pages.pop(token, None)


class _QuietQueueView(logging.Filter):
    """Drops the scheduler's line for each queue-position read (once a second)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "queue_view" not in record.getMessage()


def open_cluster(address: Optional[str] = None, n_workers: int = 2, threads: int = 1,
                 memory_limit: Any = None, settings: Optional[Dict[str, Any]] = None,
                 dashboard_address: Optional[str] = None, source: str = "",
                 set_as_default: bool = False):
    """A Dask client, and the cluster it talks to when this process started it.

    With ``address`` (``tcp://host:8786``), the existing cluster's client and ``None``;
    without, an embedded ``LocalCluster`` of ``n_workers`` single-thread worker processes
    on loopback only (``threads`` torch threads each; ``memory_limit`` per worker, default
    the machine's memory shared by the workers and this process) started under the Dask
    ``settings``, and its client. The dashboard's :class:`DaskEngine` and
    :func:`bnlstm.sweep.run_sweep` both start their clusters here. ``source`` names where
    the address came from, for the message; ``set_as_default``: the client becomes this
    process's default (``distributed.wait`` and friends use it). Raises :class:`EngineError` when the
    scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster
    if address:
        try:
            return Client(address, timeout="10s", set_as_default=set_as_default), None
        except Exception as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {address!r}"
                              + (f" ({source})" if source else "")
                              + f": {type(exc).__name__}: {exc}") from None
    with dask.config.set(settings or {}):
        # The nannies get a copy of these settings for every worker they start, also the
        # one that replaces a dead worker after this block has ended (a nanny's own merge
        # would keep views of the global settings, which the block's end puts back to
        # Dask's defaults).
        worker_config = copy.deepcopy(dask.config.config)
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit or _share_of_memory(n_workers),
            env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            config=worker_config)
        try:
            client = Client(cluster, set_as_default=set_as_default)
        except BaseException:
            cluster.close()
            raise
    return client, cluster


def _forked_web_process() -> bool:
    """One of the processes ``panel serve --num-procs N`` forks (Tornado's task id)."""
    try:
        from tornado.process import task_id
        return task_id() is not None
    except Exception:
        return False


def _bytes(n: float) -> str:
    """``1.2 GB``, ``850 MB``: a memory size for a message."""
    n = float(n or 0)
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _share_of_memory(n_workers: int) -> str:
    """The machine's memory divided among the workers and this process."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "auto"
    return str(int(total // (n_workers + 1)))


# ================================================================================== one per process
_ENGINES: Dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(kind: Optional[str] = None, log: Callable[[str], None] = None,
               default: str = "dask"):
    """This process's engine of ``kind`` (``"dask"`` or ``"threads"``; default
    ``$BNLSTM_ENGINE``, else ``default``), made on first use and shared by every caller."""
    kind = (kind or _env("BNLSTM_ENGINE", default)).lower()
    if kind not in ("dask", "threads"):
        raise EngineError(f"unknown engine {kind!r}: choose 'dask' or 'threads'")
    with _ENGINES_LOCK:
        if kind not in _ENGINES:
            if kind == "dask":
                _ENGINES[kind] = DaskEngine(log=log).start()
            else:
                _ENGINES[kind] = ThreadEngine(int(_env_float("BNLSTM_MAX_RUNS", 0)) or None)
        return _ENGINES[kind]
