"""The text task's checks that need no torch: its error, and a text someone gives as bytes.

The dashboard imports this (a page never imports torch: ``tests/test_layers.py``);
:mod:`bnlstm.tasks.text.data` re-exports :class:`TextDataError` from here.
"""
from __future__ import annotations

__all__ = ["TextDataError", "MIN_CHARS", "MAX_OWN_TEXT_BYTES", "check_length", "decode_own_text", "too_large"]

MIN_CHARS = 2000                   # a language model's text: its 5% parts must not be empty
MAX_OWN_TEXT_BYTES = 4_000_000     # a text given as a string (the page's file drop): 4 MB


class TextDataError(ValueError):
    """Text could not be found, read, downloaded or verified. The message names the file."""


def check_length(text: str, name: str, min_chars: int = MIN_CHARS) -> None:
    if len(text) < min_chars:
        raise TextDataError(f"{name}: {len(text):,} characters; a language model needs at "
                            f"least {min_chars:,} (its 5% validation and test parts would be "
                            "too short)")


def too_large(name: str, size: int, max_bytes: int = MAX_OWN_TEXT_BYTES) -> TextDataError:
    """The error for a file of ``size`` bytes over the page's limit (raised by the caller)."""
    return TextDataError(f"{name} is {size / 1e6:.1f} MB; the most this page takes is "
                         f"{max_bytes / 1e6:.0f} MB (cut it, or train on it from the command "
                         "line with --text-file)")


def decode_own_text(raw: bytes, name: str = "your text",
                    max_bytes: int = MAX_OWN_TEXT_BYTES) -> str:
    """The bytes of a file someone gave (the page's drop) as text: at most ``max_bytes``,
    UTF-8 (a byte-order mark is dropped), at least 2000 characters; else a
    :class:`TextDataError` that says which rule it broke, in words for people."""
    if len(raw) > max_bytes:
        raise too_large(name, len(raw), max_bytes)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextDataError(f"{name} is not UTF-8 text (byte {exc.start:,} cannot be read): "
                            "save it as UTF-8 (plain text) and try again") from None
    if "\x00" in text:
        raise TextDataError(f"{name} holds NUL bytes: it looks like a binary file, not text")
    check_length(text, name)           # long enough (the same rule as a run's)
    return text
