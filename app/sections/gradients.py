"""Section 3 (the paper's Figure 1a, and why): the gradient through time of a BN tanh-RNN,
the batch distribution of its units at one step, and their kurtosis over time."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import Label, Range1d, Span

from ..lessons import TOGGLE_CSS
from . import Legend, Section
from .figures import Layers, empty, figure

GRAD_FLOOR = 1e-40         # log axis: a norm of exactly 0 (float32 underflow) is drawn here
GRAD_DECADES = 8           # the gradient plot's log axis spans at least this many decades
TANH_1 = 0.7615941559557649  # tanh(1): where a BN tanh-RNN's units sit when gamma = 1 collapses them
UNIT_COLS = ("x", "frac")
KURT_COLS = ("t", "kurt")


def grad_frame(probe: Optional[dict]) -> pd.DataFrame:
    """||dLoss/dh_t|| over t = 1..T, zeros drawn at GRAD_FLOOR on the log axis."""
    g = np.asarray((probe or {}).get("grad_h", []), dtype=float)
    if g.size == 0:
        return empty("t", "grad")
    g = np.where(np.isfinite(g), np.maximum(g, GRAD_FLOOR), np.nan)
    return pd.DataFrame({"t": np.arange(1, len(g) + 1, dtype=float), "grad": g})


def units_frames(probe: Optional[dict], step: int):
    """(histogram at the probed step nearest to 1-based ``step``, kurtosis curve over t)."""
    units = (probe or {}).get("units")
    if not units:
        return empty(*UNIT_COLS), empty(*KURT_COLS)
    steps = np.asarray(units["steps"], dtype=int)
    edges = np.asarray(units["edges"], dtype=float)
    i = int(np.argmin(np.abs(steps - (int(step) - 1))))
    frame = pd.DataFrame({"x": 0.5 * (edges[1:] + edges[:-1]),
                          "frac": np.asarray(units["frac"], dtype=float)[i]})
    k = np.asarray(units["kurtosis"], dtype=float)
    return frame, pd.DataFrame({"t": np.arange(1, len(k) + 1, dtype=float), "kurt": k})


class Gradients(Section):
    title = "3. Gradients through time in a BN tanh-RNN (Fig. 1a), and why"
    point_at = (
        "After <b>tanh-RNN: gamma 0.1 vs 1.0</b>, point at: going back from the "
        "last step, gamma 1.0's gradient falls by orders of magnitude while gamma "
        "0.1's stays flat. Why: at gamma 1.0 the batch piles up on two spikes near "
        "&plusmn;tanh(1) and the kurtosis drops to 1, where each step passes only "
        "about tanh'(1)/tanh(1) = 0.55 of the gradient; gamma 0.1 keeps one bell "
        "around 0 (kurtosis 2 to 3). Further back, below about t = 20, gamma 1.0's "
        "curve turns up again (a U): the fall is in the steps after its units have "
        "collapsed (kurtosis 1, from about t = 8); why the earliest steps gain again is "
        "not settled here. After <b>why init matters</b>: the same gamma "
        "1.0 with an orthogonal W_h keeps mixing the units, its batch stays spread "
        "out and its gradient grows going back instead: the identity W_h makes the "
        "collapse. (These presets use pixel 7x7. On the row task, 28 pixels a step, "
        "it turns round: the inputs then outweigh the recurrent term inside the one "
        "BN, and gamma 0.1's gradient is the one that falls.)")

    def __init__(self, **params):
        super().__init__(**params)
        g = figure("Gradient norm ||dLoss/dh_t|| vs t (mean over the batch, log scale)",
                   "time step t", "||dLoss/dh_t||", "plot-grad", y_axis_type="log",
                   y_range=Range1d(1e-8, 1.0))
        self.grad = Layers(g, "grad", ("t", "grad"), lambda p, src, color: p.line(
            "t", "grad", source=src, color=color, line_width=3),
            [("t", "@t"), ("norm", "@grad{0.000e}")])
        u = figure("Batch distribution of the units at step t", "unit output (tanh)",
                   "fraction of batch x units", "plot-units", x_range=Range1d(-1.05, 1.05))
        for x in (-TANH_1, TANH_1):
            u.add_layout(Span(location=x, dimension="height", line_color="#555555",
                              line_dash="dashed", line_width=2))
        u.add_layout(Label(x=TANH_1, y=0, y_units="screen", y_offset=8, x_offset=4,
                           text="tanh(1)", text_font_size="12pt", text_color="#555555"))
        self.units = Layers(u, "units", UNIT_COLS, lambda p, src, color: p.step(
            "x", "frac", source=src, color=color, line_width=3, mode="center"))
        k = figure("Batch kurtosis (3: bell, 1: two points)", "time step t", "kurtosis",
                   "plot-kurt", y_range=Range1d(0.8, 5.0))
        for y in (1.0, 3.0):
            k.add_layout(Span(location=y, dimension="width", line_color="#999999",
                              line_dash="dotted", line_width=2))
        self.kurt = Layers(k, "kurt", KURT_COLS, lambda p, src, color: p.line(
            "t", "kurt", source=src, color=color, line_width=3),
            [("t", "@t"), ("kurtosis", "@kurt{0.00}")])
        self.p_grad = pn.pane.Bokeh(g, sizing_mode="stretch_width", css_classes=["plot-grad"])
        self.p_units = pn.pane.Bokeh(u, sizing_mode="stretch_width", css_classes=["plot-units"])
        self.p_kurt = pn.pane.Bokeh(k, sizing_mode="stretch_width", css_classes=["plot-kurt"])
        self.w_unit_step = pn.widgets.IntSlider(name="Step t shown in the batch distribution",
                                                start=1, end=49, value=49, width=420,
                                                css_classes=["w-unit-step"])
        self.w_when = pn.widgets.RadioButtonGroup(
            name="Probe shown", options={"at step 1 (initialization, as Fig. 1a)": "first",
                                         "latest probe (live)": "latest"},
            value="first", button_type="primary", button_style="outline", css_classes=["w-when"],
            stylesheets=[TOGGLE_CSS])
        # the three plots follow the probe chosen and the step (its drag's end)
        pn.bind(lambda when, t: self.redraw(), self.w_when,
                self.w_unit_step.param.value_throttled, watch=True)
        self.legend = Legend(state=self.state)

    def body(self) -> list:
        return [self.legend.pane, self.w_when, self.p_grad, self.w_unit_step,
                pn.GridBox(self.p_units, self.p_kurt, ncols=2, sizing_mode="stretch_width")]

    def show(self, slot) -> None:
        for layers in (self.grad, self.units, self.kurt):
            layers.show(slot)

    def update(self, slot, d, probe_due: bool) -> None:
        if probe_due:
            self._fit_unit_step()
            self.redraw([slot])

    def _fit_unit_step(self) -> None:
        """The step slider spans the longest sequence shown; at its end it follows the end."""
        T = max((len(s.latest_probe["t"]) for s in self.state.slots if s.latest_probe), default=0)
        w = self.w_unit_step
        if T > 1 and T != w.end:
            at_end = w.value >= w.end
            w.end = T
            if at_end or w.value > T:
                w.value = T

    def redraw(self, slots=None) -> None:
        """The three plots from the probe chosen in ``w_when`` (at initialization, or the
        latest), for ``slots`` (default: all)."""
        changed = False
        for s in (self.state.slots if slots is None else slots):
            probe = s.probe_at(self.w_when.value)
            if probe is None and s.run is None:
                continue                      # an empty slot stays empty
            shown = (probe.get("step") if probe else None, self.w_when.value,
                     self.w_unit_step.value)
            if s.fig1a_shown == shown:        # e.g. "at step 1": the same probe as before
                continue
            s.fig1a_shown = shown
            self.grad.set(s, grad_frame(probe))
            units, kurt = units_frames(probe, self.w_unit_step.value)
            self.units.set(s, units)
            self.kurt.set(s, kurt)
            changed = True
        if changed:
            self._fit_grad_range()

    def _fit_grad_range(self) -> None:
        """Fit the log axis to the curves shown, spanning at least ``GRAD_DECADES`` decades:
        a flat curve stays flat on screen instead of being zoomed until its noise looks
        like a trend, and a fall to 1e-30 (or to float32's zero, drawn at ``GRAD_FLOOR``)
        is all in view."""
        vals = self.grad.values("grad")
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if not vals.size:
            return
        p = self.grad.figure
        top = 10 ** (np.ceil(np.log10(vals.max())) + 0.5)
        bottom = min(10 ** (np.floor(np.log10(vals.min())) - 0.5), top / 10 ** GRAD_DECADES)
        if (p.y_range.start, p.y_range.end) != (bottom, top):
            p.y_range.update(start=bottom, end=top)
