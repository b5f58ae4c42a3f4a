"""The character-level language model and its experiment: :class:`CharLM`, sampling and
per-character scoring (the dashboard's text view), and :class:`TextExperiment`."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import Trace, batch_statistics
from .. import BITS_PER_CHAR
from ..sequence import SequenceExperiment, build_rnn, init_head
from . import NEXT_CHAR, _check_model
from . import data as textdata

LN2 = math.log(2.0)
SAMPLE_CHARS = 240            # characters a probe generates
EXCERPT_CHARS = 400           # validation characters a probe scores one by one
SHOW_UNITS = 16               # units whose activations a probe reports over the excerpt


class CharLM(nn.Module):
    """One-hot characters -> recurrent core -> a softmax over the vocabulary at every step.

    Shape: ``ids`` (B, T) int64 -> logits (B, T, V); ``forward`` also returns the final
    hidden state so that a sequence can go on (``hx``, ``t0``: see ``BNLSTM.forward``).
    """

    def __init__(self, rnn: nn.Module, vocab_size: int):
        super().__init__()
        self.rnn = rnn
        self.vocab_size = int(vocab_size)
        self.head = nn.Linear(rnn.hidden_size, self.vocab_size)

    def forward(self, ids: Tensor, hx=None, t0: int = 0, trace: Optional[Trace] = None,
                return_hidden: bool = False):
        x = F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)    # (B, T, V)
        out, hidden = self.rnn(x, hx, trace=trace, t0=t0)                   # (B, T, H)
        logits = self.head(out)
        if return_hidden:
            return logits, hidden, out
        return logits


def build_char_model(config, vocab_size: int) -> CharLM:
    _check_model(config)
    model = CharLM(build_rnn(config, config.seq_len, vocab_size), vocab_size)
    init_head(model.head, config)
    return model


@torch.no_grad()
def generate(model: CharLM, text: textdata.Text, prime: str = "the ", n: int = SAMPLE_CHARS,
             temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> str:
    """``n`` characters the model writes after ``prime``, one at a time, in eval mode
    (population statistics of each step; past T_max those of the last step). ``temperature``
    divides the logits (toward 0: the likeliest character; 1: the model's distribution)."""
    was = model.training
    model.eval()
    device = model.head.weight.device
    try:
        prime = prime or text.decode([0])
        ids = torch.as_tensor(text.encode(prime), device=device)[None]       # (1, P)
        logits, hidden, _ = model(ids, return_hidden=True)
        t, out = ids.shape[1], []
        for _ in range(n):
            last = logits[0, -1].double()
            if temperature <= 1e-3:
                nxt = int(last.argmax())
            else:
                p = torch.softmax(last / temperature, 0)
                nxt = int(torch.multinomial(p.cpu(), 1, generator=generator))
            out.append(nxt)
            logits, hidden, _ = model(torch.tensor([[nxt]], device=device), hidden, t0=t,
                                      return_hidden=True)
            t += 1
        return prime + text.decode(out)
    finally:
        model.train(was)


@torch.no_grad()
def score_chars(model: CharLM, text: textdata.Text, excerpt: str,
                units: int = SHOW_UNITS) -> Dict[str, Any]:
    """Each character of ``excerpt`` with the bits the model (eval mode) paid to predict it
    from the ones before, and ``units`` hidden units' activations ``h`` at that step.
    ``chars`` (N,), ``bits`` (N,) (NaN for the first, which has no context), ``h`` (N, U)."""
    was = model.training
    model.eval()
    try:
        device = model.head.weight.device
        ids = torch.as_tensor(text.encode(excerpt), device=device)[None]     # (1, N)
        logits, _, out = model(ids, return_hidden=True)
        logp = torch.log_softmax(logits[0, :-1].double(), -1)                # predicts 1..N-1
        bits = -logp.gather(1, ids[0, 1:, None])[:, 0] / LN2
        bits = torch.cat([bits.new_full((1,), float("nan")), bits]).cpu().numpy()
        h = out[0, :, :units].double().cpu().numpy()                          # h_t after char t
        # h of the step that read char t-1 is what predicted char t: shift to align with bits
        h_aligned = np.vstack([np.zeros((1, h.shape[1])), h[:-1]])
        return {"chars": list(excerpt), "bits": bits, "h": h_aligned}
    finally:
        model.train(was)


class TextExperiment(SequenceExperiment):
    """Character-level language modelling (the contract: :class:`bnlstm.tasks.Experiment`)."""

    metrics = (BITS_PER_CHAR, NEXT_CHAR)

    def load_data(self):
        return textdata.load_text(self._data_dir, download=self._download, **self._options)

    def prepare(self, data: textdata.Text) -> Dict[str, Any]:
        cfg = self.config
        self.text = data
        self.seq_len = cfg.seq_len
        self.ids = {"train": data.encode(data.train), "val": data.encode(data.valid),
                    "test": data.encode(data.test)}
        self.train_batches = textdata.TextBatches(self.ids["train"], cfg.seq_len, cfg.batch_size,
                                                  device=self.device, seed=cfg.seed,
                                                  shuffle=True, endless=True,
                                                  stride=self._stride(cfg.seq_len))
        self._eval: Dict[Any, textdata.TextBatches] = {}
        self.excerpt = data.valid[:EXCERPT_CHARS]
        self.sample_generator = torch.Generator().manual_seed(cfg.seed + 7)
        return {"seq_len": cfg.seq_len, "vocab_size": len(data.vocab), "data_kind": data.kind,
                "data_is_full": data.is_paper, "n_train": len(data.train),
                "n_val": len(data.valid), "n_test": len(data.test),
                "unigram_bits": data.unigram_bits("valid")}

    def build_model(self):
        return build_char_model(self.config, len(self.text.vocab))

    def checkpoint_meta(self) -> Dict[str, Any]:
        return {"vocab": self.text.vocab, "data_source": self.text.source}

    def train_loss(self, batch, trace: Optional[Trace]) -> Tuple[Tensor, Dict[str, float]]:
        x, y = batch                                           # (B, T) each
        logits = self.model(x, trace=trace)                    # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        acc = float((logits.argmax(-1) == y).float().mean())
        return loss, {"bpc": loss.item() / LN2, "acc": acc}

    def _stride(self, length: int) -> int:
        """Windows of ``length + 1`` characters, one every ``length`` (``windows`` overlap)
        or every ``length + 1`` (disjoint, the authors')."""
        return length + 1 if getattr(self.config, "windows", "overlap") == "disjoint" else length

    def eval_batches(self, split: str, length: Optional[int] = None,
                     batch_size: int = 100) -> textdata.TextBatches:
        """Windows of ``length`` predictions (default ``seq_len``; cut as ``windows`` says)
        in order, batches of 100 (the authors' evaluation); ``val_limit`` keeps that many
        validation windows, ``train_score`` that many training windows."""
        length = int(length or self.config.seq_len)
        key = (split, length, batch_size)
        if key not in self._eval:
            limit = (self.config.val_limit if split == "val" else
                     self.config.train_score if split == "train" else 0) or None
            self._eval[key] = textdata.TextBatches(self.ids[split], length, batch_size,
                                                   device=self.device, shuffle=False, limit=limit,
                                                   stride=self._stride(length))
        return self._eval[key]

    @torch.no_grad()
    def evaluate(self, split: str = "val", length: Optional[int] = None,
                 batch_stats: bool = False, batch_size: int = 100, full_batches: bool = False,
                 per_position: bool = False) -> Dict[str, Any]:
        """``loss`` (nats), ``bpc`` and ``acc`` over ``split`` cut into windows of ``length``.
        ``batch_stats``: normalize each batch with its own statistics (training mode,
        no running average updated) instead of the population statistics (also for the
        validation split at its own length when ``val_stats`` is "batch"). The test split
        at its own length, with ``text_test`` "whole", is :meth:`evaluate_whole`.
        ``full_batches``: score only batches of ``batch_size`` windows (a short last batch
        is left out). ``per_position``: also ``per_position_bpc`` (length,), the mean bits
        at each position of the windows."""
        if (split == "test" and length is None and not batch_stats
                and getattr(self.config, "text_test", "windows") == "whole"):
            return self.evaluate_whole("test")
        if split == "val" and length is None and self.config.val_stats == "batch":
            batch_stats = True               # the run validates as the authors' TrackTheBest
        model = self.model
        was = model.training
        if not batch_stats:
            model.eval()
        total, correct, loss_sum, windows = 0, 0, 0.0, 0
        at = None                            # (T,) summed loss at each position
        with batch_statistics(model) if batch_stats else contextlib.nullcontext():
            for x, y in self.eval_batches(split, length, batch_size):
                if (batch_stats and x.shape[0] < 2) or (full_batches and x.shape[0] < batch_size):
                    continue                 # batch statistics need two sequences
                logits = model(x)
                nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")   # (B, T)
                loss_sum += float(nll.sum())
                if per_position:
                    s = nll.double().sum(0)
                    at = s if at is None else at + s
                correct += int((logits.argmax(-1) == y).sum())
                total += y.numel()
                windows += y.shape[0]
        model.train(was)
        loss = loss_sum / max(total, 1)
        out = {"loss": loss, "bpc": loss / LN2, "acc": correct / max(total, 1), "n": total}
        if per_position:
            out["per_position_bpc"] = ((at / max(windows, 1) / LN2).cpu().numpy()
                                       if at is not None else np.zeros(0))
        return out

    @torch.no_grad()
    def evaluate_whole(self, split: str = "test", chunk: int = 10_000) -> Dict[str, Any]:
        """The authors' ``proper_test`` (``penntreebank_evaluate.py``): the whole of ``split``
        as ONE sequence of batch 1, each character predicted from all before it, with the
        population statistics (past T_max, those of T_max). Runs in pieces of ``chunk``
        characters that carry the state and the time index over (``hx``, ``t0``), so the
        result is the same for any ``chunk``. Returns ``loss``, ``bpc``, ``acc``, ``n``."""
        model = self.model
        was = model.training
        model.eval()
        ids = torch.as_tensor(self.ids[split], dtype=torch.long, device=self.device)
        x_all, y_all = ids[:-1], ids[1:]
        hx, loss_sum, correct = None, 0.0, 0
        for t in range(0, len(x_all), int(chunk)):
            x, y = x_all[t:t + chunk][None], y_all[t:t + chunk]
            logits, hx, _ = model(x, hx, t0=t, return_hidden=True)
            logits = logits[0]
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        model.train(was)
        n = int(len(y_all))
        loss = loss_sum / max(n, 1)
        return {"loss": loss, "bpc": loss / LN2, "acc": correct / max(n, 1), "n": n,
                "whole_sequence": True}

    def stat_batches(self, n: int) -> Iterator[Tensor]:
        """``n`` random training batches; ``n == -1``: one pass over the training text at
        offset 0, in order, in batches of 100 (the authors' ``penntreebank_evaluate.py``)."""
        if n == -1:
            return (x for x, _ in textdata.TextBatches(
                self.ids["train"], self.config.seq_len, 100, device=self.device,
                shuffle=False, stride=self._stride(self.config.seq_len)))
        batches = textdata.TextBatches(self.ids["train"], self.config.seq_len,
                                       self.config.batch_size, device=self.device,
                                       stride=self._stride(self.config.seq_len),
                                       seed=self.config.seed + 1, shuffle=True, endless=True)
        it = iter(batches)
        return (next(it)[0] for _ in range(n))

    def train_step(self, probe: bool = False) -> Dict[str, Any]:
        out = super().train_step(probe)
        if probe and "probe" in out:
            out["probe"]["text"] = self.text_probe()
        return out

    def text_probe(self) -> Dict[str, Any]:
        """A generated sample and the validation excerpt's per-character bits and units."""
        temp = float(getattr(self.config, "temperature", 1.0))
        sample = generate(self.model, self.text, prime=self.excerpt[:4] or "the ",
                          temperature=temp, generator=self.sample_generator)
        return {"sample": sample, "temperature": temp,
                **score_chars(self.model, self.text, self.excerpt)}
