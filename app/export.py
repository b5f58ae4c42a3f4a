"""The Export section's part of a page: a run's metrics (CSV) and record (zip), named
after the run. A mixin of :class:`~bnlstm_app.dashboard.Dashboard` (its ``runs`` and
export widgets)."""
from __future__ import annotations

import io
from typing import Optional

from .runs import DashboardRun


class Exports:
    def _on_export_run(self, *events) -> None:
        run = self._run_by_id(self.w_export_run.value)
        if run is not None:
            stem = f"bnlstm-run{run.id}-{run.config.model}-{run.config.task}"
            self.d_csv.filename = stem + "-metrics.csv"
            self.d_zip.filename = stem + ".zip"

    def _run_by_id(self, rid) -> Optional[DashboardRun]:
        return next((r for r in self.runs if r.id == rid), None)

    def _csv_bytes(self):
        run = self._run_by_id(self.w_export_run.value)
        return io.BytesIO(run.metrics_csv() if run is not None else b"step,kind,loss,acc\n")

    def _zip_bytes(self):
        run = self._run_by_id(self.w_export_run.value)
        return io.BytesIO(run.record_zip() if run is not None else b"")
