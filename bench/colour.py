"""``python -m bench.colour`` (``make bench-colour``): colour models served and scored, one table.

Builds two models from outside the project (``bench.colour_models``): a Keras CNN taking uint8 32x32x3 and
``keras.applications.MobileNetV3Small`` at float 224x224x3, starts one server for both, and measures per model,
on this machine, in one run:

1. in-process images/s: the server's runtime called directly on its best batch size (``bench.inprocess``);
2. ``tfclassify score`` of the same pixels from an ``.npz`` over gRPC, measured right after (1), and the ratio
   (goal for the MobileNet: >= 0.85, compute dominates);
3. ``tfclassify score`` of a folder of JPEG photos (320x240, resized to the model's size) with ``--decode client``
   (the scorer decodes and sends pixels) and ``--decode server`` (it sends the files), and the better one's ratio to
   (2) (goal for the MobileNet: >= 0.7);
4. single-image ``Classify`` latency (p50 of sequential calls) beside one in-process call of batch 1;
5. peak RSS of the scorer (decoding in 2 worker processes) and of the server scoring the JPEG folder and a folder
   10 times larger (goal: flat).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.__main__ import BIN, _json_of, start_server
from tfclassify.client import ClassifierClient

#: (model, image size, images in the .npz, JPEG photos per part folder: 1x is one part, 10x all ten).
MODELS = (("cnn32", 32, 20_000), ("mobilenet224", 224, 1_000))
PHOTO_SIZE = (320, 240)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.colour", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1_500, help="JPEG photos in the 1x folder [default: 1,500]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-colour-") as name:
        tmp = Path(name)
        repo = tmp / "repo"
        print("bench: building the models and writing the photos ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "bench.colour_models", str(repo)], check=True, capture_output=True)
        photos = write_photos(tmp / "photos", args.photos)
        results = {}
        server, address, pid = start_server(repo, tmp, [])
        try:
            for model, size, n in MODELS:
                print(f"bench: {model} ...", file=sys.stderr)
                results[model] = measure(model, size, n, repo, tmp, address, pid, photos)
        finally:
            server.terminate()
            server.wait(30)
    print(table(results, args.photos))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def measure(model: str, size: int, n: int, repo: Path, tmp: Path, address: str, pid: int, photos: Path) -> dict:
    version_dir = repo / model / "1"
    arrays = tmp / f"{model}.npz"
    rng = np.random.default_rng(0)
    np.savez(arrays, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    out = {"in_process": _json_of([sys.executable, "-m", "bench.inprocess", str(version_dir), "1", "16", "64",
                                   "256", "1024"])}
    out["arrays"] = score(address, model, tmp, str(arrays))
    out["arrays_ratio"] = out["arrays"]["rate"] / out["in_process"]["best_images_per_second"]
    for decode in ("client", "server"):
        out[f"jpeg_{decode}"] = score(address, model, tmp, str(photos / "part0"), "--decode", decode)
    best = max(out["jpeg_client"]["rate"], out["jpeg_server"]["rate"])
    out["jpeg_ratio"] = best / out["arrays"]["rate"]
    out["latency"] = single_image_latency(address, model, size)
    # Like for like: the scorer decodes in worker processes by default only from 4,096 files.
    small = score(address, model, tmp, str(photos / "part0"), "--decode", "client", "--decode-workers", "2")
    out["rss_1x"] = small["rss_mib"], server_peak_mib(pid)
    large = score(address, model, tmp, str(photos), "--decode", "client", "--decode-workers", "2")
    out["jpeg_10x"] = large
    out["rss_10x"] = large["rss_mib"], server_peak_mib(pid)
    return out


def write_photos(root: Path, per_part: int) -> Path:
    """Ten folders of ``per_part`` JPEG photos each: smooth colour fields with noise, like photos to a codec."""
    rng = np.random.default_rng(1)
    for part in range(10):
        folder = root / f"part{part}"
        folder.mkdir(parents=True)
        for i in range(per_part):
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            photo = np.asarray(coarse.resize(PHOTO_SIZE, Image.Resampling.BICUBIC), np.int16)
            photo = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
            Image.fromarray(photo).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def score(address: str, model: str, tmp: Path, images: str, *extra: str) -> dict:
    """One ``tfclassify score`` run: its printed rate and the scorer process's peak RSS."""
    proc = subprocess.Popen(
        [str(BIN / "tfclassify"), "score", "--server", address, "--model", model, "--images", images, "--output",
         str(tmp / "out.jsonl"), "--overwrite", "--no-progress", "--labels", "none", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)  # score's output is a few lines: the pipes do not fill
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: score failed ({proc.returncode}): {stderr.strip()}")
    match = re.search(r"scored ([\d,]+) images .* in ([\d.]+) s \(([\d,]+) images/s", stdout)
    if match is None:
        raise SystemExit(f"bench: no rate in score's output: {stdout}")
    return {"images": int(match.group(1).replace(",", "")), "seconds": float(match.group(2)),
            "rate": float(match.group(3).replace(",", "")), "rss_mib": usage.ru_maxrss / 1024}


def single_image_latency(address: str, model: str, size: int, calls: int = 300) -> dict:
    image = np.random.default_rng(2).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    with ClassifierClient(address) as client:
        for _ in range(20):
            client.classify(image, model)
        seconds = []
        for _ in range(calls):
            t0 = time.perf_counter()
            client.classify(image, model)
            seconds.append(time.perf_counter() - t0)
    return {"p50_ms": float(np.percentile(seconds, 50) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3)}


def server_peak_mib(pid: int) -> float:
    """The server's resident high-water mark (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def table(results: dict, photos: int) -> str:
    lines = [f"{'':44}" + "".join(f"{m:>16}" for m in results)]

    def row(label: str, fmt, key) -> None:
        lines.append(f"{label:44}" + "".join(f"{fmt(key(r)):>16}" for r in results.values()))

    row("1. in process, images/s (best batch)", lambda v: f"{v[0]:,.0f} (b{v[1]})",
        lambda r: (r["in_process"]["best_images_per_second"], r["in_process"]["best_batch_size"]))
    row("2. score .npz pixels over gRPC, images/s", lambda v: f"{v:,.0f}", lambda r: r["arrays"]["rate"])
    row("   ratio to in process (goal 0.85)", lambda v: f"{v:.2f}", lambda r: r["arrays_ratio"])
    row(f"3. score {photos:,} JPEGs, --decode client", lambda v: f"{v:,.0f}", lambda r: r["jpeg_client"]["rate"])
    row("   --decode server, images/s", lambda v: f"{v:,.0f}", lambda r: r["jpeg_server"]["rate"])
    row("   better one / .npz pixels (goal 0.7)", lambda v: f"{v:.2f}", lambda r: r["jpeg_ratio"])
    row("4. single image over gRPC, p50 ms", lambda v: f"{v:.2f}", lambda r: r["latency"]["p50_ms"])
    row("   in process, batch 1, p50 ms", lambda v: f"{v:.2f}", lambda r: r["in_process"]["batch1_p50_ms"])
    row(f"5. scorer peak RSS MiB, {photos:,} / {10 * photos:,} JPEGs", lambda v: f"{v[0]:.0f} / {v[1]:.0f}",
        lambda r: (r["rss_1x"][0], r["rss_10x"][0]))
    row("   server peak RSS MiB, after each", lambda v: f"{v[0]:.0f} / {v[1]:.0f}",
        lambda r: (r["rss_1x"][1], r["rss_10x"][1]))
    row(f"   {10 * photos:,} JPEGs (2 workers), images/s", lambda v: f"{v:,.0f}", lambda r: r["jpeg_10x"]["rate"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
