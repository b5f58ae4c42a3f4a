"""What keeps the page whole without the internet: no web font, no icon font from a CDN.

Panel's Fast design asks fonts.googleapis.com for Open Sans, and a Button's named icon is a
Bokeh ``TablerIcon``, whose web font comes from cdn.jsdelivr.net: a classroom without
internet got three failed requests and blank icons. Here the design keeps everything but
that font (the page uses the system's sans-serif), and the buttons' icons are small inline
SVGs drawn here (24 x 24, stroked with the button's text colour).
"""
from __future__ import annotations

from panel.theme.fast import Fast

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"


class OfflineFast(Fast):
    """Panel's Fast design without its web font. Panel finds a design's files (its bundled
    scripts) by the class's name and module, so this one takes Fast's: only its resource
    list differs."""

    _resources = {k: v for k, v in Fast._resources.items() if k != "font"}


OfflineFast.__name__ = OfflineFast.__qualname__ = "Fast"
OfflineFast.__module__ = Fast.__module__


def _svg(body: str) -> str:
    return ("<svg xmlns='http://www.w3.org/2000/svg' width='24' height='24' viewBox='0 0 24 24' "
            "fill='none' stroke='currentColor' stroke-width='2' stroke-linecap='round' "
            f"stroke-linejoin='round'>{body}</svg>")


ICONS = {
    "play": _svg("<path d='M7 4v16l13-8z' fill='currentColor'/>"),
    "pause": _svg("<rect x='6' y='5' width='4' height='14' rx='1' fill='currentColor'/>"
                  "<rect x='14' y='5' width='4' height='14' rx='1' fill='currentColor'/>"),
    "step": _svg("<path d='M4 5v14l11-7z' fill='currentColor'/><path d='M19 5v14'/>"),
    "stop": _svg("<rect x='5' y='5' width='14' height='14' rx='2' fill='currentColor'/>"),
    "reset": _svg("<path d='M20 11a8 8 0 1 0-2.3 5.7'/><path d='M20 4v7h-7'/>"),
}
