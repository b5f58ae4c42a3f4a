"""The paper's Tables 1 and 2 as sweeps: ``python -m bnlstm paper table1`` / ``table2``.

Table 1: sequential MNIST (``pixel``, 784 steps) and permuted MNIST (``permuted``, the
authors' pixel order), LSTM vs BN-LSTM, 100 units. Table 2: Penn Treebank characters, LSTM
vs BN-LSTM, 1000 units. Every run starts from the ``authors`` recipe
(``bnlstm/recipes/authors.toml``: their code, flag for flag) and goes through the sweep
engine (:mod:`bnlstm.runs.sweep`): a LocalCluster here, a cluster with ``scheduler``, a GPU
per run with ``gpus_per_run``; run folders with resume snapshots, so the same command goes
on after an interruption. Each run keeps its best validation weights and is tested with
them at the end, as the authors' ``TrackTheBest`` (their early stopping).

Three sizes: ``full`` (the recipe as it is: 120,000 updates on MNIST, 39,200 on text; days
on a CPU, hours on a GPU), ``cpu`` (the default: the same models and sequences, few updates,
so that it finishes here; the output says so) and ``quick`` (seconds: CI). Before the runs
start, each (task, model) trains a few updates here and the measured time per update gives
each run's expected time at the size asked.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

__all__ = ["TABLES", "table_sweep", "measure_step", "run_table", "format_table"]

# The paper's numbers: Table 1 test accuracy, Table 2 test bits per character.
PAPER = {
    "table1": {("pixel", "lstm"): 0.989, ("pixel", "bnlstm"): 0.990,
               ("permuted", "lstm"): 0.902, ("permuted", "bnlstm"): 0.954},
    "table2": {("text", "lstm"): 1.38, ("text", "bnlstm"): 1.32},
}

TABLES: Dict[str, Dict[str, Any]] = {
    "table1": {
        "doc": "Table 1: sequential and permuted MNIST (784 steps), LSTM vs BN-LSTM, test accuracy",
        "grid": {"task": ["pixel", "permuted"], "model": ["lstm", "bnlstm"]},
        "metric": "acc",
        "sizes": {
            # the recipe as it is, and the tested weights scored on 10,000 training digits:
            # the paper's pMNIST generalization claim is the gap between train and test
            "full": {"train_score": 10000},
            # 784 steps, 100 units as the paper; 300 updates, validation on 2000 digits, the
            # test statistics over 20 training batches instead of the whole training set
            "cpu": {"steps": 300, "eval_every": 100, "val_limit": 2000, "reestimate": 20},
            "quick": {"steps": 2, "eval_every": 2, "val_limit": 20, "hidden": 8,
                      "reestimate": 0, "train_score": 20},
        },
    },
    "table2": {
        "doc": "Table 2: Penn Treebank characters, LSTM vs BN-LSTM, test bits per character",
        "grid": {"model": ["lstm", "bnlstm"]},
        "base": {"task": "text"},
        "metric": "bpc",
        "sizes": {
            "full": {},
            # 256 units (the paper: 1000), 300 updates; windows test, 20 batches' statistics
            "cpu": {"hidden": 256, "steps": 300, "eval_every": 100, "reestimate": 20,
                    "text_test": "windows"},
            "quick": {"hidden": 16, "steps": 2, "eval_every": 2, "val_limit": 20,
                      "reestimate": 0, "test_at_end": False, "batch_size": 8},
        },
    },
}


def table_sweep(name: str, size: str = "cpu", seeds: int = 1,
                overrides: Optional[Dict[str, Any]] = None):
    """The :class:`~bnlstm.runs.sweep.Sweep` of table ``name`` at ``size``: the authors'
    recipe, the size's settings, then ``overrides`` (e.g. ``device``)."""
    from ..runs.sweep import Sweep, SweepError
    if name not in TABLES:
        raise SweepError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    t = TABLES[name]
    if size not in t["sizes"]:
        raise SweepError(f"unknown size {size!r}; sizes: {', '.join(t['sizes'])}")
    base = {**t.get("base", {}), "recipe": "authors", **t["sizes"][size], **(overrides or {})}
    return Sweep(grid={k: list(v) for k, v in t["grid"].items()}, seeds=list(range(seeds)),
                 base=base, preset=None)


def measure_step(cfg: Dict[str, Any], data, n: int = 3, warmup: int = 2) -> float:
    """Seconds per training update of the run ``cfg`` here (its device): ``warmup`` updates
    (the fast path's loop tuner tries its modes there), then the mean of ``n``. ``data``:
    the task's loaded data set."""
    from .. import tasks
    from ..training.config import TrainConfig
    c = TrainConfig.from_dict({**cfg, "probe_every": 0})
    exp = tasks.get(c.task).experiment(c, data=data)
    exp.setup()
    for _ in range(warmup):
        exp.train_step()
    t0 = time.perf_counter()
    for _ in range(n):
        exp.train_step()
    if exp.device.type == "cuda":          # pragma: no cover - needs a GPU
        import torch
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / n
    exp.release()
    return sec


def _hours(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h" if s < 48 * 3600 else f"{s / 86400:.1f} days"


def estimates(sweep, data_for: Callable[[str], Any], echo=print, n: int = 3) -> List[Dict[str, Any]]:
    """Each (task, model)'s measured time per update and its runs' expected time (the
    updates times the step, plus about 5% for validation)."""
    seen: Dict[tuple, Dict[str, Any]] = {}
    for name, cfg in sweep.runs():
        key = (cfg["task"], cfg["model"])
        if key in seen:
            continue
        sec = measure_step(cfg, data_for(cfg["task"]), n=n)
        est = {"task": cfg["task"], "model": cfg["model"], "device": cfg["device"],
               "step_s": sec, "steps": cfg["steps"], "expected_s": sec * cfg["steps"] * 1.05}
        seen[key] = est
        echo(f"estimate: {cfg['task']:8s} {cfg['model']:7s} {cfg['hidden']} units: "
             f"{sec * 1000:.0f} ms per update on {_where(cfg['device'])} -> "
             f"{cfg['steps']:,} updates ~ {_hours(est['expected_s'])} per run")
    return list(seen.values())


def _where(device: str) -> str:
    if device in ("auto", "cuda"):
        try:
            import torch
            if torch.cuda.is_available():
                return "cuda (" + torch.cuda.get_device_name(0) + ")"
        except Exception:                  # pragma: no cover
            pass
        return "this CPU" if device == "auto" else "cuda"
    return "this CPU" if device == "cpu" else device


def format_table(name: str, rows: List[Dict[str, Any]], size: str) -> str:
    """The table as Markdown: each (task, model), mean ± std over seeds, n, the paper's."""
    t = TABLES[name]
    m = t["metric"]
    train = any(r.get(f"train_{m}") not in (None, "") for r in rows)   # the generalization gap
    lines = [f"{t['doc']} (size {size}{'' if size == 'full' else ': NOT the paper scale'})", "",
             f"| task | model | test {m} (mean ± std) | best val {m} |"
             + (f" train {m} (gap to test) |" if train else "") + " n | paper |",
             "|---|---|---|---|" + ("---|" if train else "") + "---|---|"]
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("task", t.get("base", {}).get("task")), r["model"]), []).append(r)
    for (task, model), rs in groups.items():
        def stat(key):
            v = [float(r[key]) for r in rs if r.get(key) not in (None, "")
                 and math.isfinite(float(r[key]))]
            if not v:
                return "-", 0
            mean = sum(v) / len(v)
            sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
            return f"{mean:.4f} ± {sd:.4f}", len(v)
        test, n = stat(f"test_{m}")
        val, nv = stat(f"best_val_{m}")
        gap = ""
        if train:
            tr, _ = stat(f"train_{m}")
            pairs = [(float(r[f"train_{m}"]), float(r[f"test_{m}"])) for r in rs
                     if r.get(f"train_{m}") not in (None, "") and r.get(f"test_{m}") not in (None, "")]
            d = sum(a - b for a, b in pairs) / len(pairs) if pairs else None
            gap = f" {tr} ({'-' if d is None else format(d, '+.4f')}) |"
        paper = PAPER[name].get((task, model))
        lines.append(f"| {task} | {model} | {test} | {val} |{gap} {max(n, nv)} | "
                     f"{'-' if paper is None else format(paper, '.3f' if m == 'acc' else '.2f')} |")
    return "\n".join(lines)


def run_table(name: str, size: str = "cpu", seeds: int = 1, out=None,
              scheduler: Optional[str] = None, gpus_per_run: int = 0,
              n_workers: Optional[int] = None, threads: int = 1, data_dir=None,
              data_options: Optional[Dict[str, Any]] = None, device: Optional[str] = None,
              estimate: bool = True, progress: bool = True, estimate_only: bool = False,
              echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run table ``name`` (``table1``, ``table2``) at ``size`` through the sweep engine;
    print the expected times first, then the table. Returns ``rows`` (one per run),
    ``estimates``, ``table`` (Markdown), ``out`` (the sweep folder, which the same call
    resumes). ``device``: every run's (default: cpu, or cuda with ``gpus_per_run``).
    ``estimate_only``: the measured times and nothing else (no runs; ``rows`` empty)."""
    from ..runs.sweep import run_sweep
    from ..runs.worker import _data
    overrides = {"device": device} if device else {}
    if gpus_per_run and not device:
        overrides["device"] = "cuda"
    sweep = table_sweep(name, size, seeds, overrides)
    out = Path(out) if out else Path("sweeps") / f"{name}-{size}"
    if size != "full":
        echo(f"{name}: size {size}: the paper's models and sequences, "
             f"{sweep.settings()['steps']:,} updates: NOT the paper's scale (--full runs the "
             "authors' recipe as it is)")
    ests: List[Dict[str, Any]] = []
    if estimate or estimate_only:
        cache: Dict[str, Any] = {}

        def data_for(task):
            if task not in cache:
                cache[task] = _data(task, data_dir, data_options)
            return cache[task]
        ests = estimates(sweep, data_for, echo=echo)
        total = sum(e["expected_s"] for e in ests) * len(sweep.seeds)
        echo(f"estimate: {len(sweep.runs())} runs, {_hours(total)} of one device in all "
             "(runs side by side share it)")
    if estimate_only:
        return {"rows": [], "estimates": ests, "table": "", "out": str(out), "size": size}
    rows = run_sweep(sweep, out, scheduler=scheduler, n_workers=n_workers, threads=threads,
                     data_dir=data_dir, gpus_per_run=gpus_per_run, progress=progress,
                     data_options=data_options, echo=echo)
    table = format_table(name, rows, size)
    (out / "table.md").write_text(table + "\n")
    echo(table)
    return {"rows": rows, "estimates": ests, "table": table, "out": str(out), "size": size}
