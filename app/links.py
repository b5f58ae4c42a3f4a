"""A page's link: the settings in its address, checked (each problem told once, on the
page), ``?preset=NAME``, a comparison that starts once the page is there, and
``?text=SOURCE``, the text task's "Text to train on" menu (one of this server's texts, as
``TextTask.text_choices`` lists them; never a path). A mixin of
:class:`~bnlstm_app.dashboard.Dashboard` (its ``config``, ``controls.url_alert`` and
``follow_token``); the checking itself is ``url_state.py``'s (no Panel)."""
from __future__ import annotations

import html
from typing import Any, Dict
from urllib.parse import urlencode

import panel as pn

from bnlstm import TrainConfig

from .lessons import PRESET_SLUGS, preset
from .settings_panel import DASHBOARD_DEFAULTS
from .url_state import holds, url_text, validate_query


class Links:
    def _sync_url(self, loc=None) -> None:
        """Read the settings in the page's address and keep it in step with them (``loc``:
        a ``panel.io.location.Location``; the page's own by default)."""
        loc = loc if loc is not None else pn.state.location
        if loc is None or self.follow_token is not None:    # a follower takes no settings
            return
        query = dict(loc.query_params)
        slug = query.pop("preset", None)           # ?preset=gamma: open and start a comparison
        if slug not in (None, ""):
            found = preset(url_text(slug))
            if found is None:
                self._url_problems.append(f"unknown preset '{slug}' (ignored); the presets: "
                                          f"{', '.join(PRESET_SLUGS)}")
            else:
                self._pending_preset = found[1]
        # ?text=ptb-heldout: the text menu's choice
        source = url_text(query.pop("text", None)) or None
        menu = self.settings.own_text.w_source
        if source is not None:
            if source in menu.options.values():
                menu.value = source
            else:
                self._url_problems.append(
                    f"'text={source}' is not one of this server's texts (choose one of "
                    f"{', '.join(menu.options.values())}); using {menu.value!r}")
                source = None
        good, problems = validate_query(query, DASHBOARD_DEFAULTS)
        self._url_reported = set(query) - set(good)        # each told once, by validate_query
        self.apply_settings(good)
        self._url_problems.extend(problems)
        if problems or (source is None and "text" in loc.query_params):
            # drop the offending parameters before Panel syncs, so that it never sees them
            kept = {k: str(query[k]) for k in good}
            if self._pending_preset is not None:
                kept["preset"] = str(slug)
            loc.search = ("?" + urlencode(kept)) if kept else ""
        names = [k for k in TrainConfig.param if k != "name"]
        loc.sync(self.config, names, on_error=self._on_url_error)
        loc.sync(menu, {"value": "text"}, on_error=self._on_url_error)
        self._show_url_problems()            # also when nothing in the link could be used

    def apply_settings(self, settings: Dict[str, Any]) -> None:
        """Settings from a link: its task first (a task of another family brings its
        recipe, through the settings panel), then the others, which override the recipe."""
        rest = dict(settings)
        if "task" in rest:
            self.config.task = rest.pop("task")
        if rest:
            self.config.param.update(**rest)

    def _on_url_error(self, bad: Dict[str, Any]) -> None:
        bad = {k: v for k, v in bad.items() if k not in getattr(self, "_url_reported", ())
               and not holds(k, v, getattr(self.config, k, None))}
        if not bad:
            return
        msg = "Could not apply URL settings " + ", ".join(f"{k}={v!r}" for k, v in bad.items())
        self._url_problems.append(msg + "; kept the current values.")
        if hasattr(self, "controls"):
            self._show_url_problems()

    def _show_url_problems(self) -> None:
        if self._url_problems:
            items = "".join(f"<li>{html.escape(p)}</li>" for p in self._url_problems)
            self.controls.url_alert.object = (f"<b>Some settings in the link were not valid</b> and were "
                                     f"replaced by defaults:<ul>{items}</ul>")
            self.controls.url_alert.visible = True
