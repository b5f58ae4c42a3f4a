"""The dashboard: settings from :class:`bnlstm.TrainConfig`, controls, live plots, status.

One :class:`Dashboard` per browser session. Runs train in the run engine
(:mod:`bnlstm.runs`): on Dask worker processes when served (the server only builds
pages and streams records), or in threads of this process in a notebook; their records
collect in each run's handle, and :meth:`Dashboard.drain` (a periodic callback on the
server's event loop, every ``DRAIN_MS``) moves them into the plots' streams and the
status panes in one batch.
"""
from __future__ import annotations

import functools
import html
import secrets
import threading
import time
import weakref
from typing import Any, Dict, List, Optional

import numpy as np
import panel as pn
import param
from panel.io.state import set_curdoc

from bnlstm import TrainConfig, tasks
from bnlstm.runs.policy import FIFOPolicy

from . import views
from .server import offloop
from .runs import DashboardRun, get_engine
from .server.applog import log, quiet_periodic_callback
from .server.session import _frozen, _weak_listener, drawn, locked, make_destroy_hook, unsent_bytes
from .export import Exports
from .follow import Following
from .links import Links
from .lessons import CSS, PRESETS
from .sweeps import SweepBrowser
from .feed import digest, ema
from .server.offline import FONT, ICONS, OfflineFast
from .settings_panel import DASHBOARD_DEFAULTS, SettingsPanel, recipe
from .status import alerts, status_html
from .text_view import TextSection

DRAIN_MS = 200               # the drain's period while the page has a live run
IDLE_DRAIN_MS = 1000         # ... and while it has none (only the server line can change);
                             # every call costs the server some 0.3 ms, idle or not
MAX_UNSENT_BYTES = 4 << 20   # a page that has not read this much of its updates gets no more
                             # until it catches up (its records wait in the run's handle)
STATUS_UI_S = 0.5             # the status table (step, speed) redraws at most twice a second
PROBE_UI_S = 1.0              # the whole-curve probe views redraw at most once a second per run
FOCUS_UI_S = 2.0              # the Figure-5 statistics (four panels) at most every two seconds
MAX_RUNS_SHOWN = views.N_SLOTS  # per session; a new run takes the slot of the oldest ended run


# share token -> the open page whose runs a class may follow (this web process; a page of
# another web process on the same cluster is found through the engine: DaskEngine.follow)
_FOLLOWABLE: "weakref.WeakValueDictionary[str, Dashboard]" = weakref.WeakValueDictionary()




# ----------------------------------------------------------------------------- the dashboard
class Dashboard(Links, Following, Exports, param.Parameterized):
    """One session's dashboard. ``Dashboard().servable()`` or ``.view()`` in a notebook."""

    smoothing = param.Number(default=0.9, bounds=(0.0, 0.99), doc=(
        "Exponential smoothing of the bold loss curve (0: none); applies live."))

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
        self.runs: List[DashboardRun] = []
        # the plots are built once, with one layer per slot (drawn when the slot is first
        # used); runs borrow slots
        self.slots = [views.RunStreams(i) for i in range(views.N_SLOTS)]
        self.streams: Dict[int, views.RunStreams] = {}     # run id -> its slot
        self._destroyed = False
        self._last_status = ""
        self._status_at = 0.0
        self._url_problems: List[str] = []
        self._pending_preset = None      # a link's ?preset=: started once the page is there
        self._focus_probe_step = -1
        self._focus_shown_at = 0.0
        self._next_drain_at = 0.0
        self._backlogged = False
        self._callback = None
        self._doc = None                 # the session's document, once served
        self._wake_pending = False
        # the runs' handles call this on the engine's thread; weakly, so that a closed
        # page is freed even while a handle still holds its listener
        self._state_listener = _weak_listener(self._on_state_record)
        self.engine.start()        # the workers (or this process) warm up before a Start
        if sync_url is None:
            sync_url = served
        self._build_widgets()
        if sync_url:
            self._sync_url()
        self._build_layout()
        self.config.param.watch(self._show_text_section, "task")
        self.config.param.watch(self._show_task_problem, "task")
        self.config.param.watch(self._on_live_setting, list(TrainConfig.LIVE))
        self.config.param.watch(self._on_new_run_setting,
                                [k for k in TrainConfig.param if k not in TrainConfig.LIVE
                                 and k != "name"])
        self.param.watch(self._on_smoothing, ["smoothing"])

    # -------------------------------------------------------------------- widgets
    def _build_widgets(self) -> None:
        self.settings = SettingsPanel(self.config, smoothing=self.param.smoothing,
                                      notify=self._notify)
        for name in ("input_alert", "new_run_card", "new_run_hint", "live_card", "w_temperature"):
            setattr(self, name, getattr(self.settings, name))
        # controls
        self.b_start = pn.widgets.Button(name="Start", button_type="success", icon=ICONS["play"],
                                         css_classes=["btn-start"], width=120, height=44)
        self.b_pause = pn.widgets.Button(name="Pause", button_type="warning", icon=ICONS["pause"],
                                         css_classes=["btn-pause"], width=130, height=44)
        self.b_step = pn.widgets.Button(name="Step", button_type="primary", icon=ICONS["step"],
                                        css_classes=["btn-step"], width=110, height=44)
        self.b_stop = pn.widgets.Button(name="Stop", button_type="danger", icon=ICONS["stop"],
                                        css_classes=["btn-stop"], width=110, height=44)
        self.b_reset = pn.widgets.Button(name="Reset", button_type="default", icon=ICONS["reset"],
                                         css_classes=["btn-reset"], width=110, height=44)
        self.b_start.on_click(lambda e: locked(self.start))
        self.b_pause.on_click(lambda e: locked(self.toggle_pause))
        self.b_step.on_click(lambda e: locked(self.step))
        self.b_stop.on_click(lambda e: locked(self.stop))
        self.b_reset.on_click(lambda e: locked(self.reset))
        self.preset_buttons = []
        for label, cls, pair in PRESETS:
            b = pn.widgets.Button(name=label, button_type="primary", button_style="outline",
                                  css_classes=["btn-preset", cls], height=40,
                                  width=max(180, 9 * len(label) + 30), sizing_mode="fixed")
            b.on_click(lambda e, pair=pair: locked(lambda: self.run_preset(pair)))
            self.preset_buttons.append(b)

        # status and alerts
        self.status = pn.pane.HTML(self._status_html(), css_classes=["bnlstm-status"],
                                   sizing_mode="stretch_width", stylesheets=[CSS])
        self.url_alert = pn.pane.Alert("", alert_type="warning", visible=False,
                                       css_classes=["url-alert"], sizing_mode="stretch_width")
        self.task_alert = pn.pane.Alert("", alert_type="warning", visible=False,
                                        css_classes=["task-alert"], sizing_mode="stretch_width")
        self._show_task_problem()
        self.data_alert = pn.pane.Alert("", alert_type="warning", visible=False,
                                        css_classes=["data-alert"], sizing_mode="stretch_width")
        self.fail_alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                        css_classes=["fail-alert"], sizing_mode="stretch_width")
        self._show_url_problems()

        # export
        self.w_export_run = pn.widgets.Select(name="Run to export", options={}, width=330,
                                              css_classes=["w-export-run"])
        self.d_csv = pn.widgets.FileDownload(callback=self._csv_bytes, filename="metrics.csv",
                                             label="Metrics (CSV)", button_type="primary",
                                             css_classes=["dl-csv"], width=170, embed=False)
        self.d_zip = pn.widgets.FileDownload(callback=self._zip_bytes, filename="run.zip",
                                             label="Run record (zip)", button_type="primary",
                                             css_classes=["dl-zip"], width=170, embed=False)
        self.d_all = pn.widgets.FileDownload(callback=self._all_csv_bytes, filename="bnlstm-runs.csv",
                                             label="All runs (CSV)", button_type="primary",
                                             css_classes=["dl-all"], width=170, embed=False)
        self.w_export_run.param.watch(self._on_export_run, "value")
        self.w_focus = pn.widgets.Select(name="Run shown in the statistics plots", options={},
                                         width=420, css_classes=["w-focus"])
        self.w_focus.param.watch(lambda e: self._refresh_focus(force=True), "value")

    # --------------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        self.sweeps = SweepBrowser()
        self.p_loss = pn.pane.Bokeh(views.loss_plot(self.slots), sizing_mode="stretch_width",
                            css_classes=["plot-loss"])
        self.val_figure = views.val_plot(self.slots)
        self.p_val = pn.pane.Bokeh(self.val_figure, sizing_mode="stretch_width",
                                   css_classes=["plot-val"])
        self.text_section = TextSection(self.w_temperature)
        self.p_sat = pn.pane.Bokeh(views.saturation_plot(self.slots), sizing_mode="stretch_width",
                            css_classes=["plot-sat"])
        self.p_hist = pn.pane.Bokeh(views.hist_plot(self.slots), sizing_mode="stretch_width",
                            css_classes=["plot-hist"])
        self.grad_figure = views.grad_plot(self.slots)
        self.p_grad = pn.pane.Bokeh(self.grad_figure, sizing_mode="stretch_width",
                            css_classes=["plot-grad"])
        self.p_units = pn.pane.Bokeh(views.units_plot(self.slots), sizing_mode="stretch_width",
                                     css_classes=["plot-units"])
        self.p_kurt = pn.pane.Bokeh(views.kurtosis_plot(self.slots), sizing_mode="stretch_width",
                                    css_classes=["plot-kurt"])
        self.w_unit_step = pn.widgets.IntSlider(name="Step t shown in the batch distribution",
                                                start=1, end=49, value=49, width=420,
                                                css_classes=["w-unit-step"])
        self.w_unit_step.param.watch(lambda e: self._show_fig1a(), "value_throttled")
        self.w_when = pn.widgets.RadioButtonGroup(
            name="Probe shown", options={"at step 1 (initialization, as Fig. 1a)": "first",
                                         "latest probe (live)": "latest"},
            value="first", button_type="primary", button_style="outline", css_classes=["w-when"])
        self.w_when.param.watch(lambda e: self._show_fig1a(), "value")
        self.stats_panels = [views.StatsPanel(key) for key in ("wh_mean", "wh_var", "c_mean", "c_var")]
        self.p_stats = [pn.pane.Bokeh(panel.figure, sizing_mode="stretch_width")
                        for panel in self.stats_panels]

        # (the per-run figures lean each slot's layer as it is drawn: views._layered)
        views.lean(*(panel.figure for panel in self.stats_panels))

        self.legends = [pn.pane.HTML("", visible=False, stylesheets=[CSS], sizing_mode="stretch_width",
                                     css_classes=["plot-legend"], margin=(4, 10))
                        for _ in range(3)]

        self._lower_wait = pn.pane.HTML(
            "<div class='lower-wait'>The other sections are on their way...</div>",
            stylesheets=[CSS], sizing_mode="stretch_width", margin=(10, 10))
        self.lower = pn.Column(self._lower_wait, sizing_mode="stretch_width",
                               css_classes=["lower-sections"])

        def section(title, point_at, *objs):
            return pn.Column(
                pn.pane.HTML(f"<div style='font-size:22px;font-weight:700'>{title}</div>"
                             f"<div style='font-size:16px;color:#444'>{point_at}</div>",
                             sizing_mode="stretch_width", margin=(10, 10, 0, 10)),
                *objs, sizing_mode="stretch_width")

        controls = pn.Row(self.b_start, self.b_pause, self.b_step, self.b_stop, self.b_reset,
                          sizing_mode="stretch_width")
        presets = pn.FlexBox(pn.pane.HTML("<b style='font-size:16px'>Compare:</b>",
                                          margin=(18, 5, 0, 10)),
                             *self.preset_buttons, sizing_mode="stretch_width")
        if self.follow_token is None:
            self.share_note = pn.pane.HTML(
                "<div class='share'>A class can watch this page's runs live, read-only, "
                f"without training anything: <a class='follow-link' href='?follow="
                f"{self.share_token}' target='_blank'>follow link</a> (copy it from the "
                "new tab's address bar).</div>", stylesheets=[CSS], css_classes=["share-note"],
                sizing_mode="stretch_width")
            top = [self.url_alert, self.task_alert, self.data_alert, self.fail_alert, controls, presets,
                   self.status] + ([self.share_note] if self.served else [])   # a link needs a server
        else:
            self.follow_banner = pn.pane.Alert(self._follow_text(), alert_type="info",
                                               css_classes=["follow-banner"],
                                               sizing_mode="stretch_width")
            top = [self.follow_banner, self.data_alert, self.fail_alert, self.status]
        self.main = [
            pn.Column(*top, sizing_mode="stretch_width"),
            section("1. Learning curves",
                    "After <b>LSTM vs BN-LSTM</b>, point at: for the first couple of hundred "
                    "updates the LSTM's loss may fall as fast or faster; after that the "
                    "BN-LSTM's loss sits below it and its validation score above (accuracy on "
                    "MNIST; on text, fewer bits per character).",
                    self.legends[0],
                    pn.GridBox(self.p_loss, self.p_val, ncols=2, sizing_mode="stretch_width")),
            self.lower,
        ]
        # Sections 2 on are built here but join the page only once it has drawn its top
        # (``attach_lower``, on the browser's first render): the first document the browser
        # gets holds the controls and the learning curves, about a third of the page's
        # models, so a student can press Start sooner; the rest follows a moment later.
        self.lower_sections = [
            section("2. Why gamma must start small: tanh saturation in the BN-LSTM (Fig. 6)",
                    "After <b>gamma 0.1 vs 1.0</b>, point at: with gamma 1.0 far more tanh "
                    "inputs fall in the grey bands and its saturation curve sits higher; "
                    "its training loss in plot 1 falls more slowly (the paper's Figure 6). "
                    "Its gradient in plot 3 does not vanish: the LSTM's cell carries it.",
                    self.legends[1],
                    pn.GridBox(self.p_hist, self.p_sat, ncols=2, sizing_mode="stretch_width")),
            section("3. Gradients through time in a BN tanh-RNN (Fig. 1a), and why",
                    "After <b>tanh-RNN: gamma 0.1 vs 1.0</b>, point at: going back from the "
                    "last step, gamma 1.0's gradient falls by orders of magnitude while gamma "
                    "0.1's stays flat. Why: at gamma 1.0 the batch piles up on two spikes near "
                    "&plusmn;tanh(1) and the kurtosis drops to 1, where each step passes only "
                    "about tanh'(1)/tanh(1) = 0.55 of the gradient; gamma 0.1 keeps one bell "
                    "around 0 (kurtosis 2 to 3). After <b>why init matters</b>: the same gamma "
                    "1.0 with an orthogonal W_h keeps mixing the units, its batch stays spread "
                    "out and its gradient grows going back instead: the identity W_h makes the "
                    "collapse. (These presets use pixel 7x7. On the row task, 28 pixels a step, "
                    "it turns round: the inputs then outweigh the recurrent term inside the one "
                    "BN, and gamma 0.1's gradient is the one that falls.)",
                    self.legends[2], self.w_when, self.p_grad, self.w_unit_step,
                    pn.GridBox(self.p_units, self.p_kurt, ncols=2, sizing_mode="stretch_width")),
            section("4. Why statistics are kept per time step (paper Fig. 5)",
                    "Point at: the first few steps have very different mean and variance "
                    "(the transient); one shared set of statistics cannot fit both.",
                    self.w_focus,
                    pn.GridBox(*self.p_stats, ncols=2, sizing_mode="stretch_width")),
            self._text_column(section),
            section("Export", "The metrics of a run as CSV, its run record (config, "
                    "metrics, summary, best checkpoint) as a zip, and every run's metrics in "
                    "one CSV (a column says which run).",
                    pn.Row(self.w_export_run, self.d_csv, self.d_zip, self.d_all)),
            section("Sweeps (many seeds, run with python -m bnlstm sweep)",
                    "The sweeps in the server's sweep folder: each group's validation curve "
                    "(mean over seeds, band: one standard deviation) and every run's result; "
                    "a running sweep fills in as its runs progress.",
                    self.sweeps.view()),
        ]
        self.sidebar = [
            pn.pane.HTML("<div style='font-size:15px'>Settings marked <b>needs a new run</b> "
                         "apply when you press Start; <b>applies live</b> settings change "
                         "running runs at once.</div>"),
            self.input_alert, self.live_card, self.new_run_card, self.new_run_hint,
        ]
        if self.follow_token is not None:         # nothing here changes the runs followed
            self.sidebar = [pn.pane.HTML(
                "<div style='font-size:15px'>This is a <b>read-only</b> view of another "
                "page's runs: its settings and controls are on that page. Open the "
                "dashboard without <code>?follow=</code> to train runs of your own.</div>")]

    def _text_column(self, section) -> pn.Column:
        self.text_col = section(
            "5. What a text model writes, and what it finds hard",
            "Point at: the first samples are a jumble of characters; within a few hundred "
            "updates they break into word-like pieces between spaces, and the bits per "
            "character in plot 1 fall. In the coloured text below, the first letters of "
            "words are the redder ones (hard to guess) and the letters that finish a word "
            "are paler (easy). Colour by one unit instead and look for units that follow "
            "spaces or line ends.",
            *self.text_section.objects())
        self.text_col.visible = "text" in tasks.get(self.config.task).views
        return self.text_col

    def template(self) -> pn.template.FastListTemplate:
        tpl = pn.template.FastListTemplate(
            title="Recurrent Batch Normalization: train a BN-LSTM live",
            sidebar=self.sidebar, main=self.main, sidebar_width=380,
            accent_base_color="#1f77b4", header_background="#1f4e79",
            main_max_width="1600px", design=OfflineFast, font=FONT, font_url="")
        return tpl

    def view(self) -> pn.Column:
        """The dashboard without a template (for notebooks); starts the drain callback."""
        self.attach_session()
        self.attach_lower()
        return pn.Row(pn.Column(*self.sidebar, width=380), pn.Column(*self.main,
                                                                    sizing_mode="stretch_width"))

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

    # ------------------------------------------------------------- settings glue
    def _show_task_problem(self, *events) -> None:
        """Said when the task is chosen, before Start: what stops its data loading here."""
        problem = tasks.get(self.config.task).data_problem()
        self.task_alert.object = html.escape(problem) if problem else ""
        self.task_alert.visible = bool(problem)

    def _show_text_section(self, *events) -> None:
        """The text section shows while the chosen task, or a run shown, is a text task."""
        if hasattr(self, "text_col"):
            self.text_col.visible = ("text" in tasks.get(self.config.task).views or any(
                "text" in tasks.get(r.config.task).views for r in self.runs))

    def _on_live_setting(self, *events) -> None:
        for run in self.runs:
            if run.live:
                for e in events:
                    try:
                        run.set(e.name, e.new)
                    except Exception:
                        pass

    def _on_new_run_setting(self, *events) -> None:
        if any(r.live for r in self.runs):
            names = ", ".join(e.name for e in events)
            self.new_run_hint.object = (f"Changed {html.escape(names)}: press <b>Start</b> for a "
                                        "new run that uses it (running runs keep their settings).")
            self.new_run_hint.visible = True

    def _on_smoothing(self, event) -> None:
        for run in self.runs:
            s = self.streams.get(run.id)
            if s is None:
                continue
            steps, loss = s.loss_arrays()
            if not len(loss):
                continue
            smooth, last, n = ema(loss, self.smoothing)
            run.ema, run.ema_n = (float(last), n) if n else (None, 0)
            s.set_loss(steps, loss, smooth)

    # ------------------------------------------------------------------- actions
    def _free_slot(self) -> Optional[views.RunStreams]:
        """An empty slot, else the slot of the oldest run that has ended (which leaves)."""
        for s in self.slots:
            if s.run is None:
                return s
        for old in list(self.runs):
            if not old.live:
                slot = self.streams.pop(old.id)
                self.runs.remove(old)
                old.dispose()
                return slot
        return None

    def _new_run(self, overrides=None, tag="", mode="run") -> Optional[DashboardRun]:
        live = [r for r in self.runs if r.live]
        if len(live) >= self.run_limit:
            self._notify(f"This page already has {len(live)} run(s) queued or training, the "
                         f"most one page may have at once on this server (so that a class "
                         "shares it fairly): stop one, or wait for it to finish.")
            return None
        slot = self._free_slot()
        if slot is None:
            self._notify(f"{len(self.runs)} runs are already training in this page: stop one "
                         "(or press Reset) before starting another.")
            return None
        cfg = TrainConfig.from_dict(self.config.to_dict(), **(overrides or {}))
        try:
            run = DashboardRun(cfg, color=slot.color, mode=mode, tag=tag, engine=self.engine)
        except ValueError as exc:            # e.g. a model the task does not train
            self.settings.problem(str(exc))
            return None
        self._assign(slot, run)
        self.runs.append(run)
        self.streams[run.id] = slot
        return run

    @staticmethod
    def _assign(slot: views.RunStreams, run) -> None:
        """``slot.assign(run)``; a slot's first run adds its layers to a dozen figures: the
        model graph is recomputed once, not once per glyph, and each new model is sent
        once (``_frozen``)."""
        with _frozen():
            slot.assign(run)

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
        views.set_val_metric(self.val_figure, runs[-1].metric)
        self._show_text_section()
        self._refresh_run_lists()
        for run in runs:
            run.submit()
            run.handle.listeners.append(self._state_listener)
        self.new_run_hint.visible = False
        self._show_paused(False)
        self._update_status(force=True)

    def start(self) -> Optional[DashboardRun]:
        log("start pressed")
        run = self._new_run()
        self._launch([run])
        return run

    def run_preset(self, pair) -> List[DashboardRun]:
        """A comparison: two runs of the current settings with the pair's changes; a pair
        that names a task of another family starts from that family's recipe."""
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
        if self.b_pause.name == "Pause":
            for r in live:
                r.pause()
            self._show_paused(True)
        else:
            for r in live:
                r.resume()
            self._show_paused(False)

    def _show_paused(self, paused: bool) -> None:
        """The Pause button offers Resume (and a play icon) while runs are paused."""
        self.b_pause.name, self.b_pause.icon = (("Resume", ICONS["play"]) if paused
                                                else ("Pause", ICONS["pause"]))

    def step(self) -> None:
        live = [r for r in self.runs if r.live]
        if not live:
            run = self._new_run(mode="step")
            self._launch([run])
        else:
            for r in live:
                r.step_once()
        self._show_paused(True)

    def stop(self) -> None:
        log(f"stop pressed: {len([r for r in self.runs if r.live])} live run(s)")
        for r in self.runs:
            if r.live:
                r.stop()
        self._show_paused(False)

    def reset(self) -> None:
        for r in self.runs:
            r.dispose()
        self.runs = []
        self.streams = {}
        with _frozen():
            for slot in self.slots:
                slot.assign(None)
            self._show_stats({})
        self._focus_probe_step = -1
        self.fail_alert.visible = False
        self.data_alert.visible = False
        self.new_run_hint.visible = False
        self._show_paused(False)
        self._refresh_run_lists()
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
        for r in self.runs:
            r.dispose()
        log(f"session destroyed: stopping {n} live run(s) of {len(self.runs)}")
        self.runs = []
        self.streams = {}

    # ---------------------------------------------------------------- plots glue
    def _legend_html(self) -> str:
        if not self.runs:
            return ""
        items = "".join(
            f"<span class='legend-item' data-run='{r.id}'><span class='swatch' "
            f"style='background:{r.color}'></span>{html.escape(r.label)}</span>"
            for r in self.runs)
        return f"<div class='legend'>{items}</div>"

    def _refresh_run_lists(self) -> None:
        """The legends and the run pickers follow the list of runs (the plots never change)."""
        legend = self._legend_html()
        for pane in self.legends:
            pane.object = legend
            pane.visible = bool(legend)
        with pn.io.hold():
            opts = {f"#{r.id} {r.label}": r.id for r in self.runs}
            self.w_focus.options = opts
            self.w_export_run.options = opts
            if self.runs:
                self.w_focus.value = self.runs[-1].id
                self.w_export_run.value = self.runs[-1].id
                self._on_export_run()

    def _focus_due(self, now: float) -> bool:
        s = self.streams.get(self.w_focus.value)
        probe = s.latest_probe if s is not None else None
        step = probe["step"] if probe is not None else -1
        return step != self._focus_probe_step and now - self._focus_shown_at >= FOCUS_UI_S

    def _refresh_focus(self, force=False) -> None:
        s = self.streams.get(self.w_focus.value)
        probe = s.latest_probe if s is not None else None
        step = probe["step"] if probe is not None else -1
        now = time.monotonic()
        if force or self._focus_due(now):
            self._focus_probe_step, self._focus_shown_at = step, now
            self._show_stats(views.stats_frame(probe))

    def _refresh_text(self) -> None:
        """The text section follows the run shown in the statistics plots if it is a text
        run, else the newest text run."""
        if not self.text_col.visible:
            return
        s = self.streams.get(self.w_focus.value)
        if s is None or s.latest_probe is None or "text" not in s.latest_probe:
            texts = [self.streams[r.id] for r in reversed(self.runs) if r.id in self.streams
                     and self.streams[r.id].latest_probe is not None
                     and "text" in self.streams[r.id].latest_probe]
            s = texts[0] if texts else None
        self.text_section.show(s.latest_probe if s is not None else None)

    def _show_stats(self, frame) -> None:
        for panel in self.stats_panels:
            panel.show(frame)

    def _fit_unit_step(self) -> None:
        """The step slider spans the longest sequence shown; at its end it follows the end."""
        T = max((len(s.latest_probe["t"]) for s in self.slots if s.latest_probe), default=0)
        w = self.w_unit_step
        if T > 1 and T != w.end:
            at_end = w.value >= w.end
            w.end = T
            if at_end or w.value > T:
                w.value = T

    def _show_fig1a(self, slots=None) -> None:
        """Section 3 (gradient, batch distribution, kurtosis) from the probe chosen in
        ``w_when`` (at initialization, or the latest), for ``slots`` (default: all)."""
        changed = False
        for s in (self.slots if slots is None else slots):
            probe = s.probe_at(self.w_when.value)
            if probe is None and s.run is None:
                continue                      # an empty slot stays empty
            shown = (probe.get("step") if probe else None, self.w_when.value,
                     self.w_unit_step.value)
            if s.fig1a_shown == shown:        # e.g. "at step 1": the same probe as before
                continue
            s.fig1a_shown = shown
            s.set_grad(views.grad_frame(probe))
            s.set_units(probe, self.w_unit_step.value)
            changed = True
        if changed:
            views.fit_grad_range(self.grad_figure, self.slots)

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
            batches = [(run, self.streams[run.id], run.drain()) for run in list(self.runs)
                       if run.id in self.streams]
            now = time.monotonic()
            work = any(recs or (s.probe_pending and now - s.probe_shown_at >= PROBE_UI_S)
                       for _, s, recs in batches) or self._focus_due(now)
            if not work:                   # nothing to draw: no freeze, no plot refresh
                self._update_status()
                if not self._watching():   # an idle page looks again in a second
                    self._pace(IDLE_DRAIN_MS)
                return
            self._pace(DRAIN_MS)
            # Data-source patches (stream / new arrays) add no models, so they need no freeze
            # of the document (a freeze recomputes the whole model graph on exit).
            for run, s, recs in batches:
                self._drain_run(run, s, recs)
            self._refresh_focus()
            self._refresh_text()
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

    def _pace(self, period_ms: int) -> None:
        """Set the drain's period (DRAIN_MS while there is something to draw, IDLE_DRAIN_MS
        while the page has no live run and follows none)."""
        cb = self._callback
        if cb is not None and cb.period != period_ms:
            cb.period = period_ms            # Panel restarts the callback at the new period

    def _watching(self) -> bool:
        """A run of this page is live (or, for a follower, of the page it follows)."""
        if any(r.live for r in self.runs):
            return True
        lead = self.leader
        if self.remote is not None:
            return not self.remote.closed and any(
                h.live for h in list(self.remote.handles.values()))
        return lead is not None and not lead._destroyed and any(r.live for r in lead.runs)

    def _drain_run(self, run: DashboardRun, s: views.RunStreams, recs: List[Dict[str, Any]]) -> None:
        d = digest(run, recs, self.smoothing)          # the run's state, and what to draw
        if d.probe is not None and s.first_probe is None:
            s.first_probe = d.first_probe
        if d.steps:
            s.add_loss(d.steps, d.loss, d.smooth)
        if d.val_steps:
            s.add_val(d.val_steps, d.val_values)
            views.fit_val_range(self.val_figure, self.slots)
        probe, sat_rows = d.probe, d.sat_rows
        s.sat_pending.extend(sat_rows)
        if recs:
            s.dirty = True
        if probe is not None:
            s.latest_probe = probe
            s.probe_pending = True
        now = time.monotonic()
        if s.probe_pending and now - s.probe_shown_at >= PROBE_UI_S:
            s.probe_pending, s.probe_shown_at = False, now
            s.set_hist(views.hist_frame(s.latest_probe))
            self._fit_unit_step()
            self._show_fig1a([s])
            if s.sat_pending:
                arr = np.asarray(s.sat_pending, dtype=float)
                s.sat_pending = []
                s.add_sat(arr[:, 0], arr[:, 1], arr[:, 2])

    # ------------------------------------------------------------------- status
    def _status_html(self) -> str:
        return status_html(self.runs, self.engine.counts())

    def _update_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_UI_S:
            return
        self._status_at = now
        text = self._status_html()
        if text != self._last_status:
            self._last_status = text
            self.status.object = text
        data_msg, fail_msg = alerts(self.runs)       # the data in use, and failures
        if data_msg:
            if self.data_alert.object != data_msg:
                self.data_alert.object = data_msg
            self.data_alert.visible = True
        if fail_msg:
            if self.fail_alert.object != fail_msg:
                self.fail_alert.object = fail_msg
            self.fail_alert.visible = True
        elif self.fail_alert.visible:
            self.fail_alert.visible = False
