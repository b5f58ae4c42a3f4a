"""The Export section's part of a page: a run's metrics (CSV) and record (zip), named
after the run. A mixin of :class:`~bnlstm_app.dashboard.Dashboard` (its ``runs`` and
export widgets)."""
from __future__ import annotations

import csv
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

    def _all_csv_bytes(self):
        return io.BytesIO(all_runs_csv(self.runs))

    def _zip_bytes(self):
        run = self._run_by_id(self.w_export_run.value)
        return io.BytesIO(run.record_zip() if run is not None else b"")


def all_runs_csv(runs) -> bytes:
    """Every run's metrics in one table: ``run,label,task,model,`` then each run's own
    columns (the union, in order of first appearance; a column a run lacks is empty)."""
    tables, columns = [], []
    for run in runs:
        rows = list(csv.reader(io.StringIO(run.metrics_csv().decode())))
        if not rows:
            continue
        tables.append((run, rows[0], rows[1:]))
        columns += [c for c in rows[0] if c not in columns]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["run", "label", "task", "model", *columns])
    for run, header, rows in tables:
        for r in rows:
            row = dict(zip(header, r))
            w.writerow([run.id, run.label, run.config.task, run.config.model,
                        *(row.get(c, "") for c in columns)])
    return out.getvalue().encode()
