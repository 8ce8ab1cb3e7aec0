#!/usr/bin/env bash
# The whole path, end to end: train a 784-512-10 MLP on Fashion-MNIST, export
# it into a model repository, serve it over gRPC, score the 10,000 test
# images through the server, print the accuracy report, stop the server.
# Run through `make demo`, which sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
BIN="$VENV/bin"
OUT=${DEMO_OUT:-demo-output}
EPOCHS=${DEMO_EPOCHS:-10}
MIN_ACCURACY=${DEMO_MIN_ACCURACY:-0.87}
started=$(date +%s.%N)

rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/4 train: 784-512-10 MLP on Fashion-MNIST, $EPOCHS epochs"
"$BIN/tfclassify" train --dataset fashion_mnist --model-repo "$OUT/models" --recipe tuned --epochs "$EPOCHS"

echo "== 2/4 serve: $OUT/models on free loopback ports (log: $OUT/server.log)"
"$BIN/tfclassify" serve --model-repo "$OUT/models" --host 127.0.0.1 --grpc-port 0 --http-port 0 --metrics-port 0 \
    --port-file "$OUT/ports.json" >"$OUT/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    [ -f "$OUT/ports.json" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$OUT/server.log"; echo "demo: the server exited" >&2; exit 1; }
    sleep 0.1
done
read -r grpc_port metrics_port < <("$BIN/python" -c \
    'import json,sys; p=json.load(open(sys.argv[1])); print(p["grpc_port"], p["metrics_port"])' "$OUT/ports.json")
server="127.0.0.1:$grpc_port"
"$BIN/tfclassify" health --server "$server" --wait 60
"$BIN/tfclassify" models --server "$server"

echo "== 3/4 score: the 10,000 Fashion-MNIST test images through $server"
"$BIN/tfclassify" score --server "$server" --model fashion_mnist --dataset fashion_mnist --split test \
    --top-k 3 --send-labels --report "$OUT/report.json" --report "$OUT/report.html" --report "$OUT/report.md" \
    --output "$OUT/predictions.jsonl"

echo "== 3b/4 score an archive: 2,000 test images as PNG files in class folders (photos.zip/Shirt/00012.png)"
"$BIN/python" - "$OUT/photos.zip" <<'PY'
import io, sys, zipfile
from PIL import Image
from tfclassify.common.datasets import load_dataset
data = load_dataset("fashion_mnist", "test", download_missing=False)
with zipfile.ZipFile(sys.argv[1], "w") as archive:
    for i, (pixels, label) in enumerate(zip(data.images[:2000], data.labels[:2000])):
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        archive.writestr(f"{data.label_names[label].replace('/', '_')}/{i:05d}.png", png.getvalue())
PY
"$BIN/tfclassify" score --server "$server" --model fashion_mnist --images "$OUT/photos.zip" --labels folder \
    --output "$OUT/photos-predictions.jsonl" --no-progress | grep -E "^(scored|predictions|accuracy)"

echo "== metrics (http://127.0.0.1:$metrics_port/metrics), a few lines"
"$BIN/python" - "$metrics_port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    live = 'class="Shirt"' in line and line.startswith(("tfclassify_labelled_images_total", "tfclassify_correct_images_total"))
    if (live or line.startswith(("tfclassify_requests_total", "tfclassify_images_classified_total",
                                 "tfclassify_model_version_state"))) and not line.endswith(" 0.0"):
        print("  " + line)
PY

echo "== 4/4 stop the server (SIGTERM: drain, then exit)"
kill -TERM "$server_pid"
wait "$server_pid"
trap - EXIT

accuracy=$("$BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["accuracy"])' "$OUT/report.json")
elapsed=$("$BIN/python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
echo
echo "demo done in ${elapsed} s: Fashion-MNIST test accuracy $accuracy through the server (report: $OUT/report.html, .md, .json)"
"$BIN/python" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$accuracy" "$MIN_ACCURACY" \
    || { echo "demo: accuracy $accuracy is below $MIN_ACCURACY" >&2; exit 1; }
