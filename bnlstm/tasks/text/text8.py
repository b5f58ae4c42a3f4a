"""text8, the paper's second character-level corpus (Table 3): find, verify, download.

text8 is the first 100,000,000 characters of an English Wikipedia dump of 2006, cleaned
to 27 symbols (``a``-``z`` and the space), published by Matt Mahoney as ``text8.zip``.
The paper trains on the first 90M characters, validates on the next 5M and tests on the
last 5M (:func:`split_text8`, the same 90/5/5 for any length).

Where it comes from, in this order (as Penn Treebank's, :mod:`bnlstm.tasks.text.data`):

1. an explicit folder: the ``root`` argument, else ``$BNLSTM_TEXT8_DIR``; it must hold
   the file ``text8`` (with ``download=True`` it is fetched into it). Nothing falls back
   from a folder someone named: a missing file raises :class:`TextDataError` naming it.
2. the user cache, ``$BNLSTM_CACHE_DIR/text8``;
3. with ``download=True``: ``text8.zip`` from the mirrors in :data:`TEXT8_URLS` (or
   ``$BNLSTM_TEXT8_URL``), its ``text8`` verified before it is renamed into place.

Unlike the text task's default order there is no fallback to another text: asking for
text8 and getting something else would be a silent change of data set.

The file is verified by its SHA-1 and size (:data:`TEXT8_FILE`: the digest GluonNLP's
``Text8`` dataset checks for the same file); a corrupt one raises naming both digests.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Tuple, Union

from ..downloads import cache_root, explicit_dir, fetch, mirror_list
from .data import Text, TextDataError

PathLike = Union[str, os.PathLike]

__all__ = ["TEXT8_FILE", "TEXT8_URLS", "load_text8", "download_text8", "split_text8",
           "text8_cache_dir"]

NAME = "text8"
ARCHIVE = "text8.zip"
# (sha1, size in bytes) of the file text8 inside text8.zip
TEXT8_FILE: Tuple[str, int] = ("0dc3edebc970dcc96137e7deda4d9995af9d93de", 100_000_000)
TEXT8_URLS = ("http://mattmahoney.net/dc/",)


def text8_cache_dir() -> Path:
    return cache_root() / "text8"


def mirror_urls():
    return mirror_list("BNLSTM_TEXT8_URL", TEXT8_URLS)


def _problem(raw: bytes, where: str) -> Optional[str]:
    sha, size = TEXT8_FILE
    actual = hashlib.sha1(raw).hexdigest()
    if actual == sha and len(raw) == size:
        return None
    return (f"{where}: checksum mismatch, the file is corrupt, truncated or not the original "
            f"text8 (expected sha1 {sha}, {size:,} bytes; actual sha1 {actual}, "
            f"{len(raw):,} bytes)")


def _member(content: bytes, url: str) -> Tuple[Optional[bytes], Optional[str]]:
    """``text8`` out of a downloaded ``text8.zip``: (bytes, None) or (None, the reason)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            if NAME not in z.namelist():
                return None, f"{url}: the archive holds no file named {NAME}"
            return z.read(NAME), None
    except zipfile.BadZipFile:
        return None, f"{url}: not a zip archive ({len(content):,} bytes)"


def split_text8(text: str) -> Tuple[str, str, str]:
    """The paper's split: the first 90% trains (90M characters), the next 5% validates,
    the last 5% tests."""
    n = len(text)
    a, b = int(n * 0.9), int(n * 0.95)
    return text[:a], text[a:b], text[b:]


def download_text8(directory: Optional[PathLike] = None, progress: bool = True,
                   timeout: float = 60.0) -> Path:
    """Fetch ``text8.zip`` from the first mirror that serves it, check its ``text8`` and
    put that file (verified) in ``directory`` (default the cache). Nothing is left behind
    when every mirror fails; the error names each mirror and why."""
    directory = Path(directory) if directory is not None else text8_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextDataError(f"cannot create the folder {directory}: {exc}") from None

    def verify(url: str, content: bytes) -> Optional[str]:
        raw, why = _member(content, url)
        return why if raw is None else _problem(raw, url)

    errors = fetch(ARCHIVE, directory, mirror_urls(), verify, progress=progress,
                   timeout=timeout, size_hint=31_344_016)
    if errors:
        raise TextDataError("text8 could not be downloaded:\n  " + "\n  ".join(errors) +
                            f"\nPut the file text8 (unzipped) in {directory}, or set "
                            "BNLSTM_TEXT8_URL to a mirror that serves text8.zip.")
    archive = directory / ARCHIVE
    try:
        raw, _ = _member(archive.read_bytes(), str(archive))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".text8.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(tmp, directory / NAME)
    finally:
        archive.unlink(missing_ok=True)
    return directory


def load_text8(root: Optional[PathLike] = None, download: bool = False,
               progress: bool = True) -> Text:
    """text8, verified, split as the paper (:func:`split_text8`); see the module docstring
    for where it is looked for. Raises :class:`TextDataError` (never another text)."""
    explicit = explicit_dir(root, "BNLSTM_TEXT8_DIR")
    directory, what = explicit if explicit else (text8_cache_dir(), "cache")
    path = directory / NAME
    if not path.is_file():
        if not download:
            raise TextDataError(
                f"text8 not found: the {what} {directory} has no file {NAME}; download it "
                "with --download (python -m bnlstm train --task text --text-source text8 "
                f"--download), or put the unzipped file there (from {mirror_urls()[0]}{ARCHIVE})")
        download_text8(directory, progress=progress)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TextDataError(f"{path}: cannot read ({exc})") from None
    problem = _problem(raw, str(path))
    if problem:
        raise TextDataError(problem + ". Delete it and download it again.")
    text = raw.decode("ascii", errors="strict") if raw.isascii() else raw.decode("utf-8")
    train, valid, test = split_text8(text)
    return Text(train, valid, test, kind="text8", where=str(directory),
                source=f"text8 from {directory} ({len(text):,} characters: the first 90% "
                       "trains, the next 5% validates, the last 5% tests, as the paper)")
