"""Faults a classroom server must survive: a frozen client, a killed worker, a follow link.

These use light clients (real sessions over websockets, no browser) against the same
``panel serve app/`` as the browser tests; runs train on its Dask worker processes.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from light_client import open_client

HERE = Path(__file__).resolve().parent
FAST = {"steps": "100000", "hidden": "32", "batch_size": "32", "probe_every": "1",
        "eval_every": "50", "val_limit": "500"}


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_a_frozen_client_costs_the_server_little_and_stalls_no_one(server):
    frozen = subprocess.Popen([sys.executable, str(HERE / "light_client.py"), server.url,
                               "&".join(f"{k}={v}" for k, v in FAST.items())],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(HERE)})
    other = None
    stopped = server.log().count("ended: stopped")
    try:
        assert frozen.stdout.readline().strip() == "running"       # its run trains
        frozen.send_signal(signal.SIGSTOP)                          # and it stops reading
        before = rss_mb(server.proc.pid)
        other = open_client(server.url, {"steps": "30", "hidden": "16", "probe_every": "0"})
        other.click("btn-start")
        assert other.wait_state(("queued", "starting", "running", "finished"), 10) < 5
        other.wait_state(("finished",), 120)
        time.sleep(20)                              # the frozen page's run goes on meanwhile
        assert rss_mb(server.proc.pid) - before < 150
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.kill()                               # a client that dies without a goodbye
        frozen.wait(10)
        if other is not None:
            other.close()
    # its session is destroyed and its run ends on the worker
    server.wait_for_log("session destroyed: stopping 1 live run", timeout=60)
    end = time.time() + 30
    while server.log().count("ended: stopped") < stopped + 1 and time.time() < end:
        time.sleep(0.2)
    assert server.log().count("ended: stopped") >= stopped + 1


def _worker_pids(server_pid: int):
    """The Dask worker processes of the server (its nannies live in the server process and
    spawn them with multiprocessing)."""
    kids = psutil.Process(server_pid).children(recursive=True)
    return [p.pid for p in kids if "spawn_main" in " ".join(p.cmdline())]


def test_a_killed_worker_fails_its_run_with_the_reason_and_the_server_goes_on(server):
    a = open_client(server.url, FAST)
    b = None
    try:
        a.click("btn-start")
        a.wait_state(("running",), 120)
        pids = _worker_pids(server.proc.pid)
        assert pids, "no worker processes under the server"
        for pid in pids:                                     # every worker, mid-run
            os.kill(pid, signal.SIGKILL)
        a.wait_state(("failed",), 60)
        assert "worker process died" in a.text("bnlstm-status")
        b = open_client(server.url, {"steps": "20", "hidden": "16", "probe_every": "0"})
        b.click("btn-start")                                 # restarted workers take it
        b.wait_state(("finished",), 180)
        a.click("btn-start")                                 # and the first page goes on
        a.wait_state(("running", "finished"), 180, row=-1)
        a.click("btn-stop")
    finally:
        for c in (a, b):
            if c is not None:
                c.close()


def test_the_web_process_runs_on_glibcs_allocator_and_its_workers_on_pythons(server):
    """./scripts/dashboard starts the web process with PYTHONMALLOC=malloc (a closed page's
    memory goes back to the system); the workers it spawns must not inherit it."""
    assert psutil.Process(server.proc.pid).environ().get("PYTHONMALLOC") == "malloc"
    a = open_client(server.url, FAST)
    try:
        a.click("btn-start")
        a.wait_state(("running",), 120)
        pids = _worker_pids(server.proc.pid)
        assert pids, "no worker processes under the server"
        inherited = [psutil.Process(pid).environ().get("PYTHONMALLOC") for pid in pids]
        assert inherited == [None] * len(pids)
        a.click("btn-stop")
        a.wait_state(("stopped",), 60)
    finally:
        a.close()


def test_a_page_is_built_and_completed_off_the_event_loop_and_works(server):
    """After the server's first page, each page is built, and its lower sections attached,
    on the build thread (app/offloop.py), not on the event loop that answers clicks; such
    a page is whole and trains, also when Start comes before its lower sections."""
    def lines(text):
        return [ln for ln in server.log().splitlines() if text in ln]
    pages = [open_client(server.url)]                   # the server's first page, maybe
    try:
        built, attached = len(lines("page built in")), len(lines("lower sections attached"))
        page = open_client(server.url, {"steps": "30", "hidden": "16", "probe_every": "1"})
        pages.append(page)
        page.click("btn-start")                         # at once: it races the attach
        page.wait_model("plot-kurt")                    # the lower sections came
        page.wait_state(("finished",), 120)
        assert page.model("plot-kurt").renderers        # with the run's layer in them
        new_builds = lines("page built in")[built:]
        new_attaches = lines("lower sections attached")[attached:]
        assert new_builds and all("on thread bnlstm-page-build" in ln for ln in new_builds), \
            new_builds
        assert new_attaches and all("on thread bnlstm-page-build" in ln
                                    for ln in new_attaches), new_attaches
        assert not lines("attaching the lower sections failed")
    finally:
        for c in pages:
            c.close()


def test_a_class_follows_the_teachers_runs_read_only(server):
    teacher = open_client(server.url, {"steps": "100000", "hidden": "16", "probe_every": "10"})
    students = []
    try:
        share = teacher.text("share-note")
        token = share.split("follow=")[1].split("'")[0].split("&")[0]
        teacher.click("btn-start")
        teacher.wait_state(("running",), 120)
        students = [open_client(server.url, {"follow": token}) for _ in range(3)]
        for s in students:
            s.wait_state(("running",), 30)
            assert "read-only" in s.text("follow-banner")
            s.wait_model("plot-kurt")                 # the whole page, lower sections too
            controls = [m for m in s.doc.models if {"btn-start", "btn-pause", "btn-stop",
                        "btn-step", "btn-reset"} & set(getattr(m, "css_classes", None) or [])]
            assert controls == []                     # no control that changes the runs
        teacher.click("btn-pause")
        for s in students:
            s.wait_state(("paused",), 10)
        teacher.click("btn-pause")                            # Resume
        for s in students:
            s.wait_state(("running",), 10)
        log = server.log()
        assert log.count("started on a worker") >= 1
    finally:
        teacher.click("btn-stop")
        for c in [teacher] + students:
            c.close()


def test_closed_sessions_are_freed_and_memory_does_not_grow_round_after_round(server):
    after = []
    for _ in range(3):
        freed = server.log().count("dashboard freed")
        clients = [open_client(server.url) for _ in range(4)]
        for c in clients:
            c.close()
        log = ""
        end = time.time() + 60
        while time.time() < end:                  # destroyed, then garbage collected
            log = server.log()
            if log.count("dashboard freed") >= freed + 4:
                break
            time.sleep(0.5)
        assert log.count("dashboard freed") >= freed + 4, "closed sessions were not freed"
        time.sleep(4)                             # the trim after the last close
        after.append(rss_mb(server.proc.pid))
    assert after[2] - after[0] < 40, after        # a plateau, not a leak
    # a page closed while the build thread attached its sections: nothing failed
    assert "Set changed size during iteration" not in server.log()


def test_sessions_that_never_say_document_ready_are_served_and_cost_the_others_nothing(server):
    """A script, or a tab opened in the background, has its document but never says
    document_ready. Its Start must work (or wait for the page) without an error, and pages
    and clicks of the sessions beside it must stay within the classroom goals."""
    quiet = []
    log_at = len(server.log())
    try:
        for _ in range(4):
            c = open_client(server.url, {"steps": "20", "hidden": "16", "probe_every": "0"},
                            say_ready=False)
            c.click("btn-start")
            quiet.append(c)
        t0 = time.monotonic()
        page = open_client(server.url, {"steps": "30", "hidden": "16", "probe_every": "0"})
        ready_s = time.monotonic() - t0
        page.click("btn-start")
        assert page.wait_state(("queued", "starting", "running", "finished"), 10) < 3
        assert ready_s < 10, ready_s
        page.close()
        end = time.monotonic() + 10               # the engine's pump submits a moment later
        while server.log()[log_at:].count("submitted") < 5 and time.monotonic() < end:
            time.sleep(0.2)
        log = server.log()[log_at:]
        assert "_pending_writes should be non-None" not in log, log[-3000:]
        assert log.count("submitted") >= 5, log[-3000:]           # every Start was taken
        builds = [float(x) for x in re.findall(r"page built in ([0-9.]+) s", log)]
        assert len(builds) == 5 and max(builds) < 3.0, builds     # was 6-13 s beside them
    finally:
        for c in quiet:
            c.close()
