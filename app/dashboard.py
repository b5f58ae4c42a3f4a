"""The dashboard: one page's state, its sections, the controls' actions, and the drain.

One :class:`Dashboard` per browser session. It holds the page's data store
(:class:`~bnlstm_app.state.SessionState`: the settings table, the runs, their slots, the
run in focus) and composes the sections (``app/sections/``: one ``Viewer`` each, owning
its figures). Runs train in the run engine (:mod:`bnlstm.runs`): on Dask worker processes
when served (the server only builds pages and streams records), or in threads of this
process in a notebook; their records collect in each run's handle, and :meth:`Dashboard.drain`
(a periodic callback on the server's event loop, every ``DRAIN_MS``) hands them to the
sections in one batch. The dashboard holds no plot code.
"""
from __future__ import annotations

import functools
import secrets
import threading
import time
import weakref
from typing import Any, Dict, List, Optional

import panel as pn
import param
from panel.io.state import set_curdoc

from bnlstm import TrainConfig, tasks
from bnlstm.runs.policy import FIFOPolicy

from .feed import digest
from .follow import Following
from .links import Links
from .lessons import CSS
from .runs import DashboardRun, get_engine
from .sections import Section
from .sections.controls import Controls
from .sections.curves import LearningCurves
from .sections.export import Export
from .sections.gradients import Gradients
from .sections.saturation import Saturation
from .sections.statistics import Statistics
from .sections.sweeps import Sweeps
from .sections.text import TextSamples
from .server import offloop
from .server.applog import log, quiet_periodic_callback
from .server.offline import FONT, OfflineFast
from .server.session import _frozen, _weak_listener, drawn, make_destroy_hook, unsent_bytes
from .settings_panel import DASHBOARD_DEFAULTS, SettingsPanel, recipe
from .state import SessionState, Slot

DRAIN_MS = 200               # the drain's period while the page has a live run
IDLE_DRAIN_MS = 1000         # ... and while it has none (only the server line can change);
                             # every call costs the server some 0.3 ms, idle or not
MAX_UNSENT_BYTES = 4 << 20   # a page that has not read this much of its updates gets no more
                             # until it catches up (its records wait in the run's handle)
STATUS_UI_S = 0.5            # the status table (step, speed) redraws at most twice a second
PROBE_UI_S = 1.0             # the whole-curve probe views redraw at most once a second per run

# share token -> the open page whose runs a class may follow (this web process; a page of
# another web process on the same cluster is found through the engine: DaskEngine.follow)
_FOLLOWABLE: "weakref.WeakValueDictionary[str, Dashboard]" = weakref.WeakValueDictionary()


class Dashboard(Links, Following, param.Parameterized):
    """One session's dashboard. ``Dashboard().servable()`` or ``.view()`` in a notebook."""

    def __init__(self, config: Optional[TrainConfig] = None, sync_url: Optional[bool] = None,
                 engine=None, follow: Optional[str] = None, **params):
        """``engine``: ``"dask"`` (runs on worker processes), ``"threads"`` (in this process),
        or an engine object; default ``$BNLSTM_ENGINE``, else ``"dask"`` on a served page and
        ``"threads"`` in a notebook. ``follow``: another page's share token (its link's
        ``?follow=``): this page shows that page's runs live, read-only, and trains nothing."""
        self._began = time.perf_counter()
        super().__init__(**params)
        served = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
        if follow is None and served and pn.state.location is not None:
            raw = pn.state.location.query_params.get("follow")
            follow = str(raw) if raw not in (None, "") else None
        self.served = served
        self.follow_token = follow
        self.leader: Optional["Dashboard"] = _FOLLOWABLE.get(follow) if follow else None
        self.share_token = secrets.token_urlsafe(9)
        weakref.finalize(self, log, "dashboard freed")     # the tests count these lines
        if follow is None:
            _FOLLOWABLE[self.share_token] = self
        if engine is None or isinstance(engine, str):
            engine = get_engine(engine, default="dask" if served else "threads")
        self.engine = engine
        # a page of another web process on this cluster (None: the leader is here, or none)
        self.remote = (engine.follow(follow) if follow is not None and self.leader is None
                       and hasattr(engine, "follow") else None)
        self._published = None     # (handle id, slot) of the runs it last told other processes
        self.run_limit = FIFOPolicy().session_runs   # runs one page may have queued or training
        self.config = config if config is not None else TrainConfig(**DASHBOARD_DEFAULTS)
        self.state = SessionState(self.config)
        self._destroyed = False
        self._status_at = 0.0
        self._url_problems: List[str] = []
        self._pending_preset = None      # a link's ?preset=: started once the page is there
        self._next_drain_at = 0.0
        self._backlogged = False
        self._callback = None
        self._doc = None                 # the session's document, once served
        self._wake_pending = False
        # the runs' handles call this on the engine's thread; weakly, so that a closed
        # page is freed even while a handle still holds its listener
        self._state_listener = _weak_listener(self._on_state_record)
        self.engine.start()        # the workers (or this process) warm up before a Start
        self.settings = SettingsPanel(self.config, smoothing=self.state.param.smoothing,
                                      notify=self._notify)
        self.controls = Controls(
            state=self.state, counts=self.engine.counts,
            actions={"start": self.start, "pause": self.toggle_pause, "step": self.step,
                     "stop": self.stop, "reset": self.reset, "preset": self.run_preset},
            follow_banner=self._follow_text() if follow is not None else None,
            share_link=f"?follow={self.share_token}" if follow is None and served else None)
        self._show_task_problem()
        if sync_url if sync_url is not None else served:
            self._sync_url()
        self._show_url_problems()
        self._build_sections()
        self._syncing = False            # the table is being set from a run: not a user's edit
        if follow is None:
            self.state.param.watch(self._show_focused_settings, "focus")
        self.config.param.watch(self._show_task_problem, "task")
        self.settings.own_text.on_change = self._show_task_problem   # a text given, or forgotten
        self.config.param.watch(self._on_live_setting, list(TrainConfig.LIVE))
        self.config.param.watch(self._on_new_run_setting,
                                [k for k in TrainConfig.param if k not in TrainConfig.LIVE
                                 and k != "name"])

    @property
    def runs(self) -> List[DashboardRun]:
        return self.state.runs

    # --------------------------------------------------------------------- layout
    def _build_sections(self) -> None:
        st = self.state
        self.curves = LearningCurves(state=st)
        self.saturation = Saturation(state=st)
        self.gradients = Gradients(state=st)
        self.statistics = Statistics(state=st)
        self.text = TextSamples(self.settings.w_temperature, state=st)
        self.export = Export(state=st)
        self.sweeps = Sweeps(state=st)
        # the sections that draw runs, in drain order (the statistics and text read the
        # probes the others stored in the slots)
        self.sections: List[Section] = [self.curves, self.saturation, self.gradients,
                                        self.statistics, self.text]
        self._lower_wait = pn.pane.HTML(
            "<div class='lower-wait'>The other sections are on their way...</div>",
            stylesheets=[CSS], sizing_mode="stretch_width", margin=(10, 10))
        self.lower = pn.Column(self._lower_wait, sizing_mode="stretch_width",
                               css_classes=["lower-sections"])
        self.main = [self.controls, self.curves, self.lower]
        # Sections 2 on are built here but join the page only once it has drawn its top
        # (``attach_lower``, on the browser's first render): the first document the browser
        # gets holds the controls and the learning curves, about a third of the page's
        # models, so a student can press Start sooner; the rest follows a moment later.
        self.lower_sections = [self.saturation, self.gradients, self.statistics, self.text,
                               self.export, self.sweeps]
        for section in [self.controls, self.curves, *self.lower_sections]:
            section.__panel__()    # laid out now, while the page is built, not when attached
        self.sidebar = [
            pn.pane.HTML("<div style='font-size:15px'>Settings marked <b>needs a new run</b> "
                         "apply when you press Start; <b>applies live</b> settings change "
                         "running runs at once.</div>"),
            self.settings.input_alert, self.settings.live_card, self.settings.new_run_card,
            self.settings.new_run_hint,
        ]
        if self.follow_token is not None:         # nothing here changes the runs followed
            self.sidebar = [pn.pane.HTML(
                "<div style='font-size:15px'>This is a <b>read-only</b> view of another "
                "page's runs: its settings and controls are on that page. Open the "
                "dashboard without <code>?follow=</code> to train runs of your own.</div>")]

    def template(self) -> pn.template.FastListTemplate:
        return pn.template.FastListTemplate(
            title="Recurrent Batch Normalization: train a BN-LSTM live",
            sidebar=self.sidebar, main=self.main, sidebar_width=380,
            accent_base_color="#1f77b4", header_background="#1f4e79",
            main_max_width="1600px", design=OfflineFast, font=FONT, font_url="")

    def view(self) -> pn.Row:
        """The dashboard without a template (for notebooks); starts the drain callback."""
        self.attach_session()
        self.attach_lower()
        return pn.Row(pn.Column(*self.sidebar, width=380),
                      pn.Column(*self.main, sizing_mode="stretch_width"))

    def servable(self, title: str = "bnlstm dashboard"):
        self.attach_session()
        if self.served:
            pn.state.onload(self._attach_lower_soon)    # once the browser has drawn the top
            if self._pending_preset is not None:        # a link's ?preset=
                pn.state.onload(lambda: self.run_preset(self._pending_preset))
        else:
            self.attach_lower()
        with _frozen():          # the document's model graph is computed once, not per root
            tpl = self.template().servable(title=title)
        if self.served:          # the tests read the thread (app/offloop.py)
            log(f"page built in {time.perf_counter() - self._began:.2f} s on thread "
                f"{threading.current_thread().name}")
        return tpl

    def _attach_lower_soon(self) -> None:
        """On the build thread, one section at a time, each with this page's document
        locked (app/offloop.py): a Start pressed meanwhile waits for one section, not
        all. Here, at once, if pages are built on the event loop."""
        doc = pn.state.curdoc
        pieces = [functools.partial(self.attach_lower, 1)] * len(self.lower_sections)
        if not offloop.soon_each(doc, pieces, on_error=lambda tb: log(
                f"attaching the lower sections failed:\n{tb}")):
            self.attach_lower()

    def attach_lower(self, count: Optional[int] = None) -> None:
        """Put sections 2 on into the page: the next ``count`` of them (default: all that
        are left). The page is whole once the last has joined; a no-op after that."""
        if self.lower_sections and not self._destroyed:
            n = len(self.lower_sections) if count is None else max(1, count)
            sections, self.lower_sections = self.lower_sections[:n], self.lower_sections[n:]
            joined = [o for o in self.lower.objects if o is not self._lower_wait]
            with _frozen():        # the note that more is coming stays last until then
                self.lower.objects = [*joined, *sections,
                                      *([self._lower_wait] if self.lower_sections else [])]
                if not self.lower_sections:
                    self.lower.css_classes = ["lower-sections", "attached"]
            if not self.lower_sections and self.served:  # the tests read the thread
                log(f"lower sections attached on thread {threading.current_thread().name}")

    def attach_session(self) -> None:
        """Start the periodic drain and register the clean-up for this session."""
        if self._callback is None:
            self._callback = quiet_periodic_callback(self.drain, DRAIN_MS)
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self._doc = pn.state.curdoc
            pn.state.on_session_destroyed(make_destroy_hook(self))

    def _on_state_record(self, rec: Dict[str, Any]) -> None:
        """On the engine's thread, for each record of this page's runs: a run that changed
        state (paused, running, ended: what a click asked for) is drawn at once, not at
        the next drain (up to DRAIN_MS later)."""
        doc = self._doc
        if rec.get("kind") != "state" or doc is None or self._destroyed or self._wake_pending:
            return
        self._wake_pending = True
        try:
            doc.add_next_tick_callback(self._drain_now)   # Bokeh's one thread-safe call
        except Exception:
            self._wake_pending = False

    def _drain_now(self) -> None:
        self._wake_pending = False
        if self._destroyed or self._doc is None:
            return
        with set_curdoc(self._doc):
            self._next_drain_at = 0.0
            self.drain()

    def _pace(self, period_ms: int) -> None:
        """Set the drain's period (DRAIN_MS while there is something to draw, IDLE_DRAIN_MS
        while the page has no live run and follows none)."""
        cb = self._callback
        if cb is not None and cb.period != period_ms:
            cb.period = period_ms            # Panel restarts the callback at the new period

    # ------------------------------------------------------------- settings glue
    def _show_task_problem(self, *events) -> None:
        """Said when the task is chosen, before Start: what stops its data loading here."""
        said = [f"This server could not load a task ({p}); the page goes on with the others."
                for p in tasks.load_problems()]
        own = self.settings.own_text
        t = tasks.get(self.config.task)
        said += [(t.data_problem(**own.data_options()) if t.family == "text" else
                  t.data_problem()) or ""]
        self.controls.say(self.controls.task_alert, " ".join(x for x in said if x))

    def _show_focused_settings(self, *events) -> None:
        """The settings panel shows the settings of the run in focus (the newest, or the one
        picked in section 4): what is training, not what was set before a preset. Setting
        the table this way changes no run; the next Start starts from it."""
        run = self.state.run(self.state.focus)
        if run is None:
            return
        mine, theirs = self.config.to_dict(), run.config.to_dict()
        diff = {k: v for k, v in theirs.items() if k != "name" and mine.get(k) != v}
        if diff:
            self._syncing = True
            try:
                self.apply_settings(diff)
            finally:
                self._syncing = False

    def _on_live_setting(self, *events) -> None:
        if self._syncing:
            return
        for run in self.runs:
            if run.live:
                for e in events:
                    try:
                        run.set(e.name, e.new)
                    except Exception:
                        pass

    def _on_new_run_setting(self, *events) -> None:
        if not self._syncing and any(r.live for r in self.runs):
            self.settings.say_new_run_setting([e.name for e in events])

    # ------------------------------------------------------------------- actions
    def _new_run(self, overrides=None, tag="", mode="run") -> Optional[DashboardRun]:
        live = [r for r in self.runs if r.live]
        if len(live) >= self.run_limit:
            self._notify(f"This page already has {len(live)} run(s) queued or training, the "
                         f"most one page may have at once on this server (so that a class "
                         "shares it fairly): stop one, or wait for it to finish.")
            return None
        slot = self.state.free_slot()
        if slot is None:
            self._notify(f"{len(self.runs)} runs are already training in this page: stop one "
                         "(or press Reset) before starting another.")
            return None
        # the run's one copy of the settings (the handle and the worker read this one)
        cfg = TrainConfig.from_dict(self.config.to_dict(), **(overrides or {}))
        own = (self.settings.own_text.data_options()
               if tasks.get(cfg.task).family == "text" else {})
        try:
            run = DashboardRun(cfg, color=slot.color, mode=mode, tag=tag, engine=self.engine,
                               data_options=own)
        except ValueError as exc:            # e.g. a model the task does not train
            self.settings.problem(str(exc))
            return None
        self._assign(slot, run)
        return run

    def _assign(self, slot: Slot, run) -> None:
        """``run`` takes ``slot`` (``None``: the slot empties). A slot's first run adds its
        layers to a dozen figures: the model graph is recomputed once, not once per glyph,
        and each new model is sent once (``_frozen``)."""
        if slot.run is None and run is None and not slot.dirty:
            return
        slot.run = run
        slot.clear()
        with _frozen():
            for section in self.sections:
                section.show(slot)
        if run is not None:
            self.state.add(run, slot)

    @staticmethod
    def _notify(msg: str) -> None:
        try:
            if pn.state.notifications is not None:
                pn.state.notifications.warning(msg, duration=8000)
        except Exception:
            pass
        log(msg)

    def _launch(self, runs: List[Optional[DashboardRun]]) -> None:
        runs = [r for r in runs if r is not None]
        if not runs:
            return
        self._next_drain_at = 0.0          # the new runs' first records at once
        self._pace(DRAIN_MS)
        for run in runs:
            run.submit()
            run.handle.listeners.append(self._state_listener)
        self.settings.new_run_hint.visible = False
        self.controls.show_paused(False)
        self._update_status(force=True)

    def start(self) -> Optional[DashboardRun]:
        log("start pressed")
        run = self._new_run()
        self._launch([run])
        return run

    def run_preset(self, pair, keep: Optional[bool] = None) -> List[DashboardRun]:
        """A comparison: two runs of the current settings with the pair's changes; a pair
        that names a task of another family starts from that family's recipe. ``keep``
        (default: the page's "A comparison ... joins them" toggle): the runs on the page
        stay and the pair is drawn beside them (in the free slots, or those of ended runs)."""
        if not (self.controls.w_keep.value if keep is None else keep):
            self.reset()
        family = tasks.get(self.config.task).family
        runs = []
        for tag, overrides in pair:
            task = overrides.get("task")
            if task and tasks.get(task).family != family:
                overrides = {**recipe(task), **overrides}
            runs.append(self._new_run(overrides, tag=tag))
        self._launch(runs)
        return runs

    def toggle_pause(self) -> None:
        live = [r for r in self.runs if r.live]
        if not live:
            return
        paused = not self.controls.paused
        for r in live:
            r.pause() if paused else r.resume()
        self.controls.show_paused(paused)

    def step(self) -> None:
        live = [r for r in self.runs if r.live]
        if not live:
            self._launch([self._new_run(mode="step")])
        else:
            for r in live:
                r.step_once()
        self.controls.show_paused(True)

    def stop(self) -> None:
        log(f"stop pressed: {len([r for r in self.runs if r.live])} live run(s)")
        for r in self.runs:
            if r.live:
                r.stop()
        self.controls.show_paused(False)

    def reset(self) -> None:
        self.state.clear()                 # the sections hear of it
        for slot in self.state.slots:
            self._assign(slot, None)
        self.settings.new_run_hint.visible = False
        self.controls.show_paused(False)
        self._update_status(force=True)

    def dispose(self) -> None:
        """The session ended: stop every run and free what it holds."""
        if self._destroyed:
            return
        self._destroyed = True
        _FOLLOWABLE.pop(self.share_token, None)
        if self.remote is not None:
            self.engine.unfollow(self.remote)
        elif self._published is not None:
            self.engine.publish(self.share_token, None)      # its followers: it has closed
        if hasattr(self, "sweeps"):
            self.sweeps.dispose()
        n = len([r for r in self.runs if r.live])
        total = len(self.runs)
        with param.discard_events(self.state):    # the page is gone: nothing to redraw
            self.state.clear()
        log(f"session destroyed: stopping {n} live run(s) of {total}")

    # -------------------------------------------------------------------- drain
    def drain(self) -> None:
        """Move queued records into the plots (on the event loop, every DRAIN_MS)."""
        if self._destroyed or time.monotonic() < self._next_drain_at:
            return
        if unsent_bytes(pn.state.curdoc) > MAX_UNSENT_BYTES:     # a frozen or slow client
            if not self._backlogged:
                log(f"session {self.share_token[:4]}: its browser is not reading; updates wait")
            self._backlogged = True
            self._next_drain_at = time.monotonic() + IDLE_DRAIN_MS / 1000
            return
        self._backlogged = False
        if not drawn(pn.state.curdoc):        # not drawn yet: its records wait for it
            self._next_drain_at = time.monotonic() + IDLE_DRAIN_MS / 1000
            return
        try:
            if self.follow_token is not None:
                self._follow_leader()
            else:
                self._publish()
            slot_of = self.state.slot_of
            batches = [(run, slot_of[run.id], run.drain()) for run in list(self.runs)
                       if run.id in slot_of]
            now = time.monotonic()
            work = any(recs or (s.probe_pending and now - s.probe_shown_at >= PROBE_UI_S)
                       for _, s, recs in batches) or self.statistics.due(now)
            if not work:                   # nothing to draw: no freeze, no plot refresh
                self._update_status()
                if not self._watching():   # an idle page looks again in a second
                    self._pace(IDLE_DRAIN_MS)
                return
            self._pace(DRAIN_MS)
            # Data-source patches (stream / new arrays) add no models, so they need no freeze
            # of the document (a freeze recomputes the whole model graph on exit).
            for run, slot, recs in batches:
                self._drain_run(run, slot, recs)
            for section in self.sections:
                section.after_drain()
            # a run that changed state (paused, running, finished...) shows it at once
            self._update_status(force=any(r.get("kind") == "state"
                                          for _, _, recs in batches for r in recs))
            took = time.monotonic() - now
            # keep the event loop free at least half the time, whatever the machine's load:
            # a slow drain pushes the next one back, so clicks are always answered quickly
            self._next_drain_at = time.monotonic() + took
            if took > 0.5:
                log(f"slow drain: {took:.2f} s")
        except Exception as exc:          # never let one bad batch stop the callback
            log(f"drain error: {exc!r}")

    def _drain_run(self, run: DashboardRun, slot: Slot, recs: List[Dict[str, Any]]) -> None:
        """One run's new records: its state (``digest``), the slot's probes, and each
        section's update."""
        d = digest(run, recs, self.state.smoothing)
        if recs:
            slot.dirty = True
        if d.probe is not None:
            if slot.first_probe is None:
                slot.first_probe = d.first_probe
            slot.latest_probe = d.probe
            slot.probe_pending = True
        now = time.monotonic()
        due = slot.probe_pending and now - slot.probe_shown_at >= PROBE_UI_S
        if due:
            slot.probe_pending, slot.probe_shown_at = False, now
        for section in self.sections:
            section.update(slot, d, due)

    def _watching(self) -> bool:
        """A run of this page is live (or, for a follower, of the page it follows)."""
        if any(r.live for r in self.runs):
            return True
        lead = self.leader
        if self.remote is not None:
            return not self.remote.closed and any(
                h.live for h in list(self.remote.handles.values()))
        return lead is not None and not lead._destroyed and any(r.live for r in lead.runs)

    # ------------------------------------------------------------------- status
    def _update_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_UI_S:
            return
        self._status_at = now
        self.controls.update_status()
