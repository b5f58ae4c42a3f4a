"""Section 5: what a text model writes, and what it finds hard (shown while the chosen
task, or a run shown, has the task view ``"text"``: ``Task.views``)."""
from __future__ import annotations

import param

from bnlstm import tasks

from ..text_view import TextSection
from . import Section


def shows_text(task: str) -> bool:
    return "text" in tasks.get(task).views


class TextSamples(Section):
    title = "5. What a text model writes, and what it finds hard"
    point_at = ("Point at: the first samples are a jumble of characters; within a few hundred "
                "updates they break into word-like pieces between spaces, and the bits per "
                "character in plot 1 fall. In the coloured text below, the first letters of "
                "words are the redder ones (hard to guess) and the letters that finish a word "
                "are paler (easy). Colour by one unit instead and look for units that follow "
                "spaces or line ends.")

    def __init__(self, temperature_widget, **params):
        super().__init__(**params)
        self.panes = TextSection(temperature_widget)
        self.state.config.param.watch(lambda e: self._follow_runs(), "task")

    def body(self) -> list:
        return self.panes.objects()

    def __panel__(self):
        col = super().__panel__()
        col.visible = self.wanted()
        return col

    def wanted(self) -> bool:
        """The chosen task, or a run shown, is a text task."""
        return shows_text(self.state.config.task) or any(
            shows_text(r.config.task) for r in self.state.runs)

    @param.depends("state.runs", watch=True)
    def _follow_runs(self) -> None:
        self.__panel__().visible = self.wanted()

    @property
    def visible(self) -> bool:
        return self.__panel__().visible

    def after_drain(self) -> None:
        """The text follows the run in focus if it is a text run, else the newest text run."""
        if not self.visible:
            return
        slot = self.state.focused()
        if slot is None or slot.latest_probe is None or "text" not in slot.latest_probe:
            texts = [s for s in (self.state.slot_of.get(r.id) for r in reversed(self.state.runs))
                     if s is not None and s.latest_probe is not None and "text" in s.latest_probe]
            slot = texts[0] if texts else None
        self.panes.show(slot.latest_probe if slot is not None else None)
