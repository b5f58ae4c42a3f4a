"""A clone with no ../shared gets its test data: fetched once, verified, from a mirror
(here a local HTTP server holding the shared files), then found in the user cache; and
with nothing to be had, one clear message instead of a hundred errors (tests/testdata.py)."""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import testdata

TESTS = Path(__file__).resolve().parent

PROBE = '''
def test_data_is_there(mnist_dir, ptb_dir):
    import testdata
    assert all((mnist_dir / n).is_file() for n in testdata.MNIST_NAMES)
    assert all((ptb_dir / n).is_file() for n in testdata.PTB_NAMES)
    print("MNIST FROM", mnist_dir, "PTB FROM", ptb_dir)
'''


@pytest.fixture
def mirror(tmp_path, mnist_dir, ptb_dir):
    """A loopback HTTP server holding the MNIST and PTB files side by side; counts requests."""
    root = tmp_path / "mirror"
    root.mkdir()
    for folder, names in ((mnist_dir, testdata.MNIST_NAMES), (ptb_dir, testdata.PTB_NAMES)):
        for n in names:
            os.symlink(folder / n, root / n)
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", hits, root
    server.shutdown()
    server.server_close()


def _clone_without_shared(tmp_path) -> Path:
    """The tests' data code in a folder with no ../shared beside it, and the probe test."""
    clone = tmp_path / "clone" / "tests"
    clone.mkdir(parents=True)
    for n in ("conftest.py", "testdata.py"):
        shutil.copy(TESTS / n, clone / n)
    (clone / "test_probe.py").write_text(PROBE)
    assert not (clone.parents[1] / "shared").exists()
    return clone


def _pytest(clone: Path, env: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BNLSTM_TEST_DATA", "BNLSTM_MNIST_URL",
                                                           "BNLSTM_PTB_URL", "BNLSTM_CACHE_DIR")} | env
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "-p", "no:randomly", str(clone / "test_probe.py")], cwd=clone.parent,
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_clone_without_shared_fetches_verified_data_once_then_uses_the_cache(tmp_path, mirror):
    url, hits, _ = mirror
    clone = _clone_without_shared(tmp_path)
    cache = tmp_path / "cache"
    env = {"BNLSTM_CACHE_DIR": str(cache), "BNLSTM_MNIST_URL": url, "BNLSTM_PTB_URL": url}
    first = _pytest(clone, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"MNIST FROM {cache / 'mnist'}" in first.stdout and f"PTB FROM {cache / 'ptb'}" in first.stdout
    assert sorted(h.lstrip("/") for h in hits) == sorted(testdata.MNIST_NAMES + testdata.PTB_NAMES)
    hits.clear()
    second = _pytest(clone, env)                     # found in the cache: nothing fetched
    assert second.returncode == 0, second.stdout + second.stderr
    assert hits == []


def test_a_corrupt_mirror_is_refused_and_leaves_nothing(tmp_path, mirror):
    url, hits, root = mirror
    bad = root / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    bad.write_bytes(b"not the labels")
    clone = _clone_without_shared(tmp_path)
    cache = tmp_path / "cache"
    r = _pytest(clone, {"BNLSTM_CACHE_DIR": str(cache), "BNLSTM_MNIST_URL": url, "BNLSTM_PTB_URL": url})
    assert r.returncode != 0
    assert "checksum mismatch" in r.stdout + r.stderr
    assert not (cache / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_with_nothing_says_what_to_do_once(tmp_path):
    clone = _clone_without_shared(tmp_path)
    dead = "http://127.0.0.1:9/"                     # nothing listens on the discard port
    r = _pytest(clone, {"BNLSTM_CACHE_DIR": str(tmp_path / "cache"), "BNLSTM_MNIST_URL": dead,
                        "BNLSTM_PTB_URL": dead})
    out = r.stdout + r.stderr
    assert r.returncode == 4, out
    assert out.count("BNLSTM_TEST_DATA=") == 1 and "download failed" in out
    assert "Traceback" not in out
