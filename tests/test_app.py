"""The dashboard's parts that need no browser: what a session may be shown of the server."""
import io
import json
import zipfile

from bnlstm.records import zip_run_dir
from bnlstm_app.runs import public_record, redact_paths


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
    from bnlstm.engine import ThreadEngine
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
        names = {getattr(o, "name", None) for o in follower.main[0].objects}
        assert not names & {"Start", "Pause", "Step", "Stop", "Reset"}
        assert "read-only" in follower.follow_banner.object
        assert "not open on this server" in stranger.follow_banner.object
        run = lead.start()
        _until(lambda: len(follower.runs) == 1 and follower.runs[0].step >= 25,
               [lead, follower])
        mirror = follower.runs[0]
        assert mirror.id == run.id and mirror.color == run.color and mirror.read_only
        s = follower.streams[run.id]
        assert len(s.loss.data["step"]) >= 25 and s.latest_probe is not None
        assert s.loss.data["step"][0] == 1                      # from the run's first record
        follower.stop()                                         # does nothing to the run
        follower.toggle_pause()
        at = run.handle.step
        _until(lambda: run.handle.step > at + 5, [lead, follower])
        assert run.handle.state == "running"
        lead.reset()                                            # the leader's reset empties it
        _until(lambda: not follower.runs, [lead, follower])
        lead.dispose()
        _until(lambda: "has closed" in follower.follow_banner.object, [follower])
    finally:
        for d in (follower, stranger, lead):
            d.dispose()
        eng.join(30)


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
        at = len(lead.streams[run.id].loss.data["step"])
        _until(lambda: run.handle.step > run.step + 20, [lead])
        assert len(lead.streams[run.id].loss.data["step"]) == at      # nothing more sent
        unsent["n"] = 0                                    # it reads again: it catches up
        _until(lambda: len(lead.streams[run.id].loss.data["step"]) >= run.handle.step - 5,
               [lead])
    finally:
        lead.dispose()
        eng.join(30)
