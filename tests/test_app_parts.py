"""The dashboard's parts that hold no Panel: the record feed, the status, the URL state."""
from types import SimpleNamespace

import numpy as np

from app.feed import digest
from app.status import alerts, status_html
from app.url_state import validate_query
from bnlstm import tasks
from bnlstm.training.events import RunState


def _run(task="row", **kw):
    base = dict(id=1, label="BN-LSTM row", color="#123456", state="running", reason="", step=0,
                rate=0.0, info={}, metric=tasks.get(task).metric, last_val=None, best_val=None,
                test=None, error="", ema=None, ema_n=0, launched=True, cancelled=False,
                config=SimpleNamespace(steps=100), queue_position=lambda: 0)
    base.update(kw)
    base["seen"] = RunState(base["metric"])     # what digest() folds the records into
    return SimpleNamespace(**base)


def test_digest_follows_the_metrics_direction_and_continues_the_ema():
    run = _run("text")
    recs = [{"kind": "info", "device": "cpu", "data_kind": "python-docs"},
            {"kind": "train", "step": 1, "loss": 4.0, "updates_per_s": 2.0},
            {"kind": "train", "step": 2, "loss": 2.0, "updates_per_s": 3.0},
            {"kind": "val", "step": 2, "loss": 1.5, "bpc": 3.0, "acc": 0.2},
            {"kind": "probe", "step": 2, "saturation": {"g": 0.25}},
            {"kind": "val", "step": 4, "loss": 1.9, "bpc": 3.5, "acc": 0.1},
            {"kind": "state", "state": "paused", "step": 4, "reason": ""}]
    d = digest(run, recs, smoothing=0.5)
    assert d.steps == [1, 2] and np.allclose(d.smooth, [4.0, 3.0])
    seen = run.seen
    assert d.val_values == [3.0, 3.5] and seen.best_val == 3.0 and seen.last_val == 3.5  # lower wins
    assert d.probe["step"] == 2 and d.sat_rows[0][:2] == (2, 0.25) and np.isnan(d.sat_rows[0][2])
    assert (seen.state, seen.step, seen.rate) == ("paused", 4, 3.0)
    d2 = digest(run, [{"kind": "train", "step": 5, "loss": 1.0}], smoothing=0.5)
    assert np.allclose(d2.smooth, [2.0])                          # the EMA goes on
    mnist = _run("row")
    digest(mnist, [{"kind": "val", "step": 1, "loss": 1, "acc": 0.5},
                   {"kind": "val", "step": 2, "loss": 1, "acc": 0.4}], 0.9)
    assert mnist.seen.best_val == 0.5                             # higher wins


def test_status_speaks_each_runs_metric_and_data():
    text = _run("text", info={"device": "cpu", "data_kind": "python-docs", "data_is_full": False},
                last_val=2.31,
                best_val=2.3)
    mnist = _run("row", id=2, info={"device": "cpu", "data_is_full": False}, last_val=0.9)
    out = status_html([text, mnist], {"active": 1, "max_runs": 2, "queued": 0})
    assert "val bpc 2.310 (best 2.300)" in out and "Python's docs" in out
    assert "val acc 0.900" in out and "bundled sample" in out
    assert "Ready." in status_html([], {"active": 0, "max_runs": 2, "queued": 0})
    following = status_html([], {"active": 0, "max_runs": 2, "queued": 0}, following=True)
    assert "Start" not in following and "page you follow" in following
    data, fail = alerts([text])
    assert "The text is" in data and fail is None
    _, fail = alerts([_run(state="diverged", reason="the loss became nan at step 3")])
    assert "diverged" in fail and "nan at step 3" in fail


def test_url_values_are_checked_and_unknown_ones_named():
    good, problems = validate_query({"task": "text", "seq_len": "50", "lr": "10",
                                     "bogus": "1", "hidden": "-3"}, {"hidden": 100})
    assert good == {"task": "text", "seq_len": 50, "lr": 10.0}
    assert any("unknown URL parameter 'bogus'" in p for p in problems)
    assert any("'hidden=-3' is not valid" in p and "using the default 100" in p for p in problems)


def test_bokehs_curdoc_stack_is_one_per_thread_once_pages_are_built_off_the_loop():
    import threading
    from app.server.offloop import _PerThreadStack
    stack = _PerThreadStack(["loop's page"])
    seen = {}

    def other():
        seen["empty at first"] = len(stack) == 0
        stack.append("built page")
        seen["own top"] = stack[-1]
        stack.pop()
    stack.append("loop's callback")
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"empty at first": True, "own top": "built page"}
    assert stack.pop() == "loop's callback" and stack[-1] == "loop's page" and len(stack) == 1


def test_the_build_thread_does_a_live_pages_work_before_queued_builds():
    import asyncio
    import threading
    from app.server.offloop import BUILD, LIVE, THREAD_NAME, _BuildThread
    worker, gate, done = _BuildThread(), threading.Event(), []

    def job(name):
        done.append((name, threading.current_thread().name))
        return name

    async def main():
        first = worker.submit(BUILD, gate.wait)          # the thread is busy with a build
        later = [worker.submit(BUILD, job, "build 2"), worker.submit(BUILD, job, "build 3"),
                 worker.submit(LIVE, job, "attach")]
        gate.set()
        await first
        return await asyncio.gather(*later)

    got = {}          # on a thread of its own: an earlier test may leave a loop running here
    runner = threading.Thread(target=lambda: got.update(result=asyncio.run(main())))
    runner.start()
    runner.join(30)
    assert got.get("result") == ["build 2", "build 3", "attach"]
    assert [name for name, _ in done] == ["attach", "build 2", "build 3"]
    assert {thread for _, thread in done} == {THREAD_NAME}


def test_the_build_thread_keeps_nothing_of_a_finished_job():
    """A closed page's last job (its document, in the job's arguments) must not stay
    alive while the thread waits for the next one: that kept a whole page in memory."""
    import asyncio
    import gc
    import threading
    import weakref
    from app.server.offloop import LIVE, _BuildThread

    class Page:                   # stands for a document
        pass

    worker, page = _BuildThread(), Page()
    gone = weakref.ref(page)

    async def main():
        await worker.submit(LIVE, lambda p: None, page)  # noqa: F821 (deleted below, on purpose)

    runner = threading.Thread(target=lambda: asyncio.run(main()))
    runner.start()
    runner.join(30)
    del page
    for _ in range(50):            # the thread is now waiting for its next job
        gc.collect()
        if gone() is None:
            break
        threading.Event().wait(0.02)
    assert gone() is None, "the build thread still holds its last job's arguments"


def test_a_sessions_connections_can_be_removed_while_the_build_thread_sends_a_patch():
    """The build thread lets a page's held changes go (Bokeh's ``_document_patched`` loops
    over the session's connections) while the event loop removes the connection of a tab
    that has just closed. A plain set raised "Set changed size during iteration" there,
    the attach failed and the closed page stayed alive for a minute."""
    from types import SimpleNamespace

    import pytest
    from bokeh.document import Document
    from bokeh.document.events import TitleChangedEvent
    from bokeh.server.session import ServerSession

    from app.server.offloop import _snapshot_connections

    def session_with_two_tabs():
        session = ServerSession("s", Document())
        sent = []

        class Connection:
            def __init__(self, name, closes=None):
                self.name, self.closes = name, closes

            def send_patch_document(self, event):
                sent.append(self.name)
                if self.closes is not None:     # the loop, meanwhile: that tab closed
                    session.unsubscribe(self.closes)
                return None

        closing = Connection("closing")
        session.subscribe(Connection("open", closes=closing))
        session.subscribe(closing)
        session._pending_writes = []           # as while the document lock is held
        return session, sent

    def patch(session):
        session._document_patched(TitleChangedEvent(session.document, "t", setter=None))

    plain, _ = session_with_two_tabs()
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        patch(plain)

    session, sent = session_with_two_tabs()
    doc = SimpleNamespace(session_context=SimpleNamespace(session=session))
    _snapshot_connections(doc)
    _snapshot_connections(doc)                 # once per session: a second call changes nothing
    patch(session)
    assert sorted(sent) == ["closing", "open"] and session.connection_count == 1
    session.subscribe("another tab")           # still a set to Bokeh
    assert session.connection_count == 2 and "another tab" in session._subscribed_connections


def test_the_web_processs_allocator_is_chosen_as_the_dashboard_script_chooses_it():
    import pytest
    from app.server.memory import web_process_env
    assert web_process_env({"PYTHONMALLOC": "debug"})["PYTHONMALLOC"] == "malloc"   # the default
    env = web_process_env({"BNLSTM_WEB_PYTHONMALLOC": "pymalloc", "OTHER": "1"})
    assert (env["PYTHONMALLOC"], env["OTHER"]) == ("pymalloc", "1")
    with pytest.raises(ValueError, match="use malloc .* or pymalloc"):
        web_process_env({"BNLSTM_WEB_PYTHONMALLOC": "jemalloc"})


def test_a_server_started_by_hand_on_pythons_allocator_says_so_once(monkeypatch):
    from app.server import memory
    said = []
    for env, expect in (({"PYTHONMALLOC": "malloc", "BNLSTM_WEB_PYTHONMALLOC": "malloc"}, []),
                        ({"BNLSTM_WEB_PYTHONMALLOC": "pymalloc"}, []),       # chosen: no word
                        ({}, ["keeps a closed page's memory"])):             # panel serve app/
        monkeypatch.delenv("PYTHONMALLOC", raising=False)
        monkeypatch.delenv("BNLSTM_WEB_PYTHONMALLOC", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(memory, "_NOTED", False)
        said.clear()
        memory.note_allocator(said.append)
        memory.keep_allocator_to_this_process()        # the first page takes PYTHONMALLOC away
        memory.note_allocator(said.append)             # a later page: decided already
        assert len(said) == len(expect) and all(e in s for e, s in zip(expect, said)), said


def test_the_handle_and_the_page_reduce_records_the_same_way():
    """One reducer (RunState.apply): a run handle's state and a page's view of the same
    records agree, and a DashboardRun's fields are read from it."""
    from app.runs import DashboardRun
    from bnlstm import TrainConfig
    from bnlstm.runs.handle import RunHandle
    cfg = TrainConfig(task="row", steps=5)
    page = DashboardRun(cfg, color="#000000", engine=SimpleNamespace())
    handle = RunHandle(SimpleNamespace(), cfg)
    recs = [{"kind": "state", "state": "running", "step": 0, "reason": ""},
            {"kind": "train", "step": 3, "loss": 1.0, "updates_per_s": 7.0},
            {"kind": "val", "step": 3, "loss": 1.0, "acc": 0.4},
            {"kind": "test", "step": 5, "loss": 1.0, "acc": 0.35},
            {"kind": "state", "state": "finished", "step": 5, "reason": "5 updates"}]
    handle._receive(recs)
    digest(page, recs, smoothing=0.0)
    assert (handle.state, handle.step, handle.reason) == ("finished", 5, "5 updates")
    assert (page.state, page.step, page.reason) == (handle.state, handle.step, handle.reason)
    assert (page.best_val, page.test, page.rate) == (0.4, 0.35, 7.0)
    assert handle.ended and not handle.live


def test_a_checksum_in_a_failure_does_not_squeeze_the_status_table():
    digest_ = "a3f1" * 16                                           # 64 hex digits
    bad = _run(state="failed", reason=f"mnist.gz: checksum mismatch: expected {digest_}, got 00ff")
    row = status_html([bad], {"active": 0, "max_runs": 2, "queued": 0})
    assert digest_ not in row and "a3f1a3f1a3\u2026" in row           # the table: 10 digits
    _, fail = alerts([bad])
    assert digest_ in fail and "overflow-wrap:anywhere" in fail        # the box: all of it, wrapped
    own = _run("text", info={"device": "cpu", "data_kind": "own", "data_is_full": False})
    assert "your text" in status_html([own], {"active": 0, "max_runs": 2, "queued": 0})
