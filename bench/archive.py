"""``python -m bench.archive`` (``make bench-archive``): scoring image archives, one table.

Trains the benchmark model (1 epoch) unless --model-repo holds ``fashion_mnist``,
starts one server, and measures on this machine, in one run:

1. the 10,000 Fashion-MNIST test images from the IDX file and as a .zip of PNG
   files, through the same server, in alternating rounds (median round shown),
   and their ratio (goal: zip >= 0.7 of IDX);
2. the same PNGs as a .tar.gz and as a folder, and the .zip decoded on threads
   instead of processes;
3. the IDX run's ratio to in-process inference (the serving benchmark's row 2);
4. the scorer's peak RSS on the 10,000-PNG zip and on a 100,000-PNG zip
   (goal: within 10%), and how fast the large one goes;
5. where a PNG's time goes: reading it from the zip, and decoding it (per core);
6. how batches travel best: the 60,000 training images in 4,096-image batches
   over one ClassifyStream call (the server reads 4 requests ahead) or as 4
   concurrent unary Classify calls (what the scorer does), alternated.

Every run writes its predictions (``--output``) as users do. Rates are what
``tfclassify score`` prints: images over the job's time (metadata, listing,
decoding, scoring, writing), not counting the Python start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.__main__ import BIN, MODEL, _json_of, start_server, train_model
from tfclassify.client.requests import channel_options, classify_request
from tfclassify.common.datasets import load_dataset
from tfclassify.common.image_files import ConversionSpec, decode_image
from tfclassify.common.inputs.sources import open_input, read_file_ref
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX = FASHION_DIR / "t10k-images-idx3-ubyte.gz"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--rounds", type=int, default=3, help="IDX/zip rounds [default: %(default)s]")
    parser.add_argument("--large", type=int, default=100_000, help="images in the large zip [default: %(default)s]")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-archive-") as name:
        tmp = Path(name)
        repo = args.model_repo or train_model(tmp / "models")
        data = load_dataset("fashion_mnist", "test", FASHION_DIR, download_missing=False)
        print("bench: writing the archives ...", file=sys.stderr)
        pngs = [_png(image) for image in data.images]
        members = [(f"{data.label_names[c].replace('/', '_')}/{i:05d}.png", png)
                   for i, (png, c) in enumerate(zip(pngs, data.labels))]
        zip_path = _write_zip(tmp / "fashion10k.zip", members)
        tar_path = _write_tar(tmp / "fashion10k.tar.gz", members)
        folder = _write_folder(tmp / "fashion10k", members)
        large = _write_zip(tmp / "large.zip", [(f"{k}/{name}", png) for k in range(args.large // len(members))
                                              for name, png in members])
        version_dir = max((p for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        results = {"decode": _decode_costs(zip_path)}
        server, address, _ = start_server(repo, tmp, [])
        try:
            score = lambda *a: _score(address, tmp, *a)  # noqa: E731
            rounds = []
            for _ in range(args.rounds):
                idx, png_zip = score(str(IDX)), score(str(zip_path))
                rounds.append((png_zip["rate"] / idx["rate"], idx, png_zip))
            ratio, results["idx"], results["zip"] = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
            results["ratio"], results["ratios"] = ratio, [r[0] for r in rounds]
            results["tar"] = score(str(tar_path))
            results["folder"] = score(str(folder))
            results["zip_threads"] = score(str(zip_path), "--decode-workers", "0")
            results["rss_small"] = score(str(zip_path))
            results["rss_large"] = score(str(large))
            results["rpc"] = asyncio.run(_rpc_modes(address, load_dataset("fashion_mnist", "train", FASHION_DIR,
                                                                          download_missing=False).images))
        finally:
            server.terminate()
            server.wait(30)
        results["inprocess"] = _json_of([sys.executable, "-m", "bench.inprocess", str(version_dir), "1024"])
    print(_table(results, args.large))
    return 0


def _score(address: str, tmp: Path, images: str, *extra: str) -> dict:
    """One ``tfclassify score`` run: its printed rate and the scorer process's peak RSS."""
    out = tmp / "out.jsonl"
    proc = subprocess.Popen(
        [str(BIN / "tfclassify"), "score", "--server", address, "--model", MODEL, "--images", images,
         "--output", str(out), "--overwrite", "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: score failed ({proc.returncode}): {stderr}")
    # "scored 10,000 images of photos.zip with fashion_mnist version 1 in 1.23 s (8,130 images/s, +0.05 s ...)"
    match = re.search(r"scored ([\d,]+) images? .*? in ([\d.]+) s \(([\d,]+) images/s", stdout)
    if match is None:
        raise SystemExit(f"bench: no timing in the output of score {images}: {stdout[-2000:]}")
    return {"images": int(match.group(1).replace(",", "")), "seconds": float(match.group(2)),
            "rate": float(match.group(3).replace(",", "")), "rss_mib": usage.ru_maxrss / 1024}


async def _rpc_modes(address: str, images: np.ndarray, batch: int = 4096, rounds: int = 3) -> dict:
    """Images/s of the same batches over one ClassifyStream call and over 4 concurrent unary calls."""
    requests = []
    for start in range(0, len(images), batch):
        request = classify_request(images[start : start + batch], MODEL, None, None, 0, False, True)
        request.request_id = str(start)
        requests.append(request)
    async with grpc.aio.insecure_channel(address, options=channel_options(64 << 20, address)) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        slots = asyncio.Semaphore(4)

        async def unary(request):
            async with slots:
                return await stub.Classify(request, timeout=60)

        async def stream():
            return [r async for r in stub.ClassifyStream(iter(requests), timeout=60)]

        rates: dict[str, list[float]] = {"stream": [], "unary": []}
        for _ in range(rounds):
            for mode in ("unary", "stream"):
                t0 = time.perf_counter()
                answers = await (stream() if mode == "stream" else asyncio.gather(*(unary(r) for r in requests)))
                rates[mode].append(len(images) / (time.perf_counter() - t0))
                assert sum(len(a.classes) for a in answers) == len(images)
    return {mode: sorted(r)[len(r) // 2] for mode, r in rates.items()}


def _decode_costs(zip_path: Path, n: int = 3000) -> dict:
    """Microseconds per image to read a PNG from the zip and to decode it, on one core of this process."""
    refs = [item.ref for _, item in zip(range(n), open_input(zip_path).items())]
    files: dict = {}
    t0 = time.perf_counter()
    blobs = [read_file_ref(ref, files) for ref in refs]
    t1 = time.perf_counter()
    spec = ConversionSpec()
    for blob in blobs:
        decode_image(blob, spec, ("PNG",))
    t2 = time.perf_counter()
    return {"read_us": (t1 - t0) / n * 1e6, "decode_us": (t2 - t1) / n * 1e6}


def _table(r: dict, large: int) -> str:
    idx, png_zip, inproc = r["idx"], r["zip"], r["inprocess"]
    small, big = r["rss_small"], r["rss_large"]
    per_image = r["decode"]["read_us"] + r["decode"]["decode_us"]
    rows = [
        ("1. IDX file, 10,000 images", f"{idx['rate']:,.0f} images/s", f"{idx['seconds']:.2f} s"),
        ("1. .zip of 10,000 PNGs", f"{png_zip['rate']:,.0f} images/s",
         f"ratio to IDX {r['ratio']:.2f} (goal >= 0.7; rounds {', '.join(f'{x:.2f}' for x in r['ratios'])})"),
        ("2. .tar.gz of the PNGs", f"{r['tar']['rate']:,.0f} images/s", f"ratio to IDX {r['tar']['rate'] / idx['rate']:.2f}"),
        ("2. folder of the PNGs", f"{r['folder']['rate']:,.0f} images/s", f"ratio to IDX {r['folder']['rate'] / idx['rate']:.2f}"),
        ("2. .zip decoded on threads", f"{r['zip_threads']['rate']:,.0f} images/s",
         f"processes are {png_zip['rate'] / r['zip_threads']['rate']:.2f}x threads"),
        ("3. IDX vs in-process (batch 1024)", f"{inproc['best_images_per_second']:,.0f} images/s in-process",
         f"IDX scoring ratio {idx['rate'] / inproc['best_images_per_second']:.2f}"),
        (f"4. peak RSS, 10k vs {large // 1000}k PNG zip", f"{small['rss_mib']:.0f} vs {big['rss_mib']:.0f} MiB",
         f"+{100 * (big['rss_mib'] / small['rss_mib'] - 1):.1f}% (goal <= 10%); large: {big['rate']:,.0f} images/s"),
        ("5. one PNG: zip read + decode", f"{r['decode']['read_us']:.1f} + {r['decode']['decode_us']:.1f} us",
         f"one core decodes {1e6 / per_image:,.0f} images/s"),
        ("6. 60k images, 4096 per request", f"unary x4: {r['rpc']['unary']:,.0f} images/s",
         f"one ClassifyStream: {r['rpc']['stream']:,.0f} images/s (median of 3 alternated rounds)"),
    ]
    width = max(len(a) for a, _, _ in rows) + 2
    lines = [f"{'measure':<{width}}{'result':<32}notes"]
    lines += [f"{a:<{width}}{b:<32}{c}" for a, b, c in rows]
    return "\n".join(lines)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def _write_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _write_folder(root: Path, members) -> Path:
    for name, data in members:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


if __name__ == "__main__":
    sys.exit(main())
