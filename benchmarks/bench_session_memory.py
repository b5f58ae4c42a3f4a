"""Does the server give a closed page's memory back? Rounds of pages opened and closed.

    python benchmarks/bench_session_memory.py [--pages 10] [--rounds 3] [--env BNLSTM_WEB_PYTHONMALLOC=pymalloc]

Starts ``panel serve app/`` as the classroom benchmark does (loopback, the shared MNIST),
opens one page (light client: a real websocket session that says ``document_ready`` as
a browser does, so the server builds the whole page) and closes it: the server's memory
then is the starting level. Then, ``--rounds`` times, opens ``--pages`` pages at once,
waits until every one has its lower sections, closes them all, and waits until the
server's log says every page was freed (and the trim after the last close). Prints,
per round, the seconds the pages took to build, the server's resident memory (RSS) with
them open and after they closed. No runs are started: this is the page's own memory.
``--env NAME=VALUE`` (repeatable) starts the server with that in its environment. The
server's allocator is chosen as ``./scripts/dashboard`` chooses it: glibc's
(``PYTHONMALLOC=malloc``, whose free pages the server's ``malloc_trim`` gives back) unless
``--env BNLSTM_WEB_PYTHONMALLOC=pymalloc`` (Python's own, which keeps them: the baseline).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))
from bench_classroom import start_server  # noqa: E402  (the same server as the classroom's)
from bnlstm_app.server.memory import web_process_env  # noqa: E402
from light_client import open_client  # noqa: E402  (the fault tests' light client)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=10, help="pages open at once per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server (repeatable)")
    args = ap.parse_args()
    import psutil
    extra = dict(e.split("=", 1) for e in args.env)
    srv, port, log_path, logf = start_server({**extra, "BNLSTM_APP_LOG": "1"})
    url = f"http://127.0.0.1:{port}/app"
    proc = psutil.Process(srv.pid)

    def rss_mb() -> float:
        return proc.memory_info().rss / 2 ** 20

    def wait_freed(n: int) -> None:
        end = time.time() + 120
        while time.time() < end and log_path.read_text(errors="replace").count(
                "dashboard freed") < n:
            time.sleep(0.5)
        time.sleep(5.0)                          # the trim runs 3 s after the last close

    try:
        first = open_client(url)
        first.wait_model("plot-kurt", 120)
        first.close()
        wait_freed(1)
        start = rss_mb()
        allocator = web_process_env(extra)["PYTHONMALLOC"]
        print(f"server (web allocator {allocator}{'; ' + ' '.join(args.env) if args.env else ''}): "
              f"{start:.0f} MB after one page")
        freed = 1
        for r in range(args.rounds):
            t0 = time.perf_counter()
            clients = [open_client(url) for _ in range(args.pages)]
            for c in clients:
                c.wait_model("plot-kurt", 120)
            built = time.perf_counter() - t0
            open_mb = rss_mb()
            for c in clients:
                c.close()
            freed += args.pages
            wait_freed(freed)
            print(f"  round {r + 1}: {args.pages} pages built in {built:.1f} s; "
                  f"{open_mb:.0f} MB open, {rss_mb():.0f} MB after they closed "
                  f"({rss_mb() - start:+.0f} MB from the start)", flush=True)
    finally:
        srv.terminate()
        srv.wait(30)
        logf.close()


if __name__ == "__main__":
    main()
