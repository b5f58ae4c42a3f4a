"""The page's sections: one :class:`Section` (a ``pn.viewable.Viewer``) each, which owns its
figures and widgets and draws from the page's :class:`~bnlstm_app.state.SessionState`.

The dashboard calls, on the server's event loop:

- ``show(slot)`` when a slot gets a new run (or loses its run): clear its layers;
- ``update(slot, digest, probe_due)`` with what one drain brought for a slot's run
  (:class:`~bnlstm_app.feed.Digest`); ``probe_due``: the probe views may redraw now;
- ``after_drain()`` once per drain that drew something.

A section reacts to the state's ``runs``, ``focus`` and ``smoothing`` and to its own
widgets with ``param.depends``/``pn.bind``. Adding a plot is one edit in one section
(its figure, and what ``update`` feeds it); a new section is one file and one line in
the dashboard's list.
"""
from __future__ import annotations

import html

import panel as pn
import param

from ..lessons import CSS
from ..state import SessionState, Slot


class Section(pn.viewable.Viewer):
    """A titled part of the page: a heading, the sentence saying what to look at, a body."""

    state = param.ClassSelector(class_=SessionState, doc="the page's data store")

    title = ""            # the heading
    point_at = ""         # the "look at this" sentence (HTML), naming what the plots show
    css = ""              # a class for the section's column (the tests find it by it)

    def show(self, slot: Slot) -> None:
        """``slot`` has a new run, or none: clear what it drew."""

    def update(self, slot: Slot, digest, probe_due: bool) -> None:
        """Draw what one drain brought for ``slot``'s run."""

    def after_drain(self) -> None:
        """Once per drain that drew something, after every ``update``."""

    def body(self) -> list:
        """The section's panes and widgets, under its heading."""
        return []

    def heading(self) -> pn.pane.HTML:
        return pn.pane.HTML(f"<div style='font-size:22px;font-weight:700'>{self.title}</div>"
                            f"<div style='font-size:16px;color:#444'>{self.point_at}</div>",
                            sizing_mode="stretch_width", margin=(10, 10, 0, 10))

    def __panel__(self):
        if not hasattr(self, "_column"):
            self._column = pn.Column(self.heading(), *self.body(), sizing_mode="stretch_width",
                                     css_classes=[self.css] if self.css else [])
        return self._column


def run_options(runs) -> dict:
    """A run picker's options: ``#id label`` -> id, oldest first."""
    return {f"#{r.id} {r.label}": r.id for r in runs}


def legend_html(runs) -> str:
    """Each run's colour and name, above the per-run plots."""
    if not runs:
        return ""
    items = "".join(
        f"<span class='legend-item' data-run='{r.id}'><span class='swatch' "
        f"style='background:{r.color}'></span>{html.escape(r.label)}</span>" for r in runs)
    return f"<div class='legend'>{items}</div>"


class Legend(param.Parameterized):
    """A legend pane that follows the state's runs."""

    state = param.ClassSelector(class_=SessionState)

    def __init__(self, **params):
        super().__init__(**params)
        self.pane = pn.pane.HTML("", visible=False, stylesheets=[CSS], sizing_mode="stretch_width",
                                 css_classes=["plot-legend"], margin=(4, 10))

    @param.depends("state.runs", watch=True)
    def _follow_runs(self) -> None:
        text = legend_html(self.state.runs)
        self.pane.object, self.pane.visible = text, bool(text)
