"""A fault-injecting TCP proxy on loopback for the object-storage tests: in front of a real S3 server, it fails the
first request of some connections (dropped, answered 503 SlowDown, or stalled past the client's timeout) and pipes
the others through untouched. Retries must get every object through."""

from __future__ import annotations

import asyncio
import threading

SLOWDOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


class FaultyProxy:
    """A proxy to ``127.0.0.1:upstream_port`` on a free loopback port (``port``).

    With ``faults``, every fourth connection is dropped once its request has arrived and the one after answers
    503 SlowDown and closes. With ``stall_every`` N, every Nth connection whose first request is a GET of an object
    (not a listing) gets no answer at all for ``stall_seconds`` (longer than the client's timeout), then is closed.
    The other connections are piped through. ``dropped``, ``slowed`` and ``stalled`` count the faults injected,
    ``bytes_down`` the bytes the server sent back."""

    def __init__(self, upstream_port: int, faults: bool = True, stall_every: int = 0,
                 stall_seconds: float = 5.0) -> None:
        self.upstream_port = upstream_port
        self.faults = faults
        self.stall_every = stall_every
        self.stall_seconds = stall_seconds
        self.connections = self.dropped = self.slowed = self.stalled = 0
        self._object_gets = 0
        #: Bytes the server sent through the proxy (answers: headers and bodies).
        self.bytes_down = 0
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faulty-proxy", daemon=True)
        self.thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault-injecting proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._started.set()
        self.loop.run_forever()

    def _fault(self, head: bytes) -> str | None:
        """The fault for a new connection whose first request is ``head``: "drop", "slow", "stall" or None."""
        self.connections += 1
        kind = self.connections % 4 if self.faults else 0
        if kind in (1, 2):
            return "drop" if kind == 1 else "slow"
        target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if self.stall_every and head.startswith(b"GET ") and b"?" not in target:  # an object, not a listing
            self._object_gets += 1
            if self._object_gets % self.stall_every == 0:
                return "stall"
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            fault = self._fault(head)
            if fault == "drop":
                self.dropped += 1
                return
            if fault == "slow":
                writer.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(SLOWDOWN)).encode() + b"\r\n\r\n" + SLOWDOWN)
                await writer.drain()
                self.slowed += 1
                return
            if fault == "stall":
                self.stalled += 1
                await asyncio.sleep(self.stall_seconds)  # the request taken, not a byte of an answer
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool = False) -> None:
                try:
                    while data := await src.read(65536):
                        self.bytes_down += len(data) if down else 0
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer, down=True), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the connection ends with the proxy (a handler that ends cancelled is logged as an error)
        finally:
            writer.close()

    def stop(self) -> None:
        """Close the proxy, its connections (stalled ones included) and its thread."""
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
