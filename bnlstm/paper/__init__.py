"""The paper's experiments, as functions that return plain dicts of numbers and numpy arrays.

Cooijmans et al., "Recurrent Batch Normalization" (ICLR 2017). Each function states
the claim it checks, takes a ``quick`` flag (tiny sizes, for CI and the notebooks'
quick mode) and defaults sized for a 2-core CPU. No plotting here: the notebooks
(``notebooks/0*.ipynb``) plot the results with HoloViews; the command line runs
them with ``python -m bnlstm paper NAME [--quick] [--out FILE.json]``.

========================  ==========================================================
function                  the paper
========================  ==========================================================
:func:`tanh_derivative`   Fig. 1b: E[tanh'(x)], x ~ N(0, sigma^2), and its IQR
:func:`gradient_flow`     Fig. 1a: ||dLoss/dh_t|| against t for gamma in 0.1..1.0
:func:`gamma_sweep`       Fig. 6: training curves for gamma in {0.1, 0.3, 0.5, 0.7, 1}
:func:`stats_ablation`    Fig. 5 (per-step population statistics) and the number the
                          paper lacks: per-step vs shared statistics, same weights
:func:`compare_models`    Fig. 2: LSTM vs BN on input only vs BN-LSTM, several seeds
:func:`compare_text`      Table 2: LSTM vs BN-LSTM on characters, bits per character
:func:`length_generalization`  Fig. 3b: train on 100 characters, test on up to 1000
:func:`text_transient`    Fig. 5 on characters: the per-step statistics' transient
:func:`distractor_memory` not in the paper: a digit remembered across a noise suffix
                          longer than in training (MNIST), T_max rule vs batch statistics
========================  ==========================================================

The MNIST functions (:mod:`bnlstm.paper.mnist`) accept ``data`` (a loaded
:class:`bnlstm.tasks.mnist.data.MNIST`, to share one load between calls) or ``data_dir`` (else
``$BNLSTM_MNIST_DIR``, then the cache, then the bundled sample); the text ones
(:mod:`bnlstm.paper.text`) a loaded :class:`bnlstm.tasks.text.data.Text`, ``data_dir``,
``text_file`` or ``source="ptb-heldout"``. The result's ``data_source`` says which.
The command line is :mod:`bnlstm.paper.cli`.
"""
from .cli import EXPERIMENTS, add_cli, cli_main  # noqa: F401
from .common import _config, _train, difference, machine, to_jsonable, verdict  # noqa: F401
from .memory import _SuffixBatches, distractor_memory  # noqa: F401
from .mnist import (GRADIENT_MODELS, TWO_POINT_GAIN, _shared_twin,  # noqa: F401
                    compare_models, gamma_sweep, gradient_flow,
                    stats_ablation, tanh_derivative)
from .text import (PAPER_FIG3B, PAPER_TABLE2, compare_text, length_generalization,  # noqa: F401
                   ptb_heldout, text_transient)

__all__ = ["tanh_derivative", "gradient_flow", "gamma_sweep", "stats_ablation", "compare_models",
           "compare_text", "length_generalization", "distractor_memory", "GRADIENT_MODELS",
           "TWO_POINT_GAIN", "PAPER_FIG3B", "PAPER_TABLE2", "EXPERIMENTS", "to_jsonable",
           "machine", "ptb_heldout", "verdict", "difference", "text_transient"]
