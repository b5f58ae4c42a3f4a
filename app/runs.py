"""One training run owned by one browser session: an engine handle and what the page saw.

The run trains elsewhere (a Dask worker, or a thread: :mod:`bnlstm.runs`); its records
collect in the handle, and everything that touches Panel or Bokeh happens in the
session's periodic ``drain`` on the server's event loop (see ``dashboard.py``).
The run record (metrics, summary, checkpoint) lives in memory: no run directory here.
"""
from __future__ import annotations

import itertools
import json
import re
from typing import Any, Dict, List, Optional

from bnlstm import TrainConfig, tasks
from bnlstm.training.records import metric_fields, metrics_csv, zip_files
from bnlstm.training.events import TERMINAL, RunState

from .palette import PALETTE
from .server.applog import log

# ------------------------------------------------------------------------------- one run
_RUN_IDS = itertools.count(1)


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
    """A run of one session: a handle of the run engine, plus what the page has seen of it.

    The engine (:mod:`bnlstm.runs`) trains it: by default on a Dask worker process, so
    the server's event loop never waits behind a training step; or in a thread of this
    process (``BNLSTM_ENGINE=threads``, a notebook's default). ``mode`` says how it starts
    once a worker takes it: ``"run"``, ``"paused"`` or ``"step"`` (one update, then paused).
    """

    def __init__(self, config: TrainConfig, color: str, mode: str = "run", tag: str = "",
                 engine=None, data_options: Optional[Dict[str, Any]] = None):
        self.id = next(_RUN_IDS)
        self.data_options = dict(data_options or {})   # this run's own data (a page's text)
        self.config = config       # the run's own (the page made it from its settings table)
        # refuse what the task cannot train here, at once (the worker would fail later)
        tasks.get(self.config.task).check(self.config)
        self.color = color
        self.label = (tag + ": " if tag else "") + self.config.summary()
        if self.data_options.get("text_name"):
            self.label += f" on {self.data_options['text_name']}"
        self.metric = tasks.get(self.config.task).metric      # what "validation" means here
        self.mode = mode
        self.engine = engine if engine is not None else get_engine()
        self.handle = None
        self._reader = None
        self.disposed = False
        self._nothing_seen()

    def _nothing_seen(self) -> None:
        """What the session has seen of the run so far: nothing yet (the drain updates it,
        on the event loop)."""
        self.seen = RunState(self.metric)    # state, step, speed, scores: bnlstm.training.events
        self.ema: Optional[float] = None     # the loss EMA drawn so far, and its count
        self.ema_n = 0

    # what the records said (the one reducer: bnlstm.training.events.RunState.apply)
    state = property(lambda self: self.seen.state)
    reason = property(lambda self: self.seen.reason)
    step = property(lambda self: self.seen.step)
    rate = property(lambda self: self.seen.rate)
    info = property(lambda self: self.seen.info)
    last_val = property(lambda self: self.seen.last_val)
    best_val = property(lambda self: self.seen.best_val)
    test = property(lambda self: self.seen.test)
    error = property(lambda self: self.seen.error)

    @classmethod
    def _mirror(cls, run_id: int, config: TrainConfig, color: str, label: str, mode: str,
                engine, handle) -> "DashboardRun":
        """A read-only run of this page that reads ``handle`` from its first record by a
        reader of its own; its controls do nothing and its disposal leaves the run alone."""
        m = cls.__new__(cls)
        m.id, m.config, m.color, m.label = run_id, config, color, label
        m.metric = tasks.get(config.task).metric
        m.mode, m.engine = mode, engine
        m.handle = handle
        m._reader = handle.reader() if handle is not None else None
        m.disposed, m.read_only = False, True
        m._nothing_seen()
        return m

    @classmethod
    def follow(cls, run: "DashboardRun") -> "DashboardRun":
        """A read-only mirror of another session's ``run`` in this process: the same handle."""
        return cls._mirror(run.id, run.config, run.color, run.label, run.mode, run.engine,
                           run.handle)

    @classmethod
    def follow_remote(cls, meta: Dict[str, Any], handle, engine) -> "DashboardRun":
        """A read-only mirror of a run of another web process's page on the same cluster:
        ``meta`` as that page published it (``run``: its number there, ``config``, ``slot``,
        ``color``, ``label``, ``mode``), ``handle`` the engine's :class:`~bnlstm.runs.handle.FollowedHandle`
        that receives its records."""
        color = str(meta.get("color") or "")
        return cls._mirror(int(meta.get("run") or 0), handle.config,
                           color if re.fullmatch(r"#[0-9a-fA-F]{6}", color) else PALETTE[0],
                           str(meta.get("label") or handle.config.summary()),
                           str(meta.get("mode") or "run"), engine, handle)

    read_only = False

    # ------------------------------------------------------------ control side
    def submit(self) -> int:
        """Hand the run to the engine (it waits there for a worker)."""
        if self.handle is None:
            self.handle = self.engine.submit(self.config, self.mode,
                                             data_options=self.data_options)
            self._reader = self.handle.reader()
            self.handle.listeners.append(self._on_record)
        return self.handle.position

    def _on_record(self, rec: Dict[str, Any]) -> None:      # on the engine's thread
        if rec.get("kind") == "state":
            st = rec.get("state")
            if st == "starting":
                log(f"run {self.id} started on a worker ({self.label})")
            elif st in TERMINAL:
                log(f"run {self.id} ended: {st} ({rec.get('reason', '')})")

    @property
    def launched(self) -> bool:
        """It has left the queue (a worker took it)."""
        return self.state not in ("queued",)

    @property
    def cancelled(self) -> bool:
        return self.disposed

    @property
    def live(self) -> bool:
        """Queued, training, paused or parked (not yet in a terminal state)."""
        if self.disposed:
            return False
        if self.handle is None:
            return True
        return self.handle.live

    def queue_position(self) -> int:
        h = self.handle
        return h.position if h is not None and h.state == "queued" else 0

    def pause(self) -> None:
        if self.read_only:
            return
        if self.handle is not None:
            self.handle.pause()
        else:
            self.mode = "paused"

    def resume(self) -> None:
        if self.read_only:
            return
        if self.handle is not None:
            self.handle.resume()
        else:
            self.mode = "run"

    def step_once(self) -> None:
        if self.read_only:
            return
        if self.handle is not None:
            self.handle.step_once()
        else:
            self.mode = "step"

    def stop(self) -> None:
        if self.handle is not None and not self.read_only:
            self.handle.stop()

    def set(self, name: str, value: Any) -> None:
        """A live setting (``TrainConfig.LIVE``) for the rest of this run."""
        if self.read_only:
            return
        setattr(self.config, name, value)
        if self.handle is not None and self.handle.live:
            self.handle.set(name, value)

    def dispose(self, wait: bool = False) -> None:
        """Stop the run and drop its records and files (``wait``: until it has ended)."""
        if self.disposed:
            return
        self.disposed = True
        h = self.handle
        if self.read_only:                  # a follower lets go of its reader only
            self._reader = None
            return
        if h is not None:
            h.stop()
            if wait:
                h.wait(60)
            h.close()
        log(f"run {self.id} disposed")

    def drain(self, limit: int = 5000) -> List[Dict[str, Any]]:
        """The records this session has not seen yet, without server paths."""
        if self._reader is None:
            return []
        return [public_record(r) for r in self._reader.drain(limit)]

    # ------------------------------------------------------------------ export
    @property
    def summary(self) -> Dict[str, Any]:
        """The run's summary.json once it has ended (else {})."""
        raw = self.handle.files.get("summary.json") if self.handle is not None else None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def metrics_csv(self) -> bytes:
        """metrics.csv of the records so far."""
        if self.handle is None:
            return b""
        keys = [m.key for m in tasks.get(self.config.task).metrics]
        return metrics_csv(self.handle.history, metric_fields(keys))

    def record_zip(self) -> bytes:
        """The run record as a zip (config, metrics, and once ended its summary and
        checkpoint), its texts without server paths. Before the run's worker has sent
        its summary and checkpoint (it is training, or it stopped a moment ago), the zip
        holds what there is and a README.txt that says what is missing and why."""
        files = dict(self.handle.files) if self.handle is not None else {}
        files.setdefault("config.json", (self.config.to_json() + "\n").encode())
        files["metrics.csv"] = self.metrics_csv()
        missing = [n for n in ("summary.json", "checkpoint.pt") if n not in files]
        if missing:
            ended = self.handle is not None and self.handle.done.is_set()
            why = (f"The run ended ({self.state}) before its first validation, so there are "
                   "no best weights to save." if ended else
                   f"The run was {self.state} when this zip was made (at update {self.step}): "
                   "the summary and the best checkpoint are written when it ends. Download "
                   "the zip again once the status says finished or stopped.")
            files["README.txt"] = (f"bnlstm run {self.id}: {self.label}\n\nNot in this zip: "
                                   f"{', '.join(missing)}. {why}\n").encode()
        return zip_files(files, redact=redact_paths)


def get_engine(kind: Optional[str] = None, default: str = "dask"):
    """This server's run engine (:func:`bnlstm.runs.get_engine`), logging to the app log."""
    from bnlstm.runs import get_engine as _get
    return _get(kind, log=log, default=default)
