"""Object URLs: ``s3://bucket/key``, ``gs://bucket/key``, ``az://container/key``, ``abfs[s]://...``,
``http(s)://host/path``; which store serves one, and the key inside it."""

from __future__ import annotations

import re
from typing import NamedTuple

#: URL schemes ``--images`` reads from object storage (``az``/``abfs``: Azure Blob; ``s3a`` as Hadoop writes it).
SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "https", "http")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(/.*)?$")


class ObjectURL(NamedTuple):
    """One parsed object URL: the store's root (``s3://bucket``) and the key inside it (``photos/0001.png``)."""

    scheme: str
    bucket: str  # the bucket, container, or host for http(s)
    key: str  # no leading slash; "" for the bucket's root

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.bucket}"

    @property
    def is_prefix(self) -> bool:
        """Whether the URL names a "folder" (ends with ``/``, or is the bucket itself)."""
        return self.key == "" or self.key.endswith("/")

    def with_key(self, key: str) -> ObjectURL:
        return self._replace(key=key.lstrip("/"))

    def __str__(self) -> str:
        return f"{self.root}/{self.key}"


def is_object_url(text: object) -> bool:
    """Whether ``text`` is a URL of a scheme ``--images`` reads from object storage (a local path never is: a
    ``pathlib.Path`` cannot hold ``//``)."""
    if not isinstance(text, str):
        return False
    match = _URL.match(text)
    return match is not None and match.group(1).lower() in SCHEMES


def parse(url: str) -> ObjectURL:
    """``ValueError`` for a text that is not an object URL, or one without a bucket."""
    match = _URL.match(url)
    if match is None or match.group(1).lower() not in SCHEMES:
        raise ValueError(f"{url}: not an object URL ({', '.join(s + '://' for s in SCHEMES)})")
    scheme, bucket, path = match.group(1).lower(), match.group(2), match.group(3) or ""
    if not bucket:
        raise ValueError(f"{url}: no bucket (expected e.g. {scheme}://BUCKET/photos/)")
    return ObjectURL(scheme, bucket, path.lstrip("/"))


def join(base: str, relative: str) -> str:
    """``relative`` (a key, or a URL of its own) resolved against the "folder" of the object URL ``base``:
    ``join("s3://b/lists/test.csv", "img/1.png")`` is ``s3://b/lists/img/1.png``; a path starting with ``/``
    is a key from the bucket's root."""
    if is_object_url(relative):
        return relative
    parsed = parse(base)
    if relative.startswith("/"):
        return str(parsed.with_key(relative))
    folder = parsed.key.rsplit("/", 1)[0] + "/" if "/" in parsed.key else ""
    parts: list[str] = []
    for part in (folder + relative.replace("\\", "/")).split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return str(parsed.with_key("/".join(parts)))


def base_name(url: ObjectURL) -> str:
    """The last "folder" or object name of ``url`` (the bucket for its root): an input's name, as a local
    folder's base name is."""
    return url.key.rstrip("/").rsplit("/", 1)[-1] or url.bucket
