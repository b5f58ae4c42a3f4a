"""app/sections: each section's figures and widgets, driven as the dashboard's drain does
(a slot, a digest), without a server or a browser."""
from types import SimpleNamespace

import numpy as np
from bokeh.models import GlyphRenderer, LogScale

from app.feed import digest
from app.sections.curves import LearningCurves
from app.sections.gradients import Gradients
from app.sections.statistics import Statistics
from app.state import SessionState
from bnlstm import TrainConfig, tasks
from bnlstm.training.events import RunState


def _run(rid=1, task="row"):
    metric = tasks.get(task).metric
    return SimpleNamespace(id=rid, label=f"run {rid}", color="#123456", metric=metric,
                           seen=RunState(metric), ema=None, ema_n=0, live=True,
                           config=TrainConfig(task=task), dispose=lambda: None)


def _give(state, section, run):
    slot = state.free_slot()
    slot.run = run
    slot.clear()
    section.show(slot)
    state.add(run, slot)
    return slot


def test_the_curves_follow_the_x_axis_and_the_loss_scale_chosen_live():
    state = SessionState(TrainConfig())
    curves = LearningCurves(state=state)
    slot = _give(state, curves, _run())
    recs = [{"kind": "train", "step": s, "loss": 2.0 / s, "elapsed": 0.5 * s} for s in (1, 2, 3)]
    recs.append({"kind": "val", "step": 3, "loss": 0.5, "acc": 0.7, "elapsed": 1.6})
    curves.update(slot, digest(slot.run, recs, 0.0), probe_due=False)
    src = curves.loss.sources[slot.index].data
    assert list(src["step"]) == [1, 2, 3] and list(src["t"]) == [0.5, 1.0, 1.5]
    assert list(curves.val.sources[slot.index].data["t"]) == [1.6]

    def xs(fig):
        return {r.glyph.x for r in fig.renderers if isinstance(r, GlyphRenderer)}
    assert xs(curves.loss.figure) == {"step"}
    curves.w_x.value = "t"                                  # wall time
    assert xs(curves.loss.figure) == xs(curves.val.figure) == {"t"}
    assert curves.loss.figure.xaxis[0].axis_label == "wall time (s)"
    later = _give(state, curves, _run(2))                   # a layer drawn afterwards too
    assert later.index != slot.index and xs(curves.loss.figure) == {"t"}
    curves.w_log.value = True
    assert isinstance(curves.loss.figure.y_scale, LogScale)
    curves.w_log.value = False
    assert not isinstance(curves.loss.figure.y_scale, LogScale)


def test_smoothing_redraws_the_bold_curve_and_keeps_the_wall_times():
    state = SessionState(TrainConfig())
    curves = LearningCurves(state=state)
    slot = _give(state, curves, _run())
    recs = [{"kind": "train", "step": s, "loss": float(v), "elapsed": float(s)}
            for s, v in ((1, 4.0), (2, 2.0), (3, 2.0))]
    curves.update(slot, digest(slot.run, recs, 0.0), probe_due=False)
    state.smoothing = 0.5
    src = curves.loss.sources[slot.index].data
    assert np.allclose(src["smooth"], [4.0, 3.0, 2.5]) and list(src["t"]) == [1.0, 2.0, 3.0]


def test_the_statistics_and_gradient_sections_follow_the_runs_and_the_probe_chosen():
    state = SessionState(TrainConfig())
    stats, grads = Statistics(state=state), Gradients(state=state)
    run = _run()
    slot = state.free_slot()
    slot.run = run
    for sec in (stats, grads):
        sec.show(slot)
    state.add(run, slot)
    assert stats.w_focus.value == run.id and state.focus == run.id   # a new run takes focus
    first = {"step": 1, "t": list(range(1, 11)), "grad_h": [1e-3] * 10}
    latest = {"step": 50, "t": list(range(1, 11)), "grad_h": [1e-6] * 10}
    slot.first_probe, slot.latest_probe = first, latest
    grads.update(slot, digest(run, [], 0.0), probe_due=True)
    assert np.allclose(grads.grad.sources[slot.index].data["grad"], 1e-3)   # "at step 1"
    grads.w_when.value = "latest"
    assert np.allclose(grads.grad.sources[slot.index].data["grad"], 1e-6)
    state.runs = []
    assert stats.w_focus.options == {}


def test_a_panel_without_its_term_says_so_in_a_frame_it_can_draw():
    """A tanh-RNN has no cell: the c_t panels show a note in a 0..1 frame (two invisible
    points give the browser a range; with no data at all it drew nothing) and no legend."""
    from app.sections.statistics import StatsPanel, stats_frame
    panel = StatsPanel("c_mean")
    probe = {"step": 5, "t": [1, 2, 3], "stats": {"wh": {"mean": [[0.1], [0.2], [0.3]]}}}
    panel.show(stats_frame(probe))
    assert panel.note.text == "no cell state in a tanh RNN"
    assert list(panel.frame.data["t"]) == [0.0, 1.0] and not panel.figure.legend.visible
    with_c = {**probe, "stats": {**probe["stats"], "c": {"mean": [[0.1], [0.2], [0.3]]}}}
    panel.show(stats_frame(with_c))
    assert panel.note.text == "" and list(panel.frame.data["t"]) == []
    assert panel.figure.legend.visible and len(panel.batch.data["t"]) == 4
