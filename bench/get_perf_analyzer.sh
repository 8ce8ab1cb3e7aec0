#!/usr/bin/env bash
# Fetch Triton's perf_analyzer into build/perf-analyzer/ and write the wrapper
# build/perf-analyzer/perf_analyzer that runs it. Sources: PyPI (the
# perf-analyzer wheel and the CUDA runtime library it links against, no GPU
# needed) and Debian (libb64). The binary is built against glibc 2.38 and
# GCC 13's libstdc++; on an older system (Debian 12 has glibc 2.36) it runs
# with Debian 13's C and C++ libraries, unpacked next to it and loaded by
# their own dynamic loader; nothing on the system is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=build/perf-analyzer
VERSION=${PERF_ANALYZER_VERSION:-2.60.0}
# Any Python with pip does (it only downloads and unpacks): the Triton peer's environment if there is one.
PY=${TRITON_VENV:-.venv-triton}/bin/python
[ -x "$PY" ] || PY=${VENV:-.venv}/bin/python
WRAPPER=$DIR/perf_analyzer
[ -x "$WRAPPER" ] && exit 0

mkdir -p "$DIR/wheels" "$DIR/root"
echo "perf_analyzer: downloading perf-analyzer $VERSION and the CUDA runtime library from PyPI" >&2
# --platform: pip would otherwise refuse the wheel's manylinux_2_38 tag on an older system.
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
    -d "$DIR/wheels" "perf-analyzer==$VERSION"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DIR/wheels" "nvidia-cuda-runtime-cu12<13"
for wheel in "$DIR"/wheels/*.whl; do
    "$PY" -m zipfile -e "$wheel" "$DIR/root"
done
BIN=$(readlink -f "$DIR/root/perf_analyzer/bin/perf_analyzer")
CUDA=$(readlink -f "$DIR/root/nvidia/cuda_runtime/lib")
chmod +x "$BIN"

LOADER=""
LIBS=$CUDA
if LD_LIBRARY_PATH=$CUDA ldd "$BIN" 2>&1 | grep -q "GLIBC.*not found"; then
    echo "perf_analyzer: the system's C library is too old for it; fetching Debian 13's (trixie) into $DIR/sysroot" >&2
    APT=$(readlink -f "$DIR")/apt
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DIR/sysroot"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$APT/sources.list"
    opts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update -qq
    (cd "$APT" && apt-get "${opts[@]}" download -qq libc6 libstdc++6 libgcc-s1 libb64-0d)
    for deb in "$APT"/*.deb; do dpkg -x "$deb" "$DIR/sysroot"; done
    SYSLIB=$(readlink -f "$DIR/sysroot/usr/lib/x86_64-linux-gnu")
    LOADER="$SYSLIB/ld-linux-x86-64.so.2 --library-path $SYSLIB:$CUDA"
else
    if ! dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "ok installed"; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
    fi
fi
cat > "$WRAPPER" <<SCRIPT
#!/bin/sh
# Written by bench/get_perf_analyzer.sh.
LD_LIBRARY_PATH="$LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec $LOADER "$BIN" "\$@"
SCRIPT
chmod +x "$WRAPPER"
echo "perf_analyzer: ready: $WRAPPER" >&2
