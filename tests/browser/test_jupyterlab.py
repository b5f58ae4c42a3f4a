"""The notebooks as a user opens them: a real JupyterLab on loopback, in Chromium, offline;
01 also in Jupyter Notebook 7's page, and 01 and 02 with a kernel that Panel takes for
VS Code's (its outputs sent as jupyter_bokeh widgets, as in VS Code).

Each notebook (a copy, in quick mode) is opened and run with Run > Run All Cells; then
every Panel and HoloViews output must have drawn Bokeh roots in the page, no request
may have left the machine, and the console must not say that Bokeh or Panel is missing.
In 01's dashboard, Start must move its plots. Headless execution (test_notebooks.py)
runs no JavaScript and cannot see any of this.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import testdata

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))

# the Bokeh views drawn in the page, and the plot data points (every ColumnDataSource)
VIEWS_JS = "() => window.Bokeh ? Object.keys(Bokeh.index || {}).length : -1"
POINTS_JS = """() => window.Bokeh ? Bokeh.documents.reduce((n, d) => n + [...d.all_models]
    .filter(m => m.data && m.data.x !== undefined || (m.data && m.data.step !== undefined))
    .reduce((k, m) => k + (m.data.step || m.data.x).length, 0), 0) : -1"""


def _start_lab(root: Path, extra_env=None):
    """A JupyterLab (with Jupyter Notebook 7's pages too, where it is installed) serving
    copies of the notebooks from ``root``, on loopback; yields (base URL, token, root)."""
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / name, root / name)
    port = _free_port()
    token = secrets.token_hex(8)
    env = {**os.environ, "BNLSTM_QUICK": "1", "BNLSTM_MNIST_DIR": str(testdata.mnist_dir()),
           "BNLSTM_PTB_DIR": str(testdata.ptb_dir()), "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
           "JUPYTER_DATA_DIR": str(root / ".jupyter-data"), "JUPYTER_RUNTIME_DIR": str(root / ".rt"),
           **(extra_env or {})}
    settings = root / ".jupyter-settings"
    for ext, name, value in (("notebook-extension", "tracker", {"windowingMode": "none"}),   # every
                             ("apputils-extension", "notification", {"fetchNews": "false"})):  # cell drawn
        (settings / "@jupyterlab" / ext).mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate", "--ServerApp.open_browser=False", "--allow-root"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > end or proc.poll() is not None:
                proc.kill()
                raise AssertionError("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    yield base, token, root
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from _start_lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def vscode_lab(tmp_path_factory):
    """Kernels that Panel takes for VS Code's (``VSCODE_PID`` set): Panel then draws every
    output as a Jupyter widget (jupyter_bokeh), as it does in VS Code's notebooks."""
    yield from _start_lab(tmp_path_factory.mktemp("vscode"), {"VSCODE_PID": "1"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(page, timeout: float) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    end = time.time() + timeout
    while time.time() < end:
        prompts = [p.strip() for p in page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()]
        if prompts and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts):
            return
        time.sleep(1.0)
    if (REPO / "test-artifacts").is_dir():
        page.screenshot(path=str(REPO / "test-artifacts" / "jupyterlab-timeout.png"))
    raise AssertionError(f"the notebook did not finish within {timeout:.0f} s: {prompts}")


def _shut_down_kernels(base: str, token: str) -> None:
    """The server's kernels, stopped: a notebook's live dashboard trains no more, and the
    next test's notebook starts a kernel of its own."""
    with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as r:
        kernels = json.loads(r.read())
    for k in kernels:
        req = urllib.request.Request(f"{base}/api/kernels/{k['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


def _open_and_check(browser, lab, path: str, name: str, shot: str, widgets: bool = False) -> None:
    """Open ``url`` (a notebook's page), run all its cells, and check what it draws: Bokeh
    roots in every Panel/HoloViews output (``widgets``: outputs are Jupyter widgets, as
    in VS Code), no request off the machine, and for 01, Start moves the plots."""
    base, token, _ = lab
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    outside, console = [], []
    page.on("console", lambda m: console.append(m.text))

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()
    page.route("**/*", route)
    try:
        page.goto(f"{base}{path}{'&' if '?' in path else '?'}token={token}")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        # the notebooks are committed without a kernel: JupyterLab asks which, once
        select = page.locator(".jp-Dialog .jp-mod-accept", has_text="Select")
        try:
            select.wait_for(timeout=15_000)
            select.click()
        except Exception:
            pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        _run_all(page, timeout=240)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                              ).all_inner_texts()
        tracebacks = [e for e in errors if "Traceback" in e]
        assert tracebacks == [], tracebacks[0][-2000:]
        end = time.time() + 30
        while time.time() < end and page.evaluate(VIEWS_JS) <= 0:
            time.sleep(0.5)
        assert page.evaluate(VIEWS_JS) > 0, "no Bokeh view was drawn"
        roots = page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output [data-root-id]')]
            .map(el => [!!(el.shadowRoot || el.children.length), el.outerHTML.slice(0, 200),
                        el.closest('.jp-Cell').querySelector('.jp-InputArea-editor').innerText])""")
        roots = [r for r in roots if "extension()" not in r[2]]   # the extension's own (comm) root
        assert roots and all(r[0] for r in roots), [r for r in roots if not r[0]]
        if widgets:                # Panel's outputs are widget views (a Lumino panel each)
            n = page.locator(".jp-OutputArea-output.lm-Panel [data-root-id]").count()
            assert n > 0, "no Panel output was drawn as a Jupyter widget"
        assert not [c for c in console if "Bokeh or Panel library is missing" in c], console[:5]
        if name.startswith("01"):
            before = page.evaluate(POINTS_JS)
            page.get_by_role("button", name="Start", exact=True).first.click()
            end = time.time() + 90
            while time.time() < end and page.evaluate(POINTS_JS) <= before:
                time.sleep(1.0)
            assert page.evaluate(POINTS_JS) > before, "Start did not move the dashboard's plots"
        if (REPO / "test-artifacts").is_dir():              # what a student sees: the first plot,
            shown = page.locator(".jp-OutputArea-output [data-root-id]")   # then each output
            shown.nth(min(1, shown.count() - 1)).scroll_into_view_if_needed()
            page.screenshot(path=str(REPO / "test-artifacts" / f"{shot}-{name}.png"))
            outputs = page.locator(".jp-OutputArea-output:has([data-root-id])")
            for i in range(outputs.count()):
                try:
                    outputs.nth(i).screenshot(
                        path=str(REPO / "test-artifacts" / f"{shot}-{name}-{i}.png"),
                        timeout=10_000)
                except Exception:           # an output with no size (the extension's own)
                    pass
        assert outside == [], outside[:5]
    finally:
        ctx.close()
        _shut_down_kernels(base, token)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_draws_offline_in_jupyterlab(lab, browser, name):
    ws = name.split("_")[0]              # a workspace of its own: no other notebook's tabs
    _open_and_check(browser, lab, f"/lab/workspaces/nb{ws}/tree/{name}?reset", name, "jupyterlab")


def test_the_dashboard_notebook_trains_offline_in_jupyter_notebook(lab, browser):
    """Jupyter Notebook 7 (the `notebook` package, what `jupyter notebook` opens now): the
    same checks for 01, in its own page (/notebooks/...), on a copy of its own."""
    _, _, root = lab
    name = next(n for n in NOTEBOOKS if n.startswith("01"))
    shutil.copy(root / name, root / f"nb7-{name}")
    _open_and_check(browser, lab, f"/notebooks/nb7-{name}", name, "notebook7")


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n[:2] in ("01", "02")])
def test_a_notebook_draws_as_in_vs_code(vscode_lab, browser, name):
    """With the kernel taken for VS Code's, Panel sends each of its outputs (01's
    dashboard) as a jupyter_bokeh widget, VS Code's way, while HoloViews' static plots
    (02's) stay embedded; they draw, offline, and 01's dashboard trains. (VS Code itself is
    not here: this checks the kernel's side and the widget's drawing, not VS Code's own
    loading of the widget's script.)"""
    ws = name.split("_")[0]
    _open_and_check(browser, vscode_lab, f"/lab/workspaces/vs{ws}/tree/{name}?reset", name,
                    "vscode", widgets=name.startswith("01"))
