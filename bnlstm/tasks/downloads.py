"""Where data is cached, which mirrors are tried, and one verified download.

Shared by the data sets (:mod:`bnlstm.tasks.mnist.data`, :mod:`bnlstm.tasks.text.data`): a file is written
to a temporary file in its folder with a progress bar, checked by the caller's
``verify``, and only then renamed to its name; a failed or wrong download leaves nothing.
"""
from __future__ import annotations

import http.client
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

_CHUNK = 1 << 16


def cache_root() -> Path:
    """``$BNLSTM_CACHE_DIR``, else the platform's user cache folder ``bnlstm``."""
    base = os.environ.get("BNLSTM_CACHE_DIR")
    if not base:
        import platformdirs
        base = platformdirs.user_cache_dir("bnlstm", appauthor=False)
    return Path(base).expanduser()


def explicit_dir(root, env_var: str) -> Optional[Tuple[Path, str]]:
    """(folder, what named it) from ``root``, else ``$env_var``; ``None`` when neither does."""
    if root is not None and str(root) != "":
        return Path(root).expanduser(), "data directory"
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser(), env_var
    return None


def require_files(directory: Path, what: str, label: str, files: Sequence[str],
                  missing: Callable[[Path], List[str]], error: type,
                  fetch_missing: Optional[Callable[[Path], object]] = None,
                  hint: str = "--download") -> Path:
    """A folder the user named (``what``: the argument, or the environment variable): its
    ``files`` must be there, never a fallback. ``fetch_missing`` (given for
    ``download=True``) fetches the missing ones first; still missing ones raise ``error``
    saying which, where, and what to do (``hint``)."""
    if fetch_missing is not None:
        fetch_missing(directory)
    gone = missing(directory)
    if gone:
        state = "does not exist" if not directory.is_dir() else f"lacks {', '.join(gone)}"
        raise error(f"{label} {directory} ({what}) {state}. Put {', '.join(files)} there, "
                    f"or use {hint}.")
    return directory


def mirror_list(env_var: str, defaults: Sequence[str]) -> List[str]:
    """Base URLs tried in order: ``$env_var`` (separated by commas or spaces) or ``defaults``;
    each ends with a slash."""
    env = os.environ.get(env_var, "").strip()
    urls = [u for u in re.split(r"[\s,]+", env) if u] if env else list(defaults)
    return [u if u.endswith("/") else u + "/" for u in urls]


def fetch(name: str, directory: Path, urls: Sequence[str],
          verify: Callable[[str, bytes], Optional[str]], progress: bool = True,
          timeout: float = 60.0, size_hint: Optional[int] = None) -> List[str]:
    """Download ``name`` from the first of ``urls`` that serves a file ``verify`` accepts,
    into ``directory / name``. ``verify(url, content)`` returns ``None`` or the reason the
    content is wrong. Returns ``[]`` on success, else one line per URL tried saying what
    went wrong (nothing is left in ``directory``)."""
    errors = []
    for base in urls:
        url = base + name
        tmp = None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
                from tqdm.auto import tqdm
                chunks = []
                with os.fdopen(fd, "wb") as out, tqdm(
                        total=int(total) if total else size_hint, unit="B", unit_scale=True,
                        unit_divisor=1024, desc=name, disable=not progress, leave=False) as bar:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        out.write(chunk)
                        chunks.append(chunk)
                        bar.update(len(chunk))
            problem = verify(url, b"".join(chunks))
            if problem:
                errors.append(problem)
                continue
            os.replace(tmp, directory / name)
            tmp = None
            return []
        except (OSError, ValueError, http.client.HTTPException) as exc:   # URLError is an OSError
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return errors
