"""The dashboard in real headless Chromium: controls, live plots, URL, sessions.

Plot data is read in the page from Bokeh's ColumnDataSources, keyed by their
sorted column names. Every plot has one source per slot (6), empty until a run
uses it: loss ``loss,smooth,step,t``, validation ``acc,step,t``, saturation
``c_out,g,step``, gradient norms ``grad,t``, histograms ``g,x``; the Figure-5
statistics (HoloViews) are ``t,v`` paths of 8 units joined by NaN breaks.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import testdata

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.browser

# small, quick runs for the tests (the URL also exercises the URL round-trip)
FAST = "?steps=400&probe_every=10&eval_every=20&val_limit=500"

SOURCES_JS = """() => {
  const out = {};
  for (const m of Bokeh.documents[0].all_models) {
    const d = m.data;
    if (!d || typeof d !== 'object' || Array.isArray(d) || m.selected === undefined) continue;
    const keys = Object.keys(d).sort();
    if (!keys.length) continue;
    const k = keys.join(',');
    (out[k] = out[k] || []).push(d[keys[0]].length);
  }
  return out;
}"""


def sources(page) -> dict:
    return page.evaluate(SOURCES_JS)


def npoints(page, key: str) -> list:
    """Lengths of the data sources with exactly these columns, largest first."""
    return sorted(sources(page).get(key, []), reverse=True)


def wait_points(page, key: str, n: int, runs: int = 1, timeout: float = 60.0) -> list:
    end = time.time() + timeout
    while time.time() < end:
        got = npoints(page, key)
        if len(got) >= runs and got[runs - 1] >= n:
            return got
        time.sleep(0.25)
    raise AssertionError(f"{key}: wanted {runs} source(s) with >= {n} points; have {npoints(page, key)}"
                         f"; status: {status_text(page)}")


def href(page) -> str:
    """The address bar (Panel updates it with history.replaceState, which page.url misses)."""
    return page.evaluate("() => window.location.href")


def status_text(page) -> str:
    try:
        return page.locator(".bnlstm-status .status-body").first.inner_text(timeout=2000)
    except Exception:
        return "?"


def run_rows(page):
    return page.locator(".bnlstm-status tr.run-row")


def test_page_loads_without_console_errors(open_app):
    page = open_app()
    page.wait_for_selector(".plot-loss .bk-Canvas, .plot-loss canvas", state="attached")
    assert "Ready" in page.locator(".bnlstm-status .status-body").first.inner_text()
    for label in ("Start", "Pause", "Step", "Stop", "Reset", "LSTM vs BN-LSTM",
                  "gamma 0.1 vs 1.0", "per-step vs shared statistics"):
        assert page.get_by_role("button", name=label).count() >= 1, label
    assert page.locator(".card-new-run").count() == 1 and page.locator(".card-live").count() == 1
    time.sleep(1.0)
    assert page.console_errors == []
    # no web font and no icon font from outside (the icons are inline SVGs); the test server's
    # --check-unused-sessions makes Panel link its own CSS from its CDN, so that part is checked
    # against a server started as ./scripts/dashboard starts it (the test below)
    fonts = [u for u in page.outside_requests if "font" in u and "holoviz" not in u]
    assert fonts == [], fonts
    assert page.locator(".btn-start svg").count() >= 1
    # nor the 1.8 MB MathJax bundle Panel would send for its HTML panes (no TeX here)
    loaded = page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
    assert any("bokeh.min.js" in u for u in loaded), loaded
    assert not [u for u in loaded if "mathjax" in u.lower()], loaded


def test_the_page_needs_nothing_from_beyond_the_server(browser):
    """Served as ./scripts/dashboard serves it, a page asks nothing of the internet: a
    classroom without internet gets the whole page (scripts, styles, icons, font)."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request
    REPO = Path(__file__).resolve().parents[2]
    SHARED_MNIST_DIR = testdata.mnist_dir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BNLSTM_MNIST_DIR": str(SHARED_MNIST_DIR),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(REPO / "app"),
                             "--address", "127.0.0.1", "--port", str(port), "--liveness",
                             "--allow-websocket-origin", f"127.0.0.1:{port}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = None
    try:
        end = time.time() + 60
        while time.time() < end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        ctx = browser.new_context()
        page = ctx.new_page()
        outside = []

        def route_offline(route):
            url = route.request.url
            if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()
        page.route("**/*", route_offline)
        page.goto(f"http://127.0.0.1:{port}/app")
        page.wait_for_selector(".btn-start button", timeout=60_000)
        time.sleep(2.0)
        assert outside == [], outside
    finally:
        if ctx is not None:
            ctx.close()
        proc.terminate()
        proc.wait(10)


def test_gamma_slider_and_start_train_and_fill_every_view(open_app):
    page = open_app(FAST)
    gamma = page.locator(".w-gamma-value .gamma-value")
    assert gamma.inner_text() == "0.1"
    handle = page.locator(".w-gamma .noUi-handle")
    handle.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")             # 0.01 per press in log10 units
    end = time.time() + 10
    while gamma.inner_text() == "0.1" and time.time() < end:
        time.sleep(0.1)
    time.sleep(1.0)                                   # the released value reaches the server
    new_gamma = float(gamma.inner_text())
    assert new_gamma > 0.1, new_gamma
    page.get_by_role("button", name="Start", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 10)
    label = run_rows(page).first.inner_text()
    assert f"g={new_gamma:g}" in label, (label, new_gamma)
    # the probe views: gradient norm through time, histograms, saturation, Fig. 5 statistics
    wait_points(page, "grad,t", 28)                    # row task: T = 28
    wait_points(page, "g,x", 40)                       # 40 histogram bins
    wait_points(page, "c_out,g,step", 3)                     # saturation: one point per probe
    wait_points(page, "t,v", 8 * 29, runs=8)           # Fig. 5: 4 panels x (batch, population),
    #                                                    8 units of 28 steps, NaN-separated
    wait_points(page, "acc,step,t", 1, timeout=90)       # validation every 20 updates
    assert "running" in run_rows(page).first.get_attribute("data-state") or \
        run_rows(page).first.get_attribute("data-state") in ("finished",)
    text = status_text(page)
    assert "updates/s" in text and "cpu" in text and "full MNIST" in text
    # the screenshot shows the trained page: wait for the 400-update budget to be spent
    page.wait_for_selector(".bnlstm-status tr.run-row[data-state='finished']", timeout=120_000)
    time.sleep(1.5)                                   # the last probe views are drawn
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1600, "height": 2300})
    time.sleep(1.0)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert page.console_errors == [], page.console_errors[:3]


def test_pause_stops_points_and_resume_continues(open_app):
    page = open_app(FAST)
    page.get_by_role("button", name="Start", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 5)
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_selector(".bnlstm-status tr.run-row[data-state='paused']")
    time.sleep(0.8)                                   # the last queued records arrive
    n1 = npoints(page, "loss,smooth,step,t")[0]
    time.sleep(2.0)
    n2 = npoints(page, "loss,smooth,step,t")[0]
    assert n2 == n1, f"points kept arriving while paused: {n1} -> {n2}"
    page.get_by_role("button", name="Resume", exact=True).click()
    wait_points(page, "loss,smooth,step,t", n2 + 5)
    page.wait_for_selector(".bnlstm-status tr.run-row[data-state='running']")
    page.get_by_role("button", name="Stop", exact=True).click()


def test_step_does_one_update(open_app):
    page = open_app(FAST)
    page.get_by_role("button", name="Step", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 1)
    page.wait_for_selector(".bnlstm-status tr.run-row[data-state='paused']")
    time.sleep(1.0)
    assert npoints(page, "loss,smooth,step,t")[0] == 1
    page.get_by_role("button", name="Step", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 2)
    time.sleep(1.0)
    assert npoints(page, "loss,smooth,step,t")[0] == 2
    page.get_by_role("button", name="Reset", exact=True).click()
    end = time.time() + 10
    while run_rows(page).count() and time.time() < end:
        time.sleep(0.2)
    assert run_rows(page).count() == 0


def test_a_preset_link_opens_and_starts_its_comparison(open_app):
    """?preset=gamma: the page starts the two runs of "gamma 0.1 vs 1.0" by itself; an
    unknown preset is named on the page, and nothing starts."""
    page = open_app(FAST + "&preset=gamma")
    wait_points(page, "loss,smooth,step,t", 3, runs=2)
    labels = [run_rows(page).nth(i).inner_text() for i in range(2)]
    assert "g=0.1" in labels[0] and "g=1" in labels[1], labels
    bad = open_app(FAST + "&preset=nosuch")
    bad.locator(".url-alert li").first.wait_for(timeout=20_000)
    text = " ".join(bad.locator(".url-alert li").all_inner_texts())
    assert "unknown preset 'nosuch'" in text and "gamma" in text, text
    time.sleep(2.0)
    assert run_rows(bad).count() == 0


def test_preset_runs_two_runs_that_both_appear(open_app):
    page = open_app(FAST)
    page.get_by_role("button", name="gamma 0.1 vs 1.0", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 5, runs=2)
    wait_points(page, "grad,t", 28, runs=2)
    rows = run_rows(page)
    assert rows.count() == 2
    labels = [rows.nth(i).inner_text() for i in range(2)]
    assert "g=0.1" in labels[0] and "g=1" in labels[1], labels
    items = page.locator(".plot-legend .legend-item")          # one legend per section
    assert items.count() == 6, items.all_inner_texts()
    assert "g=0.1" in items.nth(0).inner_text() and "g=1" in items.nth(1).inner_text()
    page.get_by_role("button", name="Stop", exact=True).click()


def test_url_restores_settings(open_app):
    page = open_app("?gamma_init=0.5&model=lstm&hidden=64")
    assert page.locator(".w-model select").input_value() == "LSTM"
    assert page.locator(".w-gamma-value .gamma-value").inner_text() == "0.5"
    assert page.locator(".url-alert").is_hidden()
    # the page's URL keeps (and shares) the settings
    end = time.time() + 10
    while "gamma_init=0.5" not in href(page) and time.time() < end:
        time.sleep(0.2)
    assert "gamma_init=0.5" in href(page) and "model=lstm" in href(page), href(page)
    # changing a widget updates the URL
    page.locator(".w-model select").select_option(label="BN on input only")
    end = time.time() + 10
    while "model=bnlstm-input" not in href(page) and time.time() < end:
        time.sleep(0.2)
    assert "model=bnlstm-input" in href(page), href(page)
    assert page.console_errors == []


def test_invalid_url_parameter_shows_message_and_default(open_app):
    page = open_app("?gamma_init=abc&model=gru&hidden=100000&bogus=1&seed=7")
    alert = page.locator(".url-alert")
    alert.wait_for(state="visible")
    text = " ".join(page.locator(".url-alert li").all_inner_texts())
    for word in ("gamma_init", "model", "hidden", "bogus"):
        assert word in text, (word, text)
    assert page.locator(".w-model select").input_value() == "BN-LSTM (full)"
    assert page.locator(".w-gamma-value .gamma-value").inner_text() == "0.1"
    assert page.locator(".w-seed input").input_value() == "7"        # the valid one applies
    # still a working page
    page.get_by_role("button", name="Start", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 2)
    page.get_by_role("button", name="Stop", exact=True).click()


def test_two_sessions_are_independent(open_app):
    a = open_app(FAST)
    b = open_app(FAST + "&model=lstm")
    a.get_by_role("button", name="Start", exact=True).click()
    wait_points(a, "loss,smooth,step,t", 5)
    assert max(npoints(b, "loss,smooth,step,t") or [0]) == 0
    assert run_rows(b).count() == 0 and "Ready" in status_text(b)
    b.get_by_role("button", name="Start", exact=True).click()
    wait_points(b, "loss,smooth,step,t", 3)
    assert run_rows(a).count() == 1 and run_rows(b).count() == 1
    assert "BN-LSTM" in run_rows(a).first.inner_text()
    assert run_rows(b).first.inner_text().startswith("LSTM")
    b.get_by_role("button", name="Stop", exact=True).click()
    b.wait_for_selector(".bnlstm-status tr.run-row[data-state='stopped']")
    assert a.locator(".bnlstm-status tr.run-row").first.get_attribute("data-state") == "running"
    a.get_by_role("button", name="Stop", exact=True).click()


def test_closing_the_tab_stops_its_training_thread(open_app, server):
    page = open_app(FAST.replace("steps=400", "steps=100000"))
    page.get_by_role("button", name="Start", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 3)
    run_id = run_rows(page).first.get_attribute("data-run")
    server.wait_for_log(f"run {run_id} started on a worker")
    assert f"run {run_id} ended" not in server.log()
    page.context.close()
    log = server.wait_for_log(f"run {run_id} ended: stopped", timeout=30)
    assert "session destroyed: stopping 1 live run" in log
    server.wait_for_log(f"run {run_id} disposed", timeout=30)


def test_invalid_typed_value_shows_message(open_app):
    page = open_app(FAST)
    box = page.locator(".w-steps input")
    box.fill("-5")
    box.press("Enter")
    alert = page.locator(".input-alert")
    alert.wait_for(state="visible", timeout=20_000)
    text = " ".join(page.locator(".input-alert p").all_inner_texts())   # inside shadow DOM
    assert "Step budget" in text and "-5" in text and "between 1 and" in text, text
    end = time.time() + 10
    while box.input_value() != "400" and time.time() < end:
        time.sleep(0.2)
    assert box.input_value() == "400"                 # back to the setting's value
    box.fill("300")
    box.press("Enter")
    alert.wait_for(state="hidden", timeout=20_000)
    assert page.console_errors == [], page.console_errors[:3]


def test_more_settings_check_typed_numbers(open_app):
    page = open_app(FAST)
    page.get_by_text("More (init, layers, optimizer...)").click()
    box = page.locator(".w-momentum input")
    box.wait_for(state="visible", timeout=20_000)
    box.fill("5")
    box.press("Enter")
    alert = page.locator(".input-alert")
    alert.wait_for(state="visible", timeout=20_000)
    text = " ".join(page.locator(".input-alert p").all_inner_texts())
    assert "Momentum" in text and "5" in text and "between 0.0 and 1.0" in text, text
    end = time.time() + 10
    while box.input_value() != "0.1" and time.time() < end:
        time.sleep(0.2)
    assert box.input_value() == "0.1"                  # not silently clamped to 1.0
    layers = page.locator(".w-num-layers input")
    layers.fill("2")
    layers.press("Enter")
    alert.wait_for(state="hidden", timeout=20_000)
    end = time.time() + 10                             # the valid one reaches the link
    while "num_layers=2" not in page.url and time.time() < end:
        time.sleep(0.2)
    assert "num_layers=2" in page.url, page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".card-new-run").screenshot(path=str(ARTIFACTS / "more-settings.png"))
    assert page.console_errors == [], page.console_errors[:3]


NOTE_JS = """() => { const out = [];
  for (const m of Bokeh.documents[0].all_models)       // Label annotations (and titles)
    if (typeof m.text === 'string' && m.text) out.push(m.text);
  return out; }"""


GRAD_JS = """() => {
  const out = {};
  for (const m of Bokeh.documents[0].all_models) {
    if (m.name && /^(grad|units|kurt)-[0-9]$/.test(m.name) && m.data) {
      const d = {}; for (const k of Object.keys(m.data)) d[k] = Array.from(m.data[k]);
      out[m.name] = d;
    }
  }
  return out;
}"""


def fig1a_sources(page, runs=2, T=49, timeout=60.0) -> dict:
    """The gradient / batch-distribution / kurtosis sources of the first ``runs`` slots."""
    end = time.time() + timeout
    while time.time() < end:
        d = page.evaluate(GRAD_JS)
        if all(len(d.get(f"grad-{i}", {}).get("grad", [])) == T and
               len(d.get(f"units-{i}", {}).get("frac", [])) == 40 for i in range(runs)):
            return d
        time.sleep(0.25)
    raise AssertionError(f"no gradient curves of {T} steps; status: {status_text(page)}")


def _log_fall(grad) -> float:
    """Decades between the last step's gradient and the smallest one before it."""
    import math
    return math.log10(grad[-1]) - math.log10(min(grad))


def test_tanh_rnn_preset_shows_figure_1a_at_the_first_probe(open_app):
    """The teacher's demo: one click, and at step 1 gamma 1.0's gradient falls by orders of
    magnitude going back in time while gamma 0.1's stays flat; the batch distribution shows
    why (two spikes at +-tanh(1), kurtosis 1)."""
    page = open_app(FAST)
    page.get_by_role("button", name="tanh-RNN: gamma 0.1 vs 1.0 (Fig. 1a)", exact=True).click()
    wait_points(page, "loss,smooth,step,t", 3, runs=2)
    d = fig1a_sources(page)
    fall01, fall10 = _log_fall(d["grad-0"]["grad"]), _log_fall(d["grad-1"]["grad"])
    assert fall01 < 1.0 and fall10 > 3.0, (fall01, fall10)          # measured: 0.23 and 5.4
    x, f1 = d["units-1"]["x"], d["units-1"]["frac"]
    near = sum(f for xi, f in zip(x, f1) if abs(abs(xi) - 0.7616) < 0.1)
    assert near > 0.8, near
    f0 = d["units-0"]["frac"]
    assert sum(f for xi, f in zip(x, f0) if abs(xi) < 0.4) > 0.9
    k1 = [k for k in d["kurt-1"]["kurt"][10:] if k == k]
    assert k1 and max(k1) < 1.2, k1[:5]
    # the step slider picks the step of the distribution shown
    slider = page.locator(".w-unit-step").first
    assert slider.is_visible()
    labels = [run_rows(page).nth(i).inner_text() for i in range(2)]
    assert all("tanh" in x and "pixel7" in x for x in labels), labels
    labels = [run_rows(page).nth(i).inner_text() for i in range(2)]
    assert all("tanh" in x for x in labels), labels
    end = time.time() + 30
    while not any("no cell state" in t for t in page.evaluate(NOTE_JS)) and time.time() < end:
        time.sleep(0.3)
    assert any("no cell state in a tanh RNN" in t for t in page.evaluate(NOTE_JS))
    assert page.console_errors == [], page.console_errors[:3]
    page.get_by_role("button", name="Stop", exact=True).click()


def test_init_preset_contrasts_identity_and_orthogonal(open_app):
    """'why init matters': the same gamma 1.0, W_h identity vs orthogonal; at step 1 the
    identity run's gradient falls going back while the orthogonal one's grows."""
    page = open_app(FAST)
    page.get_by_role("button", name="why init matters: W_h identity vs orthogonal",
                     exact=True).click()
    d = fig1a_sources(page)
    g_id, g_orth = d["grad-0"]["grad"], d["grad-1"]["grad"]
    assert _log_fall(g_id) > 3.0, g_id[:3]
    assert g_orth[0] > 10 * g_orth[-1], (g_orth[0], g_orth[-1])
    # 'latest probe' switches the plot to the live model; 'at step 1' brings the first back
    def shown_changes_to(want, timeout=20.0):
        end = time.time() + timeout
        while time.time() < end:
            got = page.evaluate(GRAD_JS)["grad-0"]["grad"]
            if want(got):
                return got
            time.sleep(0.25)
        raise AssertionError(f"the gradient plot did not switch; status: {status_text(page)}")

    time.sleep(3.0)                                   # a later probe exists by now (every 10)
    page.get_by_role("button", name="latest probe (live)", exact=True).click()
    shown_changes_to(lambda g: len(g) == len(g_id) and g != g_id)
    page.get_by_role("button", name="at step 1 (initialization, as Fig. 1a)", exact=True).click()
    shown_changes_to(lambda g: g == g_id)
    assert page.console_errors == [], page.console_errors[:3]
    page.get_by_role("button", name="Stop", exact=True).click()


ALL_HTML_JS = """() => { let out = ''; const walk = (root) => {
    for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) { out += el.shadowRoot.innerHTML; walk(el.shadowRoot); } } };
  out += document.documentElement.outerHTML; walk(document); return out; }"""


def test_sweeps_view_lists_the_servers_sweeps_by_name_and_fills_in(open_app, server):
    """A sweep written into the server's sweep folder (here run in this process, without Dask)
    appears by name; its group curves and its runs' table show; no server path reaches the page."""
    from bnlstm.runs.sweep import Sweep
    from bnlstm.runs.worker import run_one
    SHARED_MNIST_DIR = testdata.mnist_dir()
    page = open_app()
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"], seeds=2,
                            base={"task": "row", "hidden": 8, "batch_size": 16, "steps": 20,
                                  "eval_every": 10, "val_limit": 100, "test_at_end": False})
    out = server.sweeps_dir / "demo-sweep"
    out.mkdir()
    import json
    (out / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    runs = sweep.runs()
    for name, cfg in runs[:3]:                    # three done, one not started: "pending"
        run_one(cfg, out / "runs" / name, str(SHARED_MNIST_DIR), checkpoint_every=10)
    page.get_by_role("button", name="Refresh the list", exact=True).click()
    note = page.locator(".sweeps-note .sweeps-note-body")
    end = time.time() + 30
    while "demo-sweep" not in note.inner_text() and time.time() < end:
        time.sleep(0.3)
    text = note.inner_text()
    assert "4 runs" in text and "3 finished" in text and "1 pending" in text, text
    legend = page.locator(".sweeps-legend .sweeps-legend-body").inner_text()
    assert "model=lstm (n=2)" in legend and "model=bnlstm (n=1)" in legend, legend
    assert page.locator(".sweeps-table tr.sweep-run").count() == 4
    means_js = """() => { const o = {}; for (const m of Bokeh.documents[0].all_models)
        if (m.name && m.name.startsWith('sweep-mean-')) o[m.name] = m.data.step.length; return o; }"""
    end = time.time() + 20            # the curves (drawn with their groups' first data) may
    d = page.evaluate(means_js)       # arrive a moment after the table
    while not (d.get("sweep-mean-0") == 2 and d.get("sweep-mean-1") == 2) and time.time() < end:
        time.sleep(0.3)
        d = page.evaluate(means_js)
    assert d.get("sweep-mean-0") == 2 and d.get("sweep-mean-1") == 2, d
    # the last run finishes: the page picks it up by itself
    run_one(runs[3][1], out / "runs" / runs[3][0], str(SHARED_MNIST_DIR), checkpoint_every=10)
    end = time.time() + 30
    while "4 finished" not in note.inner_text() and time.time() < end:
        time.sleep(0.3)
    assert "4 finished" in note.inner_text()
    html_text = page.evaluate(ALL_HTML_JS)
    assert "demo-sweep" in html_text
    assert str(server.sweeps_dir) not in html_text and str(SHARED_MNIST_DIR) not in html_text
    assert page.console_errors == [], page.console_errors[:3]


def test_a_link_value_outside_a_sliders_range_is_shown_as_it_is(open_app):
    """?lr=10 trains at 10: the learning-rate slider must stand at 10 (it used to show 0.1)."""
    page = open_app("?lr=10&gamma_init=2")
    assert page.locator(".url-alert").is_hidden()
    assert page.locator(".w-gamma-value .gamma-value").inner_text() == "2"
    js = """(cls) => { for (const m of Bokeh.documents[0].all_models)
        if (m.css_classes && m.css_classes.includes(cls) && m.start !== undefined)
            return [m.value, m.start, m.end]; return null; }"""
    lr, gamma = page.evaluate(js, "w-lr"), page.evaluate(js, "w-gamma")
    assert lr is not None and abs(10 ** lr[0] - 10) < 1e-6 and lr[2] >= lr[0], lr
    assert gamma is not None and abs(10 ** gamma[0] - 2) < 1e-6 and gamma[2] >= gamma[0], gamma
    assert page.console_errors == [], page.console_errors[:3]


def test_an_unknown_url_parameter_alone_is_reported(open_app):
    page = open_app("?bogus=1")
    alert = page.locator(".url-alert")
    alert.wait_for(state="visible", timeout=15_000)
    assert "bogus" in " ".join(page.locator(".url-alert li").all_inner_texts())


def test_a_malformed_link_gives_a_working_page_and_a_message(open_app, server):
    """'?steps=200?x=1' (a second '?') used to give a blank page and a server traceback."""
    before = len(server.log())
    page = open_app("?steps=200?x=1")
    alert = page.locator(".url-alert")
    alert.wait_for(state="visible", timeout=15_000)
    assert "unknown URL parameter 'x'" in " ".join(page.locator(".url-alert li").all_inner_texts())
    assert page.locator(".w-steps input").input_value() == "200"     # the valid part applies
    assert page.locator(".btn-start button").is_visible()
    new_log = server.log()[before:]                  # other tests' closed sockets log there too
    assert "location.py" not in new_log and "too many values to unpack" not in new_log, new_log[-2000:]
    assert page.console_errors == [], page.console_errors[:3]


def test_a_text_run_trains_live_writes_text_and_colours_the_validation_text(open_app):
    """?task=text: the text task's recipe and views; a sample and the coloured excerpt arrive
    with the probes, the validation plot speaks bits per character, the temperature is live."""
    page = open_app("?task=text&hidden=32&seq_len=40&steps=400&probe_every=10&eval_every=20"
                    "&val_limit=50")
    assert page.locator(".w-seq-len").first.is_visible()
    assert page.locator(".w-temperature").first.is_visible()
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_selector(".text-sample .sample-text", timeout=90_000)
    first = page.locator(".text-sample .sample-text").first.inner_text()
    assert len(first) > 100
    wait_points(page, "acc,step,t", 2, timeout=120)
    title = page.evaluate("""() => [...Bokeh.documents[0].all_models]
        .filter(m => m.title && m.title.text !== undefined).map(m => m.title.text).join('|')""")
    assert "Validation bits per character" in title, title
    text = status_text(page)
    assert "val bpc" in text and "Python's docs" in text, text
    assert page.locator(".text-excerpt .excerpt-text span").count() == 400
    mean_bits = float(page.locator(".text-excerpt .excerpt-mean").first.inner_text())
    assert 0.5 < mean_bits < 7.0
    # coloured: the characters' backgrounds differ (the bits paid differ)
    shades = page.locator(".text-excerpt .excerpt-text span").evaluate_all(
        "els => new Set(els.map(e => e.style.background)).size")
    assert shades >= 2, shades
    # the temperature is live: the next sample of the running run is written at the new one
    assert "temperature 0.8," in page.locator(".text-sample .key").first.inner_text()
    page.locator(".w-temperature .noUi-handle").first.focus()
    for _ in range(4):                                   # 0.8 -> 1.0 in steps of 0.05
        page.keyboard.press("ArrowRight")
    end = time.time() + 60
    while time.time() < end and "temperature 1," not in page.locator(".text-sample .key").first.inner_text():
        time.sleep(0.25)
    assert "temperature 1," in page.locator(".text-sample .key").first.inner_text()
    # one unit's activation instead of the loss
    page.get_by_role("button", name="one unit's activation").click()
    end = time.time() + 20
    while time.time() < end and "activation h" not in page.locator(".text-excerpt .key").first.inner_text():
        time.sleep(0.25)
    assert "activation h" in page.locator(".text-excerpt .key").first.inner_text()
    assert page.console_errors == [], page.console_errors[:3]


def test_a_text_of_ones_own_dropped_on_the_page_trains_the_text_run(open_app, tmp_path):
    """The file drop: a UTF-8 file chosen in the browser is checked on the server, named
    without a path, and the next Start trains on it (the status says so); a binary file is
    refused with the rule it broke and the text given before stays; a 24 MB file (over
    Bokeh's 20 MB message limit) is refused by the browser and the page stays connected."""
    import random
    rng = random.Random(5)
    f = tmp_path / "fable.txt"
    f.write_text(" ".join(rng.choice("the fox and the crow sang in a tall tree".split())
                          for _ in range(3000)))
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    page = open_app("?task=text&hidden=16&seq_len=30&steps=60&probe_every=20&eval_every=20"
                    "&val_limit=20")
    page.locator(".w-own-text input[type=file]").set_input_files(str(f))
    note = page.locator(".own-text-note .own-note").first
    end = time.time() + 30
    while time.time() < end and "characters" not in note.inner_text():
        time.sleep(0.2)
    assert "fable.txt" in note.inner_text() and str(tmp_path) not in note.inner_text()
    page.locator(".w-own-text input[type=file]").set_input_files(str(bad))
    end = time.time() + 30
    while time.time() < end and "UTF-8" not in note.inner_text():
        time.sleep(0.2)
    assert "not UTF-8" in note.inner_text() and "fable.txt" in note.inner_text()
    big = tmp_path / "corpus.txt"          # over the limit: the browser never sends it
    big.write_bytes(b"lorem ipsum " * 2_000_000)
    page.locator(".w-own-text input[type=file]").set_input_files(str(big))
    status = page.locator(".w-own-text .filepond--file-status-main")   # FilePond's own words

    def said():
        return " ".join(status.all_inner_texts()).lower()
    end = time.time() + 30
    while time.time() < end and "too large" not in said():
        time.sleep(0.2)
    assert "too large" in said(), said()                       # the browser's own refusal
    time.sleep(1.0)
    assert "corpus.txt" not in note.inner_text() and "fable.txt" in note.inner_text()
    page.get_by_role("button", name="Start", exact=True).click()
    wait_points(page, "acc,step,t", 1, timeout=120)
    end = time.time() + 30
    while time.time() < end and "fable.txt" not in status_text(page):
        time.sleep(0.25)
    assert "fable.txt" in status_text(page), status_text(page)
    assert page.console_errors == [], page.console_errors[:3]
