"""Section 1: the learning curves, training loss (raw and smoothed) and the validation
score in the newest run's own metric (accuracy; bits per character for text)."""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import (BasicTicker, BasicTickFormatter, HoverTool, LinearScale, LogScale,
                          LogTicker, LogTickFormatter, Range1d)

from ..feed import ema
from ..lessons import TOGGLE_CSS
from . import Legend, Section
from .figures import Layers, figure

X_AXES = {"updates": "step", "wall time (s)": "t"}     # what the curves' x axis counts

LOSS_POINTS = 10_000       # per run; older points scroll out beyond this
VAL_POINTS = 2_000


class LearningCurves(Section):
    title = "1. Learning curves"
    point_at = ("After <b>LSTM vs BN-LSTM</b>, point at: for the first couple of hundred "
                "updates the LSTM's loss may fall as fast or faster; after that the "
                "BN-LSTM's loss sits below it and its validation score above (accuracy on "
                "MNIST; on text, fewer bits per character). After <b>per-step vs shared "
                "statistics</b>: the two training losses are one line, since training "
                "normalizes with each batch's own statistics in both; only the validation "
                "score, which uses the kept population statistics, can differ.")

    def __init__(self, **params):
        super().__init__(**params)
        p = figure("Training loss (bold: smoothed, faint: raw)", "step", "loss", "plot-loss")
        self.w_x = pn.widgets.RadioButtonGroup(
            name="x axis", options=X_AXES, value="step", button_type="primary", width=320,
            button_style="outline", css_classes=["w-x-axis"], stylesheets=[TOGGLE_CSS])
        self.w_log = pn.widgets.RadioButtonGroup(
            name="loss axis", options={"linear loss": False, "log-scale loss": True},
            value=False, button_type="primary", button_style="outline", width=320,
            css_classes=["w-log-loss"], stylesheets=[TOGGLE_CSS])

        def loss_layer(p, src, color):        # drawn later: on the x axis chosen then
            x = self.w_x.value
            p.line(x, "loss", source=src, color=color, alpha=0.22, line_width=1)
            return p.line(x, "smooth", source=src, color=color, line_width=3)
        self.loss = Layers(p, "loss", ("step", "t", "loss", "smooth"), loss_layer,
                           [("step", "@step"), ("time", "@t{0.0} s"), ("loss", "@loss{0.000}"),
                            ("smoothed", "@smooth{0.000}")], rollover=LOSS_POINTS)
        v = figure("Validation accuracy", "step", "accuracy", "plot-val", y_range=Range1d(0, 1.02))

        def val_layer(p, src, color):
            x = self.w_x.value
            p.line(x, "acc", source=src, color=color, line_width=3)
            return p.scatter(x, "acc", source=src, color=color, size=8)
        self.val = Layers(v, "val", ("step", "t", "acc"), val_layer,
                          [("step", "@step"), ("accuracy", "@acc{0.000}")], rollover=VAL_POINTS)
        pn.bind(self._set_x, self.w_x, watch=True)
        pn.bind(self._set_log, self.w_log, watch=True)
        self.p_loss = pn.pane.Bokeh(p, sizing_mode="stretch_width", css_classes=["plot-loss"])
        self.p_val = pn.pane.Bokeh(v, sizing_mode="stretch_width", css_classes=["plot-val"])
        self.legend = Legend(state=self.state)

    def body(self) -> list:
        return [self.legend.pane,
                pn.Row(self.w_x, self.w_log, sizing_mode="stretch_width", margin=(0, 10)),
                pn.GridBox(self.p_loss, self.p_val, ncols=2, sizing_mode="stretch_width")]

    def _set_x(self, x: str) -> None:
        """Both plots against updates or against wall time (seconds since each run began:
        a slower model's curve stretches out to the right)."""
        label = "step" if x == "step" else "wall time (s)"
        for fig in (self.loss.figure, self.val.figure):
            for r in fig.renderers:
                if hasattr(r, "glyph") and hasattr(r.glyph, "x"):
                    r.glyph.x = x
            fig.xaxis[0].axis_label = label

    def _set_log(self, log: bool) -> None:
        """The loss on a log axis (a fall from 2.3 to 0.05 stays readable) or a linear one."""
        p = self.loss.figure
        axis = p.yaxis[0]
        if log:
            p.y_scale, axis.ticker, axis.formatter = LogScale(), LogTicker(), LogTickFormatter()
        else:
            p.y_scale, axis.ticker, axis.formatter = (LinearScale(), BasicTicker(),
                                                      BasicTickFormatter())

    def show(self, slot) -> None:
        self.loss.show(slot)
        self.val.show(slot)
        if slot.run is not None:
            self.speak(slot.run.metric)

    def update(self, slot, d, probe_due: bool) -> None:
        if d.steps:
            self.loss.stream(slot, step=d.steps, t=d.elapsed, loss=d.loss, smooth=d.smooth)
        if d.val_steps:
            self.val.stream(slot, step=d.val_steps, t=d.val_elapsed, acc=d.val_values)
            self._fit_val_range()

    def speak(self, metric) -> None:
        """The validation plot speaks the newest run's metric: accuracy on 0..1, or bits
        per character from 0 (lower is better)."""
        p = self.val.figure
        if metric.key == "acc":
            title, label, rng = "Validation accuracy", "accuracy", (0, 1.02)
        else:
            title = f"Validation {metric.label}"
            short = {"bits per character": "bits/char"}.get(metric.label, metric.label)
            label = short if metric.higher_is_better else short + " (lower is better)"
            rng = (0, 8)
        if p.title.text != title:
            p.title.text = title
            p.yaxis.axis_label = label
            p.y_range.update(start=rng[0], end=rng[1])
            p.select_one(HoverTool).tooltips = [("step", "@step"), (label, "@acc{0.000}")]

    def _fit_val_range(self) -> None:
        """For a lower-is-better metric (bits per character): the axis from 0 to just above
        the highest value shown, so that the fall stays in view as it flattens."""
        p = self.val.figure
        if p.yaxis[0].axis_label == "accuracy":
            return
        vals = self.val.values("acc")
        vals = vals[np.isfinite(vals)]
        if vals.size:
            end = float(np.ceil(vals.max() * 1.1 * 2) / 2)
            if p.y_range.end != end:
                p.y_range.update(start=0, end=end)

    @param.depends("state.smoothing", watch=True)
    def _resmooth(self) -> None:
        """A new smoothing redraws every run's bold curve, and the EMA goes on from there."""
        for run in self.state.runs:
            slot = self.state.slot_of.get(run.id)
            if slot is None:
                continue
            loss = self.loss.column(slot, "loss")
            if not len(loss):
                continue
            smooth, last, n = ema(loss, self.state.smoothing)
            run.ema, run.ema_n = (float(last), n) if n else (None, 0)
            self.loss.set(slot, {"step": self.loss.column(slot, "step"),
                                 "t": self.loss.column(slot, "t"), "loss": loss, "smooth": smooth})
