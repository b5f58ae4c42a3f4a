"""A page's heavy work runs on a thread of its own, not on the server's event loop.

Building one page (the :class:`~app.dashboard.Dashboard`, its template and their Bokeh
models) is about a second of pure Python, and attaching its lower sections once the
browser has drawn the top another quarter of a second. On the event loop, which also
answers every click of every open page, a click sent meanwhile waited for all of it:
with a class arriving, most of the click tail was that wait (docs/classroom.md). On a
thread, the work still takes the CPU, but it gives the interpreter up every few
milliseconds (``sys.getswitchinterval()``), and the event loop answers a click in
between.

- **The build.** Bokeh creates a session in ``ApplicationContext.create_session_if_needed``:
  it awaits the application's ``on_session_created`` hooks, then calls
  ``initialize_document(doc)`` (Panel runs ``main.py`` there), synchronously.
  :func:`install` wraps Panel's ``Application`` so that the awaited hook runs that build
  on the build thread, and the synchronous call that follows finds the document built
  and does nothing. The document is new and belongs to no session yet, so nothing else
  touches it meanwhile.
- **Later work on a live page** (:func:`soon`): when the thread gets to it, it asks for
  a next-tick callback of the session, which Bokeh runs holding the session's document
  lock (no message or callback of that page runs meanwhile); the callback lets the
  thread work and releases the lock when it is done. The change events it makes are
  serialized on the build thread and written out by Bokeh after the work, on the event
  loop. :func:`soon_each` does a list of such pieces, one job and one hold of the lock
  each, so that the page's own clicks are answered between them.

A live page's session keeps its connections in a set that the build thread iterates
(Bokeh's ``ServerSession._document_patched`` when the work's held changes are let go, and
Panel's ``unlocked``), while the event loop removes a connection whose websocket has just
closed: the document lock does not cover that. A plain set then raises "Set changed size
during iteration" on the build thread, the work fails, and the closed page stays alive
until Bokeh's next sweep. :func:`soon_each` therefore gives the session, on the loop and
before any work, a set that iterates over a copy of itself (:class:`_SnapshotSet`).

Panel is told that the document belongs to the build thread while the thread works on
it (as Panel itself does, for code that asks which thread a document is on) and to the
event loop's thread after. Bokeh's ``curdoc()`` stack is made per thread, so that the
two threads' documents never mix.

One build thread: the work of pages is done one at a time, as on the event loop; work
on a live page (whose student may be waiting for it) goes before builds, the rest in
the order it was asked for. A build that fails is logged by Bokeh as any failed page is,
and the document is not built a second time. ``BNLSTM_BUILD_ON_LOOP=1`` turns all this
off (everything on the event loop, as Panel does). Installed by ``main.py`` during the
first page, which is built on the event loop; every later page is built here.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
import traceback
import weakref
from concurrent.futures import Future
from typing import Callable, Sequence

_BUILT: "weakref.WeakSet" = weakref.WeakSet()     # documents built on the build thread
_LOCK = threading.Lock()
THREAD_NAME = "bnlstm-page-build"
LIVE, BUILD = 0, 1          # priorities: work on a live page goes before new pages' builds


class _BuildThread:
    """One daemon thread that runs jobs by priority, then in the order they came."""

    def __init__(self):
        self._jobs: "queue.PriorityQueue" = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread: "threading.Thread | None" = None

    def put(self, priority: int, fn, *args) -> Future:
        """``fn(*args)`` on the thread (callable from any thread, this one too)."""
        future: Future = Future()
        with _LOCK:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME,
                                                daemon=True)
                self._thread.start()
        self._jobs.put((priority, next(self._order), future, fn, args))
        return future

    def submit(self, priority: int, fn, *args) -> "asyncio.Future":
        """``fn(*args)`` on the thread; an asyncio future of the running loop."""
        return asyncio.wrap_future(self.put(priority, fn, *args))

    def _run(self) -> None:
        while True:
            self._one(self._jobs.get())

    @staticmethod
    def _one(job) -> None:
        # A function of its own, so that nothing of the job (its document, through ``fn``
        # and ``args``) stays referenced from the loop's frame while the thread waits for
        # the next: a closed page's last job would keep the whole page alive until then.
        _, _, future, fn, args = job
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)


_THREAD = _BuildThread()


class _PerThreadStack:
    """Bokeh's stack of patched ``curdoc()`` documents, one per thread (Bokeh keeps one
    list for the process: two threads pushing and popping would pop each other's)."""

    def __init__(self, initial):
        self._local = threading.local()
        self._local.stack = list(initial)          # the installing thread's entries

    def _stack(self) -> list:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def append(self, item) -> None:
        self._stack().append(item)

    def pop(self, *index):
        return self._stack().pop(*index)

    def clear(self) -> None:
        self._stack().clear()

    def __len__(self) -> int:
        return len(self._stack())

    def __getitem__(self, i):
        return self._stack()[i]


class _SnapshotSet(set):
    """A set whose iteration goes over a copy taken at once: another thread may add or
    remove members meanwhile without breaking the loop. The copy is one C call
    (``set.copy`` merges the table directly, running no Python code), so it is taken
    under the GIL with no thread switch inside it."""

    def __iter__(self):
        return iter(set.copy(self))


def _snapshot_connections(doc) -> None:
    """Give ``doc``'s server session a :class:`_SnapshotSet` of connections (on the event
    loop, which is the only thread that adds or removes them; once per session)."""
    session = getattr(doc.session_context, "session", None)
    connections = getattr(session, "_subscribed_connections", None)
    if connections is not None and not isinstance(connections, _SnapshotSet):
        session._subscribed_connections = _SnapshotSet(connections)


def installed() -> bool:
    from panel.io.application import Application
    return getattr(Application, "_bnlstm_off_loop", False)


def install() -> bool:
    """Do pages' heavy work off this server's event loop (once; True if now on)."""
    if os.environ.get("BNLSTM_BUILD_ON_LOOP", "") == "1":
        return False
    import bokeh.io.doc as bokeh_doc
    from panel.io.application import Application
    from panel.io.state import state
    with _LOCK:
        if installed():
            return True
        if not isinstance(bokeh_doc._PATCHED_CURDOCS, _PerThreadStack):
            bokeh_doc._PATCHED_CURDOCS = _PerThreadStack(bokeh_doc._PATCHED_CURDOCS)
        created = Application.on_session_created
        initialize = Application.initialize_document

        async def on_session_created(self, session_context):
            await created(self, session_context)
            doc = session_context._document
            loop_thread = threading.get_ident()
            try:       # Panel's initialize_document claims the document for its thread
                await _THREAD.submit(BUILD, initialize, self, doc)
            finally:
                _BUILT.add(doc)                            # never built twice
                state._thread_id_[doc] = loop_thread       # the event loop's from now on

        def initialize_document(self, doc):
            if doc in _BUILT:
                return
            initialize(self, doc)

        Application.on_session_created = on_session_created
        Application.initialize_document = initialize_document
        Application._bnlstm_off_loop = True
    return True


def soon(doc, work: Callable[[], None], on_error: Callable[[str], None] = print) -> bool:
    """Run ``work()`` soon on the build thread, for the served document ``doc``, holding
    its session's document lock; False (nothing scheduled) when not installed, or
    ``doc`` is not a served session's. Call it on the event loop. An exception in
    ``work`` goes to ``on_error`` (its traceback), not to the event loop.

    The lock is taken when the thread gets to the job, not while the job waits behind
    another page's build: meanwhile the page answers its own clicks (a Start sent the
    moment the page arrived does not wait for its lower sections)."""
    return soon_each(doc, [work], on_error)


def soon_each(doc, works: Sequence[Callable[[], None]],
              on_error: Callable[[str], None] = print) -> bool:
    """:func:`soon` for several pieces of work, in order, each a job of its own that holds
    the document lock for itself only: the page's clicks are answered between them (a
    Start waits for one piece, not for all). The rest is dropped when a piece fails or
    the session ends."""
    if not installed() or doc is None or doc.session_context is None:
        return False
    from panel.io.state import set_curdoc, state
    loop_thread = threading.get_ident()
    _snapshot_connections(doc)

    def job(i: int) -> None:       # the build thread, once this piece's turn has come
        granted, done = threading.Event(), Future()

        async def locked():        # Bokeh runs this holding the document lock
            granted.set()
            try:
                await asyncio.wrap_future(done)
            finally:
                state._thread_id_[doc] = loop_thread

        try:
            doc.add_next_tick_callback(locked)      # Bokeh's one thread-safe call
        except Exception:
            return
        while not granted.wait(0.5):
            context = doc.session_context
            if context is None or context.destroyed:   # closed: its callbacks never run
                return
        state._thread_id_[doc] = threading.get_ident()
        try:
            with set_curdoc(doc):
                works[i]()
        except Exception:
            on_error(traceback.format_exc())
        else:
            if i + 1 < len(works):
                _THREAD.put(LIVE, job, i + 1)        # behind the live work queued meanwhile
        finally:
            done.set_result(None)

    _THREAD.put(LIVE, job, 0)
    return True
