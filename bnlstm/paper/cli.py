"""``python -m bnlstm paper NAME``: run one of the paper's experiments, print and save it."""
from __future__ import annotations

import json
from typing import Any, Callable, Dict

import numpy as np
import torch

from .common import _load, to_jsonable
from .memory import distractor_memory
from .mnist import (GRADIENT_MODELS, compare_models, gamma_sweep, gradient_flow,
                    stats_ablation, tanh_derivative)
from .text import compare_text, length_generalization, text_transient

# =========================================================================== command line
EXPERIMENTS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "tanh": tanh_derivative, "gradients": gradient_flow, "gamma": gamma_sweep,
    "stats": stats_ablation, "models": compare_models, "length": length_generalization,
    "text": compare_text, "distractor": distractor_memory, "transient": text_transient,
}
TEXT_EXPERIMENTS = ("length", "text", "transient")    # their data is text, not MNIST


def _common_args(p) -> None:
    p.add_argument("--data-dir", default=None,
                   help="MNIST experiments: the folder with the four MNIST .gz files (default: "
                        "$BNLSTM_MNIST_DIR, then the user cache, then the bundled sample); "
                        "length, text, table2: the Penn Treebank folder (default: "
                        "$BNLSTM_PTB_DIR, the cache, then Python's own documentation text)")
    p.add_argument("--text-file", default=None, metavar="FILE",
                   help="length, text, table2: train on this UTF-8 text file (split 90/5/5)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")


def add_cli(subparsers) -> None:
    """Add ``paper`` to the ``python -m bnlstm`` sub-commands."""
    p = subparsers.add_parser(
        "paper", help="run one of the paper's experiments and print / save its numbers",
        description="Run one of the paper's experiments (bnlstm.paper) and save the result as "
                    "JSON: tanh (Fig. 1b), gradients (Fig. 1a), gamma (Fig. 6), stats (Fig. 5 "
                    "and per-step vs shared statistics), models (Fig. 2), length (Fig. 3b, on "
                    "text), text (Table 2's comparison: LSTM vs BN-LSTM on characters), "
                    "distractor (memory across a noise suffix longer than in training, MNIST), "
                    "transient (Fig. 5 on characters); "
                    "or one of its tables through the sweep engine: table1 (sequential and "
                    "permuted MNIST), table2 (Penn Treebank characters). "
                    "`python -m bnlstm paper NAME --help` for each.")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="NAME")
    for name, fn in EXPERIMENTS.items():
        e = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0],
                           description=(fn.__doc__ or "").strip().splitlines()[0])
        e.add_argument("--quick", action="store_true", help="tiny sizes (seconds to a minute)")
        e.add_argument("--out", metavar="FILE.json", default=None, help="write the result here")
        e.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override an argument of the experiment function (JSON value), "
                            "e.g. --set steps=500 --set 'seeds=[0,1]'")
        _common_args(e)
    from .tables import TABLES
    for name, t in TABLES.items():
        sizes = t["sizes"]
        e = sub.add_parser(
            name, help=t["doc"],
            description=t["doc"] + ". Every run starts from the authors' recipe (python -m "
            "bnlstm recipes authors) and goes through the sweep engine: run folders with "
            "resume snapshots (the same command goes on after an interruption), the best "
            "validation weights tested at the end (the authors' TrackTheBest). Before the "
            "runs, each model trains a few updates here and the measured time per update "
            "gives each run's expected time.",
            epilog="sizes: " + "; ".join(f"{k}: {v or 'the authors recipe as it is'}"
                                         for k, v in sizes.items()))
        size = e.add_mutually_exclusive_group()
        size.add_argument("--full", action="store_true",
                          help="the paper's scale: the authors' recipe as it is (MNIST 120,000 "
                               "updates, text 39,200 updates of 1000 units): hours on a GPU, "
                               "days on a CPU")
        size.add_argument("--quick", action="store_true", help="a few updates of tiny models (CI)")
        e.add_argument("--seeds", type=int, default=1, metavar="N", help="runs per model (seeds 0..N-1)")
        e.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None,
                       help="every run's device (default: cpu; cuda with --gpus-per-run)")
        e.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing Dask cluster (tcp://host:8786; default "
                            "$BNLSTM_DASK_SCHEDULER, else a LocalCluster here)")
        e.add_argument("--gpus-per-run", type=int, default=0, metavar="N",
                       help="Dask GPU resources per run (workers started with --resources GPU=N)")
        e.add_argument("--workers", type=int, default=None, metavar="N",
                       help="LocalCluster worker processes (default: cores / threads)")
        e.add_argument("--out", metavar="DIR", default=None,
                       help=f"the sweep folder (default: sweeps/{name}-SIZE); the same DIR resumes")
        est = e.add_mutually_exclusive_group()
        est.add_argument("--no-estimate", action="store_true",
                         help="skip the measured time per update before the runs")
        est.add_argument("--estimate-only", action="store_true",
                         help="measure the time per update and print each run's expected "
                              "time, then stop (no runs: how long would --full take here?)")
        e.add_argument("--text-source", default="auto", choices=["auto", "ptb-heldout", "text8"],
                       help="table2: auto, or ptb-heldout (Penn Treebank without its training "
                            "file: the validation file's first 95%% trains)")
        _common_args(e)


def _table_main(args) -> int:
    import sys

    from ..cli import _data_options
    from ..runs.sweep import SweepError
    from .tables import run_table
    size = "full" if args.full else "quick" if args.quick else "cpu"
    opts = _data_options(args)
    try:
        run_table(args.experiment, size=size, seeds=args.seeds, out=args.out,
                  scheduler=args.scheduler, gpus_per_run=args.gpus_per_run,
                  n_workers=args.workers, threads=args.threads or 1, data_dir=args.data_dir,
                  data_options=opts or None, device=args.device,
                  estimate=not args.no_estimate, estimate_only=args.estimate_only)
    except (SweepError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on", file=sys.stderr)
        return 130
    return 0


def _summary(name: str, res: Dict[str, Any]) -> Dict[str, Any]:
    """The headline numbers of a result, for the terminal."""
    if name == "tanh":
        return {"E[tanh'] at sigma=1": res["at_sigma_1"]}
    if name == "gradients":
        return {m: {"log10_ratio": dict(zip(map(float, res["gammas"]),
                                            np.round(res[m]["log10_ratio"], 2).tolist())),
                    "gain_per_step": dict(zip(map(float, res["gammas"]),
                                              np.round(res[m]["gain_per_step"], 3).tolist())),
                    **({"log10_ratio_per_seed": {float(g): np.round(col, 1).tolist() for g, col in
                                                 zip(res["gammas"], res[m]["log10_ratio_seeds"].T)}}
                       if "log10_ratio_seeds" in res[m] else {})}
                for m in GRADIENT_MODELS if m in res}
    if name == "gamma":
        return {"final_loss": dict(zip(map(float, res["gammas"]), np.round(res["final_loss"], 4).tolist())),
                "best_val_acc": dict(zip(map(float, res["gammas"]), np.round(res["best_val_acc"], 4).tolist()))}
    if name == "stats":
        return {k: round(v, 4) for k, v in res["accuracy"].items()}
    if name == "models":
        return {m: {"best_mean": round(float(np.mean(res["best"][m])), 4),
                    "best_std": round(float(np.std(res["best"][m])), 4),
                    "steps_to_threshold": res["steps_to"][m]} for m in res["models"]}
    if name == "distractor":
        return {"lengths": res["lengths"].tolist(),
                **{k: np.round(v, 4).tolist() for k, v in res["accuracy"].items()}}
    if name == "length":
        return {"lengths": res["lengths"].tolist(),
                **{k: np.round(v, 3).tolist() for k, v in res["bpc"].items()}}
    if name == "transient":
        return {"first 3 steps / middle, per statistic": {k: round(v, 2) for k, v in res["ratio"].items()},
                "best val bpc": round(float(np.nanmin(res["val_bpc"])), 3)}
    if name == "text":
        return {m: {"val_bpc": np.round(res["val_bpc"][m], 3).tolist(),
                    "test_bpc": np.round(res["test_bpc"][m], 3).tolist(),
                    **({"test_bpc_whole_sequence": np.round(res["test_bpc_whole"][m], 3).tolist()}
                       if "test_bpc_whole" in res else {})} for m in res["models"]}
    return {}


def cli_main(args) -> int:
    """``python -m bnlstm paper NAME [--quick] [--out FILE] [--data-dir DIR] [--set k=v]``."""
    if args.experiment not in EXPERIMENTS:
        return _table_main(args)
    fn = EXPERIMENTS[args.experiment]
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs: Dict[str, Any] = {"quick": args.quick}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE; got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    try:
        if args.experiment in TEXT_EXPERIMENTS:
            from ..tasks.text.data import load_text
            kwargs["data"] = load_text(args.data_dir, text_file=args.text_file,
                                       source=kwargs.get("source", "auto"))
        elif args.experiment != "tanh":
            kwargs["data"] = _load(None, args.data_dir)
    except (OSError, ValueError) as exc:        # a missing or corrupt data file (DataError too)
        import sys
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = fn(**kwargs)
    res["command"] = "python -m bnlstm paper " + args.experiment + (" --quick" if args.quick else "") \
        + "".join(f" --set {s}" for s in args.set)
    print(json.dumps(to_jsonable(_summary(args.experiment, res)), indent=2))
    print(f"{args.experiment}: {res['seconds']:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(to_jsonable(res), f)
        print(f"wrote {args.out}")
    return 0
