"""Click to update in a browser while two runs train: this tree against a baseline commit.

    python benchmarks/bench_click.py [--baseline REV] [--clicks 30] [--rounds 2] [--pages N]

For this working tree and for ``--baseline`` (default ``HEAD~1``, checked out in a
temporary git worktree), in turn, ``--rounds`` times: starts ``panel serve app/`` as
the classroom benchmark does (two Dask workers), opens one light session that trains a
long run (the other worker's load), and one headless Chromium page (Debian's
/usr/bin/chromium) that starts a long run of its own and then clicks Pause, Resume,
Pause, ... ``--clicks`` times, each timed in the page (the classroom benchmark's
``teacher_click``: from the click event to the first frame after the status row shows
the new state). Prints each side's p50 / p95 / max / mean, and this tree's mean and p50
as ratios of the baseline's.

By default no page is built meanwhile, so this is a click's own path (the server's
handler, the engine, the worker, the pump, the page's drain, the browser), not its wait
behind other sessions' pages (``bench_classroom.py`` measures that in a whole class).
``--pages N``: meanwhile, light clients (``document_ready`` said, as a browser does)
open new pages one after another, each as soon as the one before is in, up to N kept
open: the clicks wait behind page builds, as in a class arriving. About 5 minutes, or 8
with ``--pages``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "browser"))
from bench_classroom import (CHROMIUM, checkout, launch_chromium, start_server, stop,  # noqa: E402
                             summary, teacher_click, teacher_page, teacher_state)
from light_client import open_client  # noqa: E402  (the fault tests' light client)


def open_pages(url: str, most: int, done: threading.Event, opened: list) -> None:
    """New pages one after another (each once the one before is in), up to ``most``."""
    while not done.is_set() and len(opened) < most:
        try:
            opened.append(open_client(url, timeout=120))
        except Exception as exc:                   # counted, and the clicks go on
            opened.append(exc)


def measure(pw, repo: Path, clicks: int, pages: int = 0) -> list:
    """Seconds per click, in the page, on a server of ``repo``'s code."""
    srv, port, _, logf = start_server({"BNLSTM_ENGINE": "dask", "BNLSTM_MAX_RUNS": "2"},
                                      repo=repo)
    url = f"http://127.0.0.1:{port}/app"
    other, browser, times = None, None, []
    done, opened, arrivals = threading.Event(), [], None
    try:
        other = open_client(url, {"steps": "100000"}, timeout=120)
        other.click("btn-start")
        browser = launch_chromium(pw)
        _, page, _, _ = teacher_page(browser, url + "?steps=100000")
        teacher_click(page, "Start", ("running",), timeout=120)
        other.wait_state(("running",), 120)
        page.wait_for_timeout(3000)              # both runs past their first updates
        if pages:
            arrivals = threading.Thread(target=open_pages, args=(url, pages, done, opened),
                                        daemon=True)
            arrivals.start()
            page.wait_for_timeout(1000)
        for _ in range(clicks):
            paused = teacher_state(page) == "paused"
            t, _ = teacher_click(page, "Resume" if paused else "Pause",
                                 ("running",) if paused else ("paused",), timeout=30)
            if t is not None:
                times.append(t)
            page.wait_for_timeout(700)
        if pages:
            bad = [c for c in opened if isinstance(c, Exception)]
            print(f"    {len(opened) - len(bad)} pages opened meanwhile"
                  + (f", {len(bad)} failed: {bad[0]!r}" if bad else ""), flush=True)
        return times
    finally:
        done.set()
        if arrivals is not None:
            arrivals.join(180)
        for c in opened:
            if not isinstance(c, Exception):
                c.close()
        if browser is not None:
            browser.close()
        if other is not None:
            other.close()
        stop(srv)
        logf.close()


def stats(xs):
    """The classroom benchmark's summary (n, p50, p95, max), and the mean."""
    return {**summary(xs), "mean": statistics.fmean(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="HEAD~1", help="the commit to compare against")
    ap.add_argument("--clicks", type=int, default=30, help="clicks per server")
    ap.add_argument("--rounds", type=int, default=2, help="servers of each, interleaved")
    ap.add_argument("--pages", type=int, default=0,
                    help="new pages opened one after another meanwhile, at most this many")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: install chromium (./scripts/test does)")
    from playwright.sync_api import sync_playwright
    with checkout(args.baseline) as (rev, base), sync_playwright() as pw:
        got = {"this tree": [], f"baseline {rev}": []}
        for r in range(args.rounds):
            for name, repo in (("this tree", REPO), (f"baseline {rev}", base)):
                xs = measure(pw, repo, args.clicks, args.pages)
                got[name] += xs
                s = stats(xs)
                print(f"round {r + 1}, {name:18s} p50 {s['p50']:.3f}  mean "
                      f"{s['mean']:.3f} s  (n={s['n']})", flush=True)
    print("\nPause/Resume, click -> shown, in the page, two runs training"
          + (f", new pages opening meanwhile (up to {args.pages}):" if args.pages else ":"))
    for name, xs in got.items():
        s = stats(xs)
        print(f"  {name:18s} p50 {s['p50']:.3f}  p95 {s['p95']:.3f}  max {s['max']:.3f}  "
              f"mean {s['mean']:.3f} s  (n={s['n']})")
    a, b = (stats(xs) for xs in got.values())
    print(f"  this tree / baseline: mean {a['mean'] / b['mean']:.2f}x, p50 "
          f"{a['p50'] / b['p50']:.2f}x")


if __name__ == "__main__":
    main()
