"""Give a closed session's memory back to the system.

A page's Bokeh document and plots are many small objects; once a session is destroyed
Python frees them, but glibc keeps the freed heap for reuse, so the server's resident
memory stays at its peak. :func:`release_soon` (called when a session ends) collects
the garbage and asks glibc to return free heap pages (``malloc_trim``), once, a moment
after the last of a burst of closing sessions.

Python's own small-object allocator cannot give that memory back: it holds it in 1 MiB
arenas, and an arena goes back only once every object in it is freed. The pages' arenas
keep a few objects that live on (the server's bookkeeping, allocated while the pages were
open), so a server on it stays near its peak after a class (README, "memory").
``./scripts/dashboard`` therefore starts the web process on glibc's allocator
(``PYTHONMALLOC=malloc``, from ``BNLSTM_WEB_PYTHONMALLOC``), whose free pages the trim
returns; :func:`keep_allocator_to_this_process` then takes it out of the environment, so
that the processes the server starts (the embedded cluster's training workers) use
Python's own, faster for training.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from typing import Mapping

WEB_ALLOCATORS = ("malloc", "pymalloc")    # BNLSTM_WEB_PYTHONMALLOC's values; the first is the default
_TIMER = None
_NOTED = False                             # note_allocator has spoken
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


def note_allocator(write=None) -> bool:
    """Say once, on stderr, when this web process runs on Python's own allocator without
    having chosen it (``panel serve app/`` started by hand, not by ``./scripts/dashboard``):
    then a closed page's memory stays with the server. True if it was said now. Call it
    before :func:`keep_allocator_to_this_process`, which takes ``PYTHONMALLOC`` away."""
    global _NOTED
    if _NOTED:                  # decided at the first page (later, PYTHONMALLOC is gone)
        return False
    _NOTED = True
    if os.environ.get("PYTHONMALLOC", "") in ("malloc", "malloc_debug") \
            or os.environ.get("BNLSTM_WEB_PYTHONMALLOC") == "pymalloc":
        return False
    (write or sys.stderr.write)(
        "bnlstm dashboard: this server runs on Python's own allocator, which keeps a closed "
        "page's memory; ./scripts/dashboard starts it on glibc's (PYTHONMALLOC=malloc), "
        "which gives it back (README, 'Memory after a class')\n")
    return True


def keep_allocator_to_this_process() -> None:
    """Take ``PYTHONMALLOC`` out of the environment when ``./scripts/dashboard`` set it for
    the web process alone (it equals ``BNLSTM_WEB_PYTHONMALLOC``): this process has chosen
    its allocator already, and its children start with Python's default. A
    ``PYTHONMALLOC`` set any other way is left alone."""
    chosen = os.environ.get("BNLSTM_WEB_PYTHONMALLOC", "")
    if chosen and os.environ.get("PYTHONMALLOC") == chosen:
        del os.environ["PYTHONMALLOC"]


def web_process_env(env: Mapping[str, str]) -> dict:
    """``env`` as ``./scripts/dashboard`` completes it for the web process (for Python
    that starts the server the same way: the browser tests, the benchmarks):
    ``BNLSTM_WEB_PYTHONMALLOC`` defaults to ``malloc``, and ``PYTHONMALLOC`` is set to it.
    ValueError for any other value than those of :data:`WEB_ALLOCATORS`."""
    env = dict(env)
    chosen = env.setdefault("BNLSTM_WEB_PYTHONMALLOC", WEB_ALLOCATORS[0])
    if chosen not in WEB_ALLOCATORS:
        raise ValueError(f"BNLSTM_WEB_PYTHONMALLOC={chosen}: use malloc (the default) or pymalloc")
    env["PYTHONMALLOC"] = chosen
    return env
