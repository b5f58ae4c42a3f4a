"""What an idle classroom costs the server: N sessions open, each with a finished run.

    python benchmarks/bench_idle.py [--sessions 30] [--seconds 15]

Starts ``panel serve app/`` as the classroom benchmark does, opens ``--sessions`` light
clients one after another, each starting a 5-update run (so the embedded Dask cluster is
up, as in a class), waits until every run has finished, then prints the server's CPU
over ``--seconds`` (percent of one core) in total and per thread (Panel's event loop is
the main thread; Dask's scheduler and nannies share one "IO loop" thread; names from
``py-spy dump`` when py-spy is installed, else thread ids).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))
from bench_classroom import Monitor, Student, start_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    sys.setrecursionlimit(1_000_000)            # bokeh's client walks deep documents
    threading.stack_size(256 << 20)
    import psutil
    srv, port, log_path, logf = start_server({"BNLSTM_APP_LOG": "1"})
    url = f"http://127.0.0.1:{port}/app"
    mon = Monitor(port, srv.pid)
    mon.start()
    try:
        students = []
        for _ in range(args.sessions):
            s = Student(url, {"steps": "5"}, pause_resume=False)
            s.start()
            s.ready.wait(120)
            students.append(s)
        end = time.time() + 600
        while time.time() < end and not all(s.finished_at or s.error for s in students):
            time.sleep(1)
        print(f"{sum(1 for s in students if s.finished_at)} of {args.sessions} runs finished")
        time.sleep(5)
        proc = psutil.Process(srv.pid)
        t0 = {t.id: t.user_time + t.system_time for t in proc.threads()}
        total = mon.cpu_percent(args.seconds)
        t1 = {t.id: t.user_time + t.system_time for t in proc.threads()}
        names = {}
        spy = shutil.which("py-spy")
        if spy:
            out = subprocess.run([spy, "dump", "-p", str(srv.pid)], capture_output=True,
                                 text=True).stdout
            for line in out.splitlines():
                if line.startswith("Thread "):        # Thread 123 (idle): "MainThread"
                    parts = line.split(None, 3)
                    names[int(parts[1])] = parts[-1].strip('"')
        print(f"server CPU, {args.sessions} idle sessions: {total:.1f}% of one core")
        busy = sorted(t1, key=lambda k: -(t1[k] - t0.get(k, 0.0)))
        for tid in busy[:5]:
            share = 100 * (t1[tid] - t0.get(tid, 0.0)) / args.seconds
            print(f"  thread {names.get(tid, tid)}: {share:.1f}%")
    finally:
        mon.stop.set()
        srv.terminate()
        srv.wait(30)
        logf.close()
        os._exit(0)


if __name__ == "__main__":
    main()
