"""The model layer: torch modules and what they record, nothing else of bnlstm.

- :class:`SequenceBatchNorm` (``batchnorm.py``): batch normalization with statistics per
  time step;
- :class:`BNLSTM`, :class:`BNTanhRNN` and their base :class:`RecurrentBase` (``rnn.py``);
- :class:`Trace` (``trace.py``) and the probes that summarise it (``probes.py``);
- :func:`batch_statistics`, :func:`reestimate_stats`, :func:`saved_statistics`
  (``stats.py``): the one way to keep, reset, restore and re-estimate BN statistics;
- ``fused/``: the fast path, tested against the reference loop in ``rnn.py``;
- ``options.py``: the accepted choices as plain tuples (no torch).

Names load on first use (PEP 562), so that ``bnlstm.nn.options`` imports without torch.
"""
from __future__ import annotations

from bnlstm._lazy import lazy_names

_EXPORTS = {
    "SequenceBatchNorm": "batchnorm",
    "RecurrentBase": "rnn", "BNLSTM": "rnn", "BNTanhRNN": "rnn", "LayerParams": "rnn",
    "set_noise_generator": "rnn",
    "Trace": "trace",
    "batch_statistics": "stats", "reestimate_stats": "stats", "saved_statistics": "stats",
    "NORMS": "options", "STATS": "options", "INITS": "options", "TANH_NORMS": "options",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
