"""What every section's plots share: the figure style, and :class:`Layers`, a figure's
one layer per slot.

The per-run plots are plain Bokeh figures built once per page, with one layer per slot
(``N_SLOTS``), each fed by its own ``ColumnDataSource``. A run borrows a slot and its
colour; a new run clears and refills that slot's sources, never replaces a figure of the
live page (replacing figures raced the browser's layout: "reading 'parent_style'"
errors). A slot's layer joins a figure the first time the slot shows a run, and stays: a
page that has shown no run sends no glyphs or sources (about 470 of the 1,100 models a
page with every layer holds). Growing curves use ``ColumnDataSource.stream`` with a
``rollover`` (bounded memory; only new points travel); curves replaced whole at each
probe set ``.data``. Either is a small patch message, far cheaper on the server's event
loop than re-running HoloViews DynamicMaps for every layer.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, GlyphRenderer, HoverTool

from ..state import N_SLOTS, Slot

FONT = {"title": "15pt", "labels": "13pt", "xticks": "12pt", "yticks": "12pt", "legend": "12pt"}


def empty(*cols) -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0) for c in cols})


def nothing(cols) -> Dict[str, list]:
    return {c: [] for c in cols}


def figure(title: str, xlabel: str, ylabel: str, css: str, **kw):
    from bokeh.plotting import figure as _figure
    p = _figure(title=title, height=300, sizing_mode="stretch_width",
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
    for r in renderers:
        if isinstance(r, GlyphRenderer):
            r.nonselection_glyph = None
            r.muted_glyph = None


class Layers:
    """A figure's layers, one per slot: slot ``i`` draws from ``sources[i]`` (columns
    ``cols``) with ``draw(figure, source, color)``, which returns the renderer the hover
    tool reads (``hover``: its tooltips; ``None``: no hover tool).

    ``rollover``: the points a streamed curve keeps (older ones scroll out)."""

    def __init__(self, fig, name: str, cols: Sequence[str],
                 draw: Callable[[object, ColumnDataSource, str], object],
                 hover: Optional[list] = None, rollover: Optional[int] = None):
        self.figure, self.cols, self.draw, self.rollover = fig, tuple(cols), draw, rollover
        self.sources = [ColumnDataSource(nothing(cols), name=f"{name}-{i}") for i in range(N_SLOTS)]
        self._hover = None
        if hover is not None:
            self._hover = HoverTool(renderers=[], tooltips=hover)
            fig.add_tools(self._hover)
        self._drawn = [False] * N_SLOTS

    def show(self, slot: Slot) -> None:
        """Empty slot ``slot``'s layer for a new run, drawing the layer if it is its first."""
        i = slot.index
        if slot.run is not None and not self._drawn[i]:
            self._drawn[i] = True
            before = len(self.figure.renderers)
            hovered = self.draw(self.figure, self.sources[i], slot.color)
            lean_renderers(self.figure.renderers[before:])
            if self._hover is not None:
                self._hover.renderers = [*self._hover.renderers, hovered]
        src = self.sources[i]
        if len(src.data[self.cols[0]]):
            src.data = nothing(self.cols)

    def stream(self, slot: Slot, **cols) -> None:
        """Append points to slot ``slot``'s curve (only the new points travel)."""
        self.sources[slot.index].stream({k: np.asarray(v, dtype=float) for k, v in cols.items()},
                                        rollover=self.rollover)

    def set(self, slot: Slot, frame) -> None:
        """Replace slot ``slot``'s curve with ``frame`` (a DataFrame or dict with ``cols``)."""
        self.sources[slot.index].data = {c: np.asarray(frame[c], dtype=float) for c in self.cols}

    def column(self, slot: Slot, col: str) -> np.ndarray:
        return np.asarray(self.sources[slot.index].data[col], dtype=float)

    def values(self, col: str) -> np.ndarray:
        """Column ``col`` of every slot's curve, joined (for fitting an axis)."""
        parts = [np.asarray(s.data[col], dtype=float) for s in self.sources if len(s.data[col])]
        return np.concatenate(parts) if parts else np.zeros(0)
