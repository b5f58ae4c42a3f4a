"""The README's picture, made from the real page: the dashboard training a comparison.

    .venv/bin/python scripts/screenshot.py [--preset "LSTM vs BN-LSTM"] [--seconds 60]
        [--out docs/dashboard.png] [--query "?steps=100000"] [--click "wall time (s)" ...]
        [--full-page]

Serves ``app/`` as ``./scripts/dashboard`` does (loopback, a free port), opens it in
headless Chromium (Debian's /usr/bin/chromium) at 1600 x 1000, presses the preset, lets
both runs train ``--seconds`` and saves the top of the page (the controls, the status
table and the learning curves) to ``--out``. ``--click TEXT`` (repeatable) then clicks the
button or checkbox labelled TEXT (a toggle, say) and waits two seconds before the picture;
``--full-page`` saves the whole page (every section) instead of its top. Needs the test extra (Playwright) and the
MNIST files (``BNLSTM_MNIST_DIR``, default ``../shared/data/mnist``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_classroom import CHROMIUM, launch_chromium, start_server, stop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="LSTM vs BN-LSTM",
                    help='the button to press first: a preset, or Start ("": none, the page as it opens)')
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the runs train first")
    ap.add_argument("--query", default="?steps=100000", help="settings for the page's address")
    ap.add_argument("--out", default=str(REPO / "docs" / "dashboard.png"))
    ap.add_argument("--click", action="append", default=[],
                    help="a button or checkbox label to click before the picture (repeatable)")
    ap.add_argument("--full-page", action="store_true", help="the whole page, not its top")
    ap.add_argument("--height", type=int, default=3300,
                    help="with --full-page: the window's height (the text task's page is ~4400)")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium (./scripts/test does)")
    from playwright.sync_api import sync_playwright
    srv, port, log_path, logf = start_server({})
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith(f"http://127.0.0.1:{port}") else route.abort())
            page.goto(f"http://127.0.0.1:{port}/app{args.query}")
            page.get_by_role("button", name="Start", exact=True).wait_for(timeout=60_000)
            if args.preset:           # --preset "": the page as it opens, nothing started
                page.get_by_role("button", name=args.preset, exact=True).click()
                page.wait_for_selector(".bnlstm-status tr.run-row[data-state='running']",
                                       timeout=120_000)
            time.sleep(args.seconds)
            for label in args.click:
                page.get_by_text(label, exact=True).first.click()
                time.sleep(2)
            if args.full_page:      # the template scrolls inside: a viewport as tall as the page
                page.set_viewport_size({"width": 1600, "height": args.height})
                time.sleep(1.5)
            page.screenshot(path=args.out, full_page=args.full_page)
            browser.close()
    finally:
        stop(srv)
        logf.close()
    print(f"wrote {args.out} (server log: {log_path})")


if __name__ == "__main__":
    main()
