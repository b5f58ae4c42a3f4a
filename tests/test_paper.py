"""bnlstm.paper: the paper's experiments at tiny sizes (each test a few seconds)."""
import json

import numpy as np
import pytest
import torch

from bnlstm import paper
from bnlstm.cli import main as cli_main


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    from bnlstm.tasks.mnist import data as data_mod
    return data_mod.load_mnist(mnist_dir)


# ------------------------------------------------------------------ Figure 1b
def test_tanh_derivative_values():
    r = paper.tanh_derivative([0.0, 1e-3, 0.5, 1.0])
    assert r["mean"][0] == pytest.approx(1.0)
    assert r["mean"][1] == pytest.approx(1.0, abs=1e-5)
    # E[1 - tanh(x)^2], x ~ N(0, 1): 0.6057 (the paper: "about 0.6")
    assert r["mean"][3] == pytest.approx(0.6057, abs=1e-3)
    assert r["at_sigma_1"] == pytest.approx(r["mean"][3])
    assert np.all(np.diff(r["mean"]) < 0)
    assert np.all(r["q25"] <= r["median"]) and np.all(r["median"] <= r["q75"])


def test_tanh_derivative_matches_monte_carlo():
    rng = np.random.default_rng(0)
    sig = [0.3, 0.8]
    r = paper.tanh_derivative(sig)
    for i, s in enumerate(sig):
        d = 1 - np.tanh(rng.normal(0, s, 400_000)) ** 2
        assert r["mean"][i] == pytest.approx(d.mean(), abs=2e-3)
        assert r["q25"][i] == pytest.approx(np.quantile(d, 0.25), abs=2e-3)
        assert r["q75"][i] == pytest.approx(np.quantile(d, 0.75), abs=2e-3)


# ------------------------------------------------------------------ Figure 1a
def test_gradient_flow_shapes(mnist):
    r = paper.gradient_flow(gammas=(0.1, 1.0), task="pixel7", hidden=16, batch_size=16, data=mnist)
    T = 49
    assert r["t"].shape == (T,) and list(r["hist_steps"]) == [1, 10, 24, 49]
    for m in paper.GRADIENT_MODELS:
        assert r[m]["grad_norm"].shape == (2, T)
        assert np.all(np.isfinite(r[m]["log10_ratio"]))
        assert r[m]["kurtosis"].shape == (2, T) and r[m]["unit_hist"].shape == (2, 4, 40)
        np.testing.assert_allclose(r[m]["unit_hist"].sum(-1), 1.0, atol=1e-9)
        assert r[m]["gain_per_step"].shape == (2,)
    json.dumps(paper.to_jsonable(r))


@pytest.fixture(scope="module")
def fig1a(mnist):
    """Figure 1a at the paper's scale: 784 pixels, 100 units, 100 training digits, float64."""
    return paper.gradient_flow(gammas=(0.1, 1.0), task="pixel",
                               models=("tanh", "tanh-orthogonal"), data=mnist)


def test_figure_1a_holds_for_the_authors_model(fig1a):
    """One BN over W_h h + W_x x, W_h = I (the authors' construct_rnn): gamma 1.0 vanishes by
    far more than 20 decades over 784 steps (measured: 50), gamma 0.1 stays within a few."""
    g01, g10 = fig1a["tanh"]["log10_ratio"]
    assert g10 < -20, g10
    assert -6 < g01 < 6, g01
    # the mechanism: the batch collapses onto two points (kurtosis -> 1) ...
    k = fig1a["tanh"]["kurtosis"]
    assert np.nanmedian(k[1, 100:]) < 1.2 and np.nanmedian(k[0, 100:]) > 2.0
    # ... where a step passes about tanh'(1) / tanh(1) = 0.55 of the gradient
    assert 0.5 < fig1a["tanh"]["gain_blank"][1] < 0.75
    assert abs(fig1a["tanh"]["gain_blank"][0] - 1) < 0.05
    # over the blank steps already on two points the gain is at most that over all of them
    assert fig1a["tanh"]["two_point_steps"][1] > 50 and np.isnan(fig1a["tanh"]["gain_two_point"][0])
    assert fig1a["tanh"]["gain_two_point"][1] <= fig1a["tanh"]["gain_blank"][1] + 1e-9
    # two spikes near +-tanh(1) = 0.76 at the last step, almost nothing near 0
    edges = fig1a["hist_edges"]
    centers = 0.5 * (edges[1:] + edges[:-1])
    h = fig1a["tanh"]["unit_hist"][1, -1]
    assert h[np.abs(np.abs(centers) - np.tanh(1.0)) < 0.1].sum() > 0.8
    assert h[np.abs(centers) < 0.4].sum() < 0.05


def test_orthogonal_recurrent_weights_reverse_figure_1a(fig1a):
    """The one change: an orthogonal W_h keeps mixing units; at gamma 1.0 the gradient then
    grows going back in time (measured: +29 decades) instead of vanishing."""
    g01, g10 = fig1a["tanh-orthogonal"]["log10_ratio"]
    assert g10 > 10, g10
    assert fig1a["tanh-orthogonal"]["gain_blank"][1] > 1.0
    assert np.nanmedian(fig1a["tanh-orthogonal"]["kurtosis"][1, 100:]) > 1.4


# ------------------------------------------------------------------ training experiments
def test_shared_stats_training_gives_the_same_weights(mnist):
    """The premise of stats_ablation: in training, stats='shared' and 'per_step' compute the same."""
    from bnlstm.tasks.mnist.experiment import MNISTExperiment
    sds = []
    for stats in ("per_step", "shared"):
        cfg = paper._config(True, task="row", model="bnlstm", stats=stats, steps=3, hidden=8,
                            batch_size=16, eval_every=3, val_limit=50)
        exp, _, _ = paper._train(cfg, mnist, experiment=MNISTExperiment(cfg, data=mnist))
        sds.append({k: v for k, v in exp.model.state_dict().items() if "running" not in k
                    and "num_batches" not in k})
    assert sds[0].keys() == sds[1].keys()
    for k in sds[0]:
        assert torch.equal(sds[0][k], sds[1][k]), k


def test_shared_twin_keeps_weights_and_has_one_row(mnist):
    from bnlstm.tasks.sequence import build_model
    cfg = paper._config(True, task="row", hidden=8)
    model = build_model(cfg, 28, 28)
    twin = paper._shared_twin(model)
    assert twin.rnn.bn_hh_l0.running_mean.shape == (1, 32)
    assert model.rnn.bn_hh_l0.running_mean.shape == (28, 32)
    for (k, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(a, b), k
    x = torch.rand(6, 28, 28)
    model.train(), twin.train()
    torch.manual_seed(1)
    ya = model(x)
    torch.manual_seed(1)
    yb = twin(x)
    assert torch.allclose(ya, yb)            # training mode: batch statistics in both


def test_stats_ablation_reports_both_accuracies(mnist):
    r = paper.stats_ablation(steps=6, hidden=8, reestimate_batches=2, val_limit=100, units=5,
                             batch_size=16, quick=True, data=mnist)
    for k in ("per_step", "shared_average", "shared_ema", "batch", "per_step_ema"):
        assert 0.0 <= r["accuracy"][k] <= 1.0
    assert r["pop_wh_mean"].shape == (28, 5) and r["pop_c_var"].shape == (28, 5)
    assert r["drop_shared_average"] == pytest.approx(r["accuracy"]["per_step"]
                                                     - r["accuracy"]["shared_average"])
    assert r["transient"]["pop_wh_mean"].shape == (28,)
    json.dumps(paper.to_jsonable(r))


def test_gamma_sweep_and_compare_models_shapes(mnist):
    r = paper.gamma_sweep(gammas=(0.1, 1.0), steps=4, eval_every=2, hidden=8, val_limit=50,
                          batch_size=16, quick=True, data=mnist)
    assert r["train_loss"].shape == (2, 4) and r["val_acc"].shape == (2, 2)
    assert np.all(np.isfinite(r["train_loss"]))
    c = paper.compare_models(models=("lstm", "bnlstm"), steps=4, eval_every=2, seeds=(0, 1),
                             hidden=8, val_limit=50, batch_size=16, quick=True, data=mnist)
    assert c["val_acc"]["lstm"].shape == (2, 2) and c["mean"]["bnlstm"].shape == (2,)
    # different seeds give different runs
    assert not np.array_equal(c["train_loss_smooth"]["lstm"][0], c["train_loss_smooth"]["lstm"][1])


def test_distractor_memory_shapes(mnist):
    r = paper.distractor_memory(train_suffix=4, factors=(1, 2), steps=4, hidden=8,
                                    val_limit=64, eval_batch=32, small_batch=16,
                                    reestimate_batches=2, batch_size=16, quick=True, data=mnist)
    assert r["T_train"] == 32 and r["lengths"].tolist() == [32, 64]
    for k in ("population", "batch", "batch_small", "lstm"):
        assert r["accuracy"][k].shape == (2,)
        assert np.all((0 <= r["accuracy"][k]) & (r["accuracy"][k] <= 1))


def test_suffix_batches_append_fixed_noise():
    class Inner:
        num_samples = 4

        def __len__(self):
            return 1

        def __iter__(self):
            yield torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long)

    b = paper._SuffixBatches(Inner(), 10, 0.3, seed=3, fixed=True)
    (x1, _), = list(b)
    (x2, _), = list(b)
    assert x1.shape == (4, 38, 28)
    assert torch.equal(x1, x2) and x1[:, 28:].std() > 0.1 and torch.all(x1[:, :28] == 0)


def test_cli_paper_tanh(tmp_path, capsys):
    out = tmp_path / "tanh.json"
    assert cli_main(["paper", "tanh", "--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["experiment"] == "tanh" and len(r["mean"]) == len(r["sigma"])
    assert "E[tanh']" in capsys.readouterr().out


def test_ptb_heldout_is_the_papers_characters_and_its_test_file(ptb_dir):
    t = paper.ptb_heldout(ptb_dir)
    assert t.kind == "ptb-heldout" and len(t.vocab) == 50
    assert len(t.train) > 350_000 and len(t.test) > 400_000
    assert "training file is not used" in t.source


def test_figure_3b_on_text_measures_three_modes_at_each_length(ptb_dir):
    text = paper.ptb_heldout(ptb_dir)
    r = paper.length_generalization(lengths=(20, 40, 80), train_len=20, steps=30, hidden=16,
                                    test_chars=3000, reestimate_batches=3, data=text,
                                    eval_batch=10, seeds=(0, 1))
    assert r["lengths"].tolist() == [20, 40, 80] and r["T_train"] == 20
    assert r["bpc_seeds"]["population"].shape == (2, 3)                  # (seeds, lengths)
    assert np.allclose(r["bpc"]["batch"], r["bpc_seeds"]["batch"].mean(0))
    assert r["per_position"]["population"].shape == (80,)               # the longest length
    # only whole batches of 10 windows: 3000 characters hold 37 windows of 80 (+ 1): 3 batches
    assert r["n_chars"].tolist()[-1] == 30 * 80
    for k in ("population", "batch", "lstm"):
        assert r["bpc"][k].shape == (3,) and np.all((0 < r["bpc"][k]) & (r["bpc"][k] < 6.7))
    assert r["paper"]["population"] == (1.398, 1.333)
    assert r["data_source"].startswith("Penn Treebank") and r["n_chars"][0] > 2500
    # trained for 30 updates: far from the paper, but below knowing nothing (log2 50 = 5.6)
    assert r["bpc"]["population"][0] < 5.6


def test_compare_text_reports_both_models_for_every_seed(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    r = paper.compare_text(models=("lstm", "bnlstm"), seeds=(0, 1), steps=6, hidden=8,
                           seq_len=20, reestimate_batches=2, text_file=f, whole_sequence=True)
    for m in ("lstm", "bnlstm"):
        assert r["val_bpc"][m].shape == (2,) and r["test_bpc"][m].shape == (2,)
        assert r["val_curve"][m].shape[0] == 2 and np.all(np.isfinite(r["test_bpc"][m]))
        whole = r["test_bpc_whole"][m]          # the whole test text as one sequence
        assert whole.shape == (2,) and np.all(np.isfinite(whole)) and np.all(whole > 0)
    assert r["paper"] == {"lstm": 1.38, "bnlstm": 1.32}


def test_cli_paper_length_quick_on_a_text_file(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("a stitch in time saves nine. " * 600)
    out = tmp_path / "len.json"
    assert cli_main(["paper", "length", "--quick", "--text-file", str(f), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["experiment"] == "length" and set(r["bpc"]) == {"population", "batch", "lstm"}
    assert "t.txt" in r["data_source"]


def test_cli_paper_with_a_bad_data_folder_is_a_message(tmp_path, capsys):
    assert cli_main(["paper", "length", "--quick", "--data-dir", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err


def test_a_verdict_is_inconclusive_inside_its_uncertainty_and_never_praises_noise():
    v = paper.verdict
    assert v("a beats b", [1.80], [1.85], 0.02).startswith("a beats b: yes")
    assert "inconclusive at this scale" in v("a beats b", [1.80], [1.81], 0.02)
    assert v("a beats b", [1.90], [1.85], 0.02).startswith("a beats b: NO")
    # above the characters alone (4.35 bits): not a success, whatever the gap to b
    assert "not judged" in v("a beats b", [5.2], [5.9], 0.02, baseline=4.35)
    # seeds: the spread of the per-seed differences, not the margin, decides
    assert "inconclusive" in v("a beats b", [1.80, 1.90, 1.70], [1.85, 1.80, 1.85], 0.001)
    assert "yes" in v("acc", [0.90, 0.91], [0.80, 0.82], 0.5, lower_is_better=False, baseline=0.1)
    d = paper.difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 9.0)
    assert d["diff"] == 2.0 and abs(d["err"] - 2 * 1.0 / 3 ** 0.5) < 1e-12 and d["n"] == 3


def test_figure_1a_over_seeds_reports_each_seeds_value(mnist):
    r = paper.gradient_flow(gammas=(0.1, 1.0), models=("tanh",), quick=True, data=mnist,
                            seeds=(0, 1))
    per = r["tanh"]["log10_ratio_seeds"]
    assert per.shape == (2, 2) and np.allclose(per[0], r["tanh"]["log10_ratio"])
    assert r["seeds"] == [0, 1] and not np.allclose(per[0], per[1])   # the seeds differ


def test_figure_5_on_text_measures_the_transient_with_stationary_input(ptb_dir):
    text = paper.ptb_heldout(ptb_dir)
    r = paper.text_transient(quick=True, data=text, seq_len=30)
    assert r["pop_wh_mean"].shape == (30, 10) and r["transient"]["pop_c_mean"].shape == (30,)
    # c_0 = 0: the first steps' cell statistics are far from the stationary ones
    assert r["ratio"]["pop_c_mean"] > 2.0, r["ratio"]
    assert r["experiment"] == "transient" and r["T_train"] == 30
