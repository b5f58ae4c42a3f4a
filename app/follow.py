"""Following: a page that shows another page's runs live, read-only (``?follow=TOKEN``),
of this web process (``leader``) or of another on the same cluster (``remote``, through the
engine), and publishing this page's runs for such followers. A mixin of
:class:`~bnlstm_app.dashboard.Dashboard`."""
from __future__ import annotations

import functools
from typing import Dict

from . import views
from .runs import DashboardRun


class Following:
    def _follow_text(self) -> str:
        remote = self.remote
        if remote is not None and remote.found is None:
            return "<b>Looking for the page you follow...</b>"
        if self.leader is None and (remote is None or not remote.found):
            return ("<b>This follow link is not open on this server</b> (the page it belongs "
                    "to has closed, or the link is mistyped). Ask for the link again.")
        if self._leader_closed():
            return ("<b>The page you follow has closed.</b> Its runs are shown as they ended.")
        return ("<b>Following another page's runs, live and read-only.</b> What it starts, "
                "pauses or stops shows here; nothing on this page changes its runs.")

    def _leader_closed(self) -> bool:
        if self.leader is not None:
            return self.leader._destroyed
        return self.remote is not None and self.remote.closed

    def _leader_runs(self) -> Dict[str, tuple]:
        """The followed page's runs: id -> (its slot, a function that makes this page's
        read-only mirror of it), from this process's page or another's."""
        lead, remote = self.leader, self.remote
        if lead is not None:
            return {r.id: (lead.streams[r.id].index if r.id in lead.streams else None,
                           functools.partial(DashboardRun.follow, r))
                    for r in lead.runs if r.handle is not None}
        if remote is not None:
            return {int(m.get("run") or 0): (m.get("slot"), functools.partial(
                        DashboardRun.follow_remote, m, remote.handles[m["id"]], self.engine))
                    for m in list(remote.runs) if m["id"] in remote.handles}
        return {}

    def _follow_leader(self) -> None:
        """Mirror the leader's runs: new ones get a slot of the same colour, removed ones
        leave; each mirror reads its run's records from the first."""
        if self.leader is None and self.remote is None:
            return
        text = self._follow_text()
        if self.follow_banner.object != text:
            self.follow_banner.object = text
        if self._leader_closed():
            return
        theirs = self._leader_runs()
        changed = False
        for run in [r for r in self.runs if r.id not in theirs]:
            self.streams.pop(run.id).assign(None)
            self.runs.remove(run)
            run.dispose()
            changed = True
        for rid, (index, mirror_of) in theirs.items():
            if rid in self.streams:
                continue
            slot = self.slots[index] if isinstance(index, int) and 0 <= index < len(self.slots) \
                else None
            if slot is None or slot.run is not None:
                continue
            mirror = mirror_of()
            self._assign(slot, mirror)
            self.runs.append(mirror)
            self.streams[rid] = slot
            views.set_val_metric(self.val_figure, mirror.metric)
            changed = True
        if changed:
            self.runs.sort(key=lambda r: r.id)
            self._show_text_section()
            self._refresh_run_lists()
            self._update_status(force=True)

    def _publish(self) -> None:
        """Tell other web processes on this cluster what this page's runs are (their follow
        links find it through the engine); only when that changed."""
        if self.follow_token is not None or not getattr(self.engine, "shared", False):
            return
        shown = [r for r in self.runs if r.handle is not None and r.id in self.streams]
        key = [(r.handle.id, self.streams[r.id].index) for r in shown]   # runs, slots
        if key == self._published:                 # every drain: no config serialized
            return
        self._published = key
        self.engine.publish(self.share_token, [
            {"id": r.handle.id, "run": r.id, "config": r.config.to_dict(),
             "slot": self.streams[r.id].index, "color": r.color, "label": r.label,
             "mode": r.mode} for r in shown])
