"""The paper's character-level language modelling: Table 2's comparison and Figure 3b.

The paper trains on Penn Treebank's 5 MB training file (1000 units, many epochs). The
text used here is whatever :func:`bnlstm.tasks.text.data.load_text` finds (the result's
``data_source`` says which), or, with ``source="ptb-heldout"``, Penn Treebank's own
validation file as training text (its first 95%; the last 5% validates) and its test
file as the test: the paper's domain and test set when the training file is absent.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..tasks.text import data as textdata
from .common import _config, _meta, _train

# The paper's Figure 3b, read from the figure (test bits per character at length 100 and 1000).
PAPER_FIG3B = {"lengths": (100, 1000), "population": (1.398, 1.333), "batch": (1.420, 1.362),
               "lstm": (1.449, 1.391)}
# Table 2: Penn Treebank test bits per character (1000 units).
PAPER_TABLE2 = {"lstm": 1.38, "bnlstm": 1.32}


def ptb_heldout(directory=None) -> textdata.Text:
    """Penn Treebank without its training file: the validation file's first 95% trains, its
    last 5% validates, the test file tests (both verified by sha256)."""
    import os
    d = Path(directory or os.environ.get("BNLSTM_PTB_DIR") or textdata.ptb_cache_dir())
    parts = {}
    for name in ("ptb.char.valid.txt", "ptb.char.test.txt"):
        path = d / name
        if not path.is_file():
            raise textdata.TextDataError(f"{path}: no such file (the Penn Treebank folder needs "
                                         "at least the validation and test files)")
        raw = path.read_bytes()
        textdata._check(path, raw, name)
        parts[name] = textdata.parse_ptb(textdata._decode(path, raw))
    valid = parts["ptb.char.valid.txt"]
    cut = int(len(valid) * 0.95)
    return textdata.Text(valid[:cut], valid[cut:], parts["ptb.char.test.txt"], kind="ptb-heldout",
                         where=str(d),
                         source=f"Penn Treebank characters from {d}: the validation file's first "
                                f"95% ({cut:,} characters) trains, its last 5% validates, the test "
                                "file tests (the 5 MB training file is not here)")


def _text(data, data_dir, text_file, source: str) -> textdata.Text:
    if data is not None:
        return data
    if source == "ptb-heldout":
        return ptb_heldout(data_dir)
    return textdata.load_text(data_dir, text_file=text_file)


def _text_config(quick: bool, **settings):
    """The text task's recipe, then the experiment's settings (CPU, no probes)."""
    from .. import tasks
    return _config(quick, **{**tasks.get("text").defaults, "task": "text", **settings})


def _experiment(cfg, data):
    from ..tasks.text.experiment import TextExperiment
    return TextExperiment(cfg, data=data)


def compare_text(models: Sequence[str] = ("lstm", "bnlstm"), seeds: Sequence[int] = (0,),
                 steps: Optional[int] = None, hidden: Optional[int] = None, seq_len: int = 100,
                 reestimate_batches: Optional[int] = None, val_limit: Optional[int] = None,
                 quick: bool = False, data=None, data_dir=None, text_file=None,
                 source: str = "auto", whole_sequence: bool = False,
                 **config) -> Dict[str, Any]:
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
    """
    t0 = time.perf_counter()
    text = _text(data, data_dir, text_file, source)
    steps = steps or (40 if quick else 2000)
    hidden = hidden or (32 if quick else 256)
    reestimate_batches = reestimate_batches or (5 if quick else 50)
    val_limit = val_limit if val_limit is not None else (100 if quick else 0)
    curves: Dict[str, List[np.ndarray]] = {m: [] for m in models}
    val, test = {m: [] for m in models}, {m: [] for m in models}
    whole: Dict[str, List[float]] = {m: [] for m in models}
    val_step = None
    for m in models:
        for seed in seeds:
            cfg = _text_config(quick, **{
                "model": m, "steps": steps, "seed": seed, "hidden": hidden, "seq_len": seq_len,
                "eval_every": max(steps // 10, 1), "val_limit": val_limit,
                "reestimate": reestimate_batches, "test_at_end": True, **config})
            exp, trainer, c = _train(cfg, text, experiment=_experiment(cfg, text))
            curves[m].append(c["val_bpc"])
            val_step = c["val_step"]
            val[m].append(trainer.final.get("val_bpc"))
            test[m].append(trainer.final.get("test_bpc"))
            if whole_sequence:
                whole[m].append(exp.evaluate_whole("test")["bpc"])
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
                     source=source, whole_sequence=whole_sequence, **config))
    return out


def length_generalization(lengths: Sequence[int] = (100, 200, 300, 400, 500, 600, 700, 800,
                                                    900, 1000),
                          train_len: int = 100, steps: Optional[int] = None,
                          hidden: Optional[int] = None, seed: int = 0,
                          test_chars: Optional[int] = None, reestimate_batches: Optional[int] = None,
                          eval_batch: int = 100, quick: bool = False, data=None, data_dir=None,
                          text_file=None, source: str = "auto", **config) -> Dict[str, Any]:
    """Figure 3b: train on sequences of ``train_len`` characters, test on longer ones.

    Claim (Sec. 5.2, Fig. 3b): a BN-LSTM trained on length T_max = 100 generalizes to test
    sequences up to length 1000 when the steps beyond T_max reuse the population statistics
    of step T_max (the T_max rule), better than when each test batch is normalized with its
    own statistics, and better than an LSTM. The paper's curve: population 1.398 -> 1.333,
    batch 1.420 -> 1.362, LSTM 1.449 -> 1.391 bits per character from length 100 to 1000.

    A BN-LSTM and an LSTM train with the text task's recipe; the BN-LSTM's statistics are
    re-estimated over training batches (as the authors did). Then the first ``test_chars``
    characters of the test text are cut into windows of each length (batches of
    ``eval_batch``, the authors' 100) and scored: ``population`` (eval mode, T_max rule),
    ``batch`` (training-mode batch statistics, no running average touched) and ``lstm``.

    Returns ``lengths`` (L,), ``bpc[mode]`` (L,), ``n_chars`` (L,) scored per length,
    ``T_train``, ``val_curve``, ``paper`` (the figure's end points), ``unigram_bits``.
    """
    t0 = time.perf_counter()
    text = _text(data, data_dir, text_file, source)
    steps = steps or (40 if quick else 2000)
    hidden = hidden or (32 if quick else 256)
    reestimate_batches = reestimate_batches or (5 if quick else 100)
    test_chars = test_chars or (4000 if quick else 200_000)
    if quick:
        lengths = [L for L in lengths if L <= 4 * train_len][:3] or [train_len]
    lengths = [int(L) for L in lengths]
    bpc: Dict[str, List[float]] = {"population": [], "batch": [], "lstm": []}
    n_chars: List[int] = []
    curves = {}
    for m in ("bnlstm", "lstm"):
        cfg = _text_config(quick, **{
            "model": m, "steps": steps, "seed": seed, "hidden": hidden, "seq_len": train_len,
            "eval_every": max(steps // 10, 1), "val_limit": 50 if quick else 0,
            "reestimate": reestimate_batches, **config})
        exp, trainer, c = _train(cfg, text, experiment=_experiment(cfg, text))
        curves[m] = {"val_step": c["val_step"], "val_bpc": c["val_bpc"]}
        exp.ids["test"] = exp.ids["test"][:test_chars + 1]
        exp._eval.clear()
        for L in lengths:
            if m == "lstm":
                bpc["lstm"].append(exp.evaluate("test", length=L, batch_size=eval_batch)["bpc"])
            else:
                pop = exp.evaluate("test", length=L, batch_size=eval_batch)
                bpc["population"].append(pop["bpc"])
                bpc["batch"].append(exp.evaluate("test", length=L, batch_size=eval_batch,
                                                 batch_stats=True)["bpc"])
                n_chars.append(pop["n"])
    out = {"lengths": np.asarray(lengths), "T_train": train_len,
           "bpc": {k: np.asarray(v) for k, v in bpc.items()}, "n_chars": np.asarray(n_chars),
           "val_curve": curves, "paper": PAPER_FIG3B, "unigram_bits": text.unigram_bits("test")}
    out.update(_meta("length", quick, t0, text, lengths=lengths, train_len=train_len,
                     steps=steps, hidden=hidden, seed=seed, test_chars=test_chars,
                     reestimate_batches=reestimate_batches, eval_batch=eval_batch,
                     source=source, **config))
    return out
