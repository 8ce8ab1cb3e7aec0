"""``python -m bench.overload`` (``make bench-overload``): the server at several times its capacity.

For each ``--max-requests-in-progress`` value (0: no limit), one run on the same machine:

1. capacity: requests of ``--images`` images from 32 closed-loop callers for ``--seconds``;
2. overload: an open-loop sender offering ``--factor`` times that rate for ``--seconds`` (each request with a
   10 s deadline), counting answers by status, the latency of admitted and of refused requests, and the
   server's peak resident memory;
3. recovery: as soon as the overload stops, one caller's requests for 2 s (all must succeed).

Prints one table. Choose the limit as about capacity (requests/s) x the latency you accept (s). gRPC core answers
the calls it refuses past its pending-call limit (``--max-pending-calls``, before the server sees them) with
CANCELLED.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.__main__ import MODEL, start_server, train_model
from tfclassify.common.tensors import to_tensor_proto
from tfclassify.server.runtime.memory import resident_mib
from tfclassify.v1 import classifier_pb2 as pb

METHOD = "/tfclassify.v1.Classifier/Classify"
DEADLINE_S = 10.0


def payload(images: int) -> bytes:
    request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=MODEL))
    rng = np.random.default_rng(0)
    to_tensor_proto(rng.integers(0, 256, (images, 28, 28), dtype=np.uint8), out=request.tensor)
    return request.SerializeToString()


async def capacity(call, body: bytes, seconds: float, callers: int = 32) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call(body, timeout=DEADLINE_S)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - started)


async def overload(call, body: bytes, rate: float, seconds: float, pid: int) -> dict:
    codes: Counter = Counter()
    admitted: list[float] = []
    refused: list[float] = []
    rss_peak = resident_mib(pid)

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            await call(body, timeout=DEADLINE_S)
            admitted.append(time.perf_counter() - t0)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused.append(time.perf_counter() - t0)

    tasks = []
    started = time.perf_counter()
    sent = 0
    last_rss = started
    while (now := time.perf_counter()) < started + seconds:
        due = int((now - started) * rate)  # open loop: send what is due, whatever the answers
        while sent < due:
            tasks.append(asyncio.ensure_future(one()))
            sent += 1
        if now - last_rss > 0.5:
            rss_peak, last_rss = max(rss_peak, resident_mib(pid)), now
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    drained = time.perf_counter() - started - seconds
    pct = lambda xs, q: float(np.percentile(xs, q) * 1e3) if xs else float("nan")  # noqa: E731
    return {"offered": sent / seconds, "codes": dict(codes), "ok_per_s": codes["OK"] / (seconds + drained),
            "admitted_p50_ms": pct(admitted, 50), "admitted_p99_ms": pct(admitted, 99),
            "refused_p50_ms": pct(refused, 50), "drain_s": drained, "rss_peak_mib": rss_peak}


async def recovery(call, body: bytes, seconds: float = 2.0) -> dict:
    latencies, failures = [], 0
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            await call(body, timeout=DEADLINE_S)
            latencies.append(time.perf_counter() - t0)
        except grpc.aio.AioRpcError:
            failures += 1
    return {"p50_ms": float(np.median(latencies) * 1e3) if latencies else float("nan"), "failures": failures}


def server_quantile(metrics_port: int, q: float) -> float:
    """The ``q`` quantile (ms, bucket upper bound) of the server's own Classify durations (answered or refused): the time
    in its handler, without what a request spent in the network, gRPC's queues or the client."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tfclassify_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("method") == "Classify":
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    total = buckets.get(float("inf"), 0.0)
    for le in sorted(buckets):
        if total and buckets[le] >= q * total:
            return le * 1e3
    return float("nan")


async def measure(address: str, images: int, factor: float, seconds: float, pid: int) -> dict:
    body = payload(images)
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = channel.unary_unary(METHOD)
        await call(body, timeout=DEADLINE_S)
        cap = await capacity(call, body, seconds)
        row = {"capacity": cap, "rss_before_mib": resident_mib(pid)}
        row.update(await overload(call, body, cap * factor, seconds, pid))
        row["server_p99_ms"] = server_quantile(start_server.metrics_port, 0.99)  # capacity and overload phases
        row["recovery"] = await recovery(call, body)
        row["rss_after_mib"] = resident_mib(pid)
        return row


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--images", type=int, default=64, help="images per request [default: %(default)s]")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity [default: %(default)s]")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase [default: %(default)s]")
    parser.add_argument("--limits", default="0,1024,64",
                        help="--max-requests-in-progress values to compare [default: %(default)s]")
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="tfclassify-overload-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "models")
        for limit in (int(v) for v in args.limits.split(",")):
            server, address, pid = start_server(repo, Path(tmp), [*args.serve_args, "--max-requests-in-progress",
                                                                str(limit)])
            try:
                rows[limit] = asyncio.run(measure(address, args.images, args.factor, args.seconds, pid))
            finally:
                server.terminate()
                server.wait(60)
    print(table(rows, args))
    return 0


def table(rows: dict, args: argparse.Namespace) -> str:
    lines = [f"Overload: {args.images}-image Classify requests, open loop at {args.factor:g}x capacity for "
             f"{args.seconds:g} s (deadline {DEADLINE_S:g} s)", "",
             "| limit | capacity req/s | offered req/s | answered OK req/s | OK | shed (RESOURCE_EXHAUSTED) | "
             "refused by gRPC core (CANCELLED) | deadline exceeded | admitted p50 / p99 ms | server's own p99 ms | "
             "shed p50 ms | drain after s | RSS before / peak / after "
             "MiB | recovery p50 ms (failures) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for limit, r in rows.items():
        c = r["codes"]
        lines.append(
            f"| {limit or 'none'} | {r['capacity']:,.0f} | {r['offered']:,.0f} | {r['ok_per_s']:,.0f} | "
            f"{c.get('OK', 0):,} | {c.get('RESOURCE_EXHAUSTED', 0):,} | {c.get('CANCELLED', 0):,} | "
            f"{c.get('DEADLINE_EXCEEDED', 0):,} | "
            f"{r['admitted_p50_ms']:,.0f} / {r['admitted_p99_ms']:,.0f} | ≤ {r['server_p99_ms']:,.0f} | "
            f"{r['refused_p50_ms']:.1f} | "
            f"{r['drain_s']:.1f} | {r['rss_before_mib']:,.0f} / {r['rss_peak_mib']:,.0f} / {r['rss_after_mib']:,.0f} | "
            f"{r['recovery']['p50_ms']:.1f} ({r['recovery']['failures']}) |")
    others = sorted({k for r in rows.values() for k in r["codes"]}
                    - {"OK", "RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED"})
    if others:
        lines.append("\nOther statuses: " + "; ".join(f"limit {limit}: {rows[limit]['codes']}" for limit in rows))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
