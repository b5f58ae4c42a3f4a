"""Training one run: the settings table (``config.py``: :class:`TrainConfig`), the
:class:`Trainer` that drives a task's experiment and talks to the outside only through
records (``trainer.py``), and the run record on disk (``records.py``: ``config.json``,
``metrics.csv``, ``summary.json``; checkpoints in ``checkpoints.py``), and
``assemble.py``: :func:`assemble_run` puts one run together (config, data, trainer, run
folder, resume) for the command line, both run engines, sweeps and the paper's experiments.

Nothing here imports the model at module level: ``records.py`` and ``config.py`` load
without torch (the web process reads them).
"""
