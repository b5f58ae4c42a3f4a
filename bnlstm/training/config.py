"""Every setting of a training run, in one declarative table.

:class:`TrainConfig` is a ``param.Parameterized`` class: each setting has a
type, bounds and a doc string, and an invalid value raises at once with a
message that names the setting. The command line builds its flags from it, the
dashboard its widgets and its URL, the notebooks use it as is. ``param`` is
not a GUI library; the core still never imports Panel.

Settings in :attr:`TrainConfig.LIVE` apply to a run that is already training;
the others take effect when a new run starts (they change the model or data).
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict

import param

from .. import recipes as _recipes
from ..nn import INITS

_RECIPES = _recipes.names()

TASK_NAMES = ("row", "pixel14", "pixel7", "pixel", "permuted")
MODEL_NORMS = {"lstm": "none", "bnlstm-input": "input", "bnlstm": "full", "bn-tanh-rnn": "sum"}
MODEL_LABELS = {"lstm": "LSTM", "bnlstm-input": "BN on input only", "bnlstm": "BN-LSTM (full)",
                "bn-tanh-rnn": "BN tanh-RNN (Fig. 1a)"}


class TrainConfig(param.Parameterized):
    """One training run: model, data, optimizer and probes (defaults: the paper's recipe)."""

    # --- what is trained (needs a new run) -------------------------------------------
    task = param.Selector(default="row", objects=list(TASK_NAMES), doc=(
        "What is learned (the registry bnlstm.tasks lists them). Sequential MNIST views: row "
        "(28 steps x 28 pixels), pixel14 / pixel7 (the 14x14 or 7x7 image pixel by pixel: 196 or "
        "49 steps), pixel (784 steps, the paper), permuted (784 steps in a fixed random order, "
        "the paper's pMNIST). text: character-level language modelling (Penn Treebank, a text "
        "file, or a text that ships with Python), bits per character."))
    seq_len = param.Integer(default=100, bounds=(2, 100000), softbounds=(10, 400), doc=(
        "Text task: characters per training sequence (paper: 100); the population statistics "
        "keep this many steps, and longer test sequences reuse the last step's (T_max rule)."))
    windows = param.Selector(default="overlap", objects=["overlap", "disjoint"], doc=(
        "Text task: how sequences are cut. overlap: windows of seq_len + 1 characters, each "
        "sharing its last with the next window's first, seq_len predictions each (every "
        "character is a target once); disjoint: windows of seq_len + 1 characters that share "
        "nothing, as the authors' penntreebank.py (their --length 100 is seq_len 99 here: "
        "x[:-1], y[1:], 99 predictions, T_max 99)."))
    text_test = param.Selector(default="windows", objects=["windows", "whole"], doc=(
        "Text task: the final test over windows cut as for validation (batches of 100), or "
        "the whole test text as one sequence of batch 1, each character predicted from all "
        "before it (the authors' proper_test in penntreebank_evaluate.py; slow on a CPU)."))
    model = param.Selector(default="bnlstm", objects=list(MODEL_NORMS), doc=(
        "lstm: no normalization; bnlstm-input: BN on W_x x only (the earlier 'vertical' BN); "
        "bnlstm: the paper's BN-LSTM (W_x x, W_h h and the cell); bn-tanh-rnn: the batch-"
        "normalized tanh RNN of the paper's Figure 1a, as the authors built it: one BN over "
        "W_h h + W_x x (gradient flow against gamma)."))
    gamma_init = param.Number(default=0.1, bounds=(1e-3, 2.0), softbounds=(0.01, 1.0), doc=(
        "Initial BN scale gamma (paper: 0.1). Near 1 the tanh inputs have unit variance, tanh "
        "saturates and gradients vanish through time."))
    stats = param.Selector(default="per_step", objects=["per_step", "shared"], doc=(
        "Population statistics kept per time step (the paper) or shared over time (one "
        "BatchNorm1d reused at every step: the mistake the paper warns about; it shows at test time)."))
    hidden = param.Integer(default=100, bounds=(1, 4096), softbounds=(8, 256), doc=(
        "Hidden units per layer (paper: 100 on MNIST)."))
    num_layers = param.Integer(default=1, bounds=(1, 8), softbounds=(1, 3), doc="Stacked LSTM layers.")
    permutation = param.Selector(default="true", objects=["true", "authors"], doc=(
        "Permuted MNIST's pixel order: true (a permutation of the 784 pixels, seeded) or authors "
        "(as the authors' sequential_mnist.py draws it, np.random.randint(0, 784, 784) after "
        "np.random.seed(1): with replacement, so 501 distinct pixels and the rest never seen; "
        "the paper's Table 1 pMNIST was measured on that)."))
    init = param.Selector(default="paper", objects=list(INITS), doc=(
        "Weight init: paper (orthogonal W_x, identity W_h), authors (identity only for the g "
        "block; for the tanh RNN the same as paper), orthogonal, pytorch (nn.LSTM's uniform). "
        "In the BN tanh-RNN identity vs orthogonal W_h decides whether gradients vanish or "
        "grow through time."))
    forget_bias = param.Number(default=1.0, bounds=(-10.0, 10.0), doc=(
        "Initial forget-gate bias (the authors' code: 1)."))
    h0_noise = param.Number(default=0.1, bounds=(0.0, 10.0), doc=(
        "Std of Gaussian noise on h_0 in training, BN models only (paper: 0.1 on pixel MNIST, "
        "where the black first pixels give zero batch variance)."))
    h0 = param.Selector(default="zero", objects=["zero", "learned"], doc=(
        "The initial state h_0, c_0: zero (nn.LSTM's) or learned (two trained vectors shared "
        "by every sequence, zeros at init: the authors' code). The h_0 noise is added to it. "
        "LSTM and BN-LSTM models."))
    head_init = param.Selector(default="pytorch", objects=["pytorch", "orthogonal"], doc=(
        "Init of the output layer W_y: pytorch (nn.Linear's uniform) or orthogonal (the "
        "authors' code); its bias starts at 0 with orthogonal."))
    momentum = param.Number(default=0.1, bounds=(0.0, 1.0), doc=(
        "Momentum of the population statistics: running = (1 - m) * running + m * batch "
        "(the authors used 0.01 on MNIST)."))
    batch_size = param.Integer(default=100, bounds=(2, 8192), softbounds=(8, 512), doc=(
        "Minibatch size (paper: 100)."))
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc=(
        "Seed of weights, noise and batch order: runs on the CPU with the same seed repeat exactly."))
    device = param.Selector(default="auto", objects=["auto", "cpu", "cuda", "mps"], doc=(
        "Where to train: auto picks CUDA, then MPS, then the CPU."))
    optimizer = param.Selector(default="rmsprop", objects=["rmsprop", "adam", "sgd"], doc=(
        "Optimizer (paper: RMSProp on MNIST)."))
    rmsprop_alpha = param.Number(default=0.99, bounds=(0.0, 0.9999), doc=(
        "RMSProp's decay of the squared-gradient average (torch's default 0.99; the paper's "
        "text 0.9; the authors' code 0.5)."))
    recipe = param.Selector(default="quick", objects=list(_RECIPES), doc=(
        "The named set of settings this run started from (bnlstm/recipes/*.toml; `python -m "
        "bnlstm recipes` lists them): quick (CPU-sized), authors (the authors' code, flag for "
        "flag), paper (the paper's text). Flags given by hand override it."))
    val_limit = param.Integer(default=0, bounds=(0, None), doc=(
        "Validate on the first N validation digits only (0: the whole split, 10,000 on full MNIST)."))
    test_at_end = param.Boolean(default=True, doc=(
        "Evaluate the best checkpoint on the test set when the run finishes."))
    train_score = param.Integer(default=0, bounds=(0, None), doc=(
        "At the end, also score the tested weights on the first N training examples (MNIST "
        "images; text: windows) with the test's statistics: train_<metric> in the summary, "
        "whose gap to test_<metric> is the generalization gap (0: not scored)."))
    val_stats = param.Selector(default="population", objects=["population", "batch"], doc=(
        "Which statistics a BN model validates with (the best checkpoint is picked by it): "
        "population (eval mode: the running averages) or batch (each validation batch its "
        "own, the running averages untouched: the authors' TrackTheBest on "
        "valid_training_error_rate; early in a run with a small momentum, the running "
        "averages still lag behind the weights and population validation is near chance)."))
    reestimate = param.Integer(default=0, bounds=(-1, None), doc=(
        "Before the final test, re-estimate the population statistics over this many random "
        "training batches (0: keep the running averages; -1: one pass over the whole training "
        "split in order, as the authors' evaluation scripts: batches of 100 windows on text, "
        "5000 images on MNIST)."))

    # --- applies live ---------------------------------------------------------------
    lr = param.Number(default=1e-3, bounds=(1e-7, 10.0), softbounds=(1e-5, 1e-1), doc=(
        "Learning rate (paper: 1e-3)."))
    clip = param.Number(default=1.0, bounds=(0.0, None), softbounds=(0.0, 10.0), doc=(
        "Clip the gradient's global norm to this (paper: 1.0); 0 turns clipping off."))
    steps = param.Integer(default=2000, bounds=(1, 10**8), softbounds=(100, 20000), doc=(
        "Training updates in the run (the step budget)."))
    eval_every = param.Integer(default=250, bounds=(1, None), softbounds=(10, 2000), doc=(
        "Validate with population statistics every N updates (and at the end)."))
    probe_every = param.Integer(default=50, bounds=(0, None), softbounds=(0, 500), doc=(
        "Run the probes (per-step statistics, tanh saturation, gradient norm through time) on "
        "every N-th update; 0 turns them off. A probed update takes the slower per-step path."))

    temperature = param.Number(default=0.8, bounds=(0.0, 5.0), softbounds=(0.0, 2.0), doc=(
        "Text task: the temperature of the samples the probes generate (0: always the likeliest "
        "character; 1: the model's own distribution; higher: more random)."))

    LIVE = ("lr", "clip", "steps", "eval_every", "probe_every", "temperature")

    @classmethod
    def for_task(cls, task: str, recipe: str = "quick", **settings) -> "TrainConfig":
        """A config for ``task``: the task's own defaults (``Task.defaults``), then the
        named ``recipe``'s settings for it (:mod:`bnlstm.recipes`), then ``settings``.
        Raises ``ValueError`` for a setting that does not apply to the task, or an
        unknown recipe."""
        from .. import recipes, tasks
        t = tasks.get(task)
        wrong = sorted(k for k in settings if not t.applies(k))
        if wrong:
            raise ValueError(f"setting(s) {', '.join(wrong)} do not apply to the task {task!r}")
        r = recipes.get(recipe)
        return cls(**{**t.defaults, **r.settings(t), **settings, "task": task, "recipe": recipe})

    @property
    def norm(self) -> str:
        """The ``BNLSTM`` norm this config's ``model`` means."""
        return MODEL_NORMS[self.model]

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.param if k != "name"}

    @classmethod
    def from_dict(cls, d: Dict[str, Any], **overrides) -> "TrainConfig":
        d = {**d, **overrides}
        unknown = sorted(set(d) - set(cls.param) - {"name"})
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}; "
                             f"valid: {', '.join(k for k in cls.param if k != 'name')}")
        d.pop("name", None)
        if "task" in d and d["task"] not in cls.param["task"].objects:
            from .. import tasks         # a plug-in task ($BNLSTM_TASKS, entry points) not loaded yet
            tasks.discover()
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def summary(self) -> str:
        """A one-line description for legends and logs."""
        s = f"{MODEL_LABELS[self.model]} {self.task}"
        if self.task == "permuted" and self.permutation != "true":
            s += f" ({self.permutation}' pixel order)"
        if self.model != "lstm":
            s += f" g={self.gamma_init:g}"
            if self.stats != "per_step":
                s += " shared-stats"
        return s + f" seed {self.seed}"


def explain(exc: Exception) -> str:
    """An invalid setting's message for people: param's first line, without its internal
    names ("Number parameter 'TrainConfig.lr' must be at least 1e-07, not 0.0." ->
    "lr must be at least 1e-07, not 0.0.")."""
    import re
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"\b\w+ parameter '(?:\w+\.)?(\w+)'", r"\1", text)
    return text.replace("<class 'str'>", "text").replace("only takes numeric values", "must be a number")


def parse_setting(name: str, text: str) -> Any:
    """A setting's value written as text (a command line, a URL) -> the setting's type.

    Booleans take true/false, yes/no, on/off, 1/0; integers a whole number (``1e3`` too);
    numbers a finite number; selectors the text as is. Raises ``ValueError`` with the
    reason. Bounds and choices are checked by ``TrainConfig`` itself, not here.
    """
    par = TrainConfig.param[name]
    text = str(text).strip()
    if isinstance(par, param.Boolean):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(par, (param.Integer, param.Number)):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if isinstance(par, param.Integer):
            if not value.is_integer():
                raise ValueError("expected a whole number")
            return int(value)
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    return text


def _register_builtin_tasks() -> None:
    """``task``'s choices are the registry's (``bnlstm.tasks``); plug-ins add theirs later."""
    from .. import tasks
    tasks._load_builtin()
    tasks._sync_config()


_register_builtin_tasks()
