"""The text task's views: what the model writes, and what it finds hard, as HTML.

A text run's probe record carries ``text`` (see ``bnlstm.tasks.text``): a sample the
model generated at the run's temperature, and for a fixed excerpt of the validation
text each character's loss in bits and 16 hidden units' activations. This module turns
that into HTML (functions without Panel, unit-tested) and holds the section's panes
(:class:`TextSection`).
"""
from __future__ import annotations

import html
import math
from typing import Any, Dict, Optional

import numpy as np
import panel as pn

from .lessons import TOGGLE_CSS

MAX_BITS = 6.0            # the loss colour saturates here (log2 of a 64-character vocabulary)
CSS = """
.txt { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 17px;
       line-height: 1.7; white-space: pre-wrap; word-break: break-all; }
.txt span { border-radius: 2px; }
.sample { background: #f7f7f2; border: 1px solid #ddd; padding: 10px 12px; }
.key { font-size: 14px; color: #444; margin: 4px 0; }
.key .bar { display: inline-block; width: 220px; height: 12px; vertical-align: middle;
            border: 1px solid #bbb; margin: 0 6px; }
"""


def _esc(ch: str) -> str:
    if ch == "\n":
        return "&#x21B5;\n"                  # a visible return mark, then the line break
    return html.escape(ch)


def _loss_color(bits: float) -> str:
    """White (0 bits: certain) to dark red (MAX_BITS or more: a surprise)."""
    if not math.isfinite(bits):
        return "transparent"
    a = min(max(bits / MAX_BITS, 0.0), 1.0)
    return f"rgba(214, 39, 40, {a:.2f})"


def _unit_color(v: float) -> str:
    """Blue (-1) through white (0) to red (+1), as LSTMVis colours activations."""
    if not math.isfinite(v):
        return "transparent"
    v = min(max(v, -1.0), 1.0)
    return (f"rgba(214, 39, 40, {v:.2f})" if v >= 0 else f"rgba(31, 119, 180, {-v:.2f})")


def sample_html(probe: Optional[Dict[str, Any]]) -> str:
    """The latest generated sample, with when and at what temperature it was written."""
    text = (probe or {}).get("text")
    if not text:
        return ("<div class='key'>A text run's samples appear here at its first probe "
                "(every <i>Probe every N updates</i>).</div>")
    head = (f"<div class='key'>Written by the model at update <b>{probe['step']}</b>, "
            f"temperature {text['temperature']:g}, after the prompt "
            f"<b>{html.escape(repr(text['sample'][:4]))}</b>:</div>")
    body = "".join(_esc(c) for c in text["sample"])
    return f"{head}<div class='txt sample sample-text'>{body}</div>"


def excerpt_html(probe: Optional[Dict[str, Any]], colour_by: str = "loss", unit: int = 0) -> str:
    """The validation excerpt, each character coloured by the bits the model paid for it
    (``colour_by="loss"``) or by unit ``unit``'s activation when it read the character
    before it (``"unit"``). Hovering a character shows its number."""
    text = (probe or {}).get("text")
    if not text:
        return ""
    chars = text["chars"]
    bits = np.asarray(text["bits"], dtype=float)
    if colour_by == "unit":
        h = np.asarray(text["h"], dtype=float)
        unit = int(min(max(unit, 0), h.shape[1] - 1))
        vals, color = h[:, unit], _unit_color
        key = (f"<div class='key'>unit {unit + 1}'s activation h: <span class='bar' "
               "style='background:linear-gradient(90deg,#1f77b4,#fff,#d62728)'></span>"
               "-1 (blue) to +1 (red)</div>")
        tip = "h = {:+.2f}"
    else:
        vals, color = bits, _loss_color
        finite = bits[np.isfinite(bits)]
        mean = float(finite.mean()) if finite.size else float("nan")
        key = (f"<div class='key'>bits paid for each character: <span class='bar' "
               "style='background:linear-gradient(90deg,#fff,#d62728)'></span>"
               f"0 (white: expected) to {MAX_BITS:g}+ (red: a surprise); mean "
               f"<b class='excerpt-mean'>{mean:.2f}</b> bits per character here</div>")
        tip = "{:.2f} bits"
    spans = "".join(
        f"<span style='background:{color(v)}' title='{tip.format(v) if math.isfinite(v) else ''}'>"
        f"{_esc(c)}</span>" for c, v in zip(chars, vals))
    return f"{key}<div class='txt excerpt-text'>{spans}</div>"


class TextSection:
    """The panes of the dashboard's text section; :meth:`show` fills them from a probe."""

    def __init__(self, temperature_widget):
        self.sample = pn.pane.HTML(sample_html(None), stylesheets=[CSS], css_classes=["text-sample"],
                                   sizing_mode="stretch_width")
        self.excerpt = pn.pane.HTML("", stylesheets=[CSS], css_classes=["text-excerpt"],
                                    sizing_mode="stretch_width")
        self.w_colour = pn.widgets.RadioButtonGroup(
            name="Colour the validation text by",
            options={"loss per character": "loss", "one unit's activation": "unit"},
            value="loss", button_type="primary", button_style="outline", stylesheets=[TOGGLE_CSS],
            css_classes=["w-colour-by"])
        self.w_unit = pn.widgets.IntSlider(name="Unit", start=1, end=16, value=1, width=300,
                                           css_classes=["w-unit"], visible=False)
        self.w_colour.param.watch(self._on_colour, "value")
        self.w_unit.param.watch(lambda e: self.show(self._probe, force=True), "value_throttled")
        self.temperature = temperature_widget
        self._probe: Optional[Dict[str, Any]] = None
        self._shown = None

    def _on_colour(self, event) -> None:
        self.w_unit.visible = event.new == "unit"
        self.show(self._probe, force=True)

    def show(self, probe: Optional[Dict[str, Any]], force: bool = False) -> None:
        key = ((probe or {}).get("step"), id(probe), self.w_colour.value, self.w_unit.value)
        if key == self._shown and not force:
            return
        self._shown, self._probe = key, probe
        self.sample.object = sample_html(probe)
        self.excerpt.object = excerpt_html(probe, self.w_colour.value, self.w_unit.value - 1)

    def objects(self):
        return [self.temperature, self.sample,
                pn.Row(self.w_colour, self.w_unit, sizing_mode="stretch_width"), self.excerpt]
