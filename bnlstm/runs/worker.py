"""The worker side of the Dask engine: :func:`train_on_worker`, the body of one run's
Dask task (records out, commands in, parking, the lease), its bells, and the warm-up
that pays a process's one-off costs before its first run."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import threading
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..training.config import TrainConfig
from ..training.events import state_record
from .handle import RECORD_FILES, apply_command
from .results import DONE_STATES, _read_json
from .policy import env_float

FLUSH_S = 0.1           # the worker sends its records this often (commands, and the state
                        # records that answer them, go at once: see _wait_for_bell)

READ_S = 1.0            # a run's worker reads its command queue at least this often, rung or not
LEASE_S = 60.0          # a run whose web process has not renewed its lease for this long stops
UNREAD_LIMIT = 4000     # record batches left unread in the inbox before a run stops itself

WORKER_DIED = ("its worker process died (it went over the worker's memory limit, or was "
               "killed); the server and the other runs go on. Press Start for a new run")



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
        n = int(env_float("BNLSTM_WORKER_NICE", 10))
        if n > 0:
            os.nice(n)
    except (OSError, AttributeError, ValueError):
        pass


def train_on_worker(key: str, run_id: str, config: Dict[str, Any], inbox: str, lease: str,
                    mode: str = "run", resume: Optional[bytes] = None, threads: int = 1,
                    pause_timeout: float = 300.0, lease_s: float = LEASE_S,
                    flush_s: float = FLUSH_S,
                    data_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The body of a run's Dask task: train ``config`` on this worker, live.

    Records go to the ``inbox`` queue as pickled ``(run_id, [records])`` batches, every
    ``flush_s`` and whenever the event ``<key>-bell`` rings (a command came, or the
    trainer answered one); commands come from the queue ``<key>-cmd``. Returns
    ``{"state", "files"}`` (the run record's files as bytes) or, for a parked run,
    ``{"state": "parked", "snapshot": bytes}``.
    """
    import torch
    from distributed import Event, Queue, Variable, get_client

    from ..training.assemble import assemble_run, load_snapshot

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
                batch[i] = state_record("parked", rec.get("step", 0), (
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
        # The answer flag is taken before the records: an answer appended after this line
        # sets it again and rings at the next flush (taken after, its ring went with a
        # batch that did not hold it, and the next batch, which did, rang nothing)
        ring = answer.is_set()
        if ring:
            answer.clear()
        batch = []
        while buf:                      # the trainer thread appends meanwhile: pop, never iterate
            batch.append(buf.popleft())
        if batch:
            relabel(batch)
            out_q.put(pickle.dumps((run_id, batch), protocol=pickle.HIGHEST_PROTOCOL))
        if ring:                        # after the put: the pump finds the batch when woken
            _ring(pump_bell)

    started = Event(key + "-started", client=client)
    if started.is_set():             # Dask started this task again: its first worker died
        buf.append(state_record("failed", 0, WORKER_DIED))
        flush()
        return {"state": "failed", "files": {}}
    started.set()
    if threads:
        torch.set_num_threads(int(threads))
    cfg = TrainConfig.from_dict(config)
    tmp = Path(tempfile.mkdtemp(prefix="bnlstm-worker-run-"))
    try:
        snap = load_snapshot(resume) if resume else None
        data = ((lambda: _data(cfg.task, None, data_options)) if data_options else None)
        trainer, recorder = assemble_run(cfg, data=data, out=tmp, callbacks=[on_record],
                                         resume=snap)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        buf.append(state_record("failed", 0, f"{type(exc).__name__}: {exc}"))
        flush()
        return {"state": "failed", "files": {}}
    if mode == "step":
        trainer.step()
    else:
        trainer.start(paused=mode == "paused")
    lease_var = Variable(lease, client=client)
    lease_seen, lease_at = None, time.monotonic()
    checked_at = time.monotonic()
    paused_since: Optional[float] = None
    read_at = 0.0                       # the command queue is read when the bell rings, and
    flushed_at = time.monotonic()       # at least once every READ_S anyway (a ring that was
    try:                                # lost, or came before its command could be read)
        while trainer.alive or trainer.state == "idle":
            wait = min(flushed_at + flush_s, read_at + READ_S) - time.monotonic()
            rung = _wait_for_bell(bell, max(0.0, wait))   # or less when it rings
            if rung or time.monotonic() - read_at >= READ_S:
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
            if rung or answer.is_set() or now - flushed_at >= flush_s:
                flushed_at = now
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
    except Exception:                   # the scheduler is away: poll, at least every READ_S
        time.sleep(min(timeout, READ_S))
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


def warm_up(task: Optional[str] = None) -> float:
    """Pay a process's one-off costs before its first run, not during it: load the data of
    ``task`` (default: ``TrainConfig``'s default task) and take one update of a tiny model
    through the task's own experiment (the first ``torch.optim`` optimizer imports
    ``torch._dynamo``, about 1.3 s here; the first forward and backward set up kernels).
    Knows no task: any registered one warms up the same way. Returns the seconds it took."""
    t0 = time.perf_counter()
    from .. import tasks
    cfg = TrainConfig(hidden=8, batch_size=4, probe_every=0, **({"task": task} if task else {}))
    try:
        data = tasks.shared_data(cfg.task)
        experiment = tasks.get(cfg.task).experiment(cfg, data=data)
        experiment.setup()
        experiment.train_step()
        experiment.release()
    except Exception as exc:             # harmless: the first run pays instead
        sys.stderr.write(f"bnlstm: warm-up of {cfg.task!r} stopped early ({type(exc).__name__}: {exc})\n")
    return time.perf_counter() - t0


# ================================================================================ a sweep's run
def _data(task: str, data_dir, data_options=None):
    """A task's data once per worker process (every run on a worker shares it)."""
    from .. import tasks
    return tasks.shared_data(task, data_dir, **(data_options or {}))


def _worker_address() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except Exception:
        return "local"


def run_one(config: Dict[str, Any], run_dir: Union[str, Path], data_dir=None,
            checkpoint_every: int = 100, threads: int = 1,
            data_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train one run of a sweep into ``run_dir`` (the body of a Dask task; also callable as is).

    A run already done there (summary.json says finished or diverged) is returned as it is;
    a run with a ``resume.pt`` goes on from it. Returns the run's summary plus ``worker``.
    """
    import torch

    from ..training.assemble import assemble_run, load_snapshot
    from ..training.checkpoints import save_checkpoint
    from ..training.trainer import SNAPSHOT_FORMAT

    run_dir = Path(run_dir)
    done = _read_json(run_dir / "summary.json")
    if done is not None and done.get("state") in DONE_STATES:
        return {**done, "worker": done.get("worker", _worker_address()), "skipped": True}
    if threads:
        torch.set_num_threads(int(threads))
    cfg = TrainConfig.from_dict(config)
    resume_path = run_dir / "resume.pt"
    snap = None
    if resume_path.is_file():
        try:
            snap = load_snapshot(resume_path)
            if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
                snap = None
        except Exception:                    # a torn file of a killed worker: start over
            snap = None
    worker = _worker_address()
    trainer, recorder = assemble_run(cfg, data=_data(cfg.task, data_dir, data_options), out=run_dir,
                                     resume=snap, keep_rows=True, checkpoint_every=checkpoint_every,
                                     on_checkpoint=lambda s: save_checkpoint(s, resume_path))
    try:
        state = trainer.run()
    finally:
        recorder.close()
    summary = dict(recorder.summary) or {"state": state, "reason": trainer.reason}
    summary.update(worker=worker, resumed_from=snap["step"] if snap else None)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if state in DONE_STATES and resume_path.exists():
        resume_path.unlink()
    return summary
