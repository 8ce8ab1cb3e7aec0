#!/usr/bin/env bash
# Set up everything tfclassify needs on a fresh Debian/Ubuntu machine:
# the Fashion-MNIST data, Prometheus and rclone (Debian packages, for the deployment rehearsal), Chromium
# (renders the HTML reports in the tests), a
# virtual environment in .venv with tfclassify installed (editable) with the
# server, trainer and dev extras (Triton's client included). Safe to run
# again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEBIAN_PACKAGES=(dataset-fashion-mnist prometheus rclone chromium)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "setup: please install ${missing[*]} (Debian package names) by hand" >&2
    else
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "setup: installing Debian packages: ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

stamp="$VENV/.tfclassify-installed"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing tfclassify[server,trainer,report,dev] into $VENV (TensorFlow takes about a minute)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[server,trainer,report,dev]"
    touch "$stamp"
fi
