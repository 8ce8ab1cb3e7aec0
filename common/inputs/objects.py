"""``--images`` from object storage: a prefix of objects, one object (an image, a zip, a tar, a manifest).

The inputs behave as their local counterparts do (``sources``): a prefix like a folder (its keys in the store's
order, hidden keys skipped, ``--labels folder`` reading the class from each key's parent "folder"), a zip object
listed from its central directory through ranged reads (never downloaded whole), a tar object streamed front to
back, a manifest read as it streams. Their items' ``FileRef``s name objects by URL and carry no bytes: the scorer
fetches many of them at once (``fetch_ref`` on its event loop) before decoding; ``read_object_ref`` reads one
synchronously (thumbnails, the trainer). An object that cannot be read is a skipped file with its reason, as a
corrupt local file is; a bucket or input object that cannot be read stops the run with a ``StorageError``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO, cast

from tfclassify.common.inputs import zipindex
from tfclassify.common.inputs.labels import manifest_rows, normalise_member
from tfclassify.common.inputs.sources import (
    MANIFEST_SUFFIXES,
    MAX_FILE_BYTES,
    TAR_SUFFIXES,
    FileRef,
    Input,
    InputError,
    Item,
    TarInput,
    _hidden_path,
    _too_large,
)
from tfclassify.common.storage import reads
from tfclassify.common.storage.errors import MISSING_OBJECT, StorageError
from tfclassify.common.storage.urls import ObjectURL, base_name, is_object_url, join, parse


class ObjectInput(Input):
    """An ``--images`` URL (``path`` is unused: ``url`` says where)."""

    def __init__(self, url: ObjectURL, name: str, size: int | None = None) -> None:
        super().__init__(Path(name), name)
        self.url = url
        self.size = size

    @property
    def location(self) -> str:
        return str(self.url)

    def identity(self) -> dict:
        return {"path": str(self.url), "kind": type(self).__name__, "bytes": self.size}

    def describe(self) -> dict:
        return {"name": self.name, "kind": type(self).__name__, "path": str(self.url)}


class ObjectPrefixInput(ObjectInput):
    """The objects under a prefix (``s3://bucket/photos/``), listed page by page as they are scored."""

    lists_slowly = True

    def items(self, with_data: bool = True) -> Iterator[Item]:
        prefix = self.url.key.rstrip("/")
        strip = len(prefix) + 1 if prefix else 0
        for key, size in reads.list_prefix(self.url):
            member = key[strip:]
            if not member or member.endswith("/") or _hidden_path(member):
                continue  # "folder" markers, .hidden keys
            ref = FileRef(str(self.url.with_key(key)), error=_too_large(size) if size > MAX_FILE_BYTES else None)
            yield Item(f"{self.name}/{member}", member, ref)


class ObjectFileInput(ObjectInput):
    """One image object."""

    def items(self, with_data: bool = True) -> Iterator[Item]:
        yield Item(str(self.url), base_name(self.url), FileRef(str(self.url)))


class ObjectZipInput(ObjectInput):
    """A zip object: its directory read with ranged GETs, each member fetched alone by a ranged GET."""

    def items(self, with_data: bool = True) -> Iterator[Item]:
        location = str(self.url)
        try:
            reader = reads.RangedReader(self.url, self.size)
            for member in zipindex.iter_members(cast(BinaryIO, reader)):
                if member.is_dir or _hidden_path(member.name):
                    continue
                yield Item(f"{self.name}/{member.name}", member.name, FileRef(location, member=member))
        except zipindex.ZipFormatError as exc:
            raise InputError(f"{location}: {exc}") from exc


class ObjectTarInput(ObjectInput, TarInput):
    """A tar object (plain, gzip, bzip2 or xz), streamed front to back: ``TarInput``'s reading of ``open()``'s
    bytes, and ``ObjectInput``'s URL, identity and description."""

    def open(self) -> BinaryIO:
        return cast(BinaryIO, reads.open_stream(self.url))


class ManifestInput(Input):
    """A CSV (``path`` column, ``label`` optional) or JSON Lines manifest of images: object URLs, or paths
    relative to the manifest's own location (keys beside a manifest in a bucket, files beside a local one)."""

    def __init__(self, location: str | Path, name: str) -> None:
        super().__init__(Path(location) if isinstance(location, Path) else Path(name), name)
        self._location = location

    @property
    def location(self) -> str:
        return str(self._location)

    @property
    def lists_slowly(self) -> bool:  # type: ignore[override]
        """A manifest in a bucket is read as it streams: a long one lists slowly."""
        return not isinstance(self._location, Path)

    def items(self, with_data: bool = True) -> Iterator[Item]:
        with _open_text(self._location) as f:
            for _, path, label in manifest_rows(f, self.location, label_required=False):
                if is_object_url(path):
                    yield Item(path, path, FileRef(path), label)
                    continue
                member = normalise_member(path)
                if isinstance(self._location, Path):
                    target = str(self._location.parent / member)
                else:
                    target = join(self._location, path)
                yield Item(f"{self.name}/{member}", member, FileRef(target), label)

    def identity(self) -> dict:
        size = self._location.stat().st_size if isinstance(self._location, Path) else None
        return {"path": self.location, "kind": "ManifestInput", "bytes": size}

    def describe(self) -> dict:
        where = str(self._location.absolute()) if isinstance(self._location, Path) else self.location
        return {"name": self.name, "kind": "ManifestInput", "path": where}


@contextmanager
def _open_text(location: str | Path) -> Iterator[TextIO]:
    try:
        if isinstance(location, Path):
            with open(location, encoding="utf-8", newline="") as f:
                yield f
        else:
            with io.TextIOWrapper(reads.open_stream(parse(location)), encoding="utf-8", newline="") as f:
                yield f
    except UnicodeDecodeError:
        raise InputError(f"{location}: not a UTF-8 text file (expected a CSV or JSON Lines manifest)") from None


def open_object_input(text: str) -> Input:
    """The input an object URL names: a prefix, a zip, a tar, a manifest or an image object.

    A URL ending in ``/`` (or a bucket's root) is a prefix; any other is the object of that key, or else the
    prefix it names when objects lie under it; ``StorageError`` when neither exists or the bucket cannot be read.
    """
    try:
        url = parse(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    name = base_name(url)
    if url.is_prefix:
        reads.has_objects_under(url)  # a missing bucket or refused credentials fail here, before anything else
        return ObjectPrefixInput(url, name)
    try:
        size = reads.head(url)
    except StorageError as exc:
        if exc.kind != MISSING_OBJECT or not reads.has_objects_under(url):
            raise
        return ObjectPrefixInput(url, name)
    lower = url.key.lower()
    if lower.endswith(".zip"):
        return ObjectZipInput(url, name, size)
    if lower.endswith(TAR_SUFFIXES):
        return ObjectTarInput(url, name, size)
    if lower.endswith(MANIFEST_SUFFIXES):
        return ManifestInput(str(url), name)
    return ObjectFileInput(url, name, size)


def read_object_ref(ref: FileRef) -> bytes:
    """The bytes of an object item, read now (``fetch_ref`` fetches them ahead, many at once)."""
    url = parse(ref.path)
    member = ref.member
    if member is None:
        return reads.read(url, MAX_FILE_BYTES)
    if member.size > MAX_FILE_BYTES or member.flags & 0x1:
        return zipindex.read_member(zipindex.SpanFile(b"", member.header_offset), member, MAX_FILE_BYTES)
    span = reads.read_range(url, member.header_offset, zipindex.member_span(member))
    extent = zipindex.member_extent(span[:64], member)
    if extent > len(span):
        span = reads.read_range(url, member.header_offset, extent)
    return zipindex.read_member(zipindex.SpanFile(span, member.header_offset), member, MAX_FILE_BYTES)


async def fetch_ref(ref: FileRef) -> FileRef:
    """``ref`` with its object's bytes (a zip member's: the span of the archive holding its header and data), or
    with the reason they could not be read; a ref that is not an object's, or already has its bytes, as it is."""
    if ref.data is not None or ref.error is not None or not is_object_url(ref.path):
        return ref
    url = parse(ref.path)
    member = ref.member
    try:
        if member is None:
            return ref._replace(data=await reads.read_async(url, MAX_FILE_BYTES))
        if member.size > MAX_FILE_BYTES or member.flags & 0x1:
            return ref._replace(data=b"")  # read_member refuses it, with its reason, before reading
        span = await reads.read_range_async(url, member.header_offset, zipindex.member_span(member))
        extent = zipindex.member_extent(span[:64], member)
        if extent > len(span):
            span = await reads.read_range_async(url, member.header_offset, extent)
        return ref._replace(data=span)
    except (StorageError, zipindex.ZipFormatError) as exc:
        return ref._replace(error=str(exc))


#: Zip members closer than this in their archive are fetched by one ranged read (the bytes between come along).
MEMBER_GAP = 1 << 20
#: The most bytes one such read covers.
MEMBER_RUN = 16 << 20


async def fetch_members(path: str, refs: list[FileRef], slots: asyncio.Semaphore) -> list[FileRef]:
    """``fetch_ref`` for members of the zip object at ``path``, with neighbours fetched together: members whose
    spans lie within ``MEMBER_GAP`` of each other (a chunk of a zip is usually one stretch of the archive) are
    read by one ranged GET of at most ``MEMBER_RUN`` bytes, at most ``slots`` GETs at a time."""
    url = parse(path)
    out = list(refs)
    runs: list[list] = []  # [start, end, positions]
    for i in sorted(range(len(refs)), key=lambda i: cast(zipindex.ZipMember, refs[i].member).header_offset):
        member = cast(zipindex.ZipMember, refs[i].member)
        if member.size > MAX_FILE_BYTES or member.flags & 0x1:
            out[i] = refs[i]._replace(data=b"")  # read_member refuses it, with its reason, before reading
            continue
        start, end = member.header_offset, member.header_offset + zipindex.member_span(member)
        if runs and start - runs[-1][1] <= MEMBER_GAP and end - runs[-1][0] <= MEMBER_RUN:
            runs[-1][1] = max(runs[-1][1], end)
            runs[-1][2].append(i)
        else:
            runs.append([start, end, [i]])

    async def one_run(start: int, end: int, positions: list[int]) -> None:
        try:
            async with slots:
                data = await reads.read_range_async(url, start, end - start)
        except StorageError as exc:
            for i in positions:
                out[i] = refs[i]._replace(error=str(exc))
            return
        for i in positions:
            member = cast(zipindex.ZipMember, refs[i].member)
            at = member.header_offset - start
            try:
                extent = zipindex.member_extent(data[at : at + 64], member)
            except zipindex.ZipFormatError as exc:
                out[i] = refs[i]._replace(error=str(exc))
                continue
            if at + extent <= len(data):
                out[i] = refs[i]._replace(data=data[at : at + extent])
            else:  # a local extra field longer than the allowance: this member alone, again
                async with slots:
                    out[i] = await fetch_ref(refs[i])

    await asyncio.gather(*(one_run(*run) for run in runs))
    return out


__all__ = ["ManifestInput", "ObjectFileInput", "ObjectInput", "ObjectPrefixInput", "ObjectTarInput",
           "ObjectZipInput", "fetch_members", "fetch_ref", "open_object_input", "read_object_ref"]
