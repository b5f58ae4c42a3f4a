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

import functools
import itertools
import logging
import os
import pickle
import queue
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, Optional

from ..training.config import TrainConfig
from .cluster import _bytes, _forked_web_process, open_cluster
from .follow import FOLLOW_POLL_S, FOLLOW_S, Following
from ..training.events import state_record
from .handle import START_MODE, EngineError, RemotePage, RunHandle
from .policy import EMBEDDED_CLUSTER_CONFIG, FIFOPolicy, env_float, env_str
from .worker import FLUSH_S, LEASE_S, WORKER_DIED, _ring, _wait_for_bell, train_on_worker, warm_worker

RUN_PREFIX = "bnlstm-run"

TICK_S = 0.1            # the pump's period in the web process while runs are on the cluster
IDLE_TICK_S = 1.0       # ... and while none is
POSITIONS_S = 1.0       # queue positions are read this often

WORKER_OUT_OF_MEMORY = (
    "its worker went over its memory limit ({used} used, the limit is {limit}) and was "
    "restarted: this run's model or batch is too big for one worker. Press Start with a "
    "smaller hidden size or batch (or give the workers more: BNLSTM_WORKER_MEMORY); the "
    "server and the other runs go on")


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


def submit_run(client, fn: Callable, args: tuple, key: str, priority: int,
               retries: Optional[int] = 0, resources: Optional[Dict[str, float]] = None):
    """The one way a run becomes a Dask task, for the engine's live runs and a sweep's
    alike: a task that waits on the scheduler for a free worker (:func:`_queued_task`),
    at ``priority`` (the policy's: :meth:`~bnlstm.runs.policy.FIFOPolicy.priority`).
    ``retries=None``: Dask's default (a sweep's run whose worker died goes on elsewhere
    from its snapshot). Returns the future."""
    extra = {} if retries is None else {"retries": retries}
    if resources:
        extra["resources"] = resources
    task = _queued_task(key, fn, args)
    if task is not None:
        return client.get({key: task}, key, sync=False, priority=priority, **extra)
    return client.submit(fn, *args, key=key, pure=False, priority=priority, **extra)


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
class DaskEngine(Following):
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
            (default: the policy's, ``$BNLSTM_PAUSE_TIMEOUT``, else 300).
        policy: who runs next (:class:`~bnlstm.runs.policy.FIFOPolicy`); the cluster's
            scheduler keeps its order (:data:`~bnlstm.runs.policy.EMBEDDED_CLUSTER_CONFIG`).
    """

    kind = "dask"
    flush_s = FLUSH_S         # how often a run's worker sends its records (see train_on_worker)

    def __init__(self, address: Optional[str] = None, n_workers: Optional[int] = None,
                 memory_limit: Optional[str] = None, threads: int = 1,
                 pause_timeout: Optional[float] = None, log: Callable[[str], None] = None,
                 policy: Optional[FIFOPolicy] = None):
        self.address = address if address is not None else env_str("BNLSTM_DASK_SCHEDULER")
        self.n_workers = int(n_workers or int(env_float("BNLSTM_MAX_RUNS", 0))
                             or max(2, os.cpu_count() or 1))
        self.memory_limit = memory_limit or env_str("BNLSTM_WORKER_MEMORY") or None
        self.threads = max(1, int(threads))
        self.policy = policy or FIFOPolicy(pause_timeout=pause_timeout)
        self.pause_timeout = self.policy.pause_timeout
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

    def submit(self, config: TrainConfig, mode: str = "run",
               data_options: Optional[Dict[str, Any]] = None) -> RunHandle:
        """Queue a run; returns its handle at once (the pump submits it). The run keeps
        ``config`` and its live settings change it: give each run its own.
        ``data_options``: the task's data options for this run only (the text task's
        ``text``: a text a page holds; it travels with the task, never to disk)."""
        self.start()
        h = RunHandle(self, config, mode)
        h.data_options = dict(data_options or {})
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
                h._receive([state_record("failed", h.step, why)])
                h.done.set()
        while True:           # later submissions fail too, as they come
            try:
                item = self._outbox.get(timeout=1.0)
            except queue.Empty:
                if self._closing:
                    return
                continue
            if item[0] == "submit":
                item[1]._receive([state_record("failed", 0, why)])
                item[1].done.set()

    def _submit_task(self, h: RunHandle, resume: Optional[bytes] = None) -> None:
        from distributed import Queue
        key = f"{RUN_PREFIX}-{h.id}-{next(self._attempts)}"
        # the run's command queue, made once, before the worker asks for it
        self._cmd_queues[key] = Queue(key + "-cmd", client=self.client)
        args = (key, h.id, h.config.to_dict(), self.inbox, self.lease, h.mode, resume,
                self.threads, self.pause_timeout, LEASE_S, self.flush_s, h.data_options or None)
        fut = submit_run(self.client, train_on_worker, args, key,
                         self.policy.priority(time.time()))
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
                h._receive([state_record("queued", h.step, "back in the queue")])
                self._submit_task(h, resume=self._snapshots.pop(h.id))
            elif op == "stop":
                self._snapshots.pop(h.id, None)
                h._receive([state_record("stopped", h.step, f"stopped at step {h.step} (parked)")])
                h.done.set()
            return
        if h.state == "queued":                          # not on a worker yet
            if op == "stop":
                self._command(h, cmd)      # in case a worker has just taken it
                fut = self._futures.pop(h.id, None)
                if fut is not None:
                    fut.cancel()
                h._receive([state_record("stopped", 0, "stopped before it left the queue")])
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
                    h._receive([state_record("parked", h.step, "paused too long: slot given back")])
                continue
            if err is not None and not h.ended:
                name = type(err).__name__
                why = self._death_reason(err) if name == "KilledWorker" else f"{name}: {err}"
                h._receive([state_record("failed", h.step, why)])
            elif res is not None and not h.ended:     # ended without a last state record
                h._receive([state_record(res.get("state", "failed"), h.step, "")])
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
class _QuietQueueView(logging.Filter):
    """Drops the scheduler's line for each queue-position read (once a second)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "queue_view" not in record.getMessage()


