"""Panel and HoloViews in a notebook, with every resource from the kernel's packages.

    from bnlstm_app.notebook import extension
    extension()          # instead of pn.extension() and hv.extension("bokeh")

``pn.extension(inline=True)`` and ``hv.extension("bokeh", inline=True)`` embed BokehJS and
Panel's JavaScript, so outputs draw offline (with the CDN defaults every output stays
empty without internet). Panel's stylesheets are another matter: every Panel model names
its own (``loading.css``, the widgets', the design's) as ``ImportedStyleSheet(url=...)``
on the CDN, in every front-end, for the first render and for every model a live dashboard
adds later. So this also makes Panel give each stylesheet of its own package as the file
itself, a ``data:`` URL (read once, from the kernel's ``panel/dist``; its ``../assets/``
images inlined too). That holds where no Jupyter server serves
Panel's files: JupyterLab and Jupyter Notebook, and VS Code, where Panel draws each output
as a jupyter_bokeh widget. ``BNLSTM_NOTEBOOK_CDN=1`` leaves Panel as it is.
"""
from __future__ import annotations

import base64
import functools
import mimetypes
import os
import re
from pathlib import Path
from typing import Optional

_PATCHED = False


def extension(*args, **kwargs) -> None:
    """``pn.extension(*args, inline=True, **kwargs)`` and ``hv.extension("bokeh", inline=True)``,
    with Panel's stylesheets inline (see the module docstring)."""
    import holoviews as hv
    import panel as pn
    # "filedropper": the dashboard's text drop (FilePond), whose script the page must hold
    pn.extension("filedropper", *args, inline=True, **kwargs)
    hv.extension("bokeh", inline=True)
    _inline_panel_stylesheets()


def _inline_panel_stylesheets() -> None:
    """Panel's stylesheets inline (see the module docstring): the name ``ImportedStyleSheet``
    in the Panel modules that build them is swapped for :class:`_PanelStyleSheet`."""
    global _PATCHED
    if _PATCHED or os.environ.get("BNLSTM_NOTEBOOK_CDN") == "1":
        return
    import bokeh.models as bm
    import panel.pane.base
    import panel.reactive
    import panel.theme.base
    import panel.widgets.base
    for module in (panel.reactive, panel.theme.base, panel.pane.base, panel.widgets.base):
        if getattr(module, "ImportedStyleSheet", None) is bm.ImportedStyleSheet:
            module.ImportedStyleSheet = _PanelStyleSheet
    _PATCHED = True


@functools.lru_cache(maxsize=None)
def _local_css(url: str) -> Optional[Path]:
    """The file in the kernel's Panel package that a stylesheet URL names, or None."""
    from panel.io import resources
    path = url.split("?", 1)[0]
    for prefix in (resources.CDN_DIST, "/panel-preview/static/extensions/panel/",
                   resources.LOCAL_DIST):
        at = path.find(prefix)
        if at >= 0 and (at == 0 or prefix == resources.LOCAL_DIST):
            rel = path[at + len(prefix):]
            full = (Path(resources.DIST_DIR) / rel).resolve()
            if full.suffix == ".css" and full.is_file() and \
                    Path(resources.DIST_DIR).resolve() in full.parents:
                return full
    return None


@functools.lru_cache(maxsize=None)
def _css_data_url(path: Path) -> str:
    """A stylesheet as a ``data:`` URL, its ``url('../assets/x.svg')`` images inlined too."""
    text = path.read_text(encoding="utf-8")

    def inline(m: "re.Match[str]") -> str:
        img = (path.parent / m.group(2)).resolve()
        if not img.is_file():
            return m.group(0)
        kind = mimetypes.guess_type(img.name)[0] or "application/octet-stream"
        return f"url('data:{kind};base64,{base64.b64encode(img.read_bytes()).decode()}')"
    text = re.sub(r"""url\((['"]?)(\.\./[^)'"]+)\1\)""", inline, text)
    return "data:text/css;base64," + base64.b64encode(text.encode("utf-8")).decode()


class _StyleSheetMeta(type):
    def __instancecheck__(cls, obj) -> bool:       # Panel's isinstance checks still hold
        import bokeh.models as bm
        return isinstance(obj, bm.ImportedStyleSheet)


class _PanelStyleSheet(metaclass=_StyleSheetMeta):
    """``ImportedStyleSheet(url=...)`` as Panel calls it, with the URL of a stylesheet of the
    kernel's Panel replaced by the file itself as a ``data:`` URL (any other, as asked)."""

    def __new__(cls, url: str = "", **kwargs):
        import bokeh.models as bm
        local = _local_css(url) if isinstance(url, str) else None
        return bm.ImportedStyleSheet(url=_css_data_url(local) if local else url, **kwargs)
