"""How long a browser waits for the page on an idle server: the dashboard against a baseline.

    python benchmarks/bench_page_load.py [--pages 6] [--baseline-env BNLSTM_MATHJAX=1] [--env NAME=VALUE]

Starts two servers as the classroom benchmark does (``panel serve app/``, loopback, the
shared MNIST): the *baseline*, with ``--baseline-env`` in its environment (default
``BNLSTM_MATHJAX=1``: the page as Panel would send it, with the 1.8 MB MathJax bundle),
and the *dashboard* as ``./scripts/dashboard`` serves it (plus any ``--env``). One
headless Chromium (Debian's /usr/bin/chromium) opens one page of each to warm up, then
``--pages`` pages of each in turn, each in a new browser context (nothing cached), and
prints per server the page-ready time (its Start button and Bokeh document are there;
timed in the page, and through the driver as before),
the whole-page time (the lower sections drawn), the seconds until the server's HTML
arrived and the bytes of script the page loaded; then the dashboard's medians as a ratio
of the baseline's. No runs are started. About a minute.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_classroom import (CHROMIUM, launch_chromium, ready_in_page,  # noqa: E402
                             start_server, stop, teacher_page)


def _pairs(items):
    return dict(e.split("=", 1) for e in items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=6, help="pages per server, after one to warm up")
    ap.add_argument("--baseline-env", action="append", default=None, metavar="NAME=VALUE",
                    help="the baseline server's environment (repeatable; default "
                         "BNLSTM_MATHJAX=1)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the dashboard's server (repeatable)")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium, or set BNLSTM_CHROMIUM")
    from playwright.sync_api import sync_playwright
    variants = {"baseline": _pairs(args.baseline_env or ["BNLSTM_MATHJAX=1"]),
                "dashboard": _pairs(args.env)}
    servers = {}
    pw = browser = None
    try:
        for name, env in variants.items():
            servers[name] = start_server(env)
        pw = sync_playwright().start()
        browser = launch_chromium(pw)
        got = {name: [] for name in servers}
        for i in range(args.pages + 1):
            for name, (_, port, _, _) in servers.items():
                ctx, page, ready, whole = teacher_page(browser, f"http://127.0.0.1:{port}/app")
                html_s = page.evaluate(
                    "() => performance.getEntriesByType('navigation')[0].responseEnd") / 1000
                script = page.evaluate(
                    "() => performance.getEntriesByType('resource')"
                    ".filter(r => r.name.split('?')[0].endsWith('.js'))"
                    ".reduce((n, r) => n + r.decodedBodySize, 0)")
                in_page = ready_in_page(page)
                ctx.close()
                if i:                                  # the first page of each warms up
                    got[name].append((ready, whole, html_s, script, in_page))
        med = {name: [statistics.median(x[k] for x in rows) for k in range(5)]
               for name, rows in got.items()}
        for name, rows in got.items():
            env = " ".join(f"{k}={v}" for k, v in variants[name].items()) or "as served"
            print(f"{name:9s} ({env}): ready in the page " + ", ".join(f"{r[4]:.2f}" for r in rows)
                  + " s, through the driver " + ", ".join(f"{r[0]:.2f}" for r in rows)
                  + f" s; medians: ready {med[name][4]:.2f} s in the page, {med[name][0]:.2f} s "
                  f"through the driver, whole {med[name][1]:.2f} s, HTML {med[name][2]:.2f} s; "
                  f"scripts {med[name][3] / 1e6:.1f} MB")
        b, d = med["baseline"], med["dashboard"]
        print(f"dashboard / baseline: ready in the page {d[4] / b[4]:.2f}x, through the driver "
              f"{d[0] / b[0]:.2f}x, whole {d[1] / b[1]:.2f}x, scripts {d[3] / b[3]:.2f}x")
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        for srv, _, _, logf in servers.values():
            stop(srv)
            logf.close()


if __name__ == "__main__":
    main()
