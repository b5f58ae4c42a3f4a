"""A class on one server: N sessions each starting a run, one real browser that clicks.

    python benchmarks/bench_classroom.py [--sessions 30] [--steps 200] [--engine dask]
    python benchmarks/bench_classroom.py --sessions 30 --baseline HEAD~1   # and a baseline

Starts ``panel serve app/`` as ``./scripts/dashboard`` does (loopback, ``--liveness``),
then:

1. the *teacher*: headless Chromium (Debian's /usr/bin/chromium) opens the page (page
   ready: the Start button and the Bokeh document are there, timed in the page, the first
   frame that has them, and through the driver as Playwright sees them; whole: the lower
   sections, which the server sends once the top is drawn, have drawn too), starts a long run, and
   every few seconds clicks Pause, then Resume, timing each until the status row shows
   it (``click -> update``, through the browser);
2. ``--sessions`` *students*: light Bokeh clients (``bokeh.client``, one thread and event
   loop each, a real websocket session, no rendering), opened one after another; each
   times its session's document arriving (page ready, server side) and the lower
   sections joining it (whole page: it says ``document_ready`` as a browser does), clicks
   Start on a ``--steps`` run (the moment its page arrives, or with ``--start-when
   whole`` once the whole page is in) and times its row appearing, and once the run
   trains clicks Pause and Resume once, timing each;
3. meanwhile ``/liveness`` is polled every 0.25 s (the server's event loop latency) and
   the memory (RSS) of the server process and, apart, of its Dask workers is sampled.

It reports page ready, click-to-update (p50, p95, max), ``/liveness`` latency, how long
the queue takes to drain (last Start to last run finished) and where the CPU went
meanwhile (server, workers, this benchmark's clients, the browser), how long a run took
from running to finished, how many runs finished,
the server's CPU with every session open and idle, and the server's memory: after the
first page (the starting level), at the peak, and after every session has closed.
``--out FILE`` also writes the numbers as JSON; ``--env NAME=VALUE`` (repeatable) starts
the server with that in its environment (``BNLSTM_WEB_PYTHONMALLOC=pymalloc``: the web
process on Python's own allocator, where by default it runs on glibc's, as
``./scripts/dashboard`` starts it). Needs BNLSTM_MNIST_DIR (default:
../shared/data/mnist). Numbers are this machine's; compare runs of the same machine.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
from light_client import STATE, LightClient  # noqa: E402  (the fault tests' light client)

from bnlstm_app.server.memory import web_process_env  # noqa: E402  (the web process's allocator)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BNLSTM_CHROMIUM", "/usr/bin/chromium")
# (light_client raises the recursion limit and the threads' stack size for bokeh.client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "max": max(xs) if xs else None}


# ------------------------------------------------------------------------- monitors
def _total(procs, value) -> float:
    """The sum of ``value(process)`` over ``procs``, leaving out those that have ended."""
    total = 0.0
    for p in procs:
        try:
            total += value(p)
        except Exception:
            pass
    return total


class Monitor(threading.Thread):
    """/liveness latency every 0.25 s; server and worker RSS every 0.5 s."""

    def __init__(self, port: int, pid: int, cluster_pids=()):
        """``pid``: the server (``panel serve``); ``cluster_pids``: an external Dask
        cluster's scheduler and worker commands (``--web-procs``), else the workers are
        the server's children. The scheduler counts with the server (the embedded one
        lives in the web process); forked web processes count with the server too."""
        super().__init__(daemon=True)
        import psutil
        self.proc = psutil.Process(pid)
        self.cluster = [psutil.Process(p) for p in cluster_pids]   # scheduler first
        self.url = f"http://127.0.0.1:{port}/liveness"
        self.live = []
        self.mem = []                   # (t, server MB, workers MB)
        self.stop = threading.Event()

    def groups(self):
        """``(server processes, worker processes)``, as they are now."""
        try:
            below = self.proc.children(recursive=True)
        except Exception:
            below = []
        if not self.cluster:
            return [self.proc], below
        workers = []
        for p in self.cluster[1:]:
            try:
                workers += [p] + p.children(recursive=True)
            except Exception:
                pass
        return [self.proc] + below + self.cluster[:1], workers

    def rss(self):
        def mb(procs):
            return _total(procs, lambda p: p.memory_info().rss) / 2**20
        try:
            server, workers = self.groups()
            return mb(server), mb(workers)
        except Exception:
            return None, None

    def run(self):
        last_mem = 0.0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as r:
                    r.read()
                self.live.append(time.perf_counter() - t0)
            except Exception:
                self.live.append(30.0)
            if time.monotonic() - last_mem > 0.5:
                last_mem = time.monotonic()
                s, w = self.rss()
                if s is not None:
                    self.mem.append((time.time(), s, w))
            self.stop.wait(0.25)

    def cpu_seconds(self) -> dict:
        """CPU seconds so far (user + system) of the server, its workers, this benchmark
        (the light clients, the monitor) and the browser (Playwright and Chromium)."""
        import psutil

        def cpu(procs):
            return _total(procs, lambda p: sum(p.cpu_times()[:2]))     # user + system
        me = psutil.Process()
        server, workers = self.groups()
        try:
            browser = me.children(recursive=True)
        except Exception:
            browser = []
        taken = {p.pid for p in server + workers + self.cluster}
        browser = [p for p in browser if p.pid not in taken]
        return {"server": cpu(server), "workers": cpu(workers), "benchmark": cpu([me]),
                "browser": cpu(browser)}

    def cpu_percent(self, seconds: float) -> float:
        """The server's CPU (its processes, see :meth:`groups`) over ``seconds``."""
        t0, c0 = time.perf_counter(), self.cpu_seconds()["server"]
        time.sleep(seconds)
        return 100 * (self.cpu_seconds()["server"] - c0) / (time.perf_counter() - t0)


# -------------------------------------------------------------------------- students
class Student(LightClient):
    """A light client (the fault tests' :class:`LightClient`: a real session over a
    websocket, no browser) that presses Start, then Pause and Resume once (with
    ``pause_resume``), and times each click until the page shows it."""

    def __init__(self, url: str, args: dict, pause_resume: bool = True,
                 start_when: str = "document"):
        super().__init__(url, args)
        self.pause_resume = pause_resume
        self.start_when = start_when    # "document": Start the moment the page arrives;
                                        # "whole": once its lower sections are in
        self.clicks = []                # (what, seconds to the page showing it)
        self.states = []
        self.finished_at = None
        self.running_at = None          # when its run first showed "running"
        self.whole_s = None             # seconds from the request to the lower sections

    @property
    def ready_s(self):
        return self.pulled_s

    def on_ready(self):
        from bokeh.events import ButtonClick
        doc = self.doc
        start, pause, status = (self.model(c) for c in ("btn-start", "btn-pause",
                                                        "bnlstm-status"))
        pending = {}                   # what was clicked -> (state awaited, t0)
        t_asked = time.perf_counter() - self.pulled_s

        def click(what, button, awaited):
            pending[what] = (awaited, time.perf_counter())
            doc.callbacks.send_event(ButtonClick(button))

        def on_change(event):
            if self.whole_s is None and self.has_model("plot-kurt"):
                self.whole_s = time.perf_counter() - t_asked
                if self.start_when == "whole":
                    click("start", start, ("queued", "starting", "running", "finished"))
            states = STATE.findall(html.unescape(getattr(status, "text", "") or ""))
            state = states[0] if states else None
            if state and (not self.states or self.states[-1] != state):
                self.states.append(state)
            now = time.perf_counter()
            for what, (awaited, t0) in list(pending.items()):
                if state in awaited:
                    self.clicks.append((what, now - t0))
                    del pending[what]
            if state == "running" and self.pause_resume and "paused" not in self.states \
                    and "pause" not in pending:
                click("pause", pause, ("paused",))
            elif state == "paused" and "resume" not in pending and \
                    not any(w == "resume" for w, _ in self.clicks):
                click("resume", pause, ("running", "finished"))
            if state == "running" and self.running_at is None:
                self.running_at = time.time()
            if state == "finished" and self.finished_at is None:
                self.finished_at = time.time()
        doc.on_change(on_change)
        if self.start_when == "document":
            click("start", start, ("queued", "starting", "running", "finished"))


# --------------------------------------------------------------------------- teacher
def launch_chromium(pw):
    """Headless Debian Chromium for a teacher's page: timers and rendering never throttled."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding"])


# Page ready, timed in the page: the first frame in which the Start button and the Bokeh
# document are both there, in seconds from the navigation's start. Playwright's own waits
# (below, "through the driver") are round trips to the browser, each answered only between
# the page's tasks: once the lower sections arrive, the browser renders them in tasks of
# 0.06-0.4 s, and the driver's second wait could land behind several of them (ready then
# read as late as "whole", 1.5-2 s after the button was drawn).
READY_JS = """(() => {
  const deep = (root, sel) => {
    const hit = root.querySelector(sel);
    if (hit) return hit;
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { const f = deep(el.shadowRoot, sel); if (f) return f; }
    }
    return null;
  };
  const poll = () => {
    const host = window.Bokeh && Bokeh.documents.length > 0 && deep(document, '.btn-start');
    const button = host && (host.shadowRoot || host).querySelector('button');
    if (button) window.__bnlstm_ready_ms = performance.now();
    else requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})()"""


def ready_in_page(page) -> float:
    """The page's own ready time (``READY_JS``), seconds from its navigation's start."""
    ms = page.evaluate("() => window.__bnlstm_ready_ms")
    return float("nan") if ms is None else ms / 1000


def teacher_page(browser, url):
    """Open a page: ``(context, page, ready s, whole page s)``: ready when its Start button
    and Bokeh document are there (the controls and the learning curves), through the
    driver (:func:`ready_in_page` has the page's own time), whole when the lower sections
    have joined and drawn their last plot."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    ctx.add_init_script(READY_JS)
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".btn-start button")
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
    ready = time.perf_counter() - t0
    page.wait_for_selector(".lower-sections.attached .plot-stats-c_var canvas", state="attached")
    return ctx, page, ready, time.perf_counter() - t0


def teacher_state(page):
    row = page.locator(".bnlstm-status tr.run-row").first
    return row.get_attribute("data-state") if row.count() else None


# The click, timed in the page: from the click event to the first frame after the status
# row shows the awaited state (a MutationObserver on the status pane). Playwright's own
# click() first checks that the button is visible, stable and hit (a few animation frames)
# and each poll of the row is a round trip to the browser: on a loaded machine those add
# 0.1-0.3 s that no user waits for, so that time is kept apart ("through the driver").
CLICK_JS = """([button, host, want, timeout_ms]) => new Promise(done => {
  const root = host.shadowRoot || host;
  const state = () => { const r = root.querySelector('tr.run-row');
                        return r && r.getAttribute('data-state'); };
  let over = false;
  const end = (v) => { if (!over) { over = true; obs.disconnect(); done(v); } };
  const t0 = performance.now();
  const obs = new MutationObserver(() => {
    if (want.includes(state())) requestAnimationFrame(() => end((performance.now() - t0) / 1000));
  });
  obs.observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
  button.click();
  setTimeout(() => end(null), timeout_ms);
})"""


def teacher_click(page, button, want, timeout=60.0):
    """Click ``button`` and time it until the first run row shows a state in ``want``:
    ``(in the page, through the driver)`` in seconds (``None``: not shown in ``timeout``)."""
    t0 = time.perf_counter()
    target = page.get_by_role("button", name=button, exact=True)
    target.wait_for(state="visible")
    handle = target.element_handle()
    host = page.locator(".bnlstm-status").first.element_handle()
    in_page = page.evaluate(CLICK_JS, [handle, host, list(want), int(timeout * 1000)])
    driver = time.perf_counter() - t0 if in_page is not None else None
    return in_page, driver


# ------------------------------------------------------------------------------ server
def _env(extra_env: dict, repo: Path = REPO) -> dict:
    """The server's environment: the shared MNIST, and ``repo``'s packages first on the path.
    ``bnlstm`` is found as ``repo/bnlstm``; ``bnlstm_app`` (``app/`` installed under that
    name, which ``main.py`` imports) needs a folder in which that name leads to
    ``repo/app``: without it, another checkout's server would run this venv's
    editable-installed ``app/``, not its own."""
    repo = Path(repo).resolve()
    path = [str(repo)]
    if repo != REPO:
        shim = Path(tempfile.mkdtemp(prefix="bnlstm-app-"))
        (shim / "bnlstm_app").symlink_to(repo / "app")
        path.insert(0, str(shim))
    return {**os.environ, **extra_env,
            "BNLSTM_MNIST_DIR": os.environ.get("BNLSTM_MNIST_DIR",
                                               str(REPO.parent / "shared" / "data" / "mnist")),
            "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}


def start_cluster(n_workers: int, logf):
    """A Dask scheduler and ``n_workers`` single-thread workers on loopback, as the
    README's commands for several web processes start them; returns ``(address,
    [scheduler process, worker process])``."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _env({"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"})
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                             cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True)
    time.sleep(3.0)
    workers = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                "--nworkers", str(n_workers), "--nthreads", "1",
                                "--memory-limit", "4GiB", "--no-dashboard"],
                               cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return address, [sched, workers]


def stop(proc: subprocess.Popen) -> None:
    """End a process started in a session of its own, and everything it started."""
    import signal
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(extra_env: dict, extra_args=(), repo: Path = REPO):
    """``panel serve app/`` as ``./scripts/dashboard`` runs it, on a free loopback port, with
    the shared MNIST; returns ``(process, port, log path, log file)`` once ``/liveness``
    answers (SystemExit if it does not within 90 s). ``repo``: the checkout to serve (its
    ``app/`` and ``bnlstm/``; another commit's, for a baseline)."""
    port = free_port()
    # the web process's allocator, as ./scripts/dashboard chooses it (BNLSTM_WEB_PYTHONMALLOC,
    # default malloc; --env BNLSTM_WEB_PYTHONMALLOC=pymalloc for Python's own)
    env = web_process_env(_env(extra_env, repo))
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-classroom-{port}.log"
    cmd = [sys.executable, "-m", "panel", "serve", str(Path(repo) / "app"),
           "--address", "127.0.0.1", "--port", str(port), "--liveness",
           "--allow-websocket-origin", f"127.0.0.1:{port}", *extra_args]
    logf = open(log_path, "w")
    srv = subprocess.Popen(cmd, cwd=repo, env=env, stdout=logf, stderr=subprocess.STDOUT,
                           start_new_session=True)
    end = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2)
            return srv, port, log_path, logf
        except OSError:
            if time.time() > end or srv.poll() is not None:
                srv.kill()
                raise SystemExit(f"server did not start; see {log_path}")
            time.sleep(0.3)


# ------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30, help="light client sessions (students)")
    ap.add_argument("--steps", type=int, default=200, help="updates of each student's run")
    ap.add_argument("--engine", choices=("dask", "threads"), default="dask",
                    help="where runs train: Dask worker processes (the default) or threads "
                         "of the server (what the dashboard did before)")
    ap.add_argument("--no-browser", action="store_true", help="no teacher page")
    ap.add_argument("--web-procs", type=int, default=1,
                    help="web processes (panel serve --num-procs N); above 1 they share one "
                         "Dask cluster that this benchmark starts (a scheduler with "
                         "worker-saturation 1.0 and one single-thread worker per core), as "
                         "the README's commands do")
    ap.add_argument("--start-when", choices=("document", "whole"), default="document",
                    help="a student presses Start the moment its page arrives (racing the "
                         "page's own lower sections: the worst case), or once the whole "
                         "page is in, as the teacher's browser does")
    ap.add_argument("--drain-timeout", type=float, default=1800.0)
    ap.add_argument("--out", help="also write the numbers to this JSON file")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server (repeatable), for example "
                         "BNLSTM_WEB_PYTHONMALLOC=pymalloc")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure this commit's server (its app/ and bnlstm/, checked out "
                         "in a temporary worktree) in the same sitting, after this tree's, and "
                         "print the ratios of the two")
    args = ap.parse_args()
    if not args.no_browser and not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found (the teacher's browser): install it "
                         "(apt-get install chromium; ./scripts/test does), set BNLSTM_CHROMIUM, "
                         "or run with --no-browser")
    if not args.baseline:
        out = sitting(args, REPO)
        report(args, out)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        return
    with checkout(args.baseline) as (rev, base):
        got = {"this tree": sitting(args, REPO), f"baseline {rev}": sitting(args, base)}
    for name, out in got.items():
        print(f"\n=== {name}")
        report(args, out)
    compare(got)
    if args.out:
        Path(args.out).write_text(json.dumps(got, indent=2) + "\n")


@contextlib.contextmanager
def checkout(rev: str):
    """``rev`` checked out in a temporary git worktree: ``(short hash, folder)``."""
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.strip()
    base = Path(tempfile.mkdtemp(prefix="bnlstm-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), short], cwd=REPO,
                   check=True)
    try:
        yield short, base
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO)


# the numbers compared, (key, field): this tree's / the baseline's
COMPARED = (("ready_light_s", "p50"), ("ready_light_s", "p95"), ("click_light_s", "p50"),
            ("click_light_s", "p95"), ("click_browser_s", "p50"), ("click_browser_s", "p95"),
            ("liveness_s", "p95"), ("queue_drain_s", None), ("mem_peak_mb", None))


def compare(got: dict) -> None:
    (na, a), (nb, b) = got.items()
    print(f"\n{na} / {nb}:")
    for key, field in COMPARED:
        x, y = a.get(key), b.get(key)
        if field is not None:
            x, y = (x or {}).get(field), (y or {}).get(field)
        what = key + (f" {field}" if field else "")
        ratio = f"{x / y:.2f}x" if x is not None and y else "-"
        print(f"  {what:28s} {ratio:>7s}   ({x if x is not None else '-'} vs {y if y is not None else '-'})")


def sitting(args, repo: Path) -> dict:
    """One class on the server of ``repo``'s checkout: the numbers, as a dict."""
    cluster, cluster_procs, cluster_log, extra_env, extra_args = None, [], None, {}, []
    if args.web_procs > 1:
        cluster_log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-classroom-dask.log", "w")
        cluster, cluster_procs = start_cluster(max(2, os.cpu_count() or 2), cluster_log)
        extra_env = {"BNLSTM_DASK_SCHEDULER": cluster}
        extra_args = ["--num-procs", str(args.web_procs)]
    extra_env.update(dict(e.split("=", 1) for e in args.env))
    srv, port, log_path, logf = start_server({"BNLSTM_ENGINE": args.engine,
                                              "BNLSTM_APP_LOG": "1", **extra_env}, extra_args,
                                             repo=repo)
    url = f"http://127.0.0.1:{port}/app"
    out = {"sessions": args.sessions, "steps": args.steps, "engine": args.engine,
           "start_when": args.start_when, "web_procs": args.web_procs, "env": args.env,
           "cores": os.cpu_count()}
    students = []
    try:
        mon = Monitor(port, srv.pid, [p.pid for p in cluster_procs])
        mon.start()
        print(f"server on {url} (engine {args.engine}, {args.web_procs} web process(es)"
              + (f", cluster {cluster}" if cluster else "")
              + (f", {' '.join(args.env)}" if args.env else "") + f"); log {log_path}")
        time.sleep(2.0)
        out["mem_idle_mb"] = mon.rss()[0]

        pw = browser = page = ctx = None
        teacher_clicks = []
        first = Student(url, {"steps": str(args.steps)}, pause_resume=False)
        first.start()
        first.ready.wait(120)
        out["ready_first_light_s"] = first.ready_s
        if not args.no_browser:
            from playwright.sync_api import sync_playwright
            pw = sync_playwright().start()
            browser = launch_chromium(pw)
            # the browser's first page also pays for starting its renderer; a student's
            # browser is running already, so the idle page is the second one (new context:
            # nothing of the first page is cached)
            c0, p0, ready0, whole0 = teacher_page(browser, url)
            out["ready_browser_first_s"], out["whole_browser_first_s"] = ready0, whole0
            out["ready_browser_first_in_page_s"] = ready_in_page(p0)
            c0.close()
            print(f"the browser's first page: ready in {ready0:.2f} s, whole in {whole0:.2f} s")
            ctx, page, ready, whole = teacher_page(browser, url + "?steps=100000")
            out["ready_browser_idle_s"], out["whole_browser_idle_s"] = ready, whole
            out["ready_browser_idle_in_page_s"] = ready_in_page(page)
            print(f"teacher's page ready in {ready:.2f} s, whole in {whole:.2f} s (idle server)")
            teacher_clicks.append(("start", *teacher_click(page, "Start", ("running",))))
        time.sleep(5.0)
        first.close()
        first.join(10)
        time.sleep(1.0)
        out["mem_start_mb"] = mon.rss()[0]      # the starting level: server after one page

        t_load = time.time()
        for i in range(args.sessions):
            st = Student(url, {"steps": str(args.steps)}, start_when=args.start_when)
            st.start()
            st.ready.wait(180)
            students.append(st)
            print(f"  student {i + 1:2d}: page ready {st.ready_s if st.ready_s else -1:.2f} s"
                  + (f" ERROR {st.error}" if st.error else ""), flush=True)
            if page is not None and i % 5 == 4:          # the teacher clicks during the load
                teacher_clicks.append(("pause", *teacher_click(page, "Pause", ("paused",))))
                teacher_clicks.append(("resume", *teacher_click(page, "Resume", ("running",))))
        t_started = time.time()
        cpu0 = mon.cpu_seconds()
        if page is not None:
            _, p1, out["ready_browser_loaded_s"], out["whole_browser_loaded_s"] = \
                teacher_page(browser, url)
            out["ready_browser_loaded_in_page_s"] = ready_in_page(p1)
            print(f"a new browser page at {args.sessions} sessions: ready in "
                  f"{out['ready_browser_loaded_s']:.2f} s, whole in "
                  f"{out['whole_browser_loaded_s']:.2f} s")
        while time.time() - t_started < args.drain_timeout:
            if all(s.finished_at or s.error for s in students):
                break
            if page is not None and int(time.time() - t_started) % 15 == 0:
                teacher_clicks.append(("pause", *teacher_click(page, "Pause", ("paused",))))
                teacher_clicks.append(("resume", *teacher_click(page, "Resume", ("running",))))
            time.sleep(1.0)
        done = [s.finished_at for s in students if s.finished_at]
        out["runs_finished"] = len(done)
        out["queue_drain_s"] = (max(done) - t_started) if done else None
        out["load_s"] = t_started - t_load
        t_end = max(done) if done else time.time()
        cpu1 = mon.cpu_seconds()
        out["drain_cpu_pct"] = {k: 100 * (cpu1[k] - cpu0[k]) / max(t_end - t_started, 1e-9)
                                for k in cpu0}
        out["run_wall_s"] = summary([s.finished_at - s.running_at for s in students
                                     if s.finished_at and s.running_at])
        if page is not None:
            teacher_clicks.append(("stop", *teacher_click(page, "Stop", ("stopped",))))
        time.sleep(3.0)
        out["server_cpu_idle_sessions_pct"] = mon.cpu_percent(10.0)

        ready = [s.ready_s for s in students if s.ready_s is not None]
        out["whole_light_s"] = summary([s.whole_s for s in students if s.whole_s is not None])
        light_clicks = [t for s in students for _, t in s.clicks]
        tclicks = [t for _, t, _ in teacher_clicks if t is not None]
        out["ready_light_s"] = summary(ready)
        out["click_light_s"] = summary(light_clicks)
        out["click_light_by_kind_s"] = {k: summary([t for s in students for w, t in s.clicks
                                                    if w == k])
                                        for k in ("start", "pause", "resume")}
        out["click_browser_s"] = summary(tclicks)
        out["click_browser_driver_s"] = summary([t for _, _, t in teacher_clicks
                                                 if t is not None])
        out["click_browser_missed"] = sum(t is None for _, t, _ in teacher_clicks)
        out["click_light_missed"] = sum(1 for s in students for w in ("start",)
                                        if not any(c == w for c, _ in s.clicks))
        out["errors"] = [f"{type(s.error).__name__}: {s.error}" for s in students if s.error]

        for s in students:
            s.close()
        if browser is not None:
            ctx.close()
            browser.close()
            pw.stop()
        time.sleep(40.0)                        # sessions are destroyed after ~15-35 s
        mon.stop.set()
        mon.join(35)
        out["mem_after_close_mb"] = mon.rss()[0]
        out["mem_peak_mb"] = max(m[1] for m in mon.mem)
        out["workers_mem_peak_mb"] = max(m[2] for m in mon.mem)
        out["liveness_s"] = summary(mon.live)
        during = [x for x in mon.live]
        out["liveness_over_1s"] = sum(x > 1.0 for x in during)
        logtext = log_path.read_text(errors="replace")
        out["sessions_destroyed"] = logtext.count("session destroyed")
    finally:
        for s in students:
            s.close()
        stop(srv)
        for p in cluster_procs[::-1]:
            stop(p)
        logf.close()
        if cluster_log is not None:
            cluster_log.close()
    return out


def report(args, out: dict) -> None:
    def f(v, unit="s"):
        return "-" if v is None else f"{v:.2f} {unit}"
    print(f"\nclassroom: {args.sessions} sessions, {args.steps}-update runs, engine "
          f"{args.engine}, {args.web_procs} web process(es), Start on "
          f"{args.start_when}, {os.cpu_count()} cores")
    for key, what in (("ready_light_s", "page ready, light clients (server side)"),
                      ("whole_light_s", "whole page, light clients (lower sections in)"),
                      ("click_light_s", "click -> update, light clients"),
                      ("click_browser_s", "click -> update, the browser (Pause/Resume)"),
                      ("click_browser_driver_s", "  the same, through the driver (Playwright)"),
                      ("liveness_s", "/liveness latency")):
        d = out.get(key) or {}
        print(f"  {what:45s} p50 {f(d.get('p50'))}  p95 {f(d.get('p95'))}  "
              f"max {f(d.get('max'))}  (n={d.get('n')})")
    for k, d in (out.get("click_light_by_kind_s") or {}).items():
        print(f"    {'light clients, ' + k:43s} p50 {f(d.get('p50'))}  p95 {f(d.get('p95'))}  "
              f"max {f(d.get('max'))}  (n={d.get('n')})")
    print("  page ready (in the page / through the driver) / whole:")
    for key, what in (("first", "the browser's first page"), ("idle", "browser, idle server"),
                      ("loaded", f"browser, at {args.sessions} sessions")):
        print(f"    {what:43s} {f(out.get(f'ready_browser_{key}_in_page_s'))} / "
              f"{f(out.get(f'ready_browser_{key}_s'))} / {f(out.get(f'whole_browser_{key}_s'))}")
    print(f"  runs finished: {out.get('runs_finished')} of {args.sessions}; queue drained in "
          f"{f(out.get('queue_drain_s'))} after the last Start; clicks never shown: "
          f"browser {out.get('click_browser_missed')}, light {out.get('click_light_missed')}")
    rw, dc = out.get("run_wall_s") or {}, out.get("drain_cpu_pct") or {}
    print(f"  a run, from running to finished: p50 {f(rw.get('p50'))}, max {f(rw.get('max'))}; "
          "CPU during the drain, % of a core: " + ", ".join(f"{k} {v:.0f}%" for k, v in dc.items()))
    print(f"  server CPU, {args.sessions + 1} sessions open and idle: "
          f"{out.get('server_cpu_idle_sessions_pct', 0):.1f}% of a core")
    print(f"  server memory: idle {f(out.get('mem_idle_mb'), 'MB')}, after one page "
          f"{f(out.get('mem_start_mb'), 'MB')}, peak {f(out.get('mem_peak_mb'), 'MB')}, after "
          f"all closed {f(out.get('mem_after_close_mb'), 'MB')}; workers' peak "
          f"{f(out.get('workers_mem_peak_mb'), 'MB')}")
    if out.get("errors"):
        print(f"  errors: {out['errors'][:3]}")


if __name__ == "__main__":
    main()
