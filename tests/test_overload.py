"""Overload: past ``--max-requests-in-progress`` a request is refused at once with RESOURCE_EXHAUSTED (counted
in the metrics), the admitted ones are answered, and the server serves normally when the load drops; with
``--max-requests-per-client`` a flooding client is held to its share while another client still gets in."""

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
        async with ClassifierClient(proc.address) as client:
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
        async with ClassifierClient(shared.address, token="flooding-client-token-0001") as flooder, \
                ClassifierClient(shared.address, token="polite-client-token-000002") as polite:
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
    --max-pending-calls gRPC refuses new ones before the server sees them (grpcio's Python client reports
    them as CANCELLED, C-core resetting the stream after its RESOURCE_EXHAUSTED), and the rest are served."""
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
        assert codes["OK"] >= 2 and set(codes) <= {"OK", "CANCELLED", "RESOURCE_EXHAUSTED"}, codes
        assert codes["OK"] < 200, "a burst of 200 is more than 2 pending calls"
        served = metric_value(proc.metrics_text(), "tfclassify_requests_total", code="OK")
        assert served == codes["OK"] + 1, "the refused calls never reached the server"
        assert asyncio.run(burst(1)) == {"OK": 1}, "the server serves normally after the burst"
    finally:
        assert proc.stop() == 0


def test_limits_must_not_be_negative(model_repo):
    for flag, value, message in (("--max-requests-per-client", "-1", "must not be negative"),
                                 ("--max-pending-calls", "1", "--max-pending-calls must be 2 or more, not 1")):
        result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(model_repo), flag, value),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
