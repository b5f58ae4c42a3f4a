"""A training loop in a background thread that talks to the outside only through records.

The trainer knows nothing of LSTMs or tasks: it drives an *experiment* (the contract:
:class:`bnlstm.tasks.Experiment`) and emits plain
records (dicts of Python numbers, strings and numpy arrays, never tensors) to
its callbacks, on the worker thread. A callback must be quick: the dashboard's
puts the record on a ``queue.Queue``; the command line's moves a progress bar.

States: ``idle`` -> ``starting`` -> ``running`` <-> ``paused`` -> one of
``finished`` (step budget reached), ``stopped`` (asked to), ``diverged`` (the loss
became NaN or infinite: the run ends with the step and the cause), ``failed``
(an exception: its message and traceback arrive as an ``error`` record).
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from ..tasks import ACCURACY

Record = Dict[str, Any]
Callback = Callable[[Record], None]
SNAPSHOT_FORMAT = "bnlstm-run-snapshot"


class Trainer:
    """Runs ``experiment`` for ``config.steps`` updates.

    Args:
        config: read live every step for ``steps``, ``eval_every``, ``probe_every``
            (and by the experiment for ``lr``, ``clip``); the rest is fixed at start.
        experiment: a :class:`bnlstm.tasks.Experiment`; by default the one the task
            ``config.task`` makes (``bnlstm.tasks.get(config.task).experiment(config)``).
            Its first metric (``experiment.metrics[0]``, e.g. accuracy or bits per
            character, with its direction) chooses the best weights.
        callbacks: functions called with every record, on the worker thread.
        checkpoint_every: every this many updates (0: never), after that step's validation
            if any, call ``on_checkpoint(trainer.snapshot())``: a resumable state.
        on_checkpoint: where the snapshot goes (a sweep saves it beside the run record).
        resume: a :meth:`snapshot` to go on from: after ``setup()`` the run continues at
            the snapshot's step with its weights, optimizer, data position, random
            generators and best-so-far, and (seeded, on the CPU) ends exactly as the run
            that was not interrupted would have.

    Control (thread-safe, from any thread): :meth:`start`, :meth:`pause`,
    :meth:`resume`, :meth:`step` (one update while paused), :meth:`stop`,
    :meth:`join`. :meth:`run` does the same work synchronously.
    """

    def __init__(self, config, experiment=None, callbacks: Optional[List[Callback]] = None,
                 checkpoint_every: int = 0,
                 on_checkpoint: Optional[Callable[[Dict[str, Any]], None]] = None,
                 resume: Optional[Dict[str, Any]] = None):
        if experiment is None:
            from .. import tasks
            experiment = tasks.get(config.task).experiment(config)
        self.config = config
        self.experiment = experiment
        self.metrics = tuple(getattr(experiment, "metrics", None) or (ACCURACY,))
        self.metric = self.metrics[0]                   # chooses the best weights
        self.callbacks: List[Callback] = list(callbacks or [])
        self.state = "idle"
        self.reason = ""
        self.step_count = 0
        self.best: Optional[Dict[str, Any]] = None      # {"step", "loss", <metric keys>, "state"}
        self.info: Dict[str, Any] = {}
        self.final: Dict[str, Any] = {}
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._running = threading.Event()               # set: may train; clear: paused
        self._running.set()
        self._pending_steps = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._t0 = 0.0
        self.checkpoint_every = int(checkpoint_every)
        self.on_checkpoint = on_checkpoint
        self._resume = resume
        self._prior_elapsed = 0.0          # training time before a resume

    # ---------------------------------------------------------------- control
    def add_callback(self, fn: Callback) -> None:
        self.callbacks.append(fn)

    def start(self, paused: bool = False) -> "Trainer":
        if self._thread is not None:
            raise RuntimeError("this trainer has already been started; make a new one")
        if paused:
            self._running.clear()
        self._thread = threading.Thread(target=self.run, name="bnlstm-trainer", daemon=True)
        self._thread.start()
        return self

    def pause(self) -> None:
        with self._wake:
            self._running.clear()
            self._wake.notify_all()

    def resume(self) -> None:
        with self._wake:
            self._running.set()
            self._wake.notify_all()

    def step(self, n: int = 1) -> None:
        """Do ``n`` more updates, then stay paused (starts the thread, paused, if idle)."""
        if self._thread is None and self.state == "idle":
            self.start(paused=True)
        with self._wake:
            self._running.clear()
            self._pending_steps += n
            self._wake.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread; True if it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def waiting(self) -> bool:
        """Paused with no step to do and not asked to stop: it holds its place, idle."""
        with self._wake:
            return (self.state == "paused" and not self._running.is_set()
                    and not self._pending_steps and not self._stop.is_set())

    # ---------------------------------------------------------------- records
    def _emit(self, record: Record) -> None:
        for fn in list(self.callbacks):
            try:
                fn(record)
            except Exception:  # a broken consumer must not kill the run
                traceback.print_exc()

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self._emit({"kind": "state", "state": state, "step": self.step_count, "reason": reason,
                    "elapsed": time.perf_counter() - self._t0 if self._t0 else 0.0})

    # ------------------------------------------------------------------- loop
    def _wait_for_turn(self) -> bool:
        """Block while paused; False when the run should stop."""
        with self._wake:
            while not self._stop.is_set():
                if self._pending_steps > 0:
                    self._pending_steps -= 1
                    return True
                if self._running.is_set():
                    if self.state == "paused":
                        self._set_state("running")
                    return True
                if self.state != "paused":
                    self._set_state("paused")
                self._wake.wait(0.5)
            return False

    def _scores(self, res: Dict[str, Any]) -> Dict[str, Any]:
        """The loss and every metric of an experiment's result, as plain floats."""
        return {"loss": float(res["loss"]), **{m.key: float(res[m.key]) for m in self.metrics}}

    def _validate(self) -> Record:
        res = self.experiment.evaluate("val")
        scores = self._scores(res)
        rec = {"kind": "val", "step": self.step_count, **scores, "n": res.get("n"),
               "elapsed": time.perf_counter() - self._t0}
        key = self.metric.key
        if math.isfinite(scores["loss"]) and math.isfinite(scores[key]) and self.metric.better(
                scores[key], None if self.best is None else self.best[key]):
            self.best = {"step": self.step_count, **scores,
                         "state": self.experiment.state_dict()}   # a copy on the CPU
            rec["best"] = True
        self._emit(rec)
        return rec

    def run(self) -> str:
        """Train until the budget is spent, ``stop()``, divergence or an error. Returns the state."""
        cfg = self.config
        self._t0 = time.perf_counter()
        try:
            self._set_state("starting")
            self.info = dict(self.experiment.setup())
            if self._resume is not None:
                self._restore(self._resume)
                self.info["resumed_from"] = self.step_count
            self._emit({"kind": "info", **self.info})
            self._set_state("paused" if self.paused else "running")
            rate, last_t = None, time.perf_counter()
            while self.step_count < cfg.steps:
                if not self._wait_for_turn():
                    break
                n = self.step_count + 1
                probe = cfg.probe_every > 0 and (n % cfg.probe_every == 0 or n == 1)
                out = self.experiment.train_step(probe=probe)
                self.step_count = n
                now = time.perf_counter()
                dt, last_t = now - last_t, now
                if self.state == "running" and dt > 0:   # an EMA of updates per second
                    rate = 1.0 / dt if rate is None else 0.9 * rate + 0.1 / dt
                rec = {"kind": "train", "step": n, "loss": out["loss"],
                       **{m.key: out[m.key] for m in self.metrics},
                       "grad_norm": out["grad_norm"], "lr": cfg.lr,
                       "updates_per_s": rate or 0.0, "elapsed": now - self._t0}
                self._emit(rec)
                if out.get("probe") is not None:
                    self._emit({"kind": "probe", "step": n, **out["probe"]})
                if not (math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"])):
                    what = "loss" if not math.isfinite(out["loss"]) else "gradient norm"
                    value = out["loss"] if what == "loss" else out["grad_norm"]
                    self._set_state("diverged", f"the {what} became {value} at step {n}; "
                                    "the weights of the last finite step are kept "
                                    "(try a smaller learning rate or gamma init)")
                    return self.state
                if n % cfg.eval_every == 0:
                    self._validate()
                    last_t = time.perf_counter()   # evaluation time is not training time
                if self.checkpoint_every and self.on_checkpoint is not None \
                        and n % self.checkpoint_every == 0 and n < cfg.steps:
                    self.on_checkpoint(self.snapshot())
                    last_t = time.perf_counter()
            if self._stop.is_set():
                self._set_state("stopped", f"stopped at step {self.step_count}")
                return self.state
            self._finish()
        except Exception as exc:  # reaches the consumer as a record and a state
            self._emit({"kind": "error", "step": self.step_count,
                        "message": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()})
            self._set_state("failed", f"{type(exc).__name__}: {exc}")
        finally:
            release = getattr(self.experiment, "release", None)
            if release is not None:   # optional: the experiment frees what it kept between steps
                try:
                    release()
                except Exception:     # never hides the run's own outcome
                    pass
        return self.state

    def _finish(self) -> None:
        if self.step_count % self.config.eval_every != 0:
            self._validate()
        if self.best is not None:                      # early stopping: test the best weights
            self.experiment.load_state_dict(self.best["state"])
        changed = self.experiment.finalize()
        keys = [m.key for m in self.metrics]
        # final: the tested weights' validation scores (measured again when finalize
        # re-estimated the statistics), and the test scores: val_<key>, test_<key>
        self.final = {"best_step": self.best["step"] if self.best else None,
                      **{f"val_{k}": self.best[k] if self.best else None for k in keys}}
        if changed:      # the checkpoint keeps what is tested: the re-estimated statistics
            res = self._scores(self.experiment.evaluate("val"))
            self.final.update({f"val_{k}": res[k] for k in keys}, val_loss=res["loss"])
            if self.best is not None:
                self.best["state"] = self.experiment.state_dict()
        if getattr(self.config, "test_at_end", True):
            res = self.experiment.evaluate("test")
            scores = self._scores(res)
            self.final.update({f"test_{k}": scores[k] for k in keys}, test_loss=scores["loss"])
            self._emit({"kind": "test", "step": self.step_count, **scores, "n": res.get("n"),
                        "best_step": self.final["best_step"],
                        "elapsed": time.perf_counter() - self._t0})
        if getattr(self.config, "train_score", 0):    # the same weights on training data
            scores = self._scores(self.experiment.evaluate("train"))
            self.final.update({f"train_{k}": scores[k] for k in keys}, train_loss=scores["loss"])
        self._set_state("finished", f"{self.step_count} updates")

    # --------------------------------------------------------------- resuming
    def snapshot(self) -> Dict[str, Any]:
        """A resumable state of the run after the current step (tensors and plain values;
        saves and loads with ``weights_only=True``): pass it as ``Trainer(resume=...)``."""
        best = dict(self.best) if self.best is not None else None
        return {"format": SNAPSHOT_FORMAT, "version": 1, "config": self.config.to_dict(),
                "step": self.step_count, "best": best,
                "elapsed": time.perf_counter() - self._t0 + self._prior_elapsed,
                "experiment": self.experiment.resume_state()}

    def _restore(self, snap: Dict[str, Any]) -> None:
        if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a bnlstm run snapshot")
        now = self.config.to_dict()
        live = getattr(self.config, "LIVE", ())
        diff = sorted(k for k, v in snap["config"].items() if k not in live and now.get(k) != v)
        if diff:     # settings that build the model or the data must match; live ones may change
            raise ValueError(f"the snapshot is of a run with other settings ({', '.join(diff)})")
        self.experiment.load_resume_state(snap["experiment"])
        self.step_count = int(snap["step"])
        self.best = dict(snap["best"]) if snap.get("best") else None
        self._prior_elapsed = float(snap.get("elapsed", 0.0))

    def checkpoint(self) -> Dict[str, Any]:
        """The best weights so far (or the current ones) as a checkpoint dict: the task and
        settings, the weights, what the task needs to rebuild the model, the step and the
        validation scores of those weights (``val_<key>``)."""
        from .checkpoints import make_checkpoint
        meta_fn = getattr(self.experiment, "checkpoint_meta", None)
        meta = meta_fn() if meta_fn is not None else {}
        if self.best is not None:
            extra = {"step": self.best["step"],
                     **{f"val_{m.key}": self.final.get(f"val_{m.key}", self.best[m.key])
                        for m in self.metrics}}
            return make_checkpoint(self.config, self.best["state"], meta=meta, **extra)
        return make_checkpoint(self.config, self.experiment.state_dict(), meta=meta,
                               step=self.step_count)
