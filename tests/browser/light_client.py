"""A light dashboard client (a real Bokeh session over a websocket, no browser).

Used by the classroom fault tests, in the test process (:class:`LightClient`) or as a
process of its own (``python light_client.py URL QUERY``: it presses Start, prints
``running`` once its run trains, and then just keeps its session open).
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
import sys
import threading
import time

STATE = re.compile(r"data-state='(\w+)'")

# bokeh.client handles each incoming message one call deeper than the last (its
# _handle_messages -> _next -> state.run -> _handle_messages): a session open for a few
# minutes of live updates passes Python's default limit and its connection dies. Deep
# enough for hours, on threads with room for it.
sys.setrecursionlimit(1_000_000)
threading.stack_size(256 << 20)


class _FailedConnection(logging.Handler):
    """An exception in a session's message loop (for example a message it cannot apply)
    is logged by Tornado as "Exception in callback", on that session's thread, and the
    connection reads nothing more: it becomes that client's ``error``, so that whoever
    waits for the client's page to change is told instead of waiting out a timeout."""

    def emit(self, record):
        client = _CLIENTS.get(record.thread)
        if client is not None and record.exc_info and client.error is None:
            client.error = record.exc_info[1]


_CLIENTS: dict = {}                      # thread ident -> its LightClient
logging.getLogger("tornado.application").addHandler(_FailedConnection())


class LightClient(threading.Thread):
    """One session: ``click(css_class)``, ``state()`` of its first run row, ``close()``.

    Like a browser, it says ``document_ready`` once it has the document, so the server
    sends the rest of the page (the dashboard's lower sections) as it would to a browser.
    ``pulled_s``: seconds from the request to the document; ``on_ready(client)``, a hook
    for subclasses, runs on the session's loop right after."""

    def __init__(self, url: str, args: dict | None = None, say_ready: bool = True):
        super().__init__(daemon=True)
        self.url, self.args = url, dict(args or {})
        self.say_ready = say_ready          # False: a script, or a tab not drawn yet
        self.ready = threading.Event()
        self.error = None
        self.pulled_s = None
        self.session = self.loop = self.doc = None

    def run(self):
        _CLIENTS[threading.get_ident()] = self
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            import panel.models.file_dropper  # noqa: F401  (the Panel models of the document:
            import panel.models.location  # noqa: F401   the extension ones are not preloaded)
            from bokeh.client import pull_session
            from bokeh.events import DocumentReady
            from tornado.ioloop import IOLoop
            t0 = time.perf_counter()
            self.session = pull_session(url=self.url, arguments=self.args)
            self.pulled_s = time.perf_counter() - t0
            self.loop, self.doc = IOLoop.current(), self.session.document
            if self.say_ready:
                self.doc.callbacks.send_event(DocumentReady())
            self.on_ready()
        except Exception as exc:
            self.error = exc
        self.ready.set()
        if self.error is None:
            try:
                self.session._loop_until_closed()
            except Exception as exc:
                self.error = exc

    def on_ready(self) -> None:
        """Called once the document is here, on the session's thread (subclasses)."""

    def model(self, css: str):
        return next(m for m in self.doc.models if css in (getattr(m, "css_classes", None) or []))

    def has_model(self, css: str) -> bool:
        return any(css in (getattr(m, "css_classes", None) or []) for m in list(self.doc.models))

    def wait_model(self, css: str, timeout: float = 30.0) -> None:
        """Wait until the document has a model with this CSS class (e.g. the lower sections'
        plots, which the server sends after ``document_ready``)."""
        end = time.monotonic() + timeout
        while not self.has_model(css):
            if time.monotonic() > end:
                raise AssertionError(f"no {css!r} model in the document after {timeout} s")
            time.sleep(0.05)

    def click(self, css: str) -> None:
        from bokeh.events import ButtonClick
        button = self.model(css)
        self.loop.add_callback(lambda: self.doc.callbacks.send_event(ButtonClick(button)))

    def text(self, css: str) -> str:
        return html.unescape(getattr(self.model(css), "text", "") or "")

    def state(self, row: int = 0):
        """The state of the status table's ``row``-th run (-1: the newest)."""
        found = STATE.findall(self.text("bnlstm-status"))
        return found[row] if found else None

    def wait_state(self, states, timeout: float = 60.0, row: int = 0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.state(row) in states:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"state {self.state(row)!r}, not one of {states}, "
                             f"after {timeout} s")

    def close(self) -> None:
        if self.loop is not None:
            self.loop.add_callback(self.session.close)


def open_client(url: str, args: dict | None = None, timeout: float = 60.0,
                say_ready: bool = True) -> LightClient:
    c = LightClient(url, args, say_ready=say_ready)
    c.start()
    assert c.ready.wait(timeout), "no session within the timeout"
    if c.error is not None:
        raise c.error
    return c


if __name__ == "__main__":
    from urllib.parse import parse_qsl
    client = open_client(sys.argv[1], dict(parse_qsl(sys.argv[2] if len(sys.argv) > 2 else "")))
    client.click("btn-start")
    client.wait_state(("running",), 120)
    print("running", flush=True)
    while True:
        time.sleep(1)
