#!/usr/bin/env bash
# Set up what a make target needs on a fresh Debian/Ubuntu machine, and only that:
#
#   scripts/setup.sh demo   the Fashion-MNIST data (Debian package dataset-fashion-mnist) and a virtual
#                           environment in .venv with tfclassify[server,trainer,report] (editable): make demo
#   scripts/setup.sh test   (the default) the same, plus Prometheus and rclone (Debian packages, for the
#                           deployment rehearsal), Chromium (renders the HTML reports in the tests) and the
#                           dev extra (pytest, Triton's client, ...): make test, and the benchmarks
#
# Safe to run again: it skips what is done, in well under a second when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

mode=${1:-test}
case "$mode" in
    demo)
        DEBIAN_PACKAGES=(dataset-fashion-mnist)
        EXTRAS=server,trainer,report ;;
    test)
        DEBIAN_PACKAGES=(dataset-fashion-mnist prometheus rclone chromium)
        EXTRAS=server,trainer,report,dev ;;
    *)
        echo "usage: scripts/setup.sh [demo|test]" >&2
        exit 2 ;;
esac

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

# One stamp per set of extras; the test set includes the demo's, so its stamp serves both.
full_stamp="$VENV/.tfclassify-installed"
stamp=$full_stamp
[ "$mode" = demo ] && stamp="$VENV/.tfclassify-installed-demo"
fresh() { [ -f "$1" ] && ! [ pyproject.toml -nt "$1" ]; }
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if ! fresh "$stamp" && ! fresh "$full_stamp"; then
    echo "setup: installing tfclassify[$EXTRAS] into $VENV (TensorFlow takes about a minute)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
    touch "$stamp"
fi
