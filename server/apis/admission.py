"""Admission control: how many requests the server works on at once, in all and per client.

Past the limit a request is refused at once with RESOURCE_EXHAUSTED instead of joining an ever longer line,
so under overload the requests that are admitted keep a bounded latency, the refused ones learn it in
microseconds (and back off), and the server recovers as soon as the load drops. A per-client share keeps one
caller from taking every slot: a client is its bearer token when tokens are on (one service may call from
many pods), else its IP address.

Each message of a stream counts while it is being answered, not the open stream itself: a thousand idle
streams hold no slot.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tfclassify.server.auth import bearer_token
from tfclassify.server.core.errors import ServerBusyError


class Admission:
    """Counts requests in progress; ``admit`` refuses one past ``limit`` (all clients) or ``per_client``
    (0: no per-client share)."""

    def __init__(self, limit: int, per_client: int = 0, by_token: bool = False) -> None:
        if limit < 1 or per_client < 0:
            raise ValueError("the request limit must be at least 1 and the per-client share not negative")
        self.limit, self.per_client, self.by_token = limit, per_client, by_token
        self.in_progress = 0
        self._by_client: dict[str, int] = {}

    def admit(self, context: grpc.aio.ServicerContext) -> str | None:
        """Count a request in; returns the client key to ``release`` it with. ``ServerBusyError`` past a limit."""
        if self.in_progress >= self.limit:
            raise ServerBusyError(
                f"the server is busy: {self.in_progress} requests are in progress (limit {self.limit}); "
                "retry with backoff")
        client = None
        if self.per_client:
            client = self._client_of(context)
            held = self._by_client.get(client, 0)
            if held >= self.per_client:
                raise ServerBusyError(
                    f"this client has {held} requests in progress (limit {self.per_client} per client); "
                    "wait for answers before sending more")
            self._by_client[client] = held + 1
        self.in_progress += 1
        return client

    def release(self, client: str | None) -> None:
        """Count a request admitted with ``admit`` out."""
        self.in_progress -= 1
        if client is not None:
            held = self._by_client[client] - 1
            if held:
                self._by_client[client] = held
            else:
                del self._by_client[client]  # no entry per client that has gone: the table stays small

    def _client_of(self, context: grpc.aio.ServicerContext) -> str:
        if self.by_token:
            token = bearer_token(context.invocation_metadata())
            if token is not None:
                return "token:" + token
        # "ipv4:10.1.2.3:51234" or "ipv6:[::1]:51234": the address without the port (one client, many connections).
        return context.peer().rpartition(":")[0]


class ByteBudget:
    """Bytes of large request messages being decoded and answered at once.

    A request message is decoded (protobuf makes a copy of the bytes gRPC received, reading a tensor another)
    and held while its images are prepared and run: a 64 MiB message costs about 200 MB until it is answered.
    Messages of ``large_bytes`` or more are counted against ``limit``: one that would pass it is refused at once
    (RESOURCE_EXHAUSTED, before it is decoded) while other calls' messages are in progress; alone, any message
    the size limit lets through is admitted (a stream's own earlier messages do not count as others). Smaller
    messages pass uncounted: they are bounded by the request limit.
    """

    def __init__(self, limit: int, large_bytes: int = 1 << 20,
                 on_change: Callable[[int], None] = lambda in_progress: None,
                 on_refused: Callable[[], None] = lambda: None) -> None:
        if limit < 1:
            raise ValueError("the byte limit must be at least 1")
        self.limit, self.large_bytes = limit, large_bytes
        self.in_progress = 0
        self._on_change, self._on_refused = on_change, on_refused

    def admit(self, size: int, own: int = 0) -> str | None:
        """Count ``size`` bytes in; returns None, or why they are refused (nothing is counted then). ``own``: bytes
        the same call already holds (a stream's earlier messages), which do not count as others in progress."""
        if self.in_progress > own and self.in_progress + size > self.limit:
            self._on_refused()
            return (f"the server is decoding and answering {self.in_progress / 2**20:.1f} MiB of large requests "
                    f"(limit {self.limit / 2**20:.1f} MiB, --max-request-bytes-in-progress); this "
                    f"{size / 2**20:.1f} MiB request would pass it: retry with backoff, or send smaller requests")
        self.in_progress += size
        self._on_change(self.in_progress)
        return None

    def release(self, size: int) -> None:
        """Count ``size`` bytes admitted with ``admit`` out."""
        self.in_progress -= size
        self._on_change(self.in_progress)
