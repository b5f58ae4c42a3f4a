"""Recipes as data (bnlstm/recipes/*.toml): what each sets, that flags win over it, that a
run records it, and that every value of every recipe is a valid setting for every task."""
import json
import subprocess
import sys

import pytest

from bnlstm import TrainConfig, recipes, tasks


def test_the_authors_recipe_is_their_code():
    text = TrainConfig.for_task("text", recipe="authors")
    assert (text.init, text.optimizer, text.hidden, text.batch_size, text.seq_len) == \
        ("orthogonal", "adam", 1000, 64, 99)             # penntreebank_*.sh: --length 100
    p = TrainConfig.for_task("permuted", recipe="authors")
    assert (p.permutation, p.init, p.rmsprop_alpha, p.momentum, p.h0_noise) == \
        ("authors", "authors", 0.5, 0.01, 0.0)           # sequentialpmnist_bnlstm.sh
    row = TrainConfig.for_task("row", recipe="authors")
    assert row.h0_noise == 0.1 and row.recipe == "authors"
    assert TrainConfig.for_task("row", recipe="paper").rmsprop_alpha == 0.9


def test_the_quick_recipe_is_the_bare_default_and_flags_win():
    for t in tasks.names():
        assert TrainConfig.for_task(t).to_dict() == TrainConfig.for_task(t, recipe="quick").to_dict()
    assert TrainConfig.for_task("text", recipe="authors", hidden=64).hidden == 64
    with pytest.raises(recipes.RecipeError, match="unknown recipe 'fast'"):
        TrainConfig.for_task("row", recipe="fast")


def test_every_recipe_is_valid_for_every_task():
    for name in recipes.names():
        r = recipes.get(name)
        assert r.description
        for t in tasks.all_tasks():
            for key in r.settings(t):
                assert key in TrainConfig.param and t.applies(key), (name, t.name, key)
            TrainConfig.for_task(t.name, recipe=name)        # bounds and choices hold


def test_rmsprop_uses_the_recipes_decay():
    import torch
    from bnlstm.tasks.sequence import make_optimizer
    opt = make_optimizer(TrainConfig.for_task("row", recipe="authors"), [torch.nn.Parameter(torch.ones(2))])
    assert opt.param_groups[0]["alpha"] == 0.5


def test_the_command_line_lists_recipes_and_a_run_records_its_recipe(tmp_path, mnist_dir):
    out = subprocess.run([sys.executable, "-m", "bnlstm", "recipes"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("quick", "authors", "paper"):
        assert f"\n{name}: " in "\n" + out.stdout
    assert "not yet: their batch-statistics validation" in out.stdout    # its [missing]
    assert "val_stats=batch" in out.stdout                              # TrackTheBest
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bnlstm", "train", "--task", "permuted", "--recipe",
                        "authors", "--hidden", "8", "--steps", "2", "--eval-every", "2",
                        "--val-limit", "16", "--no-test-at-end", "--data-dir", str(mnist_dir),
                        "--out", str(run), "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["recipe"], cfg["init"], cfg["permutation"], cfg["hidden"]) == \
        ("authors", "authors", "authors", 8)


def test_a_sweep_applies_its_recipe_to_each_task_it_sweeps():
    from bnlstm.runs.sweep import Sweep
    runs = dict(Sweep.from_args(grid=["task=pixel,permuted"], seeds=1,
                                base={"recipe": "authors", "steps": 5}).runs())
    p, q = runs["task=pixel-seed=0"], runs["task=permuted-seed=0"]
    assert (p["rmsprop_alpha"], p["h0_noise"], p["permutation"], p["steps"]) == (0.5, 0.1, "true", 5)
    assert (q["h0_noise"], q["permutation"]) == (0.0, "authors")    # sequentialpmnist_bnlstm.sh
