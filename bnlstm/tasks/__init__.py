"""Tasks: what is learned, written down once, and the registry that lists them.

A *task* (a :class:`Task`) supplies everything that is not the recurrent core:

- its data: where it comes from, its splits and batches, and a sentence saying which
  source was used (``info["data_source"]``);
- the model around the core: the input encoding, the head and the loss (the last
  step's hidden state classified, or a target at every step);
- its metrics with their direction (:class:`Metric`: accuracy, higher is better; bits
  per character, lower is better); the first is the one the best checkpoint is chosen by;
- which settings of :class:`~bnlstm.training.config.TrainConfig` do not apply (:attr:`Task.excludes`),
  the task's own recipe (:attr:`Task.defaults`), and which views apply (:attr:`Task.views`).

A task makes an *experiment* (the :class:`Experiment` protocol below) for one run; the
:class:`~bnlstm.training.trainer.Trainer` drives that experiment and knows nothing else of the task.
Everything else (run records and checkpoints, the command line, sweeps, the dashboard,
the notebooks and the paper's experiments) finds a task by its name here.

Where tasks come from:

1. the folders of this package (``bnlstm/tasks/<name>/``, each with its own data code
   over the shared verified download, ``downloads.py``): each registers its tasks when it
   is imported; adding a built-in task is adding a folder here;
2. the ``bnlstm.tasks`` entry-point group of installed packages (each entry point names a
   module to import, which registers its tasks);
3. the modules named in ``$BNLSTM_TASKS`` (comma separated), imported on first use: so a
   task of your own works from the command line and the dashboard without editing bnlstm;
4. :func:`register` called from your own code (a notebook, a script).

``docs/DESIGN.md`` shows a whole task of one's own in a few lines (a test runs it).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

__all__ = ["Metric", "Experiment", "Task", "register", "get", "names", "all_tasks", "registered",
           "load_problems", "TaskError", "ACCURACY", "BITS_PER_CHAR"]


class TaskError(ValueError):
    """An unknown task, or a task module that cannot be loaded; the message says which."""


@dataclass(frozen=True)
class Metric:
    """A number a task reports for a split.

    ``key`` names it in records, ``metrics.csv`` and ``summary.json`` (``val_<key>``,
    ``best_val_<key>``, ``test_<key>``); ``higher_is_better`` decides which checkpoint is
    the best; ``fmt`` formats it for people.
    """
    key: str
    label: str
    higher_is_better: bool
    fmt: str = ".4f"

    def better(self, a: float, b: Optional[float]) -> bool:
        """Is ``a`` better than ``b`` (``None``: nothing yet)?"""
        if b is None:
            return True
        return a > b if self.higher_is_better else a < b

    def format(self, value) -> str:
        return "-" if value is None else format(float(value), self.fmt)


ACCURACY = Metric("acc", "accuracy", higher_is_better=True)
BITS_PER_CHAR = Metric("bpc", "bits per character", higher_is_better=False, fmt=".3f")


@runtime_checkable
class Experiment(Protocol):
    """One run of a task, as the :class:`~bnlstm.training.trainer.Trainer` drives it.

    Attributes: ``config`` (the run's ``TrainConfig``), ``model`` (an ``nn.Module`` after
    :meth:`setup`), ``metrics`` (its :class:`Metric` s, the first decides the best).

    Records that cross to the trainer hold Python numbers, strings and numpy arrays only.
    """

    config: Any
    model: Any
    metrics: Tuple[Metric, ...]

    def setup(self) -> Dict[str, Any]:
        """Load the data, build the model and optimizer. Returns the run's info: at least
        ``device``, ``data_source`` (a sentence), ``n_params``, ``task``, ``seq_len``."""

    def train_step(self, probe: bool = False) -> Dict[str, Any]:
        """One update: ``loss``, ``grad_norm``, each metric's key; with ``probe`` also
        ``probe`` (a :mod:`bnlstm.nn.probes` record). A NaN loss never reaches the weights."""

    def evaluate(self, split: str = "val") -> Dict[str, Any]:
        """``loss``, each metric's key and ``n`` on ``"val"`` or ``"test"`` (population
        statistics: the model in eval mode)."""

    def finalize(self) -> bool:
        """Before the test (after the best weights are loaded); True if it changed the
        model (re-estimated population statistics), so that validation is measured again."""

    def state_dict(self) -> Dict[str, Any]:
        """The model's weights and buffers, copied to the CPU."""

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        ...

    def resume_state(self) -> Dict[str, Any]:
        """All a run needs to go on exactly (weights, optimizer, data position, random
        generators): tensors and plain values, so it loads with ``weights_only=True``."""

    def load_resume_state(self, state: Dict[str, Any]) -> None:
        ...

    def checkpoint_meta(self) -> Dict[str, Any]:
        """Plain values a checkpoint needs besides config and weights to rebuild the model
        (a text model's vocabulary); ``{}`` for most tasks."""

    def release(self) -> None:
        """The run has ended: free what is kept between steps (evaluation still works)."""


class Task:
    """A task: see the module docstring. Subclass it, set the class attributes, implement
    :meth:`experiment` and :meth:`build_model`, and :func:`register` an instance.

    Attributes:
        name: the value of ``TrainConfig.task`` (``--task NAME``).
        family: tasks that share data and views (``"mnist"``, ``"text"``).
        label: a short name for people (menus, legends).
        description: one sentence for ``--help`` and the page.
        metrics: its :class:`Metric` s; the first chooses the best checkpoint.
        excludes: the ``TrainConfig`` settings that do not apply to this task: the
            dashboard hides them and the command line refuses them when given.
        defaults: settings whose default this task's recipe changes.
        views: the dashboard views that apply (``"probes"``, ``"digits"``, ``"text"``).
        data_options: keyword options of :meth:`experiment` / :meth:`load_data` besides
            ``data_dir`` and ``download`` (the text task's ``text_file``).
    """

    name: str = ""
    family: str = ""
    label: str = ""
    description: str = ""
    metrics: Tuple[Metric, ...] = (ACCURACY,)
    excludes: FrozenSet[str] = frozenset()
    defaults: Dict[str, Any] = {}
    views: Tuple[str, ...] = ("probes",)
    data_options: Tuple[str, ...] = ()

    @property
    def metric(self) -> Metric:
        return self.metrics[0]

    def applies(self, setting: str) -> bool:
        return setting not in self.excludes

    def check(self, config) -> None:
        """Raise ``ValueError`` (the reason for people) if this task cannot train ``config``.
        Cheap and torch-free: the dashboard asks before it queues a run. Here: what no
        task can train (a subclass that overrides this calls it)."""
        if config.model == "bn-tanh-rnn" and config.h0 == "learned":
            raise ValueError("h0 'learned' is for the LSTM models; the BN tanh-RNN of "
                             "Figure 1a starts from zeros (choose h0 'zero')")

    def data_problem(self, data_dir=None, **options) -> Optional[str]:
        """What stops this task's data from loading here, for people, with what does work
        (``None``: nothing known). Cheap (no data is read) and torch-free: the dashboard
        asks when the task is chosen, before anyone presses Start."""
        return None

    def load_data(self, data_dir=None, download: bool = False, **options):
        """The task's data set (shared by runs in one process): an object with ``source``."""
        raise NotImplementedError

    def experiment(self, config, data=None, data_dir=None, download: bool = False,
                   **options) -> Experiment:
        """An :class:`Experiment` for one run of ``config``. ``data``: what :meth:`load_data`
        returned (shared by runs), or a function that returns it, called when the run is
        set up; ``None``: the experiment loads it from ``data_dir``/``download``."""
        raise NotImplementedError

    def build_model(self, config, meta: Dict[str, Any]):
        """The model of ``config`` (an ``nn.Module``), as :meth:`experiment` builds it;
        ``meta`` is what :meth:`Experiment.checkpoint_meta` saved. Checkpoints use it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Task {self.name!r} ({self.family})>"


# --------------------------------------------------------------------------- the registry
_REGISTRY: Dict[str, Task] = {}
_LOCK = threading.RLock()
_LOADED = {"builtin": False, "plugins": set(), "problems": []}


def register(task: Task, replace: bool = False) -> Task:
    """Add ``task`` to the registry (and to ``TrainConfig.task``'s choices). Returns it."""
    if not isinstance(task, Task) or not task.name:
        raise TaskError(f"register() takes a Task instance with a name; got {task!r}")
    with _LOCK:
        old = _REGISTRY.get(task.name)
        if old is not None and not replace and type(old) is not type(task):
            raise TaskError(f"a task named {task.name!r} is already registered ({old!r}); "
                            "pass replace=True to replace it")
        _REGISTRY[task.name] = task
        _sync_config()
    return task


def _sync_config() -> None:
    """TrainConfig.task's choices follow the registry (once config is importable)."""
    import sys
    config = sys.modules.get(__package__.rsplit(".", 1)[0] + ".training.config")
    cls = getattr(config, "TrainConfig", None)
    if cls is not None:
        cls.param["task"].objects = list(_REGISTRY)


def _load_builtin() -> None:
    if _LOADED["builtin"]:
        return
    _LOADED["builtin"] = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "mnist", m.name)):
        if mod.ispkg and not mod.name.startswith("_"):     # a built-in task is a folder
            importlib.import_module(f"{__name__}.{mod.name}")


def _load_plugins() -> None:
    """Entry points of the ``bnlstm.tasks`` group, then ``$BNLSTM_TASKS``; each once."""
    from importlib.metadata import entry_points
    wanted: List[Tuple[str, Any]] = []
    try:
        for ep in entry_points(group="bnlstm.tasks"):
            wanted.append((f"entry point {ep.name} ({ep.value})", ep))
    except Exception:                      # a broken distribution's metadata: skip it
        pass
    for name in filter(None, (s.strip() for s in os.environ.get("BNLSTM_TASKS", "").split(","))):
        wanted.append((f"module {name} (from $BNLSTM_TASKS)", name))
    for what, target in wanted:
        if what in _LOADED["plugins"]:
            continue
        _LOADED["plugins"].add(what)
        try:
            obj = target.load() if hasattr(target, "load") else importlib.import_module(target)
        except Exception as exc:
            msg = f"cannot load the task {what}: {type(exc).__name__}: {exc}"
            _LOADED["problems"].append(msg)
            raise TaskError(msg) from None
        if isinstance(obj, Task):
            register(obj)


def discover() -> None:
    """Import the built-in tasks and the plug-ins (idempotent; called on first use)."""
    with _LOCK:
        _load_builtin()
        _load_plugins()


def get(name: str) -> Task:
    """The task called ``name``; :class:`TaskError` lists the valid names."""
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(_REGISTRY)}") from None


def names(family: Optional[str] = None) -> List[str]:
    discover()
    return [n for n, t in _REGISTRY.items() if family is None or t.family == family]


def all_tasks() -> Iterable[Task]:
    discover()
    return list(_REGISTRY.values())


def registered() -> List[Task]:
    """The tasks registered so far, without loading anything: what is left to show when a
    plug-in fails to load (:func:`all_tasks` raised :class:`TaskError`)."""
    with _LOCK:
        return list(_REGISTRY.values())


def load_problems() -> List[str]:
    """Why a plug-in task could not be loaded (each once, as :func:`all_tasks` raised it):
    what a page says while it goes on with the tasks it has."""
    try:
        discover()
    except TaskError:
        pass
    with _LOCK:
        return list(_LOADED["problems"])


# --------------------------------------------------------------------------- shared data
_DATA: Dict[Any, Any] = {}
_DATA_LOCK = threading.Lock()


def shared_data(task, data_dir=None, download: bool = False, **options):
    """``task.load_data(...)``, once per process for each task family, folder and options:
    runs in one process (the dashboard's sessions, a Dask worker's runs) share the arrays,
    read-only. A failure is not kept: the next call tries again. A text given as data
    (``text=``, a page's own) is not kept either: it belongs to the run that names it."""
    task = get(task) if isinstance(task, str) else task
    if options.get("text") is not None:
        return task.load_data(data_dir, download=download, **options)
    key = (task.family or task.name, str(data_dir) if data_dir else None,
           tuple(sorted((k, str(v)) for k, v in options.items())))
    with _DATA_LOCK:
        if key not in _DATA:
            _DATA[key] = task.load_data(data_dir, download=download, **options)
        return _DATA[key]
