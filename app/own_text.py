"""Your own text on the page: a file given to the text task, held by this session only.

The browser checks the file's size before it sends it (:class:`TextFileInput`: a file
over the limit never leaves the browser, and the rest go in chunks, so a large one cannot
close the page's connection), then sends the bytes and the name (never a path); they are
checked here
(:func:`bnlstm.tasks.text.checks.decode_own_text`: at most 4 MB, UTF-8, 2000 characters or
more) and kept in this object, in this session's memory. A run started while it is set
gets the text as its data option (``text=``): it travels to the run's worker with the run
and is written nowhere, so no other session can read it; closing the page forgets it.
"""
from __future__ import annotations

import html
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import panel as pn
import param

from bnlstm.tasks.text.checks import (MAX_OWN_TEXT_BYTES, TextDataError, decode_own_text,
                                      too_large)

__all__ = ["OwnText", "TextFileInput", "clean_name"]


class TextFileInput(pn.widgets.FileDropper):
    """Panel's ``FileDropper`` held to ``max_bytes``: the browser (FilePond) refuses a larger
    file before sending it, and sends the rest in chunks of 1 MB (Bokeh's ``FileInput``
    sends a file whole in one websocket message, and one over Bokeh's 20 MB message limit
    closes the page's connection). A sender that ignores the limit is cut off here, at the
    chunk that passes it. :attr:`on_file` gets ``(name, bytes or None, size)`` for each file
    received or refused; the bytes are not kept in the widget."""

    max_bytes = param.Integer(default=MAX_OWN_TEXT_BYTES, bounds=(1, None),
                              doc="the largest file the page takes")

    _rename = {**pn.widgets.FileDropper._rename, "max_bytes": None}   # the server's, not the model's

    def __init__(self, on_file: Callable[[str, Optional[bytes], int], None], **params):
        limit = params.get("max_bytes", MAX_OWN_TEXT_BYTES)
        params.setdefault("max_file_size", f"{max(1, limit // 1000)}KB")
        params.setdefault("chunk_size", 1_000_000)
        params.setdefault("multiple", False)
        super().__init__(**params)
        self.on_file = on_file

    def _process_event(self, event) -> None:
        data = getattr(event, "data", None) or {}
        if getattr(event, "event_name", "") != "upload_event" or "chunk" not in data:
            return                                    # a file taken off the list: nothing kept
        name = str(data.get("name") or "")
        chunk = data.get("data") or b""
        if data.get("chunk") == 1:
            self._file_buffer[name] = []
        if name not in self._file_buffer:             # refused before: the rest is dropped
            return
        parts = self._file_buffer[name]
        parts.append(chunk if isinstance(chunk, bytes) else bytes(chunk))
        got = sum(map(len, parts))
        if got > self.max_bytes:                      # a sender that skipped the browser's check
            del self._file_buffer[name]
            whole = int(data.get("total_chunks") or 1) * self.chunk_size   # about its size
            self.on_file(name, None, max(got, whole))
            return
        if data.get("chunk") != data.get("total_chunks"):
            return
        raw = b"".join(self._file_buffer.pop(name))
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
            on_file=self.receive, layout="compact", css_classes=["w-own-text"],
            sizing_mode="stretch_width")
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
