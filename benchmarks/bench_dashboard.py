"""Dashboard performance: Start-to-first-point latency and training throughput vs headless.

    python benchmarks/bench_dashboard.py [--steps 300] [--repeats 2]

(1) Starts ``panel serve app/`` on a free loopback port, opens it in headless Chromium
    (Debian's /usr/bin/chromium, as the browser tests), clicks Start for the row task and
    times how long the first loss point takes to appear in the page's Bokeh data source.
    Target: < 3 s.
(2) Trains the same config (the dashboard's defaults: row task, BN-LSTM, batch 100,
    hidden 100, probes every 25 updates, validation every 100 on 2000 digits) for
    ``--steps`` updates, alternately in the dashboard (plots updating, rate read in the
    browser from the number of points on screen) and headless (``Trainer.run`` in this
    process, same torch thread count as the server), and prints updates/s of both and
    their ratio. Target: dashboard >= 80% of headless.

The machine is shared and absolute speeds drift: the runs are interleaved and the
medians are compared. Needs BNLSTM_MNIST_DIR (default: ../shared/data/mnist).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEN_JS = """() => { let n = 0;
  for (const m of Bokeh.documents[0].all_models) {
    const d = m.data;
    if (!d || typeof d !== 'object' || Array.isArray(d) || m.selected === undefined) continue;
    const k = Object.keys(d).sort().join(',');
    if (k === 'loss,smooth,step,t') n = Math.max(n, d.step.length);
  } return n; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env):
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_dashboard_{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(REPO / "app"),
                             "--address", "127.0.0.1", "--port", str(port), "--liveness"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + 90
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2):
                return proc, f"http://127.0.0.1:{port}/app"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start; see {log.name}")


def offline(route):
    if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1")):
        route.continue_()
    else:
        route.fulfill(status=200, body="")


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.route("**/*", offline)
    page.goto(url)
    page.wait_for_selector(".btn-start button", timeout=120_000)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
    time.sleep(1.0)
    return page


def time_to_first_point(browser, url) -> float:
    page = open_page(browser, url)                  # a fresh session: no earlier points
    t0 = time.perf_counter()
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function(LEN_JS.replace("return n;", "return n >= 1;"), polling=20,
                           timeout=60_000)
    dt = time.perf_counter() - t0
    page.get_by_role("button", name="Stop", exact=True).click()
    page.close()
    return dt


def dashboard_rate(browser, url, steps: int) -> float:
    page = open_page(browser, url)
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function(LEN_JS.replace("return n;", "return n >= 1;"), polling=20,
                           timeout=60_000)
    t1, n1 = time.perf_counter(), page.evaluate(LEN_JS)
    page.wait_for_function(LEN_JS.replace("return n;", f"return n >= {steps};"), polling=50,
                           timeout=600_000)
    t2 = time.perf_counter()
    page.get_by_role("button", name="Stop", exact=True).click()
    page.close()
    return (steps - n1) / (t2 - t1)


def headless_rate(steps: int) -> float:
    from bnlstm import TrainConfig, Trainer
    from app.runs import SharedDataExperiment
    from app.dashboard import DASHBOARD_DEFAULTS
    cfg = TrainConfig(**{**DASHBOARD_DEFAULTS, "steps": steps, "test_at_end": False})
    times = {}

    def cb(rec):
        if rec["kind"] == "train" and rec["step"] in (1, steps):
            times[rec["step"]] = time.perf_counter()

    Trainer(cfg, experiment=SharedDataExperiment(cfg), callbacks=[cb]).run()
    return (steps - 1) / (times[steps] - times[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--latency-repeats", type=int, default=3)
    args = ap.parse_args()

    os.environ.setdefault("BNLSTM_MNIST_DIR", str(REPO.parent / "shared" / "data" / "mnist"))
    threads = int(os.environ.get("BNLSTM_TORCH_THREADS") or max(1, (os.cpu_count() or 1)
                                                                  // max(2, os.cpu_count() or 1)))
    import torch
    torch.set_num_threads(threads)
    env = {**os.environ, "BNLSTM_TORCH_THREADS": str(threads),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"torch threads per run: {threads} (server and headless); cores: {os.cpu_count()}")

    from playwright.sync_api import sync_playwright
    proc, url = start_server(env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=os.environ.get("BNLSTM_CHROMIUM", "/usr/bin/chromium"),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                      "--no-first-run", "--disable-background-networking"])
            lat = [time_to_first_point(browser, url) for _ in range(args.latency_repeats)]
            print(f"(1) Start -> first loss point on screen (row task): "
                  f"median {statistics.median(lat):.2f} s  (runs: "
                  + ", ".join(f"{x:.2f}" for x in lat) + ")  target < 3 s")
            dash, head = [], []
            for i in range(args.repeats):
                head.append(headless_rate(args.steps))
                print(f"  headless  #{i + 1}: {head[-1]:.1f} updates/s", flush=True)
                dash.append(dashboard_rate(browser, url + f"?steps={args.steps}", args.steps))
                print(f"  dashboard #{i + 1}: {dash[-1]:.1f} updates/s", flush=True)
            h, d = statistics.median(head), statistics.median(dash)
            print(f"(2) throughput over {args.steps} updates: dashboard {d:.1f} updates/s, "
                  f"headless {h:.1f} updates/s, ratio {d / h:.0%}  target >= 80%")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
