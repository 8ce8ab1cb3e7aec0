"""The byte budget of large requests in progress (``--max-request-bytes-in-progress``) and a stream's share of
it, in process (tests/system/test_memory.py measures a server's memory under such requests)."""

from __future__ import annotations

import asyncio

from tfclassify.server.apis.admission import ByteBudget


def test_the_byte_budget_admits_one_alone_and_refuses_past_the_limit():
    refused, changes = [], []
    budget = ByteBudget(100, large_bytes=10, on_change=changes.append, on_refused=lambda: refused.append(1))
    assert budget.admit(150) is None, "alone, any size the message limit lets through is admitted"
    message = budget.admit(10)
    assert message.startswith("the server is decoding and answering 0.0 MiB of large requests (limit 0.0 MiB, "
                              "--max-request-bytes-in-progress); this 0.0 MiB request would pass it")
    assert budget.admit(10, own=150) is None, "a stream's own earlier messages are not others in progress"
    budget.release(10)
    budget.release(150)
    assert budget.admit(60) is None and budget.admit(40) is None and budget.admit(1) is not None
    budget.release(60)
    budget.release(40)
    assert budget.in_progress == 0 and changes == [150, 160, 150, 0, 60, 100, 40, 0] and refused == [1, 1]


def test_a_stream_counts_the_bytes_of_each_request_until_it_is_answered():
    from tfclassify.server.apis.services import LargeRequest, _StreamedRequests

    budget = ByteBudget(100, large_bytes=10)

    async def messages():
        yield "small"  # decoded by gRPC's deserializer: never counted
        yield LargeRequest(b"x" * 60, lambda data: "large")

    async def read() -> list:
        stream = _StreamedRequests(budget)
        got = [request async for request in stream.read(messages())]
        stream.answered()  # the small request's answer frees nothing
        held_after_first = budget.in_progress
        stream.answered()
        return [got, held_after_first, budget.in_progress]

    assert asyncio.run(read()) == [["small", "large"], 60, 0]
