"""Sequential MNIST with an LSTM or BN-LSTM: the experiment the :class:`~bnlstm.trainer.Trainer` runs.

This module knows the model and the data; the trainer knows neither. It also
holds the probes: what a traced training step measures inside the LSTM.
"""
from __future__ import annotations

import copy
import math
import threading
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from .config import TrainConfig
from .model import BNLSTM, BNTanhRNN, Trace, set_noise_generator

_SEEDED = threading.Lock()    # torch.manual_seed + building a model, one run at a time

# A tanh unit counts as saturated when it passes less than a tenth of its gradient:
# tanh'(x) = 1 - tanh(x)^2 < 0.1, i.e. |x| > atanh(sqrt(0.9)) ~= 1.818.
SATURATION_DERIVATIVE = 0.1
SATURATION_X = math.atanh(math.sqrt(1.0 - SATURATION_DERIVATIVE))
HIST_EDGES = np.linspace(-5.0, 5.0, 41)      # histogram bins of the tanh inputs
UNIT_EDGES = np.linspace(-1.0, 1.0, 41)      # histogram bins of the tanh outputs over the batch
UNIT_STEPS = 64                               # at most this many steps carry that histogram
PROBE_UNITS = 8                               # units per term sent in probe records (Fig. 5 shows 30)


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


def build_model(config: TrainConfig, seq_len: int, input_size: int) -> SequenceClassifier:
    norm = config.norm
    if config.model == "bn-tanh-rnn":
        return SequenceClassifier(BNTanhRNN(
            input_size, config.hidden, batch_first=True, norm=norm, init=config.init,
            stats=config.stats, gamma_init=config.gamma_init, max_length=seq_len,
            momentum=config.momentum, h0_noise=config.h0_noise))
    rnn = BNLSTM(input_size, config.hidden, num_layers=config.num_layers, batch_first=True,
                 norm=norm, stats=config.stats, gamma_init=config.gamma_init, max_length=seq_len,
                 momentum=config.momentum, init=config.init, forget_bias=config.forget_bias,
                 h0_noise=config.h0_noise if norm != "none" else 0.0)
    return SequenceClassifier(rnn)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9)


def probe_summary(trace: Trace, rnn: BNLSTM, layer: int = -1) -> Dict[str, Any]:
    """Turn a filled :class:`Trace` (after backward) into a small record of numpy arrays.

    - ``stats[term]`` for term in ``wx``, ``wh``, ``c``: batch ``mean``/``var`` ``(T, K)``
      of K = PROBE_UNITS units (the g block's first units for the gate terms), their
      averages over all units ``mean_avg``/``var_avg`` ``(T,)``, and the population
      statistics ``pop_mean``/``pop_var`` ``(T, K)`` where that term is normalized.
    - ``hist[name]``: counts of the tanh inputs (``g``: the g gate, ``c_out``: the cell
      output) over ``HIST_EDGES``, as fractions; ``saturation[name]``: the fraction of
      saturated units (|x| > SATURATION_X); ``saturation_t[name]``: the same per step ``(T,)``.
    - ``units``: the distribution over the batch of the g gate's tanh output (for the tanh
      RNN: of ``h_t`` itself), pooled over units: ``steps`` (S,) (every step, or
      ``UNIT_STEPS`` of them spread evenly), ``edges`` ``UNIT_EDGES``, ``frac`` (S, 40)
      fractions; ``kurtosis`` (T,): its batch kurtosis averaged over units (3 for a
      Gaussian, 1 for two equal points; NaN where the batch has no spread). At gamma 1 in
      the BN tanh-RNN with identity W_h it falls to 1: the batch collapses onto two values.
    - ``grad_h``: ``(T,)`` the mean over the batch of each example's ``||dLoss/dh_t||``,
      as the authors plotted the paper's Figure 1a.
    """
    k = layer % len(trace.layers)
    rec = trace.layers[k]
    H = rnn.hidden_size
    K = min(PROBE_UNITS, H)
    is_lstm = isinstance(rnn, BNLSTM)
    g_units = slice(2 * H, 2 * H + K) if is_lstm else slice(0, K)
    bns = {"wx": getattr(rnn, f"bn_ih_l{k}", None), "wh": getattr(rnn, f"bn_hh_l{k}", None),
           "c": getattr(rnn, f"bn_c_l{k}", None)}
    T = rec["wh_mean"].shape[0]
    stats = {}
    terms = (("wx", g_units), ("wh", g_units)) + ((("c", slice(0, K)),) if is_lstm else ())
    for term, units in terms:
        m, v = rec[term + "_mean"], rec[term + "_var"]
        s = {"mean": m[:, units].cpu().numpy(), "var": v[:, units].cpu().numpy(),
             "mean_avg": m.mean(1).cpu().numpy(), "var_avg": v.mean(1).cpu().numpy()}
        bn = bns[term]
        if bn is not None:
            rows = torch.tensor([bn.row(t) for t in range(T)], device=bn.running_mean.device)
            s["pop_mean"] = bn.running_mean[rows][:, units].detach().cpu().numpy()
            s["pop_var"] = bn.running_var[rows][:, units].detach().cpu().numpy()
        stats[term] = s
    hist, sat, sat_t = {}, {}, {}
    for name, key in (("g", "g_pre"), ("c_out", "c_out_pre")):
        x = rec[key]
        if not isinstance(x, Tensor):
            continue
        x = x.float()
        counts = torch.histc(x.clamp(HIST_EDGES[0], HIST_EDGES[-1]), bins=len(HIST_EDGES) - 1,
                             min=float(HIST_EDGES[0]), max=float(HIST_EDGES[-1]))
        hist[name] = (counts / x.numel()).cpu().numpy()
        saturated = (x.abs() > SATURATION_X).float()
        sat[name] = float(saturated.mean())
        sat_t[name] = saturated.mean(dim=(1, 2)).cpu().numpy()
    out = {"t": np.arange(T), "stats": stats, "hist": hist, "hist_edges": HIST_EDGES,
           "saturation": sat, "saturation_t": sat_t}
    if isinstance(rec["g_pre"], Tensor):
        out["units"] = unit_distribution(rec["g_pre"])
    if rec["h"]:
        out["grad_h"] = trace.grad_norms(k, per_example=True).cpu().numpy()
    return out


def unit_distribution(pre: Tensor, steps=None) -> Dict[str, Any]:
    """The batch distribution of ``tanh(pre)``, ``pre`` (T, B, H): see :func:`probe_summary`.

    ``steps``: the (0-based) steps that get a histogram; default every step, or
    ``UNIT_STEPS`` of them spread evenly over a longer sequence.
    """
    y = torch.tanh(pre.double())                                   # (T, B, H)
    T = y.shape[0]
    if steps is None:
        steps = np.linspace(0, T - 1, min(T, UNIT_STEPS)).round()
    steps = np.unique(np.asarray(steps, dtype=int))
    sel = y[torch.as_tensor(steps, device=y.device)]
    n_bins = len(UNIT_EDGES) - 1
    frac = np.stack([torch.histc(s, bins=n_bins, min=-1.0, max=1.0).cpu().numpy() / s.numel()
                     for s in sel])
    dev = y - y.mean(1, keepdim=True)
    var = dev.pow(2).mean(1)                                       # (T, H)
    kurt = dev.pow(4).mean(1) / var.clamp_min(1e-30).pow(2)
    kurt = torch.where(var > 1e-12, kurt, torch.full_like(kurt, float("nan")))
    k_mean = torch.nanmean(kurt, dim=1).cpu().numpy()             # all-NaN rows stay NaN
    return {"steps": steps, "edges": UNIT_EDGES, "frac": frac, "kurtosis": k_mean}


class MNISTExperiment:
    """Sequential MNIST classification: builds data, model and optimizer from a config.

    The interface the trainer uses: ``setup() -> info``, ``train_step(probe) -> dict``,
    ``evaluate(split) -> dict``, ``state_dict()``/``load_state_dict()``,
    ``checkpoint() -> dict``, ``finalize()`` (before the test).
    """

    def __init__(self, config: TrainConfig, data: Optional[data_mod.MNIST] = None,
                 data_dir: Optional[str] = None, download: bool = False):
        self.config = config
        self._data = data
        self._data_dir = data_dir
        self._download = download
        self.model: Optional[SequenceClassifier] = None

    # ---------------------------------------------------------------- set-up
    def setup(self) -> Dict[str, Any]:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        data = self._data if self._data is not None else data_mod.load_mnist(
            self._data_dir, download=self._download)
        splits = data_mod.make_splits(data)
        self.seq_len, self.input_size = data_mod.TASKS[cfg.task]
        self.train_batches = data_mod.Batches(*splits["train"], task=cfg.task,
                                              batch_size=cfg.batch_size, device=self.device,
                                              seed=cfg.seed, shuffle=True, endless=True)
        self.splits = splits
        self._eval_batches: Dict[str, Any] = {}
        self._train_iter = iter(self.train_batches)
        self._drawn = 0                        # training batches drawn so far (the data position)
        with _SEEDED:        # runs set up side by side in threads: each builds from its own seed
            torch.manual_seed(cfg.seed)
            self.model = build_model(cfg, self.seq_len, self.input_size).to(self.device)
        # the h_0 noise from the run's own generator, not torch's global one (threads share that)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        set_noise_generator(self.model, self.noise_generator)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.data_source, self.data_is_full = data.source, data.is_full
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"device": str(self.device), "data_source": data.source, "data_is_full": data.is_full,
                "n_params": n_params, "task": cfg.task, "model": cfg.model, "seq_len": self.seq_len,
                "n_train": len(splits["train"][1]), "n_val": len(splits["val"][1]),
                "n_test": len(splits["test"][1]), "label": cfg.summary()}

    def _eval_batches_for(self, split: str):
        if split not in self._eval_batches:
            imgs, labels = self.splits[split]
            limit = self.config.val_limit if split == "val" and self.config.val_limit else None
            if limit:
                imgs, labels = imgs[:limit], labels[:limit]
            self._eval_batches[split] = data_mod.Batches(
                imgs, labels, task=self.config.task, batch_size=max(self.config.batch_size, 500),
                device=self.device, shuffle=False)
        return self._eval_batches[split]

    # ------------------------------------------------------------- training
    def train_step(self, probe: bool = False) -> Dict[str, Any]:
        cfg, model, opt = self.config, self.model, self.optimizer
        for group in opt.param_groups:         # lr applies live
            group["lr"] = cfg.lr
        x, y = next(self._train_iter)          # endless: a new shuffled pass after each epoch
        self._drawn += 1
        model.train()
        trace = Trace() if probe else None
        logits = model(x, trace=trace)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        max_norm = cfg.clip if cfg.clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out = {"loss": loss.item(), "acc": float((logits.argmax(1) == y).float().mean()),
               "grad_norm": float(grad_norm)}
        if math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"]):
            opt.step()                          # a NaN never reaches the weights
        if trace is not None:
            out["probe"] = probe_summary(trace, model.rnn)
        return out

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> Dict[str, Any]:
        model = self.model
        was = model.training
        model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in self._eval_batches_for(split):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        model.train(was)
        return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1), "n": total}

    def finalize(self) -> None:
        """Before the test: re-estimate population statistics if the config asks."""
        if self.config.reestimate and self.config.norm != "none":
            from .model import reestimate_stats
            batches = data_mod.Batches(*self.splits["train"], task=self.config.task,
                                       batch_size=self.config.batch_size, device=self.device,
                                       seed=self.config.seed + 1, shuffle=True)
            it = iter(batches)
            chosen = (next(it)[0] for _ in range(self.config.reestimate))
            reestimate_stats(self.model, chosen)

    def release(self) -> None:
        """The run has ended: free what the model keeps between training steps (the
        fast path's buffers, ~470 MB at T=784); evaluation and export still work."""
        if getattr(self, "model", None) is not None:
            from .fused import release_workspaces
            release_workspaces(self.model)

    # ---------------------------------------------------------- checkpoints
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
        self._train_iter = self.train_batches.iterate(start=self._drawn)
        torch.set_rng_state(state["rng"])
        self.noise_generator.set_state(state["noise_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def checkpoint(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        from .records import make_checkpoint
        return make_checkpoint(self.config, self.state_dict(), **(extra or {}))
