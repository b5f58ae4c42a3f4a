"""Live plots: HoloViews elements on bounded streams, one set of streams per run.

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


class RunStreams:
    """The streams of one run (created on the event loop with the run)."""

    def __init__(self, run):
        self.run = run
        self.loss = hv.streams.Buffer(_empty("step", "loss", "smooth"), length=LOSS_POINTS, index=False)
        self.val = hv.streams.Buffer(_empty("step", "acc"), length=VAL_POINTS, index=False)
        self.sat = hv.streams.Buffer(_empty("step", "g", "c_out"), length=SAT_POINTS, index=False)
        self.grad = hv.streams.Pipe(data=_empty("t", "grad"))
        self.hist = hv.streams.Pipe(data=_empty("x", "g", "c_out"))
        self.latest_probe: Optional[dict] = None
        self.probe_pending = False
        self.probe_shown_at = 0.0
        self.sat_pending: list = []


# ------------------------------------------------------------------------- plot builders
def _placeholder(title: str, xlabel: str, ylabel: str, logy: bool = False):
    return hv.Curve([], xlabel, ylabel).opts(title=title, logy=logy, **COMMON)


def loss_plot(streams: List[RunStreams]):
    title = "Training loss (bold: smoothed)"
    if not streams:
        return _placeholder(title, "step", "loss")
    layers = []
    for s in streams:
        c = s.run.color
        raw = hv.DynamicMap(lambda data: hv.Curve(data, "step", "loss"), streams=[s.loss]).opts(
            hv.opts.Curve(color=c, alpha=0.22, line_width=1, show_legend=False))
        smooth = hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, "step", ("smooth", "loss"), label=label), streams=[s.loss]).opts(
            hv.opts.Curve(color=c, line_width=3))
        layers += [raw, smooth]
    return hv.Overlay(layers).opts(title=title, legend_position="top_right", **COMMON)


def val_plot(streams: List[RunStreams]):
    title = "Validation accuracy"
    if not streams:
        return _placeholder(title, "step", "accuracy")
    layers = []
    for s in streams:
        c = s.run.color
        layers.append(hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, "step", "acc", label=label), streams=[s.val]).opts(
            hv.opts.Curve(color=c, line_width=3)))
        layers.append(hv.DynamicMap(lambda data: hv.Scatter(data, "step", "acc"),
                                    streams=[s.val]).opts(
            hv.opts.Scatter(color=c, size=8, show_legend=False)))
    return hv.Overlay(layers).opts(title=title, legend_position="bottom_right",
                                   ylim=(0, 1.02), **COMMON)


def saturation_plot(streams: List[RunStreams]):
    title = "Saturated tanh units (solid: g gate, dashed: cell)"
    if not streams:
        return _placeholder(title, "step", "fraction saturated")
    layers = []
    for s in streams:
        c = s.run.color
        layers.append(hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, "step", ("g", "fraction saturated"), label=label + ": g"),
            streams=[s.sat]).opts(hv.opts.Curve(color=c, line_width=3)))
        layers.append(hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, "step", ("c_out", "fraction saturated"), label=label + ": cell out"),
            streams=[s.sat]).opts(hv.opts.Curve(color=c, line_width=2, line_dash="dashed")))
        layers.append(hv.DynamicMap(lambda data: hv.Scatter(data, "step", ("g", "fraction saturated")),
                                    streams=[s.sat]).opts(hv.opts.Scatter(color=c, size=7,
                                                                          show_legend=False)))
    return hv.Overlay(layers).opts(title=title, legend_position="top_left", ylim=(0, None),
                                   ylabel="fraction saturated", **COMMON)


def hist_plot(streams: List[RunStreams]):
    title = "tanh inputs, g gate (grey: saturated)"
    band = (hv.VSpan(-5, -1.818).opts(color="#999999", alpha=0.15)
            * hv.VSpan(1.818, 5).opts(color="#999999", alpha=0.15))
    if not streams:
        return (band * _placeholder(title, "tanh input x", "fraction")).opts(title=title)
    layers = [band]
    for s in streams:
        c = s.run.color
        layers.append(hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, ("x", "tanh input x"), ("g", "fraction of units"), label=label).opts(
                interpolation="steps-mid"), streams=[s.hist]).opts(
            hv.opts.Curve(color=c, line_width=3, framewise=True)))
    return hv.Overlay(layers).opts(title=title, legend_position="top_right", xlim=(-5, 5),
                                   ylabel="fraction of units", xlabel="tanh input x",
                                   framewise=True, **COMMON)


def grad_plot(streams: List[RunStreams]):
    title = "Gradient norm ||dLoss/dh_t|| vs t (log scale)"
    if not streams:
        return _placeholder(title, "t", "||dLoss/dh_t||", logy=True)
    layers = []
    for s in streams:
        layers.append(hv.DynamicMap(lambda data, label=s.run.label: hv.Curve(
            data, ("t", "time step t"), ("grad", "||dLoss/dh_t||"), label=label),
            streams=[s.grad]).opts(hv.opts.Curve(color=s.run.color, line_width=3, logy=True,
                                                 framewise=True, title=title, **COMMON)))
    return hv.Overlay(layers).opts(title=title, legend_position="bottom_right", logy=True,
                                   framewise=True, **COMMON)


# ------------------------------------------------------------ Figure 5: statistics per step
TERMS = {"wh": "W_h h_(t-1)", "c": "c_t"}


def stats_frame(probe: Optional[dict]) -> Dict[str, pd.DataFrame]:
    """Paths of K units, batch and population, for each (term, moment)."""
    out = {}
    for term in TERMS:
        for moment in ("mean", "var"):
            out[f"{term}_{moment}"] = _stats_paths(probe, term, moment)
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

    opts = dict(responsive=True, height=260, fontsize=FONT, show_grid=True, framewise=True)
    batch = hv.DynamicMap(_batch, streams=[pipe]).opts(
        hv.opts.Curve(color="#1f77b4", alpha=0.8, line_width=2, **opts))
    pop = hv.DynamicMap(_pop, streams=[pipe]).opts(
        hv.opts.Curve(color="#ff7f0e", line_width=2, line_dash="dashed", **opts))
    return (batch * pop).opts(title=title, legend_position="top_right", **opts)


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
