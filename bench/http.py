"""``python -m bench.http`` (``make bench-http``): the HTTP/REST port beside gRPC, one table.

In one run on one server, with ratios taken within each round (the machine's speed moves from one minute
to the next) and the median of three rounds shown:

1. single images from 64 concurrent callers: our ``Classify`` over HTTP (protobuf body) ÷ the same message
   over gRPC (``bench.load``), and the Open Inference Protocol (binary extension and JSON) and TensorFlow
   Serving's REST ``:predict`` ÷ that same gRPC round;
2. single images from 1 caller: p50 over HTTP and over gRPC;
3. 1,024-image requests with each protocol's own HTTP client (``tritonclient.http`` binary and JSON,
   TensorFlow Serving REST JSON) ÷ the in-process baseline at batch 1,024.

Trains the benchmark model unless --model-repo names a repository holding ``fashion_mnist``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.__main__ import MODEL, _in_process_rate, _json_of, _median_round, cpu_seconds, start_server, train_model

HTTP_KINDS = ("classifier", "oip_binary", "oip_json", "tfserving_json")
NAMES = {"classifier": "our Classify, protobuf", "oip_binary": "Open Inference, binary",
         "oip_json": "Open Inference, JSON", "tfserving_json": "TF Serving REST, JSON"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-http-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "models")
        version_dir = max((p for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        server, address, pid = start_server(repo, Path(tmp), args.serve_args)
        url = f"http://127.0.0.1:{start_server.http_port}"  # type: ignore[attr-defined]
        try:
            c64 = [_single_round(address, url, pid, 64, args.seconds) for _ in range(args.rounds)]
            c1 = [_single_round(address, url, pid, 1, args.seconds, kinds=("classifier",)) for _ in range(args.rounds)]
            batched = [_batched_round(url, version_dir) for _ in range(args.rounds)]
        finally:
            server.terminate()
            server.wait(30)
    print(_table(c64, c1, batched))
    return 0


def _single_round(address: str, url: str, pid: int, concurrency: int, seconds: float,
                  kinds: tuple[str, ...] = HTTP_KINDS) -> dict:
    load = ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    out = {"grpc": _with_server_cpu(pid, [sys.executable, "-m", "bench.load", address, MODEL, *load])}
    for kind in kinds:
        out[kind] = _with_server_cpu(pid, [sys.executable, "-m", "bench.http_load", url, MODEL, "--kind", kind, *load])
    return out


def _with_server_cpu(pid: int, command: list[str]) -> dict:
    """A load generator's result, with the server's CPU time per answered request (µs) while it ran: steadier
    than requests/s on a shared machine."""
    before = cpu_seconds(pid)
    result = _json_of(command)
    result["server_cpu_us"] = (cpu_seconds(pid) - before) / max(1, result["requests"]) * 1e6
    return result


def _batched_round(url: str, version_dir: Path) -> dict:
    in_process = _in_process_rate(version_dir, 1024)
    rates = _json_of([sys.executable, "-m", "bench.http_apis", url, MODEL, "--images", "1024"])
    return {"in_process": in_process, **{k: v for k, v in rates.items() if k != "images"}}


def _table(c64: list[dict], c1: list[dict], batched: list[dict]) -> str:
    rows = []
    for kind in HTTP_KINDS:
        ratio, rate, grpc = _median_round([(r[kind]["requests_per_second"] / r["grpc"]["requests_per_second"],
                                            r[kind]["requests_per_second"], r["grpc"]["requests_per_second"])
                                           for r in c64])
        median = next(r for r in c64 if r[kind]["requests_per_second"] == rate)
        errors = sum(sum(r[kind]["errors"].values()) for r in c64)
        rows.append((f"1. 64 callers, 1 image: {NAMES[kind]}",
                     f"{rate:,.0f} req/s, p99 {median[kind]['p99_ms']:.1f} ms, server CPU "
                     f"{median[kind]['server_cpu_us']:.0f} us/req",
                     f"{ratio:.2f}x gRPC Classify ({grpc:,.0f} req/s, p99 {median['grpc']['p99_ms']:.1f} ms, "
                     f"{median['grpc']['server_cpu_us']:.0f} us/req)" + (f"; {errors} errors" if errors else "")))
    http_p50 = sorted(r["classifier"]["p50_ms"] for r in c1)[len(c1) // 2]
    grpc_p50 = sorted(r["grpc"]["p50_ms"] for r in c1)[len(c1) // 2]
    rows.append(("2. 1 caller, 1 image: our Classify", f"p50 {http_p50:.2f} ms over HTTP", f"{grpc_p50:.2f} ms over gRPC"))
    for kind in ("oip_binary", "oip_json", "tfserving_json"):
        ratio, rate, base = _median_round([(r[kind] / r["in_process"], r[kind], r["in_process"]) for r in batched])
        rows.append((f"3. 1,024 images per call: {NAMES[kind]}", f"{rate:,.0f} images/s",
                     f"{ratio:.2f}x in process ({base:,.0f} images/s)"))
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    header = f"tfclassify over HTTP/REST and gRPC (median of {len(c64)} interleaved rounds)"
    return "\n".join([header, *(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)])


if __name__ == "__main__":
    sys.exit(main())
