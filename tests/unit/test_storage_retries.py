"""Retries of object-store requests (``common.storage.retries``) without an S3 server: the real store of the
library (obstore's S3Store, made by ``stores``) against a scripted HTTP server on loopback that answers 503
SlowDown, 429, 500, 403 or 404, drops the connection, breaks an answer off midway or stalls, then answers. Each
transient failure is tried again and counted under its kind; a refusal is not tried again."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from tfclassify.common.storage import reads, retries, stores, writes
from tfclassify.common.storage.errors import ACCESS_DENIED, MISSING_OBJECT, StorageError
from tfclassify.common.storage.urls import parse

obstore = pytest.importorskip("obstore")

BODY = bytes(range(256)) * 12  # 3 KiB
#: Retries fast enough for a unit test (the library's shape, milliseconds apart).
FAST: dict[str, Any] = {"max_retries": 3, "backoff": {"init_backoff": timedelta(milliseconds=1),
                                      "max_backoff": timedelta(milliseconds=5), "base": 2},
        "retry_timeout": timedelta(seconds=5)}
ANSWERS = {"503": b"503 Slow Down", "429": b"429 Too Many Requests", "500": b"500 Internal Server Error",
           "403": b"403 Forbidden", "404": b"404 Not Found"}
CODES = {"503": b"SlowDown", "429": b"SlowDown", "500": b"InternalError", "403": b"AccessDenied",
         "404": b"NoSuchKey"}


class ScriptedServer:
    """An HTTP/1.1 server on loopback standing for bucket ``b``: request N gets step N of ``script`` ("503", "429",
    "500", "403", "404", "drop": closed once the request is in, "stall": no answer for 3 s, "cut": half the body,
    1.25 MiB at most, then closed), then plain answers: the object ``body`` at any key (ranges honoured) and a
    listing of ``keys`` two a page (``start-after`` and continuation tokens honoured). ``requests`` holds each
    request line."""

    def __init__(self, script: list[str], keys: Sequence[str] = (), body: bytes = BODY) -> None:
        self.script = list(script)
        self.body = body
        self.keys = sorted(keys)
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line = head.split("\r\n", 1)[0]
                self.requests.append(line)
                sent = re.search(r"(?im)^content-length: (\d+)", head)
                if sent:
                    await reader.readexactly(int(sent.group(1)))  # a PUT's body
                step = self.script.pop(0) if self.script else "ok"
                if step == "drop":
                    return
                if step == "stall":
                    await asyncio.sleep(3)
                    return
                if step in ANSWERS:
                    body = b"<Error><Code>" + CODES[step] + b"</Code></Error>"
                    writer.write(b"HTTP/1.1 " + ANSWERS[step] + b"\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + (b"" if line.startswith("HEAD") else body))
                    await writer.drain()
                    continue
                status, headers, body = self._answer(line, head)
                if step == "cut":
                    body = body[: min(len(body) // 2, 5 << 18)]
                writer.write(b"HTTP/1.1 " + status + b"\r\n" + headers + b"\r\n"
                             + (b"" if line.startswith("HEAD") else body))
                await writer.drain()
                if step == "cut":
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, line: str, head: str) -> tuple[bytes, bytes, bytes]:
        target = line.split(" ", 2)[1]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        if "list-type" in query:
            return self._listing(query)
        start, end = 0, len(self.body) - 1
        ranged = re.search(r"(?im)^range: bytes=(\d+)-(\d*)", head)
        if ranged:
            start, end = int(ranged.group(1)), int(ranged.group(2) or end)
        headers = (b"Content-Length: %d\r\nLast-Modified: Mon, 07 Dec 2026 10:00:00 GMT\r\nETag: \"e\"\r\n"
                   % (end - start + 1))
        if ranged:
            headers += b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, len(self.body))
        return (b"206 Partial Content" if ranged else b"200 OK"), headers, self.body[start : end + 1]

    def _listing(self, query: dict[str, list[str]]) -> tuple[bytes, bytes, bytes]:
        after = (query.get("continuation-token") or query.get("start-after") or [""])[0]
        rest = [k for k in self.keys if k > after]
        page, more = rest[:2], len(rest) > 2
        contents = "".join(f"<Contents><Key>{k}</Key><LastModified>2026-12-07T10:00:00.000Z</LastModified>"
                           f"<ETag>\"e\"</ETag><Size>{len(self.body)}</Size></Contents>" for k in page)
        token = f"<NextContinuationToken>{page[-1]}</NextContinuationToken>" if more else ""
        body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>{len(page)}'
                f"</KeyCount><IsTruncated>{'true' if more else 'false'}</IsTruncated>{contents}{token}"
                "</ListBucketResult>").encode()
        return b"200 OK", b"Content-Type: application/xml\r\nContent-Length: %d\r\n" % len(body), body

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def scripted(monkeypatch) -> Iterator:
    """``scripted(script, keys=(), body=BODY)``: a ``ScriptedServer``, the environment pointing S3 at it (a 0.5 s
    timeout), and the retry counts started from zero."""
    servers: list[ScriptedServer] = []

    def start(script: list[str], keys: Sequence[str] = (), body: bytes = BODY) -> ScriptedServer:
        server = ScriptedServer(script, keys, body)
        servers.append(server)
        for name in stores._SETTINGS:
            monkeypatch.delenv(name, raising=False)
        for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.port}", "AWS_ACCESS_KEY_ID": "test-id",
                            "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true", stores.TIMEOUT_VARIABLE: "0.5"}.items():
            monkeypatch.setenv(name, value)
        retries.reset()
        return server

    yield start
    for server in servers:
        server.stop()
    retries.reset()


def counted() -> dict[str, int]:
    return {kind: n for kind, n in retries.counts().items() if n}


@pytest.mark.parametrize("step, kind", [("503", "throttled"), ("429", "throttled"), ("500", "server_error"),
                                        ("drop", "connection"), ("cut", "connection"), ("stall", "timeout")])
def test_a_transient_failure_is_retried_and_counted(scripted, step, kind):
    server = scripted([step, step])
    assert reads.read(parse("s3://b/k.png"), 1 << 20) == BODY
    assert counted() == {kind: 2}
    assert len(server.requests) == 3 and all(r.startswith("GET /b/k.png ") for r in server.requests)


@pytest.mark.parametrize("step, kind", [("403", ACCESS_DENIED), ("404", MISSING_OBJECT)])
def test_a_refusal_is_not_retried(scripted, step, kind):
    server = scripted([step])
    with pytest.raises(StorageError) as failure:
        reads.read(parse("s3://b/k.png"), 1 << 20)
    assert failure.value.kind == kind
    assert len(server.requests) == 1 and counted() == {}


def test_head_ranges_and_async_reads_are_retried(scripted):
    scripted(["503", "drop", "500", "stall", "429"])
    url = parse("s3://b/k.zip")
    assert reads.head(url) == len(BODY)  # 503, then the answer
    assert reads.read_range(url, 10, 20) == BODY[10:30]  # dropped, then the answer
    assert asyncio.run(reads.read_range_async(url, 5, 5)) == BODY[5:10]  # 500, then the answer
    assert asyncio.run(reads.read_async(url, 1 << 20)) == BODY  # stalled past 0.5 s, 429, then the answer
    assert counted() == {"throttled": 2, "connection": 1, "server_error": 1, "timeout": 1}


def test_a_listing_goes_on_after_the_last_key_it_gave(scripted):
    keys = [f"photos/{i}.png" for i in range(7)]
    server = scripted(["ok", "503", "drop"], keys)  # the first page, then its next page fails twice
    listed = [key for key, _ in reads.list_prefix(parse("s3://b/photos/"), page_size=2)]
    assert listed == keys, "every key once, in order"
    assert counted() == {"throttled": 1, "connection": 1}
    resumed = server.requests[3]
    assert "start-after=photos%2F1.png" in resumed and "continuation-token" not in resumed, server.requests


def test_a_stream_cut_midway_goes_on_from_where_it_stopped(scripted):
    server = scripted(["cut"])
    with reads.open_stream(parse("s3://b/archive.tar")) as stream:
        assert stream.read() == BODY
    assert counted() == {"connection": 1}
    assert len(server.requests) == 2


def test_a_stream_that_moves_on_is_never_given_up(scripted):
    """Cut more often than ``STREAM_RESUMES``, each time after a chunk more: it goes on to the end. (A chunk is
    1 MiB: the bytes of a chunk cut short are read again.)"""
    cuts = reads.STREAM_RESUMES + 3
    body = bytes(range(256)) * (48 << 10)  # 12 MiB
    scripted(["cut"] * cuts, body=body)
    with reads.open_stream(parse("s3://b/archive.tar")) as stream:
        assert stream.read() == body
    assert counted() == {"connection": cuts}


def test_a_put_and_a_head_of_writes_are_retried(scripted):
    server = scripted(["503", "drop", "ok", "500"])  # three PUTs, then two HEADs
    writes.put(parse("s3://b/out/part-1.jsonl"), b"{}\n")
    assert writes.exists(parse("s3://b/out/part-1.jsonl"))
    assert [r.split(" ")[0] for r in server.requests] == ["PUT", "PUT", "PUT", "HEAD", "HEAD"]
    assert counted() == {"throttled": 1, "connection": 1, "server_error": 1}


def _store_at(endpoint: str):
    return obstore.store.S3Store("b", endpoint=endpoint, region="us-east-1", access_key_id="test-id",
                                 secret_access_key="test-secret", client_options={"allow_http": True},
                                 retry_config=stores.NO_RETRY)


def test_a_refused_connection_is_retried_within_the_limits_an_unknown_host_not():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    retries.reset()
    store = _store_at(f"http://127.0.0.1:{port}")
    with pytest.raises(Exception, match=r"(?i)connect"):
        retries.call(lambda: obstore.head(store, "k"), retry=FAST)
    assert counted() == {"connection": FAST["max_retries"]}
    retries.reset()
    unknown = _store_at("http://no-such-host.invalid:9000")  # a wrong endpoint fails at once
    with pytest.raises(Exception, match="dns error"):
        retries.call(lambda: obstore.head(unknown, "k"), retry=FAST)
    assert counted() == {}


def test_the_limits_and_what_is_never_retried():
    retries.reset()
    attempts: list[int] = []

    def failing(exc: Exception):
        def attempt() -> None:
            attempts.append(1)
            raise exc
        return attempt

    with pytest.raises(ConnectionResetError):
        retries.call(failing(ConnectionResetError()), retry=FAST)
    assert len(attempts) == FAST["max_retries"] + 1 and counted() == {"connection": FAST["max_retries"]}
    attempts.clear()
    with pytest.raises(TimeoutError):  # none started past retry_timeout
        retries.call(failing(TimeoutError()), retry={**FAST, "retry_timeout": timedelta(0)})
    assert len(attempts) == 1
    for exc in (ValueError("not a store's failure"), FileNotFoundError("Object at location k not found")):
        attempts.clear()
        with pytest.raises(type(exc)):
            retries.call(failing(exc), retry=FAST)
        assert len(attempts) == 1
    assert counted() == {"connection": FAST["max_retries"]}
    retries.reset()


def test_the_counter_is_thread_safe():
    retries.reset()

    def count_many() -> None:
        for _ in range(2000):
            retries.count("timeout")

    threads = [threading.Thread(target=count_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert retries.counts() == {"throttled": 0, "server_error": 0, "connection": 0, "timeout": 16000}
    retries.reset()


def test_the_timeout_is_set_by_the_environment(monkeypatch):
    monkeypatch.delenv(stores.TIMEOUT_VARIABLE, raising=False)
    assert stores.request_timeout() == 30.0
    monkeypatch.setenv(stores.TIMEOUT_VARIABLE, "2.5")
    assert stores.default_client_options()["read_timeout"] == timedelta(seconds=2.5)
    for wrong in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv(stores.TIMEOUT_VARIABLE, wrong)
        with pytest.raises(StorageError, match="TFCLASSIFY_STORAGE_TIMEOUT"):
            stores.request_timeout()
