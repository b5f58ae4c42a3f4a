"""The page's address: settings read from the URL, checked, with a message for the rest.

No Panel here (it is unit-tested without a browser), except the tolerant parsing of a
second '?' which wraps Panel's own parser.
"""
from __future__ import annotations

from typing import Any, Dict, List

import param

from bnlstm import TrainConfig
from bnlstm.training.config import explain, parse_setting

def _tolerate_extra_question_marks() -> None:
    """Read a second '?' in the page's address as '&' ("?steps=200?x=1" is steps=200 and x=1).

    Panel splits the request URI on every '?' and fails on more than one: the page was
    blank and the server logged a traceback. Its parser is private, so this wraps it only
    where it has the expected form, and leaves Panel as it is otherwise."""
    try:
        from panel.io import location as _location
    except ImportError:              # pragma: no cover
        return
    parse = getattr(_location, "_get_location_params", None)
    if parse is None or getattr(parse, "_bnlstm_wrapped", False):
        return

    def tolerant(protocol, host, uri):
        if uri and uri.count("?") > 1:
            path, _, query = uri.partition("?")
            uri = path + "?" + query.replace("?", "&")
        return parse(protocol, host, uri)

    tolerant._bnlstm_wrapped = True
    _location._get_location_params = tolerant


_tolerate_extra_question_marks()

def _coerce(par: param.Parameter, raw: Any):
    """A URL value -> the parameter's type (raises ValueError with a reason).

    Panel reads each value of the address as JSON where it can, and writes back what it
    read with ``str``: the choice ``permutation=true`` comes back as ``True``, then as
    ``"True"``. A choice is therefore matched without regard to case."""
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    raw = str(raw)
    if not isinstance(par, (param.Boolean, param.Number)) and len(raw) >= 2 \
            and raw.startswith('"') and raw.endswith('"'):      # Panel JSON-quotes strings
        raw = raw[1:-1]
    if isinstance(par, param.Selector):
        for choice in par.objects:
            if str(choice).lower() == raw.strip().lower():
                return choice
    return parse_setting(par.name, raw)


def holds(key: str, raw: Any, current: Any) -> bool:
    """Whether the address's ``key=raw`` is the value the setting already has (what Panel
    failed to apply, in its own reading of the address, may be just that); False for a key
    that is not a setting."""
    try:
        return _coerce(TrainConfig.param[key], raw) == current
    except Exception:
        return False


def url_text(raw: Any) -> str:
    """A value of the address that is a name (``?preset=``, ``?text=``) as plain text: the
    last of a repeated key, decoded, without the quotes Panel's JSON puts on strings."""
    if isinstance(raw, (list, tuple)):
        raw = raw[-1] if raw else ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return "" if raw is None else str(raw).strip('"')


def validate_query(query: Dict[str, Any], defaults: Dict[str, Any] = None
                   ) -> "tuple[Dict[str, Any], List[str]]":
    """Split URL parameters into settings that can be applied and messages for the rest
    (``defaults``: the page's own defaults, named in the messages)."""
    defaults = defaults or {}
    good: Dict[str, Any] = {}
    problems: List[str] = []
    names = [k for k in TrainConfig.param if k != "name"]
    for key, raw in query.items():
        if isinstance(raw, (list, tuple)):
            raw = raw[-1] if raw else ""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if key not in names:
            problems.append(f"unknown URL parameter '{key}' (ignored)")
            continue
        par = TrainConfig.param[key]
        try:
            value = _coerce(par, raw)
            TrainConfig(**{key: value})                   # bounds and choices
        except Exception as exc:
            reason = explain(exc)
            if isinstance(par, param.Selector):
                reason = f"choose one of {', '.join(map(str, par.objects))}"
            elif getattr(par, "bounds", None):
                lo, hi = par.bounds
                reason = f"{reason}; allowed range {lo} .. {hi if hi is not None else 'no limit'}"
            problems.append(f"'{key}={raw}' is not valid ({reason}); using the default "
                            f"{defaults.get(key, getattr(TrainConfig, key))!r}")
            continue
        good[key] = value
    return good, problems
