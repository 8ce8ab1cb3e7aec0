"""``python -m bench.perf_analyzer`` (``make bench-oip``): Triton's perf_analyzer
against ``tfclassify serve`` over the Open Inference Protocol, gRPC and HTTP, one table.

Single-image ``ModelInfer`` requests (random UINT8 data, as perf_analyzer
generates it) from 1, 16 and 64 concurrent synchronous callers, over gRPC and
over HTTP (``-i http``: the binary tensor extension) in alternation; client-side
throughput and latency, and the server's own split of the time (queue,
compute), which perf_analyzer reads from ``ModelStatistics``. perf_analyzer
comes from bench/get_perf_analyzer.sh. Trains the benchmark model unless
--model-repo names a repository holding ``fashion_mnist``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.__main__ import MODEL, start_server, train_model

ROOT = Path(__file__).resolve().parents[1]
PERF_ANALYZER = ROOT / "build" / "perf-analyzer" / "perf_analyzer"
CONCURRENCY = (1, 16, 64)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_analyzer", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    parser.add_argument("--batch-size", type=int, default=1, help="images per request")
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    subprocess.run(["bash", str(ROOT / "bench" / "get_perf_analyzer.sh")], check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-oip-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "models")
        server, address, _ = start_server(repo, Path(tmp), args.serve_args)
        endpoints = {"grpc": address, "http": f"127.0.0.1:{start_server.http_port}"}  # type: ignore[attr-defined]
        try:
            for concurrency in CONCURRENCY:
                for protocol, url in endpoints.items():
                    row = _measure(url, protocol, concurrency, args.batch_size, args.window_ms, Path(tmp))
                    rows.append({**row, "protocol": protocol})
        finally:
            server.terminate()
            server.wait(30)
    print(_table(rows, args.batch_size))
    return 0


def _measure(address: str, protocol: str, concurrency: int, batch_size: int, window_ms: int, tmp: Path) -> dict:
    report = tmp / f"{protocol}-c{concurrency}.csv"
    cmd = [
        str(PERF_ANALYZER), "-m", MODEL, "-u", address, "-i", protocol, "-b", str(batch_size),
        "--concurrency-range", str(concurrency), "-p", str(window_ms), "--max-trials", "10", "--stability-percentage", "25", "-f", str(report),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"perf_analyzer failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    with report.open() as f:
        (row,) = list(csv.DictReader(f))
    return row


def _table(rows: list[dict], batch_size: int) -> str:
    def ms(row: dict, column: str) -> str:
        return f"{int(row[column]) / 1000:.2f}"

    lines = [
        f"perf_analyzer, ModelInfer, {batch_size} image(s) per request (latencies in ms)",
        f"{'protocol':>8} {'concurrency':>11} {'infer/s':>9} {'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7} "
        f"{'server queue':>12} {'server infer':>12}",
    ]
    for row in rows:
        lines.append(
            f"{row['protocol']:>8} {row['Concurrency']:>11} {float(row['Inferences/Second']):>9,.0f} "
            f"{ms(row, 'p50 latency'):>7} "
            f"{ms(row, 'p90 latency'):>7} {ms(row, 'p95 latency'):>7} {ms(row, 'p99 latency'):>7} "
            f"{ms(row, 'Server Queue'):>12} {ms(row, 'Server Compute Infer'):>12}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
