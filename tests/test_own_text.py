"""Your own text on the page (app/own_text.py): checked, held by the session, given to the
next text run as its data option; the checks themselves (bnlstm.tasks.text.data)."""
import random
from types import SimpleNamespace

import pytest

from bnlstm.tasks.text import data as textdata
from bnlstm_app.own_text import OwnText, clean_name


def _text(n_words=2500, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice("a stitch in time saves nine said the cat".split())
                    for _ in range(n_words))


def _send(widget, name, raw, chunk=1_000_000):
    """What the page's file drop sends for a file (FilePond, through Panel's FileDropper):
    upload events of ``chunk`` bytes each."""
    parts = [raw[i:i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    for k, part in enumerate(parts, 1):
        widget._process_event(SimpleNamespace(event_name="upload_event", data={
            "name": name, "chunk": k, "total_chunks": len(parts), "data": part,
            "type": "text/plain"}))


def test_the_checks_say_which_rule_a_file_broke():
    ok = _text()
    assert textdata.decode_own_text(("\ufeff" + ok).encode()) == ok        # a BOM is dropped
    with pytest.raises(textdata.TextDataError, match="not UTF-8 text"):
        textdata.decode_own_text(b"\xff\xfe" + ok.encode("utf-16-le"), "x.txt")
    with pytest.raises(textdata.TextDataError, match="the most this page takes is 1 MB"):
        textdata.decode_own_text(b"a" * 1_000_001, "big.txt", max_bytes=1_000_000)
    with pytest.raises(textdata.TextDataError, match="at least 2,000"):
        textdata.decode_own_text(b"too short", "s.txt")
    with pytest.raises(textdata.TextDataError, match="NUL"):
        textdata.decode_own_text(ok.encode() + b"\x00")
    t = textdata.load_text(text=ok, text_name="mine.txt")
    assert t.kind == "own" and t.where == "" and t.source.startswith("mine.txt (")
    assert abs(len(t.train) - 0.9 * len(ok)) < 2


def test_a_file_name_is_shown_without_any_folder():
    assert clean_name("C:\\Users\\ann\\story.txt") == "story.txt"
    assert clean_name("/home/ann/notes.md") == "notes.md"
    assert clean_name("") == "your text" and len(clean_name("x" * 200)) == 60


def test_the_drop_holds_a_good_text_and_keeps_it_over_a_bad_one():
    changes = []
    own = OwnText(on_change=lambda: changes.append(1))
    assert own.data_options() == {} and not own.active
    assert own.w_file.max_file_size == "4000KB" and own.w_file.chunk_size == 1_000_000
    _send(own.w_file, "/srv/secret/path/tale.txt", _text().encode(), chunk=5000)   # 3 chunks
    assert own.active and own.data_options()["text_name"] == "tale.txt"
    assert "tale.txt" in own.note.object and "/srv" not in own.note.object
    assert own.w_file.value == {} and own.w_file._file_buffer == {}   # held once, not here
    _send(own.w_file, "photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    assert "not UTF-8" in own.note.object and "still trains on <b>tale.txt" in own.note.object
    # a sender that skipped the browser's check: cut off at the chunk that passes 4 MB
    _send(own.w_file, "huge.txt", b"a" * 9_000_000)
    assert "huge.txt is 9.0 MB" in own.note.object and "4 MB" in own.note.object
    assert own.w_file._file_buffer == {}                          # the rest was dropped
    _send(own.w_file, "x.txt", b"")
    assert "at least 2,000" in own.note.object                  # nothing readable arrived
    assert own.data_options()["text_name"] == "tale.txt" and len(changes) == 1
    own.forget()
    assert own.data_options() == {} and len(changes) == 2


def test_the_page_gives_the_text_to_the_next_text_run_only(ptb_dir, monkeypatch):
    from bnlstm.runs.threads import ThreadEngine
    from bnlstm_app.dashboard import Dashboard
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))        # valid and test, no training file
    eng = ThreadEngine(max_runs=1)
    d = Dashboard(engine=eng)
    try:
        assert not d.settings.own_text.panel.visible          # MNIST: no text to give
        d.config.task = "text"
        assert d.settings.own_text.panel.visible
        assert d.settings.own_text.data_options() == {"source": "ptb-heldout"}   # what works
        _send(d.settings.own_text.w_file, "tale.txt", _text().encode())
        assert not d.controls.task_alert.visible               # a text given wins over the choice
        run = d._new_run()
        assert run.data_options["text_name"] == "tale.txt" and run.label.endswith("on tale.txt")
        d.config.task = "row"
        assert d._new_run().data_options == {}
    finally:
        d.dispose()
        eng.close()
