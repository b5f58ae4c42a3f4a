"""Character-level language modelling: the paper's Penn Treebank setting (Table 2, Fig. 3b).

As the authors' ``penntreebank.py``: the text is cut into sequences of ``seq_len``
characters (100), each character one-hot, a target at every step (the next character),
the vocabulary from the training text, Adam at 2e-3 on batches of 64 (the paper used
1000 units; the default here is CPU-sized, ``--hidden`` raises it), population
statistics with the T_max rule for longer sequences, re-estimated over training batches
before the test. The metric is bits per character: the mean cross-entropy / ln 2, on
validation and test with population statistics. Data: :mod:`bnlstm.tasks.text.data`; the model and experiment: ``experiment.py``.
This file imports no torch.

A probed update also reports ``probe["text"]``: a sample the model generates at the
config's ``temperature`` and, over a fixed excerpt of the validation text, each
character's loss (bits) and the hidden units' activations -- what the dashboard colours.
"""
from __future__ import annotations

from typing import Any, Dict

from .. import BITS_PER_CHAR, Metric, Task, register

NEXT_CHAR = Metric("acc", "next-character accuracy", higher_is_better=True)
PTB_FILE_NAMES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")   # data.PTB_FILES


def _check_model(config) -> None:
    if config.model == "bn-tanh-rnn":
        raise ValueError("the text task trains LSTMs (lstm, bnlstm-input, bnlstm); "
                         "bn-tanh-rnn is the paper's Figure 1a model on MNIST")


class TextTask(Task):
    """Character-level language modelling on Penn Treebank, a text file, or Python's docs."""

    name = "text"
    family = "text"
    label = "text (characters)"
    description = ("character-level language modelling: predict the next character "
                   "(the paper's Penn Treebank; bits per character)")
    metrics = (BITS_PER_CHAR, NEXT_CHAR)
    views = ("probes", "text")
    excludes = frozenset({"permutation"})      # permuted MNIST's
    data_options = ("text_file", "source", "text", "text_name")
    # the paper's recipe (Sec. 5.2 and penntreebank.py), CPU-sized: the paper had 1000 units
    defaults = {"optimizer": "adam", "lr": 2e-3, "batch_size": 64, "hidden": 256,
                "seq_len": 100, "h0_noise": 0.0, "momentum": 0.05, "steps": 2000,
                "eval_every": 100, "reestimate": 50}

    def check(self, config) -> None:
        super().check(config)
        _check_model(config)

    def data_problem(self, data_dir=None, text_file=None, source="auto", text=None, **options):
        """A Penn Treebank folder named (``data_dir``, else ``$BNLSTM_PTB_DIR``) that lacks
        a file: the text task's runs would fail there (no fallback for a folder asked for)."""
        import os
        from pathlib import Path
        if text_file or text is not None:
            return None
        folder = data_dir or os.environ.get("BNLSTM_PTB_DIR", "").strip()
        if source == "python-docs":
            return None
        if source == "text8":
            from ..downloads import cache_root
            d8 = data_dir or os.environ.get("BNLSTM_TEXT8_DIR", "").strip()
            d = Path(d8).expanduser() if d8 else cache_root() / "text8"
            return None if (d / "text8").is_file() else (
                f"text8 is not in {d} (no file text8): download it with python -m bnlstm "
                "train --task text --text-source text8 --download, or put it there.")
        if source == "ptb-heldout":
            d = _ptb_folder(folder)
            lacks = [n for n in ("ptb.char.valid.txt", "ptb.char.test.txt")
                     if not (d / n).is_file()]
            return (f"PTB's held-out split needs ptb.char.valid.txt and ptb.char.test.txt; "
                    f"the Penn Treebank folder lacks {', '.join(lacks)}.") if lacks else None
        if not folder:
            return None                  # the cache, else Python's own text: always works
        missing = [n for n in PTB_FILE_NAMES if not (Path(folder).expanduser() / n).is_file()]
        if not missing:
            return None
        where = "data directory" if data_dir else "BNLSTM_PTB_DIR"
        return (f"The Penn Treebank folder this server was given ({where}) lacks "
                f"{', '.join(missing)}, so a run of the text task would fail. What works: "
                "on the page, another choice in Text to train on (PTB's held-out split, or "
                "Python's documentation text) or a text of your own (Your own text, under the "
                "Task menu); on the command line --text-source ptb-heldout (ptb.char.valid.txt "
                "trains, ptb.char.test.txt tests) or --text-file; or put the missing file "
                "there (python -m bnlstm train --task text --download fetches all three), or "
                "unset BNLSTM_PTB_DIR to train on the Python documentation text.")

    def text_choices(self, data_dir=None):
        """The texts this server's runs can train on, for a page's menu (nothing is read
        or downloaded): ``[(label, source)]``, the one that works first, and a note (or
        ""). ``auto`` (Penn Treebank) when its folder is complete, PTB's held-out split
        when its validation and test files are there, Python's documentation always."""
        import os
        folder = data_dir or os.environ.get("BNLSTM_PTB_DIR", "").strip()
        d = _ptb_folder(folder)
        full = all((d / n).is_file() for n in PTB_FILE_NAMES)
        choices, note = [], ""
        if full:
            choices.append(("Penn Treebank (the paper's text)", "auto"))
        if self.data_problem(data_dir, source="ptb-heldout") is None:
            choices.append(("Penn Treebank, held-out split", "ptb-heldout"))
            if not full:
                note = ("This server's Penn Treebank folder has no training file "
                        "(ptb.char.train.txt), so its held-out split is chosen: the "
                        "validation file's first 95% trains, the test file tests.")
        if not choices:
            note = ("No Penn Treebank on this server" + (" (the folder it was given lacks "
                                                         "its files)" if folder else "") +
                    ": Python's documentation text is chosen, or give a text of your own.")
        choices.append(("Python's documentation (not the paper's)", "python-docs"))
        return choices, note

    def load_data(self, data_dir=None, download: bool = False, text_file=None,
                  source: str = "auto", text=None, text_name: str = "your text", **options):
        if options:
            raise ValueError(f"the text task takes no {', '.join(sorted(options))}")
        from .data import load_text
        return load_text(data_dir, download=download, text_file=text_file, source=source,
                         text=text, text_name=text_name)

    def experiment(self, config, data=None, data_dir=None, download: bool = False,
                   text_file=None, source: str = "auto", text=None,
                   text_name: str = "your text", **options):
        if options:
            raise ValueError(f"the text task takes no {', '.join(sorted(options))}")
        _check_model(config)                      # before any work
        opts = {"text_file": text_file} if text_file else {}
        if source != "auto":
            opts["source"] = source
        if text is not None:
            opts.update(text=text, text_name=text_name)
        from .experiment import TextExperiment
        return TextExperiment(config, data=data, data_dir=data_dir, download=download, **opts)

    def build_model(self, config, meta: Dict[str, Any]):
        vocab = meta.get("vocab")
        if not vocab:
            raise ValueError("a text checkpoint must hold its vocabulary (meta['vocab'])")
        from .experiment import build_char_model
        return build_char_model(config, len(vocab))


register(TextTask())


def _ptb_folder(folder: str):
    """The Penn Treebank folder a run would read: ``folder`` (a data directory or
    ``$BNLSTM_PTB_DIR``) when given, else the cache's (no torch, nothing read)."""
    from pathlib import Path

    from ..downloads import cache_root
    return Path(folder).expanduser() if folder else cache_root() / "ptb"
