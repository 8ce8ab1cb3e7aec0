"""Overload: past ``--max-requests-in-progress`` a request is refused at once with RESOURCE_EXHAUSTED (counted
in the metrics), the admitted ones are answered, and the server serves normally when the load drops; with
``--max-requests-per-client`` a flooding client is held to its share while another client still gets in. The
server's side is seen through clients that do not retry (``retries=0``); the client library's default retries
are tested last."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, metric_value, tfclassify_cmd

from tfclassify.client import TfclassifyError
from tfclassify.client.aio import ClassifierClient
from tfclassify.client.requests import classify_request

BATCH = np.random.default_rng(0).integers(0, 256, (1024, 28, 28), dtype=np.uint8)


async def flood(client: ClassifierClient, callers: int, requests_each: int,
                seconds: float = 0.0) -> tuple[Counter, list[str]]:
    """``callers`` concurrent callers sending ``requests_each`` 1,024-image requests back to back (and, with
    ``seconds``, going on until that long has passed)."""
    codes: Counter = Counter()
    messages: list[str] = []
    until = time.monotonic() + seconds

    async def caller() -> None:
        sent = 0
        while sent < requests_each or time.monotonic() < until:
            sent += 1
            try:
                result = await client.classify(BATCH, "fashion", timeout=60)
                assert len(result.classes) == len(BATCH)
                codes["OK"] += 1
            except TfclassifyError as exc:
                codes[exc.code.name] += 1
                messages.append(exc.details)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return codes, messages


async def sequential_ok(client: ClassifierClient, n: int) -> int:
    ok = 0
    for _ in range(n):
        ok += len((await client.classify(BATCH[:1], "fashion", timeout=30)).classes)
    return ok


def test_past_the_limit_requests_are_shed_and_the_server_recovers(model_repo, tmp_path):
    proc = ServerProcess(model_repo, tmp_path, "--max-requests-in-progress", "4")

    async def scenario():
        async with ClassifierClient(proc.address, retries=0) as client:
            await client.wait_for_ready(60)
            codes, messages = await flood(client, callers=32, requests_each=4)
            return codes, messages, await sequential_ok(client, 20)

    try:
        codes, messages, after = asyncio.run(scenario())
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert codes["OK"] >= 4 and codes["RESOURCE_EXHAUSTED"] >= 32, codes
        assert sum(codes.values()) == 128
        assert all("the server is busy" in m and "(limit 4)" in m for m in messages), messages[:3]
        assert after == 20, "it serves normally once the load drops"
        metrics = proc.metrics_text()
        assert metric_value(metrics, "tfclassify_requests_total", code="RESOURCE_EXHAUSTED") == \
            codes["RESOURCE_EXHAUSTED"]
    finally:
        assert proc.stop() == 0


@pytest.fixture()
def shared(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("flooding-client-token-0001 *\npolite-client-token-000002 *\n")
    proc = ServerProcess(model_repo, tmp_path, "--auth-tokens", str(tokens), "--max-requests-per-client", "2")
    yield proc
    assert proc.stop() == 0


def test_one_client_flooding_cannot_take_the_slots_of_another(shared):
    async def scenario():
        async with ClassifierClient(shared.address, token="flooding-client-token-0001", retries=0) as flooder, \
                ClassifierClient(shared.address, token="polite-client-token-000002", retries=0) as polite:
            await polite.wait_for_ready(60)
            # Refused requests come back at once: the flood lasts 3 s whatever this machine's speed.
            flooding = asyncio.ensure_future(flood(flooder, callers=32, requests_each=3, seconds=3.0))
            polite_ok = 0
            while not flooding.done():  # one request at a time, all through the flood
                polite_ok += await sequential_ok(polite, 1)
            return await flooding, polite_ok

    (codes, messages), polite_ok = asyncio.run(scenario())
    assert codes["RESOURCE_EXHAUSTED"] >= 32 and codes["OK"] >= 2, codes
    assert all("this client has 2 requests in progress (limit 2 per client)" in m for m in messages), messages[:3]
    assert polite_ok >= 5, "the other client was answered throughout"


def test_past_the_pending_call_limit_grpc_refuses_calls_the_server_never_sees(model_repo, tmp_path):
    """A burst of calls faster than the event loop picks them up waits in gRPC core's own queue; past
    --max-pending-calls gRPC refuses new ones before the server sees them, and the rest are served. gRPC core
    (1.85) answers the refused calls CANCELLED itself: a Trailers-Only response with grpc-status 1 on the wire."""
    proc = ServerProcess(model_repo, tmp_path, "--max-pending-calls", "2")
    body = classify_request(BATCH[:1], "fashion", None, None, 0, False, False).SerializeToString()

    async def burst(n: int) -> Counter:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            call = channel.unary_unary("/tfclassify.v1.Classifier/Classify")
            await call(body, timeout=30)  # connected and warm: the burst goes out at once

            async def one() -> str:
                try:
                    await call(body, timeout=30)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            return Counter(await asyncio.gather(*(one() for _ in range(n))))

    try:
        codes = asyncio.run(burst(200))
        assert codes["OK"] >= 2 and set(codes) <= {"OK", "CANCELLED"}, codes
        assert codes["CANCELLED"] > 0, "a burst of 200 is more than 2 pending calls"
        served = metric_value(proc.metrics_text(), "tfclassify_requests_total", code="OK")
        assert served == codes["OK"] + 1, "the refused calls never reached the server"
        assert asyncio.run(burst(1)) == {"OK": 1}, "the server serves normally after the burst"
    finally:
        assert proc.stop() == 0


def test_the_client_library_sends_refused_calls_again(model_repo, tmp_path):
    """With its default retries the client has gRPC send a refused call again after a jittered backoff: the
    server's RESOURCE_EXHAUSTED (the same flood as above) and gRPC core's CANCELLED past --max-pending-calls.
    More calls are answered than without retries, each once, and the server counts every refused attempt."""
    proc = ServerProcess(model_repo, tmp_path, "--max-requests-in-progress", "4", "--max-pending-calls", "2")

    async def burst(client: ClassifierClient, n: int) -> Counter:
        async def one() -> str:
            try:
                await client.classify(BATCH[:1], "fashion", timeout=30)
                return "OK"
            except TfclassifyError as exc:
                return exc.code.name

        return Counter(await asyncio.gather(*(one() for _ in range(n))))

    async def run(test, retries: int | None):
        # A fresh channel each time: retry throttling counts a channel's failures (the flood's would stop the
        # burst's retries), and 40 calls are few enough for every refused one to be retried.
        async with ClassifierClient(proc.address, **({} if retries is None else {"retries": retries})) as client:
            await client.classify(BATCH[:1], "fashion")  # connected: the calls go out at once
            return await test(client)

    async def scenario():
        floods = [(await run(lambda c: flood(c, callers=32, requests_each=4), r))[0] for r in (0, None)]
        bursts = [await run(lambda c: burst(c, 40), r) for r in (0, None)]
        return floods, bursts

    try:
        (flood_once, flood_retried), (burst_once, burst_retried) = asyncio.run(scenario())
        assert sum(flood_retried.values()) == 128
        assert set(flood_retried) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}, flood_retried
        assert flood_retried["OK"] > flood_once["OK"], (flood_once, flood_retried)
        assert burst_once["CANCELLED"] > 0, burst_once
        assert burst_retried["OK"] > burst_once["OK"], (burst_once, burst_retried)
        metrics = proc.metrics_text()
        answered = sum(c["OK"] for c in (flood_once, flood_retried, burst_once, burst_retried))
        assert metric_value(metrics, "tfclassify_requests_total", code="OK") == answered + 4, "each answered once"
        assert metric_value(metrics, "tfclassify_requests_total", code="RESOURCE_EXHAUSTED") > \
            flood_once["RESOURCE_EXHAUSTED"] + flood_retried["RESOURCE_EXHAUSTED"], "refused attempts were retried"
    finally:
        assert proc.stop() == 0


def test_limits_must_not_be_negative(model_repo):
    for flag, value, message in (("--max-requests-per-client", "-1", "must not be negative"),
                                 ("--max-pending-calls", "1", "--max-pending-calls must be 2 or more, not 1")):
        result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(model_repo), flag, value),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
