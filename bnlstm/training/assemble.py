"""One run put together: config, data, experiment, trainer, run folder, resume.

The command line, both run engines, sweeps and the paper's experiments all build their
runs here, so a run is wired one way wherever it trains.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

__all__ = ["assemble_run", "load_snapshot"]


def load_snapshot(blob: Union[bytes, str, Path]) -> Dict[str, Any]:
    """A :meth:`Trainer.snapshot` saved with ``torch.save`` (bytes or a file), loaded with
    ``weights_only=True``."""
    import torch
    src = io.BytesIO(blob) if isinstance(blob, (bytes, bytearray)) else blob
    return torch.load(src, map_location="cpu", weights_only=True)


def assemble_run(config, data: Any = None, out: Union[str, Path, None] = None,
                 callbacks: Iterable[Callable] = (), resume: Optional[Dict[str, Any]] = None,
                 experiment=None, checkpoint_every: int = 0,
                 on_checkpoint: Optional[Callable[[Dict[str, Any]], None]] = None,
                 keep_rows: bool = False) -> Tuple[Any, Any]:
    """The :class:`~bnlstm.training.trainer.Trainer` of one run, and its
    :class:`~bnlstm.training.records.RunRecorder` (``None`` without ``out``).

    Args:
        config: the run's ``TrainConfig`` (the trainer reads it live).
        data: the task's loaded data set, a function that returns it (called when the run
            is set up, on the trainer's thread), or ``None``: the data this process shares
            for the task (:func:`bnlstm.tasks.shared_data`).
        out: the run folder (``config.json``, ``metrics.csv``, ``summary.json``,
            ``checkpoint.pt``); ``None`` writes nothing.
        callbacks: called with every record, on the trainer's thread.
        resume: a snapshot to go on from (:func:`load_snapshot`); the recorder adds the
            wall time before it and, with ``keep_rows``, keeps ``metrics.csv``'s rows up to
            its step (a sweep's run resumed in the same folder).
        experiment: an experiment made already (the paper's), instead of the task's.
        checkpoint_every, on_checkpoint: as the Trainer's.
    """
    from .. import tasks
    from .records import RunRecorder
    from .trainer import Trainer
    if experiment is None:
        if data is None:
            data = (lambda name=config.task: tasks.shared_data(name))
        experiment = tasks.get(config.task).experiment(config, data=data)
    trainer = Trainer(config, experiment, callbacks=list(callbacks), resume=resume,
                      checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint)
    recorder = None
    if out is not None:
        recorder = RunRecorder(out, resume_step=resume["step"] if resume and keep_rows else None,
                               prior_wall_time=resume.get("elapsed", 0.0) if resume else 0.0)
        recorder.attach(trainer)
    return trainer, recorder
