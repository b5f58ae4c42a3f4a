"""The paper's character-level language modelling: Table 2's comparison and Figure 3b.

The paper trains on Penn Treebank's 5 MB training file (1000 units, many epochs). The
text used here is whatever :func:`bnlstm.tasks.text.data.load_text` finds (the result's
``data_source`` says which), or, with ``source="ptb-heldout"``, Penn Treebank's own
validation file as training text (its first 95%; the last 5% validates) and its test
file as the test: the paper's domain and test set when the training file is absent.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..tasks.text import data as textdata
from .common import _config, _meta, _train

# The paper's Figure 3b, read from the figure (test bits per character at length 100 and 1000).
PAPER_FIG3B = {"lengths": (100, 1000), "population": (1.398, 1.333), "batch": (1.420, 1.362),
               "lstm": (1.449, 1.391)}
# Table 2: Penn Treebank test bits per character (1000 units).
PAPER_TABLE2 = {"lstm": 1.38, "bnlstm": 1.32}


ptb_heldout = textdata.ptb_heldout      # Penn Treebank's held-out split (tasks.text.data)


def _text(data, data_dir, text_file, source: str) -> textdata.Text:
    if data is not None:
        return data
    return textdata.load_text(data_dir, text_file=text_file, source=source)


def _recipe(recipe: str) -> Dict[str, Any]:
    """The text task's own settings, then the named recipe's (``bnlstm/recipes``)."""
    from .. import recipes, tasks
    t = tasks.get("text")
    return {**t.defaults, **recipes.get(recipe).settings(t), "recipe": recipe}


def _text_config(quick: bool, recipe: str = "quick", **settings):
    """The text task's recipe, then the experiment's settings (CPU, no probes)."""
    return _config(quick, **{**_recipe(recipe), "task": "text", **settings})


def _experiment(cfg, data):
    from ..tasks.text.experiment import TextExperiment
    return TextExperiment(cfg, data=data)


def compare_text(models: Sequence[str] = ("lstm", "bnlstm"), seeds: Sequence[int] = (0,),
                 steps: Optional[int] = None, hidden: Optional[int] = None,
                 seq_len: Optional[int] = None, reestimate_batches: Optional[int] = None,
                 val_limit: Optional[int] = None, quick: bool = False, data=None, data_dir=None,
                 text_file=None, source: str = "auto", whole_sequence: bool = False,
                 recipe: str = "quick", **config) -> Dict[str, Any]:
    """Table 2's comparison: LSTM vs BN-LSTM, same text, same seeds, bits per character.

    Claim (Sec. 5.2, Table 2): on Penn Treebank characters the BN-LSTM reaches 1.32 test
    bits per character against the LSTM's 1.38, and converges faster. Each model trains
    with the text task's recipe (Adam 2e-3, batches of 64 sequences of ``seq_len``); the
    BN-LSTM's statistics are re-estimated over ``reestimate_batches`` training batches
    before validation and test, as the authors did.

    Returns ``models``, ``seeds``, ``val_step`` (E,), ``val_curve[model]`` (S, E) validation
    bpc during training (running averages), ``val_bpc[model]`` and ``test_bpc[model]`` (S,)
    of the best weights after re-estimation, ``unigram_bits``, ``paper`` (Table 2).
    ``whole_sequence``: also ``test_bpc_whole[model]`` (S,), the authors' test of Table 2
    (``TextExperiment.evaluate_whole``: the whole test text as one sequence of batch 1).
    ``recipe``: the settings the runs start from (``quick``: the text task's; ``authors``:
    their code's: orthogonal init, learned h_0, 99 predictions per 100-character window,
    re-estimation over one training pass, the whole-sequence test), at the sizes given here.
    """
    t0 = time.perf_counter()
    text = _text(data, data_dir, text_file, source)
    base = _recipe(recipe)
    steps = steps or (40 if quick else 2000)
    hidden = hidden or (32 if quick else 256)
    seq_len = seq_len or base["seq_len"]
    if reestimate_batches is None:
        reestimate_batches = 5 if quick else base.get("reestimate", 50)
    if base.get("text_test") == "whole" and quick:
        config.setdefault("text_test", "windows")      # a quick run: no whole-text test
    val_limit = val_limit if val_limit is not None else (100 if quick else 0)
    curves: Dict[str, List[np.ndarray]] = {m: [] for m in models}
    val, test = {m: [] for m in models}, {m: [] for m in models}
    whole: Dict[str, List[float]] = {m: [] for m in models}
    val_step = None
    for m in models:
        for seed in seeds:
            cfg = _text_config(quick, recipe, **{
                "model": m, "steps": steps, "seed": seed, "hidden": hidden, "seq_len": seq_len,
                "eval_every": max(steps // 10, 1), "val_limit": val_limit,
                "reestimate": reestimate_batches, "test_at_end": True, **config})
            exp, trainer, c = _train(cfg, text, experiment=_experiment(cfg, text))
            curves[m].append(c["val_bpc"])
            val_step = c["val_step"]
            val[m].append(trainer.final.get("val_bpc"))
            test[m].append(trainer.final.get("test_bpc"))
            if cfg.text_test == "whole":             # the final test was the whole text
                whole[m].append(trainer.final.get("test_bpc"))
            elif whole_sequence:
                whole[m].append(exp.evaluate_whole("test")["bpc"])
    whole_sequence = whole_sequence or any(whole.values())
    out = {"models": list(models), "seeds": list(seeds), "val_step": val_step,
           "val_curve": {m: np.vstack(v) for m, v in curves.items()},
           "val_bpc": {m: np.asarray(v, dtype=float) for m, v in val.items()},
           "test_bpc": {m: np.asarray(v, dtype=float) for m, v in test.items()},
           "unigram_bits": text.unigram_bits("test"), "paper": PAPER_TABLE2,
           "n_train_chars": len(text.train)}
    if whole_sequence:
        out["test_bpc_whole"] = {m: np.asarray(v, dtype=float) for m, v in whole.items()}
    out.update(_meta("text", quick, t0, text, models=list(models), seeds=list(seeds),
                     steps=steps, hidden=hidden, seq_len=seq_len,
                     reestimate_batches=reestimate_batches, val_limit=val_limit,
                     source=source, whole_sequence=whole_sequence, recipe=recipe, **config))
    return out


def length_generalization(lengths: Sequence[int] = (100, 200, 300, 400, 500, 600, 700, 800,
                                                    900, 1000),
                          train_len: Optional[int] = None, steps: Optional[int] = None,
                          hidden: Optional[int] = None, seed: int = 0,
                          seeds: Optional[Sequence[int]] = None,
                          test_chars: Optional[int] = None, reestimate_batches: Optional[int] = None,
                          eval_batch: int = 100, quick: bool = False, data=None, data_dir=None,
                          text_file=None, source: str = "auto", recipe: str = "quick",
                          **config) -> Dict[str, Any]:
    """Figure 3b: train on sequences of ``train_len`` characters, test on longer ones.

    Claim (Sec. 5.2, Fig. 3b): a BN-LSTM trained on length T_max = 100 generalizes to test
    sequences up to length 1000 when the steps beyond T_max reuse the population statistics
    of step T_max (the T_max rule), better than when each test batch is normalized with its
    own statistics, and better than an LSTM. The paper's curve: population 1.398 -> 1.333,
    batch 1.420 -> 1.362, LSTM 1.449 -> 1.391 bits per character from length 100 to 1000.

    A BN-LSTM and an LSTM train with the ``recipe``'s settings (the text task's, or the
    authors'); the BN-LSTM's statistics are re-estimated over training batches (as the
    authors did). Then the test text (its first ``test_chars`` characters; by default all
    of it) is cut into windows of each length and scored in batches of ``eval_batch`` (the
    authors' 100), only full batches (quick: all), so that each mode and length scores
    whole batches and batch statistics are never those of a small last batch: ``population`` (eval mode, T_max
    rule), ``batch`` (training-mode batch statistics, no running average touched), ``lstm``.
    ``seeds``: train each model once per seed (default: ``[seed]``).

    Returns ``lengths`` (L,), ``bpc[mode]`` (L,) the mean over seeds, ``bpc_seeds[mode]``
    (S, L), ``bpc_std[mode]`` (L,), ``n_chars`` (L,) scored per length, ``per_position[mode]``
    (the longest length,) mean bits at each position of its windows (over seeds),
    ``T_train``, ``val_curve[model]`` (of the first seed), ``paper`` (the figure's end
    points), ``unigram_bits``.
    """
    t0 = time.perf_counter()
    text = _text(data, data_dir, text_file, source)
    base = _recipe(recipe)
    steps = steps or (40 if quick else 2000)
    hidden = hidden or (32 if quick else 256)
    train_len = int(train_len or base["seq_len"])
    if reestimate_batches is None:
        reestimate_batches = 5 if quick else (100 if recipe == "quick" else base["reestimate"])
    config.setdefault("text_test", "windows")       # the lengths below are the test here
    test_chars = test_chars or (4000 if quick else None)
    if quick:
        eval_batch = min(eval_batch, 8)              # a short test text: small batches
    seeds = [int(s) for s in (seeds if seeds is not None else [seed])]
    if quick:
        lengths = [L for L in lengths if L <= 4 * train_len][:3] or [train_len]
    lengths = [int(L) for L in lengths]
    modes = {"bnlstm": ("population", "batch"), "lstm": ("lstm",)}
    bpc: Dict[str, List[List[float]]] = {k: [] for ms in modes.values() for k in ms}
    pos: Dict[str, List[np.ndarray]] = {k: [] for k in bpc}
    n_chars: List[int] = []
    curves = {}
    for sd in seeds:
        for m, ms in modes.items():
            cfg = _text_config(quick, recipe, **{
                "model": m, "steps": steps, "seed": sd, "hidden": hidden, "seq_len": train_len,
                "eval_every": max(steps // 10, 1), "val_limit": 50 if quick else 0,
                "reestimate": reestimate_batches, **config})
            exp, trainer, c = _train(cfg, text, experiment=_experiment(cfg, text))
            curves.setdefault(m, {"val_step": c["val_step"], "val_bpc": c["val_bpc"]})
            if test_chars:
                exp.ids["test"] = exp.ids["test"][:test_chars + 1]
            exp._eval.clear()
            for mode in ms:
                row = []
                for L in lengths:
                    r = exp.evaluate("test", length=L, batch_size=eval_batch,
                                     batch_stats=mode == "batch", full_batches=not quick,
                                     per_position=L == lengths[-1])
                    if not r["n"]:
                        raise ValueError(f"the test text has no full batch of {eval_batch} "
                                         f"windows of {L} characters; lower eval_batch or the "
                                         "lengths")
                    row.append(r["bpc"])
                    if L == lengths[-1]:
                        pos[mode].append(r["per_position_bpc"])
                    if mode == "population" and sd == seeds[0]:
                        n_chars.append(r["n"])
                bpc[mode].append(row)
    per_seed = {k: np.asarray(v, dtype=float) for k, v in bpc.items()}      # (S, L)
    out = {"lengths": np.asarray(lengths), "T_train": train_len, "seeds": seeds,
           "bpc": {k: v.mean(0) for k, v in per_seed.items()}, "bpc_seeds": per_seed,
           "bpc_std": {k: v.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(lengths))
                       for k, v in per_seed.items()},
           "per_position": {k: np.mean(v, 0) for k, v in pos.items()},
           "n_chars": np.asarray(n_chars), "val_curve": curves, "paper": PAPER_FIG3B,
           "unigram_bits": text.unigram_bits("test")}
    out.update(_meta("length", quick, t0, text, lengths=lengths, train_len=train_len,
                     steps=steps, hidden=hidden, seeds=seeds, test_chars=test_chars,
                     reestimate_batches=reestimate_batches, eval_batch=eval_batch,
                     source=source, recipe=recipe, **config))
    return out


def text_transient(steps: Optional[int] = None, hidden: Optional[int] = None, seed: int = 0,
                   seq_len: Optional[int] = None, reestimate_batches: Optional[int] = None,
                   units: int = 10, quick: bool = False, data=None, data_dir=None,
                   text_file=None, source: str = "auto", recipe: str = "quick",
                   **config) -> Dict[str, Any]:
    """Figure 5 on characters: the per-step population statistics of a BN-LSTM trained on
    text, where the input is stationary (one character a step, the same distribution at
    every t), as the paper measured it on Penn Treebank.

    Claim (Sec. 5, Fig. 5): the statistics go through a transient over the first few steps
    and are stationary after it, so each step needs its own (the first steps most). On row
    MNIST (``stats``) the input itself changes with t (blank top rows), which mixes the
    input's change into the transient; here it does not.

    Trains a BN-LSTM with the ``recipe``'s settings, re-estimates its per-step statistics
    over ``reestimate_batches`` training batches, and reports :func:`per_step_statistics`
    (the same numbers as ``stats``) and ``ratio``: the first 3 steps' transient over the
    middle third's, per statistic. Defaults: 128 units, 600 updates (quick: 32, 30).
    """
    from .common import per_step_statistics, transient_ratio
    t0 = time.perf_counter()
    text = _text(data, data_dir, text_file, source)
    base = _recipe(recipe)
    steps = steps or (30 if quick else 600)
    hidden = hidden or (32 if quick else 128)
    seq_len = seq_len or base["seq_len"]
    reestimate_batches = reestimate_batches or (5 if quick else 100)
    cfg = _text_config(quick, recipe, **{
        "model": "bnlstm", "steps": steps, "seed": seed, "hidden": hidden, "seq_len": seq_len,
        "eval_every": max(steps // 5, 1), "val_limit": 50 if quick else 200,
        "reestimate": reestimate_batches, "text_test": "windows", **config})
    exp, trainer, curves = _train(cfg, text, experiment=_experiment(cfg, text))
    exp.finalize()                               # the re-estimated statistics
    stats = per_step_statistics(exp.model.rnn, units)
    out = {**stats, "ratio": transient_ratio(stats["transient"]), "T_train": seq_len,
           "val_step": curves["val_step"], "val_bpc": curves["val_bpc"],
           "unigram_bits": text.unigram_bits("valid")}
    out.update(_meta("transient", quick, t0, text, steps=steps, hidden=hidden, seed=seed,
                     seq_len=seq_len, reestimate_batches=reestimate_batches, units=units,
                     source=source, recipe=recipe, **config))
    return out
