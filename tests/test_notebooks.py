"""Every notebook runs top to bottom in quick mode (BNLSTM_QUICK=1), as CI and `pytest` do.

Each notebook is executed with nbclient in a fresh kernel, from the notebooks/ folder, with
the real MNIST files (the ``mnist_dir`` fixture) and Penn Treebank's validation and test
files (``ptb_dir``). ``pytest --nbmake notebooks/`` does the
same by hand (with ``BNLSTM_QUICK=1`` set). Committed notebooks must carry no outputs.
"""
import os
from pathlib import Path

import pytest

import nbclient  # noqa: E402  (the test extra; never skipped)
import nbformat  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_tour.ipynb", "02_gamma_and_vanishing_gradients.ipynb",
             "03_statistics_per_step_vs_shared.ipynb", "04_lstm_vs_bnlstm.ipynb",
             "05_population_statistics_on_longer_sequences.ipynb"]
QUICK_TIMEOUT_S = 300          # per notebook; quick mode aims at under ~2 minutes


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{name}: commit notebooks with outputs cleared"


@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_quick_mode(name, mnist_dir, ptb_dir, monkeypatch):
    monkeypatch.setenv("BNLSTM_QUICK", "1")
    monkeypatch.setenv("BNLSTM_MNIST_DIR", str(mnist_dir))
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))
    # A shared 2-core machine: one thread avoids oversubscription stalls (set it to override).
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=QUICK_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "Expected run time (full mode)" in text
    assert "QUICK mode" in text


def test_the_notebooks_extension_inlines_panels_stylesheets():
    """After ``bnlstm_app.notebook.extension()`` Panel builds its own stylesheets inline
    (the file's text, images as data: URLs), so no output names the CDN in any front-end;
    a stylesheet that is not Panel's own is left as it was asked for."""
    import subprocess
    import sys
    code = r"""
import bokeh.models as bm, panel as pn
from bokeh.document import Document
from bnlstm_app.notebook import extension
extension()
from panel.io.resources import CDN_DIST
root = pn.Column(pn.widgets.Button(name="Start"), pn.widgets.FloatSlider(),
                 pn.pane.Markdown("x"), pn.widgets.Select(options=["a"]),
                 pn.widgets.Button(stylesheets=["https://example.org/theirs.css"])
                 ).get_root(Document())
import base64
sheets = [s for m in root.references() for s in (getattr(m, "stylesheets", None) or [])]
urls = [s.url for s in sheets if isinstance(s, bm.ImportedStyleSheet)]
assert "https://example.org/theirs.css" in urls                     # not Panel's: as asked
urls = [u for u in urls if u != "https://example.org/theirs.css"]
assert urls and all(u.startswith("data:text/css;base64,") for u in urls), urls[:3]
css = [base64.b64decode(u.split(",", 1)[1]).decode() for u in urls]
assert any(".pn-loading" in c for c in css), len(css)
assert not any(CDN_DIST in c or "../assets/" in c for c in css)
assert any("data:image/svg+xml;base64," in c for c in css)          # loading.css's spinners
print("ok", len(css))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
