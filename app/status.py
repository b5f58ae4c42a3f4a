"""The status of a session's runs as HTML (no Panel: unit-tested without a browser).

:func:`status_html` is the table above the plots (state, step, speed, device, data,
validation score in the run's own metric); :func:`alerts` the two messages under the
controls (which data or text the runs use, and which runs diverged or failed).
"""
from __future__ import annotations

import html
import re
from typing import Any, Dict, Optional, Sequence, Tuple

STATE_COLORS = {"queued": "#6c757d", "starting": "#0d6efd", "running": "#198754",
                "paused": "#fd7e14", "parked": "#fd7e14", "finished": "#0d6efd", "stopped": "#6c757d",
                "diverged": "#dc3545", "failed": "#dc3545"}
DATA_KINDS = {"ptb": "Penn Treebank", "python-docs": "Python's docs", "file": "a text file",
              "own": "your text", "ptb-heldout": "Penn Treebank (held-out split)", "text8": "text8"}
_HEX = re.compile(r"\b[0-9a-f]{16,}\b")


def short_hashes(text: str) -> str:
    """Checksums in a message cut to their first 10 digits (the table's cell stays one
    line a word; the full message is in the failure box below)."""
    return _HEX.sub(lambda m: m.group()[:10] + "\u2026", text)


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _data_cell(info: Dict[str, Any]) -> str:
    kind = info.get("data_kind")
    if kind:
        return DATA_KINDS.get(kind, html.escape(str(kind)))
    if not info:
        return "-"
    return "full MNIST" if info.get("data_is_full") else "<b style='color:#b35c00'>bundled sample</b>"


def status_html(runs: Sequence[Any], counts: Dict[str, int], following: bool = False) -> str:
    """The table of ``runs`` (DashboardRun-like: label, state, reason, step, rate, info,
    metric, last_val, best_val, test, config.steps, color, launched, cancelled,
    queue_position()) and a line on the server's training slots (``counts``). ``following``:
    the page follows another page's runs (it has no Start of its own)."""
    server = (f"<div class='server'>Server: {counts['active']} of {counts['max_runs']} training "
              f"slots in use, {counts['queued']} run(s) waiting.</div>")
    if not runs:
        say = ("<b>No run to show yet.</b> The runs of the page you follow appear here as it "
               "starts them." if following else "<b>Ready.</b> Choose settings on the left "
               "and press <b>Start</b>, or pick a comparison.")
        return ("<div class='status-body'><div class='status-line' data-state='idle'>"
                f"<span style='font-size:17px'>{say}</span></div>" + server + "</div>")
    rows = []
    for r in runs:
        state = r.state
        pos = r.queue_position()
        if not r.launched and not r.cancelled:
            state = "queued"
        color = STATE_COLORS.get(state, "#6c757d")
        extra = ""
        if state == "queued":
            extra = f" (position {pos} in the server queue)" if pos else ""
        elif state in ("diverged", "failed", "stopped", "finished", "parked") and r.reason:
            extra = f": {html.escape(short_hashes(r.reason))}"
        info = r.info or {}
        short = "val bpc" if r.metric.key == "bpc" else f"val {r.metric.key}"
        rows.append(
            f"<tr class='run-row' data-run='{r.id}' data-state='{state}' data-step='{r.step}'>"
            f"<td><span class='swatch' style='background:{r.color}'></span>"
            f"{html.escape(r.label)}</td>"
            f"<td><span class='badge' style='background:{color}'>{state}</span>"
            f"<span class='reason'>{extra}</span></td>"
            f"<td>step <b>{r.step}</b> / {r.config.steps}</td>"
            f"<td>{r.rate:.1f} updates/s</td>"
            f"<td>{html.escape(str(info.get('device', '-')))}</td>"
            f"<td>{_data_cell(info)}</td>"
            f"<td>{short} {fmt(r.last_val)} (best {fmt(r.best_val)})"
            + (f", test {fmt(r.test)}" if r.test is not None else "") + "</td></tr>")
    head = ("<tr><th>run</th><th>state</th><th>step</th><th>speed</th><th>device</th>"
            "<th>data</th><th>validation</th></tr>")
    return f"<div class='status-body'><table>{head}{''.join(rows)}</table>{server}</div>"


def alerts(runs: Sequence[Any]) -> Tuple[Optional[str], Optional[str]]:
    """(the data message or None, the failures message or None), as HTML."""
    data_msg = fail_msg = None
    sample = [r for r in runs if r.info and not r.info.get("data_is_full", True)]
    if sample:
        info = sample[-1].info
        src = info.get("data_source", "")
        if info.get("data_kind"):
            data_msg = (f"<b>The text is {html.escape(str(src))}.</b> The paper's numbers are "
                        "for Penn Treebank (put its three files in the server's cache, or set "
                        "BNLSTM_PTB_DIR, to train on it).")
        else:
            data_msg = ("<b>Training on the bundled MNIST sample, not the full data set.</b> "
                        "Accuracies are lower and noisier than the paper's. "
                        f"({html.escape(str(src))})")
    bad = [r for r in runs if r.state in ("diverged", "failed")]
    if bad:
        fail_msg = "<br>".join(f"<b>{html.escape(r.label)} {r.state}</b>: "
                               f"<span style='overflow-wrap:anywhere'>{html.escape(r.reason)}"
                               "</span>" for r in bad)
    return data_msg, fail_msg
