"""``panel serve app/``: the bnlstm dashboard (one Dashboard per browser session).

Executed by Panel as a script, so the package is imported robustly: as the
installed ``bnlstm_app`` (pyproject maps ``app/`` to it), or else from this
folder, loaded under the same name.
"""
import importlib.util
import sys
from pathlib import Path

try:
    from bnlstm_app.dashboard import Dashboard
    from bnlstm_app.server.offloop import install as build_pages_off_loop
    from bnlstm_app.server.memory import keep_allocator_to_this_process, note_allocator
except ImportError:
    _here = Path(__file__).resolve().parent
    if str(_here.parent) not in sys.path:          # so that `import bnlstm` finds the checkout
        sys.path.insert(0, str(_here.parent))
    if "bnlstm_app" not in sys.modules:
        _spec = importlib.util.spec_from_file_location(
            "bnlstm_app", _here / "__init__.py", submodule_search_locations=[str(_here)])
        _mod = importlib.util.module_from_spec(_spec)
        sys.modules["bnlstm_app"] = _mod
        _spec.loader.exec_module(_mod)
    from bnlstm_app.dashboard import Dashboard
    from bnlstm_app.server.offloop import install as build_pages_off_loop
    from bnlstm_app.server.memory import keep_allocator_to_this_process, note_allocator

import os

import panel as pn
import panel.io.resources

# Panel sends a page that holds any HTML pane the 1.8 MB MathJax bundle, in case its text
# has TeX in it. This page's text has none: without the bundle an idle server's page is
# ready about 0.2 s sooner (benchmarks/bench_page_load.py compares the two;
# BNLSTM_MATHJAX=1 puts the bundle back).
if os.environ.get("BNLSTM_MATHJAX", "") != "1":
    panel.io.resources._panel_use_mathjax = lambda roots: False

note_allocator()                   # once, if started without ./scripts/dashboard's allocator
keep_allocator_to_this_process()   # the training workers start on Python's own allocator

pn.extension("filedropper", notifications=True, design="fast",   # the text task's drop
             sizing_mode="stretch_width")

build_pages_off_loop()      # every later page is built on a thread, not the event loop
Dashboard().servable()
