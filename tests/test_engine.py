"""The training engine: thread control, records, divergence, failures, run records, checkpoints, CLI."""
import csv
import json
import math
import queue
import time

import numpy as np
import pytest
import torch

import bnlstm
from bnlstm import TrainConfig, Trainer
from bnlstm.cli import main as cli_main
from bnlstm.nn.probes import SATURATION_X
from bnlstm.tasks.mnist.experiment import MNISTExperiment
from bnlstm.training.checkpoints import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from bnlstm.training.records import RunRecorder


class ToyExperiment:
    """A trainer-facing experiment with no LSTM in it: the trainer must not care."""

    def __init__(self, losses=None, fail_at=None, delay=0.0):
        self.losses = losses
        self.fail_at = fail_at
        self.delay = delay
        self.calls = 0
        self.w = torch.zeros(3)
        self.finalized = False
        self.model = None

    def setup(self):
        return {"device": "cpu", "data_source": "toy", "data_is_full": False, "n_params": 3,
                "task": "toy", "model": "toy", "seq_len": 1}

    def train_step(self, probe=False):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("boom in the worker")
        if self.delay:
            time.sleep(self.delay)
        loss = self.losses[self.calls - 1] if self.losses else 1.0 / self.calls
        self.w += 1
        out = {"loss": loss, "acc": 0.5, "grad_norm": 1.0}
        if probe:
            out["probe"] = {"t": np.arange(2), "grad_h": np.ones(2)}
        return out

    def evaluate(self, split="val"):
        return {"loss": 1.0 / self.calls, "acc": min(1.0, self.calls / 10), "n": 10}

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, sd):
        self.w = sd["w"].clone()

    def finalize(self):
        self.finalized = True


class NotAWeight:
    def __reduce__(self):
        return (print, ("this would run on load",))


def collect(trainer):
    q = queue.Queue()
    trainer.add_callback(q.put)
    return q


def drain(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_trainer_runs_to_budget_and_tests_best_weights():
    cfg = TrainConfig(steps=20, eval_every=5, probe_every=10)
    exp = ToyExperiment()
    tr = Trainer(cfg, exp)
    q = collect(tr)
    assert tr.run() == "finished"
    recs = drain(q)
    kinds = [r["kind"] for r in recs]
    assert kinds.count("train") == 20
    assert [r["step"] for r in recs if r["kind"] == "val"] == [5, 10, 15, 20]
    assert [r["step"] for r in recs if r["kind"] == "probe"] == [1, 10, 20]
    assert kinds[-2:] == ["test", "state"] and recs[-1]["state"] == "finished"
    assert tr.best["step"] == 10     # acc saturates at step 10; later equal accs are not "better"
    assert exp.finalized
    assert float(exp.w[0]) == 10.0   # the best weights were restored before the test
    for r in recs:                   # records are plain values, never tensors
        for v in r.values():
            assert not isinstance(v, torch.Tensor)


def test_pause_step_resume_stop_in_thread():
    cfg = TrainConfig(steps=10**6, eval_every=10**6, probe_every=0)
    exp = ToyExperiment(delay=0.002)
    tr = Trainer(cfg, exp)
    q = collect(tr)
    tr.start()
    deadline = time.time() + 10
    while exp.calls < 5 and time.time() < deadline:
        time.sleep(0.01)
    tr.pause()
    time.sleep(0.2)
    n_paused = exp.calls
    time.sleep(0.3)
    assert exp.calls == n_paused and tr.state == "paused"
    tr.step()
    deadline = time.time() + 5
    while exp.calls < n_paused + 1 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert exp.calls == n_paused + 1          # exactly one update
    tr.resume()
    time.sleep(0.2)
    assert exp.calls > n_paused + 5
    tr.stop()
    assert tr.join(5)
    assert tr.state == "stopped"
    states = [r["state"] for r in drain(q) if r["kind"] == "state"]
    assert states[0] == "starting" and "paused" in states and states[-1] == "stopped"


def test_step_on_idle_trainer_does_one_update():
    tr = Trainer(TrainConfig(steps=100, eval_every=1000, probe_every=0), ToyExperiment())
    tr.step()
    deadline = time.time() + 5
    while tr.step_count < 1 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert tr.step_count == 1 and tr.state == "paused"
    tr.stop()
    assert tr.join(5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_loss_ends_in_diverged_state(bad):
    tr = Trainer(TrainConfig(steps=50, eval_every=2, probe_every=0),
                 ToyExperiment(losses=[1.0, 0.9, 0.8, bad] + [0.5] * 50))
    q = collect(tr)
    assert tr.run() == "diverged"
    assert "step 4" in tr.reason and str(bad) in tr.reason
    recs = drain(q)
    assert recs[-1]["kind"] == "state" and recs[-1]["state"] == "diverged"
    assert tr.best["step"] == 2      # what was learned before is kept


def test_exception_in_thread_reaches_consumer():
    tr = Trainer(TrainConfig(steps=50, eval_every=100, probe_every=0), ToyExperiment(fail_at=3))
    q = collect(tr)
    tr.start()
    assert tr.join(10)
    recs = drain(q)
    err = [r for r in recs if r["kind"] == "error"]
    assert err and "boom in the worker" in err[0]["message"] and "Traceback" in err[0]["traceback"]
    assert tr.state == "failed" and recs[-1]["state"] == "failed"


def test_a_broken_callback_does_not_kill_the_run():
    def bad(rec):
        raise ValueError("consumer bug")
    tr = Trainer(TrainConfig(steps=5, eval_every=5, probe_every=0), ToyExperiment(), [bad])
    assert tr.run() == "finished"


def test_config_rejects_bad_values_with_the_setting_named():
    with pytest.raises(ValueError, match="gamma_init"):
        TrainConfig(gamma_init=5.0)
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="cifar")
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"gama_init": 0.1})
    cfg = TrainConfig(gamma_init=0.3, model="lstm", steps=7)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())).to_dict() == cfg.to_dict()


# ----------------------------------------------------------- real MNIST, short runs
@pytest.fixture(scope="module")
def mnist(mnist_dir):
    from bnlstm.tasks.mnist.data import load_mnist
    return load_mnist(mnist_dir)


def test_short_cpu_run_on_mnist_rows_learns(mnist, tmp_path):
    """A BN-LSTM on row MNIST, 300 updates on the CPU: far above the 10% of chance."""
    cfg = TrainConfig(task="row", model="bnlstm", hidden=64, batch_size=64, steps=300,
                      eval_every=150, probe_every=100, val_limit=1000, lr=2e-3, seed=1)
    tr = Trainer(cfg, MNISTExperiment(cfg, data=mnist))
    RunRecorder(tmp_path / "run").attach(tr)
    q = collect(tr)
    assert tr.run() == "finished", tr.reason
    recs = drain(q)
    vals = [r for r in recs if r["kind"] == "val"]
    assert vals[-1]["acc"] > 0.6, vals            # chance is 0.1; this reaches ~0.85
    test = [r for r in recs if r["kind"] == "test"][0]
    assert test["acc"] > 0.6 and test["n"] == 10000
    info = [r for r in recs if r["kind"] == "info"][0]
    assert info["data_is_full"] and info["n_train"] == 50000 and info["n_val"] == 10000
    # probes: per-step statistics, saturation and gradient norms through time
    probes = [r for r in recs if r["kind"] == "probe"]
    assert [p["step"] for p in probes] == [1, 100, 200, 300]
    p = probes[-1]
    assert p["grad_h"].shape == (28,) and np.all(p["grad_h"] > 0)
    assert p["stats"]["wh"]["pop_mean"].shape == (28, 8) and p["stats"]["c"]["var"].shape == (28, 8)
    assert 0.0 <= p["saturation"]["g"] <= 1.0 and abs(p["hist"]["g"].sum() - 1.0) < 1e-4
    # the run record
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["steps"] == 300
    assert summary["test_acc"] == pytest.approx(test["acc"])
    assert "MNIST" in summary["data_source"] and summary["device"] == "cpu"
    assert json.loads((run / "config.json").read_text())["hidden"] == 64
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert sum(r["kind"] == "train" for r in rows) == 300
    assert [r["step"] for r in rows if r["kind"] == "val"] == ["150", "300"]
    # the checkpoint reloads safely and gives the same validation accuracy
    cfg2, model, ckpt = load_checkpoint(run / "checkpoint.pt")
    assert cfg2.to_dict() == cfg.to_dict() and ckpt["step"] == tr.best["step"]
    exp = MNISTExperiment(cfg2, data=mnist)
    exp.setup()
    exp.load_state_dict(ckpt["model"])
    assert exp.evaluate("val")["acc"] == pytest.approx(tr.best["acc"])
    # the ended run does not keep the fast path's training buffers
    from bnlstm.nn import fused
    assert fused.workspace(tr.experiment.model.rnn).nbytes() == 0
    exp.train_step()
    assert fused.workspace(exp.model.rnn).nbytes() > 0
    assert fused.release_workspaces(exp.model) > 0 and fused.workspace(exp.model.rnn).nbytes() == 0


def test_seeded_cpu_runs_repeat_exactly(mnist):
    def run():
        cfg = TrainConfig(task="pixel7", model="bnlstm", hidden=16, batch_size=16, steps=5,
                          eval_every=5, probe_every=0, val_limit=50, seed=3, test_at_end=False)
        tr = Trainer(cfg, MNISTExperiment(cfg, data=mnist))
        q = collect(tr)
        tr.run()
        return [r["loss"] for r in drain(q) if r["kind"] == "train"]
    assert run() == run()


def test_checkpoint_refuses_pickled_objects_and_corruption(tmp_path, mnist):
    cfg = TrainConfig(task="pixel7", hidden=8, steps=1)
    exp = MNISTExperiment(cfg, data=mnist)
    exp.setup()
    good = save_checkpoint(make_checkpoint(cfg, exp.state_dict(), step=0), tmp_path / "good.pt")
    cfg2, model, _ = load_checkpoint(good)
    assert cfg2.hidden == 8
    # a pickled arbitrary object is refused (weights_only=True)
    evil = tmp_path / "evil.pt"
    ck = make_checkpoint(cfg, exp.state_dict(), step=0)
    ck["payload"] = NotAWeight()           # any object that needs unpickling code
    torch.save(ck, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(evil)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(trunc)
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a bnlstm checkpoint"):
        load_checkpoint(plain)
    wrong = tmp_path / "wrong.pt"
    ck = make_checkpoint(cfg, exp.state_dict(), step=0)
    ck["config"]["hidden"] = 9
    torch.save(ck, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_saturation_threshold_is_where_tanh_passes_a_tenth_of_the_gradient():
    assert 1 - math.tanh(SATURATION_X) ** 2 == pytest.approx(0.1)


def test_cli_train_prints_accuracies_and_writes_run(tmp_path, mnist_dir, capsys):
    rc = cli_main(["train", "--task", "pixel7", "--model", "lstm", "--hidden", "16",
                   "--batch-size", "32", "--steps", "20", "--eval-every", "10", "--val-limit", "200",
                   "--seed", "0", "--out", str(tmp_path / "r"), "--data-dir", str(mnist_dir),
                   "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "validation accuracy" in out and "test accuracy" in out and "MNIST" in out
    assert (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv, msg", [
    (["train", "--gamma-init", "5"], "gamma_init"),
    (["train", "--task", "cifar"], "invalid choice"),
    (["train", "--hidden", "abc"], "invalid int"),
    (["train", "--steps", "0"], "steps"),
])
def test_cli_bad_arguments_give_usage_errors_not_tracebacks(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_cli_eval_refuses_bad_checkpoint(tmp_path, capsys):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a checkpoint")
    assert cli_main(["eval", str(p)]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint" in err and "zip archive" in err and "pickled" not in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert cli_main(["eval", str(empty)]) == 2
    assert "an empty file" in capsys.readouterr().err


def test_bn_tanh_rnn_model_trains_with_probes(mnist):
    """The paper's Figure 1a model runs through the same engine, probes and checkpoints."""
    cfg = TrainConfig(task="pixel7", model="bn-tanh-rnn", hidden=16, batch_size=16, steps=4,
                      eval_every=4, probe_every=2, val_limit=50, test_at_end=False)
    exp = MNISTExperiment(cfg, data=mnist)
    tr = Trainer(cfg, exp)
    q = collect(tr)
    assert tr.run() == "finished", tr.reason
    probes = [r for r in drain(q) if r["kind"] == "probe"]
    assert probes and sorted(probes[-1]["stats"]) == ["wh", "wx"]
    assert probes[-1]["grad_h"].shape == (49,) and "g" in probes[-1]["saturation"]
    assert exp.model.rnn.norm == "sum" and exp.model.rnn.bn_l0.weight.shape == (16,)
    u = probes[-1]["units"]
    assert u["frac"].shape == (49, 40) and u["kurtosis"].shape == (49,)
    np.testing.assert_allclose(u["frac"].sum(1), 1.0, atol=1e-6)


def test_bn_tanh_rnn_is_invariant_to_recurrent_weight_scale_in_training():
    torch.manual_seed(0)
    # separate BNs: each term is normalized on its own (large variances: eps is negligible)
    rnn = bnlstm.BNTanhRNN(3, 6, max_length=5, gamma_init=1.0, norm="full", init="orthogonal")
    x = torch.randn(5, 8, 3)
    a, _ = rnn(x)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(3.0)
    b, _ = rnn(x)
    assert torch.allclose(a, b, atol=1e-4)
    plain = bnlstm.BNTanhRNN(3, 6, norm="none")
    c, _ = plain(x)
    with torch.no_grad():
        plain.weight_hh_l0.mul_(3.0)
    d, _ = plain(x)
    assert not torch.allclose(c, d, atol=1e-3)


class PickledThing:
    """A class a checkpoint must never be allowed to bring in."""


def test_cli_eval_refuses_pickled_objects_without_unsafe_advice(tmp_path, capsys):
    p = tmp_path / "pickled.pt"
    torch.save({"format": "bnlstm-checkpoint", "obj": PickledThing()}, p)
    assert cli_main(["eval", str(p)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "PickledThing" in err and "never unpickled" in err
    assert "weights_only=False" not in err and "can still be loaded" not in err


def test_cli_eval_with_a_bad_data_dir_is_a_message_not_a_traceback(tmp_path, capsys, mnist):
    cfg = TrainConfig(task="row", model="lstm", hidden=8, steps=1, eval_every=1, val_limit=20,
                      probe_every=0, test_at_end=False)
    exp = MNISTExperiment(cfg, data=mnist)
    exp.setup()
    from bnlstm.training.checkpoints import save_checkpoint
    save_checkpoint(make_checkpoint(exp.config, exp.state_dict()), tmp_path / "c.pt")
    assert cli_main(["eval", str(tmp_path / "c.pt"), "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not exist" in err and "Traceback" not in err


def test_runs_training_side_by_side_in_threads_repeat_exactly(mnist):
    """The dashboard trains runs as threads of one process: each must draw its weights and its
    h_0 noise from its own seed, so that a run repeats exactly whatever trains beside it."""
    def make(seed, model="bnlstm"):
        cfg = TrainConfig(task="row", model=model, hidden=16, batch_size=16, steps=15,
                          eval_every=15, val_limit=50, probe_every=0, test_at_end=False,
                          h0_noise=0.5, seed=seed)
        tr = Trainer(cfg, MNISTExperiment(cfg, data=mnist))
        losses = []
        tr.add_callback(lambda r: losses.append(r["loss"]) if r["kind"] == "train" else None)
        return tr, losses

    alone, want = make(0)
    alone.run()
    runs = [make(0), make(1), make(0, "bn-tanh-rnn")]
    for tr, _ in runs:
        tr.start()
    for tr, _ in runs:
        assert tr.join(60)
    assert runs[0][1] == want
    assert runs[1][1] != want
