"""The web server's event loop while two runs train: in its threads, or in worker processes.

    python benchmarks/bench_event_loop.py [--seconds 30]

For each setting, starts ``panel serve app/``, opens two light sessions (websocket
clients, no browser) that each start a long row run, and once both train measures for
``--seconds``: ``/liveness`` latency every 0.1 s (how long a request waits for the
event loop) and, in the first session, the time from clicking Pause (or Resume) to the
status row showing it, over and over. No page is built meanwhile (a page build holds
the event loop for about a second by itself).

- ``threads``: the runs train in threads of the server (``BNLSTM_ENGINE=threads``):
  they hold the GIL between kernels and share both cores with the event loop;
- ``dask, nice 0``: in two worker processes at the server's own CPU priority: no GIL
  shared, the cores still are;
- ``dask``: the default, workers at niceness 10: the server gets the CPU first.

The first against the second is the GIL's share of the delay; the second against the
third, the cores'.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
from bench_classroom import start_server, summary  # noqa: E402
from light_client import open_client  # noqa: E402  (the fault tests' light client)

SETTINGS = [("threads", {"BNLSTM_ENGINE": "threads"}),
            ("dask, nice 0", {"BNLSTM_ENGINE": "dask", "BNLSTM_WORKER_NICE": "0"}),
            ("dask (nice 10)", {"BNLSTM_ENGINE": "dask"})]


def measure(name, extra, seconds):
    srv, port, _, logf = start_server({**extra, "BNLSTM_MAX_RUNS": "2"})
    url = f"http://127.0.0.1:{port}/app"
    live = f"http://127.0.0.1:{port}/liveness"
    clients = []
    try:
        for _ in range(2):
            c = open_client(url, {"steps": "100000"}, timeout=120)
            c.click("btn-start")
            clients.append(c)
        for c in clients:
            c.wait_state(("running",), 120)
        time.sleep(3.0)
        lat, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    urllib.request.urlopen(live, timeout=30).read()
                    lat.append(time.perf_counter() - t0)
                except OSError:
                    lat.append(30.0)
                stop.wait(0.1)
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        clicks = []
        t_end = time.time() + seconds
        first = clients[0]
        while time.time() < t_end:          # Pause, Resume, Pause, ... in the first session
            want = ("paused",) if first.state() == "running" else ("running",)
            first.click("btn-pause")
            clicks.append(first.wait_state(want, 30))
            time.sleep(1.0)
        stop.set()
        t.join(35)
        return summary(lat), summary(clicks)
    finally:
        for c in clients:
            c.close()
        srv.terminate()
        try:
            srv.wait(20)
        except subprocess.TimeoutExpired:
            srv.kill()
        logf.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    rows = []
    for name, extra in SETTINGS:
        live, start = measure(name, extra, args.seconds)
        rows.append((name, live, start))
        print(f"{name:16s} /liveness p50 {live['p50']:.3f} p95 {live['p95']:.3f} "
              f"max {live['max']:.3f} s (n={live['n']});  Pause/Resume -> shown p50 "
              f"{start['p50'] or 0:.2f} p95 {start['p95'] or 0:.2f} max "
              f"{start['max'] or 0:.2f} s (n={start['n']})", flush=True)
    base = rows[0][1]["p95"] or 1e-9
    for name, live, _ in rows[1:]:
        print(f"  {name}: /liveness p95 {live['p95'] / base:.2f}x of threads'")


if __name__ == "__main__":
    main()
