"""The record feed: what a drain of one run's records changes (no Panel; unit-tested).

A run's trainer puts records on the run's queue (on its thread); the session's periodic
drain takes them off and :func:`digest` reads them: it folds them into the run's state
(``run.seen``: :class:`bnlstm.training.events.RunState`, the reducer the engines use too),
goes on with the loss EMA, and returns what the plots must add (:class:`Digest`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass
class Digest:
    steps: List[int] = field(default_factory=list)
    elapsed: List[float] = field(default_factory=list)     # seconds since the run started
    loss: Any = None                     # (N,) raw training loss
    smooth: Any = None                   # (N,) its EMA, continuing the run's
    val_steps: List[int] = field(default_factory=list)
    val_values: List[float] = field(default_factory=list)   # the run's metric (acc, bpc, ...)
    val_elapsed: List[float] = field(default_factory=list)
    sat_rows: List[tuple] = field(default_factory=list)     # (step, g saturated, cell saturated)
    probe: Optional[Dict[str, Any]] = None                  # the newest probe record
    first_probe: Optional[Dict[str, Any]] = None            # the first probe record in recs


def digest(run, recs: List[Dict[str, Any]], smoothing: float) -> Digest:
    """Apply ``recs`` to ``run`` (a :class:`~app.runs.DashboardRun`) and return what to draw."""
    d = Digest()
    losses = []
    for rec in recs:
        run.seen.apply(rec)                # state, step, speed, scores: one reducer
        kind = rec.get("kind")
        if kind == "train":
            d.steps.append(rec["step"])
            d.elapsed.append(rec.get("elapsed", math.nan))
            losses.append(rec["loss"])
        elif kind == "val":
            d.val_steps.append(rec["step"])
            d.val_elapsed.append(rec.get("elapsed", math.nan))
            d.val_values.append(rec[run.metric.key])
        elif kind == "probe":
            d.probe = rec
            if d.first_probe is None:
                d.first_probe = rec
            sat = rec.get("saturation", {})
            d.sat_rows.append((rec["step"], sat.get("g", np.nan), sat.get("c_out", np.nan)))
    if losses:
        loss = np.asarray(losses, dtype=float)
        smooth, run.ema, n = ema(loss, smoothing, run.ema)
        run.ema_n += n
        d.loss, d.smooth = loss, smooth
    return d


def ema(x: np.ndarray, a: float, start: Optional[float] = None):
    """The exponential moving average ``e <- a e + (1 - a) x`` of ``x``, going on from
    ``start`` (``None``: it starts at the first finite value); non-finite values are NaN
    and skipped. Returns ``(averages, the last average, the finite values seen)``."""
    out = np.empty_like(x, dtype=float)
    e, n = start, 0
    for i, v in enumerate(x):
        if not math.isfinite(v):
            out[i] = np.nan
            continue
        e = v if e is None else a * e + (1 - a) * v
        n += 1
        out[i] = e
    return out, e, n
