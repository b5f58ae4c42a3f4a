"""Following: a page that shows another page's runs live, read-only (``?follow=TOKEN``),
of this web process (``leader``) or of another on the same cluster (``remote``, through the
engine), and publishing this page's runs for such followers. A mixin of
:class:`~bnlstm_app.dashboard.Dashboard`."""
from __future__ import annotations

import functools
from typing import Dict

from .runs import DashboardRun


class Following:
    def _follow_text(self) -> str:
        remote = self.remote
        if remote is not None and remote.found is None:
            return "<b>Looking for the page you follow...</b>"
        if self.leader is None and (remote is None or not remote.found):
            return ("<b>This follow link is not open on this server</b> (the page it belongs "
                    "to has closed, or the link is mistyped). Ask for the link again, or open "
                    "the dashboard without <code>?follow=</code> to train runs of your own.")
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
            slot_of = lead.state.slot_of
            return {r.id: (slot_of[r.id].index if r.id in slot_of else None,
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
        banner = self.controls.follow_banner
        text = self._follow_text()
        if banner.object != text:
            banner.object = text
        if self._leader_closed():
            return
        theirs = self._leader_runs()
        st = self.state
        changed = False
        for run in [r for r in self.runs if r.id not in theirs]:
            slot = st.remove(run)
            if slot is not None:
                self._assign(slot, None)
            changed = True
        for rid, (index, mirror_of) in theirs.items():
            if rid in st.slot_of:
                continue
            slot = st.slots[index] if isinstance(index, int) and 0 <= index < len(st.slots) \
                else None
            if slot is None or slot.run is not None:
                continue
            self._assign(slot, mirror_of())
            changed = True
        if changed:
            st.runs = sorted(st.runs, key=lambda r: r.id)
            self._update_status(force=True)

    def _publish(self) -> None:
        """Tell other web processes on this cluster what this page's runs are (their follow
        links find it through the engine); only when that changed."""
        if self.follow_token is not None or not getattr(self.engine, "shared", False):
            return
        slot_of = self.state.slot_of
        shown = [r for r in self.runs if r.handle is not None and r.id in slot_of]
        key = [(r.handle.id, slot_of[r.id].index) for r in shown]   # runs, slots
        if key == self._published:                 # every drain: no config serialized
            return
        self._published = key
        self.engine.publish(self.share_token, [
            {"id": r.handle.id, "run": r.id, "config": r.config.to_dict(),
             "slot": slot_of[r.id].index, "color": r.color, "label": r.label,
             "mode": r.mode} for r in shown])
