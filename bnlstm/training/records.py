"""Run records (checkpoints: ``checkpoints.py``; this module imports no torch).

A run directory holds:

- ``config.json``: every setting of the run (``TrainConfig.to_dict()``);
- ``metrics.csv``: one row per record, ``step,kind,loss,<metrics>,grad_norm,lr,elapsed``
  where ``kind`` is ``train``, ``val`` (population statistics) or ``test`` and
  ``<metrics>`` are the task's metric keys (``acc`` for MNIST: :data:`METRIC_FIELDS`;
  ``bpc,acc`` for text);
- ``summary.json``: final state and reason, ``metric`` (the key that chose the best
  weights), ``best_val_<key>`` and ``best_step``, ``val_<key>`` (the tested weights on
  validation, after re-estimating statistics if asked), ``test_<key>``, data source,
  device, steps, wall time;
- ``checkpoint.pt``: the best weights, loadable with ``weights_only=True``.

Checkpoints are plain dicts of tensors and JSON-able values (the task's name, every
setting, the weights and ``meta``, what the task needs to rebuild its model, such as a
vocabulary) and are always loaded with ``torch.load(..., weights_only=True)``: a file
that needs pickled objects is refused. :func:`load_checkpoint` rebuilds the model
through the task registry (:mod:`bnlstm.tasks`); this module imports no task.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union


METRIC_FIELDS = ("step", "kind", "loss", "acc", "grad_norm", "lr", "elapsed")   # MNIST's


def metric_fields(keys=("acc",)) -> tuple:
    """The columns of ``metrics.csv`` for a task whose metrics have these keys."""
    return ("step", "kind", "loss", *keys, "grad_norm", "lr", "elapsed")


def _rows_up_to(path: Path, step: int) -> tuple:
    """(header, the training and validation rows of a metrics.csv with step <= ``step``)."""
    if not path.is_file():
        return None, []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][:3]) != METRIC_FIELDS[:3]:
        return None, []
    out = []
    for r in rows[1:]:
        try:
            if r[1] in ("train", "val") and int(float(r[0])) <= step:
                out.append(r)
        except (ValueError, IndexError):      # a torn last line of a killed run
            continue
    return tuple(rows[0]), [r for r in out if len(r) == len(rows[0])]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def metrics_row(rec: Dict[str, Any], fields) -> list:
    """One ``train``/``val``/``test`` record as a row of ``metrics.csv`` with ``fields``."""
    return [rec["kind"] if f == "kind" else _clean(rec.get(f, "")) for f in fields]


def metrics_csv(recs, fields) -> bytes:
    """``metrics.csv`` of a run's records (as :class:`RunRecorder` writes it), in memory."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(fields)
    w.writerows(metrics_row(r, fields) for r in recs if r.get("kind") in ("train", "val", "test"))
    return out.getvalue().encode()


class RunRecorder:
    """A trainer callback that writes a run directory (see the module doc).

    Use it from the worker thread as ``Trainer(..., callbacks=[recorder])`` and give it the
    trainer (``recorder.attach(trainer)``) so that it can save the best checkpoint
    and the config when the run ends.
    """

    def __init__(self, out_dir: Union[str, Path], trainer=None, resume_step: Optional[int] = None,
                 prior_wall_time: float = 0.0):
        """``resume_step``: the run goes on from a snapshot taken after this step: the
        ``metrics.csv`` already there keeps its rows up to that step and grows from there
        (instead of starting afresh); ``prior_wall_time`` is added to the summary's."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.trainer = trainer
        self.info: Dict[str, Any] = {}
        self.summary: Dict[str, Any] = {}
        self._kept = (_rows_up_to(self.out_dir / "metrics.csv", resume_step)
                      if resume_step is not None else (None, []))
        self._csv = None                 # opened when the run's info names its metrics
        self.fields = METRIC_FIELDS
        self._t0 = time.time() - float(prior_wall_time)

    def _open(self, fields=None) -> None:
        """Start metrics.csv with these columns (default: those of the kept rows, or MNIST's),
        and the rows kept from before a resume."""
        if self._csv is not None:
            return
        header, kept = self._kept
        self.fields = tuple(fields or header or METRIC_FIELDS)
        if header is not None and header != self.fields:
            kept = []                    # another task's rows: not this run's
        self._csv = open(self.out_dir / "metrics.csv", "w", newline="")
        self._writer = csv.writer(self._csv)
        self._writer.writerow(self.fields)
        self._writer.writerows(kept)
        self._csv.flush()

    def attach(self, trainer) -> "RunRecorder":
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def __call__(self, rec: Dict[str, Any]) -> None:
        kind = rec["kind"]
        if kind == "info":
            self.info = {k: v for k, v in rec.items() if k != "kind"}
            self._open(metric_fields(rec["metrics"]) if rec.get("metrics") else None)
            if self.trainer is not None:
                (self.out_dir / "config.json").write_text(self.trainer.config.to_json() + "\n")
        elif kind in ("train", "val", "test"):
            self._open()
            self._writer.writerow(metrics_row(rec, self.fields))
            if kind != "train":
                self._csv.flush()
        elif kind == "error":
            (self.out_dir / "error.txt").write_text(rec.get("traceback", rec["message"]))
        elif kind == "state" and rec["state"] in ("finished", "stopped", "diverged", "failed"):
            self._close(rec)

    def _close(self, rec: Dict[str, Any]) -> None:
        self._open()
        self._csv.flush()
        tr = self.trainer
        summary = {"state": rec["state"], "reason": rec.get("reason", ""),
                   "steps": rec.get("step"), "wall_time_s": round(time.time() - self._t0, 3),
                   "data_source": self.info.get("data_source"),
                   "data_is_full": self.info.get("data_is_full"),
                   "device": self.info.get("device"), "n_params": self.info.get("n_params")}
        for key in ("data_kind", "vocab_size", "unigram_bits"):      # what some tasks add
            if self.info.get(key) is not None:
                summary[key] = self.info[key]
        if tr is not None:
            best = tr.best or {}
            keys = [m.key for m in tr.metrics]
            summary.update(task=tr.config.task, metric=tr.metric.key,
                           **{f"best_val_{k}": best.get(k) for k in keys},
                           best_step=best.get("step"),
                           **{f"val_{k}": tr.final.get(f"val_{k}") for k in keys},
                           **{f"test_{k}": tr.final.get(f"test_{k}") for k in keys},
                           test_loss=tr.final.get("test_loss"), config=tr.config.to_dict())
            if getattr(tr.config, "train_score", 0):      # the generalization gap's other end
                summary.update({f"train_{k}": tr.final.get(f"train_{k}") for k in keys})
            if getattr(tr.experiment, "model", None) is not None:
                from .checkpoints import save_checkpoint
                save_checkpoint(tr.checkpoint(), self.out_dir / "checkpoint.pt")
                summary["checkpoint"] = "checkpoint.pt"
        self.summary = summary
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    def close(self) -> None:
        self._open()
        if not self._csv.closed:
            self._csv.close()


def zip_run_dir(out_dir: Union[str, Path], redact=None) -> bytes:
    """The run directory as a zip archive in memory (for a download button).

    ``redact``: a function applied to the text of the ``.json`` and ``.txt`` files on the
    way (the dashboard takes the server's paths out of what a browser downloads).
    """
    out_dir = Path(out_dir)
    return zip_files({p.name: p.read_bytes() for p in sorted(out_dir.iterdir())
                      if p.is_file() and not p.name.endswith(".tmp")}, redact=redact)


def zip_files(files: Dict[str, bytes], redact=None) -> bytes:
    """Named files (a run record held in memory) as a zip archive; ``redact`` as for
    :func:`zip_run_dir`, on the ``.json`` and ``.txt`` files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            data = files[name]
            if redact is not None and name.endswith((".json", ".txt")):
                data = redact(data.decode("utf-8", "replace")).encode()
            z.writestr(name, data)
    return buf.getvalue()
