"""The Sweeps section: the sweeps in the server's sweep folder (``app/sweeps.py`` reads them)."""
from __future__ import annotations

from ..sweeps import SweepBrowser
from . import Section


class Sweeps(Section):
    title = "Sweeps (many seeds, run with python -m bnlstm sweep)"
    point_at = ("The sweeps in the server's sweep folder: each group's validation curve "
                "(mean over seeds, band: one standard deviation) and every run's result; "
                "a running sweep fills in as its runs progress.")

    def __init__(self, **params):
        super().__init__(**params)
        self.browser = SweepBrowser()

    def body(self) -> list:
        return [self.browser.view()]

    def dispose(self) -> None:
        self.browser.dispose()
