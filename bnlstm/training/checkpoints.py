"""Checkpoints: plain dicts of tensors and JSON-able values (the task's name, every
setting, the weights and ``meta``, what the task needs to rebuild its model, such as a
vocabulary), always loaded with ``torch.load(..., weights_only=True)``: a file that
needs pickled objects is refused. :func:`load_checkpoint` rebuilds the model through the
task registry (:mod:`bnlstm.tasks`)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Union

import torch

__all__ = ["CheckpointError", "make_checkpoint", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "bnlstm-checkpoint"
CHECKPOINT_VERSION = 1
class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason."""


def make_checkpoint(config, state_dict: Dict[str, torch.Tensor], meta=None,
                    **extra) -> Dict[str, Any]:
    """``meta``: plain values the task needs to rebuild the model (``checkpoint_meta()``)."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "task": config.task,
            "config": config.to_dict(), "model": state_dict, "meta": dict(meta or {}), **extra}


def save_checkpoint(ckpt: Dict[str, Any], path: Union[str, Path]) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)                      # never a half-written checkpoint
    return path


def load_checkpoint(path: Union[str, Path], map_location="cpu"):
    """Load a checkpoint safely; returns ``(config, model, ckpt)``.

    Raises :class:`CheckpointError` naming the file and the problem when the file is
    missing, corrupt, holds pickled objects, or does not fit the model its config builds.
    """
    from .. import tasks
    from .config import TrainConfig

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):   # torch.save's zip, or a pickle
        kind = "an empty file" if not head else f"a file that starts with {head!r}"
        raise CheckpointError(f"{path}: not a checkpoint: torch.save writes a zip archive, and "
                              f"this is {kind} (a text or other file?)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: refused to load: it is corrupt, truncated, or holds objects other than "
            f"tensors and plain values (checkpoints load with weights_only=True, always). "
            f"Details: {_load_failure(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a bnlstm checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r}; "
                              f"this bnlstm reads version {CHECKPOINT_VERSION}")
    name = ckpt.get("task") or (ckpt.get("config") or {}).get("task")
    try:
        task = tasks.get(name)
    except tasks.TaskError as exc:
        raise CheckpointError(f"{path}: a checkpoint of the task {name!r}, which is not "
                              f"registered here ({exc})") from None
    try:
        config = TrainConfig.from_dict(ckpt["config"])
        model = task.build_model(config, ckpt.get("meta") or {})
        model.load_state_dict(ckpt["model"])
    except Exception as exc:
        raise CheckpointError(f"{path}: its weights do not fit its config: "
                              f"{type(exc).__name__}: {exc}") from None
    for name, t in ckpt["model"].items():
        if torch.is_floating_point(t) and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return config, model, ckpt


def _load_failure(exc: Exception) -> str:
    """torch.load's reason, without its advice to load the file unsafely (never taken here)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled Python object ({found.group(1)}), which is never unpickled"
    if "Weights only load failed" in text:
        return "it holds pickled Python objects, which are never unpickled"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"


