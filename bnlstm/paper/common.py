"""What the paper's experiments share: loading, configs, training with records, results as JSON."""
from __future__ import annotations

import math
import platform
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from ..training.config import TrainConfig


def _load(data=None, data_dir=None):
    if data is not None:
        return data
    from ..tasks.mnist import data as data_mod
    return data_mod.load_mnist(data_dir)


def machine() -> Dict[str, Any]:
    """Where a result was measured (goes into every result dict)."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}


def _meta(name: str, quick: bool, t0: float, data=None, **settings) -> Dict[str, Any]:
    out = {"experiment": name, "quick": bool(quick), "seconds": round(time.perf_counter() - t0, 2),
           "machine": machine(), "settings": settings}
    if data is not None:
        out["data_source"] = data.source
        out["data_is_full"] = bool(getattr(data, "is_full", getattr(data, "is_paper", False)))
    return out


def to_jsonable(obj):
    """numpy arrays/scalars and tuples -> lists and Python numbers (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _config(quick: bool, **kw) -> TrainConfig:
    """A TrainConfig for these experiments: CPU, no probes, no test set unless asked."""
    base = dict(device="cpu", probe_every=0, test_at_end=False)
    base.update(kw)
    return TrainConfig(**base)


def _train(cfg: TrainConfig, data, experiment=None, on_record: Optional[Callable] = None):
    """Train with :class:`bnlstm.Trainer` (synchronous ``run``); collect the records.

    Returns ``(experiment, trainer, curves)`` where curves holds ``train_step``,
    ``train_loss``, ``val_step``, ``val_loss`` and ``train_<key>``, ``val_<key>`` for each of
    the experiment's metrics (MNIST: ``acc``; text: ``bpc``, ``acc``) as numpy arrays.
    """
    from .. import tasks
    from ..training.assemble import assemble_run
    exp = experiment if experiment is not None else tasks.get(cfg.task).experiment(cfg, data=data)
    keys = ["loss"] + [m.key for m in getattr(exp, "metrics", ())]
    recs: Dict[str, List] = {f"{split}_{k}": [] for split in ("train", "val")
                             for k in ["step"] + keys}
    errors: List[str] = []

    def collect(r):
        if r["kind"] in ("train", "val"):
            recs[f"{r['kind']}_step"].append(r["step"])
            for k in keys:
                recs[f"{r['kind']}_{k}"].append(r[k])
        elif r["kind"] == "error":
            errors.append(r["traceback"])
        if on_record is not None:
            on_record(r)

    trainer, _ = assemble_run(cfg, experiment=exp, callbacks=[collect])
    state = trainer.run()
    if state == "failed":
        raise RuntimeError("training failed:\n" + "\n".join(errors))
    curves = {k: np.asarray(v, dtype=float) for k, v in recs.items()}
    curves["state"] = state
    return exp, trainer, curves


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what exists)."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0 or window <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def _first_reaching(steps: np.ndarray, acc: np.ndarray, threshold: float):
    hit = np.nonzero(np.asarray(acc) >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None


def per_step_statistics(rnn, units: int = 10) -> Dict[str, Any]:
    """Figure 5's numbers from a BN-LSTM ``rnn`` (its first layer's population statistics):
    ``pop_wh_mean``/``pop_wh_var`` (T, units) of W_h h_{t-1} (units spread over the four
    gates), ``pop_c_mean``/``pop_c_var`` (T, units) of c_t, the units (``units_wh``,
    ``units_c``), ``t`` and ``transient[key]`` (T,): the mean |stat_t - stat_stationary| over
    units / (std over units of the stationary stat), stationary = the mean of the last third
    of the steps."""
    H = rnn.hidden_size
    u_wh = np.linspace(0, 4 * H - 1, min(units, 4 * H)).round().astype(int)
    u_c = np.linspace(0, H - 1, min(units, H)).round().astype(int)
    T = rnn.bn_hh_l0.running_mean.shape[0]
    out: Dict[str, Any] = {
        "t": np.arange(T), "units_wh": u_wh, "units_c": u_c,
        "pop_wh_mean": rnn.bn_hh_l0.running_mean[:, u_wh].detach().cpu().numpy().copy(),
        "pop_wh_var": rnn.bn_hh_l0.running_var[:, u_wh].detach().cpu().numpy().copy(),
        "pop_c_mean": rnn.bn_c_l0.running_mean[:, u_c].detach().cpu().numpy().copy(),
        "pop_c_var": rnn.bn_c_l0.running_var[:, u_c].detach().cpu().numpy().copy()}
    transient = {}
    for key in ("pop_wh_mean", "pop_wh_var", "pop_c_mean", "pop_c_var"):
        s = out[key]
        stationary = s[-max(T // 3, 1):].mean(0)
        transient[key] = np.abs(s - stationary).mean(1) / (np.std(stationary) + 1e-8)
    out["transient"] = transient
    return out


def transient_ratio(transient: Dict[str, np.ndarray], first: int = 3) -> Dict[str, float]:
    """Each statistic's mean transient over the first ``first`` steps divided by that over
    the middle third: how much further from stationary the first steps are."""
    out = {}
    for k, v in transient.items():
        T = len(v)
        mid = v[T // 3: 2 * T // 3] if T >= 3 else v
        out[k] = float(np.mean(v[:first]) / (np.mean(mid) + 1e-12))
    return out


def difference(a, b, margin: float) -> Dict[str, Any]:
    """``a - b`` for paired measurements (one per seed, or one each) and its uncertainty:
    with two or more seeds, twice the standard error of the per-seed differences (about a
    95% interval); with one, the stated ``margin`` (the spread seen over seeds before)."""
    d = np.atleast_1d(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    n = len(d)
    if n > 1:
        err = 2.0 * float(d.std(ddof=1)) / math.sqrt(n)
        how = f"2 standard errors over {n} seeds"
    else:
        err = float(margin)
        how = "a stated margin, one seed"
    return {"diff": float(d.mean()), "err": max(err, 1e-12), "n": n, "how": how}


def verdict(claim: str, a, b, margin: float, lower_is_better: bool = True,
            baseline: Optional[float] = None, unit: str = "") -> str:
    """One line: does ``a`` beat ``b`` (``claim`` says what that means) beyond the
    uncertainty of :func:`difference`? "yes", "NO" (``b`` is better beyond it), or
    "inconclusive at this scale" (inside it). ``baseline``: the score of knowing nothing
    (the characters alone, chance accuracy); when ``a``, the side the claim calls better,
    does not beat it, it has not learned enough to be called a success, and the line says
    so instead of a verdict."""
    d = difference(a, b, margin)
    better = -d["diff"] if lower_is_better else d["diff"]
    fmt = f"{d['diff']:+.3f}{unit} ± {d['err']:.3f}, {d['how']}"
    if baseline is not None:
        worst = float(np.max(a)) if lower_is_better else float(np.min(a))
        if (worst >= baseline) if lower_is_better else (worst <= baseline):
            return (f"{claim}: not judged: it scores {worst:.3f}{unit}, no better than knowing "
                    f"nothing ({baseline:.3f}{unit}); train longer ({fmt})")
    if better > d["err"]:
        return f"{claim}: yes ({fmt})"
    if better < -d["err"]:
        return f"{claim}: NO ({fmt})"
    return f"{claim}: inconclusive at this scale ({fmt}: the difference is inside it)"
