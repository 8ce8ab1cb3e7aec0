#!/usr/bin/env bash
# Build the Triton peer's environment for `make bench-peers` in .venv-triton/
# (git-ignored): PyTriton (nvidia-pytriton, which bundles Triton Inference
# Server and its Python backend stub), tensorflow-cpu and numpy. The stub is
# built against CPython 3.12 and loads libpython3.12.so at run time, so the
# environment needs a 3.12 with a shared libpython: PYTRITON_PYTHON, or pyenv's
# 3.12.1 by default. Does nothing when the environment is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TRITON_VENV:-.venv-triton}
PY312=${PYTRITON_PYTHON:-/root/.pyenv/versions/3.12.1/bin/python}
die() { echo "get_pytriton: $*" >&2; exit 1; }

[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pytriton, tensorflow" 2>/dev/null && exit 0
[ -x "$PY312" ] || die "no CPython 3.12 at $PY312 (set PYTRITON_PYTHON)"
LIBDIR=$("$PY312" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
"$PY312" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" || die "$PY312 is not CPython 3.12"
[ -e "$LIBDIR/libpython3.12.so.1.0" ] || die "$PY312 has no shared libpython ($LIBDIR/libpython3.12.so.1.0); build it with --enable-shared"

echo "get_pytriton: creating $VENV with nvidia-pytriton, tensorflow-cpu and numpy (about 1 GB from PyPI)" >&2
rm -rf "$VENV"
"$PY312" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q nvidia-pytriton tensorflow-cpu numpy \
    || { rm -rf "$VENV"; die "pip could not install nvidia-pytriton tensorflow-cpu numpy (no network, or no wheel for this platform)"; }
echo "get_pytriton: ready: $VENV" >&2
