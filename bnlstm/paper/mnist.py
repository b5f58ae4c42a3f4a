"""The paper's experiments on sequential MNIST (Figs. 1, 2, 5, 6); the distractor task is
:mod:`bnlstm.paper.memory`.

See :mod:`bnlstm.paper` for the table of experiments.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from statistics import NormalDist
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.probes import UNIT_EDGES
from ..nn import (BNLSTM, BNTanhRNN, SequenceBatchNorm, Trace, batch_statistics,
                     reestimate_stats)
from .common import _config, _first_reaching, _load, _meta, _smooth, _train, per_step_statistics

@torch.no_grad()
def _accuracy(model: nn.Module, batches: Iterable, batch_stats: bool = False) -> float:
    """Accuracy of ``model`` over ``batches``; population statistics (eval mode) unless
    ``batch_stats``: then every test batch is normalized with its own statistics, per step
    (:func:`bnlstm.nn.batch_statistics`: no h_0 noise, the running stats untouched)."""
    was = model.training
    if not batch_stats:
        model.eval()
    correct = total = 0
    with batch_statistics(model) if batch_stats else contextlib.nullcontext():
        for x, y in batches:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train(was)
    return correct / max(total, 1)


# =========================================================================== Figure 1b
def tanh_derivative(sigmas: Sequence[float] = tuple(np.linspace(0.0, 1.0, 21)),
                    quick: bool = False, n_nodes: int = 201) -> Dict[str, Any]:
    """Figure 1b: the expected derivative of tanh for a Gaussian input, and its IQR.

    Claim (Sec. 4, Fig. 1b): for x ~ N(0, sigma^2), E[tanh'(x)] falls from 1 at
    sigma = 0 to about 0.6 at sigma = 1: a unit-variance input (gamma = 1) already
    passes only ~60% of the gradient per step, which compounds over time; hence
    initialize BN's gamma small (0.1).

    Exact, no sampling: the mean by Gauss-Hermite quadrature with ``n_nodes`` nodes;
    the quartiles in closed form, because tanh'(x) = 1 - tanh(x)^2 decreases in |x|,
    so its p-quantile is tanh'(sigma * Phi^-1(1 - p/2)).

    Returns ``sigma``, ``mean``, ``median``, ``q25``, ``q75`` (arrays over sigmas).
    """
    t0 = time.perf_counter()
    s = np.asarray(sigmas, dtype=float)
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)   # weight exp(-x^2 / 2)
    weights = weights / math.sqrt(2 * math.pi)

    def dtanh(x):
        return 1.0 - np.tanh(x) ** 2

    mean = np.array([np.sum(weights * dtanh(si * nodes)) for si in s])
    nd = NormalDist()

    def quantile(p):
        return dtanh(s * nd.inv_cdf(1.0 - p / 2.0))

    out = {"sigma": s, "mean": mean, "median": quantile(0.5), "q25": quantile(0.25),
           "q75": quantile(0.75)}
    out["at_sigma_1"] = float(np.sum(weights * dtanh(nodes)))
    out.update(_meta("tanh", quick, t0, n_nodes=n_nodes))
    return out


# =========================================================================== Figure 1a
# The models gradient_flow measures: name -> (description, how to build it).
#   "tanh":            the authors' Fig. 1a model (sequential_mnist.py at e6c5d20, construct_rnn):
#                      one BN over W_h h + W_x x, W_h the identity, W_x orthogonal
#   "tanh-orthogonal": the same with an orthogonal W_h (the one change that flips the result)
#   "tanh-separate":   separate BNs of W_h h and W_x x (as in the BN-LSTM), orthogonal W_h
#   "bnlstm":          the BN-LSTM with its paper init (identity W_h blocks)
GRADIENT_MODELS = {
    "tanh": ("BN tanh-RNN as the authors built it: tanh(BN(W_h h + W_x x)), W_h = I",
             dict(norm="sum", init="paper")),
    "tanh-orthogonal": ("the same with orthogonal W_h", dict(norm="sum", init="orthogonal")),
    "tanh-separate": ("tanh(BN(W_h h) + BN(W_x x)), orthogonal W_h",
                      dict(norm="full", init="orthogonal")),
    "bnlstm": ("BN-LSTM, paper init (W_h = I per gate)", None),
}
# The per-step gain at the two-point fixed point of u <- tanh(standardize(u)) at gamma = 1:
# the batch sits at +-tanh(1), and one step passes tanh'(1) / tanh(1) of the gradient.
TWO_POINT_GAIN = (1.0 - math.tanh(1.0) ** 2) / math.tanh(1.0)
TWO_POINT_KURTOSIS = 1.3      # a batch kurtosis below this counts as "on two points" (two: 1)


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log10(np.asarray(x, dtype=float))


def _build_gradient_model(name: str, gamma: float, T: int, I: int, hidden: int, h0_noise: float,
                          batch_size: int, seed: int, task: str):
    from ..tasks.sequence import SequenceClassifier, build_model
    if name not in GRADIENT_MODELS:
        raise ValueError(f"unknown model {name!r}; use one of {', '.join(GRADIENT_MODELS)}")
    spec = GRADIENT_MODELS[name][1]
    if spec is None:
        cfg = _config(False, task=task, model="bnlstm", gamma_init=float(gamma), hidden=hidden,
                      batch_size=batch_size, seed=seed, h0_noise=h0_noise)
        return build_model(cfg, T, I)
    return SequenceClassifier(BNTanhRNN(I, hidden, batch_first=True, gamma_init=float(gamma),
                                        max_length=T, h0_noise=h0_noise, **spec))


def _median_gain(log_ratios: np.ndarray) -> np.ndarray:
    """(G, S) log10 per-step ratios -> (G,) 10 ** median over the finite ones (NaN if none)."""
    return np.array([10 ** np.median(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan
                     for r in np.atleast_2d(log_ratios)])


def gradient_flow(gammas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                  task: Optional[str] = None,
                  models: Sequence[str] = ("tanh", "tanh-orthogonal", "tanh-separate", "bnlstm"),
                  hidden: int = 100, batch_size: int = 100, h0_noise: float = 0.1,
                  updates: int = 0, seed: int = 0, hist_steps: Optional[Sequence[int]] = None,
                  dtype: str = "float64", quick: bool = False, data=None,
                  data_dir=None, seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Figure 1a: how ``||dLoss/dh_t||`` flows back through time, per gamma, and why.

    Claim (Sec. 4, Fig. 1a): in a batch-normalized tanh RNN on sequential MNIST, gamma
    = 0.1 keeps the gradient's norm roughly flat over 784 steps, while gamma >= 0.7 makes
    it vanish (below 1e-26) within 100-250 steps.

    The models (:data:`GRADIENT_MODELS`): ``"tanh"`` is the authors' own Fig. 1a network
    (one BN over the summed pre-activation, identity ``W_h``); ``"tanh-orthogonal"`` and
    ``"tanh-separate"`` change one thing each; ``"bnlstm"`` is the BN-LSTM. Each is
    measured on one fixed batch of training digits at initialization (``updates=0``, as
    the authors' ``DumpVariables(before_training=True)``) or after ``updates`` RMSProp
    updates (lr 1e-3, clip 1), loss on the last step, gradients through the batch
    statistics, in ``dtype`` (float64: norms far below float32's range stay measurable).
    ``h0_noise``: std of the Gaussian noise on h_0 (the paper's pixel-MNIST setting, 0.1).
    Without it the first, all-black pixels give every unit a zero batch variance, where
    BN's Jacobian is gamma / sqrt(eps) ~ 316 gamma and the gradient explodes through
    those steps in every model.

    ``seeds``: measure once per seed (the weights, the batch, the h_0 noise); the result is
    the first seed's, plus ``log10_ratio_seeds`` (S, G) per model and ``seeds``.

    Returns ``t`` (1..T), ``gammas``, ``hist_steps`` (1-based), ``hist_edges`` and per
    model:

    - ``grad_norm`` (G, T): the mean over the batch of each example's ``||dL/dh_t||``
      (as the authors' ``plot_rnn_gradnorm.py``);
    - ``log10_ratio`` (G,): log10(||dL/dh_1|| / ||dL/dh_T||), negative when it vanishes;
      ``decay_per_100`` (G,): the same per 100 steps;
    - ``gain_per_step`` (G,): the median over t of ||dL/dh_{t-1}|| / ||dL/dh_t|| (below 1:
      vanishing); ``gain_blank`` (G,): the same over the steps whose input is zero for
      the whole batch (the black border: there a step is exactly ``u <- tanh(gamma *
      standardize(u))`` for the ``"tanh"`` model; ``blank`` (T,) marks them);
      ``gain_two_point`` (G,): the same over the blank steps whose batch already sits on
      two points (kurtosis below :data:`TWO_POINT_KURTOSIS`; ``two_point_steps`` (G,) of
      them, NaN if none); compare :data:`TWO_POINT_GAIN` =
      tanh'(1) / tanh(1) = 0.551, the gain when the batch sits on two equal halves;
    - ``kurtosis`` (G, T): the batch kurtosis of the tanh units' outputs, averaged over
      units (3: Gaussian; 1: two equal points);
    - ``unit_hist`` (G, S, 40): the batch distribution of those outputs pooled over units,
      at ``hist_steps``, over ``hist_edges`` in [-1, 1].
    """
    if seeds is not None and len(seeds) > 0:     # the spread over seeds: weights, batch, noise
        kw = dict(gammas=gammas, task=task, models=models, hidden=hidden, batch_size=batch_size,
                  h0_noise=h0_noise, updates=updates, hist_steps=hist_steps, dtype=dtype,
                  quick=quick, data=_load(data, data_dir))
        t_all = time.perf_counter()
        runs = [gradient_flow(seed=int(s), **kw) for s in seeds]
        out = runs[0]
        out["seeds"] = [int(s) for s in seeds]
        for m in models:
            if m in out:
                out[m]["log10_ratio_seeds"] = np.stack([r[m]["log10_ratio"] for r in runs])
        out["seconds"] = round(time.perf_counter() - t_all, 2)
        out["settings"]["seeds"] = out["seeds"]
        return out
    from ..tasks.mnist import data as data_mod
    from ..nn.probes import unit_distribution
    t0 = time.perf_counter()
    task = task or ("pixel7" if quick else "pixel")
    if quick:
        hidden, batch_size = min(hidden, 32), min(batch_size, 32)
    data = _load(data, data_dir)
    T, I = data_mod.TASKS[task]
    if hist_steps is None:
        hist_steps = sorted({1, min(10, T), min(50, T), T // 2, T})
    hist_steps = sorted({int(s) for s in hist_steps})
    if any(not 1 <= s <= T for s in hist_steps):
        raise ValueError(f"hist_steps must lie in 1..{T}; got {hist_steps}")
    splits = data_mod.make_splits(data)
    train_batches = data_mod.Batches(*splits["train"], task=task, batch_size=batch_size,
                                     seed=seed, shuffle=True, endless=True)
    x, y = next(iter(train_batches))       # the batch every gradient is measured on
    blank = (x.abs().amax(dim=(0, 2)) == 0).cpu().numpy()      # (T,) steps no digit reaches
    dt = getattr(torch, dtype)
    x = x.to(dt)
    out: Dict[str, Any] = {"t": np.arange(1, T + 1), "gammas": np.asarray(gammas, dtype=float),
                           "task": task, "updates": updates, "hist_steps": np.asarray(hist_steps),
                           "blank_steps": int(blank.sum()), "blank": blank,
                           "two_point_gain": TWO_POINT_GAIN,
                           "models": {m: GRADIENT_MODELS[m][0] for m in models
                                      if m in GRADIENT_MODELS}}
    for name in models:
        norms, kurt, hists = [], [], []
        for g in gammas:
            torch.manual_seed(seed)
            model = _build_gradient_model(name, g, T, I, hidden, h0_noise, batch_size, seed,
                                          task).to(dt)
            model.train()
            if updates:
                opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
                upd_it = iter(data_mod.Batches(*splits["train"], task=task, batch_size=batch_size,
                                               seed=seed + 1, shuffle=True, endless=True))
                for _ in range(updates):
                    xb, yb = next(upd_it)
                    loss = F.cross_entropy(model(xb.to(dt)), yb)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
            torch.manual_seed(seed + 7)          # the same h_0 noise for every gamma
            trace = Trace()
            loss = F.cross_entropy(model(x, trace=trace), y)
            loss.backward()
            norms.append(trace.grad_norms(0, per_example=True).double().cpu().numpy())
            units = unit_distribution(trace.layers[0]["g_pre"], steps=[s - 1 for s in hist_steps])
            kurt.append(units["kurtosis"])
            hists.append(units["frac"])
            del trace, model
        gn = np.stack(norms)                                   # (G, T)
        lg = _log10(gn)
        ratio = lg[:, 0] - lg[:, -1]
        with np.errstate(invalid="ignore"):
            back = lg[:, :-1] - lg[:, 1:]       # [:, i]: log10 ||g_i|| / ||g_{i+1}|| (0-based t)
        ks = np.stack(kurt)                                   # (G, T)
        # the blank steps whose incoming batch sits on two points (kurtosis of step i's
        # units near 1): where the two-point gain is the prediction
        with np.errstate(invalid="ignore"):
            on_two = blank[None, 1:] & (ks[:, :-1] < TWO_POINT_KURTOSIS)
        out[name] = {"grad_norm": gn, "log10_ratio": ratio,
                     "decay_per_100": ratio / max(T - 1, 1) * 100.0,
                     "gain_per_step": _median_gain(back),
                     "gain_blank": _median_gain(back[:, blank[1:]]),
                     "gain_two_point": np.array([_median_gain(b[m])[0] if m.any() else np.nan
                                                 for b, m in zip(back, on_two)]),
                     "two_point_steps": on_two.sum(1),
                     "kurtosis": ks, "unit_hist": np.stack(hists)}
    out["hist_edges"] = UNIT_EDGES
    out.update(_meta("gradients", quick, t0, data, gammas=list(gammas), task=task, hidden=hidden,
                     batch_size=batch_size, h0_noise=h0_noise, updates=updates, seed=seed,
                     dtype=dtype, models=list(models), hist_steps=hist_steps))
    return out


# =========================================================================== Figure 6
def gamma_sweep(gammas: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 1.0), task: Optional[str] = None,
                steps: Optional[int] = None, seed: int = 0, hidden: Optional[int] = None,
                eval_every: Optional[int] = None, val_limit: Optional[int] = None,
                quick: bool = False, data=None, data_dir=None, **config) -> Dict[str, Any]:
    """Figure 6: BN-LSTM training curves for several initial gammas.

    Claim (Sec. 5.1 / Appendix, Fig. 6): the larger the initial gamma, the more slowly the
    BN-LSTM trains (most visibly on permuted MNIST); gamma = 0.1 is the paper's choice.

    CPU-sized defaults: task ``pixel7`` (the 7x7 average-pooled image, pixel by pixel: 49
    steps of one input, the shape of pixel MNIST), 600 updates, 100 units, batch 100,
    RMSProp 1e-3 (quick: ``row``, 60 updates, 32 units). Everything but gamma is equal.

    Returns ``gammas``, ``train_step`` (S,), ``train_loss`` (G, S), ``train_loss_smooth``
    (G, S), ``val_step`` (E,), ``val_acc`` (G, E), and per gamma ``final_loss`` (the mean
    training loss over the last 20% of updates), ``best_val_acc``, ``final_val_acc``.
    """
    t0 = time.perf_counter()
    task = task or ("row" if quick else "pixel7")
    steps = steps or (60 if quick else 600)
    hidden = hidden or (32 if quick else 100)
    eval_every = eval_every or (20 if quick else 50)
    val_limit = val_limit if val_limit is not None else (500 if quick else 2000)
    data = _load(data, data_dir)
    losses, vals = [], []
    val_step = train_step = None
    states = []
    for g in gammas:
        cfg = _config(quick, task=task, model="bnlstm", gamma_init=float(g), steps=steps, seed=seed,
                      hidden=hidden, eval_every=eval_every, val_limit=val_limit, **config)
        _, _, c = _train(cfg, data)
        n = len(c["train_loss"])
        loss = np.full(steps, np.nan)
        loss[:n] = c["train_loss"]
        losses.append(loss)
        vals.append(c["val_acc"])
        states.append(c["state"])
        train_step = np.arange(1, steps + 1)
        if val_step is None or len(c["val_step"]) > len(val_step):
            val_step = c["val_step"]
    E = len(val_step)
    val_acc = np.full((len(gammas), E), np.nan)
    for i, v in enumerate(vals):
        val_acc[i, :len(v)] = v
    losses = np.stack(losses)
    window = max(1, steps // 20)
    tail = max(1, steps // 5)
    out = {"gammas": np.asarray(gammas, dtype=float), "task": task, "train_step": train_step,
           "train_loss": losses,
           "train_loss_smooth": np.stack([_smooth(l, window) for l in losses]),
           "val_step": val_step, "val_acc": val_acc,
           "final_loss": np.nanmean(losses[:, -tail:], axis=1),
           "best_val_acc": np.nanmax(val_acc, axis=1),
           "final_val_acc": val_acc[:, -1], "states": states}
    out.update(_meta("gamma", quick, t0, data, gammas=list(gammas), task=task, steps=steps,
                     hidden=hidden, seed=seed, eval_every=eval_every, val_limit=val_limit, **config))
    return out


# =========================================================================== Figure 5 + ablation
def _shared_twin(model: nn.Module) -> nn.Module:
    """A copy of a trained classifier whose BN-LSTM keeps one set of statistics for all steps
    (``stats="shared"``): the same weights, its own (uninitialized) running statistics."""
    twin = copy.deepcopy(model)
    for name, m in list(twin.named_modules()):
        if isinstance(m, SequenceBatchNorm):
            new = SequenceBatchNorm(m.num_features, max_length=m.max_length, stats="shared",
                                    gamma_init=m.gamma_init, learn_beta=m.bias is not None,
                                    momentum=m.momentum, eps=m.eps)
            with torch.no_grad():
                new.weight.copy_(m.weight)
                if m.bias is not None:
                    new.bias.copy_(m.bias)
            parent_name, _, attr = name.rpartition(".")
            parent = twin.get_submodule(parent_name) if parent_name else twin
            setattr(parent, attr, new)
        if isinstance(m, BNLSTM):
            m.stats = "shared"
    return twin


def stats_ablation(task: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
                   hidden: Optional[int] = None, units: int = 30, reestimate_batches: Optional[int] = None,
                   val_limit: Optional[int] = None, quick: bool = False, data=None, data_dir=None,
                   **config) -> Dict[str, Any]:
    """Figure 5 and the ablation it implies: per-step vs shared population statistics.

    Claims (Sec. 3 and Fig. 5): the statistics of the normalized terms have a strong
    transient over the first steps before they become stationary, so each step needs its
    own population statistics; "consistently averaging them over time severely degrades
    performance" -- a claim the paper makes without a number. This measures it.

    Method (same weights, same training): one BN-LSTM is trained with ``stats="per_step"``.
    In training mode a BN-LSTM normalizes with the minibatch's statistics whatever its
    ``stats`` setting, so training a shared-stats model from the same seed gives the very
    same weights (``tests/test_paper.py`` checks this); only the population statistics used
    at inference differ. So the trained weights are copied into a ``stats="shared"`` twin and
    evaluated on the validation split with:

    - ``per_step``: per-step statistics re-estimated over ``reestimate_batches`` training
      batches (plain average of minibatch statistics, as the authors did before testing);
    - ``shared_average``: one set of statistics for all steps, re-estimated over the same
      batches: the average over steps and batches (the most favourable shared estimate);
    - ``shared_ema``: what a single ``nn.BatchNorm1d`` reused at every step holds after
      training (momentum 0.1 updated at every step of every batch: dominated by the last
      steps of the sequence), from 20 training batches;
    - ``per_step_ema``: per-step statistics as training left them (momentum 0.1), which is
      what validation during training used;
    - ``batch``: each validation batch (500 sequences) normalized with its own statistics.

    Figure 5: ``pop_wh_mean``/``pop_wh_var`` (T, units) and ``pop_c_mean``/``pop_c_var`` (T,
    units): the re-estimated per-step population mean and variance of W_h h_{t-1} (units
    spread over all four gates) and of c_t, for ``units`` units; and ``transient``: for each,
    the mean |stat_t - stat_stationary| / (std over units of the stationary stat), where
    stationary = the mean over the last third of the steps, at t = 0..T-1.

    Defaults: task ``row`` (28 steps: the first steps are a large part of the sequence),
    1000 updates, 100 units (quick: 80 updates, 32 units).
    """
    from ..tasks.mnist import data as data_mod
    t0 = time.perf_counter()
    task = task or "row"
    steps = steps or (80 if quick else 1000)
    hidden = hidden or (32 if quick else 100)
    reestimate_batches = reestimate_batches or (10 if quick else 100)
    val_limit = val_limit if val_limit is not None else (500 if quick else 10000)
    data = _load(data, data_dir)
    cfg = _config(quick, task=task, model="bnlstm", stats="per_step", steps=steps, seed=seed,
                  hidden=hidden, eval_every=max(steps // 10, 1), val_limit=min(val_limit, 2000),
                  **config)
    exp, trainer, curves = _train(cfg, data)
    model = exp.model                  # the best weights (early stopping), as the trainer left them
    splits = exp.splits
    train_b = data_mod.Batches(*splits["train"], task=task, batch_size=cfg.batch_size,
                               seed=seed + 1, shuffle=True)
    val_b = data_mod.Batches(*splits["val"], task=task, batch_size=500, shuffle=False,
                             limit=val_limit or None)

    def first(n):
        it = iter(train_b)
        return [next(it)[0] for _ in range(n)]

    acc = {"per_step_ema": _accuracy(model, val_b)}
    stat_batches = first(reestimate_batches)
    reestimate_stats(model, stat_batches)
    acc["per_step"] = _accuracy(model, val_b)
    twin = _shared_twin(model)
    reestimate_stats(twin, stat_batches)
    acc["shared_average"] = _accuracy(twin, val_b)
    ema_twin = _shared_twin(model)
    reestimate_stats(ema_twin, stat_batches[:20], momentum=0.1)   # as a BatchNorm1d would
    acc["shared_ema"] = _accuracy(ema_twin, val_b)
    acc["batch"] = _accuracy(model, val_b, batch_stats=True)

    fig5 = per_step_statistics(model.rnn, units)
    u_wh, u_c = fig5["units_wh"], fig5["units_c"]
    fig5.update({
        "shared_wh_mean": twin.rnn.bn_hh_l0.running_mean[0, u_wh].numpy().copy(),
        "shared_wh_var": twin.rnn.bn_hh_l0.running_var[0, u_wh].numpy().copy(),
        "shared_c_mean": twin.rnn.bn_c_l0.running_mean[0, u_c].numpy().copy(),
        "shared_c_var": twin.rnn.bn_c_l0.running_var[0, u_c].numpy().copy(),
    })
    out = {"task": task, **fig5, "accuracy": acc,
           "drop_shared_average": acc["per_step"] - acc["shared_average"],
           "drop_shared_ema": acc["per_step"] - acc["shared_ema"],
           "val_step": curves["val_step"], "val_acc": curves["val_acc"],
           "best_step": trainer.final.get("best_step"), "n_val": val_b.num_samples}
    out.update(_meta("stats", quick, t0, data, task=task, steps=steps, hidden=hidden, seed=seed,
                     reestimate_batches=reestimate_batches, val_limit=val_limit, units=units,
                     **config))
    return out


# =========================================================================== Figure 2
def compare_models(models: Sequence[str] = ("lstm", "bnlstm-input", "bnlstm"),
                   task: Optional[str] = None, steps: Optional[int] = None,
                   seeds: Optional[Sequence[int]] = None, hidden: Optional[int] = None,
                   eval_every: Optional[int] = None, val_limit: Optional[int] = None,
                   threshold: float = 0.9, quick: bool = False, data=None, data_dir=None,
                   **config) -> Dict[str, Any]:
    """Figure 2: validation accuracy against training updates, LSTM vs BN-LSTM.

    Claim (Sec. 5.1, Fig. 2): the BN-LSTM trains faster than the LSTM and is less erratic
    (on MNIST above 95% within ~10k updates while the LSTM is erratic until ~40k), and
    normalizing the recurrent term too beats normalizing only the input term.

    Same recipe for all models (RMSProp 1e-3, clip 1, batch 100, the paper's init, forget
    bias 1; h_0 noise 0.1 for the BN models); only ``model`` differs. CPU-sized defaults:
    task ``pixel7`` (49 steps of one pixel), 600 updates, 3 seeds, validation on 2000
    digits every 50 updates (quick: ``row``, 60 updates, 2 seeds, 32 units).

    Returns ``models``, ``seeds``, ``val_step`` (E,), ``val_acc[model]`` (S, E),
    ``mean[model]``, ``std[model]`` (E,), ``best[model]`` (S,), ``final[model]`` (S,) and
    ``steps_to[model]``: the first evaluated step where the seed-mean accuracy reaches
    ``threshold`` (None if never).
    """
    t0 = time.perf_counter()
    task = task or ("row" if quick else "pixel7")
    steps = steps or (60 if quick else 600)
    seeds = tuple(seeds) if seeds is not None else ((0, 1) if quick else (0, 1, 2))
    hidden = hidden or (32 if quick else 100)
    eval_every = eval_every or (20 if quick else 50)
    val_limit = val_limit if val_limit is not None else (500 if quick else 2000)
    data = _load(data, data_dir)
    val_acc, train_loss = {}, {}
    val_step = None
    for m in models:
        runs, losses = [], []
        for s in seeds:
            cfg = _config(quick, task=task, model=m, steps=steps, seed=s, hidden=hidden,
                          eval_every=eval_every, val_limit=val_limit, **config)
            _, _, c = _train(cfg, data)
            runs.append(c["val_acc"])
            loss = np.full(steps, np.nan)
            loss[:len(c["train_loss"])] = c["train_loss"]
            losses.append(loss)
            if val_step is None or len(c["val_step"]) > len(val_step):
                val_step = c["val_step"]
        a = np.full((len(seeds), len(val_step)), np.nan)
        for i, r in enumerate(runs):
            a[i, :len(r)] = r
        val_acc[m] = a
        train_loss[m] = np.stack(losses)
    mean = {m: np.nanmean(a, 0) for m, a in val_acc.items()}
    out = {"models": list(models), "seeds": list(seeds), "task": task, "val_step": val_step,
           "val_acc": val_acc, "mean": mean, "std": {m: np.nanstd(a, 0) for m, a in val_acc.items()},
           "best": {m: np.nanmax(a, 1) for m, a in val_acc.items()},
           "final": {m: a[:, -1] for m, a in val_acc.items()},
           "steps_to": {m: _first_reaching(val_step, mean[m], threshold) for m in models},
           "threshold": threshold,
           "train_loss_smooth": {m: np.stack([_smooth(l, max(1, steps // 20)) for l in L])
                                 for m, L in train_loss.items()}}
    out.update(_meta("models", quick, t0, data, models=list(models), task=task, steps=steps,
                     seeds=list(seeds), hidden=hidden, eval_every=eval_every, val_limit=val_limit,
                     **config))
    return out
