"""The run engines (bnlstm/runs/): runs on Dask worker processes, or threads, controlled live.

One embedded cluster of two worker processes serves the whole module (it is what a
dashboard server starts); the thread engine is tested with the same checks.
"""
import io
import json
import os
import signal
import time
import zipfile

import pytest
import torch

from bnlstm import TrainConfig
from bnlstm.runs.dask import DaskEngine, _saturation_warning, queue_view
from bnlstm.runs.threads import ThreadEngine
from bnlstm.runs.worker import WORKER_DIED, train_on_worker

FAST = dict(task="row", hidden=16, batch_size=16, eval_every=1000, probe_every=0, lr=1e-3)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, **kw})


def wait_for(cond, timeout=60.0, what="the condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture(scope="module")
def dask_engine(mnist_dir):
    os.environ["BNLSTM_MNIST_DIR"] = str(mnist_dir)          # the workers inherit it
    eng = DaskEngine(n_workers=2, pause_timeout=3.0)
    eng.wait_ready(120)
    yield eng
    eng.close()


@pytest.fixture(params=["dask", "threads"])
def engine(request, dask_engine, mnist_dir):
    if request.param == "dask":
        yield dask_engine
    else:
        eng = ThreadEngine(max_runs=2)
        yield eng
        eng.close()
        eng.join(30)


def train_steps(h):
    return [r["step"] for r in h.history if r["kind"] == "train"]


def test_a_run_streams_its_records_and_obeys_pause_step_resume_stop(engine):
    h = engine.submit(cfg(steps=100000))
    reader = h.reader()
    wait_for(lambda: h.state == "running" and h.step >= 5, what="training")
    t0 = time.monotonic()
    h.pause()
    wait_for(lambda: h.state == "paused", 5, "paused")
    assert time.monotonic() - t0 < 1.0                  # Pause acts within a second
    time.sleep(0.6)
    at = h.step
    time.sleep(0.6)
    assert h.step == at                                  # nothing trains while paused
    h.step_once()
    wait_for(lambda: h.step == at + 1, 5, "one step")
    time.sleep(0.5)
    assert h.step == at + 1 and h.state == "paused"
    h.set("lr", 5e-4)                                    # a live setting reaches the run
    h.resume()
    wait_for(lambda: h.step >= at + 5, 10, "resumed")
    t0 = time.monotonic()
    h.stop()
    assert h.wait(10) and h.state == "stopped"
    assert time.monotonic() - t0 < 2.0
    steps = train_steps(h)
    assert steps == list(range(1, len(steps) + 1))       # every update, once, in order
    lrs = {r["lr"] for r in h.history if r["kind"] == "train" and r["step"] > at + 3}
    assert lrs == {5e-4}
    got = reader.drain()
    assert got == h.history[:len(got)] and reader.drain(limit=1) == h.history[len(got):][:1]
    summary = json.loads(h.files["summary.json"])
    assert summary["state"] == "stopped" and summary["steps"] == h.step
    assert "checkpoint.pt" in h.files and "config.json" in h.files


def test_a_command_and_its_answer_go_when_they_happen_not_at_the_next_flush_or_tick(
        dask_engine, monkeypatch):
    """A command rings its run's bell (the worker reads it at once) and the trainer's answer
    rings it back (the worker sends it at once, and rings the pump's bell): with the
    worker's flush and the pump's tick both at 30 s, the run still starts, pauses, steps,
    resumes and stops within seconds."""
    import bnlstm.runs.dask as engine_mod
    monkeypatch.setattr(dask_engine, "flush_s", 30.0)
    monkeypatch.setattr(engine_mod, "TICK_S", 30.0)
    monkeypatch.setattr(engine_mod, "IDLE_TICK_S", 30.0)
    try:
        h = dask_engine.submit(cfg(steps=100000))
        wait_for(lambda: h.state == "running", 60, "running")
        h.pause()
        wait_for(lambda: h.state == "paused", 10, "paused")
        at = h.step
        assert at >= 1 and train_steps(h) == list(range(1, at + 1))  # the updates before it
        h.step_once()
        wait_for(lambda: h.step == at + 1, 10, "the step's update")
        h.resume()
        wait_for(lambda: h.state == "running", 10, "running again")
        h.stop()
        wait_for(lambda: h.state == "stopped", 10, "stopped")
    finally:
        monkeypatch.undo()
        dask_engine._wake.set()         # the pump's 30 s wait ends now
    assert h.wait(60)


def test_a_finished_run_tests_its_best_weights(engine):
    """Best and last differ: 20 stepped updates at lr 1e-2 (validated at step 20), then a
    live lr of 5 wrecks the model by step 40. The test must score the step-20 weights."""
    h = engine.submit(cfg(steps=40, eval_every=20, lr=1e-2), mode="paused")
    for k in range(1, 21):
        h.step_once()
        wait_for(lambda: len(train_steps(h)) >= k, 30, f"update {k}")
    wait_for(lambda: any(r["kind"] == "val" for r in h.history), 30, "the step-20 validation")
    h.set("lr", 5.0)
    h.resume()
    assert h.wait(120), h
    assert h.state == "finished" and h.step == 40
    val = {r["step"]: r["acc"] for r in h.history if r["kind"] == "val"}
    assert sorted(val) == [20, 40] and val[20] > val[40] + 0.05, val
    s = json.loads(h.files["summary.json"])
    assert s["best_step"] == 20 and s["best_val_acc"] == val[20]
    assert s["test_acc"] > val[40] + 0.05, (s["test_acc"], val)   # not the wrecked weights
    ck = torch.load(io.BytesIO(h.files["checkpoint.pt"]), weights_only=True)
    assert ck["config"]["hidden"] == 16 and ck["step"] == 20


def test_runs_wait_their_turn_in_order_and_a_queued_run_can_be_stopped(dask_engine):
    eng = dask_engine
    long = [eng.submit(cfg(steps=100000)) for _ in range(2)]
    wait_for(lambda: all(h.state == "running" for h in long), what="two runs training")
    third, fourth = eng.submit(cfg(steps=20)), eng.submit(cfg(steps=20))
    wait_for(lambda: third.position == 1 and fourth.position == 2, 10, "queue positions")
    assert third.state == "queued" and eng.counts()["queued"] == 2
    assert eng.counts()["active"] == 2 and eng.counts()["max_runs"] == 2
    fourth.stop()                                      # leaves the queue without training
    assert fourth.wait(5) and fourth.state == "stopped" and not train_steps(fourth)
    long[0].stop()
    wait_for(lambda: third.state in ("running", "finished"), 30, "the third run's turn")
    assert third.wait(60) and third.state == "finished"
    long[1].stop()
    assert long[1].wait(10)


def test_a_run_waits_for_a_free_worker_not_behind_a_long_run(dask_engine):
    """Dask gives the first few tasks of a kind straight to a worker, busy or not (it keeps
    tasks on the scheduler only when there are many more of them than threads): a run
    given to the worker that trains a teacher's long run would wait there behind it while
    the other worker is free. Every waiting run must wait on the scheduler instead."""
    eng = dask_engine
    long = eng.submit(cfg(steps=100000))
    wait_for(lambda: long.state == "running" and long.step >= 2, what="the long run training")
    short = [eng.submit(cfg(steps=15)) for _ in range(3)]

    def on_workers(dask_scheduler):
        return sorted(len([t for t in ws.processing if str(t.key).startswith("bnlstm-run")])
                      for ws in dask_scheduler.workers.values())
    wait_for(lambda: all(eng._keys.get(h.id) for h in short), 10, "the runs submitted")
    end = time.monotonic() + 90
    while time.monotonic() < end and not all(h.done.is_set() for h in short):
        assert max(eng.client.run_on_scheduler(on_workers)) <= 1   # one run per worker
        time.sleep(0.2)
    assert all(h.state == "finished" for h in short), [(h.state, h.step) for h in short]
    assert long.state == "running"
    long.stop()
    assert long.wait(10)


def test_a_run_is_a_root_task_and_an_older_dask_falls_back_to_submit(monkeypatch):
    import builtins
    from bnlstm.runs import dask as engine_mod
    task = engine_mod._queued_task("bnlstm-run-x-0", print, (1, 2))
    assert task.data_producer and task.key == "bnlstm-run-x-0"
    real_import = builtins.__import__

    def no_task_spec(name, *args, **kwargs):        # a Dask before the task spec
        if name == "dask._task_spec":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    engine_mod._root_task_class.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_task_spec)
    try:
        assert engine_mod._queued_task("bnlstm-run-y-0", print, ()) is None
    finally:
        monkeypatch.undo()
        engine_mod._root_task_class.cache_clear()
    assert engine_mod._queued_task("bnlstm-run-z-0", print, ()).data_producer


def test_a_cluster_whose_scheduler_sends_a_worker_two_runs_is_named(dask_engine):
    assert _saturation_warning(dask_engine.client) == ""     # the embedded one: 1.0

    class Scheduler:
        WORKER_SATURATION = 1.1                               # Dask's default
        address = "tcp://10.0.0.1:8786"

    class Client:
        scheduler = Scheduler()

        def run_on_scheduler(self, fn):
            return fn(dask_scheduler=Scheduler())
    warning = _saturation_warning(Client())
    assert "worker-saturation 1.1" in warning and "WORKER_SATURATION=1.0" in warning


def test_a_run_paused_too_long_gives_its_worker_back_and_goes_on_later(dask_engine):
    eng = dask_engine                                  # pause_timeout=3 s here
    a = eng.submit(cfg(steps=60), mode="step")        # one update, then paused
    wait_for(lambda: a.step == 1 and a.state == "paused", 60, "one step, paused")
    wait_for(lambda: a.state == "parked", 15, "parked")
    assert not a.done.is_set() and a.live
    parked_at = a.step
    assert "Resume" in a.reason
    b = eng.submit(cfg(steps=10))                      # the freed worker takes new work
    assert b.wait(60) and b.state == "finished"
    a.resume()
    assert a.wait(60) and a.state == "finished", a.reason
    steps = train_steps(a)
    assert steps == list(range(1, 61)) and a.step == 60 and parked_at == 1
    assert json.loads(a.files["summary.json"])["steps"] == 60


def test_a_killed_worker_fails_its_run_and_nothing_else(dask_engine):
    eng = dask_engine
    a, b = eng.submit(cfg(steps=100000)), eng.submit(cfg(steps=100000))
    wait_for(lambda: a.step >= 3 and b.step >= 3, what="both training")
    where = eng.client.run_on_scheduler(lambda dask_scheduler: {
        k: ts.processing_on.address for k, ts in dask_scheduler.tasks.items()
        if str(k).startswith("bnlstm-run") and ts.processing_on is not None})
    pids = eng.client.run(os.getpid)
    os.kill(pids[where[eng._keys[a.id]]], signal.SIGKILL)
    assert a.wait(30) and a.state == "failed" and a.reason == WORKER_DIED
    at = b.step
    wait_for(lambda: b.step > at + 5, 20, "the other run going on")
    b.stop()
    assert b.wait(10) and b.state == "stopped"
    c = eng.submit(cfg(steps=10))                      # the restarted worker takes new runs
    assert c.wait(90) and c.state == "finished"


def test_a_run_over_its_workers_memory_limit_fails_with_that_reason(mnist_dir):
    """A worker process holds ~400 MB before a run (torch, the digits); a 1024-unit BN-LSTM
    on batches of 512 needs a few GB. The worker's nanny restarts it at 95% of its limit:
    the run fails and says so, and the restarted worker trains the next run."""
    os.environ["BNLSTM_MNIST_DIR"] = str(mnist_dir)
    eng = DaskEngine(n_workers=1, memory_limit="1GB")
    try:
        eng.wait_ready(120)
        big = eng.submit(cfg(hidden=1024, batch_size=512, steps=5))
        assert big.wait(120) and big.state == "failed", (big.state, big.reason)
        assert big.reason.startswith("its worker went over its memory limit ("), big.reason
        assert "the limit is 1.0 GB" in big.reason and "BNLSTM_WORKER_MEMORY" in big.reason
        small = eng.submit(cfg(steps=5))
        assert small.wait(90) and small.state == "finished", small.reason
    finally:
        eng.close()


def test_closing_a_handle_ends_its_run_on_the_worker_and_frees_it(dask_engine):
    eng = dask_engine
    h = eng.submit(cfg(steps=100000))
    wait_for(lambda: h.step >= 3, what="training")
    h.close()
    wait_for(lambda: h.id not in eng._handles, 10, "the engine letting go")
    assert h.history == [] and not h.live
    wait_for(lambda: eng.client.run_on_scheduler(queue_view)["running"] == 0, 10,
             "no run left on the workers")


def test_two_web_processes_share_one_cluster_and_one_queue(dask_engine):
    other = DaskEngine(address=dask_engine.client.scheduler.address)   # a second web process
    other.wait_ready(30)
    try:
        mine = [dask_engine.submit(cfg(steps=100000)) for _ in range(2)]
        wait_for(lambda: all(h.state == "running" for h in mine), what="two runs training")
        theirs = other.submit(cfg(steps=10))
        wait_for(lambda: theirs.position == 1, 10, "the other process's run queued")
        assert other.counts()["active"] == 2 and other.counts()["queued"] == 1
        mine[0].stop()
        assert theirs.wait(60) and theirs.state == "finished"
        mine[1].stop()
        assert mine[1].wait(10)
    finally:
        other.close()


def test_a_page_of_another_web_process_on_the_cluster_can_be_followed(dask_engine):
    """A page publishes its runs; a follower in another web process (engine) on the same
    cluster gets each run's records from the first, in order, and cannot change the run."""
    address = dask_engine.client.scheduler.address
    lead, other = DaskEngine(address=address), DaskEngine(address=address)
    lead.wait_ready(30)
    other.wait_ready(30)
    try:
        assert lead.shared and other.shared and not dask_engine.shared
        assert dask_engine.follow("tok") is None          # an embedded cluster: this process only
        h = lead.submit(cfg(steps=100000))
        wait_for(lambda: h.step >= 20, what="training")
        meta = {"id": h.id, "run": 1, "config": h.config.to_dict(), "slot": 0,
                "color": "#1f77b4", "label": "the lecture's run", "mode": "run"}
        lead.publish("tok", [meta])
        page = other.follow("tok")
        nobody = other.follow("no-such-token")
        wait_for(lambda: page.found and h.id in page.handles, 10, "the page found")
        assert page.runs == [meta] and not page.closed
        wait_for(lambda: nobody.found is False, 5, "an unknown link looked up")
        mirror = page.handles[h.id]
        wait_for(lambda: mirror.step >= 20 and mirror.state == "running", 10, "records")
        assert mirror.history[:20] == h.history[:20]        # from the first record
        for control in (mirror.pause, mirror.stop, mirror.step_once, mirror.close):
            control()                                       # a follower changes nothing
        at = h.step
        wait_for(lambda: h.step > at + 5, 10, "the run goes on")
        assert h.state == "running"
        h.stop()
        wait_for(lambda: mirror.state == "stopped", 10, "the stop, seen by the follower")
        assert mirror.history == h.history                  # all of it, in order
        lead.publish("tok", None)                           # the page closed
        wait_for(lambda: page.closed, 5, "the close, seen by the follower")
        assert mirror.history == h.history                  # its runs stay as they ended
        h.close()
        wait_for(lambda: not lead._subs, 10, "the leader lets go of its follower")
        for p in (page, nobody):
            other.unfollow(p)
        wait_for(lambda: not other._follows and h.id not in other._handles, 10, "let go")
    finally:
        lead.close()
        other.close()


def test_a_run_whose_web_process_is_gone_stops(dask_engine):
    """The web process renews a lease; a run whose lease lapses stops itself."""
    from distributed import Queue, Variable
    client = dask_engine.client
    inbox = Queue("test-lapsed-inbox", client=client)
    Variable("test-lapsed-lease", client=client).set(0)          # never renewed
    Queue("bnlstm-run-lapsed-1-cmd", client=client)
    fut = client.submit(train_on_worker, "bnlstm-run-lapsed-1", "lapsed",
                        cfg(steps=100000).to_dict(), "test-lapsed-inbox", "test-lapsed-lease",
                        lease_s=1.0, key="bnlstm-run-lapsed-1", pure=False)
    res = fut.result(timeout=60)
    recs = [r for blob in inbox.get(batch=True) for r in __import__("pickle").loads(blob)[1]]
    last = [r for r in recs if r["kind"] == "state"][-1]
    assert res["state"] == "stopped" and last["state"] == "stopped"
    assert "the web server that started it is gone" in last["reason"]


def test_a_setting_the_task_refuses_fails_the_run_with_its_reason(engine):
    h = engine.submit(cfg(task="text", model="bn-tanh-rnn", steps=5))
    assert h.wait(60) and h.state == "failed" and "bn-tanh-rnn" in h.reason


def test_an_unreachable_scheduler_fails_runs_with_a_message():
    eng = DaskEngine(address="tcp://127.0.0.1:9")
    with pytest.raises(Exception, match="cannot reach the Dask scheduler"):
        eng.wait_ready(60)
    h = eng.submit(cfg(steps=5))
    assert h.wait(10) and h.state == "failed" and "cannot reach" in h.reason
    eng.close()


def test_a_sessions_run_record_zip_has_its_metrics_and_names_no_server_path(dask_engine):
    from bnlstm_app.runs import DashboardRun
    run = DashboardRun(cfg(steps=12, eval_every=6), color="#000", engine=dask_engine)
    run.submit()
    assert run.handle.wait(60)
    z = zipfile.ZipFile(io.BytesIO(run.record_zip()))
    assert sorted(z.namelist()) == ["checkpoint.pt", "config.json", "metrics.csv",
                                    "summary.json"]
    rows = z.read("metrics.csv").decode().splitlines()
    assert rows[0] == "step,kind,loss,acc,grad_norm,lr,elapsed"
    assert sum(r.split(",")[1] == "train" for r in rows[1:]) == 12
    text = z.read("summary.json").decode()
    assert str(os.environ["BNLSTM_MNIST_DIR"]) not in text and ".../mnist" in text
    run.dispose()


def test_the_embedded_clusters_housekeeping_runs_slow_and_its_workers_sample_no_profile(
        dask_engine):
    """The embedded cluster's scheduler and nannies share the web process's CPU: Dask's
    default timers there (a 20 ms event-loop check in each, a 500 ms system monitor, work
    stealing) cost an idle classroom server a few percent of a core; the workers (also
    the one a nanny restarted after the killed-worker test above) take the same settings
    and sample no profile of the run."""
    eng = dask_engine
    sched = eng.cluster.scheduler
    assert "stealing" not in sched.extensions
    assert sched._tick_interval >= 0.5
    for nanny in eng.cluster.workers.values():
        assert nanny._tick_interval >= 0.5

    def worker_settings(dask_worker):
        import dask
        return (dask.config.get("distributed.worker.profile.enabled"),
                dask_worker._tick_interval)
    got = eng.client.run(worker_settings)
    assert len(got) == 2 and all(p is False and tick >= 0.5 for p, tick in got.values()), got


def test_a_pages_own_text_trains_on_the_worker_and_is_written_nowhere(engine, tmp_path):
    """``data_options={"text": ...}``: the run trains on that text, on either engine; the
    text is in no file of the run record and in no process-wide data cache."""
    import random
    import tempfile

    from bnlstm import tasks
    rng = random.Random(3)
    words = "sun moon star sky night day light dark".split()
    text = " ".join(rng.choice(words) for _ in range(2500)) + " zebra-marker-" + "q" * 40
    before = set(os.listdir(tempfile.gettempdir()))
    c = TrainConfig.for_task("text", hidden=8, steps=6, eval_every=6, probe_every=0,
                             batch_size=8, seq_len=20, reestimate=2)
    h = engine.submit(c, data_options={"text": text, "text_name": "sky.txt"})
    assert h.wait(120), h
    assert h.state == "finished", h.history[-3:]
    info = next(r for r in h.history if r["kind"] == "info")
    assert info["data_source"].startswith("sky.txt (") and "given to this run" in info["data_source"]
    marker = b"zebra-marker-qqqq"
    assert h.files and all(marker not in blob for blob in h.files.values())
    assert all(text not in str(k) for k in tasks._DATA)          # not kept for other runs
    for name in set(os.listdir(tempfile.gettempdir())) - before:  # nothing left in /tmp holds it
        p = os.path.join(tempfile.gettempdir(), name)
        if os.path.isfile(p):
            assert marker not in open(p, "rb").read()


def test_a_zip_made_while_the_run_trains_says_what_it_lacks_and_why(dask_engine):
    from bnlstm_app.runs import DashboardRun
    run = DashboardRun(cfg(steps=5000, eval_every=10), color="#000", engine=dask_engine)
    run.submit()
    wait_for(lambda: run.handle.step >= 3, 60, "three updates")
    run.seen = run.handle.seen                      # what the drain would have read
    z = zipfile.ZipFile(io.BytesIO(run.record_zip()))
    assert "README.txt" in z.namelist() and "checkpoint.pt" not in z.namelist()
    note = z.read("README.txt").decode()
    assert "summary.json, checkpoint.pt" in note and "written when it ends" in note
    run.handle.stop()
    assert run.handle.wait(60)
    z = zipfile.ZipFile(io.BytesIO(run.record_zip()))
    assert {"summary.json", "checkpoint.pt"} <= set(z.namelist()) and "README.txt" not in z.namelist()
    run.dispose()
