"""The text task's views as HTML (no browser): what the page shows of a text run's probe."""
import numpy as np

from app.text_view import MAX_BITS, _loss_color, _unit_color, excerpt_html, sample_html


def _probe(step=75):
    chars = list("the cat sat\n<")
    bits = np.r_[np.nan, np.linspace(0.1, 7.0, len(chars) - 1)]
    h = np.tile(np.linspace(-1, 1, len(chars))[:, None], (1, 16))
    return {"step": step, "text": {"sample": "the quick & <brown>\nfox", "temperature": 0.7,
                                   "chars": chars, "bits": bits, "h": h}}


def test_the_sample_is_escaped_with_its_step_and_temperature():
    out = sample_html(_probe())
    assert "update <b>75</b>" in out and "temperature 0.7" in out
    assert "&amp;" in out and "&lt;brown&gt;" in out and "<brown>" not in out
    assert "&#x21B5;" in out                                   # the line end is visible
    assert "first probe" in sample_html(None)


def test_the_excerpt_is_coloured_by_bits_or_by_one_units_activation():
    p = _probe()
    by_loss = excerpt_html(p, "loss")
    assert by_loss.count("<span style") == len(p["text"]["chars"])
    assert "&lt;" in by_loss and "rgba(214, 39, 40, 1.00)" in by_loss     # 7 bits: full red
    assert f"mean <b class='excerpt-mean'>{np.nanmean(p['text']['bits']):.2f}</b>" in by_loss
    by_unit = excerpt_html(p, "unit", unit=3)
    assert "unit 4's activation" in by_unit and "rgba(31, 119, 180, 1.00)" in by_unit
    assert excerpt_html({"step": 1}, "loss") == ""


def test_colours_grow_with_the_number():
    assert _loss_color(0.0).endswith("0.00)") and _loss_color(MAX_BITS * 2).endswith("1.00)")
    assert _loss_color(float("nan")) == "transparent"
    assert _unit_color(0.5) == "rgba(214, 39, 40, 0.50)" and _unit_color(-0.25) == "rgba(31, 119, 180, 0.25)"


def test_the_page_shows_only_the_chosen_tasks_settings_and_its_recipe():
    from app.dashboard import Dashboard
    d = Dashboard(sync_url=False)
    assert not d.settings.w_seq_len.visible and not d.settings.w_temperature.visible and not d.text.visible
    assert "text" in d.settings.w_task.options.values()
    d.config.task = "text"
    assert d.settings.w_seq_len.visible and d.settings.w_temperature.visible and d.text.visible
    assert (d.config.optimizer, d.config.lr, d.config.batch_size, d.config.h0_noise) == \
        ("adam", 2e-3, 64, 0.0)
    d.config.task = "pixel7"
    assert (d.config.optimizer, d.config.lr, d.config.batch_size, d.config.h0_noise) == \
        ("rmsprop", 1e-3, 100, 0.1)
    assert not d.settings.w_seq_len.visible
    d.dispose()


def test_a_broken_task_plugin_leaves_the_page_working(monkeypatch):
    from app.settings_panel import task_options
    from bnlstm import tasks
    monkeypatch.setenv("BNLSTM_TASKS", "no_such_plugin_module")
    monkeypatch.setattr(tasks, "_LOADED", {"builtin": True, "plugins": set(), "problems": []})
    opts = task_options()
    assert "text" in opts.values() and "row" in opts.values()
    from app.dashboard import Dashboard
    d = Dashboard(sync_url=False)             # the page says so, and still works
    try:
        alert = d.controls.task_alert
        assert alert.visible and "no_such_plugin_module" in alert.object
        assert "goes on with the others" in alert.object
    finally:
        d.dispose()


def test_a_links_settings_override_its_tasks_recipe():
    """?task=text&hidden=32: the text recipe (Adam 2e-3, batch 64) and the link's hidden=32."""
    from app.dashboard import Dashboard
    d = Dashboard(sync_url=False)
    d.apply_settings({"task": "text", "hidden": 32, "seq_len": 40})
    assert (d.config.task, d.config.hidden, d.config.seq_len) == ("text", 32, 40)
    assert (d.config.optimizer, d.config.batch_size) == ("adam", 64)
    d.apply_settings({"task": "row", "lr": 0.01})
    assert (d.config.lr, d.config.optimizer, d.config.hidden) == (0.01, "rmsprop", 100)
    d.dispose()
