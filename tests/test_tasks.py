"""The task registry and contract: a task of one's own (the example in docs/DESIGN.md, run
as written there) trains, checkpoints, evaluates and sweeps without editing bnlstm."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnlstm import TrainConfig, Trainer, tasks
from bnlstm.tasks import Metric

ROOT = Path(__file__).resolve().parents[1]


def _example_source() -> str:
    doc = (ROOT / "docs" / "DESIGN.md").read_text()
    found = re.search(r"<!-- example: my_tasks.py -->\n```python\n(.*?)```", doc, re.S)
    assert found, "docs/DESIGN.md lost its my_tasks.py example"
    return found.group(1)


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "my_tasks.py").write_text(_example_source())
    env = {**os.environ, "BNLSTM_TASKS": "my_tasks",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return tmp_path, env


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "bnlstm", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_builtin_tasks_are_registered_in_menu_order():
    assert tasks.names() == ["row", "pixel14", "pixel7", "pixel", "permuted", "text"]
    assert tasks.names("mnist") == ["row", "pixel14", "pixel7", "pixel", "permuted"]
    assert TrainConfig.param["task"].objects == tasks.names()
    assert tasks.get("text").metric.key == "bpc" and not tasks.get("text").metric.higher_is_better
    with pytest.raises(tasks.TaskError, match="unknown task 'nope'; valid tasks: row, "):
        tasks.get("nope")


def test_a_task_of_ones_own_trains_evaluates_and_sweeps_from_the_command_line(plugin):
    folder, env = plugin
    out = folder / "run"
    r = _cli(["train", "--task", "adding", "--model", "bnlstm", "--hidden", "16",
              "--steps", "120", "--eval-every", "20", "--probe-every", "40",
              "--reestimate", "5", "--out", str(out), "--no-progress"], env, folder)
    assert r.returncode == 0, r.stderr
    assert "validation mean squared error" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "adding" and s["metric"] == "mse"
    assert "adding problem" in s["data_source"] and s["config"]["optimizer"] == "adam"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "kind", "loss", "mse", "grad_norm", "lr", "elapsed"]
    vals = [float(x["mse"]) for x in rows if x["kind"] == "val"]
    assert s["best_val_mse"] == pytest.approx(min(vals))       # lower is better: the minimum
    assert s["best_val_mse"] < 0.9 * vals[0]                   # it learned something
    assert s["test_mse"] is not None and s["val_mse"] is not None
    e = _cli(["eval", str(out / "checkpoint.pt")], env, folder)
    assert e.returncode == 0, e.stderr
    assert json.loads(e.stdout)["val"]["mse"] == pytest.approx(s["val_mse"], rel=1e-5)
    w = _cli(["sweep", "--grid", "task=adding", "--grid", "model=lstm,bnlstm", "--steps", "20",
              "--eval-every", "10", "--hidden", "8", "--workers", "1", "--no-progress",
              "--out", str(folder / "sweep")], env, folder)
    assert w.returncode == 0, w.stderr + w.stdout
    with open(folder / "sweep" / "results.csv") as f:
        res = list(csv.DictReader(f))
    assert [r["state"] for r in res] == ["finished", "finished"]


def test_a_broken_plugin_is_named_on_the_command_line(tmp_path):
    env = {**os.environ, "BNLSTM_TASKS": "no_such_module_here"}
    r = _cli(["train", "--help"], env, tmp_path)
    assert r.returncode == 2
    assert "cannot load the task module no_such_module_here (from $BNLSTM_TASKS)" in r.stderr


class _Scripted:
    """An experiment whose validation scores follow a script (a lower-is-better metric)."""
    metrics = (Metric("err", "error", higher_is_better=False),)

    def __init__(self, config, vals):
        self.config, self.vals, self.model, self.state = config, list(vals), object(), 0

    def setup(self):
        return {"device": "cpu", "data_source": "a script", "n_params": 0, "task": "row",
                "seq_len": 1, "metrics": ["err"]}

    def train_step(self, probe=False):
        self.state += 1
        return {"loss": 1.0, "err": 0.5, "grad_norm": 1.0}

    def evaluate(self, split="val"):
        v = self.vals.pop(0) if split == "val" else 0.25
        return {"loss": v, "err": v, "n": 1}

    def finalize(self):
        return False

    def state_dict(self):
        return {"at": self.state}

    def load_state_dict(self, sd):
        self.state = sd["at"]


def test_the_best_weights_follow_the_metrics_direction():
    cfg = TrainConfig(steps=4, eval_every=1, probe_every=0)
    tr = Trainer(cfg, _Scripted(cfg, [0.9, 0.3, 0.6, 0.4]))
    assert tr.run() == "finished"
    assert tr.best["step"] == 2 and tr.best["err"] == 0.3
    assert tr.final["val_err"] == 0.3 and tr.final["test_err"] == 0.25
