"""The dashboard's parts that need no browser: what a session may be shown of the server."""
import io
import json
import zipfile

from bnlstm.records import zip_run_dir
from bnlstm_app.runs import public_record, redact_paths


def test_redact_paths_keeps_the_last_part_only():
    assert redact_paths("MNIST (70,000 digits) from /srv/data/mnist") == \
        "MNIST (70,000 digits) from .../mnist"
    assert redact_paths("[full MNIST not in /home/ann/.cache/bnlstm/mnist; download it]") == \
        "[full MNIST not in .../mnist; download it]"
    assert redact_paths('File "/opt/venv/lib/bnlstm/trainer.py", line 3') == \
        'File ".../trainer.py", line 3'
    for kept in ("http://127.0.0.1:5006/app", "gamma 0.1/1.0, 1/2 of the runs", "docs/results.md"):
        assert redact_paths(kept) == kept


def test_records_reach_a_session_without_server_paths():
    rec = {"kind": "info", "data_source": "MNIST from /srv/mnist", "n_params": 3}
    out = public_record(rec)
    assert out["data_source"] == "MNIST from .../mnist" and out["n_params"] == 3
    assert rec["data_source"] == "MNIST from /srv/mnist"          # the run's own copy is kept
    err = {"kind": "error", "message": "DataError: /srv/x missing",
           "traceback": 'File "/srv/app/x.py"'}
    assert "/srv" not in json.dumps(public_record(err))
    plain = {"kind": "train", "loss": 1.0}
    assert public_record(plain) is plain


def test_downloaded_run_record_names_no_server_path(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"data_source": f"MNIST from {tmp_path}/mnist"}))
    (tmp_path / "error.txt").write_text(f'File "{tmp_path}/a.py", line 1')
    (tmp_path / "metrics.csv").write_text("step,kind\n1,train\n")
    z = zipfile.ZipFile(io.BytesIO(zip_run_dir(tmp_path, redact=redact_paths)))
    assert sorted(z.namelist()) == ["error.txt", "metrics.csv", "summary.json"]
    text = "".join(z.read(n).decode() for n in z.namelist())
    assert str(tmp_path) not in text and ".../mnist" in text
    raw = zipfile.ZipFile(io.BytesIO(zip_run_dir(tmp_path)))          # the CLI's: unchanged
    assert str(tmp_path) in raw.read("summary.json").decode()
