"""The settings that make the authors' recipe their code: learned h_0/c_0, an orthogonal
W_y, disjoint text windows of 99 predictions, re-estimation over one training pass, the
whole-sequence test; and that a run records them."""
import json

import numpy as np
import pytest
import torch

from bnlstm import TrainConfig, tasks
from bnlstm.cli import main as cli_main
from bnlstm.tasks.text.data import TextBatches


def test_the_authors_text_recipe_is_their_penntreebank_py():
    c = TrainConfig.for_task("text", recipe="authors")
    assert (c.init, c.seq_len, c.windows, c.h0, c.head_init, c.text_test, c.reestimate) == \
        ("orthogonal", 99, "disjoint", "learned", "orthogonal", "whole", -1)
    m = TrainConfig.for_task("pixel", recipe="authors")
    assert (m.h0, m.head_init, m.reestimate) == ("learned", "orthogonal", -1)
    q = TrainConfig.for_task("text")
    assert (q.windows, q.h0, q.head_init, q.text_test) == ("overlap", "zero", "pytorch", "windows")


def test_settings_of_the_text_task_are_refused_on_mnist():
    with pytest.raises(ValueError, match="windows"):
        TrainConfig.for_task("row", windows="disjoint")
    with pytest.raises(ValueError, match="learned"):
        tasks.get("row").check(TrainConfig(model="bn-tanh-rnn", h0="learned"))


def test_disjoint_windows_are_the_authors_x_minus_last_y_from_first():
    """Windows of 100 characters that share nothing, 99 predictions each (seq_len 99)."""
    ids = np.arange(1000)
    b = TextBatches(ids, seq_len=99, batch_size=4, shuffle=False, stride=100)
    xs, ys = zip(*b)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (10, 99)
    assert torch.equal(x[:, 0], torch.arange(0, 1000, 100))       # one window per 100 chars
    assert torch.equal(y, x + 1)
    assert not set(x[:, 0].tolist()) & set(y.reshape(-1).tolist())  # a window's first: never a target
    over = TextBatches(ids, seq_len=99, batch_size=4, shuffle=False)  # the default: overlap
    assert torch.equal(torch.cat([x for x, _ in over])[:, 0], torch.arange(0, 99 * 10, 99))
    shuffled = TextBatches(ids, seq_len=9, batch_size=4, shuffle=True, stride=10, seed=2)
    for x, y in shuffled:                                         # random offset, same cut
        starts = x[:, 0]
        assert len(set((starts % 10).tolist())) == 1 and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="stride"):
        TextBatches(ids, seq_len=99, batch_size=4, stride=50)


def _words(tmp_path, n=6000):
    import random
    rng = random.Random(0)
    f = tmp_path / "words.txt"
    f.write_text(" ".join(rng.choice("the cat sat on a mat and ran".split()) for _ in range(n)))
    return f


def test_an_authors_text_run_learns_h0_records_it_and_reestimates_over_one_pass(tmp_path):
    f = _words(tmp_path)
    cfg = TrainConfig.for_task("text", recipe="authors", hidden=16, steps=3, eval_every=3,
                               batch_size=8, probe_every=0, text_test="windows")
    exp = tasks.get("text").experiment(cfg, text_file=f)
    exp.setup()
    rnn = exp.model.rnn
    assert rnn.learn_h0 and rnn.h0.shape == (1, 16)
    w = exp.model.head.weight.detach()                            # (V, H), V < H rows orthonormal
    torch.testing.assert_close(w @ w.t(), torch.eye(w.shape[0]), atol=1e-5, rtol=0)
    assert float(exp.model.head.bias.detach().abs().max()) == 0
    before = rnn.h0.detach().clone()
    for _ in range(3):
        exp.train_step()
    assert not torch.equal(before, rnn.h0.detach())               # h0 is trained
    n_windows = (len(exp.ids["train"])) // 100
    batches = list(exp.stat_batches(-1))
    assert sum(len(x) for x in batches) == n_windows and len(batches[0]) == min(100, n_windows)
    assert torch.equal(batches[0][0], torch.as_tensor(exp.ids["train"][:99]))   # offset 0
    out = tmp_path / "run"
    assert cli_main(["train", "--task", "text", "--recipe", "authors", "--text-file", str(f),
                     "--hidden", "8", "--steps", "2", "--eval-every", "2", "--batch-size", "8",
                     "--probe-every", "0", "--out", str(out), "--no-progress"]) == 0
    rec = json.loads((out / "config.json").read_text())
    assert (rec["recipe"], rec["init"], rec["h0"], rec["windows"], rec["seq_len"]) == \
        ("authors", "orthogonal", "learned", "disjoint", 99)
    summary = json.loads((out / "summary.json").read_text())
    test_keys = [k for k in summary.get("final", summary) if str(k).startswith("test_")]
    assert test_keys, summary


def test_the_whole_test_setting_scores_the_test_text_as_one_sequence(tmp_path):
    f = _words(tmp_path)
    cfg = TrainConfig.for_task("text", hidden=8, seq_len=20, batch_size=8, text_test="whole")
    exp = tasks.get("text").experiment(cfg, text_file=f)
    exp.setup()
    res = exp.evaluate("test")
    assert res.get("whole_sequence") and res["n"] == len(exp.ids["test"]) - 1
    assert "whole_sequence" not in exp.evaluate("test", length=20)


@pytest.mark.parametrize("task", ["row", "text"])
def test_batch_statistics_validation_is_the_authors_and_changes_no_statistic(task, tmp_path,
                                                                            mnist_dir):
    """val_stats="batch" (the authors' TrackTheBest on valid_training_error_rate): the
    validation split is scored with each batch's own statistics, so it differs from the
    population validation of the same weights, leaves the running averages as they were,
    and the test still uses the population statistics."""
    assert TrainConfig.for_task("text", recipe="authors").val_stats == "batch"
    assert TrainConfig.for_task("permuted", recipe="authors").val_stats == "batch"
    assert TrainConfig.for_task(task).val_stats == "population"
    kw = dict(hidden=16, steps=3, batch_size=16, probe_every=0, val_limit=200, seed=0)
    if task == "text":
        data = dict(text_file=_words(tmp_path))
        kw.update(seq_len=20, text_test="windows")
    else:
        data = dict(data_dir=mnist_dir)
    scores = {}
    for mode in ("population", "batch"):
        exp = tasks.get(task).experiment(TrainConfig.for_task(task, val_stats=mode, **kw), **data)
        exp.setup()
        for _ in range(3):
            exp.train_step()
        bn = [m for m in exp.model.modules() if hasattr(m, "running_mean")]
        kept = [b.running_mean.clone() for b in bn]
        scores[mode] = (exp.evaluate("val")["loss"], exp.evaluate("test")["loss"])
        assert all(torch.equal(a, b.running_mean) for a, b in zip(kept, bn))
        exp.release()
    assert scores["batch"][0] != pytest.approx(scores["population"][0], rel=1e-6)
    assert scores["batch"][1] == pytest.approx(scores["population"][1], rel=1e-9)   # the test
