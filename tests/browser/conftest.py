"""Browser tests: `panel serve app/` in a subprocess, driven by real headless Chromium.

Per ../../shared/docs/STACK.md: Debian's /usr/bin/chromium (never `playwright
install`), the server on a free loopback port polled on /liveness, and every
non-loopback request answered locally so that the tests never wait on the network.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import testdata
from bnlstm_app.server.memory import web_process_env

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("BNLSTM_CHROMIUM", "/usr/bin/chromium")


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the dashboard in real headless Chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     # several pages at once (two sessions): none may be throttled as hidden
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1600, "height": 1000}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, log_path: Path, proc: subprocess.Popen):
        self.url, self.log_path, self.proc = url, log_path, proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """Wait until the server's stderr holds ``text``; returns the whole log."""
        end = time.time() + timeout
        while time.time() < end:
            out = self.log()
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{out[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in the server log after {timeout} s:\n{self.log()[-3000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`panel serve app/` on a free loopback port, with the shared MNIST and run/session logs."""
    mnist = testdata.mnist_dir()                  # found or fetched, verified (tests/testdata.py)
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: apt-get install -y chromium"
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    sweeps_dir = tmp_path_factory.mktemp("sweeps")        # the server's sweep folder (empty)
    env = {**os.environ, "BNLSTM_MNIST_DIR": str(mnist), "BNLSTM_APP_LOG": "1",
           "BNLSTM_SWEEPS_DIR": str(sweeps_dir),
           "BNLSTM_MAX_RUNS": "4", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    env = web_process_env(env)       # the web process's allocator, as ./scripts/dashboard's
    cmd = [sys.executable, "-m", "panel", "serve", str(REPO / "app"), "--address", "127.0.0.1",
           "--port", str(port), "--liveness", "--allow-websocket-origin", f"127.0.0.1:{port}",
           # destroy a closed tab's session within about a second (the default is ~15 s)
           "--check-unused-sessions", "500", "--unused-session-lifetime", "1000"]
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}/app", log_path, proc)
    srv.sweeps_dir = sweeps_dir
    try:
        end = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > end:
                raise AssertionError(f"panel serve did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _offline(route, outside=None):
    """Loopback requests go through; anything else gets an empty answer (and is noted in
    ``outside``: the page must need nothing from beyond the server)."""
    url = route.request.url
    if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "data:", "blob:")):
        route.continue_()
    else:
        if outside is not None:
            outside.append(url)
        route.fulfill(status=200, body="", content_type="text/plain")


@pytest.fixture
def open_app(server, browser):
    """``open_app(query="")`` -> a loaded dashboard page in its own browser context."""
    contexts = []

    def _open(query: str = "", wait: bool = True):
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        outside = page.outside_requests = []

        def route_offline(route):       # one argument: Playwright passes the request to two
            _offline(route, outside)
        page.route("**/*", route_offline)
        page.goto(server.url + query)
        if wait:
            page.wait_for_selector(".btn-start button")
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
            # sections 2 on join the page once it has drawn its top (Dashboard.attach_lower)
            page.wait_for_selector(".lower-sections.attached .plot-sat", state="attached")
        return page

    yield _open
    for ctx in contexts:
        try:
            ctx.close()
        except Exception:
            pass
