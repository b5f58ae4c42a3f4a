"""The sweeps view: the sweeps in the server's sweep folder, their group curves and results.

The server is told where its sweeps are (``BNLSTM_SWEEPS_DIR``, or ``SweepBrowser(folder=...)``
in a notebook); the page lists the sweeps there by name only, and a name chosen in the
browser is looked up among those names: no path ever comes from the browser or goes to it.
While a sweep is shown its folder is read again every ``REFRESH_S`` seconds (every
``IDLE_REFRESH_S`` once all its runs are done), so a sweep that is running (``python -m bnlstm sweep --out $BNLSTM_SWEEPS_DIR/NAME``) fills in live.
Reading is :func:`bnlstm.runs.sweep.read_sweep`; this module only draws.
"""
from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

from bnlstm.runs.results import DONE_STATES
from bnlstm.runs.sweep import SweepError, list_sweeps, read_sweep

from .palette import PALETTE
from .server.applog import log, quiet_periodic_callback
from .sections.figures import lean_renderers

REFRESH_S = 2.0                    # a sweep with runs left is read again this often
IDLE_REFRESH_S = 30.0              # ... and one whose runs are all done, this often
N_GROUPS = 10                      # groups drawn (a layer each, added when first needed); more are listed only
STATE_COLORS = {"finished": "#0d6efd", "diverged": "#dc3545", "failed": "#dc3545",
                "stopped": "#6c757d", "running": "#198754", "pending": "#6c757d",
                "missing": "#6c757d"}
CSS = """
table { border-collapse: collapse; font-size: 15px; width: 100%; }
td, th { padding: 3px 8px; text-align: left; border-bottom: 1px solid #ddd; }
.badge { color: white; border-radius: 6px; padding: 1px 7px; font-weight: 600; }
.swatch { display: inline-block; width: 22px; height: 6px; border-radius: 2px; margin-right: 6px;
          vertical-align: middle; }
"""


def sweeps_dir() -> Optional[Path]:
    d = os.environ.get("BNLSTM_SWEEPS_DIR", "").strip()
    return Path(d).expanduser() if d else None


def _fmt(v, digits=4) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


class SweepBrowser(param.Parameterized):
    """Pick a sweep of the server's folder; see its groups' curves and its runs."""

    sweep = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True, doc=(
        "A sweep in the server's sweep folder (by name)."))

    def __init__(self, folder: Optional[Path] = None, **params):
        super().__init__(**params)
        self.folder = Path(folder) if folder is not None else sweeps_dir()
        self._last_read = 0.0
        self._all_done = False
        self._callback = None
        self.sources = [{"line": ColumnDataSource({"step": [], "mean": [], "n": []},
                                                  name=f"sweep-mean-{i}"),
                         "band": ColumnDataSource({"step": [], "lo": [], "hi": []},
                                                  name=f"sweep-band-{i}")}
                        for i in range(N_GROUPS)]
        self.figure = self._figure()
        self.w_sweep = pn.widgets.Select.from_param(self.param.sweep, name="Sweep",
                                                    css_classes=["w-sweep"], width=420)
        self.b_refresh = pn.widgets.Button(name="Refresh the list", width=160,
                                           css_classes=["btn-sweeps-refresh"])
        self.b_refresh.on_click(lambda e: self.refresh_list())
        self.note = pn.pane.HTML("", css_classes=["sweeps-note"], stylesheets=[CSS],
                                 sizing_mode="stretch_width")
        self.legend = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width",
                                   css_classes=["sweeps-legend"])
        self.table = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width",
                                  css_classes=["sweeps-table"])
        self.plot = pn.pane.Bokeh(self.figure, sizing_mode="stretch_width",
                                  css_classes=["plot-sweep"])
        self.refresh_list()

    # ------------------------------------------------------------------ layout
    def _figure(self):
        p = figure(title="Validation accuracy per group: mean over seeds, band: one std",
                   height=340, sizing_mode="stretch_width", x_axis_label="update",
                   y_axis_label="validation accuracy", y_range=Range1d(0, 1.02),
                   tools="pan,box_zoom,reset,save", css_classes=["plot-sweep-fig"])
        p.toolbar.logo = None
        p.title.text_font_size = "15pt"
        self.hover = HoverTool(renderers=[], tooltips=[("update", "@step"),
                                                       ("mean acc", "@mean{0.000}"),
                                                       ("runs", "@n")])
        p.add_tools(self.hover)
        self.layers = 0                 # groups drawn so far: a group's layer is added
        return p                        # the first time a sweep has that many groups

    def _draw_groups(self, n: int) -> None:
        p = self.figure
        for i in range(self.layers, min(n, N_GROUPS)):
            color = PALETTE[i % len(PALETTE)]
            src = self.sources[i]
            band = p.varea("step", "lo", "hi", source=src["band"], color=color, alpha=0.18)
            line = p.line("step", "mean", source=src["line"], color=color, line_width=3)
            lean_renderers((band, line))   # no selection or muting here: no glyph copies
            self.hover.renderers = [*self.hover.renderers, line]
            self.layers = i + 1

    def view(self) -> pn.Column:
        """The view, with its periodic refresh started (call once per session)."""
        self.attach_session()
        return pn.Column(pn.Row(self.w_sweep, self.b_refresh), self.note, self.legend, self.plot,
                         self.table, sizing_mode="stretch_width")

    def attach_session(self) -> None:
        if self._callback is None and pn.state.curdoc is not None:
            self._callback = quiet_periodic_callback(self.tick, int(REFRESH_S * 1000))

    def dispose(self) -> None:
        if self._callback is not None:
            try:
                self._callback.stop()
            except Exception:
                pass
            self._callback = None

    # ------------------------------------------------------------------ data
    def refresh_list(self) -> None:
        if self.folder is None:
            self.param.sweep.objects = []
            self._say("This server has no sweep folder. Start it with "
                                "<code>BNLSTM_SWEEPS_DIR=DIR ./scripts/dashboard</code> and run "
                                "sweeps with <code>python -m bnlstm sweep --out DIR/NAME ...</code>.")
            self._show(None)
            return
        names = list_sweeps(self.folder)
        current = self.sweep
        self.param.sweep.objects = names
        if not names:
            self._say("No sweeps in the server's sweep folder yet: run "
                                "<code>python -m bnlstm sweep --out $BNLSTM_SWEEPS_DIR/NAME ...</code>.")
            self._show(None)
        elif current not in names:
            self.sweep = names[-1]
        else:
            self.show_sweep()

    @param.depends("sweep", watch=True)
    def show_sweep(self) -> None:
        if self.folder is None or self.sweep not in self.param.sweep.objects:
            self._show(None)
            return
        try:
            state = read_sweep(self.folder / self.sweep)     # a listed name, never a browser path
        except Exception as exc:
            log(f"sweep {self.sweep!r} unreadable: {exc!r}")
            why = str(exc) if isinstance(exc, SweepError) else type(exc).__name__   # never a path
            self._say(f"The sweep {html.escape(self.sweep)} cannot be read ({html.escape(why)}).")
            self._show(None)
            return
        self._last_read = time.monotonic()
        self._all_done = all(r["state"] in DONE_STATES for r in state["rows"])
        self._show(state)

    def _say(self, text: str) -> None:
        self.note.object = f"<div class='sweeps-note-body' style='font-size:15px'>{text}</div>"

    def tick(self) -> None:
        """Periodic: read the shown sweep again every REFRESH_S while it has runs that are not
        done, and every IDLE_REFRESH_S once all are (a rerun of the sweep may add more)."""
        if self.sweep is None:
            return
        wait = IDLE_REFRESH_S if self._all_done else REFRESH_S * 0.9
        if time.monotonic() - self._last_read < wait:
            return
        self.show_sweep()

    def _show(self, state: Optional[Dict[str, Any]]) -> None:
        self.plot.visible = state is not None        # no sweep shown: no empty figure
        curves = state["curves"] if state else []
        metric = (state or {}).get("metric", "acc")
        what = "accuracy" if metric == "acc" else ("bits per character" if metric == "bpc"
                                                   else metric)
        title = f"Validation {what} per group: mean over seeds, band: one std"
        if self.figure.title.text != title:            # the axis speaks the sweep's metric
            self.figure.title.text = title
            self.figure.yaxis.axis_label = f"validation {what}"
            top = 1.02 if metric == "acc" else max(
                [float(max(c["mean"] + c["std"])) for c in curves if len(c["mean"])] or [8.0]) * 1.1
            self.figure.y_range.update(start=0, end=top)
        legend = []
        self._draw_groups(len(curves))
        for i, src in enumerate(self.sources):
            if i < len(curves):
                c = curves[i]
                src["line"].data = {"step": c["step"], "mean": c["mean"],
                                    "n": np.full(len(c["step"]), c["n"])}
                src["band"].data = {"step": c["step"], "lo": c["mean"] - c["std"],
                                    "hi": c["mean"] + c["std"]}
                legend.append(f"<span><span class='swatch' style='background:{PALETTE[i]}'></span>"
                              f"{html.escape(c['label'])} (n={c['n']})</span>")
            elif len(src["line"].data["step"]):
                src["line"].data = {"step": [], "mean": [], "n": []}
                src["band"].data = {"step": [], "lo": [], "hi": []}
        if len(curves) > N_GROUPS:
            legend.append(f"<i>{len(curves) - N_GROUPS} more groups are in the table only</i>")
        self.legend.object = ("<div class='sweeps-legend-body' "
                              "style='display:flex;flex-wrap:wrap;gap:4px 20px;font-size:15px'>"
                              + "".join(legend) + "</div>") if legend else ""
        if state is None:
            self.table.object = ""
            return
        rows = state["rows"]
        counts: Dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        self._say(f"<b>{html.escape(state['name'])}</b>: {len(rows)} runs, "
                  + ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items()))
                  + f"; swept: {html.escape(', '.join(state['keys']) or 'seeds only')}, "
                  f"seeds {len(state['seeds'])}.")
        keys = state["keys"]
        k = state.get("metric", "acc")              # the sweep's first metric (acc, bpc, ...)
        cols = (f"best_val_{k}", f"test_{k}")
        head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
        groups = "".join(
            "<tr>" + "".join(f"<td>{_fmt(g[k])}</td>" for k in keys)
            + "".join(f"<td>{_fmt(g[f'{m}_mean'])} &plusmn; {_fmt(g[f'{m}_std'])} (n={g[f'{m}_n']})</td>"
                      for m in cols) + "</tr>"
            for g in state["groups"])
        runs = "".join(
            "<tr class='sweep-run'>" + f"<td>{html.escape(r['name'])}</td>"
            + f"<td><span class='badge' style='background:{STATE_COLORS.get(r['state'], '#6c757d')}'>"
              f"{html.escape(r['state'])}</span></td>"
            + "".join(f"<td>{_fmt(r.get(f))}</td>" for f in (*cols, "updates", "wall_time_s"))
            + "</tr>" for r in rows)
        self.table.object = (
            f"<table class='sweep-groups'><tr>{head}<th>best val {k}</th><th>test {k}</th></tr>"
            f"{groups}</table><br><table class='sweep-runs'><tr><th>run</th><th>state</th>"
            f"<th>best val {k}</th><th>test {k}</th><th>updates</th><th>wall s</th></tr>{runs}</table>")
