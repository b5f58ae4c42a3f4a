"""``python -m bnlstm paper table1`` / ``table2``: the paper's tables as sweeps of the
authors' recipe, at the paper's size with --full, a CPU size, and a quick one run here."""
import subprocess
import sys

import pytest

from bnlstm.paper import tables
from bnlstm.runs.sweep import SweepError


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_the_help_describes_full_and_the_engine(name):
    out = subprocess.run([sys.executable, "-m", "bnlstm", "paper", name, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for flag in ("--full", "--scheduler", "--gpus-per-run", "--device", "--seeds"):
        assert flag in text, flag
    assert "the authors' recipe as it is" in text and "resume" in text


def test_full_size_is_the_authors_recipe_as_it_is():
    runs = dict(tables.table_sweep("table1", "full").runs())
    assert len(runs) == 4
    for name, cfg in runs.items():
        assert (cfg["recipe"], cfg["steps"], cfg["hidden"], cfg["rmsprop_alpha"], cfg["h0"]) == \
            ("authors", 120000, 100, 0.5, "learned"), name
        assert cfg["permutation"] == ("authors" if cfg["task"] == "permuted" else "true")
        assert (cfg["val_stats"], cfg["train_score"]) == ("batch", 10000)   # TrackTheBest; the gap
    (cfg,) = [c for n, c in tables.table_sweep("table2", "full").runs() if "bnlstm" in n]
    assert (cfg["hidden"], cfg["seq_len"], cfg["windows"], cfg["text_test"], cfg["init"]) == \
        (1000, 99, "disjoint", "whole", "orthogonal")
    cpu = dict(tables.table_sweep("table1", "cpu").runs())
    assert {c["task"] for c in cpu.values()} == {"pixel", "permuted"}   # 784 steps
    assert all(c["steps"] < 120000 for c in cpu.values())
    with pytest.raises(SweepError, match="unknown size"):
        tables.table_sweep("table1", "huge")


def test_quick_table1_runs_estimates_and_resumes(tmp_path, mnist_dir):
    out = tmp_path / "t1"
    cmd = [sys.executable, "-m", "bnlstm", "paper", "table1", "--quick", "--workers", "1",
           "--out", str(out), "--data-dir", str(mnist_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("ms per update on this CPU") == 4
    assert "NOT the paper scale" in r.stdout and "| permuted | bnlstm |" in r.stdout
    assert (out / "table.md").is_file() and (out / "results.csv").is_file()
    # the tested weights scored on training digits too: the generalization gap, per run
    assert "train acc (gap to test)" in r.stdout
    import csv
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and all(0 <= float(x["train_acc"]) <= 1 and x["test_acc"] for x in rows)
    again = subprocess.run(cmd + ["--no-estimate"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 already done, 0 to run" in again.stdout and "estimate:" not in again.stdout


def test_quick_table2_runs_on_ptbs_heldout_split(tmp_path, ptb_dir):
    out = tmp_path / "t2"
    r = subprocess.run([sys.executable, "-m", "bnlstm", "paper", "table2", "--quick",
                        "--workers", "1", "--out", str(out), "--data-dir", str(ptb_dir),
                        "--text-source", "ptb-heldout"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| text | bnlstm |" in r.stdout and "1.32" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "bnlstm", "paper", "table2", "--quick",
                          "--out", str(tmp_path / "t3"), "--data-dir", str(tmp_path / "none"),
                          "--text-source", "ptb-heldout"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "ptb.char.valid.txt" in bad.stderr


def test_estimate_only_measures_and_runs_nothing(tmp_path, mnist_dir):
    lines = []
    res = tables.run_table("table1", size="quick", out=tmp_path / "e", data_dir=mnist_dir,
                           estimate_only=True, echo=lines.append)
    assert [e["task"] for e in res["estimates"]] == ["pixel", "pixel", "permuted", "permuted"]
    assert all(e["step_s"] > 0 and e["expected_s"] > 0 for e in res["estimates"])
    assert res["rows"] == [] and not (tmp_path / "e").exists()     # no sweep folder, no runs
    assert sum("ms per update on this CPU" in x for x in lines) == 4
