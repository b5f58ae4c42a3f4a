"""The server's log lines and its integer settings from the environment.

- ``BNLSTM_APP_LOG=1``: log run and session events to stderr (the browser tests read
  these lines to check, for example, that closing a tab stops its run on the worker).

The run engine's settings (``BNLSTM_ENGINE``, ``BNLSTM_DASK_SCHEDULER``,
``BNLSTM_MAX_RUNS``, ``BNLSTM_WORKER_MEMORY``, ``BNLSTM_PAUSE_TIMEOUT``) are read by
:mod:`bnlstm.engine`; ``BNLSTM_SESSION_RUNS`` by the dashboard.
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


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.stderr.write(f"bnlstm app: ignoring {name}={raw!r} (not an integer); using {default}\n")
        return default
    return max(minimum, value)


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
