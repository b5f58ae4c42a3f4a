"""The settings panel: every setting of :class:`bnlstm.TrainConfig` as a widget, in two cards.

**Applies live** (learning rate, clipping, budget, intervals, smoothing, the text task's
temperature) and **needs a new run** (model, task, sizes, ...). Number boxes are checked on
the server against the setting's bounds, with a message when a value is refused. Only the
settings that apply to the chosen task are shown; choosing a task of another family loads
that family's recipe (:func:`recipe`). The panel changes the config; the dashboard watches it.
"""
from __future__ import annotations

import html
from typing import Any, Callable, Dict

import numpy as np
import panel as pn

from bnlstm import TrainConfig, tasks
from bnlstm.training.config import MODEL_LABELS

from .lessons import TOGGLE_CSS
from .own_text import OwnText

# The dashboard's defaults differ from the paper's recipe only where a live demo needs it.
DASHBOARD_DEFAULTS = dict(task="row", model="bnlstm", gamma_init=0.1, probe_every=25,
                          val_limit=2000, eval_every=100, steps=2000)

# The text task's page defaults: its recipe (Adam 2e-3, batches of 64, no h_0 noise, ...),
# sized so that a class sees words appear within a minute or two.
TEXT_DASHBOARD_DEFAULTS = dict(hidden=128, probe_every=25, eval_every=50, val_limit=200,
                               steps=3000)
TASK_LABELS = {"row": "MNIST row (28 steps of 28 pixels)", "pixel14": "MNIST pixel 14x14 (196 steps)",
               "pixel7": "MNIST pixel 7x7 (49 steps)", "pixel": "MNIST pixel 28x28 (784 steps, the paper)",
               "permuted": "MNIST permuted pixel (784 steps)",
               "text": "text: next character (language model)"}

STATS_LABELS = {"per_step": "per step (the paper)", "shared": "shared over time"}


def task_options() -> Dict[str, str]:
    """Every registered task (plug-ins too), as the task menu shows them. A plug-in that
    cannot be loaded is left out (the server log says why); the page still works."""
    try:
        found = tasks.all_tasks()
    except tasks.TaskError as exc:
        from .server.applog import log
        log(f"task plug-ins: {exc}")
        found = tasks.registered()
    return {TASK_LABELS.get(t.name, t.label or t.name): t.name for t in found}


def recipe(task: str) -> Dict[str, Any]:
    """The settings a task family starts from on this page: the defaults, the task's own
    recipe, then the page's sizes (MNIST: DASHBOARD_DEFAULTS; text: TEXT_DASHBOARD_DEFAULTS)."""
    t = tasks.get(task)
    keys = set(DASHBOARD_DEFAULTS) | set(TEXT_DASHBOARD_DEFAULTS)
    for other in tasks.all_tasks():      # every setting some task's recipe changes
        keys |= set(other.defaults)
    keys -= {"task", "model", "gamma_init"}
    base = {k: TrainConfig.param[k].default for k in keys}
    page = DASHBOARD_DEFAULTS if t.family == "mnist" else (
        TEXT_DASHBOARD_DEFAULTS if t.family == "text" else {})
    out = {**base, **t.defaults, **{k: v for k, v in page.items() if k in keys}}
    return {k: v for k, v in out.items() if t.applies(k)}
def show_on_log_slider(slider, value: float) -> None:
    """Put ``value`` on a log10 slider, widening its range when the value (from a link or the
    settings) lies outside it: the slider never shows another value than the one in use."""
    v = float(np.log10(value))
    if v < slider.start:
        slider.start = float(np.floor(v))
    if v > slider.end:
        slider.end = float(np.ceil(v))
    if abs(slider.value - v) > 1e-9:
        slider.value = v


def log_formatter():
    from bokeh.models import CustomJSTickFormatter
    return CustomJSTickFormatter(code="return Number(Math.pow(10, tick).toPrecision(3)).toString()")



class SettingsPanel:
    """The two settings cards for ``config`` (see the module docstring)."""

    def __init__(self, config: TrainConfig, smoothing, notify: Callable[[str], None] = print):
        self.config = config
        self.notify = notify
        self._build(smoothing)
        config.param.watch(self._on_task, "task")
        self._show_task_settings()

    def _build(self, smoothing) -> None:
        cfg = self.config
        P = cfg.param
        big = {"stylesheets": [":host { --font-size: 15px; } label { font-size: 15px; }"]}
        self.w_model = pn.widgets.Select.from_param(
            P.model, name="Model", options={v: k for k, v in MODEL_LABELS.items()},
            css_classes=["w-model"], **big)
        self.w_task = pn.widgets.Select.from_param(
            P.task, name="Task", options=task_options(), css_classes=["w-task"], **big)
        self._setting_widgets: Dict[str, Any] = {}      # setting -> its widget (hidden if n/a)
        choices, note = _text_choices()
        self.own_text = OwnText(choices=choices, choice_note=note)   # the text task's data
        self.w_gamma = pn.widgets.FloatSlider(
            name="Gamma init (log scale)", start=-2.0, end=0.0, step=0.01, value=-1.0,
            format=log_formatter(), css_classes=["w-gamma"], **big)
        show_on_log_slider(self.w_gamma, cfg.gamma_init)
        self.w_gamma_value = pn.pane.HTML(self._gamma_text(), css_classes=["w-gamma-value"],
                                          margin=(0, 10))
        self.w_gamma.param.watch(self._on_gamma_slider, "value_throttled")
        self.w_gamma.param.watch(self._on_gamma_drag, "value")
        cfg.param.watch(self._on_gamma_config, "gamma_init")
        self.w_stats = pn.widgets.RadioButtonGroup.from_param(
            P.stats, name="Statistics", options={v: k for k, v in STATS_LABELS.items()},
            button_type="primary", button_style="outline", css_classes=["w-stats"],
            stylesheets=[TOGGLE_CSS])
        self.w_hidden = pn.widgets.IntSlider.from_param(P.hidden, name="Hidden units", start=8,
                                                       end=256, step=4, css_classes=["w-hidden"])
        self.w_batch = pn.widgets.IntSlider.from_param(P.batch_size, name="Batch size", start=8,
                                                      end=512, step=4, css_classes=["w-batch"])
        self.input_alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                         css_classes=["input-alert"], sizing_mode="stretch_width")
        self.w_seed = self._typed_input("seed", "Seed", "w-seed", step=1)
        self.w_device = pn.widgets.Select.from_param(P.device, name="Device",
                                                    css_classes=["w-device"])
        self.w_val_limit = self._typed_input("val_limit", "Validation examples (0: all)",
                                             "w-val-limit", step=100)
        self.w_seq_len = self._typed_input("seq_len", "Characters per training sequence",
                                           "w-seq-len", step=10)
        self.w_temperature = pn.widgets.FloatSlider.from_param(
            P.temperature, name="Sample temperature (applies live, at the next probe)",
            start=0.0, end=2.0, step=0.05, css_classes=["w-temperature"], width=420)
        self._setting_widgets["temperature"] = self.w_temperature
        # number boxes checked on the server (not pn.Param's, which clamp in the browser)
        advanced = pn.Column(
            self._typed_input("num_layers", P.num_layers.label, "w-num-layers", step=1),
            pn.widgets.Select.from_param(P.init, name=P.init.label, css_classes=["w-init"]),
            self._typed_input("forget_bias", P.forget_bias.label, "w-forget-bias", step=0.5,
                              number=float),
            self._typed_input("h0_noise", P.h0_noise.label, "w-h0-noise", step=0.05,
                              number=float),
            self._typed_input("momentum", P.momentum.label, "w-momentum", step=0.05,
                              number=float),
            pn.widgets.Select.from_param(P.optimizer, name=P.optimizer.label,
                                         css_classes=["w-optimizer"]),
            pn.widgets.Checkbox.from_param(P.test_at_end, name=P.test_at_end.label,
                                           css_classes=["w-test-at-end"]),
            self._typed_input("reestimate", P.reestimate.label, "w-reestimate", step=10),
            sizing_mode="stretch_width")
        self.new_run_card = pn.Card(
            self.w_model, self.w_task, self.own_text.panel, self.w_seq_len, self.w_gamma,
            self.w_gamma_value,
            pn.pane.HTML("<b>Statistics</b>", margin=(5, 10, 0, 10)), self.w_stats,
            self.w_hidden, self.w_batch, self.w_seed, self.w_device, self.w_val_limit,
            pn.Card(advanced, title="More (init, layers, optimizer...)", collapsed=True,
                    sizing_mode="stretch_width"),
            title="&#x27F3; Needs a new run", header_background="#f6d7a7",
            header_color="#5a3700", css_classes=["card-new-run"], sizing_mode="stretch_width",
            styles={"border": "2px solid #e0a040"})
        self.new_run_hint = pn.pane.HTML("", visible=False, css_classes=["new-run-hint"],
                                         styles={"color": "#8a5300", "font-size": "14px"})

        self.w_lr = pn.widgets.FloatSlider(
            name="Learning rate (log scale)", start=-5.0, end=-1.0, step=0.05, value=-3.0,
            format=log_formatter(), css_classes=["w-lr"], **big)
        show_on_log_slider(self.w_lr, cfg.lr)
        self.w_lr.param.watch(lambda e: setattr(self.config, "lr", float(round(10 ** e.new, 8))),
                              "value_throttled")
        cfg.param.watch(self._on_lr_config, "lr")
        self.w_clip = pn.widgets.FloatSlider.from_param(P.clip, name="Gradient clip (0: off)",
                                                       start=0.0, end=10.0, step=0.1)
        self.w_steps = self._typed_input("steps", "Step budget (updates)", "w-steps", step=500)
        self.w_eval = self._typed_input("eval_every", "Validate every N updates", "w-eval", step=50)
        self.w_probe = self._typed_input("probe_every", "Probe every N updates (0: off)",
                                         "w-probe", step=5)
        self.w_smooth = pn.widgets.FloatSlider.from_param(smoothing, name="Loss smoothing",
                                                         step=0.01)
        self.live_card = pn.Card(
            self.w_lr, self.w_clip, self.w_steps, self.w_eval, self.w_probe, self.w_smooth,
            title="&#x25CF; Applies live", header_background="#b9e4c0", header_color="#0b4d1c",
            css_classes=["card-live"], sizing_mode="stretch_width",
            styles={"border": "2px solid #4caf50"})

    def _typed_input(self, name: str, label: str, css: str, step, number=int):
        """A number box whose value the server checks against the setting's bounds.

        No bounds in the browser (which would silently clamp what is typed): an invalid
        value gets a visible message that says what is allowed, and the box goes back
        to the setting's current value. ``number``: int (IntInput) or float (FloatInput).
        """
        par = TrainConfig.param[name]
        kind = pn.widgets.IntInput if number is int else pn.widgets.FloatInput
        w = kind(name=label, value=getattr(self.config, name), step=step,
                 css_classes=[css], description=par.doc)
        what = "a whole number" if number is int else "a number"

        def _from_box(event, name=name, w=w, label=label):
            if event.new == getattr(self.config, name):
                return
            try:
                setattr(self.config, name, event.new)
            except Exception:
                lo, hi = par.bounds or (None, None)
                allowed = (f"at least {lo}" if hi is None else f"between {lo} and {hi}")
                shown = "an empty box" if event.new is None else repr(event.new)
                self.problem(f"{label}: {shown} is not valid (it must be {what} "
                                    f"{allowed}); kept {getattr(self.config, name)}.")
                w.value = getattr(self.config, name)
                return
            if self.input_alert.visible:
                self.input_alert.visible = False

        def _from_config(event, w=w):
            if w.value != event.new:
                w.value = event.new

        w.param.watch(_from_box, "value")
        self.config.param.watch(_from_config, name)
        self._setting_widgets[name] = w
        return w

    def say_new_run_setting(self, names) -> None:
        """Settings that need a new run changed while runs train: say what Start would do."""
        self.new_run_hint.object = (f"Changed {html.escape(', '.join(names))}: press <b>Start</b> "
                                    "for a new run that uses it (running runs keep their settings).")
        self.new_run_hint.visible = True

    def problem(self, msg: str) -> None:
        self.input_alert.object = html.escape(msg)
        self.input_alert.visible = True
        self.notify(msg)

    def _show_task_settings(self) -> None:
        """Only the settings that apply to the chosen task are shown (never silently ignored)."""
        t = tasks.get(self.config.task)
        for name, w in self._setting_widgets.items():
            w.visible = t.applies(name)
        self.own_text.panel.visible = t.family == "text"

    def _on_task(self, event) -> None:
        old = tasks.get(event.old) if event.old in tasks.names() else None
        new = tasks.get(event.new)
        if old is not None and old.family != new.family:    # another kind of task: its recipe
            settings = recipe(event.new)
            self.config.param.update(**settings)
            shown = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            self.notify(f"{new.label or new.name}: its own recipe applies ({shown}).")
        self._show_task_settings()

    def _gamma_text(self) -> str:
        return (f"<span style='font-size:15px'>gamma init = <b class='gamma-value'>"
                f"{self.config.gamma_init:.3g}</b></span>")

    def _on_gamma_drag(self, event) -> None:
        self.w_gamma_value.object = (f"<span style='font-size:15px'>gamma init = <b class='gamma-value'>"
                                     f"{10 ** event.new:.3g}</b></span>")

    def _on_gamma_slider(self, event) -> None:
        value = float(f"{10 ** event.new:.3g}")
        if abs(value - self.config.gamma_init) > 1e-12:
            self.config.gamma_init = value

    def _on_gamma_config(self, event) -> None:
        show_on_log_slider(self.w_gamma, event.new)
        self.w_gamma_value.object = self._gamma_text()

    def _on_lr_config(self, event) -> None:
        show_on_log_slider(self.w_lr, event.new)


def _text_choices():
    """The texts this server can train on (the text task's ``text_choices``), and a note."""
    try:
        t = tasks.get("text")
    except Exception:                     # pragma: no cover - a registry without it
        return None, ""
    return t.text_choices() if hasattr(t, "text_choices") else (None, "")
