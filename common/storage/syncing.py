"""Keeping a local copy of a prefix of objects (``tfclassify serve --model-repo s3://...``): listing with each
object's size and ETag, and downloading an object to a file.

The requests here use a store of their own with short retries (``SYNC_RETRY``): a poll that finds the store
unreachable must say so within seconds, not after the scorer's three minutes of retries, and the next poll tries
again anyway. Credentials, endpoint and region come from the same standard chain as ``stores.store_for``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from tfclassify.common.storage import stores
from tfclassify.common.storage.errors import StorageError, classify
from tfclassify.common.storage.stores import obstore_module
from tfclassify.common.storage.urls import ObjectURL

#: Retries of a failed listing or download: 3, from 0.1 s up to 2 s apart, none started 10 s after the first try.
SYNC_RETRY: dict[str, Any] = {
    "max_retries": 3,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2},
    "retry_timeout": timedelta(seconds=10),
}
#: A listing request must answer within 30 s; a download (a model's shard can be gigabytes, and the limit is on
#: the whole transfer) within 30 minutes.
SYNC_CLIENT: dict[str, Any] = {"timeout": "30s", "connect_timeout": "3s"}
DOWNLOAD_CLIENT: dict[str, Any] = {"timeout": "30m", "connect_timeout": "3s"}

#: The ``StorageError`` kind of an object whose size was not the listed one when it was read (it changed).
CHANGED = "changed"

_stores: dict[tuple[str, int, bool], Any] = {}
_lock = threading.Lock()


class ObjectInfo(NamedTuple):
    """One listed object: its key in the bucket, size, and ETag ("" when the store gives none)."""

    key: str
    size: int
    etag: str


def sync_store(url: ObjectURL, download: bool = False) -> Any:
    """The (cached) store of ``url``'s bucket for syncing: ``stores.store_for``'s settings, short retries, and the
    time limit of a listing request or (``download``) of a whole download."""
    key = (url.root, stores.settings_stamp(), download)
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = stores.make_store(url, DOWNLOAD_CLIENT if download else SYNC_CLIENT, SYNC_RETRY)
    return store


def list_objects(url: ObjectURL, page_size: int = 1000) -> Iterator[ObjectInfo]:
    """Every object under ``url``'s key as a "folder", streamed page by page, with its size and ETag."""
    obstore = obstore_module()
    try:
        prefix = url.key.rstrip("/")
        pages = obstore.list(sync_store(url), prefix=prefix or None, chunk_size=page_size)
        for page in pages:
            for meta in page:
                yield ObjectInfo(meta["path"], int(meta["size"]), str(meta.get("e_tag") or ""))
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise classify(exc, str(url), url.bucket, url.scheme) from None


def download(url: ObjectURL, dest: Path, expected_size: int | None = None) -> int:
    """Write the object at ``url`` to ``dest`` (streamed, 1 MiB at a time); its size. A copy shorter or longer than
    ``expected_size`` is a ``StorageError`` (the object changed while it was read)."""
    obstore = obstore_module()
    written = 0
    try:
        chunks = iter(obstore.get(sync_store(url, download=True), url.key).stream(min_chunk_size=1 << 20))
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise classify(exc, str(url), url.bucket, url.scheme) from None
    with open(dest, "wb") as out:  # an error of the local disk (full, read-only) is an OSError of its own
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - the connection dropped mid-object, past the retries
                raise classify(exc, str(url), url.bucket, url.scheme) from None
            out.write(chunk)
            written += len(chunk)
    if expected_size is not None and written != expected_size:
        raise StorageError(CHANGED, f"{url}: {written} bytes read, {expected_size} listed (changed while read)")
    return written


__all__ = ["CHANGED", "SYNC_RETRY", "ObjectInfo", "download", "list_objects", "sync_store"]
