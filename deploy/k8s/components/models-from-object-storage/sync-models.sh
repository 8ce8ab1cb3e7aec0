#!/bin/sh
# Mirror $MODELS_URL (<model>/<version>/ folders) into the local model repository every $SYNC_INTERVAL_S
# seconds. rclone fills a hidden staging folder (the server ignores hidden folders); each version not yet
# published is copied beside its final name and renamed into place, so the server never sees half a
# version. For S3, GCS and Azure the server reads a bucket itself (--model-repo s3://...): this sidecar is for
# the stores only rclone speaks, and images without the storage extra (docs/deployment.md says why).
# Versions removed from the bucket stay: which versions serve is the model config's version policy.
set -eu
# Whether a version folder is a whole SavedModel: saved_model.pb, variables/variables.index and every shard
# variables.data-NNNNN-of-MMMMM (a version half-uploaded to the bucket is left for a later sync).
whole() {
    [ -f "$1/saved_model.pb" ] && [ -f "$1/variables/variables.index" ] || return 1
    found=1
    for shard in "$1"/variables/variables.data-*-of-*; do
        [ -f "$shard" ] || return 1
        found=0
        of=${shard##*-of-}
        total=$(expr "$of" + 0) || return 1
        i=0
        while [ "$i" -lt "$total" ]; do
            [ -f "$1/variables/variables.data-$(printf %05d "$i")-of-$of" ] || return 1
            i=$((i + 1))
        done
    done
    return $found
}
repo=${MODELS_REPO:-/models}
staging="$repo/.staging"
while :; do
    if rclone sync "$MODELS_URL" "$staging" --checksum --fast-list; then
        for version in "$staging"/*/*; do
            whole "$version" || continue
            model=$(basename "$(dirname "$version")")
            number=$(basename "$version")
            case $number in *[!0-9]*) continue ;; esac
            [ -d "$repo/$model/$number" ] && continue
            mkdir -p "$repo/$model"
            rm -rf "$repo/$model/.tmp-$number"
            cp -r "$version" "$repo/$model/.tmp-$number"
            mv "$repo/$model/.tmp-$number" "$repo/$model/$number"
            echo "published $model version $number"
        done
        touch "$repo/.synced"
    else
        echo "sync from $MODELS_URL failed; retrying in ${SYNC_INTERVAL_S:-60} s" >&2
    fi
    sleep "${SYNC_INTERVAL_S:-60}"
done
