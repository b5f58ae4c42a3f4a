"""Running many runs: live, controllable runs on Dask worker processes or in threads
(the engines), and sweeps (a grid of settings times seeds) through them.

Nothing here imports the model or a task's internals: a run is a ``TrainConfig`` that a
worker turns into a trainer with :func:`bnlstm.training.assemble.assemble_run` (the task
registry finds its task).

- ``handle.py``: the run handle, its readers, the control commands;
- ``policy.py``: who runs next (:class:`FIFOPolicy`), apart from execution;
- ``threads.py``, ``dask.py`` (+ ``follow.py``, ``worker.py``): the two engines;
- ``cluster.py``: :func:`open_cluster`, :func:`get_engine`;
- ``sweep.py``: a grid of settings times seeds.
"""
from __future__ import annotations

from bnlstm._lazy import lazy_names

_EXPORTS = {
    "RunHandle": "handle", "EngineError": "handle", "apply_command": "handle",
    "FIFOPolicy": "policy",
    "ThreadEngine": "threads", "DaskEngine": "dask",
    "open_cluster": "cluster", "get_engine": "cluster",
    "train_on_worker": "worker", "warm_up": "worker",
    "Sweep": "sweep", "run_sweep": "sweep",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
