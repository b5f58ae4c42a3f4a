"""Your own text on the page: a file given to the text task, held by this session only.

The browser checks the file's size before it reads it (:class:`TextFileInput`: a file
over the limit never leaves the browser, so a large one cannot close the page's
connection), then sends the bytes and the name (never a path); they are checked here
(:func:`bnlstm.tasks.text.checks.decode_own_text`: at most 4 MB, UTF-8, 2000 characters or
more) and kept in this object, in this session's memory. A run started while it is set
gets the text as its data option (``text=``): it travels to the run's worker with the run
and is written nowhere, so no other session can read it; closing the page forgets it.
"""
from __future__ import annotations

import base64
import binascii
import html
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import panel as pn
import param
from panel.custom import JSComponent

from bnlstm.tasks.text.checks import (MAX_OWN_TEXT_BYTES, TextDataError, decode_own_text,
                                      too_large)

__all__ = ["OwnText", "TextFileInput", "clean_name"]


class TextFileInput(JSComponent):
    """A file chooser that reads a file only when it is at most ``max_bytes``: Bokeh's
    ``FileInput`` sends any file whole in one websocket message, and one over Bokeh's
    20 MB message limit closes the page's connection. Here the browser sends
    ``{"kind": "file", "name", "data": base64}`` or, for a file over the limit,
    ``{"kind": "too_big", "name", "size"}``; :attr:`on_file` gets ``(name, bytes or
    None, size)``. The bytes are not kept in the widget."""

    accept = param.String(default="", doc="the file types the chooser offers")
    max_bytes = param.Integer(default=MAX_OWN_TEXT_BYTES, bounds=(1, None),
                              doc="the largest file the browser reads and sends")

    _esm = """
    export function render({ model, el }) {
      const input = document.createElement("input");
      input.type = "file";
      input.accept = model.accept;
      input.style.width = "100%";
      input.addEventListener("change", () => {
        const f = input.files[0];
        if (!f) { return; }
        if (f.size > model.max_bytes) {
          model.send_msg({kind: "too_big", name: f.name, size: f.size});
          input.value = "";
          return;
        }
        const reader = new FileReader();
        reader.onload = () => {
          const url = String(reader.result);
          model.send_msg({kind: "file", name: f.name, data: url.slice(url.indexOf(",") + 1)});
          input.value = "";
        };
        reader.readAsDataURL(f);
      });
      el.appendChild(input);
    }
    """

    def __init__(self, on_file: Callable[[str, Optional[bytes], int], None], **params):
        super().__init__(**params)
        self.on_file = on_file

    def _handle_msg(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        name = str(msg.get("name") or "")
        if msg.get("kind") == "too_big":
            try:
                size = int(msg.get("size") or 0)
            except (TypeError, ValueError):
                size = 0
            self.on_file(name, None, size)
        elif msg.get("kind") == "file":
            data = str(msg.get("data") or "")
            if len(data) > (self.max_bytes * 4) // 3 + 8:     # a page that skipped the check
                self.on_file(name, None, (len(data) * 3) // 4)
                return
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            self.on_file(name, raw, len(raw))


def clean_name(name: Optional[str]) -> str:
    """The file's name as the page shows it: the last part only (no folders, whatever the
    browser sent), printable, at most 60 characters."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "your text"
    return base if len(base) <= 60 else base[:57] + "..."


class OwnText:
    """The text task's data on the page: which of this server's texts (``w_source``), or a
    file of one's own (the drop); ``panel`` (shown for the text task only), what a new run
    gets (:meth:`data_options`), and what the page says about it."""

    def __init__(self, on_change: Callable[[], None] = lambda: None,
                 choices: Optional[List[Tuple[str, str]]] = None, choice_note: str = ""):
        self.on_change = on_change
        self.name: Optional[str] = None
        self.text: Optional[str] = None
        # the texts this server can train on ([(label, source)], the one that works first:
        # TextTask.text_choices); a text given below wins over the choice
        choices = choices or [("as this server finds it", "auto")]
        self.w_source = pn.widgets.Select(name="Text to train on", options=dict(choices),
                                          value=choices[0][1], css_classes=["w-text-source"],
                                          sizing_mode="stretch_width")
        self.source_note = pn.pane.HTML(
            f"<div class='own-note'>{html.escape(choice_note)}</div>", visible=bool(choice_note),
            css_classes=["text-source-note"], styles={"font-size": "14px"},
            sizing_mode="stretch_width")
        self.w_source.param.watch(lambda e: self.on_change(), "value")
        self.w_file = TextFileInput(
            on_file=self.receive, accept=".txt,.md,.text,.csv,.py,.tex,.html,text/plain",
            css_classes=["w-own-text"], sizing_mode="stretch_width", height=34)
        self.w_forget = pn.widgets.Button(name="Forget my text", button_type="light",
                                          visible=False, css_classes=["w-forget-text"])
        self.note = pn.pane.HTML("", css_classes=["own-text-note"],
                                 styles={"font-size": "14px"}, sizing_mode="stretch_width")
        self._say(self._idle_note())
        self.w_forget.on_click(lambda e: self.forget())
        self.panel = pn.Column(
            self.w_source, self.source_note,
            pn.pane.HTML("<b>Your own text</b> (optional: used instead)",
                         margin=(5, 10, 0, 10)),
            self.w_file, self.note, self.w_forget, sizing_mode="stretch_width",
            css_classes=["own-text"])

    def _say(self, inner_html: str) -> None:
        self.note.object = f"<div class='own-note'>{inner_html}</div>"

    @staticmethod
    def _idle_note() -> str:
        return (f"A UTF-8 text file of up to {MAX_OWN_TEXT_BYTES // 1_000_000} MB: the next "
                "Start trains on it (split 90/5/5 in order). It stays in this page only.")

    def receive(self, filename: str, raw: Optional[bytes], size: int = 0) -> None:
        """A file from the browser: its name as the browser gave it, its bytes (None when
        the browser found it over the limit and did not send it) and its size."""
        name = clean_name(filename)
        try:
            if raw is None:
                raise too_large(name, size)
            text = decode_own_text(bytes(raw), name)
        except TextDataError as exc:         # the text given before (if any) stays
            kept = (f" The next Start still trains on <b>{html.escape(self.name)}</b>."
                    if self.active else "")
            self._say("<span style='color:#a00'>" + html.escape(str(exc)) + "</span>" + kept)
            return
        self.name, self.text = name, text
        self._say(f"<b>{html.escape(name)}</b>: {len(text):,} characters. The next Start "
                  "trains on it (held in this page only; gone when it closes).")
        self.w_forget.visible = True
        self.on_change()

    def forget(self) -> None:
        self.name = self.text = None
        self._say(self._idle_note())
        self.w_forget.visible = False
        self.on_change()

    @property
    def active(self) -> bool:
        return self.text is not None

    def data_options(self) -> Dict[str, Any]:
        """What a new text run gets: ``{"text", "text_name"}`` (a text given), else the
        chosen ``source`` (nothing for ``auto``)."""
        if self.text is not None:
            return {"text": self.text, "text_name": self.name}
        source = self.w_source.value
        return {"source": source} if source and source != "auto" else {}
