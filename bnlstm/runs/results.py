"""A sweep's results as tables: a row per run, groups over seeds (mean, standard
deviation, n), the groups' validation curves, and the files they go to (results.csv,
groups.csv, curves.html). ``sweep`` is anything with ``keys`` (the swept settings) and
``metric_keys()`` (:class:`~bnlstm.runs.sweep.Sweep`). No torch, no Dask; Bokeh only
for curves.html."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

DONE_STATES = ("finished", "diverged")       # not run again; anything else is
RESULT_FIELDS = ("name", "state", "reason", "seed", "best_val_acc", "best_step", "test_acc",
                 "updates", "wall_time_s", "worker")                  # an MNIST sweep's
METRICS = ("best_val_acc", "test_acc")       # what an MNIST sweep's grouped table summarizes


def result_fields(keys: Sequence[str] = ("acc",)) -> Tuple[str, ...]:
    """results.csv's columns for tasks whose metrics have these keys."""
    return ("name", "state", "reason", "seed", *(f"best_val_{k}" for k in keys), "best_step",
            *(f"test_{k}" for k in keys), *(f"train_{k}" for k in keys), "updates",
            "wall_time_s", "worker")


def summary_metrics(keys: Sequence[str] = ("acc",)) -> Tuple[str, ...]:
    """The columns the grouped table summarizes (mean, std and n over seeds)."""
    return (*(f"best_val_{k}" for k in keys), *(f"test_{k}" for k in keys))


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _acc(v) -> str:
    return "None" if v is None else f"{v:.4f}"


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def group_rows(rows: List[Dict[str, Any]], keys: Sequence[str],
               metrics: Sequence[str] = METRICS) -> List[Dict[str, Any]]:
    """Rows grouped by the swept settings (over seeds): mean, std (n - 1) and n per metric
    (``summary_metrics(sweep.metric_keys())``), over the runs that finished or diverged."""
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for point, rs in groups.items():
        g = dict(zip(keys, point))
        done = [r for r in rs if r["state"] in DONE_STATES]
        g["runs"] = len(rs)
        g["diverged"] = sum(r["state"] == "diverged" for r in rs)
        for m in metrics:
            vals = [v for v in (_num(r.get(m)) for r in done) if v is not None]
            n = len(vals)
            mean = sum(vals) / n if n else None
            std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else
                   (0.0 if n == 1 else None))
            g[f"{m}_mean"], g[f"{m}_std"], g[f"{m}_n"] = mean, std, n
        out.append(g)
    return out


def format_groups(groups: List[Dict[str, Any]], keys: Sequence[str],
                  metrics: Sequence[str] = METRICS) -> str:
    """The grouped table as text (what the command prints at the end)."""
    head = list(keys) + [f"{m} (mean ± std, n)" for m in metrics]
    lines = []
    for g in groups:
        cells = [str(g[k]) for k in keys]
        for m in metrics:
            mean, std, n = g[f"{m}_mean"], g[f"{m}_std"], g[f"{m}_n"]
            cells.append("-" if mean is None else f"{mean:.4f} ± {std:.4f} (n={n})")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*c) for c in lines])


def write_results(out: Path, sweep, rows: List[Dict[str, Any]]) -> None:
    """results.csv, groups.csv and curves.html (written whole, then renamed into place)."""
    keys = sweep.metric_keys()
    fields = ["name", "state"] + sweep.keys + [f for f in result_fields(keys)
                                               if f not in ("name", "state")]
    _write_csv(out / "results.csv", fields, rows)
    metrics = summary_metrics(keys)
    groups = group_rows(rows, sweep.keys, metrics)
    gfields = list(sweep.keys) + ["runs", "diverged"] + [f"{m}_{s}" for m in metrics
                                                         for s in ("mean", "std", "n")]
    _write_csv(out / "groups.csv", gfields, groups)
    try:
        write_curves_html(out, sweep, rows)
    except Exception as exc:                  # a plot must never cost the results
        print(f"curves.html not written: {type(exc).__name__}: {exc}")


def _write_csv(path: Path, fields: Sequence[str], rows: List[Dict[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    os.replace(tmp, path)


def read_val_curve(run_dir: Path, key: str = "acc") -> Tuple[List[int], List[float]]:
    """The validation curve of one metric of one run record (steps, values)."""
    steps, accs = [], []
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            for r in csv.DictReader(f):
                if r.get("kind") == "val" and _num(r.get(key)) is not None:
                    steps.append(int(float(r["step"])))
                    accs.append(float(r[key]))
    except OSError:
        pass
    return steps, accs


def group_curves(out: Path, sweep, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per group: ``label``, ``step`` and the ``mean`` / ``std`` / ``n`` of the validation
    accuracy at each step that all of its runs reached so far."""
    import numpy as np
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in sweep.keys), []).append(r)
    out_curves = []
    for point, rs in groups.items():
        curves = [read_val_curve(out / "runs" / r["name"], sweep.metric_keys()[0]) for r in rs]
        curves = [c for c in curves if c[0]]
        if not curves:
            continue
        common = sorted(set.intersection(*(set(c[0]) for c in curves)))
        if not common:
            continue
        mat = np.array([[dict(zip(*c))[s] for s in common] for c in curves])
        label = ", ".join(f"{k}={v}" for k, v in zip(sweep.keys, point)) or "all runs"
        out_curves.append({"label": label, "step": np.array(common), "mean": mat.mean(0),
                           "std": mat.std(0, ddof=1) if len(mat) > 1 else np.zeros(len(common)),
                           "n": len(mat)})
    return out_curves


def write_curves_html(out: Path, sweep, rows: List[Dict[str, Any]]) -> Optional[Path]:
    """curves.html: each group's validation curve, mean with a band of one std (self-contained:
    Bokeh's JavaScript is inlined, so it opens offline)."""
    curves = group_curves(out, sweep, rows)
    if not curves:
        return None
    from bokeh.embed import file_html
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    key = sweep.metric_keys()[0]
    what = {"acc": "accuracy", "bpc": "bits per character"}.get(key, key)
    p = figure(title=f"Validation {what}: mean over seeds, band: one std ({out.name})",
               x_axis_label="update", y_axis_label=f"validation {what}", height=450,
               sizing_mode="stretch_width")
    for i, c in enumerate(curves):
        color = Category10_10[i % 10]
        p.varea(c["step"], c["mean"] - c["std"], c["mean"] + c["std"], color=color, alpha=0.2)
        p.line(c["step"], c["mean"], color=color, line_width=3,
               legend_label=f"{c['label']} (n={c['n']})")
    p.legend.location = "bottom_right"
    path = out / "curves.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(file_html(p, INLINE, title="bnlstm sweep"))
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------ reading a sweep
