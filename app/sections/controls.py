"""The top of the page: Start, Pause, Step, Stop and Reset, the comparison presets, the
status table and the alerts (a follower's page: its banner, the status and the alerts)."""
from __future__ import annotations

import html
from typing import Callable, Dict, Optional

import panel as pn
import param

from ..lessons import CSS, PRESETS, TOGGLE_CSS
from ..server.offline import ICONS
from ..server.session import locked
from ..status import alerts, status_html
from . import Section

BUTTONS = (  # name, style, icon, width
    ("Start", "success", "play", 120), ("Pause", "warning", "pause", 130),
    ("Step", "primary", "step", 110), ("Stop", "danger", "stop", 110),
    ("Reset", "default", "reset", 110))


class Controls(Section):
    """``actions``: ``start``, ``pause`` (Pause/Resume), ``step``, ``stop``, ``reset`` and
    ``preset`` (with a preset's pair), each run with the page's document locked."""

    def __init__(self, actions: Dict[str, Callable], counts: Callable[[], dict],
                 follow_banner: Optional[str] = None, share_link: Optional[str] = None,
                 **params):
        super().__init__(**params)
        self.counts = counts
        self.buttons = {}
        for name, style, icon, width in BUTTONS:
            b = pn.widgets.Button(name=name, button_type=style, icon=ICONS[icon], width=width,
                                  height=44, css_classes=[f"btn-{name.lower()}"])
            b.on_click(lambda e, fn=actions[name.lower()]: locked(fn))
            self.buttons[name.lower()] = b
        self.b_start, self.b_pause = self.buttons["start"], self.buttons["pause"]
        self.preset_buttons = []
        for label, cls, pair in PRESETS:
            b = pn.widgets.Button(name=label, button_type="primary", button_style="outline",
                                  css_classes=["btn-preset", cls], height=40,
                                  width=max(180, 9 * len(label) + 30), sizing_mode="fixed")
            b.on_click(lambda e, pair=pair: locked(lambda: actions["preset"](pair)))
            self.preset_buttons.append(b)
        self.following = follow_banner is not None
        self.w_keep = pn.widgets.RadioButtonGroup(
            name="A comparison", options={"replaces the runs": False, "joins them": True},
            value=False, button_type="primary", button_style="outline", width=300,
            css_classes=["w-keep"], stylesheets=[TOGGLE_CSS], margin=(14, 10))
        self.status = pn.pane.HTML(status_html([], counts(), self.following), css_classes=["bnlstm-status"],
                                   sizing_mode="stretch_width", stylesheets=[CSS])
        alert = lambda kind, css: pn.pane.Alert("", alert_type=kind, visible=False,  # noqa: E731
                                                css_classes=[css], sizing_mode="stretch_width")
        self.url_alert = alert("warning", "url-alert")
        self.task_alert = alert("warning", "task-alert")
        self.data_alert = alert("warning", "data-alert")
        self.fail_alert = alert("danger", "fail-alert")
        self.follow_banner = None
        if follow_banner is not None:
            self.follow_banner = pn.pane.Alert(follow_banner, alert_type="info",
                                               css_classes=["follow-banner"],
                                               sizing_mode="stretch_width")
        self.share_note = None
        if share_link is not None:
            self.share_note = pn.pane.HTML(
                "<div class='share'>A class can watch this page's runs live, read-only, "
                f"without training anything: <a class='follow-link' href='{share_link}' "
                "target='_blank'>follow link</a> (copy it from the new tab's address bar).</div>",
                stylesheets=[CSS], css_classes=["share-note"], sizing_mode="stretch_width")
        self._last_status = ""
        self.buttons["pause"].disabled = self.buttons["stop"].disabled = True

    def heading(self):
        return pn.pane.HTML("", visible=False)

    def body(self) -> list:
        if self.follow_banner is not None:     # a follower: nothing here changes the runs
            return [self.follow_banner, self.data_alert, self.fail_alert, self.status]
        controls = pn.Row(*self.buttons.values(), sizing_mode="stretch_width")
        presets = pn.FlexBox(pn.pane.HTML("<b style='font-size:16px'>Compare:</b>",
                                          margin=(18, 5, 0, 10)),
                             *self.preset_buttons, self.w_keep, sizing_mode="stretch_width")
        return [self.url_alert, self.task_alert, self.data_alert, self.fail_alert, controls,
                presets, self.status] + ([self.share_note] if self.share_note else [])

    def show_paused(self, paused: bool) -> None:
        """The Pause button offers Resume (and a play icon) while runs are paused."""
        self.b_pause.name, self.b_pause.icon = (("Resume", ICONS["play"]) if paused
                                                else ("Pause", ICONS["pause"]))

    @property
    def paused(self) -> bool:
        return self.b_pause.name != "Pause"

    def say(self, alert, text: str) -> None:
        """Show ``text`` (plain text) in ``alert``, or hide it when empty."""
        alert.object = html.escape(text) if text else ""
        alert.visible = bool(text)

    def update_status(self) -> None:
        """The status table and the data and failure alerts, from the state's runs."""
        runs = self.state.runs
        live = any(r.live for r in runs)
        for name in ("pause", "stop"):           # nothing to pause or stop: greyed out
            if self.buttons[name].disabled == live:
                self.buttons[name].disabled = not live
        text = status_html(runs, self.counts(), self.following)
        if text != self._last_status:
            self._last_status = text
            self.status.object = text
        data_msg, fail_msg = alerts(runs)       # the data in use, and failures
        if data_msg:
            if self.data_alert.object != data_msg:
                self.data_alert.object = data_msg
            self.data_alert.visible = True
        if fail_msg:
            if self.fail_alert.object != fail_msg:
                self.fail_alert.object = fail_msg
            self.fail_alert.visible = True
        elif self.fail_alert.visible:
            self.fail_alert.visible = False

    @param.depends("state.runs", watch=True)
    def _follow_runs(self) -> None:
        if not self.state.runs:
            self.fail_alert.visible = self.data_alert.visible = False
