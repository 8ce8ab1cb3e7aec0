#!/usr/bin/env bash
# Build the tfclassify images with buildah where no image registry is reachable: a Debian base made with
# debootstrap (Python 3.11, venv), then the Dockerfiles in this folder on top of it (--build-arg BASE),
# then each image's entrypoint is run once and the sizes are printed. `make images` runs it (as root, on
# Debian/Ubuntu: it installs buildah and debootstrap). Not part of the tests: it downloads ~1 GB.
#
#   IMAGES="cpu client" bash deploy/docker/build-local.sh       (default: cpu client; gpu is ~4 GB more)
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGES=${IMAGES:-cpu client}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE=localhost/tfclassify-base:${SUITE}
WORK=${WORK:-build/images}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# Plain chroot isolation and the vfs driver work inside an unprivileged container too.
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
    echo "images: installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    rootfs="$WORK/rootfs-$SUITE"
    rm -rf "$rootfs" && mkdir -p "$WORK"
    echo "images: debootstrap $SUITE (minbase, python3) into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log"
    # What a slim base image leaves out: apt lists, caches, docs, man pages.
    # Trust what this machine trusts (a TLS-inspecting proxy's CA, say), so pip inside the build reaches PyPI.
    [ -f "$CA_BUNDLE" ] && cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/{doc,man,info}/*
    ctr=$(buildah from scratch)
    buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
        --cmd /bin/bash "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

declare -A FILES=([cpu]=Dockerfile.cpu [gpu]=Dockerfile.gpu [client]=Dockerfile.client)
declare -A TAGS=([cpu]="tfclassify:$VERSION-cpu" [gpu]="tfclassify:$VERSION-gpu" [client]="tfclassify-client:$VERSION")
declare -A SMOKE=([cpu]="--help" [gpu]="--help" [client]="score --help")
for image in $IMAGES; do
    tag=localhost/${TAGS[$image]}
    echo "images: building $tag"
    buildah bud --quiet --layers=false --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" \
        -f "deploy/docker/${FILES[$image]}" -t "$tag" . >/dev/null
    # Run the entrypoint as the image's own user, the way a container runtime would.
    ctr=$(buildah from "$tag")
    # shellcheck disable=SC2086
    buildah run --user 10001:10001 "$ctr" -- $(buildah inspect --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$tag") \
        ${SMOKE[$image]} >/dev/null
    buildah rm "$ctr" >/dev/null
done

echo
printf '%-34s %10s\n' IMAGE SIZE
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'tfclassify' | while read -r name size; do
    printf '%-34s %10s\n' "$name" "$size"
done
