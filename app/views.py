"""Live plots: one fixed set of Bokeh figures per session, fed through data sources.

The per-run plots (loss, validation accuracy, saturation, histogram, gradient
norm, batch distribution, kurtosis) are plain Bokeh figures built once per
session, with one layer per slot (``N_SLOTS``). A run borrows a slot and its
colour; starting a run clears and refills that slot's ``ColumnDataSource``, never
replaces a figure of the live page (replacing figures raced the browser's layout:
"reading 'parent_style'" errors). A slot's layers join the figures the first time
the slot shows a run (``RunStreams.assign``), and stay: a page that has shown no
run sends no glyphs or sources, about 470 of the 1,100 models a page with every
layer holds. Growing curves use ``ColumnDataSource.stream`` with a
``rollover`` (bounded memory; only new points travel); curves replaced whole at
each probe set ``.data``. Either is a small patch message: far cheaper on the
server's event loop than re-running HoloViews DynamicMaps for every layer.

The Figure-5 statistics (four panels, redrawn at most every two seconds) are the
same kind of figures (:class:`StatsPanel`). Run names and colours are shown in
an HTML legend above the plots (the dashboard's ``legends``).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool, Label, Range1d, Span
from bokeh.plotting import figure

from .palette import PALETTE

LOSS_POINTS = 10_000       # per run; older points scroll out beyond this
VAL_POINTS = 2_000
SAT_POINTS = 2_000
GRAD_FLOOR = 1e-40         # log axis: a norm of exactly 0 (float32 underflow) is drawn here
GRAD_DECADES = 8           # the gradient plot's log axis spans at least this many decades
SAT_X = 1.818              # |x| beyond which tanh'(x) < 0.1 (the grey bands)

FONT = {"title": "15pt", "labels": "13pt", "xticks": "12pt", "yticks": "12pt", "legend": "12pt"}
N_SLOTS = 6                # runs shown at once: every plot has one fixed layer per slot

LOSS_COLS = ("step", "loss", "smooth")
VAL_COLS = ("step", "acc")
SAT_COLS = ("step", "g", "c_out")
GRAD_COLS = ("t", "grad")
HIST_COLS = ("x", "g")
UNIT_COLS = ("x", "frac")
KURT_COLS = ("t", "kurt")
TANH_1 = 0.7615941559557649  # tanh(1): where a BN tanh-RNN's units sit when gamma = 1 collapses them


def _empty(*cols) -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=float) for c in cols})


def _nothing(cols) -> Dict[str, list]:
    return {c: [] for c in cols}


class RunStreams:
    """One slot of the plots: the data sources behind one run's layers in every plot."""

    def __init__(self, index: int):
        self.index = index
        self.color = PALETTE[index % len(PALETTE)]
        self.run = None
        self.loss = ColumnDataSource(_nothing(LOSS_COLS), name=f"loss-{index}")
        self.val = ColumnDataSource(_nothing(VAL_COLS), name=f"val-{index}")
        self.sat = ColumnDataSource(_nothing(SAT_COLS), name=f"sat-{index}")
        self.grad = ColumnDataSource(_nothing(GRAD_COLS), name=f"grad-{index}")
        self.hist = ColumnDataSource(_nothing(HIST_COLS), name=f"hist-{index}")
        self.units = ColumnDataSource(_nothing(UNIT_COLS), name=f"units-{index}")
        self.kurt = ColumnDataSource(_nothing(KURT_COLS), name=f"kurt-{index}")
        self.layer_makers: list = []     # one per figure: adds this slot's layer to it
        self.layered = False             # whether its layers are in the figures
        self._reset_state()

    def _reset_state(self) -> None:
        self.latest_probe: Optional[dict] = None
        self.first_probe: Optional[dict] = None     # step 1: the model at initialization
        self.fig1a_shown = None                     # (probe, step) now in the section-3 plots
        self.probe_pending = False
        self.probe_shown_at = 0.0
        self.sat_pending: list = []
        self.dirty = False

    def assign(self, run) -> None:
        """Show ``run`` in this slot (``None``: empty the slot). The first run a slot shows
        adds its layers to the figures."""
        if self.run is None and run is None and not self.dirty:
            return
        if run is not None and not self.layered:
            self.layered = True
            for add in self.layer_makers:
                add(self)
        self.run = run
        self._reset_state()
        for src, cols in ((self.loss, LOSS_COLS), (self.val, VAL_COLS), (self.sat, SAT_COLS),
                          (self.grad, GRAD_COLS), (self.hist, HIST_COLS),
                          (self.units, UNIT_COLS), (self.kurt, KURT_COLS)):
            if len(src.data[cols[0]]):
                src.data = _nothing(cols)

    # the drain's side (on the event loop)
    @staticmethod
    def _stream(src: ColumnDataSource, frame: Dict[str, np.ndarray], rollover: int) -> None:
        src.stream({k: np.asarray(v, dtype=float) for k, v in frame.items()}, rollover=rollover)

    def add_loss(self, steps, loss, smooth) -> None:
        self._stream(self.loss, {"step": steps, "loss": loss, "smooth": smooth}, LOSS_POINTS)

    def add_val(self, steps, acc) -> None:
        self._stream(self.val, {"step": steps, "acc": acc}, VAL_POINTS)

    def add_sat(self, steps, g, c_out) -> None:
        self._stream(self.sat, {"step": steps, "g": g, "c_out": c_out}, SAT_POINTS)

    def set_grad(self, frame: pd.DataFrame) -> None:
        self.grad.data = {c: frame[c].to_numpy() for c in GRAD_COLS}

    def set_hist(self, frame: pd.DataFrame) -> None:
        self.hist.data = {c: frame[c].to_numpy() for c in HIST_COLS}

    def probe_at(self, when: str) -> Optional[dict]:
        """``"first"``: the first probe (step 1, at initialization); ``"latest"``: the newest."""
        return self.first_probe if when == "first" else self.latest_probe

    def set_units(self, probe: Optional[dict], step: int) -> None:
        """The batch distribution at 1-based ``step`` (the nearest probed step) and the
        kurtosis curve, from ``probe``."""
        frame, kurt = units_frames(probe, step)
        self.units.data = {c: frame[c].to_numpy() for c in UNIT_COLS}
        self.kurt.data = {c: kurt[c].to_numpy() for c in KURT_COLS}

    def loss_arrays(self):
        d = self.loss.data
        return np.asarray(d["step"], dtype=float), np.asarray(d["loss"], dtype=float)

    def set_loss(self, steps, loss, smooth) -> None:
        self.loss.data = {"step": np.asarray(steps, dtype=float),
                          "loss": np.asarray(loss, dtype=float),
                          "smooth": np.asarray(smooth, dtype=float)}


# ------------------------------------------------------------------------- plot builders
def _figure(title: str, xlabel: str, ylabel: str, css: str, **kw):
    p = figure(title=title, height=300, sizing_mode="stretch_width",
               tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="right",
               css_classes=[css], **kw)
    p.title.text_font_size = FONT["title"]
    for axis, label in ((p.xaxis, xlabel), (p.yaxis, ylabel)):
        axis.axis_label = label
        axis.axis_label_text_font_size = FONT["labels"]
        axis.major_label_text_font_size = FONT["xticks"]
    p.toolbar.logo = None
    p.toolbar.active_scroll = None  # scrolling the page over a plot must not zoom it
    p.min_border_left = 70          # same plot areas side by side, whatever the tick labels
    return p


def lean(*figures) -> None:
    """Drop the glyph copies Bokeh makes for selections and muting (these plots have
    neither): a third of the page's glyph models, so a page builds and renders faster."""
    for p in figures:
        lean_renderers(p.renderers)


def lean_renderers(renderers) -> None:
    """``lean`` for these renderers only (a layer just drawn)."""
    from bokeh.models import GlyphRenderer
    for r in renderers:
        if isinstance(r, GlyphRenderer):
            r.nonselection_glyph = None
            r.muted_glyph = None


def _hover(p, fields):
    tool = HoverTool(renderers=[], tooltips=fields)
    p.add_tools(tool)
    return tool


def _layered(p, slots: List[RunStreams], layer, hover: Optional[HoverTool] = None) -> None:
    """``layer(s)`` draws slot ``s`` in figure ``p`` and returns the renderer the ``hover``
    tool reads; each slot's layer is drawn the first time the slot shows a run."""
    def add(s, p=p, layer=layer, hover=hover):
        before = len(p.renderers)
        hovered = layer(s)
        lean_renderers(p.renderers[before:])
        if hover is not None:
            hover.renderers = [*hover.renderers, hovered]
    for s in slots:
        s.layer_makers.append(add)
        if s.layered:
            add(s)


def loss_plot(slots: List[RunStreams]):
    p = _figure("Training loss (bold: smoothed, faint: raw)", "step", "loss", "plot-loss")

    def layer(s):
        p.line("step", "loss", source=s.loss, color=s.color, alpha=0.22, line_width=1)
        return p.line("step", "smooth", source=s.loss, color=s.color, line_width=3)
    _layered(p, slots, layer, _hover(p, [("step", "@step"), ("loss", "@loss{0.000}"),
                                         ("smoothed", "@smooth{0.000}")]))
    return p


def val_plot(slots: List[RunStreams]):
    p = _figure("Validation accuracy", "step", "accuracy", "plot-val", y_range=Range1d(0, 1.02))

    def layer(s):
        p.line("step", "acc", source=s.val, color=s.color, line_width=3)
        return p.scatter("step", "acc", source=s.val, color=s.color, size=8)
    _layered(p, slots, layer, _hover(p, [("step", "@step"), ("accuracy", "@acc{0.000}")]))
    return p


def set_val_metric(p, metric) -> None:
    """The validation plot speaks the newest run's metric: accuracy on 0..1, or bits per
    character from 0 (lower is better)."""
    if metric.key == "acc":
        title, label, rng = "Validation accuracy", "accuracy", (0, 1.02)
    else:
        title = f"Validation {metric.label}"
        short = {"bits per character": "bits/char"}.get(metric.label, metric.label)
        label = short if metric.higher_is_better else short + " (lower is better)"
        rng = None
    if p.title.text != title:
        p.title.text = title
        p.yaxis.axis_label = label
        p.y_range.update(start=rng[0], end=rng[1]) if rng else p.y_range.update(start=0, end=8)
        p.select_one(HoverTool).tooltips = [("step", "@step"), (label, "@acc{0.000}")]


def fit_val_range(p, slots: List[RunStreams]) -> None:
    """For a lower-is-better metric (bits per character): the axis from 0 to just above the
    highest value shown, so that the fall stays in view as it flattens."""
    if p.yaxis[0].axis_label == "accuracy":
        return
    vals = [np.asarray(s.val.data["acc"], dtype=float) for s in slots if len(s.val.data["acc"])]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        end = float(np.ceil(vals.max() * 1.1 * 2) / 2)
        if p.y_range.end != end:
            p.y_range.update(start=0, end=end)


def saturation_plot(slots: List[RunStreams]):
    # a fixed 0..1 axis: all-zero curves (gamma 0.1 saturates nothing) must not give -1..1,
    # and runs stay comparable on one scale
    p = _figure("Saturated tanh units (solid: g, dashed: cell)", "step", "fraction saturated",
                "plot-sat", y_range=Range1d(0, 1))

    def layer(s):
        solid = p.line("step", "g", source=s.sat, color=s.color, line_width=3)
        p.line("step", "c_out", source=s.sat, color=s.color, line_width=2, line_dash="dashed")
        return solid
    _layered(p, slots, layer, _hover(p, [("step", "@step"), ("g saturated", "@g{0.000}"),
                                         ("cell saturated", "@c_out{0.000}")]))
    return p


def hist_plot(slots: List[RunStreams]):
    p = _figure("tanh inputs of g (grey: saturated)", "tanh input x", "fraction of units",
                "plot-hist", x_range=Range1d(-5, 5))
    for lo, hi in ((-5, -SAT_X), (SAT_X, 5)):
        p.add_layout(BoxAnnotation(left=lo, right=hi, fill_color="#999999", fill_alpha=0.18))
    _layered(p, slots, lambda s: p.step("x", "g", source=s.hist, color=s.color, line_width=3,
                                        mode="center"))
    return p


def grad_plot(slots: List[RunStreams]):
    p = _figure("Gradient norm ||dLoss/dh_t|| vs t (mean over the batch, log scale)",
                "time step t", "||dLoss/dh_t||", "plot-grad", y_axis_type="log",
                y_range=Range1d(1e-8, 1.0))
    _layered(p, slots, lambda s: p.line("t", "grad", source=s.grad, color=s.color, line_width=3),
             _hover(p, [("t", "@t"), ("norm", "@grad{0.000e}")]))
    return p


def fit_grad_range(p, slots: List[RunStreams]) -> None:
    """Fit the gradient plot's log axis to the curves shown, spanning at least
    ``GRAD_DECADES`` decades: a flat curve stays flat on screen instead of being zoomed
    until its noise looks like a trend, and a fall to 1e-30 (or to float32's zero, drawn
    at ``GRAD_FLOOR``) is all in view."""
    vals = [np.asarray(s.grad.data["grad"], dtype=float) for s in slots if len(s.grad.data["grad"])]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not vals.size:
        return
    top = 10 ** (np.ceil(np.log10(vals.max())) + 0.5)
    bottom = min(10 ** (np.floor(np.log10(vals.min())) - 0.5), top / 10 ** GRAD_DECADES)
    if (p.y_range.start, p.y_range.end) != (bottom, top):
        p.y_range.update(start=bottom, end=top)


def units_plot(slots: List[RunStreams]):
    p = _figure("Batch distribution of the units at step t", "unit output (tanh)",
                "fraction of batch x units", "plot-units", x_range=Range1d(-1.05, 1.05))
    for x in (-TANH_1, TANH_1):
        p.add_layout(Span(location=x, dimension="height", line_color="#555555",
                          line_dash="dashed", line_width=2))
    p.add_layout(Label(x=TANH_1, y=0, y_units="screen", y_offset=8, x_offset=4,
                       text="tanh(1)", text_font_size="12pt", text_color="#555555"))
    _layered(p, slots, lambda s: p.step("x", "frac", source=s.units, color=s.color,
                                        line_width=3, mode="center"))
    return p


def kurtosis_plot(slots: List[RunStreams]):
    p = _figure("Batch kurtosis (3: bell, 1: two points)",
                "time step t", "kurtosis", "plot-kurt", y_range=Range1d(0.8, 5.0))
    for y in (1.0, 3.0):
        p.add_layout(Span(location=y, dimension="width", line_color="#999999",
                          line_dash="dotted", line_width=2))
    _layered(p, slots, lambda s: p.line("t", "kurt", source=s.kurt, color=s.color, line_width=3),
             _hover(p, [("t", "@t"), ("kurtosis", "@kurt{0.00}")]))
    return p


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
    paths = {"batch": _empty("t", "v"), "population": _empty("t", "v")}
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
        self.batch = ColumnDataSource(_nothing(("t", "v")), name=f"stats-{key}-batch")
        self.pop = ColumnDataSource(_nothing(("t", "v")), name=f"stats-{key}-population")
        p = _figure(f"{self.name} of {TERMS[self.term]} per step t", "t", self.name,
                    f"plot-stats-{key}")
        p.height = 260
        p.line("t", "v", source=self.batch, color="#1f77b4", alpha=0.8, line_width=2,
               legend_label="batch")
        p.line("t", "v", source=self.pop, color="#ff7f0e", line_width=2, line_dash="dashed",
               legend_label="population")
        p.legend.location = "top_right"
        p.legend.background_fill_alpha = 0.6
        p.legend.label_text_font_size = FONT["legend"]
        # a short note in the panel when the run has no such term (never a blank panel)
        self.note = Label(x=0.5, y=0.5, x_units="data", y_units="data", text="",
                          text_font_size="17pt", text_color="#8a5300", text_align="center",
                          name=f"stats-{key}-note")
        p.add_layout(self.note)
        self.figure = p

    def show(self, frame: Dict[str, object]) -> None:
        paths = frame.get(self.key) or {"batch": _empty("t", "v"), "population": _empty("t", "v")}
        for src, df in ((self.batch, paths["batch"]), (self.pop, paths["population"])):
            src.data = {"t": df["t"].to_numpy(), "v": df["v"].to_numpy()}
        note = frame.get(f"{self.term}_note", "")
        if note != self.note.text:
            self.note.text = note
            if note:              # the axes then show an empty 0..1 frame: centre the note in it
                self.note.x, self.note.y = 0.5, 0.5


# ---------------------------------------------------------------------------- converting
def grad_frame(probe: Optional[dict]) -> pd.DataFrame:
    g = np.asarray((probe or {}).get("grad_h", []), dtype=float)
    if g.size == 0:
        return _empty("t", "grad")
    g = np.where(np.isfinite(g), np.maximum(g, GRAD_FLOOR), np.nan)
    return pd.DataFrame({"t": np.arange(1, len(g) + 1, dtype=float), "grad": g})


def units_frames(probe: Optional[dict], step: int):
    """(histogram at the probed step nearest to 1-based ``step``, kurtosis curve over t)."""
    units = (probe or {}).get("units")
    if not units:
        return _empty(*UNIT_COLS), _empty(*KURT_COLS)
    steps = np.asarray(units["steps"], dtype=int)
    edges = np.asarray(units["edges"], dtype=float)
    i = int(np.argmin(np.abs(steps - (int(step) - 1))))
    frame = pd.DataFrame({"x": 0.5 * (edges[1:] + edges[:-1]),
                          "frac": np.asarray(units["frac"], dtype=float)[i]})
    k = np.asarray(units["kurtosis"], dtype=float)
    return frame, pd.DataFrame({"t": np.arange(1, len(k) + 1, dtype=float), "kurt": k})


def hist_frame(probe: dict) -> pd.DataFrame:
    edges = np.asarray(probe.get("hist_edges", []), dtype=float)
    hist = probe.get("hist", {})
    if edges.size < 2 or "g" not in hist:
        return _empty("x", "g", "c_out")
    centers = 0.5 * (edges[1:] + edges[:-1])
    g = np.asarray(hist["g"], dtype=float)
    c = np.asarray(hist.get("c_out", np.full_like(g, np.nan)), dtype=float)
    return pd.DataFrame({"x": centers, "g": g, "c_out": c})
