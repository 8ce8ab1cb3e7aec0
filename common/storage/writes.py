"""Writing and deleting objects, each failure a ``StorageError`` (see ``errors``).

Every PUT is atomic (S3 and the others show the old object or the new one, never a part of it): ``put`` sends one
request for a small body and a multipart upload for a large one or a stream of chunks (the library completes it
only once every part is in; an upload cut short is never seen as an object, though its parts are kept by the store
until aborted or expired: an ``AbortIncompleteMultipartUpload`` lifecycle rule cleans them up).

A single PUT, a DELETE and a HEAD go through ``retries`` (tried again on a transient failure, and counted). A
multipart upload keeps the library's own retries, uncounted: the library retries each part's request alone, where
trying the whole upload again would send every part again.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from tfclassify.common.storage import retries
from tfclassify.common.storage.errors import MISSING_OBJECT, StorageError, classify
from tfclassify.common.storage.stores import obstore_module, store_for
from tfclassify.common.storage.urls import ObjectURL

#: Bytes of each part of a multipart upload (S3's smallest part is 5 MiB, its largest count 10,000: 80 GiB).
MULTIPART_CHUNK = 8 << 20


def _fail(exc: BaseException, url: ObjectURL) -> StorageError:
    return classify(exc, str(url), url.bucket, url.scheme)


def put(url: ObjectURL, body: bytes | Path, *, chunk_size: int | None = None) -> None:
    """Write the object at ``url`` whole: ``bytes`` or a local file (``Path``) in one request when not larger than
    ``chunk_size`` (``MULTIPART_CHUNK``), through a multipart upload when larger. (Never a Python iterator that
    reads the store itself: the library calls it from its own runtime, where a blocking call panics.)"""
    obstore = obstore_module()
    chunk_size = chunk_size or MULTIPART_CHUNK
    try:
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        if size > chunk_size:
            obstore.put(store_for(url), url.key, body, use_multipart=True, chunk_size=chunk_size)
        else:
            retries.call(lambda: obstore.put(store_for(url, library_retries=False), url.key, body, use_multipart=False),
                         f"PUT {url}")
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        raise _fail(exc, url) from None


def delete(url: ObjectURL, keys: Sequence[str] = ()) -> None:
    """Delete the object at ``url`` (or the objects ``keys`` of its bucket); a missing object is no error."""
    obstore = obstore_module()
    paths = list(keys) if keys else [url.key]
    try:
        for start in range(0, len(paths), 1000):  # S3 deletes up to 1,000 keys a request
            batch = paths[start : start + 1000]
            retries.call(partial(obstore.delete, store_for(url, library_retries=False), batch), f"DELETE {url}")
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        error = _fail(exc, url)
        if error.kind != MISSING_OBJECT:
            raise error from None


def exists(url: ObjectURL) -> bool:
    """Whether an object is at ``url`` (one HEAD request)."""
    obstore = obstore_module()
    try:
        retries.call(lambda: obstore.head(store_for(url, library_retries=False), url.key), f"HEAD {url}")
        return True
    except Exception as exc:  # noqa: BLE001 - the library's errors have no common base beyond Exception
        error = _fail(exc, url)
        if error.kind == MISSING_OBJECT:
            return False
        raise error from None


__all__ = ["MULTIPART_CHUNK", "delete", "exists", "put"]
