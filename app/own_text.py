"""Your own text on the page: a file given to the text task, held by this session only.

The browser sends the file's bytes and its name (never a path); they are checked here
(:func:`bnlstm.tasks.text.checks.decode_own_text`: at most 4 MB, UTF-8, 2000 characters or
more) and kept in this object, in this session's memory. A run started while it is set
gets the text as its data option (``text=``): it travels to the run's worker with the run
and is written nowhere, so no other session can read it; closing the page forgets it.
"""
from __future__ import annotations

import html
import re
from typing import Any, Callable, Dict, Optional

import panel as pn

from bnlstm.tasks.text.checks import MAX_OWN_TEXT_BYTES, TextDataError, decode_own_text

__all__ = ["OwnText", "clean_name"]


def clean_name(name: Optional[str]) -> str:
    """The file's name as the page shows it: the last part only (no folders, whatever the
    browser sent), printable, at most 60 characters."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "your text"
    return base if len(base) <= 60 else base[:57] + "..."


class OwnText:
    """The file drop of the text task: ``panel`` (shown for the text task only), the text
    once given (:meth:`data_options`), and what the page says about it."""

    def __init__(self, on_change: Callable[[], None] = lambda: None):
        self.on_change = on_change
        self.name: Optional[str] = None
        self.text: Optional[str] = None
        self.w_file = pn.widgets.FileInput(
            accept=".txt,.md,.text,.csv,.py,.tex,.html,text/plain", multiple=False,
            css_classes=["w-own-text"], sizing_mode="stretch_width")
        self.w_forget = pn.widgets.Button(name="Forget my text", button_type="light",
                                          visible=False, css_classes=["w-forget-text"])
        self.note = pn.pane.HTML("", css_classes=["own-text-note"],
                                 styles={"font-size": "14px"}, sizing_mode="stretch_width")
        self._say(self._idle_note())
        self.w_file.param.watch(self._on_file, "value")
        self.w_forget.on_click(lambda e: self.forget())
        self.panel = pn.Column(
            pn.pane.HTML("<b>Your own text</b> (optional)", margin=(5, 10, 0, 10)),
            self.w_file, self.note, self.w_forget, sizing_mode="stretch_width",
            css_classes=["own-text"])

    def _say(self, inner_html: str) -> None:
        self.note.object = f"<div class='own-note'>{inner_html}</div>"

    @staticmethod
    def _idle_note() -> str:
        return (f"A UTF-8 text file of up to {MAX_OWN_TEXT_BYTES // 1_000_000} MB: the next "
                "Start trains on it (split 90/5/5 in order). It stays in this page only.")

    def _on_file(self, event) -> None:
        raw = event.new
        if not raw:
            return
        name = clean_name(self.w_file.filename)
        try:
            text = decode_own_text(bytes(raw), name)
        except TextDataError as exc:         # the text given before (if any) stays
            kept = (f" The next Start still trains on <b>{html.escape(self.name)}</b>."
                    if self.active else "")
            self._say("<span style='color:#a00'>" + html.escape(str(exc)) + "</span>" + kept)
            self._clear_widget()
            return
        self.name, self.text = name, text
        self._say(f"<b>{html.escape(name)}</b>: {len(text):,} characters. The next Start "
                  "trains on it (held in this page only; gone when it closes).")
        self.w_forget.visible = True
        self._clear_widget()             # the bytes are kept once, here, not in the widget too
        self.on_change()

    def _clear_widget(self) -> None:
        try:
            self.w_file.param.update(value=None)
        except Exception:                # pragma: no cover - an older Panel refuses None
            pass

    def forget(self) -> None:
        self.name = self.text = None
        self._say(self._idle_note())
        self.w_forget.visible = False
        self.on_change()

    @property
    def active(self) -> bool:
        return self.text is not None

    def data_options(self) -> Dict[str, Any]:
        """What a new text run gets: ``{"text", "text_name"}``, or nothing."""
        return {"text": self.text, "text_name": self.name} if self.text is not None else {}
