# shellcheck shell=bash
# Shared set-up for ./scripts/dashboard, ./scripts/test and ./scripts/notebooks; sourced, not run.
#
#   bnlstm_setup base   # the package and what it needs (dashboard, CLI)
#   bnlstm_setup test   # ... plus the test extra (pytest, Playwright, nbmake)
#   bnlstm_setup notebook  # ... plus the notebook extra (JupyterLab, ipykernel)
#
# Makes a virtual environment in .venv (or $BNLSTM_VENV) with python3 (or
# $PYTHON), installs the project into it in editable mode and sets BNLSTM_PY to
# its python. A stamp file records what was installed; while pyproject.toml and
# this file are unchanged, a re-run installs nothing.
#
# torch: the dependency is a range (torch>=2.2). On Linux, PyPI's default torch
# is a CUDA build of several GB. Set BNLSTM_TORCH to a pip requirement to
# install first (for example BNLSTM_TORCH="torch==2.13.0", or
# BNLSTM_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" for
# a CPU build). Unset, torch==2.13.0 is installed first only when pip can
# take it without an index (a wheel in pip's find-links, as on CI machines);
# otherwise the range applies.

BNLSTM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BNLSTM_VENV="${BNLSTM_VENV:-$BNLSTM_ROOT/.venv}"
BNLSTM_PY="$BNLSTM_VENV/bin/python"
BNLSTM_PREFERRED_TORCH="torch==2.13.0"

_bnlstm_say() { printf '[bnlstm setup] %s\n' "$*" >&2; }
_bnlstm_die() { printf '[bnlstm setup] error: %s\n' "$*" >&2; exit 1; }

_bnlstm_is_root() { [ "$(id -u)" = 0 ]; }

_bnlstm_make_venv() {
    local base="${PYTHON:-python3}"
    command -v "$base" >/dev/null 2>&1 \
        || _bnlstm_die "'$base' not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || _bnlstm_die "$("$base" -V 2>&1) is too old: Python 3.10 or newer is needed (set PYTHON=/path/to/python3.X)"
    _bnlstm_say "creating $BNLSTM_VENV with $("$base" -V 2>&1)"
    if ! "$base" -m venv "$BNLSTM_VENV"; then
        # Debian and Ubuntu ship venv/ensurepip separately (python3.X-venv).
        rm -rf "$BNLSTM_VENV"
        local pkg
        pkg="python$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        if _bnlstm_is_root && command -v apt-get >/dev/null 2>&1; then
            _bnlstm_say "installing $pkg with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
                || _bnlstm_die "could not install $pkg"
            "$base" -m venv "$BNLSTM_VENV" || _bnlstm_die "could not create $BNLSTM_VENV"
        else
            _bnlstm_die "could not create a virtual environment; on Debian/Ubuntu: sudo apt-get install $pkg"
        fi
    fi
}

_bnlstm_fingerprint() {
    # Anything that changes what gets installed belongs here.
    {
        echo "mode=$1"
        echo "root=$BNLSTM_ROOT"
        echo "torch=${BNLSTM_TORCH:-}"
        "$BNLSTM_PY" -c 'import sys; print(sys.version)'
        cat "$BNLSTM_ROOT/pyproject.toml" "$BNLSTM_ROOT/scripts/_setup.sh"
    } | "$BNLSTM_PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

_bnlstm_stamp_ok() {  # mode
    local stamp="$BNLSTM_VENV/.bnlstm-setup-$1"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(_bnlstm_fingerprint "$1")" ] || return 1
    # The stamp can outlive a package removed by hand: check the project is
    # still installed (cheap, no import of torch).
    "$BNLSTM_PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys
from importlib import metadata
names = ["bnlstm", "torch", "panel"] + {"test": ["pytest", "playwright", "nbmake", "jupyterlab"],
                                          "notebook": ["jupyterlab", "ipykernel"]}.get(sys.argv[1], [])
for n in names:
    metadata.version(n)
EOF
}

_bnlstm_install_torch() {
    if [ -n "${BNLSTM_TORCH:-}" ]; then
        _bnlstm_say "installing $BNLSTM_TORCH (BNLSTM_TORCH)"
        # shellcheck disable=SC2086  # a requirement plus pip options, split on purpose
        "$BNLSTM_PY" -m pip install -qq $BNLSTM_TORCH || _bnlstm_die "could not install $BNLSTM_TORCH"
        return
    fi
    if "$BNLSTM_PY" -c 'from importlib import metadata; metadata.version("torch")' >/dev/null 2>&1; then
        return   # keep whatever torch is there; the range in pyproject.toml decides
    fi
    # --no-index: succeeds only where the wheel lies on local disk (pip's
    # find-links); anywhere else it fails at once and the range applies.
    # --no-deps: torch's own requirements come with the project install below.
    if "$BNLSTM_PY" -m pip install -qq --no-index --no-deps "$BNLSTM_PREFERRED_TORCH" >/dev/null 2>&1; then
        _bnlstm_say "installed $BNLSTM_PREFERRED_TORCH from local disk"
    else
        _bnlstm_say "torch comes from your package index (on Linux PyPI's is a CUDA build of" \
                    "several GB; for a CPU-only one set BNLSTM_TORCH, see README)"
    fi
}

bnlstm_setup() {
    local mode="${1:-base}" target
    case "$mode" in
        base) target="." ;;
        test) target=".[test]" ;;
        notebook) target=".[notebook]" ;;
        *) _bnlstm_die "unknown set-up mode '$mode'" ;;
    esac
    if [ ! -x "$BNLSTM_PY" ]; then
        _bnlstm_make_venv
    fi
    "$BNLSTM_PY" -c '' 2>/dev/null \
        || _bnlstm_die "$BNLSTM_VENV is broken (moved, or its Python was removed): delete it and run again"

    # The test set-up is a superset of the others (it has JupyterLab too).
    if _bnlstm_stamp_ok "$mode" || { [ "$mode" != test ] && _bnlstm_stamp_ok test; }; then
        return 0
    fi

    local t0=$SECONDS
    _bnlstm_say "installing into $BNLSTM_VENV (the first time takes a few minutes)"
    "$BNLSTM_PY" -m pip install -qq --upgrade pip || _bnlstm_die "could not upgrade pip"
    _bnlstm_install_torch
    (cd "$BNLSTM_ROOT" && "$BNLSTM_PY" -m pip install -qq -e "$target") \
        || _bnlstm_die "pip install -e '$target' failed"
    rm -f "$BNLSTM_VENV"/.bnlstm-setup-{base,test,notebook}
    _bnlstm_fingerprint "$mode" > "$BNLSTM_VENV/.bnlstm-setup-$mode"
    _bnlstm_say "installed in $((SECONDS - t0)) s"
}
