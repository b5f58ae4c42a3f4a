"""The Export section: a run's metrics (CSV) and record (zip), named after the run, and
every run's metrics in one CSV."""
from __future__ import annotations

import csv
import io

import panel as pn
import param

from . import Section, run_options


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


class Export(Section):
    title = "Export"
    point_at = ("The metrics of a run as CSV, its run record (config and metrics; once it has "
                "ended, its summary and best checkpoint too) as a zip, and every run's metrics "
                "in one CSV (a column says which run).")

    def __init__(self, **params):
        super().__init__(**params)
        self.w_run = pn.widgets.Select(name="Run to export", options={}, width=330,
                                       css_classes=["w-export-run"])
        self.d_csv = pn.widgets.FileDownload(callback=self._csv_bytes, filename="metrics.csv",
                                             label="Metrics (CSV)", button_type="primary",
                                             css_classes=["dl-csv"], width=170, embed=False)
        self.d_zip = pn.widgets.FileDownload(callback=self._zip_bytes, filename="run.zip",
                                             label="Run record (zip)", button_type="primary",
                                             css_classes=["dl-zip"], width=170, embed=False)
        self.d_all = pn.widgets.FileDownload(callback=self.all_csv_bytes, filename="bnlstm-runs.csv",
                                             label="All runs (CSV)", button_type="primary",
                                             css_classes=["dl-all"], width=170, embed=False)
        self.w_run.param.watch(self._name_files, "value")

    def body(self) -> list:
        return [pn.Row(self.w_run, self.d_csv, self.d_zip, self.d_all)]

    @param.depends("state.runs", watch=True)
    def _follow_runs(self) -> None:
        runs = self.state.runs
        with pn.io.hold():
            self.w_run.options = run_options(runs)
            if runs:
                self.w_run.value = runs[-1].id
                self._name_files()

    def _name_files(self, *events) -> None:
        run = self.state.run(self.w_run.value)
        if run is not None:
            stem = f"bnlstm-run{run.id}-{run.config.model}-{run.config.task}"
            self.d_csv.filename = stem + "-metrics.csv"
            self.d_zip.filename = stem + ".zip"

    def _csv_bytes(self):
        run = self.state.run(self.w_run.value)
        return io.BytesIO(run.metrics_csv() if run is not None else b"step,kind,loss,acc\n")

    def all_csv_bytes(self):
        return io.BytesIO(all_runs_csv(self.state.runs))

    def _zip_bytes(self):
        run = self.state.run(self.w_run.value)
        return io.BytesIO(run.record_zip() if run is not None else b"")
