"""Command line: ``python -m bnlstm {train,data,eval,sweep,paper}``.

The flags of ``train`` are made from :class:`~bnlstm.training.config.TrainConfig`, so the
command line, the dashboard and the notebooks share one table of settings.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import List, Optional

import param

from .training.config import TrainConfig


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (TrainConfig; defaults: the paper's recipe)")
    for name, par in TrainConfig.param.objects("existing").items():
        if name == "name":
            continue
        flag = _flag(name)
        default = par.default
        helptext = (par.doc or "").replace("%", "%%") + f" [default: {default}]"
        if isinstance(par, param.Boolean):
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=helptext)
        elif isinstance(par, param.Selector):
            g.add_argument(flag, dest=name, choices=list(par.objects), default=None, help=helptext)
        elif isinstance(par, param.Integer):
            g.add_argument(flag, dest=name, type=int, default=None, metavar="N", help=helptext)
        elif isinstance(par, param.Number):
            g.add_argument(flag, dest=name, type=float, default=None, metavar="X", help=helptext)


def _settings_from_args(args) -> dict:
    """The TrainConfig settings given as flags (the others keep their defaults)."""
    return {k: getattr(args, k) for k in TrainConfig.param if k != "name"
            and getattr(args, k, None) is not None}


def _config_from_args(args, parser) -> TrainConfig:
    """The flags' settings on top of the task's recipe (``Task.defaults``)."""
    settings = _settings_from_args(args)
    try:
        return TrainConfig.for_task(settings.pop("task", TrainConfig.param["task"].default),
                                    **settings)
    except ValueError as exc:            # param names the setting and its bounds
        from .training.config import explain
        parser.error(explain(exc))


def _data_options(args) -> dict:
    """The data flags a task may take besides --data-dir and --download."""
    opts = {"text_file": args.text_file} if getattr(args, "text_file", None) else {}
    if getattr(args, "text_source", "auto") not in (None, "auto"):
        opts["source"] = args.text_source
    return opts


def _add_data_args(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--data-dir", default=None,
                   help="MNIST tasks: the directory with the four MNIST .gz files (default: "
                        "$BNLSTM_MNIST_DIR, then the user cache, then the bundled sample); "
                        "text: the directory with ptb.char.{train,valid,test}.txt (default: "
                        "$BNLSTM_PTB_DIR, then the user cache, then a text that ships with "
                        "Python)" + what)
    p.add_argument("--text-file", default=None, metavar="FILE",
                   help="text task: train on this UTF-8 text file instead (split 90/5/5 "
                        "in order, deterministically)")
    p.add_argument("--text-source", default="auto", choices=["auto", "ptb-heldout", "text8"],
                   help="text task: auto (the order above) or ptb-heldout (Penn Treebank "
                        "without its training file: the validation file's first 95%% trains, "
                        "its last 5%% validates, the test file tests) or text8 (the paper's Table 3 corpus, "
                        "its folder: --data-dir or $BNLSTM_TEXT8_DIR, else the cache; with "
                        "--download fetched from $BNLSTM_TEXT8_URL or mattmahoney.net)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bnlstm",
        description="Recurrent Batch Normalization (Cooijmans et al., ICLR 2017): "
                    "train LSTMs and BN-LSTMs on sequential MNIST and character-level "
                    "language modelling.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train one model and print its validation and test scores",
        description="Train one model. A task's own recipe sets the defaults it changes (the "
                    "text task: Adam 2e-3, batch 64, no h_0 noise, ...); flags override them.",
        epilog="examples: python -m bnlstm train --task row --model bnlstm --steps 2000; "
               "python -m bnlstm train --task text --model bnlstm --hidden 128 --steps 300")
    _add_config_args(t)
    t.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="run directory for config.json, metrics.csv, summary.json, checkpoint.pt "
                        "(default: runs/<time>-<task>-<model>)")
    _add_data_args(t)
    t.add_argument("--download", action="store_true",
                   help="download the task's data (MNIST, Penn Treebank) into the user cache "
                        "if it is not there")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser("recipes", help="list the recipes (named sets of settings: quick, "
                                       "authors, paper) and what each sets for a task",
                       description="A recipe is a named, complete set of settings for a task "
                                   "(bnlstm/recipes/*.toml), given to train or sweep as --recipe "
                                   "NAME; flags given by hand override it.")
    r.add_argument("name", nargs="?", help="one recipe (default: all)")
    r.add_argument("--task", default=None, help="its settings for this task only")

    d = sub.add_parser("data", help="say which MNIST (or text) files are present; verify or "
                                    "download them")
    d.add_argument("--dir", default=None, help="a directory with the MNIST (or PTB) files to verify")
    d.add_argument("--download", action="store_true", help="download into the user cache")
    d.add_argument("--text", action="store_true",
                   help="the text task's data instead: Penn Treebank's files, or the fallback")

    e = sub.add_parser("eval", help="evaluate a checkpoint on the validation and test sets")
    e.add_argument("checkpoint", help="path to a checkpoint.pt written by 'train'")
    _add_data_args(e)
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    e.add_argument("--whole-sequence", action="store_true",
                   help="text tasks: also score each split as one sequence of batch 1, every "
                        "character predicted from all before it (the authors' Table 2 test)")

    w = sub.add_parser(
        "sweep", help="run a grid of settings x seeds on Dask (a LocalCluster, or --scheduler)",
        description="Run a grid of TrainConfig settings times seeds, each run a Dask task, into "
                    "one sweep folder (sweep.json, runs/<name>/, results.csv, groups.csv, "
                    "curves.html). Running the same command again skips finished runs and goes "
                    "on with the others from their last snapshot. Every setting of 'train' is a "
                    "flag here too and applies to every run; probes are off unless "
                    "--probe-every is given.",
        epilog="example: python -m bnlstm sweep --grid model=lstm,bnlstm --grid gamma_init=0.1,1.0 "
               "--seeds 3 --task row --steps 300 --out sweeps/demo")
    w.add_argument("--grid", metavar="KEY=V1,V2,...", action="append", default=[],
                   help="a setting and the values it takes (repeatable; the runs are all "
                        "combinations)")
    w.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds 0..N-1 for every point")
    w.add_argument("--preset", default=None, choices=["fig2", "fig6", "stats"],
                   help="the paper's comparisons: fig2 (LSTM vs BN-input vs BN-LSTM), fig6 "
                        "(gamma 0.1 ... 1.0), stats (per-step vs shared statistics); flags and "
                        "--grid override its settings")
    w.add_argument("--out", metavar="DIR", default=None,
                   help="the sweep folder (default: sweeps/<time>); the same DIR resumes")
    w.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a running Dask scheduler (tcp://host:8786) instead of the embedded "
                        "LocalCluster (default: $BNLSTM_DASK_SCHEDULER, the dashboard's "
                        "cluster, when it is set)")
    w.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster worker processes (default: cores / --threads)")
    w.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per run")
    w.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="updates between resume snapshots of a run (default: --eval-every)")
    w.add_argument("--gpus-per-run", type=int, default=0, metavar="N",
                   help="ask Dask for N 'GPU' worker resources per run and train on CUDA "
                        "(start workers with: dask worker ADDRESS --resources GPU=1)")
    _add_data_args(w, "; readable by every worker")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(w)

    from .paper import add_cli as _add_paper_cli      # python -m bnlstm paper NAME (bnlstm/paper/cli.py)
    _add_paper_cli(sub)
    return p


def _train(args, parser) -> int:
    cfg = _config_from_args(args, parser)      # bad settings: a usage error before any work

    from tqdm.auto import tqdm

    from . import tasks
    from .training.assemble import assemble_run
    from .training.events import RunState

    task = tasks.get(cfg.task)
    try:
        data = task.load_data(args.data_dir, download=args.download, **_data_options(args))
    except (OSError, ValueError) as exc:          # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / (
        _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.task}-{cfg.model}")
    print(f"data: {data.source}")
    trainer, recorder = assemble_run(cfg, data=data, out=out)
    metric = trainer.metric
    bar = tqdm(total=cfg.steps, unit="upd", disable=args.no_progress, dynamic_ncols=True)
    seen = RunState(metric)           # the reducer the engines and the page use too

    def progress(rec):
        seen.apply(rec)
        if rec["kind"] == "train":
            bar.update(rec["step"] - bar.n)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", **(
                {"val": metric.format(seen.last_val)} if seen.last_val is not None else {}))
        elif rec["kind"] == "info":
            bar.write(f"device: {rec['device']}  parameters: {rec['n_params']:,}  "
                      f"sequence: {rec['seq_len']} steps")
        elif rec["kind"] == "error":
            bar.write(rec["traceback"])

    trainer.add_callback(progress)
    try:
        state = trainer.run()
    except KeyboardInterrupt:
        trainer.stop()
        state = "stopped"
    finally:
        bar.close()
        recorder.close()
    s = recorder.summary
    print(f"state: {state}" + (f" ({trainer.reason})" if trainer.reason else ""))
    k = metric.key
    if s.get(f"best_val_{k}") is not None:
        print(f"validation {metric.label} (best, step {s['best_step']}): "
              f"{metric.format(s[f'best_val_{k}'])}")
        if s.get(f"val_{k}") is not None and s[f"val_{k}"] != s[f"best_val_{k}"]:
            print(f"validation {metric.label} after re-estimating the statistics: "
                  f"{metric.format(s[f'val_{k}'])}")
    if s.get(f"test_{k}") is not None:
        print(f"test {metric.label}: {metric.format(s[f'test_{k}'])}")
    print(f"run record: {out}")
    return 0 if state == "finished" else 1


def _recipes(args) -> int:
    """Each recipe: its description, its settings for each task, what it cannot say yet."""
    from . import recipes, tasks
    try:
        chosen = [recipes.get(args.name)] if args.name else [recipes.get(n) for n in recipes.names()]
        which = [tasks.get(args.task)] if args.task else list(tasks.all_tasks())
    except (recipes.RecipeError, tasks.TaskError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in chosen:
        print(f"{r.name}: {r.description}")
        for t in which:
            cfg = TrainConfig.for_task(t.name, recipe=r.name)
            base = TrainConfig.for_task(t.name)
            changed = {k: getattr(cfg, k) for k in cfg.to_dict()
                       if k not in ("recipe",) and getattr(cfg, k) != getattr(base, k)}
            shown = ", ".join(f"{k}={v}" for k, v in changed.items()) or "(the task's defaults)"
            print(f"  --task {t.name}: {shown}")
            for gap in r.gaps(t):
                print(f"      not yet: {gap}")
        print()
    return 0


def _data(args) -> int:
    from .tasks.mnist import data as data_mod
    if getattr(args, "text", False):
        from .tasks.text import data as textdata
        try:
            if args.download:
                textdata.download_ptb(args.dir)
            print(textdata.describe(args.dir))
        except textdata.TextDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.download or args.dir:
            d = data_mod.ensure(download=args.download, root=args.dir)
            print(f"ok: {d.source}")
        print(data_mod.describe(args.dir))
    except data_mod.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _eval(args) -> int:
    from . import tasks
    from .training.checkpoints import CheckpointError, load_checkpoint
    try:
        cfg, model, ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg.device = args.device
    try:
        exp = tasks.get(cfg.task).experiment(cfg, data_dir=args.data_dir, **_data_options(args))
        info = exp.setup()
    except (OSError, ValueError) as exc:       # bad data folder, missing device (DataError too)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exp.load_state_dict(ckpt["model"])
    res = {"checkpoint_step": ckpt.get("step"), "data_source": info["data_source"]}
    for split in ("val", "test"):
        res[split] = exp.evaluate(split)
    if args.whole_sequence:
        whole = getattr(exp, "evaluate_whole", None)
        if whole is None:
            print(f"error: --whole-sequence is for text tasks; {cfg.task!r} is not one",
                  file=sys.stderr)
            return 2
        for split in ("val", "test"):
            res[f"{split}_whole_sequence"] = whole(split)
    print(json.dumps(res, indent=2))
    return 0


def _sweep(args) -> int:
    from .runs.results import DONE_STATES, format_groups, group_rows, summary_metrics
    from .runs.sweep import Sweep, SweepError, run_sweep
    try:
        sweep = Sweep.from_args(grid=args.grid, seeds=args.seeds, base=_settings_from_args(args),
                                preset=args.preset)
        out = Path(args.out) if args.out else Path("sweeps") / _dt.datetime.now().strftime(
            "%Y%m%d-%H%M%S")
        rows = run_sweep(sweep, out, scheduler=args.scheduler, n_workers=args.workers,
                         threads=args.threads, data_dir=args.data_dir,
                         data_options=_data_options(args),
                         checkpoint_every=args.checkpoint_every, gpus_per_run=args.gpus_per_run,
                         progress=not args.no_progress)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep interrupted: run the same command again to go on", file=sys.stderr)
        return 130
    print()
    metrics = summary_metrics(sweep.metric_keys())
    print(format_groups(group_rows(rows, sweep.keys, metrics), sweep.keys, metrics))
    print(f"\nsweep folder: {out} (results.csv, groups.csv, curves.html)")
    return 0 if all(r["state"] in DONE_STATES for r in rows) else 1


def main(argv: Optional[List[str]] = None) -> int:
    from . import tasks
    try:
        tasks.discover()                   # plug-in tasks ($BNLSTM_TASKS, entry points) first
    except tasks.TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args, parser)
    if args.command == "data":
        return _data(args)
    if args.command == "recipes":
        return _recipes(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "paper":
        from .paper import cli_main as _paper_main
        return _paper_main(args)
    return _eval(args)


if __name__ == "__main__":
    sys.exit(main())
