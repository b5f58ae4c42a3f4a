"""A light dashboard client (a real Bokeh session over a websocket, no browser).

Used by the classroom fault tests, in the test process (:class:`LightClient`) or as a
process of its own (``python light_client.py URL QUERY``: it presses Start, prints
``running`` once its run trains, and then just keeps its session open).
"""
from __future__ import annotations

import asyncio
import html
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


class LightClient(threading.Thread):
    """One session: ``click(css_class)``, ``state()`` of its first run row, ``close()``."""

    def __init__(self, url: str, args: dict | None = None):
        super().__init__(daemon=True)
        self.url, self.args = url, dict(args or {})
        self.ready = threading.Event()
        self.error = None
        self.session = self.loop = self.doc = None

    def run(self):
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            import panel.models.location  # noqa: F401  (the Panel models of the document)
            from bokeh.client import pull_session
            from tornado.ioloop import IOLoop
            self.session = pull_session(url=self.url, arguments=self.args)
            self.loop, self.doc = IOLoop.current(), self.session.document
        except Exception as exc:
            self.error = exc
        self.ready.set()
        if self.error is None:
            self.session._loop_until_closed()

    def model(self, css: str):
        return next(m for m in self.doc.models if css in (getattr(m, "css_classes", None) or []))

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


def open_client(url: str, args: dict | None = None, timeout: float = 60.0) -> LightClient:
    c = LightClient(url, args)
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
