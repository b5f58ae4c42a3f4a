"""bnlstm: Recurrent Batch Normalization (Cooijmans et al., ICLR 2017) in PyTorch.

Three layers, each in its folder (``docs/DESIGN.md`` draws them):

- ``bnlstm.nn``: the model (``BNLSTM``, ``BNTanhRNN``, ``SequenceBatchNorm``, ``Trace``,
  the probes and the fast path); imports only torch;
- ``bnlstm.tasks`` (each task with its data) and ``bnlstm.training`` (``TrainConfig``, the
  ``Trainer``, run records, :func:`~bnlstm.training.assemble.assemble_run`): one run;
- ``bnlstm.runs``: many runs (the run engines on Dask workers or threads, sweeps).

The core never imports Panel: the dashboard (``app/``) and the notebooks are thin layers
over it. Names load on first use (PEP 562): ``import bnlstm`` and the settings table cost
no torch, so the web process that serves the dashboard starts without it.
"""
from __future__ import annotations

from ._lazy import lazy_names

__version__ = "0.1.0"

_EXPORTS = {
    "BNLSTM": "nn", "BNTanhRNN": "nn", "SequenceBatchNorm": "nn", "Trace": "nn",
    "reestimate_stats": "nn",
    "TrainConfig": "training.config", "Trainer": "training.trainer",
    "RunRecorder": "training.records", "load_checkpoint": "training.checkpoints",
    "CheckpointError": "training.checkpoints",
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
