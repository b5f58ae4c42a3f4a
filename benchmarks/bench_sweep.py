"""The cost of running a sweep on Dask, and how it scales with worker processes.

Runs the same N tiny runs (row task, 32 units, batch 32, ``--steps`` updates, validation on
500 digits) three ways, each into a fresh folder, and prints wall times and ratios to the
baseline measured in the same invocation:

- baseline: one after another in this process (``bnlstm.runs.worker.run_one`` in a loop);
- ``python -m bnlstm sweep``'s engine on a LocalCluster of 1 worker process (the engine's
  overhead: cluster start, worker imports, scheduling, result files);
- the same on 2 worker processes (the speed-up from a second core).

Each run uses one torch thread. On a 2-core machine the 2-worker case also shows what the
machine's other load costs. ``--runs N`` and ``--steps S`` size it (defaults: 8 runs, 150
updates: about a minute in all).

    .venv/bin/python benchmarks/bench_sweep.py [--runs 8] [--steps 150]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bnlstm.runs.sweep import Sweep, run_sweep  # noqa: E402
from bnlstm.runs.worker import run_one  # noqa: E402

SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8, help="tiny runs in the sweep (even)")
    ap.add_argument("--steps", type=int, default=150, help="updates per run")
    ap.add_argument("--data-dir", default=os.environ.get("BNLSTM_MNIST_DIR", str(SHARED_MNIST)))
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = max(1, args.runs // 2)
    sweep = Sweep.from_args(grid=["model=lstm,bnlstm"], seeds=seeds,
                            base={"task": "row", "hidden": 32, "batch_size": 32,
                                  "steps": args.steps, "eval_every": 50, "val_limit": 500,
                                  "test_at_end": False})
    runs = sweep.runs()
    print(f"{len(runs)} runs of {args.steps} updates (row, 32 units, batch 32), "
          f"torch {torch.__version__}, {os.cpu_count()} cores, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for name, cfg in runs:
            run_one(cfg, Path(tmp) / "serial" / name, args.data_dir,
                    checkpoint_every=50, threads=1)
        times["serial"] = time.perf_counter() - t0
        for workers in (1, 2):
            t0 = time.perf_counter()
            rows = run_sweep(sweep, Path(tmp) / f"dask{workers}", n_workers=workers, threads=1,
                             data_dir=args.data_dir, progress=False, echo=lambda s: None)
            times[f"dask{workers}"] = time.perf_counter() - t0
            assert all(r["state"] == "finished" for r in rows), rows
    base = times["serial"]
    print(f"\n{'how':46s} {'wall s':>8s} {'vs serial':>10s} {'runs/min':>9s}")
    for key, label in (("serial", "one after another, in this process"),
                       ("dask1", "sweep engine, LocalCluster of 1 worker"),
                       ("dask2", "sweep engine, LocalCluster of 2 workers")):
        t = times[key]
        print(f"{label:46s} {t:8.1f} {t / base:9.2f}x {60 * len(runs) / t:9.1f}")
    print(f"\nengine overhead (1 worker vs in-process): {times['dask1'] - base:+.1f} s for "
          f"{len(runs)} runs ({(times['dask1'] - base) / len(runs):+.2f} s a run)")
    print(f"speed-up from the second worker: {times['dask1'] / times['dask2']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
