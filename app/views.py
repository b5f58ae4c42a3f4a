"""Live plots: HoloViews elements on bounded streams, one set of streams per slot.

Each plot is built once per session, with one fixed layer per slot (``N_SLOTS``);
a run borrows a slot and its colour, so starting runs only clears and refills
streams and never replaces a figure of the live page. The runs' names and colours
are shown in an HTML legend above the plots (the dashboard's ``legends``).

Curves that grow (loss, validation accuracy, saturation over training) sit on
``hv.streams.Buffer`` with a fixed ``length`` (bounded memory; Bokeh receives only
the new points). Curves that are replaced whole at each probe (statistics per
step, histograms, gradient norm through time) sit on ``hv.streams.Pipe``.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend for .opts)
import numpy as np
import pandas as pd

if "bokeh" not in hv.Store.renderers or hv.Store.current_backend != "bokeh" \
        or not hasattr(hv.opts, "Path"):
    hv.extension("bokeh", logo=False)

LOSS_POINTS = 10_000       # per run; older points scroll out beyond this
VAL_POINTS = 2_000
SAT_POINTS = 2_000
GRAD_FLOOR = 1e-30         # log axis: a norm of exactly 0 is drawn at this floor

FONT = {"title": "15pt", "labels": "13pt", "xticks": "12pt", "yticks": "12pt", "legend": "12pt"}
COMMON = dict(responsive=True, height=300, fontsize=FONT, show_grid=True, tools=["hover"],
              active_tools=[], toolbar="right")


def _empty(*cols) -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=float) for c in cols})


N_SLOTS = 6                # runs shown at once: every plot has one fixed layer per slot
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


class RunStreams:
    """One slot of the plots: the streams behind one run's layers in every plot.

    The plots are built once per session with ``N_SLOTS`` layers each, and a run
    borrows a slot (and its colour) for as long as it is shown: starting a run only
    clears and refills streams, it never replaces a plot (replacing the Bokeh figures
    of a live page raced with the browser's layout: "reading 'parent_style'" errors).
    """

    def __init__(self, index: int):
        self.index = index
        self.color = PALETTE[index % len(PALETTE)]
        self.run = None
        self.loss = hv.streams.Buffer(_empty("step", "loss", "smooth"), length=LOSS_POINTS, index=False)
        self.val = hv.streams.Buffer(_empty("step", "acc"), length=VAL_POINTS, index=False)
        self.sat = hv.streams.Buffer(_empty("step", "g", "c_out"), length=SAT_POINTS, index=False)
        self.grad = hv.streams.Pipe(data=_empty("t", "grad"))
        self.hist = hv.streams.Pipe(data=_empty("x", "g", "c_out"))
        self._reset_state()

    def _reset_state(self) -> None:
        self.latest_probe: Optional[dict] = None
        self.probe_pending = False
        self.probe_shown_at = 0.0
        self.sat_pending: list = []
        self.dirty = False

    def assign(self, run) -> None:
        """Show ``run`` in this slot (``None``: empty the slot)."""
        if self.run is None and run is None and not self.dirty:
            return
        self.run = run
        self._reset_state()
        for buf in (self.loss, self.val, self.sat):
            if len(buf.data):
                buf.clear()
        self.grad.send(_empty("t", "grad"))
        self.hist.send(_empty("x", "g", "c_out"))


# ------------------------------------------------------------------------- plot builders
def _dmap(fn, stream):
    return hv.DynamicMap(fn, streams=[stream])


def _overlay(layers, **plot):
    """The layers as one plot. Plot-level options are set on every layer's elements as
    well: an Overlay of DynamicMaps takes its title, size and ranges from its layers,
    and ignores (most of) the options given to the Overlay itself."""
    plot = {"show_legend": False, **COMMON, **plot}
    per = [hv.opts.Curve(**plot), hv.opts.Scatter(**plot)]
    out = [layer.opts(*per) if isinstance(layer, hv.DynamicMap) else layer for layer in layers]
    return hv.Overlay(out).opts(**plot)


def loss_plot(slots: List[RunStreams]):
    layers = []
    for s in slots:
        c = s.color
        layers.append(_dmap(lambda data: hv.Curve(data, "step", "loss"), s.loss).opts(
            hv.opts.Curve(color=c, alpha=0.22, line_width=1)))
        layers.append(_dmap(lambda data: hv.Curve(data, "step", ("smooth", "loss")), s.loss).opts(
            hv.opts.Curve(color=c, line_width=3)))
    return _overlay(layers, title="Training loss (bold: smoothed, faint: raw)",
                    xlabel="step", ylabel="loss")


def val_plot(slots: List[RunStreams]):
    layers = []
    for s in slots:
        c = s.color
        layers.append(_dmap(lambda data: hv.Curve(data, "step", "acc"), s.val).opts(
            hv.opts.Curve(color=c, line_width=3)))
        layers.append(_dmap(lambda data: hv.Scatter(data, "step", "acc"), s.val).opts(
            hv.opts.Scatter(color=c, size=8)))
    return _overlay(layers, title="Validation accuracy", ylim=(0, 1.02), xlabel="step",
                    ylabel="accuracy")


def saturation_plot(slots: List[RunStreams]):
    layers = []
    for s in slots:
        c = s.color
        layers.append(_dmap(lambda data: hv.Curve(data, "step", ("g", "fraction saturated")),
                            s.sat).opts(hv.opts.Curve(color=c, line_width=3)))
        layers.append(_dmap(lambda data: hv.Curve(data, "step", ("c_out", "fraction saturated")),
                            s.sat).opts(hv.opts.Curve(color=c, line_width=2, line_dash="dashed")))
    # all-zero curves (gamma 0.1 saturates nothing) must not give a -1..1 axis
    return _overlay(layers, title="Saturated tanh units (solid: g, dashed: cell)",
                    ylim=(0, 1), xlabel="step", ylabel="fraction saturated")


def hist_plot(slots: List[RunStreams]):
    band = (hv.VSpan(-5, -1.818).opts(color="#999999", alpha=0.15)
            * hv.VSpan(1.818, 5).opts(color="#999999", alpha=0.15))
    layers = [band]
    for s in slots:
        layers.append(_dmap(lambda data: hv.Curve(
            data, ("x", "tanh input x"), ("g", "fraction of units")).opts(
                interpolation="steps-mid"), s.hist).opts(
            hv.opts.Curve(color=s.color, line_width=3, framewise=True)))
    return _overlay(layers, title="tanh inputs of g (grey: saturated)", xlim=(-5, 5),
                    xlabel="tanh input x", ylabel="fraction of units", framewise=True)


def grad_plot(slots: List[RunStreams]):
    title = "Gradient norm ||dLoss/dh_t|| vs t (log scale)"
    layers = []
    for s in slots:
        layers.append(_dmap(lambda data: hv.Curve(
            data, ("t", "time step t"), ("grad", "||dLoss/dh_t||")), s.grad).opts(
            hv.opts.Curve(color=s.color, line_width=3, logy=True, framewise=True)))
    return _overlay(layers, title=title, logy=True, framewise=True, xlabel="time step t",
                    ylabel="||dLoss/dh_t||")


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


def stats_plot(pipe: hv.streams.Pipe, key: str):
    term, moment = key.split("_")
    name = "mean" if moment == "mean" else "variance"
    title = f"{name} of {TERMS[term]} per step t"
    none = {"batch": _empty("t", "v"), "population": _empty("t", "v")}

    def _batch(data):
        paths = (data or {}).get(key, none)
        return hv.Curve(paths["batch"], "t", ("v", name), label="batch")

    def _pop(data):
        paths = (data or {}).get(key, none)
        return hv.Curve(paths["population"], "t", ("v", name), label="population")

    def _note(data):
        """A short note in the panel when the run has no such term (never a blank panel)."""
        note = (data or {}).get(f"{term}_note", "")
        if note:
            return hv.Text(0.5, 0.5, note)
        paths = (data or {}).get(key, none)["batch"]
        ok = paths.dropna()
        x, y = (float(ok["t"].iloc[0]), float(ok["v"].iloc[0])) if len(ok) else (0.0, 0.0)
        return hv.Text(x, y, "")

    opts = dict(responsive=True, height=260, fontsize=FONT, show_grid=True, framewise=True)
    batch = hv.DynamicMap(_batch, streams=[pipe]).opts(
        hv.opts.Curve(color="#1f77b4", alpha=0.8, line_width=2, **opts))
    pop = hv.DynamicMap(_pop, streams=[pipe]).opts(
        hv.opts.Curve(color="#ff7f0e", line_width=2, line_dash="dashed", **opts))
    note = hv.DynamicMap(_note, streams=[pipe]).opts(
        hv.opts.Text(text_font_size="17pt", text_color="#8a5300", framewise=True))
    return (batch * pop * note).opts(title=title, legend_position="top_right", **opts)


# ---------------------------------------------------------------------------- converting
def grad_frame(probe: dict) -> pd.DataFrame:
    g = np.asarray(probe.get("grad_h", []), dtype=float)
    if g.size == 0:
        return _empty("t", "grad")
    g = np.where(np.isfinite(g), np.maximum(g, GRAD_FLOOR), np.nan)
    return pd.DataFrame({"t": np.arange(len(g), dtype=float), "grad": g})


def hist_frame(probe: dict) -> pd.DataFrame:
    edges = np.asarray(probe.get("hist_edges", []), dtype=float)
    hist = probe.get("hist", {})
    if edges.size < 2 or "g" not in hist:
        return _empty("x", "g", "c_out")
    centers = 0.5 * (edges[1:] + edges[:-1])
    g = np.asarray(hist["g"], dtype=float)
    c = np.asarray(hist.get("c_out", np.full_like(g, np.nan)), dtype=float)
    return pd.DataFrame({"x": centers, "g": g, "c_out": c})
