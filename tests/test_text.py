"""Character-level language modelling: the text sources, their checks, batches, the model,
generation, and training from the command line."""
import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import torch

from bnlstm import TrainConfig, Trainer, tasks
from bnlstm.tasks.text import data as textdata
from bnlstm.cli import main as cli_main
from bnlstm.training.checkpoints import load_checkpoint
from bnlstm.tasks.text.experiment import CharLM, build_char_model, generate, score_chars
from bnlstm.tasks.text.data import PTB_FILES, TextBatches, TextDataError, load_text, parse_ptb


@pytest.fixture(autouse=True)
def _no_ptb_anywhere(tmp_path, monkeypatch):
    """Every test starts with an empty cache and no PTB folder from the environment."""
    monkeypatch.setenv("BNLSTM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BNLSTM_PTB_DIR", raising=False)
    monkeypatch.delenv("BNLSTM_PTB_URL", raising=False)


def _fake_ptb(ptb_dir, dest, monkeypatch):
    """A PTB folder: the real valid and test files, and the valid file standing in as the
    training file (its git blob id put in place of the real training file's)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ptb.char.valid.txt", "ptb.char.test.txt"):
        shutil.copy(ptb_dir / name, dest / name)
    raw = (ptb_dir / "ptb.char.valid.txt").read_bytes()[:200_000]
    (dest / "ptb.char.train.txt").write_bytes(raw)
    monkeypatch.setitem(PTB_FILES, "ptb.char.train.txt",
                        ("git-blob", textdata._git_blob_id(raw), None))
    return dest


# ------------------------------------------------------------------------------ sources
def test_ptb_files_parse_into_the_authors_50_symbols(ptb_dir):
    text = parse_ptb((ptb_dir / "ptb.char.valid.txt").read_text()) + \
        parse_ptb((ptb_dir / "ptb.char.test.txt").read_text())
    assert len(set(text)) == 50                     # penntreebank.py: nclasses = 50
    assert "_" not in text and text.count("\n") == 3370 + 3761
    assert text.startswith("consumers may want to move their telephones")


def test_a_ptb_folder_without_the_training_file_is_an_error_naming_it(ptb_dir, monkeypatch):
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))
    with pytest.raises(TextDataError) as info:
        load_text()
    msg = str(info.value)
    assert str(ptb_dir) in msg and "ptb.char.train.txt" in msg and "BNLSTM_PTB_DIR" in msg


def test_a_complete_ptb_folder_loads_verified(ptb_dir, tmp_path, monkeypatch):
    d = _fake_ptb(ptb_dir, tmp_path / "ptb", monkeypatch)
    text = load_text(d)
    assert text.kind == "ptb" and text.is_paper and "Penn Treebank" in text.source
    assert len(text.vocab) <= 51 and text.valid.startswith("consumers may")
    assert text.unigram_bits("valid") > 4.0          # characters alone: about 4.3 bits


def test_a_corrupt_ptb_file_is_refused_with_its_name_and_checksums(ptb_dir, tmp_path, monkeypatch):
    d = _fake_ptb(ptb_dir, tmp_path / "ptb", monkeypatch)
    raw = bytearray((d / "ptb.char.test.txt").read_bytes())
    raw[1000] ^= 1
    (d / "ptb.char.test.txt").write_bytes(bytes(raw))
    with pytest.raises(TextDataError) as info:
        load_text(d)
    msg = str(info.value)
    assert str(d / "ptb.char.test.txt") in msg and PTB_FILES["ptb.char.test.txt"][1] in msg
    assert "valid" not in msg.split("ptb.char.test.txt")[0].split("\n")[-1]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"
    yield start
    for s in servers:
        s.shutdown()


def test_download_from_a_mirror_verifies_and_renames_into_place(ptb_dir, tmp_path, monkeypatch,
                                                                serve):
    mirror = _fake_ptb(ptb_dir, tmp_path / "mirror", monkeypatch)
    monkeypatch.setenv("BNLSTM_PTB_URL", serve(mirror))
    text = load_text(download=True, progress=False)
    cache = tmp_path / "cache" / "ptb"
    assert text.kind == "ptb" and str(cache) in text.source
    assert sorted(p.name for p in cache.iterdir()) == sorted(PTB_FILES)    # no .part left


def test_download_of_the_real_files_and_a_mirror_without_the_training_file(ptb_dir, tmp_path,
                                                                           monkeypatch, serve):
    """The shared folder as the mirror: valid and test arrive verified; the training file
    is not there, so the explicit folder is an error naming it, and nothing half-written stays."""
    monkeypatch.setenv("BNLSTM_PTB_URL", serve(ptb_dir))
    d = tmp_path / "ptb"
    with pytest.raises(TextDataError, match=r"ptb\.char\.train\.txt"):
        load_text(d, download=True, progress=False)
    assert sorted(p.name for p in d.iterdir()) == ["ptb.char.test.txt", "ptb.char.valid.txt"]
    assert (d / "ptb.char.valid.txt").read_bytes() == (ptb_dir / "ptb.char.valid.txt").read_bytes()


def test_a_mirror_serving_a_wrong_file_leaves_nothing_behind(ptb_dir, tmp_path, monkeypatch, serve):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ptb.char.valid.txt").write_text("n o t _ t h e _ f i l e \n")
    monkeypatch.setenv("BNLSTM_PTB_URL", serve(bad))
    d = tmp_path / "ptb"
    with pytest.raises(TextDataError, match="checksum"):
        load_text(d, download=True, progress=False)
    assert not (d / "ptb.char.valid.txt").exists() and not list(d.glob("*.part"))


def test_with_no_files_and_no_network_the_text_is_pythons_own_documentation():
    text = load_text(download=False)
    assert text.kind == "python-docs" and "ship with Python" in text.source
    assert "Penn Treebank" in text.source                       # ... says it is not the paper's
    assert len(text.train) > 300_000 and len(text.valid) > 20_000
    assert 4.0 < text.unigram_bits() < 5.5


def test_a_text_file_is_split_90_5_5_in_order(tmp_path):
    body = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))
    f = tmp_path / "book.txt"
    f.write_text(body, encoding="utf-8")
    text = load_text(text_file=f)
    assert text.kind == "file" and str(f) in text.source
    assert text.train + text.valid + text.test == body
    assert abs(len(text.train) / len(body) - 0.9) < 1e-3 and text.valid.startswith(body[len(text.train):][:5])


def test_bad_text_files_name_the_file(tmp_path):
    with pytest.raises(TextDataError, match="no such text file"):
        load_text(text_file=tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(("caf\xe9 " * 2000).encode("latin-1"))
    with pytest.raises(TextDataError, match=r"latin1\.txt: not UTF-8"):
        load_text(text_file=tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(TextDataError, match=r"short\.txt: 9 characters"):
        load_text(text_file=tmp_path / "short.txt")


def test_unseen_characters_map_to_one_unknown_symbol():
    t = textdata.Text("aabbcc" * 10, "abz", "c", source="x", kind="file")
    assert t.vocab == "abc" + textdata.UNKNOWN
    assert t.decode(t.encode("abz")) == "ab" + textdata.UNKNOWN


# ------------------------------------------------------------------------------ batches
def test_text_batches_predict_the_next_character_and_resume_exactly():
    ids = np.arange(5000) % 97
    b = TextBatches(ids, seq_len=20, batch_size=8, seed=3, shuffle=True, endless=True)
    it = iter(b)
    first = [next(it) for _ in range(2 * len(b) + 5)]
    for x, y in first:
        assert x.shape == y.shape == (8, 20)
        assert torch.equal((x[:, 1:]), y[:, :-1])                 # y is x shifted by one
        assert torch.equal(y[:, -1], (x[:, -1] + 1) % 97)
    again = TextBatches(ids, seq_len=20, batch_size=8, seed=3, shuffle=True, endless=True)
    resumed = again.iterate(start=len(b) + 3)
    for x, y in first[len(b) + 3:]:
        x2, y2 = next(resumed)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    offsets = {int(x[0, 0]) % 20 for x, _ in first}
    assert len(offsets) > 1                                      # the windows move each pass


def test_evaluation_windows_cover_the_text_in_order():
    ids = np.arange(1001)
    b = TextBatches(ids, seq_len=100, batch_size=3, shuffle=False)
    xs = torch.cat([x for x, _ in b])
    assert xs.shape == (10, 100) and torch.equal(xs.reshape(-1), torch.arange(1000))


# ------------------------------------------------------------------------------ model
def test_one_step_at_a_time_with_t0_equals_the_whole_sequence(monkeypatch):
    """Generation feeds one character per call with hx and t0; it must compute exactly what
    one call over the whole sequence does, in eval mode, also past T_max (float64)."""
    torch.manual_seed(0)
    cfg = TrainConfig.for_task("text", hidden=12, seq_len=8)
    model = build_char_model(cfg, 7).double()
    model.train()
    for _ in range(3):                                           # some population statistics
        model(torch.randint(0, 7, (5, 8)))
    model.eval()
    ids = torch.randint(0, 7, (2, 13))                           # longer than T_max = 8
    whole = model(ids)
    logits, hidden, _ = model(ids[:, :1], return_hidden=True)
    steps = [logits]
    for t in range(1, 13):
        logits, hidden, _ = model(ids[:, t:t + 1], hidden, t0=t, return_hidden=True)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-12)
    wrong = model(ids[:, 5:6], hidden, t0=0)                     # the wrong step's statistics
    assert not torch.allclose(wrong, whole[:, 5:6])


def test_generate_and_score_chars_give_text_and_per_character_bits():
    text = textdata.Text("hello world. " * 50, "hello there.", "world", source="x", kind="file")
    cfg = TrainConfig.for_task("text", hidden=8, seq_len=10)
    torch.manual_seed(0)
    model = build_char_model(cfg, len(text.vocab))
    g = torch.Generator().manual_seed(0)
    s = generate(model, text, prime="hel", n=30, temperature=1.0, generator=g)
    assert s.startswith("hel") and len(s) == 33 and set(s) <= set(text.vocab)
    greedy = generate(model, text, prime="hel", n=10, temperature=0.0)
    assert greedy == generate(model, text, prime="hel", n=10, temperature=0.0)
    sc = score_chars(model, text, "hello there.")
    assert len(sc["chars"]) == 12 and np.isnan(sc["bits"][0]) and sc["h"].shape == (12, 8)
    assert np.all(sc["bits"][1:] > 0)
    assert model.training                                        # the mode is restored


def test_bn_tanh_rnn_is_refused_for_text_with_a_reason():
    with pytest.raises(ValueError, match="text task trains LSTMs"):
        tasks.get("text").experiment(TrainConfig.for_task("text", model="bn-tanh-rnn"))


def test_settings_of_other_tasks_are_refused_not_ignored():
    with pytest.raises(ValueError, match="seq_len.*do not apply.*row"):
        TrainConfig.for_task("row", seq_len=50)
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig.for_task("pixel", temperature=0.5)
    cfg = TrainConfig.for_task("text", hidden=64)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.seq_len, cfg.h0_noise) == \
        ("adam", 2e-3, 64, 100, 0.0) and cfg.hidden == 64


# ------------------------------------------------------------------------------ training
def test_the_issues_command_trains_offline_far_below_the_unigram_entropy(tmp_path, capsys):
    """``train --task text --model bnlstm --hidden 128 --steps 300 --seed 0 --out DIR`` on a
    machine with no Penn Treebank and no network: Python's own text, written in the record."""
    out = tmp_path / "run"
    rc = cli_main(["train", "--task", "text", "--model", "bnlstm", "--hidden", "128",
                   "--steps", "300", "--seed", "0", "--out", str(out), "--no-progress",
                   "--probe-every", "0"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["metric"] == "bpc" and s["task"] == "text"
    assert "Python" in s["data_source"] and s["data_kind"] == "python-docs"
    assert s["unigram_bits"] > 4.3
    assert s["val_bpc"] < 2.8 and s["val_bpc"] < s["unigram_bits"] - 1.5
    assert s["best_val_bpc"] <= min(float(r.split(",")[3]) for r in
                                    (out / "metrics.csv").read_text().splitlines()[1:]
                                    if ",val," in r) + 1e-9
    assert 0 < s["test_bpc"] < 3.0
    printed = capsys.readouterr().out
    assert "validation bits per character" in printed and "test bits per character" in printed
    # the checkpoint holds its vocabulary and is rebuilt through the registry
    cfg, model, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert isinstance(model, CharLM) and ckpt["task"] == "text"
    assert len(ckpt["meta"]["vocab"]) == model.vocab_size
    assert cli_main(["eval", str(out / "checkpoint.pt")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert abs(res["val"]["bpc"] - s["val_bpc"]) < 1e-6


def test_text_file_flag_and_a_wrong_one(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("abcabcabd " * 3000)
    out = tmp_path / "r"
    assert cli_main(["train", "--task", "text", "--text-file", str(f), "--hidden", "16",
                     "--steps", "20", "--eval-every", "10", "--out", str(out), "--no-progress",
                     "--probe-every", "0", "--seq-len", "20"]) == 0
    assert "t.txt" in json.loads((out / "summary.json").read_text())["data_source"]
    assert cli_main(["train", "--task", "text", "--text-file", str(tmp_path / "nope.txt"),
                     "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "nope.txt: no such text file" in capsys.readouterr().err
    assert cli_main(["train", "--task", "row", "--text-file", str(f), "--steps", "1",
                     "--out", str(tmp_path / "y")]) == 2
    assert "MNIST tasks take no text_file" in capsys.readouterr().err


def test_text_probe_reports_a_sample_and_the_excerpts_bits(tmp_path):
    cfg = TrainConfig.for_task("text", hidden=16, steps=2, probe_every=1, eval_every=2,
                               seq_len=30, temperature=0.5)
    recs = []
    tr = Trainer(cfg, callbacks=[recs.append])
    assert tr.run() == "finished"
    probes = [r for r in recs if r["kind"] == "probe"]
    assert probes and "text" in probes[0] and "grad_h" in probes[0]
    t = probes[0]["text"]
    assert t["temperature"] == 0.5 and len(t["sample"]) > 100
    assert len(t["chars"]) == len(t["bits"]) == 400 and t["h"].shape == (400, 16)


def test_a_text_run_resumes_bit_for_bit():
    cfg = TrainConfig.for_task("text", hidden=8, steps=6, eval_every=3, probe_every=0,
                               seq_len=20, device="cpu", test_at_end=False)
    snaps = []
    whole = Trainer(cfg, checkpoint_every=3, on_checkpoint=snaps.append)
    whole.run()
    resumed = Trainer(TrainConfig.from_dict(cfg.to_dict()), resume=snaps[0])
    resumed.run()
    a, b = whole.experiment.state_dict(), resumed.experiment.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_population_statistics_carry_to_sequences_three_times_longer(tmp_path):
    """The T_max rule in evaluation: after re-estimating the statistics, sequences 3x the
    training length score as well as the training length (a learnable text of 15 words)."""
    import random
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran to big red house with one small".split()
    f = tmp_path / "words.txt"
    f.write_text(" ".join(rng.choice(words) for _ in range(40000)))
    cfg = TrainConfig.for_task("text", hidden=32, steps=150, eval_every=150, probe_every=0,
                               seq_len=30, test_at_end=False, reestimate=20)
    exp = tasks.get("text").experiment(cfg, text_file=f)
    assert Trainer(cfg, exp).run() == "finished"            # finalize re-estimated the stats
    at_train = exp.evaluate("test", length=30)["bpc"]
    longer = exp.evaluate("test", length=90)["bpc"]
    batch = exp.evaluate("test", length=90, batch_stats=True)["bpc"]
    unigram = exp.text.unigram_bits("test")
    assert longer < unigram - 1.5 and batch < unigram - 1.5
    assert abs(longer - at_train) < 0.2
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    exp.evaluate("test", length=90, batch_stats=True)       # leaves the population alone
    assert all(torch.equal(before[k], v) for k, v in exp.model.state_dict().items())


def test_cli_data_text_reports_the_ptb_files_and_the_fallback(ptb_dir, capsys):
    assert cli_main(["data", "--text", "--dir", str(ptb_dir)]) == 0
    out = capsys.readouterr().out
    assert "ptb.char.valid.txt" in out and "checksum ok" in out
    assert "ptb.char.train.txt     missing" in out
    assert "load_text() would use: nothing" in out and "lacks ptb.char.train.txt" in out
    assert cli_main(["data", "--text"]) == 0
    assert "ship with Python" in capsys.readouterr().out


def test_the_whole_sequence_test_is_one_sequence_in_any_pieces(tmp_path, capsys):
    """``evaluate_whole``: the split as one sequence of batch 1 (the authors' proper_test),
    the same in one piece or in pieces that carry the state and the time index; and
    ``eval --whole-sequence`` reports it for both splits."""
    import random
    rng = random.Random(1)
    words = "the cat sat on a mat and dog ran to big red house".split()
    f = tmp_path / "words.txt"
    f.write_text(" ".join(rng.choice(words) for _ in range(20000)))
    out = tmp_path / "run"
    assert cli_main(["train", "--task", "text", "--text-file", str(f), "--hidden", "32",
                     "--steps", "150", "--eval-every", "150", "--seq-len", "30", "--out", str(out),
                     "--no-progress", "--probe-every", "0", "--reestimate", "20"]) == 0
    cfg, model, ckpt = load_checkpoint(out / "checkpoint.pt")
    exp = tasks.get("text").experiment(cfg, text_file=f)
    exp.setup()
    exp.load_state_dict(ckpt["model"])
    one = exp.evaluate_whole("test", chunk=10 ** 9)
    pieces = exp.evaluate_whole("test", chunk=7)
    assert one["n"] == len(exp.ids["test"]) - 1 and pieces["n"] == one["n"]
    assert abs(one["bpc"] - pieces["bpc"]) < 1e-4, (one, pieces)
    windows = exp.evaluate("test", length=30)["bpc"]
    assert one["bpc"] < exp.text.unigram_bits("test") - 1.0
    assert one["bpc"] < windows + 0.05       # context from all before: never much worse
    capsys.readouterr()
    assert cli_main(["eval", str(out / "checkpoint.pt"), "--text-file", str(f),
                     "--whole-sequence"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert abs(res["test_whole_sequence"]["bpc"] - one["bpc"]) < 1e-4
    assert res["val_whole_sequence"]["whole_sequence"] is True


# ------------------------------------------------------------------------------ text8
def _fake_text8(tmp_path, monkeypatch, n=20_000, corrupt=False):
    """A small text8 (27 symbols) made here, zipped on a mirror folder, and its checksum
    as the one text8 is checked against (the real file is 100 MB)."""
    import hashlib
    import zipfile
    from bnlstm.tasks.text import text8
    rng = np.random.default_rng(0)
    words = ["anarchism", "originated", "as", "a", "term", "of", "abuse", "first", "used"]
    body = " ".join(words[i] for i in rng.integers(0, len(words), n // 5))[:n].encode()
    monkeypatch.setattr(text8, "TEXT8_FILE", (hashlib.sha1(body).hexdigest(), len(body)))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "text8.zip", "w") as z:
        z.writestr("text8", body[:-10] if corrupt else body)
    return body


def test_text8_downloads_verified_splits_as_the_paper_and_loads_offline(tmp_path, monkeypatch,
                                                                        serve):
    body = _fake_text8(tmp_path, monkeypatch)
    monkeypatch.setenv("BNLSTM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BNLSTM_TEXT8_URL", serve(tmp_path / "mirror"))
    with pytest.raises(TextDataError, match="text8 not found.*--download"):
        load_text(source="text8")                                  # offline: no silent fallback
    t = load_text(source="text8", download=True, progress=False)
    cache = tmp_path / "cache" / "text8"
    assert sorted(p.name for p in cache.iterdir()) == ["text8"]    # no zip, no .part left
    assert t.kind == "text8" and t.is_paper and "as the paper" in t.source
    n = len(body)
    assert (len(t.train), len(t.valid), len(t.test)) == (int(n * .9), int(n * .95) - int(n * .9),
                                                         n - int(n * .95))
    assert t.train + t.valid + t.test == body.decode()
    monkeypatch.setenv("BNLSTM_TEXT8_URL", "http://127.0.0.1:9/")  # nothing there now
    assert load_text(source="text8").train == t.train               # the verified copy


def test_a_wrong_text8_is_refused_and_nothing_stays(tmp_path, monkeypatch, serve):
    _fake_text8(tmp_path, monkeypatch, corrupt=True)
    monkeypatch.setenv("BNLSTM_TEXT8_URL", serve(tmp_path / "mirror"))
    d = tmp_path / "t8"
    with pytest.raises(TextDataError, match="checksum mismatch.*expected sha1"):
        load_text(d, source="text8", download=True, progress=False)
    assert not list(d.iterdir())
    (d / "text8").write_text("not it")
    with pytest.raises(TextDataError, match="Delete it and download it again"):
        load_text(d, source="text8")
    from bnlstm import tasks
    assert "no file text8" in tasks.get("text").data_problem(str(tmp_path / "none"), source="text8")


def test_the_pages_text_menu_offers_what_this_server_can_train_on(tmp_path, monkeypatch,
                                                                   ptb_dir):
    """TextTask.text_choices: the whole Penn Treebank first when its folder is complete, its
    held-out split when the validation and test files are there, Python's text always; and
    source="python-docs" loads Python's text whatever Penn Treebank folder is set."""
    from bnlstm import tasks
    t = tasks.get("text")
    full = tmp_path / "full"
    full.mkdir()
    for n in ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"):
        (full / n).write_text("x")
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(full))
    choices, note = t.text_choices()
    assert [s for _, s in choices] == ["auto", "ptb-heldout", "python-docs"] and note == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(empty))
    choices, note = t.text_choices()
    assert [s for _, s in choices] == ["python-docs"] and "No Penn Treebank" in note
    assert str(empty) not in note
    monkeypatch.setenv("BNLSTM_PTB_DIR", str(ptb_dir))          # valid and test only
    assert [s for _, s in t.text_choices()[0]] == ["ptb-heldout", "python-docs"]
    text = textdata.load_text(source="python-docs")
    assert text.kind == "python-docs" and t.data_problem(source="python-docs") is None
