"""What every task's experiment shares: the device, the optimizer, the recurrent core, and
:class:`SequenceExperiment`, the base that does a training step, resuming and releasing.

The contract an experiment keeps with the :class:`~bnlstm.training.trainer.Trainer` is written
down once, as :class:`bnlstm.tasks.Experiment`; a task's experiment subclasses
:class:`SequenceExperiment` and supplies its data, its model around the core and its loss
(``bnlstm/tasks/mnist/``, ``bnlstm/tasks/text/``). This module knows no task.
"""
from __future__ import annotations

import copy
import math
import threading
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn import BNLSTM, BNTanhRNN, Trace, set_noise_generator
from ..nn.probes import probe_summary
from . import ACCURACY, Metric

_SEEDED = threading.Lock()    # torch.manual_seed + building a model, one run at a time


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if present, else MPS, else the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for, but this PyTorch has no MPS device")
    return torch.device(name)


class SequenceClassifier(nn.Module):
    """A (BN-)LSTM read by a linear softmax layer on its last hidden state.

    Shape: ``x`` (B, T, F) -> logits (B, n_classes).
    """

    def __init__(self, rnn: nn.Module, n_classes: int = 10):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, n_classes)

    def forward(self, x: Tensor, trace: Optional[Trace] = None) -> Tensor:
        out, hidden = self.rnn(x, trace=trace)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden   # (L, B, H)
        return self.head(h_n[-1])


def build_rnn(config, seq_len: int, input_size: int) -> nn.Module:
    """The recurrent core ``config.model`` names (batch first), with T_max = ``seq_len``."""
    norm = config.norm
    learned = getattr(config, "h0", "zero") == "learned"
    if config.model == "bn-tanh-rnn":
        if learned:
            raise ValueError("h0 'learned' is for the LSTM models; the BN tanh-RNN of "
                             "Figure 1a starts from zeros (choose h0 'zero')")
        return BNTanhRNN(input_size, config.hidden, batch_first=True, norm=norm, init=config.init,
                         stats=config.stats, gamma_init=config.gamma_init, max_length=seq_len,
                         momentum=config.momentum, h0_noise=config.h0_noise)
    return BNLSTM(input_size, config.hidden, num_layers=config.num_layers, batch_first=True,
                  norm=norm, stats=config.stats, gamma_init=config.gamma_init, max_length=seq_len,
                  momentum=config.momentum, init=config.init, forget_bias=config.forget_bias,
                  h0_noise=config.h0_noise if norm != "none" else 0.0, learn_h0=learned)


def init_head(head: nn.Linear, config) -> nn.Linear:
    """The output layer W_y as ``config.head_init`` says: ``pytorch`` leaves ``nn.Linear``'s
    uniform init; ``orthogonal`` (the authors') makes W_y orthogonal and its bias 0."""
    if getattr(config, "head_init", "pytorch") == "orthogonal":
        with torch.no_grad():
            nn.init.orthogonal_(head.weight)
            head.bias.zero_()
    return head


def build_model(config, seq_len: int, input_size: int) -> SequenceClassifier:
    """A classifier of whole sequences around :func:`build_rnn` (the MNIST tasks' model)."""
    model = SequenceClassifier(build_rnn(config, seq_len, input_size))
    init_head(model.head, config)
    return model


def make_optimizer(config, params) -> torch.optim.Optimizer:
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, alpha=config.rmsprop_alpha)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9)


class SequenceExperiment:
    """The shared part of a task's experiment (see :class:`bnlstm.tasks.Experiment`).

    A subclass supplies:

    - :meth:`load_data` -> the data set (an object with ``source``), unless one is given;
    - :meth:`prepare(data) <prepare>` -> info: sets ``self.train_batches`` (an endless,
      seeded iterable: each ``iter`` starts the same stream again; with ``iterate(start)``
      a resumed run skips the batches drawn before without building them) and whatever
      evaluation needs; ``self.seq_len`` if the task has one;
    - :meth:`build_model` -> the ``nn.Module`` (its recurrent core as ``.rnn``);
    - :meth:`train_loss(batch, trace) <train_loss>` -> (loss tensor, {metric key: value});
    - :meth:`evaluate` and, to re-estimate statistics, :meth:`stat_batches`.

    ``data``: the loaded data set, or a function that returns it (called in
    :meth:`setup`, on the trainer's thread: the dashboard passes one that shares the
    server's copy), or ``None``: :meth:`load_data` from ``data_dir`` / ``download``.

    This class does the rest: the device, seeding, the h_0 noise generator, the optimizer,
    the update (live learning rate, clipping, no NaN step, probes), finalizing, the
    resumable state and freeing the fast path's buffers.
    """

    metrics: Tuple[Metric, ...] = (ACCURACY,)

    def __init__(self, config, data=None, data_dir=None, download: bool = False, **options):
        self.config = config
        self._data = data
        self._data_dir = data_dir
        self._download = download
        self._options = options
        self.model: Optional[nn.Module] = None

    # ------------------------------------------------------------ subclass hooks
    def load_data(self):
        raise NotImplementedError

    def prepare(self, data) -> Dict[str, Any]:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_loss(self, batch, trace: Optional[Trace]) -> Tuple[Tensor, Dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, split: str = "val") -> Dict[str, Any]:
        raise NotImplementedError

    def stat_batches(self, n: int) -> Iterator[Any]:
        """``n`` training inputs to re-estimate population statistics over (the model's
        input); ``n == -1``: one pass over the training split, as the authors' evaluation."""
        raise NotImplementedError

    def checkpoint_meta(self) -> Dict[str, Any]:
        return {}

    # ------------------------------------------------------------------- set-up
    def setup(self) -> Dict[str, Any]:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        data = self._data() if callable(self._data) else self._data   # loaded here, if lazy
        if data is None:
            data = self.load_data()
        info = self.prepare(data)
        self._train_iter = iter(self.train_batches)
        self._drawn = 0                        # training batches drawn so far (the data position)
        with _SEEDED:        # runs set up side by side in threads: each builds from its own seed
            torch.manual_seed(cfg.seed)
            self.model = self.build_model().to(self.device)
        # the h_0 noise from the run's own generator, not torch's global one (threads share that)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        set_noise_generator(self.model, self.noise_generator)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.data = data
        self.data_source = data.source
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"device": str(self.device), "data_source": data.source, "n_params": n_params,
                "task": cfg.task, "model": cfg.model, "metrics": [m.key for m in self.metrics],
                "label": cfg.summary(), **info}

    # ----------------------------------------------------------------- training
    def train_step(self, probe: bool = False) -> Dict[str, Any]:
        cfg, model, opt = self.config, self.model, self.optimizer
        for group in opt.param_groups:         # lr applies live
            group["lr"] = cfg.lr
        batch = next(self._train_iter)         # endless: a new shuffled pass after each epoch
        self._drawn += 1
        model.train()
        trace = Trace() if probe else None
        loss, metrics = self.train_loss(batch, trace)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        max_norm = cfg.clip if cfg.clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out = {"loss": loss.item(), **metrics, "grad_norm": float(grad_norm)}
        if math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"]):
            opt.step()                          # a NaN never reaches the weights
        if trace is not None:
            out["probe"] = probe_summary(trace, model.rnn)
        return out

    def finalize(self) -> bool:
        """Before the test: re-estimate population statistics over ``config.reestimate``
        training batches if the config asks (True when it did)."""
        if not (self.config.reestimate and self.config.norm != "none"):
            return False
        from ..nn import reestimate_stats
        reestimate_stats(self.model, self.stat_batches(self.config.reestimate))
        return True

    def release(self) -> None:
        """The run has ended: free what the model keeps between training steps (the
        fast path's buffers, ~470 MB at T=784); evaluation and export still work."""
        if getattr(self, "model", None) is not None:
            from ..nn.fused import release_workspaces
            release_workspaces(self.model)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, sd: Dict[str, Tensor]) -> None:
        self.model.load_state_dict(sd)

    def resume_state(self) -> Dict[str, Any]:
        """Everything a run needs to go on exactly where it is (after :meth:`setup`): the
        weights and running statistics, the optimizer's state, the data position and the
        random number generators (h_0 noise, dropout). Tensors and plain values only, so
        that it saves and loads with ``weights_only=True``."""
        out = {"model": self.state_dict(),
               "optimizer": copy.deepcopy(self.optimizer.state_dict()),   # a copy, not live tensors
               "batches_drawn": self._drawn, "rng": torch.get_rng_state(),
               "noise_rng": self.noise_generator.get_state()}
        if self.device.type == "cuda":
            out["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return out

    def load_resume_state(self, state: Dict[str, Any]) -> None:
        """Go on from :meth:`resume_state` (call after :meth:`setup`, before training)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))   # never aliased
        self._drawn = int(state["batches_drawn"])
        if hasattr(self.train_batches, "iterate"):     # skips without building the batches
            self._train_iter = self.train_batches.iterate(start=self._drawn)
        else:                                          # any re-iterable, seeded stream
            self._train_iter = iter(self.train_batches)
            for _ in range(self._drawn):
                next(self._train_iter)
        torch.set_rng_state(state["rng"])
        self.noise_generator.set_state(state["noise_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

