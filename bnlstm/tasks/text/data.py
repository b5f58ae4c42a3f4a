"""Text for character-level language modelling: locate, verify, download, fall back; batches.

Where the text comes from, in this order:

1. ``text_file``: any UTF-8 text file a user names (``--text-file``); it is split in
   order, deterministically: the first 90% of its characters train, the next 5%
   validate, the last 5% test.
2. an explicit directory: the ``root`` argument, else ``$BNLSTM_PTB_DIR``. It must hold
   the character-level Penn Treebank of Mikolov's simple-examples,
   ``ptb.char.{train,valid,test}.txt`` (:data:`PTB_FILES`; with ``download=True`` the
   missing ones are downloaded into it). Nothing falls back from an explicit
   directory: missing files raise :class:`TextDataError` naming the folder and files.
3. the user cache, ``$BNLSTM_CACHE_DIR/ptb`` (default the platform's user cache
   ``bnlstm/ptb``), used when it holds all three files;
4. with ``download=True``: the three files from the mirrors in :data:`PTB_URLS` (or
   ``$BNLSTM_PTB_URL``: base URLs separated by commas or spaces) into the cache: each to a
   temporary file, verified, then renamed into place, with a progress bar;
5. with ``fallback=True`` (the default): a real English text that ships with every
   Python, the text of the Python Language Reference's topics in ``pydoc_data`` (about
   465,000 characters), split 90/5/5 like a text file. ``Text.source`` says so, and so do
   the run record and the page.

Every Penn Treebank file is verified: the validation and test files by their sha256,
the training file by its git blob id (the one public fingerprint of it; see
``shared/data/ptb/SOURCE.md``); a corrupt or wrong file raises :class:`TextDataError`
naming the file, the expected and the actual checksum.

The Penn Treebank files have one sentence per line and characters separated by
spaces, ``_`` between words. :func:`parse_ptb` turns a line into its characters with
``_`` as a space and the line's end as ``"\\n"``: 50 symbols, the authors' 50 classes.
The vocabulary is the training text's characters (sorted); a character of the
validation or test text that training never saw becomes :data:`UNKNOWN`.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..downloads import cache_root, explicit_dir, fetch, mirror_list, require_files
from .checks import MAX_OWN_TEXT_BYTES, MIN_CHARS, TextDataError, check_length  # noqa: F401
from .checks import decode_own_text  # noqa: F401  (re-exported: data.decode_own_text)

PathLike = Union[str, os.PathLike]

__all__ = ["TextDataError", "Text", "PTB_FILES", "PTB_URLS", "load_text", "ptb_heldout", "parse_ptb",
           "split_text", "TextBatches", "UNKNOWN", "ptb_cache_dir"]




# name -> (kind of checksum, value, size in bytes or None). From shared/data/ptb/SOURCE.md.
PTB_FILES: Dict[str, Tuple[str, str, Optional[int]]] = {
    "ptb.char.train.txt": ("git-blob", "84b890a87aed6ad2989aa12d03f1129c41d727b2", None),
    "ptb.char.valid.txt": ("sha256", "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8", 786084),
    "ptb.char.test.txt": ("sha256", "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe", 884846),
}
_TRAIN, _VALID, _TEST = PTB_FILES
# A public copy of simple-examples' data folder; every file is verified, so a wrong or
# changed mirror fails loudly rather than training on something else.
PTB_URLS: Tuple[str, ...] = (
    "https://raw.githubusercontent.com/arthurdehgan/IFT6135_assignment_2/master/data/",
)
UNKNOWN = "\ufffd"             # a validation/test character the training text lacks
SPLIT = (0.90, 0.05, 0.05)     # a text file's train / validation / test fractions, in order


@dataclass(repr=False)
class Text:
    """Train, validation and test text (str), the vocabulary, and where it came from."""
    train: str
    valid: str
    test: str
    source: str
    kind: str                    # "ptb", "ptb-heldout", "text8", "file", "own", "python-docs"
    where: Optional[str] = None
    vocab: str = ""

    def __post_init__(self):
        if not self.vocab:
            chars = sorted(set(self.train))
            if (set(self.valid) | set(self.test)) - set(chars):
                chars.append(UNKNOWN)
            self.vocab = "".join(chars)
        self.index = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def is_paper(self) -> bool:
        """The paper's data (Penn Treebank with its training file, or text8)."""
        return self.kind in ("ptb", "text8")

    def encode(self, text: str) -> np.ndarray:
        """Characters -> int64 ids (unseen characters -> :data:`UNKNOWN`'s id, or an error)."""
        unk = self.index.get(UNKNOWN)
        try:
            if unk is None:
                return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))
            return np.fromiter((self.index.get(c, unk) for c in text), dtype=np.int64,
                               count=len(text))
        except KeyError as exc:
            raise ValueError(f"the character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def unigram_bits(self, split: str = "valid") -> float:
        """The entropy (bits per character) of ``split``'s characters under the training
        text's character frequencies: what a model that ignores context scores."""
        counts = np.bincount(self.encode(self.train), minlength=len(self.vocab)) + 1.0
        p = counts / counts.sum()
        ids = self.encode(getattr(self, split))
        return float(-np.log2(p[ids]).mean())

    def __repr__(self) -> str:
        return (f"Text(train={len(self.train):,}, valid={len(self.valid):,}, "
                f"test={len(self.test):,}, vocab={len(self.vocab)}, source={self.source!r})")


# --------------------------------------------------------------------------- parsing
def parse_ptb(raw: str) -> str:
    """The character-level PTB format -> text: one sentence per line, ``_`` -> space."""
    lines = []
    for line in raw.splitlines():
        toks = line.split()
        if toks:
            lines.append("".join(" " if t == "_" else t for t in toks) + "\n")
    return "".join(lines)


def split_text(text: str, fractions: Sequence[float] = SPLIT) -> Tuple[str, str, str]:
    """The first, middle and last parts of ``text`` (90/5/5 by default), in order."""
    n = len(text)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return text[:a], text[a:b], text[b:]


def _git_blob_id(raw: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()


def _check(path: Path, raw: bytes, name: str) -> None:
    kind, expected, size = PTB_FILES[name]
    actual = _git_blob_id(raw) if kind == "git-blob" else hashlib.sha256(raw).hexdigest()
    if actual != expected:
        what = "git blob id" if kind == "git-blob" else "sha256"
        raise TextDataError(
            f"{path}: checksum mismatch, the file is corrupt, truncated or not the original "
            f"(expected {what} {expected}" + (f", {size} bytes" if size else "") +
            f"; actual {what} {actual}, {len(raw)} bytes). Delete it and download it again.")


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# --------------------------------------------------------------------------- places
def ptb_cache_dir() -> Path:
    """``$BNLSTM_CACHE_DIR/ptb`` or the platform's user cache ``bnlstm/ptb``."""
    return cache_root() / "ptb"


def mirror_urls() -> List[str]:
    """Base URLs tried in order: ``$BNLSTM_PTB_URL`` (comma/space separated) or :data:`PTB_URLS`."""
    return mirror_list("BNLSTM_PTB_URL", PTB_URLS)


def _missing(directory: Path) -> List[str]:
    return [n for n in PTB_FILES if not (directory / n).is_file()]


def _load_ptb(directory: Path) -> Text:
    parts, problems = {}, []
    for name in PTB_FILES:                       # verify every file, report every problem
        path = directory / name
        try:
            raw = path.read_bytes()
            _check(path, raw, name)
            parts[name] = parse_ptb(_decode(path, raw))
        except TextDataError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc})")
    if problems:
        raise TextDataError("Penn Treebank files failed verification:\n  " + "\n  ".join(problems))
    n = sum(len(t) for t in parts.values())
    return Text(parts[_TRAIN], parts[_VALID], parts[_TEST], kind="ptb", where=str(directory),
                source=f"Penn Treebank characters (Mikolov's simple-examples, {n:,} characters) "
                       f"from {directory}")


def _download_one(name: str, directory: Path, urls: Sequence[str], progress: bool,
                  timeout: float) -> None:
    def verify(url: str, raw: bytes) -> Optional[str]:
        try:
            _check(Path(url), raw, name)
        except TextDataError as exc:
            return str(exc).split(". Delete")[0]
        return None

    errors = fetch(name, directory, urls, verify, progress=progress, timeout=timeout,
                   size_hint=PTB_FILES[name][2])
    if errors:
        raise TextDataError(f"could not download {name} into {directory}:\n  " + "\n  ".join(errors)
                            + "\nPut the three files in a folder and pass it (--data-dir / "
                              "BNLSTM_PTB_DIR), or set BNLSTM_PTB_URL to a reachable mirror.")


def download_ptb(directory: Optional[PathLike] = None, progress: bool = True,
                 timeout: float = 60.0, names: Optional[Sequence[str]] = None) -> Path:
    """Download the Penn Treebank files missing from ``directory`` (default the cache), verified;
    ``names``: only these of :data:`PTB_FILES` (the tests need the held-out two)."""
    directory = Path(directory) if directory is not None else ptb_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextDataError(f"cannot create the folder {directory}: {exc}") from None
    problems = []
    wanted = _missing(directory) if names is None else [n for n in _missing(directory) if n in names]
    for name in wanted:                       # each file on its own: one failure keeps the others
        try:
            _download_one(name, directory, mirror_urls(), progress, timeout)
        except TextDataError as exc:
            problems.append(str(exc))
    if problems:
        raise TextDataError("\n".join(problems))
    return directory


# --------------------------------------------------------------------------- other texts
def load_text_file(path: PathLike, min_chars: int = 2000) -> Text:
    """Any UTF-8 text file, split 90/5/5 in order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TextDataError(f"{path}: no such text file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TextDataError(f"{path}: cannot read ({exc})") from None
    text = _decode(path, raw)
    if len(text) < min_chars:
        raise TextDataError(f"{path}: {len(text):,} characters; a language model needs at "
                            f"least {min_chars:,} (its 5% validation and test parts would be "
                            "too short)")
    train, valid, test = split_text(text)
    return Text(train, valid, test, kind="file", where=str(path),
                source=f"the text file {path} ({len(text):,} characters, split 90/5/5 in order)")


def text_from_string(text: str, name: str = "your text", min_chars: int = MIN_CHARS) -> Text:
    """A text given as a string (what someone dropped on the page), split 90/5/5 in order as
    a text file is. ``name``: what it is called in ``source`` (a file's name, never a path)."""
    if not isinstance(text, str):
        raise TextDataError(f"{name}: expected text, got {type(text).__name__}")
    check_length(text, name, min_chars)
    train, valid, test = split_text(text)
    return Text(train, valid, test, kind="own", where="",
                source=f"{name} ({len(text):,} characters, given to this run, split 90/5/5 "
                       "in order)")


def python_docs_text() -> Text:
    """The Python Language Reference's topics as shipped in ``pydoc_data`` (English prose
    and examples), in sorted topic order, split 90/5/5."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise TextDataError("no text found: no Penn Treebank files, no --text-file, and this "
                            "Python lacks pydoc_data (its documentation topics)") from None
    text = "\n\n".join(topics[k] for k in sorted(topics))
    train, valid, test = split_text(text)
    v = ".".join(map(str, sys.version_info[:3]))
    return Text(train, valid, test, kind="python-docs", where="pydoc_data.topics",
                source=f"the Python {v} Language Reference topics that ship with Python "
                       f"(pydoc_data, {len(text):,} characters, split 90/5/5 in order; "
                       "not the paper's Penn Treebank)")


# --------------------------------------------------------------------------- entry point
SOURCES = ("auto", "ptb-heldout", "text8", "python-docs")


def ptb_heldout(directory: Optional[PathLike] = None) -> Text:
    """Penn Treebank without its training file: the validation file's first 95% trains, its
    last 5% validates, the test file tests (both verified by sha256). ``directory``: the
    folder (default: ``$BNLSTM_PTB_DIR``, then the cache)."""
    explicit = explicit_dir(directory, "BNLSTM_PTB_DIR")
    d = explicit[0] if explicit else ptb_cache_dir()
    parts = {}
    for name in ("ptb.char.valid.txt", "ptb.char.test.txt"):
        path = d / name
        if not path.is_file():
            raise TextDataError(f"{path}: no such file (PTB's held-out split needs at least "
                                "the validation and test files)")
        raw = path.read_bytes()
        _check(path, raw, name)
        parts[name] = parse_ptb(_decode(path, raw))
    valid = parts["ptb.char.valid.txt"]
    cut = int(len(valid) * 0.95)
    return Text(valid[:cut], valid[cut:], parts["ptb.char.test.txt"], kind="ptb-heldout",
                where=str(d),
                source=f"Penn Treebank characters from {d}: the validation file's first "
                       f"95% ({cut:,} characters) trains, its last 5% validates, the test "
                       "file tests (the 5 MB training file is not used)")


def load_text(root: Optional[PathLike] = None, download: bool = False,
              text_file: Optional[PathLike] = None, fallback: bool = True,
              progress: bool = True, source: str = "auto", text: Optional[str] = None,
              text_name: str = "your text") -> Text:
    """Find, verify and load the text (see the module docstring for the order).
    ``source``: ``auto`` (that order), ``ptb-heldout`` (:func:`ptb_heldout`: Penn
    Treebank's validation and test files only, where its training file is missing) or
    ``text8`` (:func:`bnlstm.tasks.text.text8.load_text8`; ``root`` is its folder) or
    ``python-docs`` (:func:`python_docs_text`, whatever else is there).
    ``text``: the text itself, as a string (:func:`text_from_string`), before all else."""
    if text is not None:
        return text_from_string(text, text_name)
    if source not in SOURCES:
        raise TextDataError(f"unknown text source {source!r}; sources: {', '.join(SOURCES)}")
    if text_file:
        return load_text_file(text_file)
    if source == "ptb-heldout":
        return ptb_heldout(root)
    if source == "python-docs":
        return python_docs_text()
    if source == "text8":                  # bnlstm.tasks.text.text8: the paper's Table 3
        from .text8 import load_text8
        return load_text8(root, download=download, progress=progress)
    explicit = explicit_dir(root, "BNLSTM_PTB_DIR")
    if explicit is not None:
        directory, what = explicit
        fetch = (lambda d: download_ptb(d, progress=progress)) if download else None
        return _load_ptb(require_files(directory, what, "Penn Treebank folder", PTB_FILES,
                                       _missing, TextDataError, fetch))
    cache = ptb_cache_dir()
    if download and _missing(cache):
        try:
            download_ptb(cache, progress=progress)
        except TextDataError:
            if not fallback:
                raise
    if not _missing(cache):
        return _load_ptb(cache)
    if not fallback:
        raise TextDataError(f"Penn Treebank not found: the cache {cache} lacks "
                            f"{', '.join(_missing(cache))}; use --download, --data-dir or "
                            "BNLSTM_PTB_DIR, or --text-file")
    return python_docs_text()


def describe(root: Optional[PathLike] = None) -> str:
    """Which Penn Treebank files are where, verified, and which text :func:`load_text` would use."""
    lines = []
    dirs = [d for d in (explicit_dir(root, "BNLSTM_PTB_DIR"),) if d] + [(ptb_cache_dir(), "cache")]
    for directory, what in dirs:
        lines.append(f"{what}: {directory}" + ("" if directory.is_dir() else " (does not exist)"))
        for name in PTB_FILES:
            p = directory / name
            if not p.is_file():
                lines.append(f"  {name:22s} missing")
                continue
            try:
                _check(p, p.read_bytes(), name)
                state = "checksum ok"
            except TextDataError:
                state = "CORRUPT (checksum mismatch)"
            lines.append(f"  {name:22s} {p.stat().st_size:>10,d} bytes  {state}")
    lines.append("mirrors: " + " ".join(mirror_urls()))
    try:
        use = load_text(root).source
    except TextDataError as exc:
        use = f"nothing: {str(exc).splitlines()[0]}"
    lines.append(f"load_text() would use: {use}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- batches
class TextBatches:
    """Minibatches of sequences cut from one long text, as the authors' ``PTB`` dataset.

    ``ids``: the text's character ids (N,). A pass cuts it into windows of ``seq_len + 1``
    characters (inputs: the first ``seq_len``; targets: the next character at every step),
    one every ``stride`` characters, and gives ``(x, y)``, both int64 (B, seq_len), on
    ``device``. ``stride`` ``seq_len`` (the default) makes each window share its last
    character with the next one's first, so every character is a target once;
    ``seq_len + 1`` makes them disjoint (the authors' ``PTB`` dataset: windows of
    ``--length`` characters, ``x[:-1]``, ``y[1:]``). With ``shuffle`` every pass starts the
    windows at a random offset in ``[0, stride)`` (the authors' augmentation) and visits them in a random order, both
    drawn from a generator seeded with ``seed``; a final partial batch is dropped. Without
    it the windows start at 0, in order, and the last partial batch is kept. ``limit``:
    at most that many windows. ``endless``: pass after pass.
    """

    def __init__(self, ids, seq_len: int = 100, batch_size: int = 64,
                 device: Union[str, torch.device] = "cpu", seed: int = 0, shuffle: bool = True,
                 endless: bool = False, limit: Optional[int] = None,
                 stride: Optional[int] = None):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1; got {seq_len}, {batch_size}")
        stride = int(seq_len if stride is None else stride)
        if stride not in (seq_len, seq_len + 1):
            raise ValueError(f"stride must be seq_len ({seq_len}) or seq_len + 1; got {stride}")
        self.stride = stride
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).to(device)
        self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), seed
        self.shuffle, self.endless, self.limit = shuffle, endless, limit
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        if self._windows(0) < (self.batch_size if shuffle else 1):
            raise ValueError(f"the text ({len(self.ids):,} characters) is too short for "
                             f"{self.batch_size} sequences of {self.seq_len + 1} characters")

    def _windows(self, offset: int) -> int:
        n = max(len(self.ids) - offset - self.seq_len - 1 + self.stride, 0) // self.stride
        return min(n, self.limit) if self.limit else n

    def __len__(self) -> int:
        n = self._windows(self.stride - 1 if self.shuffle else 0)    # the fewest, any offset
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    @property
    def num_sequences(self) -> int:
        return self._windows(0)

    def _draw(self) -> Tuple[int, Optional[torch.Tensor]]:
        if not self.shuffle:
            return 0, None
        offset = int(torch.randint(self.stride, (1,), generator=self.generator))
        return offset, torch.randperm(self._windows(offset), generator=self.generator)

    def _one_pass(self, skip: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        offset, order = self._draw()
        L, B = self.seq_len, self.batch_size
        n = self._windows(offset)
        starts = offset + self.stride * (order if order is not None else torch.arange(n))
        span = torch.arange(L + 1)
        for i in range(skip, len(self)):
            idx = (starts[i * B:(i + 1) * B, None] + span).to(self.device)   # (B, L + 1)
            seq = self.ids[idx]
            yield seq[:, :-1], seq[:, 1:]

    def __iter__(self):
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """As ``iter``, without the first ``start`` batches (the generator advances as if
        they had been drawn): how a resumed run goes on with the same batches."""
        per = len(self)
        if not self.endless:
            yield from self._one_pass(skip=start)
            return
        for _ in range(start // per):
            self._draw()
        yield from self._one_pass(skip=start % per)
        while True:
            yield from self._one_pass()

    def __repr__(self) -> str:
        return (f"TextBatches(chars={len(self.ids):,}, seq_len={self.seq_len}, stride={self.stride}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle})")
