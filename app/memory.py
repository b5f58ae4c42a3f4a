"""Give a closed session's memory back to the system.

A page's Bokeh document and plots are many small objects; once a session is destroyed
Python frees them, but glibc keeps the freed heap for reuse, so the server's resident
memory stays at its peak. :func:`release_soon` (called when a session ends) collects
the garbage and asks glibc to return free heap pages (``malloc_trim``), once, a moment
after the last of a burst of closing sessions.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

_TIMER = None
_LOCK = threading.Lock()


def _trim() -> None:
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):       # not glibc: nothing to ask
        pass


def release_soon(delay_s: float = 3.0) -> None:
    """Collect and trim ``delay_s`` after the last call (a burst of closes: once)."""
    global _TIMER
    with _LOCK:
        if _TIMER is not None:
            _TIMER.cancel()
        _TIMER = threading.Timer(delay_s, _trim)
        _TIMER.daemon = True
        _TIMER.start()
