"""Section 2 (the paper's Figure 6): how many tanh units saturate, with gamma 0.1 or 1.0."""
from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import BoxAnnotation, Range1d

from . import Legend, Section
from .figures import Layers, empty, figure

SAT_POINTS = 2_000
SAT_X = 1.818              # |x| beyond which tanh'(x) < 0.1 (the grey bands)


def hist_frame(probe: dict) -> pd.DataFrame:
    """The histogram of g's tanh inputs in a probe, as (x, g, c_out) at the bin centres."""
    edges = np.asarray(probe.get("hist_edges", []), dtype=float)
    hist = probe.get("hist", {})
    if edges.size < 2 or "g" not in hist:
        return empty("x", "g", "c_out")
    centers = 0.5 * (edges[1:] + edges[:-1])
    g = np.asarray(hist["g"], dtype=float)
    c = np.asarray(hist.get("c_out", np.full_like(g, np.nan)), dtype=float)
    return pd.DataFrame({"x": centers, "g": g, "c_out": c})


class Saturation(Section):
    title = "2. Why gamma must start small: tanh saturation in the BN-LSTM (Fig. 6)"
    point_at = ("After <b>gamma 0.1 vs 1.0</b>, point at: with gamma 1.0 far more tanh "
                "inputs fall in the grey bands and its saturation curve sits higher; "
                "its training loss in plot 1 falls more slowly (the paper's Figure 6). "
                "Its gradient in plot 3 does not vanish: the LSTM's cell carries it.")

    def __init__(self, **params):
        super().__init__(**params)
        # a fixed 0..1 axis: all-zero curves (gamma 0.1 saturates nothing) must not give
        # -1..1, and runs stay comparable on one scale
        s = figure("Saturated tanh units (solid: g, dashed: cell)", "step", "fraction saturated",
                   "plot-sat", y_range=Range1d(0, 1))

        def sat_layer(p, src, color):
            solid = p.line("step", "g", source=src, color=color, line_width=3)
            p.line("step", "c_out", source=src, color=color, line_width=2, line_dash="dashed")
            return solid
        self.sat = Layers(s, "sat", ("step", "g", "c_out"), sat_layer,
                          [("step", "@step"), ("g saturated", "@g{0.000}"),
                           ("cell saturated", "@c_out{0.000}")], rollover=SAT_POINTS)
        h = figure("tanh inputs of g (grey: saturated)", "tanh input x", "fraction of units",
                   "plot-hist", x_range=Range1d(-5, 5))
        for lo, hi in ((-5, -SAT_X), (SAT_X, 5)):
            h.add_layout(BoxAnnotation(left=lo, right=hi, fill_color="#999999", fill_alpha=0.18))
        self.hist = Layers(h, "hist", ("x", "g"), lambda p, src, color: p.step(
            "x", "g", source=src, color=color, line_width=3, mode="center"))
        self.p_sat = pn.pane.Bokeh(s, sizing_mode="stretch_width", css_classes=["plot-sat"])
        self.p_hist = pn.pane.Bokeh(h, sizing_mode="stretch_width", css_classes=["plot-hist"])
        self.legend = Legend(state=self.state)

    def body(self) -> list:
        return [self.legend.pane, pn.GridBox(self.p_hist, self.p_sat, ncols=2,
                                             sizing_mode="stretch_width")]

    def show(self, slot) -> None:
        self.sat.show(slot)
        self.hist.show(slot)

    def update(self, slot, d, probe_due: bool) -> None:
        slot.sat_pending.extend(d.sat_rows)
        if probe_due:
            self.hist.set(slot, hist_frame(slot.latest_probe))
            if slot.sat_pending:
                arr = np.asarray(slot.sat_pending, dtype=float)
                slot.sat_pending = []
                self.sat.stream(slot, step=arr[:, 0], g=arr[:, 1], c_out=arr[:, 2])
