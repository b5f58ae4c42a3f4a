"""Panel and HoloViews in a notebook, with every resource from the kernel's packages.

    from bnlstm_app.notebook import extension
    extension()          # instead of pn.extension() and hv.extension("bokeh")

``pn.extension(inline=True)`` and ``hv.extension("bokeh", inline=True)`` embed BokehJS and
Panel's JavaScript, so outputs draw offline (with the CDN defaults every output stays
empty without internet). Panel 1.9 inlines the stylesheets of a cell's first render only:
the models a live dashboard adds or restyles later would still name the CDN. In a Jupyter
server with Panel's server extension (JupyterLab, classic Notebook: it is enabled when
Panel is installed), Panel can point them at the server's own copy instead; this asks it
to, by rendering with Panel's ``"server"`` resources (``/panel-preview/static/...``).
Elsewhere (VS Code without a Jupyter server of this environment) those few stylesheets
fail to load, as the CDN's would offline, and everything still draws.
"""
from __future__ import annotations

import functools
import os

_PATCHED = False


def extension(*args, **kwargs) -> None:
    """``pn.extension(*args, inline=True, **kwargs)`` and ``hv.extension("bokeh", inline=True)``,
    with later stylesheets from the Jupyter server (see the module docstring)."""
    import holoviews as hv
    import panel as pn
    # "filedropper": the dashboard's text drop (FilePond), whose script the page must hold
    pn.extension("filedropper", *args, inline=True, **kwargs)
    hv.extension("bokeh", inline=True)
    _serve_stylesheets_locally()


def _serve_stylesheets_locally() -> None:
    global _PATCHED
    if _PATCHED or os.environ.get("BNLSTM_NOTEBOOK_CDN") == "1":
        return
    import holoviews.plotting.renderer as hv_renderer
    import panel.io.notebook as notebook
    import panel.viewable as viewable
    render = notebook.render_model           # every cell's Panel or HoloViews output comes here

    @functools.wraps(render)
    def render_model(model, comm=None, resources="cdn"):
        return render(model, comm, "server")
    for module in (notebook, viewable, hv_renderer):     # each holds its own reference
        if getattr(module, "render_model", None) is render:
            module.render_model = render_model
    _PATCHED = True
