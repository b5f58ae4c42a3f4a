"""The server's log lines.

- ``BNLSTM_APP_LOG=1``: log run and session events to stderr (the browser tests read
  these lines to check, for example, that closing a tab stops its run on the worker).

The run engine's settings (``BNLSTM_ENGINE``, ``BNLSTM_DASK_SCHEDULER``,
``BNLSTM_MAX_RUNS``, ``BNLSTM_WORKER_MEMORY``, ``BNLSTM_PAUSE_TIMEOUT``) are read by
:mod:`bnlstm.runs`; ``BNLSTM_SESSION_RUNS`` by its policy (``bnlstm/runs/policy.py``).
"""
from __future__ import annotations

import os
import sys
import time

_LOG = os.environ.get("BNLSTM_APP_LOG", "") not in ("", "0", "false", "no")


def log(msg: str) -> None:
    """One line on stderr when ``BNLSTM_APP_LOG`` is set (never raises)."""
    if _LOG:
        try:
            sys.stderr.write(f"[bnlstm-app {time.strftime('%H:%M:%S')}] {msg}\n")
            sys.stderr.flush()
        except Exception:
            pass


def quiet_periodic_callback(callback, period_ms: int):
    """``pn.state.add_periodic_callback`` that does not mark the page busy on each call.

    Panel's periodic callbacks switch the page's busy indicator on and off around every
    call: two messages to the browser (and a redraw) per call, five times a second for a
    drain, in every open page, even when nothing changed. A *background* callback does
    the same work without them.
    """
    from panel.io.callbacks import PeriodicCallback
    # log=False: no two log records per call (``panel serve`` logs at INFO)
    cb = PeriodicCallback(callback=callback, period=period_ms, background=True, log=False)
    cb.start()
    return cb
