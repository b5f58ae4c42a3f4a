"""A served page's document and session: changes held while the model graph is frozen, the
bytes the browser has not read yet, record listeners that do not keep a closed page alive,
and the session-destroyed hook."""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import panel as pn

from .applog import log
from .memory import release_soon


def _weak_listener(method):
    """A record listener that calls ``method`` while its object lives, and nothing after."""
    ref = weakref.WeakMethod(method)

    def listener(rec):
        fn = ref()
        if fn is not None:
            fn(rec)
    return listener


@contextmanager
def _frozen():
    """Freeze the session document's model graph (Bokeh recomputes it once, on exit), and
    hold its change events until after that.

    The hold matters for changes that add models. A served session writes each event to
    the browser as it happens; a model added under a freeze joins the document only at
    the recompute, so the event that first names it would send it in full and it would
    still count as new afterwards: the next patch naming it sends it again ("reference
    already known" in the client, and every new glyph sent twice). Held, the events go
    out after the recompute, each new model once. (Panel's ``pn.io.hold`` in its place
    sent some events ahead of others: a following page met models it had never been
    sent, bokeh's UnknownReferenceError.)"""
    doc = pn.state.curdoc
    models = getattr(doc, "models", None) if doc is not None else None
    if models is None or not hasattr(models, "freeze"):
        yield
        return
    held = doc.callbacks.hold_value is not None          # e.g. inside Panel's own hold
    if not held:
        doc.hold("combine")
    try:
        with models.freeze():
            yield
    finally:
        if not held:
            doc.unhold()


def unsent_bytes(doc) -> int:
    """Bytes written to this session's websocket(s) that the browser has not yet taken
    (0 outside a server, or if it cannot be told)."""
    try:
        session = doc.session_context._session
        total = 0
        for conn in session._subscribed_connections:
            stream = conn._socket.ws_connection.stream
            total += stream._total_write_index - stream._total_write_done_index
        return total
    except Exception:
        return 0


def drawn(doc) -> bool:
    """Has this served page said ``document_ready`` (its browser drew it)? True outside a
    server. A page that has not (a script, a tab opened in the background) gets nothing
    drawn into it until it does: Panel defers every change to such a document to the next
    tick, and a class of them kept the event loop busy enough to slow the other pages'
    builds from under a second to 6-13 s (tests/browser/test_classroom.py)."""
    if doc is None or doc.session_context is None:
        return True
    connected = getattr(pn.state, "_connected", None)
    return True if connected is None else bool(connected.get(doc))


def locked(action) -> None:
    """Run a click's ``action`` where it may change the document: now, or, for a session
    that has not said ``document_ready`` (a script, a tab not drawn yet), on the next tick
    under Bokeh's document lock. Panel runs such a session's clicks as coroutines outside
    the lock, where a change to a Bokeh model the page holds raised "_pending_writes
    should be non-None" and the click was lost."""
    doc = pn.state.curdoc
    unblocked = getattr(pn.state, "_unblocked", None)
    if doc is not None and doc.session_context is not None and unblocked is not None \
            and not unblocked(doc):
        doc.add_next_tick_callback(action)
    else:
        action()


def make_destroy_hook(dashboard):
    """A session-destroyed callback with everything it needs bound as default arguments."""
    def _on_destroyed(session_context, dash=dashboard, _log=log):
        try:
            dash.dispose()
        except Exception as exc:
            _log(f"session clean-up failed: {exc!r}")
        release_soon()
    return _on_destroyed
