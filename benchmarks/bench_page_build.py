"""What one page costs the server's event loop, timed in this process (no server, no client).

    python benchmarks/bench_page_build.py [--pages 8]

Builds ``--pages`` dashboards the way a served session does (``Dashboard()``, its lower
sections, the template, its Bokeh models under one frozen model graph) and prints the
median time of each part, the page's Bokeh model count and the time to serialize the
document (what the server sends a new page). A click sent while a page is being built
waits for all of it: this is the floor of the classroom benchmark's click tail. Needs
BNLSTM_MNIST_DIR (default: ../shared/data/mnist).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("BNLSTM_MNIST_DIR", str(REPO.parent / "shared" / "data" / "mnist"))


def build_one():
    from bokeh.document import Document
    from panel.io.state import set_curdoc
    from app.dashboard import Dashboard, _frozen
    doc = Document()
    with set_curdoc(doc):
        t0 = time.perf_counter()
        dash = Dashboard()
        dash.attach_lower()
        tpl = dash.template()
        t1 = time.perf_counter()
        with _frozen():
            tpl.server_doc(doc)
        t2 = time.perf_counter()
        doc.to_json()
        t3 = time.perf_counter()
    return {"dashboard_s": t1 - t0, "bokeh_models_s": t2 - t1, "serialize_s": t3 - t2,
            "total_s": t3 - t0, "models": len(doc.models)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=8, help="pages to build (after one warm-up)")
    args = ap.parse_args()
    import panel as pn
    pn.extension(notifications=True, design="fast", sizing_mode="stretch_width")
    build_one()                                   # imports, caches
    runs = [build_one() for _ in range(args.pages)]
    print(f"one page, median of {args.pages} (min-max), {os.cpu_count()} cores:")
    for key, what in (("dashboard_s", "Dashboard() with its lower sections"),
                      ("bokeh_models_s", "its Bokeh models (template.server_doc)"),
                      ("serialize_s", "the document serialized"),
                      ("total_s", "in all")):
        xs = [r[key] for r in runs]
        print(f"  {what:42s} {statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})")
    print(f"  Bokeh models in the page: {runs[0]['models']}")


if __name__ == "__main__":
    main()
