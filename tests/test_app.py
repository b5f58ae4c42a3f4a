"""The dashboard's parts that need no browser: what a session may be shown of the server."""
import io
import json
import time
import zipfile

from bnlstm.training.records import zip_run_dir
from bnlstm_app.runs import public_record, redact_paths


def _loss_steps(page, run):
    """The steps of ``run``'s loss curve as ``page`` draws it."""
    return page.curves.loss.sources[page.state.slot_of[run.id].index].data["step"]


def test_redact_paths_keeps_the_last_part_only():
    assert redact_paths("MNIST (70,000 digits) from /srv/data/mnist") == \
        "MNIST (70,000 digits) from .../mnist"
    assert redact_paths("[full MNIST not in /home/ann/.cache/bnlstm/mnist; download it]") == \
        "[full MNIST not in .../mnist; download it]"
    assert redact_paths('File "/opt/venv/lib/bnlstm/trainer.py", line 3') == \
        'File ".../trainer.py", line 3'
    for kept in ("http://127.0.0.1:5006/app", "gamma 0.1/1.0, 1/2 of the runs", "docs/results.md"):
        assert redact_paths(kept) == kept


def test_records_reach_a_session_without_server_paths():
    rec = {"kind": "info", "data_source": "MNIST from /srv/mnist", "n_params": 3}
    out = public_record(rec)
    assert out["data_source"] == "MNIST from .../mnist" and out["n_params"] == 3
    assert rec["data_source"] == "MNIST from /srv/mnist"          # the run's own copy is kept
    err = {"kind": "error", "message": "DataError: /srv/x missing",
           "traceback": 'File "/srv/app/x.py"'}
    assert "/srv" not in json.dumps(public_record(err))
    plain = {"kind": "train", "loss": 1.0}
    assert public_record(plain) is plain


def test_downloaded_run_record_names_no_server_path(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"data_source": f"MNIST from {tmp_path}/mnist"}))
    (tmp_path / "error.txt").write_text(f'File "{tmp_path}/a.py", line 1')
    (tmp_path / "metrics.csv").write_text("step,kind\n1,train\n")
    z = zipfile.ZipFile(io.BytesIO(zip_run_dir(tmp_path, redact=redact_paths)))
    assert sorted(z.namelist()) == ["error.txt", "metrics.csv", "summary.json"]
    text = "".join(z.read(n).decode() for n in z.namelist())
    assert str(tmp_path) not in text and ".../mnist" in text
    raw = zipfile.ZipFile(io.BytesIO(zip_run_dir(tmp_path)))          # the CLI's: unchanged
    assert str(tmp_path) in raw.read("summary.json").decode()


# ------------------------------------------------------------------ sessions on one engine
def _dashboards(mnist_dir, monkeypatch, **kw):
    from bnlstm.runs import ThreadEngine
    from bnlstm_app.dashboard import Dashboard
    monkeypatch.setenv("BNLSTM_MNIST_DIR", str(mnist_dir))
    eng = ThreadEngine(max_runs=2)
    cfg = dict(task="row", hidden=16, batch_size=16, steps=100000, eval_every=20, probe_every=10)
    lead = Dashboard(sync_url=False, engine=eng)
    lead.config.param.update(**cfg)
    return eng, lead, Dashboard


def _until(cond, dashboards, timeout=60):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for d in dashboards:
            d._next_drain_at = 0.0
            d.drain()
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("not reached in time")


def test_an_idle_page_drains_once_a_second_and_a_page_with_a_live_run_five_times(
        mnist_dir, monkeypatch):
    """Each call of a session's drain costs the server's event loop, idle or not: a page
    with no live run slows its callback to IDLE_DRAIN_MS, and a Start speeds it up."""
    from bnlstm_app.dashboard import DRAIN_MS, IDLE_DRAIN_MS
    eng, d, _ = _dashboards(mnist_dir, monkeypatch)
    try:
        d.attach_session()                    # the periodic callback (not running: no loop)
        d.drain()
        assert d._callback.period == IDLE_DRAIN_MS
        d.config.steps = 5
        run = d.start()
        assert d._callback.period == DRAIN_MS
        _until(lambda: run.state == "finished" and d._callback.period == IDLE_DRAIN_MS, [d])
    finally:
        d.dispose()
        eng.join(30)


def test_a_runs_state_change_is_drawn_at_once_not_at_the_next_drain(mnist_dir, monkeypatch):
    """What a click asked for (paused, running, ended) comes back as a state record on the
    engine's thread; it schedules one drain on the session's event loop at once."""
    from bnlstm_app.dashboard import _weak_listener
    eng, d, _ = _dashboards(mnist_dir, monkeypatch)
    scheduled = []

    class Doc:                                    # the session's document: its one thread-safe call
        def add_next_tick_callback(self, fn):
            scheduled.append(fn)
    try:
        d.config.steps = 100000
        run = d.start()
        assert d._state_listener in run.handle.listeners
        d._doc = Doc()
        _until(lambda: run.state == "running", [d])
        assert scheduled                          # "starting", "running" asked for drains
        scheduled.clear()
        d._wake_pending = False                   # as if the scheduled drain had run
        d._on_state_record({"kind": "train", "step": 3, "loss": 1.0})
        assert scheduled == []                    # a training record waits for the drain
        run.pause()
        end = time.monotonic() + 30
        while not scheduled and time.monotonic() < end:
            time.sleep(0.02)
        assert len(scheduled) == 1                # the "paused" record asked for a drain
        d._on_state_record({"kind": "state", "state": "paused"})
        assert len(scheduled) == 1                # one at a time
        d._doc = None                             # (no served document in this test)
        d._wake_pending = False
        d._next_drain_at = time.monotonic() + 60
        d._drain_now()                            # without a document: nothing
        assert run.state == "running"
        d._doc = Doc()
        monkeypatch.setattr("bnlstm_app.dashboard.set_curdoc", lambda doc: __import__(
            "contextlib").nullcontext())
        d._drain_now()                            # drains now, whatever the drain's pacing
        assert run.state == "paused"

        class Page:
            def __init__(self):
                self.seen = []

            def on(self, rec):
                self.seen.append(rec)
        page = Page()
        listener = _weak_listener(page.on)
        listener({"kind": "state"})
        assert len(page.seen) == 1
        del page
        listener({"kind": "state"})               # a freed page is not kept alive, nor called
    finally:
        d.dispose()
        eng.join(30)


def test_a_page_holds_at_most_its_share_of_runs(mnist_dir, monkeypatch):
    monkeypatch.setenv("BNLSTM_SESSION_RUNS", "2")
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    try:
        a, b = lead.start(), lead.start()
        assert a is not None and b is not None
        assert lead.start() is None and len(lead.runs) == 2          # refused, with a message
        a.stop()
        _until(lambda: a.state == "stopped", [lead])
        assert lead.start() is not None                               # an ended run frees it
    finally:
        lead.dispose()
        eng.join(30)


def test_a_follow_link_shows_another_pages_runs_live_and_read_only(mnist_dir, monkeypatch):
    eng, lead, Dashboard = _dashboards(mnist_dir, monkeypatch)
    follower = Dashboard(sync_url=False, engine=eng, follow=lead.share_token)
    stranger = Dashboard(sync_url=False, engine=eng, follow="no-such-token")
    try:
        names = {getattr(o, "name", None) for o in follower.controls.__panel__().objects}
        assert not names & {"Start", "Pause", "Step", "Stop", "Reset"}
        assert "read-only" in follower.controls.follow_banner.object
        assert "not open on this server" in stranger.controls.follow_banner.object
        run = lead.start()
        _until(lambda: len(follower.runs) == 1 and follower.runs[0].step >= 25,
               [lead, follower])
        mirror = follower.runs[0]
        assert mirror.id == run.id and mirror.color == run.color and mirror.read_only
        s = follower.state.slot_of[run.id]
        loss = follower.curves.loss.sources[s.index].data["step"]
        assert len(loss) >= 25 and s.latest_probe is not None
        assert loss[0] == 1                                     # from the run's first record
        follower.stop()                                         # does nothing to the run
        follower.toggle_pause()
        at = run.handle.step
        _until(lambda: run.handle.step > at + 5, [lead, follower])
        assert run.handle.state == "running"
        lead.reset()                                            # the leader's reset empties it
        _until(lambda: not follower.runs, [lead, follower])
        lead.dispose()
        _until(lambda: "has closed" in follower.controls.follow_banner.object, [follower])
    finally:
        for d in (follower, stranger, lead):
            d.dispose()
        eng.join(30)


def test_a_follow_link_finds_a_page_of_another_web_process_on_the_same_cluster(
        mnist_dir, monkeypatch):
    """panel serve --num-procs N on one cluster: a follow link opened in another web
    process (here: another engine on the same scheduler) shows the page's runs, live."""
    import dask
    from distributed import LocalCluster

    from bnlstm.runs import DaskEngine
    from bnlstm_app import dashboard as dmod
    _, _, Dashboard = _dashboards(mnist_dir, monkeypatch)
    cfg = dict(task="row", hidden=16, batch_size=16, steps=100000, eval_every=20, probe_every=10)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster:
        one, two = (DaskEngine(address=cluster.scheduler_address) for _ in range(2))
        lead = Dashboard(sync_url=False, engine=one)
        lead.config.param.update(**cfg)
        dmod._FOLLOWABLE.pop(lead.share_token)         # as if it were another process's page
        follower = Dashboard(sync_url=False, engine=two, follow=lead.share_token)
        stranger = Dashboard(sync_url=False, engine=two, follow="no-such-token")
        try:
            assert follower.leader is None and follower.remote is not None   # not this process's
            run = lead.start()
            _until(lambda: len(follower.runs) == 1 and follower.runs[0].step >= 25,
                   [lead, follower, stranger], timeout=120)
            assert "read-only" in follower.controls.follow_banner.object
            assert "not open on this server" in stranger.controls.follow_banner.object
            mirror = follower.runs[0]
            assert (mirror.id, mirror.color, mirror.label) == (run.id, run.color, run.label)
            assert mirror.read_only
            s = follower.state.slot_of[run.id]
            assert s.index == lead.state.slot_of[run.id].index           # the same slot and colour
            loss = follower.curves.loss.sources[s.index].data["step"]
            assert loss[0] == 1 and s.latest_probe is not None
            follower.stop()                                        # does nothing to the run
            at = run.handle.step
            _until(lambda: run.handle.step > at + 5, [lead, follower])
            lead.dispose()                                         # the page closes
            _until(lambda: "has closed" in follower.controls.follow_banner.object and follower.runs
                   and follower.runs[0].state == "stopped", [follower])   # as it ended
        finally:
            for d in (follower, stranger, lead):
                d.dispose()
            for e in (one, two):
                e.close()


def test_a_page_whose_browser_stops_reading_gets_no_more_updates_until_it_catches_up(
        mnist_dir, monkeypatch):
    from types import SimpleNamespace as NS
    from bnlstm_app import dashboard as dmod
    stream = NS(_total_write_index=9_000_000, _total_write_done_index=1_000_000)
    conn = NS(_socket=NS(ws_connection=NS(stream=stream)))
    doc = NS(session_context=NS(_session=NS(_subscribed_connections=[conn])))
    assert dmod.unsent_bytes(doc) == 8_000_000 and dmod.unsent_bytes(None) == 0
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    unsent = {"n": 0}
    monkeypatch.setattr(dmod, "unsent_bytes", lambda doc: unsent["n"])
    try:
        run = lead.start()
        _until(lambda: run.step >= 5, [lead])
        unsent["n"] = dmod.MAX_UNSENT_BYTES + 1            # the browser froze
        at = len(_loss_steps(lead, run))
        _until(lambda: run.handle.step > run.step + 20, [lead])
        assert len(_loss_steps(lead, run)) == at      # nothing more sent
        unsent["n"] = 0                                    # it reads again: it catches up
        _until(lambda: len(_loss_steps(lead, run)) >= run.handle.step - 5,
               [lead])
    finally:
        lead.dispose()
        eng.join(30)


def test_a_pages_first_document_is_its_top_and_the_other_sections_join_it_with_their_data(
        mnist_dir, monkeypatch):
    """A served page sends the controls and the learning curves first; sections 2 on join
    once the browser has drawn them (``attach_lower``, on ``document_ready``), holding
    what the runs sent in between."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    doc = Document()

    def classes():
        return {c for m in doc.models for c in (getattr(m, "css_classes", None) or [])}
    try:
        with set_curdoc(doc):
            lead.template().server_doc(doc)
        first = len(doc.models)
        assert {"btn-start", "plot-loss", "plot-val", "lower-sections"} <= classes()
        assert not {"plot-sat", "plot-hist", "plot-grad", "plot-kurt", "w-focus"} & classes()
        run = lead.start()
        sat = lead.saturation.sat.sources[lead.state.slot_of[run.id].index]
        _until(lambda: run.step >= 30 and len(sat.data["step"]) > 0, [lead])
        with set_curdoc(doc):
            lead.attach_lower()
        assert {"plot-sat", "plot-hist", "plot-grad", "plot-kurt", "w-focus",
                "attached"} <= classes()
        assert len(doc.models) > 2 * first                 # most of the page came second
        assert doc.get_model_by_id(sat.id) is sat and len(sat.data["step"]) > 0
        n = len(doc.models)
        with set_curdoc(doc):
            lead.attach_lower()                            # once only
        assert len(doc.models) == n
    finally:
        lead.dispose()
        eng.join(30)


def test_a_slots_layers_join_the_figures_when_it_first_shows_a_run(mnist_dir, monkeypatch):
    """No run, no glyphs: a slot draws its layer in every per-run figure (and its hover
    tool) the first time it shows a run, and a later run in the same slot adds nothing."""
    from bokeh.models import GlyphRenderer
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    lead.attach_lower()
    layers = [lead.curves.loss, lead.curves.val, lead.saturation.sat, lead.saturation.hist,
              lead.gradients.grad, lead.gradients.units, lead.gradients.kurt]
    figures = [lr.figure for lr in layers]

    def drawn(p):
        return [r for r in p.renderers if isinstance(r, GlyphRenderer)]

    def hovered(p):
        return [r for t in p.tools if hasattr(t, "tooltips") and isinstance(t.renderers, list)
                for r in t.renderers]
    try:
        assert all(drawn(p) == [] for p in figures)
        run = lead.start()
        slot = lead.state.slot_of[run.id]
        for p in figures:
            assert drawn(p) and {r.data_source for r in drawn(p)} <= {
                lr.sources[slot.index] for lr in layers}
            assert all(r.nonselection_glyph is None for r in drawn(p))
        assert all(len(hovered(p)) == 1 for p in (figures[0], figures[1], figures[2],
                                                  figures[4], figures[6]))
        counts = [len(drawn(p)) for p in figures]
        second = lead.start()
        assert lead.state.slot_of[second.id] is not slot
        assert [len(drawn(p)) for p in figures] == [2 * n for n in counts]
        for r in (run, second):
            r.stop()
        _until(lambda: not any(r.live for r in lead.runs), [lead])
        lead.reset()
        third = lead.start()                   # back in slot 0: its layer is already there
        assert lead.state.slot_of[third.id] is slot
        assert [len(drawn(p)) for p in figures] == [2 * n for n in counts]
    finally:
        lead.dispose()
        eng.join(30)


def _wire(doc):
    """What a served session writes to its browser: each change event serialized as it
    happens (bokeh's ServerSession: one PATCH-DOC per event). -> the list of messages."""
    from bokeh.document.events import DocumentPatchedEvent
    from bokeh.protocol import Protocol
    proto, sent = Protocol(), []

    def on_change(event):
        if isinstance(event, DocumentPatchedEvent):
            sent.append(json.loads(proto.create("PATCH-DOC", [event]).content_json))
    doc.on_change(on_change)
    return sent


def _defs_and_refs(obj, defs, refs):
    if isinstance(obj, dict):
        if obj.get("type") == "bytes":                  # a binary buffer's id, not a model
            return
        if obj.get("type") == "object" and "id" in obj:
            defs.append(obj["id"])
        elif set(obj) == {"id"}:
            refs.append(obj["id"])
        for v in obj.values():
            _defs_and_refs(v, defs, refs)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _defs_and_refs(v, defs, refs)


def _check_wire(first_doc_json, messages):
    """Every model reaches the browser once: defined in one message, and named only
    after (bokeh's client warns 'reference already known' for a second definition and
    fails with UnknownReferenceError for a name it never got)."""
    known = []
    _defs_and_refs(first_doc_json, known, [])
    known = set(known)
    for i, msg in enumerate(messages):
        defs, refs = [], []
        _defs_and_refs(msg, defs, refs)
        again = set(defs) & known
        assert not again and len(defs) == len(set(defs)), f"message {i} sends {again} again"
        known |= set(defs)
        assert set(refs) <= known, f"message {i} names models never sent: {set(refs) - known}"


def test_what_a_page_sends_defines_each_model_once_through_starts_and_follows(
        mnist_dir, monkeypatch):
    from bokeh.document import Document
    from panel.io.state import set_curdoc
    eng, lead, Dashboard = _dashboards(mnist_dir, monkeypatch)
    follower = Dashboard(sync_url=False, engine=eng, follow=lead.share_token)
    pages = []
    try:
        for d in (lead, follower):
            doc = Document()
            with set_curdoc(doc):
                d.template().server_doc(doc)
            first = doc.to_json(deferred=False)
            doc.models.flush_synced()                   # the browser has the first document
            pages.append((d, doc, first, _wire(doc)))
        for d, doc, _, _ in pages:
            with set_curdoc(doc):
                d.attach_lower()                        # on the browser's document_ready
        with set_curdoc(pages[0][1]):
            a = lead.start()                            # slot 0's layers join the figures

        def drain_all():
            for d, doc, _, _ in pages:
                with set_curdoc(doc):
                    d._next_drain_at = 0.0
                    d.drain()
        for _ in range(100):
            drain_all()
            if a.step >= 20 and len(follower.runs) == 1:
                break
            time.sleep(0.05)
        with set_curdoc(pages[0][1]):
            b = lead.start()                            # slot 1's
        for _ in range(40):
            drain_all()
            if len(follower.runs) == 2 and b.step >= 5:
                break
            time.sleep(0.05)
        assert len(follower.runs) == 2                  # the follower drew both slots too
        for d, doc, first, sent in pages:
            assert len(sent) > 10
            _check_wire(first, sent)
    finally:
        for d in (follower, lead):
            d.dispose()
        eng.join(30)


def test_the_text_task_without_a_training_file_says_so_when_chosen(ptb_dir, tmp_path, monkeypatch):
    """A PTB folder with the held-out files only (as here, and as many people have): the
    page's text menu offers what works, PTB's held-out split first (and says why), and a
    choice that would fail (the whole Penn Treebank, asked for by a run's data options) says
    at once that its runs would fail, and what works; nothing to Start."""
    from bnlstm import tasks
    from bnlstm.runs import ThreadEngine
    from bnlstm.tasks.text import PTB_FILE_NAMES
    from bnlstm.tasks.text.data import PTB_FILES
    from bnlstm_app.dashboard import Dashboard
    assert list(PTB_FILE_NAMES) == list(PTB_FILES)
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))
    assert not (ptb_dir / "ptb.char.train.txt").exists()
    d = Dashboard(sync_url=False, engine=ThreadEngine(max_runs=1))
    try:
        assert not d.controls.task_alert.visible                      # MNIST: nothing to say
        d.config.task = "text"
        own = d.settings.own_text
        assert list(own.w_source.options.values()) == ["ptb-heldout", "python-docs"]
        assert own.w_source.value == "ptb-heldout" and own.source_note.visible
        assert "no training file" in own.source_note.object and str(ptb_dir) not in \
            own.source_note.object                                    # no server path shown
        assert not d.controls.task_alert.visible                      # what is chosen works
        assert d._new_run().data_options == {"source": "ptb-heldout"}
        own.w_source.value = "python-docs"
        assert d._new_run().data_options == {"source": "python-docs"}
        problem = tasks.get("text").data_problem()                    # the whole PTB: fails
        assert "lacks ptb.char.train.txt" in problem and "unset BNLSTM_PTB_DIR" in problem
        assert "Text to train on" in problem and "Your own text" in problem
        assert "--text-source ptb-heldout" in problem and str(ptb_dir) not in problem
        d.config.task = "row"
        assert not d.controls.task_alert.visible
        full = tmp_path / "ptb"
        full.mkdir()
        for n in PTB_FILE_NAMES:
            (full / n).write_text("x")
        monkeypatch.setenv("BNLSTM_PTB_DIR", str(full))
        assert tasks.get("text").data_problem() is None
        assert tasks.get("text").data_problem(text_file="mine.txt") is None
    finally:
        d.dispose()


def test_the_csv_of_all_runs_has_every_runs_rows_and_says_whose(mnist_dir, monkeypatch):
    import csv
    import io
    from bnlstm_app.sections.export import all_runs_csv
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    try:
        lead.config.steps = 6
        a = lead.start()
        lead.config.model = "lstm"
        b = lead.start()
        _until(lambda: a.step >= 6 and b.step >= 6 and not a.live and not b.live, [lead])
        rows = list(csv.DictReader(io.StringIO(all_runs_csv(lead.runs).decode())))
        for run in (a, b):
            mine = [r for r in rows if r["run"] == str(run.id)]
            own = list(csv.DictReader(io.StringIO(run.metrics_csv().decode())))
            assert len(mine) == len(own) > 0 and mine[0]["model"] == run.config.model
            assert [r["loss"] for r in mine] == [r["loss"] for r in own]
        assert lead.export.all_csv_bytes().getvalue() == all_runs_csv(lead.runs)
    finally:
        lead.dispose()
        eng.join(30)


def test_a_comparison_can_join_the_runs_on_the_page(mnist_dir, monkeypatch):
    """'A comparison joins them': a second preset is drawn beside the first's ended runs
    (four runs, four slots, one legend); by default a preset replaces the page's runs."""
    from bnlstm_app.lessons import preset
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    lead.attach_lower()
    try:
        first = lead.run_preset(preset("lstm")[1])
        assert len(first) == 2 and all(first)
        for r in first:
            r.stop()
        _until(lambda: not any(r.live for r in lead.runs), [lead])
        lead.controls.w_keep.value = True
        second = lead.run_preset(preset("gamma")[1])
        assert len(lead.runs) == 4 and lead.runs[:2] == first and all(second)
        slots = {lead.state.slot_of[r.id].index for r in lead.runs}
        assert len(slots) == 4
        legend = lead.curves.legend.pane.object
        assert all(r.label in legend for r in lead.runs)
        for r in second:
            r.stop()
        _until(lambda: not any(r.live for r in lead.runs), [lead])
        third = lead.run_preset(preset("stats")[1], keep=False)
        assert lead.runs == third
    finally:
        lead.dispose()
        eng.join(30)


def test_the_settings_panel_shows_the_focused_runs_settings(mnist_dir, monkeypatch):
    """After a preset the sidebar shows what trains (the focused run's settings), picking
    another run shows its own, and setting the table this way changes no run."""
    from bnlstm_app.lessons import preset
    eng, lead, _ = _dashboards(mnist_dir, monkeypatch)
    lead.attach_lower()
    lead.config.lr = 3e-3
    try:
        low, high = lead.run_preset(preset("gamma")[1])
        high.set("lr", 1e-2)                        # a run's own live setting
        assert lead.state.focus == high.id and lead.config.gamma_init == 1.0
        lead.statistics.w_focus.value = low.id
        assert lead.config.gamma_init == 0.1 and lead.config.lr == 3e-3
        assert high.config.lr == 1e-2                # the sync set no run's setting
        assert not lead.settings.new_run_hint.visible
    finally:
        lead.dispose()
        eng.join(30)


def test_the_text_menus_choice_is_in_the_link(ptb_dir, monkeypatch):
    """``?text=SOURCE`` picks the text task's "Text to train on" and the page's address
    keeps the choice, so the held-out comparison can be sent as a link; a text this server
    does not offer is named, with the choices, and the menu keeps what works."""
    from panel.io.location import Location
    from bnlstm.runs import ThreadEngine
    from bnlstm_app.dashboard import Dashboard
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))
    d = Dashboard(sync_url=False, engine=ThreadEngine(max_runs=1))
    try:
        loc = Location(search="?task=text&text=python-docs&steps=30")
        d._sync_url(loc)
        own = d.settings.own_text
        assert d.config.task == "text" and d.config.steps == 30
        assert own.w_source.value == "python-docs" and d._url_problems == []
        assert d._new_run().data_options == {"source": "python-docs"}
        own.w_source.value = "ptb-heldout"                   # the choice goes to the address
        assert loc.query_params.get("text") == "ptb-heldout", loc.search
        d.config.hidden = 64          # Panel rewrites the address: permutation=true -> True
        assert "permutation=True" in loc.search, loc.search
        again = Dashboard(sync_url=False, engine=ThreadEngine(max_runs=1))
        try:                          # the address as a page leaves it opens the same page
            again._sync_url(Location(search=loc.search))
            assert again._url_problems == [] and not again.controls.url_alert.visible
            assert again.config.to_dict() == d.config.to_dict()
            assert again.settings.own_text.w_source.value == "ptb-heldout"
        finally:
            again.dispose()
        bad = Dashboard(sync_url=False, engine=ThreadEngine(max_runs=1))
        try:
            loc2 = Location(search="?task=text&text=/etc/passwd&lr=abc&preset=nosuch")
            bad._sync_url(loc2)
            said = " ".join(bad._url_problems)
            assert "'text=/etc/passwd' is not one of this server's texts" in said, said
            assert "ptb-heldout, python-docs" in said and "'lr=abc' is not valid" in said
            assert "unknown preset 'nosuch'" in said               # none lost to another
            assert bad.settings.own_text.w_source.value == "ptb-heldout"
            assert loc2.query_params.get("text") == "ptb-heldout"   # the bad one replaced
            assert bad.controls.url_alert.visible
        finally:
            bad.dispose()
    finally:
        d.dispose()
