"""Where runs go: :func:`open_cluster` (an existing Dask scheduler, or an embedded
LocalCluster on loopback) and :func:`get_engine`, this process's one engine of each kind."""
from __future__ import annotations

import copy
import os
import threading
from typing import Any, Callable, Dict, Optional

from .handle import EngineError
from .policy import env_float, env_str

def open_cluster(address: Optional[str] = None, n_workers: int = 2, threads: int = 1,
                 memory_limit: Any = None, settings: Optional[Dict[str, Any]] = None,
                 dashboard_address: Optional[str] = None, source: str = "",
                 set_as_default: bool = False):
    """A Dask client, and the cluster it talks to when this process started it.

    With ``address`` (``tcp://host:8786``), the existing cluster's client and ``None``;
    without, an embedded ``LocalCluster`` of ``n_workers`` single-thread worker processes
    on loopback only (``threads`` torch threads each; ``memory_limit`` per worker, default
    the machine's memory shared by the workers and this process) started under the Dask
    ``settings``, and its client. The dashboard's :class:`DaskEngine` and
    :func:`bnlstm.runs.sweep.run_sweep` both start their clusters here. ``source`` names where
    the address came from, for the message; ``set_as_default``: the client becomes this
    process's default (``distributed.wait`` and friends use it). Raises :class:`EngineError` when the
    scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster
    if address:
        try:
            return Client(address, timeout="10s", set_as_default=set_as_default), None
        except Exception as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {address!r}"
                              + (f" ({source})" if source else "")
                              + f": {type(exc).__name__}: {exc}") from None
    with dask.config.set(settings or {}):
        # The nannies get a copy of these settings for every worker they start, also the
        # one that replaces a dead worker after this block has ended (a nanny's own merge
        # would keep views of the global settings, which the block's end puts back to
        # Dask's defaults).
        worker_config = copy.deepcopy(dask.config.config)
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit or _share_of_memory(n_workers),
            env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            config=worker_config)
        try:
            client = Client(cluster, set_as_default=set_as_default)
        except BaseException:
            cluster.close()
            raise
    return client, cluster


def _forked_web_process() -> bool:
    """One of the processes ``panel serve --num-procs N`` forks (Tornado's task id)."""
    try:
        from tornado.process import task_id
        return task_id() is not None
    except Exception:
        return False


def _bytes(n: float) -> str:
    """``1.2 GB``, ``850 MB``: a memory size for a message."""
    n = float(n or 0)
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _share_of_memory(n_workers: int) -> str:
    """The machine's memory divided among the workers and this process."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "auto"
    return str(int(total // (n_workers + 1)))


# ================================================================================== one per process
_ENGINES: Dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(kind: Optional[str] = None, log: Callable[[str], None] = None,
               default: str = "dask"):
    """This process's engine of ``kind`` (``"dask"`` or ``"threads"``; default
    ``$BNLSTM_ENGINE``, else ``default``), made on first use and shared by every caller."""
    kind = (kind or env_str("BNLSTM_ENGINE", default)).lower()
    if kind not in ("dask", "threads"):
        raise EngineError(f"unknown engine {kind!r}: choose 'dask' or 'threads'")
    with _ENGINES_LOCK:
        if kind not in _ENGINES:
            if kind == "dask":
                from .dask import DaskEngine
                _ENGINES[kind] = DaskEngine(log=log).start()
            else:
                from .threads import ThreadEngine
                _ENGINES[kind] = ThreadEngine(int(env_float("BNLSTM_MAX_RUNS", 0)) or None)
        return _ENGINES[kind]

