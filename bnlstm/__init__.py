"""bnlstm: Recurrent Batch Normalization (Cooijmans et al., ICLR 2017) in PyTorch.

The core never imports Panel: the dashboard (``app/``) and the notebooks are thin
layers over :class:`Trainer` and :class:`TrainConfig`.
"""
from .model import BNLSTM, SequenceBatchNorm, Trace, reestimate_stats

__version__ = "0.1.0"

__all__ = ["BNLSTM", "SequenceBatchNorm", "Trace", "reestimate_stats", "__version__"]
