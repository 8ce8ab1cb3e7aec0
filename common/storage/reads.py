"""Listing, reading and streaming objects, each failure a ``StorageError`` (see ``errors``).

- ``list_prefix``: the objects under a prefix, streamed page by page (1,000 keys a page, as S3 lists them):
  memory does not grow with the number of objects, and the first page is usable before the last is asked for.
- ``head``, ``read``, ``read_range`` (and their ``_async`` forms for the scorer's event loop): one request each.
- ``RangedReader``: a seekable file whose reads are ranged GETs (a zip's directory, read where it lies).
- ``open_stream``: a file reading an object front to back (a tar archive), which continues from where it stopped
  with a ranged GET when the connection drops mid-object.

Every request goes through ``retries`` (a store that never retries by itself): a transient failure (503 SlowDown,
429, other 5xx, a dropped or refused connection, a timeout) is tried again with backoff and counted
(``retries.counts()``); a whole read is tried again when its answer breaks off midway, a listing goes on after the
last key it gave, a stream from where it stopped.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from tfclassify.common.storage import retries
from tfclassify.common.storage.errors import MISSING_OBJECT, OTHER, UNREACHABLE, StorageError, classify, scrub
from tfclassify.common.storage.stores import obstore_module, request_timeout, store_for
from tfclassify.common.storage.urls import ObjectURL

#: Keys per listing request (S3's largest page).
PAGE_SIZE = 1000
#: How often in a row ``open_stream`` picks a dropped stream up again without a byte read in between (each time
#: from where it stopped).
STREAM_RESUMES = 5

T = TypeVar("T")


def _fail(exc: BaseException, url: ObjectURL) -> StorageError:
    return classify(exc, str(url), url.bucket, url.scheme)


def _store(url: ObjectURL) -> Any:
    """The bucket's store that leaves retrying to ``retries``."""
    return store_for(url, library_retries=False)


def list_prefix(url: ObjectURL, page_size: int = PAGE_SIZE) -> Iterator[tuple[str, int]]:
    """``(key, size)`` of every object under ``url``'s key (a "folder": ``photos/`` and ``photos`` both list
    ``photos/...``), in the store's order (S3: by key, byte for byte), a page at a time."""
    obstore = obstore_module()
    prefix = url.key.rstrip("/") or None
    # A bucket lists in key order, so a listing that failed goes on after the last key given (S3's start-after);
    # a WebDAV server (http, https) lists in its own order: its listing starts again and skips what was given.
    by_key = url.scheme not in ("http", "https")
    last: str | None = None  # the last key given
    given = skip = 0
    pages: Iterator[Any] | None = None

    def next_page() -> Any:
        nonlocal pages, skip
        if pages is None:
            offset = last if by_key else None
            skip = 0 if by_key else given
            pages = iter(obstore.list(_store(url), prefix=prefix, offset=offset, chunk_size=page_size))
        try:
            return next(pages, None)
        except Exception:
            pages = None  # a broken listing: a new one
            raise

    while True:
        try:
            page = retries.call(next_page, f"listing {url}")
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
            raise _fail(exc, url) from None
        if page is None:
            return
        for meta in page:
            if skip:  # given before the listing started again
                skip -= 1
                continue
            if by_key and last is not None and meta["path"] <= last:
                continue  # (a store whose offset is not strict)
            last = meta["path"]
            given += 1
            yield meta["path"], meta["size"]


def has_objects_under(url: ObjectURL) -> bool:
    """Whether at least one object has a key under ``url``'s key as a "folder" (one listing request)."""
    obstore = obstore_module()

    def attempt() -> bool:
        stream = obstore.list(_store(url), prefix=url.key.rstrip("/") or None, chunk_size=1)
        return any(True for _ in next(iter(stream), []))

    try:
        return retries.call(attempt, f"listing {url}")
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


def head(url: ObjectURL) -> int:
    """The size of the object at ``url``."""
    obstore = obstore_module()
    try:
        return int(retries.call(lambda: obstore.head(_store(url), url.key), f"HEAD {url}")["size"])
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


def read(url: ObjectURL, max_bytes: int) -> bytes:
    """The whole object at ``url``; ``StorageError`` without reading it when it is larger than ``max_bytes``."""
    obstore = obstore_module()

    def attempt() -> bytes:  # the request and its whole answer: an answer that breaks off midway is asked again
        result = obstore.get(_store(url), url.key)
        size = result.meta["size"]
        if size > max_bytes:
            raise StorageError(OTHER, too_large(size, max_bytes))
        return bytes(result.bytes())

    try:
        return retries.call(attempt, f"GET {url}")
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


async def read_async(url: ObjectURL, max_bytes: int) -> bytes:
    """``read`` on the event loop (the library's own I/O threads do the work)."""
    obstore = obstore_module()

    async def attempt() -> bytes:
        result = await obstore.get_async(_store(url), url.key)
        size = result.meta["size"]
        if size > max_bytes:
            raise StorageError(OTHER, too_large(size, max_bytes))
        return bytes(await result.bytes_async())

    try:
        return await retries.call_async(attempt, f"GET {url}")
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


def read_range(url: ObjectURL, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` of the object (fewer at its end)."""
    obstore = obstore_module()
    if url.root not in _RANGES_AS_200:
        try:
            return bytes(retries.call(lambda: obstore.get_range(_store(url), url.key, start=start, length=length),
                                      f"ranged GET {url}"))
        except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
            if not _ranges_answered_200(exc, url):
                raise _fail(exc, url) from None
    return _signed_range(url, start, length)


async def read_range_async(url: ObjectURL, start: int, length: int) -> bytes:
    """``read_range`` on the event loop."""
    obstore = obstore_module()
    if url.root not in _RANGES_AS_200:
        try:
            return bytes(await retries.call_async(
                lambda: obstore.get_range_async(_store(url), url.key, start=start, length=length), f"ranged GET {url}"))
        except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
            if not _ranges_answered_200(exc, url):
                raise _fail(exc, url) from None
    return await asyncio.get_running_loop().run_in_executor(_signed_threads(), _signed_range, url, start, length)


# -- stores that answer a ranged GET with 200 ------------------------------------------------------------------------
# HTTP and S3 answer a satisfied Range with 206 Partial Content; some S3-compatible servers answer 200 with the
# right bytes and a Content-Range (rclone's `serve s3` up to 1.75, whose gofakes3 was fixed in July 2026; lakeFS's
# gateway). obstore refuses such an answer ("Received non-partial response"). For those stores the ranged reads go
# to a URL the library presigns (the library signs, never this code) with a plain GET that takes 200 or 206 alike;
# the URL carries a signature and the key id, and is never shown, logged or kept.

#: Store roots seen answering a ranged GET with 200 (their ranged reads go straight to presigned URLs).
_RANGES_AS_200: set[str] = set()
_SIGNED_TTL = timedelta(minutes=10)
_signed_pool: list[ThreadPoolExecutor] = []


def _ranges_answered_200(exc: BaseException, url: ObjectURL) -> bool:
    text = str(exc)
    if "non-partial response" in text.lower() or "NotPartial" in text:
        _RANGES_AS_200.add(url.root)
        return True
    return False


def _signed_threads() -> ThreadPoolExecutor:
    if not _signed_pool:
        _signed_pool.append(ThreadPoolExecutor(32, thread_name_prefix="tfclassify-range"))
    return _signed_pool[0]


def _signed_range(url: ObjectURL, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` through a presigned URL (asked again when the answer breaks off)."""
    def attempt() -> bytes:
        with _signed_get(url, start, start + length - 1) as response:
            data = response.read()
            if response.status == 200 and not response.headers.get("Content-Range"):
                data = data[start : start + length]  # the whole object, the Range ignored
            return data

    return _signed(url, attempt)


def _open_signed(url: ObjectURL, first: int) -> Any:
    """The open response to a GET of ``url`` from byte ``first`` to its end."""
    return _signed(url, lambda: _signed_get(url, first))


def _signed_get(url: ObjectURL, first: int, last: int | None = None) -> Any:
    """One GET of bytes ``first``..``last`` (to the end when None) of ``url``: the open response."""
    signed = obstore_module().sign(_store(url), "GET", url.key, _SIGNED_TTL)
    request = urllib.request.Request(signed, headers={"Range": f"bytes={first}-{'' if last is None else last}"})
    try:
        return urllib.request.urlopen(request, timeout=request_timeout())  # the store's own URL, presigned
    except urllib.error.HTTPError as exc:
        exc.close()  # its code says what went wrong; the connection is not kept
        raise


def _signed(url: ObjectURL, attempt: Callable[[], T]) -> T:
    """``attempt()`` (a presigned GET) through ``retries``; what failed it as a ``StorageError``."""
    try:
        return retries.call(attempt, f"presigned GET {url}")
    except StorageError:
        raise
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise StorageError(MISSING_OBJECT, f"{url}: no such object (check the key and that it was uploaded)"
                               ) from None
        if exc.code in (401, 403):
            raise classify(_Refused("access denied (HTTP 403)"), str(url), url.bucket, url.scheme) from None
        raise StorageError(OTHER, f"{url}: the store answered HTTP {exc.code} to a ranged read") from None
    except urllib.error.URLError as exc:
        raise StorageError(UNREACHABLE, f"{url}: cannot reach the object store ({scrub(str(exc.reason))})") from None
    except (OSError, http.client.HTTPException) as exc:  # the answer did not come, or came cut short
        raise StorageError(OTHER, f"{url}: a ranged read was cut short ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - signing: the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


class _Refused(Exception):
    """A refusal seen on a presigned URL, classified as the library's would be."""


def too_large(size: int, limit: int) -> str:
    return f"file of {size:,} bytes is larger than the {limit:,}-byte limit: not read"


class RangedReader(io.RawIOBase):
    """The object at ``url`` as a read-only seekable file: each ``read`` is one ranged GET."""

    def __init__(self, url: ObjectURL, size: int | None = None) -> None:
        super().__init__()
        self.url = url
        self.size = head(url) if size is None else size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = read_range(self.url, self._pos, end - self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ObjectStream(io.RawIOBase):
    """The object at ``url`` front to back, picked up again with a ranged GET from where a dropped connection left
    it (each time counted as a retry; ``STREAM_RESUMES`` times at most without a byte read in between)."""

    def __init__(self, url: ObjectURL) -> None:
        super().__init__()
        self.url = url
        self._pos = 0
        self._chunks: Iterator[bytes] | None = None
        self._buffer = memoryview(b"")
        self._resumes = 0
        self._resumed_at = 0
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        obstore = obstore_module()
        if self._pos and self.url.root in _RANGES_AS_200:
            self._chunks = self._signed_chunks()
            return
        options: Any = {"range": {"offset": self._pos}} if self._pos else None
        try:
            result = retries.call(lambda: obstore.get(_store(self.url), self.url.key, options=options),
                                  f"GET {self.url}")
        except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
            if self._pos and _ranges_answered_200(exc, self.url):
                self._chunks = self._signed_chunks()
                return
            raise _fail(exc, self.url) from None
        if self._size is None:
            self._size = int(result.meta["size"])
        self._chunks = iter(result.stream(min_chunk_size=1 << 20))

    def _signed_chunks(self) -> Iterator[bytes]:
        with _open_signed(self.url, self._pos) as response:
            yield from iter(lambda: response.read(1 << 20), b"")

    def readinto(self, buffer: Any) -> int:
        while not self._buffer:
            if self._size is not None and self._pos >= self._size:
                return 0
            if self._chunks is None:
                self._open()
            assert self._chunks is not None
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                self._chunks = None
                if self._size is not None and self._pos < self._size:  # ended early: pick it up again
                    self._resume(None)
                    continue
                return 0
            except StorageError:
                raise  # a re-open that failed for good (a missing object ...), past its own retries
            except Exception as exc:  # noqa: BLE001 - a dropped connection mid-stream: continue from here
                self._resume(exc)
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self._pos += n
        return n

    def _resume(self, exc: BaseException | None) -> None:
        self._chunks = None
        if self._pos > self._resumed_at:  # bytes came since the last time: a new run of tries
            self._resumes, self._resumed_at = 0, self._pos
        self._resumes += 1
        if self._resumes > STREAM_RESUMES:
            raise _fail(exc or OSError("the stream ended early, again and again"), self.url)
        retries.count((retries.transient_kind(exc) if exc is not None else None) or retries.CONNECTION)


def open_stream(url: ObjectURL) -> io.BufferedReader:
    """A buffered file reading the object at ``url`` front to back (``StorageError`` on the first read when it
    cannot be read)."""
    stream = _ObjectStream(url)
    stream._open()  # fail here, at the start, for a missing object or refused credentials
    return io.BufferedReader(stream, buffer_size=1 << 20)


__all__ = ["RangedReader", "has_objects_under", "head", "list_prefix", "open_stream", "read", "read_async",
           "read_range", "read_range_async"]
