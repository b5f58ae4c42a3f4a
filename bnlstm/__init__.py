"""bnlstm: Recurrent Batch Normalization (Cooijmans et al., ICLR 2017) in PyTorch.

The core never imports Panel: the dashboard (``app/``) and the notebooks are thin
layers over :class:`Trainer` and :class:`TrainConfig`.
"""
from .config import TrainConfig
from .model import BNLSTM, BNTanhRNN, SequenceBatchNorm, Trace, reestimate_stats
from .records import CheckpointError, RunRecorder, load_checkpoint
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = ["BNLSTM", "BNTanhRNN", "SequenceBatchNorm", "Trace", "reestimate_stats", "TrainConfig", "Trainer",
           "RunRecorder", "load_checkpoint", "CheckpointError", "__version__"]
