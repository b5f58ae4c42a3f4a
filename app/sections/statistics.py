"""Section 4 (the paper's Figure 5): the batch and population statistics per time step of
the run in focus: why statistics are kept per step."""
from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, Label, Legend

from . import Section, run_options
from .figures import FONT, empty, figure, lean, nothing

FOCUS_UI_S = 2.0           # the four panels redraw at most every two seconds

# ------------------------------------------------------------ Figure 5: statistics per step
TERMS = {"wh": "W_h h_(t-1)", "c": "c_t"}
NO_TERM = {"c": "no cell state in a tanh RNN"}      # the BN tanh-RNN (paper Fig. 1a) has no c_t


def stats_frame(probe: Optional[dict]) -> Dict[str, pd.DataFrame]:
    """Paths of K units, batch and population, for each (term, moment)."""
    out = {}
    for term in TERMS:
        for moment in ("mean", "var"):
            out[f"{term}_{moment}"] = _stats_paths(probe, term, moment)
        if probe is not None and term not in probe.get("stats", {}):
            out[f"{term}_note"] = NO_TERM.get(term, "not measured for this model")
    return out


def _stats_paths(probe, term, moment):
    """K unit curves joined into one line with NaN breaks (one glyph: cheap to update)."""
    paths = {"batch": empty("t", "v"), "population": empty("t", "v")}
    if probe is not None:
        st = probe.get("stats", {}).get(term)
        if st is not None:
            t = np.asarray(probe["t"], dtype=float)
            for kind, key in (("batch", moment), ("population", "pop_" + moment)):
                arr = st.get(key)
                if arr is None:
                    continue
                arr = np.asarray(arr, dtype=float)              # (T, K)
                K = arr.shape[1]
                tt = np.concatenate([np.append(t, np.nan) for _ in range(K)])
                vv = np.concatenate([np.append(arr[:, k], np.nan) for k in range(K)])
                paths[kind] = pd.DataFrame({"t": tt, "v": vv})
    return paths


class StatsPanel:
    """One Figure-5 panel (a term's per-step mean or variance): batch and population paths."""

    def __init__(self, key: str):
        self.key = key
        self.term, moment = key.split("_")
        self.name = "mean" if moment == "mean" else "variance"
        self.batch = ColumnDataSource(nothing(("t", "v")), name=f"stats-{key}-batch")
        self.pop = ColumnDataSource(nothing(("t", "v")), name=f"stats-{key}-population")
        p = figure(f"{self.name} of {TERMS[self.term]} per step t", "t", self.name,
                    f"plot-stats-{key}")
        p.height = 260
        batch = p.line("t", "v", source=self.batch, color="#1f77b4", alpha=0.8, line_width=2)
        pop = p.line("t", "v", source=self.pop, color="#ff7f0e", line_width=2,
                     line_dash="dashed")
        # above the frame, not over the paths it names (they fill the whole frame)
        p.add_layout(Legend(items=[("batch", [batch]), ("population", [pop])],
                            orientation="horizontal", location="top_left", border_line_alpha=0,
                            label_text_font_size=FONT["legend"], margin=0, padding=2), "above")
        # a short note in the panel when the run has no such term (never a blank panel)
        self.note = Label(x=0.5, y=0.5, x_units="data", y_units="data", text="",
                          text_font_size="17pt", text_color="#8a5300", text_align="center",
                          name=f"stats-{key}-note")
        p.add_layout(self.note)
        # ... drawn in a 0..1 frame: two invisible points give the axes their ranges (with
        # no data at all the browser has no range, and draws neither axes nor note)
        self.frame = ColumnDataSource({"t": [], "v": []}, name=f"stats-{key}-frame")
        p.scatter("t", "v", source=self.frame, alpha=0.0, size=1)
        self.figure = p

    def show(self, frame: Dict[str, object]) -> None:
        paths = frame.get(self.key) or {"batch": empty("t", "v"), "population": empty("t", "v")}
        for src, df in ((self.batch, paths["batch"]), (self.pop, paths["population"])):
            src.data = {"t": df["t"].to_numpy(), "v": df["v"].to_numpy()}
        note = frame.get(f"{self.term}_note", "")
        if note != self.note.text:
            self.note.text = note
            self.frame.data = {"t": [0.0, 1.0], "v": [0.0, 1.0]} if note else {"t": [], "v": []}
            self.figure.legend.visible = not note       # no curves: no legend over the note


class Statistics(Section):
    title = "4. Why statistics are kept per time step (paper Fig. 5)"
    point_at = ("Point at: the first few steps have very different mean and variance "
                "(the transient); one shared set of statistics cannot fit both.")

    def __init__(self, **params):
        super().__init__(**params)
        self.panels = [StatsPanel(key) for key in ("wh_mean", "wh_var", "c_mean", "c_var")]
        lean(*(panel.figure for panel in self.panels))
        self.p_stats = [pn.pane.Bokeh(panel.figure, sizing_mode="stretch_width")
                        for panel in self.panels]
        self.w_focus = pn.widgets.Select(name="Run shown in the statistics plots", options={},
                                         width=420, css_classes=["w-focus"])
        self.w_focus.param.watch(self._pick, "value")
        self._probe_step = -1
        self._shown_at = 0.0

    def body(self) -> list:
        return [self.w_focus, pn.GridBox(*self.p_stats, ncols=2, sizing_mode="stretch_width")]

    def _pick(self, event) -> None:
        self.state.focus = event.new

    @param.depends("state.runs", watch=True)
    def _follow_runs(self) -> None:
        """The picker lists the runs; a new run takes the focus."""
        runs = self.state.runs
        with pn.io.hold():
            self.w_focus.options = run_options(runs)
            self.w_focus.value = self.state.focus = runs[-1].id if runs else None
        if not runs:
            self._probe_step = -1
            self.draw({})

    @param.depends("state.focus", watch=True)
    def _follow_focus(self) -> None:
        if self.w_focus.value != self.state.focus and self.state.focus in self.w_focus.values:
            self.w_focus.value = self.state.focus
        self.refresh(force=True)

    def due(self, now: float) -> bool:
        slot = self.state.focused()
        probe = slot.latest_probe if slot is not None else None
        step = probe["step"] if probe is not None else -1
        return step != self._probe_step and now - self._shown_at >= FOCUS_UI_S

    def refresh(self, force: bool = False) -> None:
        slot = self.state.focused()
        probe = slot.latest_probe if slot is not None else None
        now = time.monotonic()
        if force or self.due(now):
            self._probe_step, self._shown_at = (probe["step"] if probe else -1), now
            self.draw(stats_frame(probe))

    def draw(self, frame) -> None:
        for panel in self.panels:
            panel.show(frame)

    def after_drain(self) -> None:
        self.refresh()
