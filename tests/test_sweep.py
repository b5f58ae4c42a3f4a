"""bnlstm.runs.sweep: grids of runs on Dask, resumable runs, and the pieces they rest on.

The Dask tests start real worker processes (a LocalCluster of 2) and train tiny runs on the
row task; together they take well under a minute on two cores.
"""
import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from bnlstm import TrainConfig
from bnlstm.tasks.mnist import data as data_mod
from bnlstm.cli import main as cli_main
from bnlstm.tasks.mnist.experiment import MNISTExperiment
from bnlstm.training.checkpoints import save_checkpoint
from bnlstm.training.records import RunRecorder
from bnlstm.runs.policy import FIFOPolicy
from bnlstm.runs.results import group_rows
from bnlstm.runs.sweep import Sweep, SweepError, parse_grid, run_sweep
from bnlstm.runs.worker import run_one
from bnlstm.training.trainer import Trainer

TINY = dict(task="row", hidden=16, batch_size=16, eval_every=10, val_limit=200)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data_mod.load_mnist(mnist_dir)


def _metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ the data position
@pytest.mark.parametrize("start", [0, 3, 7, 8, 19])
def test_batches_iterate_from_a_position_equals_drawing_up_to_it(start):
    imgs = np.random.default_rng(0).integers(0, 255, (37, 28, 28), dtype=np.uint8)
    labels = np.arange(37) % 10
    a = data_mod.Batches(imgs, labels, task="row", batch_size=5, seed=3, endless=True)
    b = data_mod.Batches(imgs, labels, task="row", batch_size=5, seed=3, endless=True)
    it = iter(a)
    for _ in range(start):                   # 7 batches a pass: 19 crosses two passes
        next(it)
    jt = b.iterate(start=start)
    for _ in range(10):
        (xa, ya), (xb, yb) = next(it), next(jt)
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


# ------------------------------------------------------------------ resuming a run
def _run(mnist, steps=30, **kw):
    cfg = TrainConfig(model="bnlstm", steps=steps, probe_every=0, device="cpu", **TINY)
    return Trainer(cfg, MNISTExperiment(cfg, data=mnist), **kw)


def test_resumed_run_ends_exactly_as_the_uninterrupted_one(mnist, tmp_path):
    whole = _run(mnist)
    losses_whole = []
    whole.add_callback(lambda r: losses_whole.append(r["loss"]) if r["kind"] == "train" else None)
    assert whole.run() == "finished"
    # the same run, stopped after a snapshot at step 20 ...
    path = tmp_path / "resume.pt"
    first = _run(mnist, checkpoint_every=10, on_checkpoint=lambda s: save_checkpoint(s, path))
    first.add_callback(lambda r: first.stop() if r["kind"] == "train" and r["step"] == 24 else None)
    assert first.run() == "stopped"
    snap = torch.load(path, weights_only=True)           # plain tensors and values only
    assert snap["step"] == 20
    # ... and resumed from it in a fresh trainer
    resumed = _run(mnist, resume=snap)
    losses = []
    resumed.add_callback(lambda r: losses.append(r["loss"]) if r["kind"] == "train" else None)
    assert resumed.run() == "finished"
    assert losses == losses_whole[20:]
    assert resumed.final == whole.final
    a, b = whole.experiment.state_dict(), resumed.experiment.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_snapshot_of_other_settings(mnist):
    snaps = []
    t = _run(mnist, steps=12, checkpoint_every=10, on_checkpoint=snaps.append)
    t.run()
    cfg = TrainConfig(model="lstm", steps=12, probe_every=0, device="cpu", **TINY)
    other = Trainer(cfg, MNISTExperiment(cfg, data=mnist), resume=snaps[0])
    assert other.run() == "failed" and "other settings (model)" in other.reason


def test_run_recorder_resume_keeps_the_rows_up_to_the_snapshot(tmp_path):
    from bnlstm.training.records import METRIC_FIELDS
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METRIC_FIELDS)
        for s in range(1, 8):
            w.writerow([s, "train", 1.0, 0.5, 1.0, 1e-3, s])
        w.writerow([5, "val", 1.0, 0.5, "", "", 5])
        f.write("8,train,0.9")                         # a torn line of a killed worker
    RunRecorder(tmp_path, resume_step=5).close()
    rows = _metrics(tmp_path)
    assert [(r["step"], r["kind"]) for r in rows] == [(str(s), "train") for s in range(1, 6)] + [("5", "val")]


# ------------------------------------------------------------------ bad input, exit code 2
@pytest.mark.parametrize("argv,words", [
    (["--grid", "bogus=1,2"], "unknown setting 'bogus'"),
    (["--grid", "gamma_init=0.1,5"], "gamma_init='5' is not valid"),
    (["--grid", "model="], "has no values"),
    (["--grid", "model=lstm,lstm"], "repeats a value"),
    (["--grid", "hidden=ten"], "whole number"),
    (["--grid", "seed=1,2"], "--seeds"),
    (["--seeds", "1"], "empty grid"),
    (["--grid", "model=lstm,bnlstm", "--model", "lstm"], "both swept"),
    (["--grid", "model=lstm,bnlstm", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach"),
])
def test_bad_sweeps_exit_2_and_write_nothing(tmp_path, capsys, argv, words, mnist_dir):
    out = tmp_path / "sweep"
    rc = cli_main(["sweep", *argv, "--out", str(out), "--data-dir", str(mnist_dir), "--no-progress"])
    assert rc == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_a_sweep_goes_to_the_dashboards_cluster_when_its_address_is_set(tmp_path, capsys,
                                                                      monkeypatch, mnist_dir):
    """BNLSTM_DASK_SCHEDULER, the dashboard's cluster, is the sweep's default too (here an
    address nobody listens on: the sweep must try it, not start a LocalCluster)."""
    monkeypatch.setenv("BNLSTM_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    out = tmp_path / "sweep"
    rc = cli_main(["sweep", "--grid", "model=lstm,bnlstm", "--out", str(out),
                   "--data-dir", str(mnist_dir), "--no-progress"])
    assert rc == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().err
    assert not out.exists()


def test_another_sweep_in_the_folder_is_refused(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"format": "bnlstm-sweep", "grid": {"model": ["lstm"]},
                                                "seeds": [0], "settings": {}}))
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"])
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(sweep, out, progress=False)


def test_grid_parsing_and_run_names():
    g = parse_grid(["gamma-init=0.1,1", "model=lstm,bnlstm"])
    assert g == {"gamma_init": [0.1, 1.0], "model": ["lstm", "bnlstm"]}
    s = Sweep.from_args(grid=["model=lstm,bnlstm"], seeds=2, base={"steps": "30"})
    names = [n for n, _ in s.runs()]
    assert names == ["model=lstm-seed=0", "model=lstm-seed=1", "model=bnlstm-seed=0",
                     "model=bnlstm-seed=1"]
    cfgs = [c for _, c in s.runs()]
    assert all(c["steps"] == 30 and c["probe_every"] == 0 for c in cfgs)
    p = Sweep.from_args(preset="fig6", seeds=1, base={"steps": 50})
    assert p.grid == {"gamma_init": [0.1, 0.3, 0.5, 0.7, 1.0]} and p.settings()["steps"] == 50


def test_group_rows_mean_std_n():
    rows = [{"model": "a", "state": "finished", "best_val_acc": v, "test_acc": v} for v in (0.5, 0.7)]
    rows += [{"model": "b", "state": "diverged", "best_val_acc": 0.1, "test_acc": None},
             {"model": "b", "state": "failed", "best_val_acc": None, "test_acc": None}]
    g = {x["model"]: x for x in group_rows(rows, ["model"])}
    assert g["a"]["best_val_acc_mean"] == pytest.approx(0.6)
    assert g["a"]["best_val_acc_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert g["a"]["best_val_acc_n"] == 2
    assert g["b"]["runs"] == 2 and g["b"]["diverged"] == 1 and g["b"]["best_val_acc_n"] == 1


# ------------------------------------------------------------------ on Dask
def _sweep(steps=40):
    return Sweep.from_args(grid=["model=lstm,bnlstm"], seeds=2,
                           base={**TINY, "steps": steps, "test_at_end": True})


def _results(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_on_a_local_cluster_end_to_end_and_resume(tmp_path, mnist_dir, monkeypatch):
    from bnlstm.runs import dask as dask_engine
    out = tmp_path / "sweep"
    lines, submitted = [], []
    real = dask_engine.submit_run

    def spy(client, fn, args, key, priority, **kw):       # the engine's one submission
        submitted.append((fn.__name__, priority))
        return real(client, fn, args, key, priority, **kw)
    monkeypatch.setattr(dask_engine, "submit_run", spy)
    rows = run_sweep(_sweep(), out, n_workers=2, data_dir=str(mnist_dir), progress=False,
                     echo=lines.append)
    assert [r["state"] for r in rows] == ["finished"] * 4
    assert [f for f, _ in submitted] == ["run_one"] * 4
    live = FIFOPolicy().priority(time.time() + 3600)       # a page's run, an hour later
    assert all(p < live for _, p in submitted)             # ... still goes first
    res = _results(out)
    assert sorted(r["name"] for r in res) == sorted(n for n, _ in _sweep().runs())
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in res)
    for r in res:
        run = out / "runs" / r["name"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["state"] == "finished" and summary["config"]["model"] == r["model"]
        assert float(r["best_val_acc"]) == summary["best_val_acc"]
        assert (run / "checkpoint.pt").is_file() and not (run / "resume.pt").exists()
    groups = list(csv.DictReader(open(out / "groups.csv")))
    assert [g["model"] for g in groups] == ["lstm", "bnlstm"] and all(g["best_val_acc_n"] == "2" for g in groups)
    assert "Bokeh" in (out / "curves.html").read_text()[:100000]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid"] == {"model": ["lstm", "bnlstm"]} and meta["seeds"] == [0, 1]
    assert any("LocalCluster of 2" in x for x in lines)

    # interrupted: one run lost its result; the same sweep again runs only that one
    lost = out / "runs" / "model=bnlstm-seed=1"
    (lost / "summary.json").unlink()
    before = {r["name"]: (out / "runs" / r["name"] / "summary.json").stat().st_mtime_ns
              for r in res if r["name"] != lost.name}
    lines.clear()
    rows = run_sweep(_sweep(), out, n_workers=2, data_dir=str(mnist_dir), progress=False,
                     echo=lines.append)
    assert "(3 already done, 1 to run)" in lines[0]
    assert [r["state"] for r in rows] == ["finished"] * 4
    for name, mt in before.items():
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == mt
    assert len(_results(out)) == 4


def test_run_one_resumes_an_interrupted_run_to_the_same_result(tmp_path, mnist_dir, mnist):
    cfg = {**_sweep().settings(), "model": "bnlstm", "seed": 0, "steps": 30}
    whole = tmp_path / "whole"
    run_one(cfg, whole, str(mnist_dir), checkpoint_every=10)
    # the same run, killed after its snapshot at step 20 (as a dying worker leaves it)
    cut = tmp_path / "cut"
    tc = TrainConfig.from_dict(cfg)
    t = Trainer(tc, MNISTExperiment(tc, data=mnist), checkpoint_every=10,
                on_checkpoint=lambda s: save_checkpoint(s, cut / "resume.pt"))
    rec = RunRecorder(cut).attach(t)
    t.add_callback(lambda r: t.stop() if r["kind"] == "train" and r["step"] == 23 else None)
    t.run()
    rec.close()
    (cut / "summary.json").unlink()
    s = run_one(cfg, cut, str(mnist_dir), checkpoint_every=10)
    assert s["state"] == "finished" and s["resumed_from"] == 20
    a = [(r["step"], r["kind"], r["loss"], r["acc"]) for r in _metrics(whole)]
    b = [(r["step"], r["kind"], r["loss"], r["acc"]) for r in _metrics(cut)]
    assert a == b
    wa = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished run is not run again
    again = run_one(cfg, cut, str(mnist_dir))
    assert again.get("skipped") is True


def test_a_killed_worker_costs_an_attempt_not_the_sweep(tmp_path, mnist_dir):
    """SIGKILL the worker of a run that is half way (it has a snapshot): Dask reschedules the
    task, the run goes on from its snapshot, and every run ends recorded once."""
    from distributed import Client, LocalCluster
    out = tmp_path / "sweep"
    sweep = _sweep(steps=120)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        killed = {}

        def killer():
            end = time.time() + 120
            while time.time() < end and not killed:
                for run in (out / "runs").glob("*") if (out / "runs").exists() else []:
                    if (run / "resume.pt").exists() and not (run / "summary.json").exists():
                        for addr, keys in client.processing().items():
                            if any(run.name in str(k) for k in keys):
                                nanny = next(n for n in cluster.workers.values()
                                             if n.worker_address == addr)
                                os.kill(nanny.process.process.pid, signal.SIGKILL)
                                killed["run"] = run.name
                                return
                time.sleep(0.02)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        rows = run_sweep(sweep, out, scheduler=cluster.scheduler_address, data_dir=str(mnist_dir),
                         checkpoint_every=20, progress=False, echo=lambda s: None)
        th.join(5)
    assert killed, "no run was caught half way"
    assert [r["state"] for r in rows] == ["finished"] * 4
    res = _results(out)
    assert sorted(r["name"] for r in res) == sorted(n for n, _ in sweep.runs())
    victim = json.loads((out / "runs" / killed["run"] / "summary.json").read_text())
    assert victim["resumed_from"] is not None and victim["resumed_from"] % 20 == 0
    steps = [int(r["step"]) for r in _metrics(out / "runs" / killed["run"]) if r["kind"] == "train"]
    assert steps == list(range(1, 121))                     # every update once, in order


def test_sweep_browser_offers_names_only_and_refuses_others(tmp_path, mnist_dir):
    """The dashboard's sweeps view (no browser): names from the configured folder only."""
    from bnlstm_app.sweeps import SweepBrowser
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"], base={**TINY, "steps": 10})
    for name in ("b-sweep", "a-sweep"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    (tmp_path / "not-a-sweep").mkdir()
    name, cfg = sweep.runs()[0]
    run_one(cfg, tmp_path / "a-sweep" / "runs" / name, str(mnist_dir))
    b = SweepBrowser(folder=tmp_path)
    assert b.param.sweep.objects == ["a-sweep", "b-sweep"]
    b.sweep = "a-sweep"
    assert b.plot.visible
    assert "2 runs" in b.note.object and "1 finished" in b.note.object and "1 pending" in b.note.object
    assert len(b.sources[0]["line"].data["step"]) == 1          # lstm: its one validation
    for bad in ("../a-sweep", str(tmp_path / "a-sweep"), "not-a-sweep"):
        with pytest.raises(ValueError):
            b.sweep = bad
    assert str(tmp_path) not in b.note.object + b.table.object + b.legend.object
    none = SweepBrowser(folder=None)
    assert none.param.sweep.objects == [] and "BNLSTM_SWEEPS_DIR" in none.note.object
    assert not none.plot.visible                         # no sweep shown: no empty plot
    (tmp_path / "empty").mkdir()
    empty = SweepBrowser(folder=tmp_path / "empty")
    assert "No sweeps" in empty.note.object and not empty.plot.visible


def test_diverged_runs_are_results_not_retried(tmp_path):
    """A run recorded as diverged (or finished) is not run again; the sweep needs no cluster
    when nothing is left, and the table counts the divergence."""
    sweep = _sweep()
    out = tmp_path / "s"
    (out / "runs").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    for i, (name, cfg) in enumerate(sweep.runs()):
        (out / "runs" / name).mkdir()
        state = "diverged" if i == 3 else "finished"
        (out / "runs" / name / "summary.json").write_text(json.dumps(
            {"state": state, "best_val_acc": 0.5 if state == "finished" else None, "steps": 40}))
    lines = []
    rows = run_sweep(sweep, out, scheduler="tcp://127.0.0.1:9", progress=False, echo=lines.append)
    assert "(4 already done, 0 to run)" in lines[0]          # no scheduler was needed
    assert [r["state"] for r in rows] == ["finished"] * 3 + ["diverged"]
    g = {x["model"]: x for x in group_rows(rows, ["model"])}
    assert g["bnlstm"]["diverged"] == 1 and g["bnlstm"]["best_val_acc_n"] == 1


def test_a_text_sweep_reports_bits_per_character_with_the_text_recipe(tmp_path):
    """A sweep of the text task: each run gets the task's recipe where the sweep says nothing;
    the rows, groups and the dashboard's sweeps view speak bits per character."""
    from bnlstm.runs.results import result_fields
    from bnlstm.runs.sweep import read_sweep
    from bnlstm_app.sweeps import SweepBrowser
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"], base={
        "task": "text", "hidden": 8, "steps": 6, "eval_every": 3, "seq_len": 20, "val_limit": 20})
    assert sweep.metric_keys() == ["bpc", "acc"]
    runs = sweep.runs()
    assert all(cfg["optimizer"] == "adam" and cfg["batch_size"] == 64 for _, cfg in runs)
    out = tmp_path / "sweeps" / "text"
    (out / "runs").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    for name, cfg in runs:
        s = run_one(cfg, out / "runs" / name)
        assert s["state"] == "finished" and s["best_val_bpc"] > 0
    state = read_sweep(out)
    assert state["metric"] == "bpc" and state["groups"][0]["best_val_bpc_n"] == 1
    assert "best_val_bpc" in result_fields(sweep.metric_keys())
    b = SweepBrowser(folder=tmp_path / "sweeps")
    b.sweep = "text"
    assert "best val bpc" in b.table.object and "bits per character" in b.figure.title.text
