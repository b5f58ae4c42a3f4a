"""The records a run emits, written once: their kinds and fields, and the one reducer
from records to what a run's state is (:class:`RunState`), which the run handles, the
dashboard and the command line share. Imports no torch.

A trainer (``trainer.py``) calls its callbacks with plain dicts (Python numbers,
strings, numpy arrays; never tensors), one of these kinds:

=========  ==========================================================================
``info``   once, after setup: data source, device, parameter count, ``metrics``
``state``  ``state`` (``STATES``) and ``reason``, at every change
``train``  each update: ``loss``, the task's metric keys, ``grad_norm``, ``lr``,
           ``updates_per_s``
``val``    each validation: ``loss``, the metric keys, ``n``, ``best`` (new best)
``test``   once at the end: ``loss``, the metric keys, ``n``, ``best_step``
``probe``  every ``probe_every`` updates: saturation, histograms, gradients through
           time, per-step statistics (and a text task's ``text``)
``error``  an exception: ``message`` and ``traceback``
=========  ==========================================================================

Every record has ``kind`` and ``step``; most have ``elapsed`` (seconds since start).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

if sys.version_info >= (3, 11):
    from typing import Literal, NotRequired, TypedDict
else:                                         # pragma: no cover
    from typing_extensions import Literal, NotRequired, TypedDict

STATES = ("idle", "queued", "starting", "running", "paused", "parked",
          "finished", "stopped", "diverged", "failed")
TERMINAL = ("finished", "stopped", "diverged", "failed")
KINDS = ("info", "state", "train", "val", "test", "probe", "error")


class StateRecord(TypedDict):
    kind: Literal["state"]
    state: str                    # one of STATES
    step: int
    reason: str
    elapsed: NotRequired[float]


class TrainRecord(TypedDict):     # plus the task's metric keys (acc; bpc, acc)
    kind: Literal["train"]
    step: int
    loss: float
    grad_norm: float
    lr: float
    updates_per_s: float
    elapsed: float


class ValRecord(TypedDict):       # plus the task's metric keys
    kind: Literal["val"]
    step: int
    loss: float
    n: Optional[int]
    elapsed: float
    best: NotRequired[bool]       # these weights are the best so far


class TestRecord(TypedDict):      # plus the task's metric keys
    kind: Literal["test"]
    step: int
    loss: float
    n: Optional[int]
    best_step: Optional[int]      # the step of the weights tested
    elapsed: float


class ErrorRecord(TypedDict):
    kind: Literal["error"]
    step: int
    message: str
    traceback: str


def state_record(state: str, step: int = 0, reason: str = "") -> StateRecord:
    """A ``state`` record made outside the trainer (queued, parked, a dead worker)."""
    return {"kind": "state", "state": state, "step": step, "reason": reason, "elapsed": 0.0}


@dataclass
class RunState:
    """What a run's records say so far. :meth:`apply` is the one reducer.

    Args:
        metric: the task's validation metric (``bnlstm.tasks.Metric``: ``key`` and
            ``better``), or ``None`` to follow state and step only.
    """
    metric: Any = None
    state: str = "queued"
    reason: str = ""
    step: int = 0
    rate: float = 0.0                         # updates per second (the trainer's EMA)
    info: Dict[str, Any] = field(default_factory=dict)
    last_val: Optional[float] = None          # the metric at the latest validation
    best_val: Optional[float] = None          # ... at the best one, by its direction
    test: Optional[float] = None              # the metric on the test split, at the end
    error: str = ""

    def apply(self, rec: Dict[str, Any]) -> None:
        """Fold one record into the state."""
        kind = rec.get("kind")
        if kind == "train":
            self.step = rec["step"]
            self.rate = rec.get("updates_per_s", 0.0)
        elif kind == "state":
            self.state, self.reason = rec["state"], rec.get("reason", "")
            if rec.get("step"):
                self.step = rec["step"]
        elif kind == "val" and self.metric is not None:
            value = rec[self.metric.key]
            self.last_val = value
            if self.best_val is None or self.metric.better(value, self.best_val):
                self.best_val = value
        elif kind == "test" and self.metric is not None:
            self.test = rec[self.metric.key]
        elif kind == "info":
            self.info = rec
        elif kind == "error":
            self.error = rec.get("message", "")
        elif rec.get("step"):
            self.step = rec["step"]

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL
