"""One training run owned by one browser session: trainer thread, record queue, run dir.

The worker thread only ever calls :meth:`queue.Queue.put` (and the run recorder,
which writes files); everything that touches Panel or Bokeh happens in the
session's periodic ``drain`` on the server's event loop (see ``dashboard.py``).
"""
from __future__ import annotations

import itertools
import queue
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from bnlstm import RunRecorder, TrainConfig, Trainer, tasks
from bnlstm.trainer import TERMINAL

from .scheduler import get_scheduler, log

# ------------------------------------------------------------------ shared data (one per server)
def shared_data(task: str = "row"):
    """The task's data, loaded once per server process and shared (read-only) by every run;
    a failure is reported by the run that needed it and retried next time."""
    return tasks.shared_data(task)


_PRELOADED = threading.Event()


def warm_up_torch() -> None:
    """Pay PyTorch's one-off costs before the first Start, not after it.

    The first ``torch.optim`` optimizer of a process imports ``torch._dynamo``
    (about 1.3 s on this machine, measured with cProfile), and the first forward and
    backward of a model set up kernels. A tiny model, one step, thrown away.
    """
    import torch
    import torch.nn.functional as F
    from bnlstm.experiment import build_model, make_optimizer
    cfg = TrainConfig(task="row", hidden=8, batch_size=4)
    model = build_model(cfg, 28, 28)
    opt = make_optimizer(cfg, model.parameters())
    x, y = torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def preload_data_in_background() -> None:
    """Once per server: load MNIST and warm PyTorch up, so the first Start waits for neither."""
    if _PRELOADED.is_set():
        return
    _PRELOADED.set()

    def _load():
        t0 = time.perf_counter()
        try:
            shared_data()
        except Exception:
            pass
        t1 = time.perf_counter()
        try:
            warm_up_torch()
        except Exception as exc:
            log(f"torch warm-up failed (harmless): {exc!r}")
        log(f"preload: MNIST {t1 - t0:.2f} s, torch warm-up {time.perf_counter() - t1:.2f} s")
    threading.Thread(target=_load, name="bnlstm-data-preload", daemon=True).start()


# ------------------------------------------------------------------------------- one run
_RUN_IDS = itertools.count(1)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


# An absolute file path inside a message (not part of a URL): the browser is never shown one.
_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"()\[\],;:<>]+/)*([^\s'\"()\[\],;:<>/]+)/?")
_PUBLIC_FIELDS = ("data_source", "reason", "message", "traceback")


def redact_paths(text: str) -> str:
    """Every absolute path in ``text`` -> ``.../`` and its last part (``/srv/data/mnist`` ->
    ``.../mnist``): what the page and the downloads say about where the server keeps things."""
    return _PATH.sub(lambda m: ".../" + m.group(1), text)


def public_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """A record as a browser session may see it: its messages without server paths."""
    if not any(isinstance(rec.get(k), str) for k in _PUBLIC_FIELDS):
        return rec
    return {k: (redact_paths(v) if k in _PUBLIC_FIELDS and isinstance(v, str) else v)
            for k, v in rec.items()}


class DashboardRun:
    """A run of one session: a :class:`Trainer` fed to a queue, admitted by the scheduler.

    ``mode`` says what to do when the scheduler admits it: ``"run"``, ``"paused"``
    (start paused) or ``"step"`` (do one update, then wait paused).
    """

    def __init__(self, config: TrainConfig, color: str, mode: str = "run", tag: str = ""):
        self.id = next(_RUN_IDS)
        self.config = TrainConfig.from_dict(config.to_dict())    # the run's own copy
        self.color = color
        self.label = (tag + ": " if tag else "") + self.config.summary()
        self.metric = tasks.get(self.config.task).metric      # what "validation" means here
        self.mode = mode
        self.queue: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.dir = Path(tempfile.mkdtemp(prefix=f"bnlstm-run{self.id}-"))
        self.trainer = Trainer(self.config, experiment=tasks.get(self.config.task).experiment(
                                   self.config, data=lambda: shared_data(self.config.task)),
                               callbacks=[lambda rec, q=self.queue: q.put(public_record(rec))])
        self.recorder = RunRecorder(self.dir).attach(self.trainer)
        self.trainer.add_callback(self._on_record)
        self.scheduler = get_scheduler()
        self.cancelled = False
        self.launched = False
        self.disposed = False
        # what the session has seen so far (updated by the drain, on the event loop)
        self.state = "queued"
        self.reason = ""
        self.step = 0
        self.rate = 0.0
        self.info: Dict[str, Any] = {}
        self.best_val: Optional[float] = None
        self.last_val: Optional[float] = None
        self.test_acc: Optional[float] = None
        self.error: str = ""
        self.ema: Optional[float] = None
        self.ema_n = 0

    # ------------------------------------------------------------- worker side
    def _on_record(self, rec: Dict[str, Any]) -> None:       # on the worker thread
        if rec.get("kind") == "state" and rec.get("state") in TERMINAL:
            self.recorder.close()
            self.scheduler.release(self)
            log(f"run {self.id} ended: {rec.get('state')} ({rec.get('reason', '')}); "
                f"trainer threads alive: {count_trainer_threads() - 1}")

    # ------------------------------------------------------------ control side
    def submit(self) -> int:
        return self.scheduler.submit(self)

    def launch(self) -> None:                                  # called by the scheduler
        if self.cancelled:
            self.scheduler.release(self)
            return
        self.launched = True
        if self.mode == "step":
            self.trainer.step()
        else:
            self.trainer.start(paused=self.mode == "paused")
        log(f"run {self.id} thread started ({self.label})")

    @property
    def live(self) -> bool:
        """Queued or training (not yet in a terminal state)."""
        if self.cancelled:
            return False
        if not self.launched:
            return True
        return self.trainer.state not in TERMINAL

    def queue_position(self) -> int:
        return 0 if self.launched or self.cancelled else self.scheduler.position(self)

    def pause(self) -> None:
        if self.launched:
            self.trainer.pause()
        else:
            self.mode = "paused"

    def resume(self) -> None:
        if self.launched:
            self.trainer.resume()
        else:
            self.mode = "run"

    def step_once(self) -> None:
        if self.launched:
            self.trainer.step()
        else:
            self.mode = "step"

    def stop(self) -> None:
        if self.launched:
            self.trainer.stop()
        elif not self.cancelled:
            self.cancelled = True
            self.scheduler.release(self)
            self.queue.put({"kind": "state", "state": "stopped", "step": 0,
                            "reason": "stopped before it left the queue"})
            self.recorder.close()

    def dispose(self, wait: bool = False) -> None:
        """Stop the run and free its memory and run dir (in the background unless ``wait``)."""
        if self.disposed:
            return
        self.disposed = True
        self.stop()

        def _cleanup(run=self):
            ended = run.trainer.join(60)
            run.recorder.close()
            shutil.rmtree(run.dir, ignore_errors=True)
            if ended:                              # drop the model, optimizer and best weights
                run.trainer.experiment = None
                run.trainer.best = None
            log(f"run {run.id} disposed; trainer threads alive: {count_trainer_threads()}")

        if wait:
            _cleanup()
        else:
            threading.Thread(target=_cleanup, name="bnlstm-run-cleanup", daemon=True).start()

    def drain(self, limit: int = 5000) -> List[Dict[str, Any]]:
        out = []
        try:
            for _ in range(limit):
                out.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return out

    # ------------------------------------------------------------------ export
    def metrics_csv(self) -> bytes:
        path = self.dir / "metrics.csv"
        return path.read_bytes() if path.exists() else b""

    def record_zip(self) -> bytes:
        """The run record as a zip, its texts without server paths."""
        from bnlstm.records import zip_run_dir
        return zip_run_dir(self.dir, redact=redact_paths)


def count_trainer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "bnlstm-trainer" and t.is_alive())
