"""Sweeps: a grid of :class:`~bnlstm.training.config.TrainConfig` settings times seeds, each run a Dask task.

::

    python -m bnlstm sweep --grid model=lstm,bnlstm --grid gamma_init=0.1,1.0 --seeds 3 --out DIR

or from Python::

    from bnlstm.runs.sweep import Sweep, run_sweep
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"], seeds=3, base={"task": "row", "steps": 300})
    rows = run_sweep(sweep, "DIR")                 # an embedded LocalCluster
    rows = run_sweep(sweep, "DIR", scheduler="tcp://host:8786")   # an existing cluster

The engine is Dask (``dask.distributed``), the same cluster code as the dashboard's
(:func:`bnlstm.runs.cluster.open_cluster`): ``scheduler`` (default ``$BNLSTM_DASK_SCHEDULER``)
puts the runs on an existing cluster, the dashboard's too. Without one it starts a
``LocalCluster`` of worker processes sized to the machine (one torch thread per run
unless asked), listening on loopback only. Every run is one task; a task trains one
:class:`~bnlstm.training.trainer.Trainer` and writes its run record (:mod:`bnlstm.training.records`)
under ``DIR/runs/<name>/``, plus ``resume.pt`` every ``checkpoint_every`` updates
(weights, optimizer, data position, random generators, best so far), so that a run
whose worker died, or whose sweep was interrupted, goes on from there and ends as
if nothing had happened (seeded, CPU). A worker that dies (killed, out of memory)
costs the attempt, not the sweep: Dask gives the task to another worker.

The sweep folder::

    DIR/sweep.json          the grid, the seeds, the common settings (written first)
    DIR/runs/<name>/        config.json, metrics.csv, summary.json, checkpoint.pt (+ resume.pt)
    DIR/results.csv         a row per run: state, swept settings, seed, best validation
                            and test score of each of the tasks' metrics (MNIST: best_val_acc,
                            test_acc; text: best_val_bpc, ...), updates, wall time, worker
    DIR/groups.csv          mean, standard deviation and n over seeds, per group
    DIR/curves.html         the groups' validation curves (mean and a band of one std)

Running the same sweep again skips the runs that finished or diverged (a diverged run
is a result, not retried) and redoes the others. Bad input (an unknown setting, a
value out of bounds, an empty grid, another sweep in DIR, an unreachable scheduler)
raises :class:`SweepError` before anything is written.

This module never imports Panel; Dask and Bokeh are imported only when a sweep runs.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..training.config import TrainConfig, parse_setting
from .results import (DONE_STATES, _acc, _read_json, group_curves, group_rows, read_val_curve,
                      summary_metrics, write_results)
from .worker import _data, run_one

__all__ = ["Sweep", "SweepError", "run_sweep", "parse_grid", "PRESETS", "read_sweep",
           "list_sweeps"]     # the tables: results.py; one run's body: worker.run_one

SWEEP_FORMAT = "bnlstm-sweep"
# The paper's comparisons as sweeps (``--preset NAME``): a grid and the settings it runs
# with, the same as bnlstm.paper's defaults for that figure. Flags and --grid override them.
PRESETS: Dict[str, Dict[str, Any]] = {
    "fig2": {"doc": "Figure 2: LSTM vs BN on the input only vs BN-LSTM (pixel7, 600 updates)",
             "grid": {"model": ["lstm", "bnlstm-input", "bnlstm"]},
             "base": {"task": "pixel7", "steps": 600, "eval_every": 50, "val_limit": 2000}},
    "fig6": {"doc": "Figure 6: BN-LSTM for initial gamma 0.1 ... 1.0 (pixel7, 600 updates)",
             "grid": {"gamma_init": [0.1, 0.3, 0.5, 0.7, 1.0]},
             "base": {"model": "bnlstm", "task": "pixel7", "steps": 600, "eval_every": 50,
                      "val_limit": 2000}},
    "stats": {"doc": "per-step vs shared population statistics (row, 1000 updates); training is "
                     "the same, so the test accuracy shows the statistics' effect",
              "grid": {"stats": ["per_step", "shared"]},
              "base": {"model": "bnlstm", "task": "row", "steps": 1000, "eval_every": 100,
                       "reestimate": 100}},
}
# What a sweep changes in TrainConfig's defaults unless told otherwise: no probes (a sweep
# records no probe) and the test at the end (results.csv has the test accuracy).
SWEEP_DEFAULTS = {"probe_every": 0, "test_at_end": True, "device": "cpu"}


class SweepError(ValueError):
    """Bad sweep input: the message says what and how to fix it (the CLI exits with 2)."""


# ------------------------------------------------------------------------------ the grid
def _setting_names() -> List[str]:
    return [k for k in TrainConfig.param if k != "name"]


def _check_name(key: str) -> str:
    key = key.strip().replace("-", "_")
    if key not in _setting_names():
        raise SweepError(f"unknown setting {key!r}; valid: {', '.join(_setting_names())}")
    return key


def _coerce(key: str, raw: Any) -> Any:
    """A value from the command line (or JSON) -> the setting's type, checked against its bounds."""
    value = raw
    if isinstance(raw, str):
        try:
            value = parse_setting(key, raw)
        except ValueError as exc:
            raise SweepError(f"{key}={raw!r}: {exc}") from None
    try:
        TrainConfig(**{key: value})
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SweepError(f"{key}={raw!r} is not valid: {first}") from None
    return value


def parse_grid(items: Iterable[str]) -> Dict[str, List[Any]]:
    """``["model=lstm,bnlstm", "gamma_init=0.1,1.0"]`` -> ``{"model": [...], "gamma_init": [...]}``."""
    grid: Dict[str, List[Any]] = {}
    for item in items:
        key, sep, values = str(item).partition("=")
        if not sep:
            raise SweepError(f"--grid expects KEY=V1,V2,...; got {item!r}")
        key = _check_name(key)
        if key == "seed":
            raise SweepError("seeds are not a grid setting: use --seeds N (seeds 0..N-1)")
        if key in grid:
            raise SweepError(f"--grid {key} is given twice")
        vals = [v for v in (s.strip() for s in values.split(",")) if v]
        if not vals:
            raise SweepError(f"--grid {key}= has no values: give at least one, e.g. {key}=A,B")
        coerced = [_coerce(key, v) for v in vals]
        if len(set(map(repr, coerced))) != len(coerced):
            raise SweepError(f"--grid {key} repeats a value: {values}")
        grid[key] = coerced
    return grid


def _slug(v: Any) -> str:
    s = f"{v:g}" if isinstance(v, float) else str(v)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", s)


@dataclass
class Sweep:
    """A grid over settings, a list of seeds, and the settings common to every run."""

    grid: Dict[str, List[Any]]
    seeds: List[int]
    base: Dict[str, Any] = field(default_factory=dict)
    preset: Optional[str] = None

    def __post_init__(self):
        if not self.grid and len(self.seeds) < 2:
            raise SweepError("an empty grid: give --grid KEY=V1,V2,... (or --seeds N with N > 1)")
        if not self.seeds:
            raise SweepError("--seeds must be at least 1")
        both = sorted(set(self.grid) & set(self.base))
        if both:
            raise SweepError(f"{', '.join(both)} is both swept (--grid) and fixed (a flag)")
        if "seed" in self.base:
            raise SweepError("seeds come from --seeds, not --seed")
        self.runs()                  # every combination must be a valid config (or SweepError)
        self._metric_keys = self._find_metric_keys()

    @classmethod
    def from_args(cls, grid: Sequence[str] = (), seeds: int = 1, base: Optional[Dict[str, Any]] = None,
                  preset: Optional[str] = None) -> "Sweep":
        """From command-line shapes: ``grid`` as ``KEY=V1,V2`` strings, ``seeds`` a count."""
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise SweepError(f"--seeds must be a whole number >= 1; got {seeds!r}")
        names = {k: _check_name(k) for k in (base or {})}
        base = {names[k]: _coerce(names[k], v) for k, v in (base or {}).items()}
        g: Dict[str, List[Any]] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise SweepError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
            g.update({k: list(v) for k, v in PRESETS[preset]["grid"].items()})
            base = {**{k: v for k, v in PRESETS[preset]["base"].items() if k not in g}, **base}
        extra = parse_grid(grid)
        g.update(extra)
        for k in list(g):                    # a flag fixes what a preset would sweep
            if k in base and k not in extra:
                del g[k]
        return cls(grid=g, seeds=list(range(seeds)), base=base, preset=preset)

    @property
    def keys(self) -> List[str]:
        return list(self.grid)

    def settings(self) -> Dict[str, Any]:
        """The settings every run shares: TrainConfig's defaults, the sweep's, the flags."""
        return {**TrainConfig().to_dict(), **SWEEP_DEFAULTS, **self.base}

    def runs(self) -> List[Tuple[str, Dict[str, Any]]]:
        """``[(name, config dict)]`` for every grid point and seed, in a fixed order."""
        import itertools
        out = []
        common = self.settings()
        from .. import recipes, tasks
        for combo in itertools.product(*self.grid.values()):
            point = dict(zip(self.grid, combo))
            task = point.get("task", common["task"])
            try:                          # the task's and the recipe's settings, where
                t = tasks.get(task)           # the sweep does not say
                named = recipes.get(point.get("recipe", common.get("recipe", "quick")))
                recipe = {k: v for k, v in {**t.defaults, **named.settings(t)}.items()
                          if k not in self.base and k not in point}
            except (tasks.TaskError, recipes.RecipeError) as exc:
                raise SweepError(str(exc)) from None
            for seed in self.seeds:
                d = {**common, **recipe, **point, "seed": seed}
                try:
                    TrainConfig.from_dict(d)
                except ValueError as exc:
                    raise SweepError(f"the run {point} seed {seed} is not a valid config: {exc}") from None
                name = "-".join(f"{k}={_slug(v)}" for k, v in point.items())
                out.append(((name + "-" if name else "") + f"seed={seed}", d))
        return out

    def metric_keys(self) -> List[str]:
        """The metrics of the sweep's tasks, each task's first metric first (MNIST: acc)."""
        return list(self._metric_keys)

    def _find_metric_keys(self) -> List[str]:
        from .. import tasks
        names = self.grid["task"] if "task" in self.grid else [self.settings()["task"]]
        firsts, rest = [], []
        for name in dict.fromkeys(names):
            try:
                ms = [m.key for m in tasks.get(name).metrics]
            except tasks.TaskError:
                continue
            firsts.append(ms[0])
            rest.extend(ms[1:])
        return list(dict.fromkeys(firsts + rest)) or ["acc"]

    def to_dict(self) -> Dict[str, Any]:
        return {"format": SWEEP_FORMAT, "version": 1, "grid": self.grid, "seeds": self.seeds,
                "base": self.base, "preset": self.preset, "settings": self.settings(),
                "runs": [n for n, _ in self.runs()]}

    def same_as(self, d: Dict[str, Any]) -> bool:
        mine = json.loads(json.dumps(self.to_dict()))
        return all(mine.get(k) == d.get(k) for k in ("grid", "seeds", "settings"))


# ------------------------------------------------------------------------------ one run
# ------------------------------------------------------------------------------ the engine
def _client(scheduler: Optional[str], n_workers: int, threads: int, memory_limit):
    """A Dask client: an existing cluster's, or an embedded LocalCluster's (loopback only,
    with Dask's dashboard on 127.0.0.1:8787), both from the engine's one
    :func:`~bnlstm.runs.cluster.open_cluster`. A sweep keeps Dask's default retries: a run
    whose worker died goes on from its last snapshot on another."""
    from .cluster import open_cluster
    from .handle import EngineError
    try:
        return open_cluster(scheduler, n_workers=n_workers, threads=threads,
                            memory_limit=memory_limit, dashboard_address="127.0.0.1:8787",
                            set_as_default=True)
    except EngineError as exc:
        raise SweepError(str(exc)) from None
    except ImportError as exc:            # pragma: no cover - a dependency
        raise SweepError(f"dask.distributed is not installed ({exc}); "
                         "pip install 'dask[distributed]'") from None


def _row(name: str, sweep: Sweep, cfg: Dict[str, Any], summary: Optional[Dict[str, Any]],
         fallback_state: str = "missing", reason: str = "") -> Dict[str, Any]:
    s = summary or {}
    row = {"name": name, "state": s.get("state", fallback_state),
           "reason": s.get("reason", reason), "seed": cfg["seed"],
           **{f"{p}_{k}": s.get(f"{p}_{k}") for k in sweep.metric_keys()
              for p in ("best_val", "test", "train")},
           "best_step": s.get("best_step"), "updates": s.get("steps"),
           "wall_time_s": s.get("wall_time_s"), "worker": s.get("worker", "")}
    row.update({k: cfg[k] for k in sweep.keys})
    return row


def run_sweep(sweep: Sweep, out_dir: Union[str, Path], scheduler: Optional[str] = None,
              n_workers: Optional[int] = None, threads: int = 1, data_dir=None,
              checkpoint_every: Optional[int] = None, gpus_per_run: int = 0,
              memory_limit: Union[str, float] = "auto", progress: bool = True,
              data_options: Optional[Dict[str, Any]] = None,
              echo: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Run every missing run of ``sweep`` on Dask; write the sweep folder; return its rows.

    ``scheduler``: an address (``tcp://host:8786``) of an existing cluster (default
    ``$BNLSTM_DASK_SCHEDULER``, the dashboard's cluster, when set); else an
    embedded ``LocalCluster`` of ``n_workers`` processes (default: the machine's cores
    divided by ``threads``). ``threads``: torch threads per run. ``checkpoint_every``:
    updates between resume snapshots (default: ``eval_every``). ``gpus_per_run``: ask
    Dask for that many ``GPU`` worker resources per run (workers started with
    ``--resources GPU=N``). Raises :class:`SweepError` on bad input, before writing.
    """
    out = Path(out_dir)
    if scheduler is None:
        scheduler = os.environ.get("BNLSTM_DASK_SCHEDULER", "").strip() or None
    plan = sweep.runs()
    meta_path = out / "sweep.json"
    if meta_path.exists():
        old = _read_json(meta_path)
        if old is None or old.get("format") != SWEEP_FORMAT:
            raise SweepError(f"{out}: sweep.json is not a bnlstm sweep; choose another --out")
        if not sweep.same_as(old):
            raise SweepError(f"{out} holds a different sweep (its grid, seeds or settings differ); "
                             "run that one again as it was, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise SweepError(f"{out} exists and is not a sweep folder; choose another --out")
    todo, rows = [], {}
    for name, cfg in plan:
        s = _read_json(out / "runs" / name / "summary.json")
        if s is not None and s.get("state") in DONE_STATES:
            rows[name] = _row(name, sweep, cfg, s)
        else:
            todo.append((name, cfg))
    threads = max(1, int(threads))
    workers = n_workers or max(1, (os.cpu_count() or 1) // threads)
    workers = max(1, min(workers, len(todo))) if todo else 1
    client = cluster = None
    if todo:
        try:                                  # bad data fails here, not on every worker
            for task in sorted({cfg["task"] for _, cfg in todo}):
                _data(task, data_dir, data_options)
        except (OSError, ValueError) as exc:  # DataError is a ValueError
            raise SweepError(f"data: {exc}") from None
        client, cluster = _client(scheduler, workers, threads, memory_limit)
    out.mkdir(parents=True, exist_ok=True)
    if not meta_path.exists():
        meta_path.write_text(json.dumps(sweep.to_dict(), indent=2) + "\n")
    echo(f"sweep: {len(plan)} runs ({len(plan) - len(todo)} already done, {len(todo)} to run) "
         f"in {out}")
    t0 = time.perf_counter()
    try:
        if todo:
            _run_on_dask(client, sweep, todo, out, rows, data_dir, checkpoint_every, threads,
                         gpus_per_run, progress, echo, cluster is not None, workers,
                         data_options)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows.get(name) or _row(name, sweep, cfg, None) for name, cfg in plan]
    write_results(out, sweep, ordered)
    echo(f"sweep: {sum(r['state'] in DONE_STATES for r in ordered)} of {len(ordered)} runs done "
         f"in {time.perf_counter() - t0:.1f} s")
    return ordered


def _run_on_dask(client, sweep, todo, out, rows, data_dir, checkpoint_every, threads,
                 gpus_per_run, progress, echo, local, workers, data_options=None) -> None:
    from distributed import wait
    from tqdm.auto import tqdm

    from .dask import submit_run
    from .policy import FIFOPolicy
    policy = FIFOPolicy()
    where = (f"a LocalCluster of {workers} worker process(es), {threads} torch thread(s) each"
             if local else f"the cluster at {client.scheduler.address}")
    echo(f"engine: Dask, {where}; dashboard: {client.dashboard_link}")
    resources = {"GPU": gpus_per_run} if gpus_per_run else None
    futures = {}
    for name, cfg in todo:
        run_dir = out / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        every = checkpoint_every or int(cfg["eval_every"])
        if gpus_per_run and cfg.get("device") == "cpu":
            cfg = {**cfg, "device": "cuda"}
        # the engine's one submission, at the policy's batch priority: on a cluster the
        # dashboard shares, a class's live runs go first and the sweep takes what is left
        fut = submit_run(client, run_one, (cfg, str(run_dir.resolve()), data_dir, every,
                                           threads, data_options),
                         key=f"bnlstm-run-{name}-{time.time_ns()}",
                         priority=policy.priority(time.time(), batch=True), retries=None,
                         resources=resources)
        futures[fut] = (name, cfg)
    tty = sys.stderr.isatty()                  # a log file gets a line a minute, not a second
    bar = tqdm(total=len(futures), unit="run", disable=not progress, dynamic_ncols=True,
               mininterval=1.0 if tty else 60.0)
    shown_at = time.monotonic()
    failed = 0
    pending = set(futures)
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                name, cfg = futures[fut]
                try:
                    summary = fut.result()
                    row = _row(name, sweep, cfg, summary)
                except Exception as exc:            # the task failed on every attempt
                    row = _row(name, sweep, cfg, None, "failed", f"{type(exc).__name__}: {exc}")
                rows[name] = row
                failed += row["state"] not in DONE_STATES
                bar.update(1)
                k = sweep.metric_keys()[0]
                bar.write(f"{row['state']:8s} {name}: best val {k} {_acc(row[f'best_val_{k}'])}, "
                          f"test {k} {_acc(row[f'test_{k}'])}, {row['updates']} updates, "
                          f"{row['wall_time_s']} s on {row['worker']}"
                          + (f" ({row['reason']})" if row["state"] not in DONE_STATES else ""))
            try:       # tasks on workers, at most one per worker thread: the ones training
                running = min(sum(len(v) for v in client.processing().values()),
                              sum(client.nthreads().values()))
            except Exception:
                running = 0
            refresh = tty or time.monotonic() - shown_at >= 60.0
            shown_at = time.monotonic() if refresh else shown_at
            bar.set_postfix(done=bar.n - failed, running=running, failed=failed, refresh=refresh)
    except KeyboardInterrupt:
        bar.write("interrupted: finished runs are kept; run the same command again to go on")
        for fut in pending:
            fut.cancel()
        raise
    finally:
        bar.close()


# ------------------------------------------------------------------------------ results
def list_sweeps(folder: Union[str, Path]) -> List[str]:
    """The names of the sweep folders directly inside ``folder`` (those with a sweep.json)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "sweep.json").is_file())


def read_sweep(out: Union[str, Path]) -> Dict[str, Any]:
    """A sweep folder as it is now, also while it runs: ``keys`` (the swept settings),
    ``rows`` (one per planned run; ``state`` is the run's, or ``running`` while it has
    metrics but no summary, or ``pending``), ``groups`` (:func:`group_rows`) and
    ``curves`` (:func:`group_curves`, over the steps every run of a group has reached)."""
    out = Path(out)
    meta = _read_json(out / "sweep.json")
    if meta is None or meta.get("format") != SWEEP_FORMAT:
        raise SweepError(f"{out.name}: not a bnlstm sweep folder")
    sweep = Sweep(grid=meta["grid"], seeds=meta["seeds"], base=meta.get("base", {}),
                  preset=meta.get("preset"))
    rows = []
    for name, cfg in sweep.runs():
        run = out / "runs" / name
        summary = _read_json(run / "summary.json")
        if summary is not None:
            rows.append(_row(name, sweep, cfg, summary))
        else:
            steps, _ = read_val_curve(run)
            state = "running" if (run / "metrics.csv").is_file() else "pending"
            row = _row(name, sweep, cfg, None, state)
            if steps:
                row["updates"] = steps[-1]              # validated so far
            rows.append(row)
    return {"name": out.name, "keys": sweep.keys, "seeds": sweep.seeds, "rows": rows,
            "metric": sweep.metric_keys()[0],
            "groups": group_rows(rows, sweep.keys, summary_metrics(sweep.metric_keys())),
            "curves": group_curves(out, sweep, rows)}
