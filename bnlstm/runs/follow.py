"""Following across web processes: a page published on the shared cluster's scheduler
(its runs, by token) and followed from another web process, whose handles then receive
the runs' records through their own inbox. A mixin of :class:`~bnlstm.runs.dask.DaskEngine`:
the methods run on its pump thread (the private ones) or are called by a page (the public).
"""
from __future__ import annotations

import pickle
import time
from typing import Any, Dict, List, Optional

from ..training.config import TrainConfig
from .handle import FollowedHandle, RemotePage
from .worker import UNREAD_LIMIT

FOLLOW_S = 0.25         # a followed run's new records go to the other web processes this often
FOLLOW_POLL_S = 1.0     # a follower looks up the page it follows (its runs) this often
FOLLOW_KEY = "bnlstm-follow"   # scheduler metadata [key][token]: a page other processes may follow


def _forget_page(dask_scheduler=None, token: str = "") -> None:
    """On the scheduler: drop a closed page's entry from the follow metadata."""
    pages = dask_scheduler.task_metadata.get(FOLLOW_KEY)
    if isinstance(pages, dict):
        pages.pop(token, None)




class Following:
    """Publishing and following pages; needs the engine's ``client``, ``address``,
    ``inbox``, ``_send``, ``_lock``, ``_handles``, ``_follows``, ``_published``,
    ``_unpublish_at`` and ``_subs`` (:class:`DaskEngine` has them)."""

    def publish(self, token: str, runs: Optional[List[Dict[str, Any]]]) -> None:
        """Let pages of other web processes on this cluster follow page ``token``: ``runs``
        its runs now (dicts with ``id``, the handle's, and what a follower shows, such as
        ``config`` as a dict); ``None`` once the page has closed. Never blocks."""
        if self.shared:
            self._send(("publish", token, None if runs is None else list(runs)))

    def follow(self, token: str) -> Optional[RemotePage]:
        """Page ``token`` of another web process on this cluster, kept up to date by the
        pump (``None`` without a shared cluster). Call :meth:`unfollow` when done."""
        if not self.shared:
            return None
        self.start()
        with self._lock:
            page = self._follows.get(token)
            if page is None:
                page = self._follows[token] = RemotePage(token)
                self.log(f"engine: looking for page {token[:4]} in the other web processes")
            page.users += 1
        self._wake.set()
        return page

    def unfollow(self, page: RemotePage) -> None:
        """One page fewer follows ``page``; with none left, its runs' records stop coming."""
        with self._lock:
            page.users -= 1
        self._wake.set()


    def _publish(self, token: str, runs: Optional[List[Dict[str, Any]]]) -> None:
        """The owner's side: page ``token``'s runs in the scheduler's metadata, where
        followers read them."""
        value = {"inbox": self.inbox, "runs": runs if runs is not None else
                 (self._published.get(token) or {}).get("runs", []), "closed": runs is None}
        if self._published.get(token) == value:
            return
        self._published[token] = value
        self.client.set_metadata([FOLLOW_KEY, token], value)
        if runs is None:                   # followers open now have seen it by then
            self._unpublish_at[token] = time.monotonic() + 60.0

    def _expire_published(self, now: float) -> None:
        for token, at in list(self._unpublish_at.items()):
            if now >= at:
                self._unpublish_at.pop(token)
                self._published.pop(token, None)
                try:
                    self.client.run_on_scheduler(_forget_page, token=token)
                except Exception:
                    pass

    def _take_follow_requests(self) -> None:
        """The owner's side: followers (other web processes) ask for a run's records."""
        from distributed import Queue
        for req in self._follow_requests.get(batch=True):
            run, inbox = req.get("run"), req.get("inbox")
            if req.get("op") == "unsubscribe":
                subs = self._subs.get(run)
                if subs is not None:
                    subs.pop(inbox, None)
                    if not subs:
                        self._subs.pop(run, None)
            elif req.get("op") == "subscribe" and run in self._handles and inbox:
                self._subs.setdefault(run, {})[inbox] = [Queue(inbox, client=self.client), 0]

    def _forward(self, check: bool = False, only: Optional[str] = None) -> None:
        """The owner's side: each followed run's new records to each follower's inbox (up
        to 5 batches of 2,000 a time); ``check``: drop followers that no longer read."""
        for run, subs in list(self._subs.items()):
            if only is not None and run != only:
                continue
            h = self._handles.get(run)
            if h is None:
                self._subs.pop(run, None)
                continue
            for inbox, sub in list(subs.items()):
                q, cursor = sub
                for _ in range(5):
                    recs, nxt = h.records_since(cursor, 2000)
                    if not recs:
                        break
                    q.put(pickle.dumps((run, recs), protocol=pickle.HIGHEST_PROTOCOL))
                    cursor = sub[1] = nxt
                if check:
                    try:
                        gone = q.qsize() > UNREAD_LIMIT      # a follower that went away
                    except Exception:
                        gone = False
                    if gone:
                        subs.pop(inbox, None)
            if not subs:
                self._subs.pop(run, None)

    def _poll_follows(self) -> None:
        """The follower's side: look up each followed page; subscribe to its new runs, let
        go of the ones it no longer has and of pages no one here follows any more."""
        from distributed import Queue
        for token, page in list(self._follows.items()):
            if page.users <= 0:
                with self._lock:
                    if page.users <= 0:
                        self._follows.pop(token, None)
                self._let_go(page, list(page.handles))
                continue
            value = self.client.get_metadata([FOLLOW_KEY, token], default=None)
            if not isinstance(value, dict):          # not published (yet, or any more)
                page.found = bool(page.found)          # once seen, it stays found
                if page.found:
                    page.closed = True
                continue
            page.found, page.closed = True, bool(value.get("closed"))
            if page.requests is None and value.get("inbox"):
                page.requests = Queue(value["inbox"] + "-follow", client=self.client)
            runs = [r for r in value.get("runs") or [] if isinstance(r, dict) and r.get("id")]
            if page.closed:                 # its runs stay as they ended
                continue
            ids = {r["id"] for r in runs}
            self._let_go(page, [rid for rid in page.handles if rid not in ids])
            if page.requests is None:
                continue
            for r in runs:
                if r["id"] in page.handles:
                    continue
                try:
                    config = TrainConfig.from_dict(r.get("config") or {})
                except Exception:
                    continue
                h = FollowedHandle(self, r["id"], config)
                with self._lock:
                    self._handles.setdefault(h.id, h)
                page.handles[h.id] = h
                page.requests.put({"op": "subscribe", "run": h.id, "inbox": self.inbox})
            page.runs = runs

    def _let_go(self, page: RemotePage, run_ids: List[str]) -> None:
        requests = page.requests if not page.closed else None
        for rid in run_ids:
            h = page.handles.pop(rid, None)
            if h is None:
                continue
            if requests is not None:
                try:
                    requests.put({"op": "unsubscribe", "run": rid, "inbox": self.inbox})
                except Exception:
                    pass
            with self._lock:
                if self._handles.get(rid) is h:
                    self._handles.pop(rid, None)


