"""Recipes: named, complete sets of settings for a task, as data files (``*.toml`` here),
read by the command line (``--recipe``), sweeps and the paper's experiments.

- ``quick``: the CPU-sized default (each task's own recipe; what ``train`` does bare);
- ``authors``: the authors' code, flag for flag, each value with the file and line it
  comes from;
- ``paper``: the paper's text where it differs from the code.

A recipe file has a ``description``, one table per task family (``[mnist]``, ``[text]``)
and optionally per task (``[mnist.permuted]``: overrides for that view), and ``[missing]``:
what the source does that no setting here expresses yet. A recipe never overrides the
task: settings given by hand win over it. No torch here.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

if sys.version_info >= (3, 11):
    import tomllib
else:                                      # pragma: no cover (a dependency: tomli)
    import tomli as tomllib

__all__ = ["Recipe", "RecipeError", "get", "names"]

HERE = Path(__file__).resolve().parent


class RecipeError(ValueError):
    """An unknown recipe, or a recipe file that cannot be read; the message says which."""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    tables: Dict[str, Any] = field(default_factory=dict)
    missing: Dict[str, List[str]] = field(default_factory=dict)

    def settings(self, task) -> Dict[str, Any]:
        """The settings of this recipe for ``task`` (a :class:`bnlstm.tasks.Task`): its
        family's table, then the task's own, the ones the task does not take left out."""
        family = dict(self.tables.get(task.family or task.name, {}))
        own = family.pop(task.name, {}) if isinstance(family.get(task.name), dict) else {}
        family = {k: v for k, v in family.items() if not isinstance(v, dict)}
        return {k: v for k, v in {**family, **own}.items() if task.applies(k)}

    def gaps(self, task) -> List[str]:
        return list(self.missing.get(task.family or task.name, []))


def names() -> List[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def get(name: str) -> Recipe:
    path = HERE / f"{name}.toml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name!r}; recipes: {', '.join(names())}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"recipe {name!r} ({path.name}) cannot be read: {exc}") from None
    missing = data.pop("missing", {})
    description = data.pop("description", "")
    return Recipe(name, description, data, missing)
