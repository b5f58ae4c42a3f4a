"""One page's data store (as Panel's "structure with a data store" tutorial has it): the
settings table, the runs, the slots they are drawn in, and the run in focus. The sections
(``app/sections/``) read it and own their figures; the dashboard changes it."""
from __future__ import annotations

from typing import Dict, List, Optional

import param

from bnlstm import TrainConfig

from .palette import PALETTE

N_SLOTS = 6      # runs shown at once: every per-run plot has one fixed layer per slot


class Slot:
    """A run's place in every per-run plot (its colour, its layer in each figure) and what
    the page has drawn of it: the first probe (step 1, the model at initialization) and
    the newest. A new run takes a free slot; the sections clear their layers for it."""

    def __init__(self, index: int):
        self.index = index
        self.color = PALETTE[index % len(PALETTE)]
        self.run = None
        self.clear()

    def clear(self) -> None:
        self.latest_probe: Optional[dict] = None
        self.first_probe: Optional[dict] = None
        self.probe_pending = False       # a probe came that the probe views have not drawn
        self.probe_shown_at = 0.0
        self.sat_pending: list = []      # (step, g, cell) rows waiting for the next probe draw
        self.fig1a_shown = None          # (probe step, which probe, t) in section 3 now
        self.dirty = False               # it has drawn something since it was cleared

    def probe_at(self, when: str) -> Optional[dict]:
        """``"first"``: the first probe (step 1, at initialization); ``"latest"``: the newest."""
        return self.first_probe if when == "first" else self.latest_probe


class SessionState(param.Parameterized):
    """One browser session's state; the sections watch ``runs``, ``focus`` and ``smoothing``."""

    smoothing = param.Number(default=0.9, bounds=(0.0, 0.99), doc=(
        "Exponential smoothing of the bold loss curve (0: none); applies live."))
    runs = param.List(default=[], doc=(
        "The page's runs (DashboardRun), oldest first; replaced, never changed in place, "
        "so that watchers hear of every change."))
    focus = param.Integer(default=None, allow_None=True, doc=(
        "The id of the run shown in the statistics and text sections (None: the newest)."))

    def __init__(self, config: TrainConfig, **params):
        super().__init__(**params)
        self.config = config                       # the settings table (the sidebar's)
        self.slots: List[Slot] = [Slot(i) for i in range(N_SLOTS)]
        self.slot_of: Dict[int, Slot] = {}         # run id -> its slot

    def run(self, rid) -> Optional[object]:
        return next((r for r in self.runs if r.id == rid), None)

    def focused(self) -> Optional[Slot]:
        """The slot of the run in focus."""
        return self.slot_of.get(self.focus)

    def free_slot(self) -> Optional[Slot]:
        """An empty slot, else the slot of the oldest run that has ended (which leaves)."""
        for s in self.slots:
            if s.run is None:
                return s
        for old in self.runs:
            if not old.live:
                return self.remove(old)
        return None

    def add(self, run, slot: Slot) -> None:
        self.slot_of[run.id] = slot
        self.runs = [*self.runs, run]

    def remove(self, run) -> Optional[Slot]:
        """The run leaves (disposed); returns the slot it had."""
        self.runs = [r for r in self.runs if r is not run]
        run.dispose()
        return self.slot_of.pop(run.id, None)

    def clear(self) -> None:
        """Every run leaves (disposed)."""
        for r in self.runs:
            r.dispose()
        self.runs, self.slot_of = [], {}
