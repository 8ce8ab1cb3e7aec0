#!/bin/sh
# Mirror $MODELS_URL (<model>/<version>/ folders) into the local model repository every $SYNC_INTERVAL_S
# seconds. rclone fills a hidden staging folder (the server ignores hidden folders); each version not yet
# published is copied beside its final name and renamed into place, so the server never sees half a
# version. Versions removed from the bucket stay: which versions serve is the model config's version policy.
set -eu
repo=${MODELS_REPO:-/models}
staging="$repo/.staging"
while :; do
    if rclone sync "$MODELS_URL" "$staging" --checksum --fast-list; then
        for version in "$staging"/*/*; do
            [ -f "$version/saved_model.pb" ] || continue
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
