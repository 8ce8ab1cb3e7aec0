"""What ``tfclassify score --images PATH`` accepts, enumerated lazily in a stable order.

Every input yields ``Item``s: one per file (or array row), named by a
``source`` string that is stable across machines (the input's base name and
the path inside it), which the scorer hashes for ``--shard`` and records in
its output. Folders are walked in sorted order and zip archives in their
directory order; tar archives are streamed front to back (never unpacked,
never held whole in memory). Hidden files and folders (``.name``, and
``__MACOSX/``) are not inputs; every other regular file is, image or not: a
file that is not an image is recorded as skipped, never silently dropped.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

import numpy as np

from tfclassify.common.inputs import zipindex
from tfclassify.common.storage.errors import StorageError
from tfclassify.common.storage.urls import is_object_url
from tfclassify.common.text import counted

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARRAY_SUFFIXES = (".npz", "-ubyte", "-ubyte.gz", ".idx", ".idx.gz")
#: A CSV or JSON Lines list of images (``path`` column, ``label`` optional), as an input of its own.
MANIFEST_SUFFIXES = (".csv", ".jsonl")
#: A member larger than this is not read (nothing the model takes needs more; guards against zip bombs).
MAX_FILE_BYTES = 256 * 1024 * 1024


class InputError(ValueError):
    """An input path that cannot be read as a whole (missing, unsupported, not an archive)."""


class FileRef(NamedTuple):
    """Where a decode worker finds an item's bytes: a file, a zip member, or the bytes themselves; ``path`` is
    an object URL for objects (their bytes fetched ahead into ``data``, or read by ``read_file_ref``)."""

    path: str
    member: zipindex.ZipMember | None = None
    data: bytes | None = None
    #: Why the bytes were not read (the reason recorded for a skipped file).
    error: str | None = None


#: An array row index, or a file reference.
ItemRef = int | FileRef


class Item(NamedTuple):
    """One image to score (a tuple: an archive of a million images lists a million of them)."""

    source: str  # e.g. "photos.zip/Shirt/0001.png", "t10k-images-idx3-ubyte.gz[41]"
    member: str  # the path inside the input ("Shirt/0001.png"), for labels and manifests
    ref: ItemRef
    #: The true label when the input carries one (array inputs: a class index; manifest inputs: a class name or
    #: index as written); folder labels and ``--labels`` manifests come later.
    label: int | str | None = None


class Input:
    """One ``--images`` path."""

    #: Whether items carry decoded pixels (array inputs) rather than files.
    is_array = False
    #: Whether listing the items takes a request per page (a prefix of objects): the run scores while it lists.
    lists_slowly = False

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name

    def items(self, with_data: bool = True) -> Iterator[Item]:
        """The items, in a stable order; ``with_data`` False skips reading streamed bytes (listing only)."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        """Where the input is, as the user gave it (a path, or an object URL), for messages."""
        return str(self.path)

    def identity(self) -> dict:
        """What a resumed run checks to be the same input."""
        return {"path": str(self.path), "kind": type(self).__name__, "bytes": _size_of(self.path)}

    def describe(self) -> dict:
        """How to open this input again (reports read images back for their thumbnails)."""
        return {"name": self.name, "kind": type(self).__name__, "path": str(self.path.absolute())}


class DirectoryInput(Input):
    """A folder tree of image files."""

    def items(self, with_data: bool = True) -> Iterator[Item]:
        for folder, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            rel = Path(folder).relative_to(self.path)
            for filename in sorted(f for f in files if not _hidden(f)):
                full = Path(folder) / filename
                if not full.is_file():
                    continue
                member = (rel / filename).as_posix()
                yield Item(f"{self.name}/{member}", member, FileRef(str(full)))


class FileInput(Input):
    """A single image file."""

    def items(self, with_data: bool = True) -> Iterator[Item]:
        yield Item(str(self.path), self.path.name, FileRef(str(self.path)))


class ZipInput(Input):
    """A ``.zip`` archive; members are listed from its central directory and read by the decode workers."""

    def items(self, with_data: bool = True) -> Iterator[Item]:
        try:
            with open(self.path, "rb") as fp:
                for member in zipindex.iter_members(fp):
                    if member.is_dir or _hidden_path(member.name):
                        continue
                    yield Item(f"{self.name}/{member.name}", member.name, FileRef(str(self.path), member=member))
        except zipindex.ZipFormatError as exc:
            raise InputError(f"{self.path}: {exc}") from exc


class TarInput(Input):
    """A tar archive (plain, gzip, bzip2 or xz), streamed front to back."""

    def open(self) -> BinaryIO:
        """The archive's bytes, front to back."""
        return open(self.path, "rb")

    def items(self, with_data: bool = True) -> Iterator[Item]:
        location = self.location
        try:
            with self.open() as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
                for info in tar:
                    tar.members = []  # type: ignore[attr-defined]  # TarFile's list of headers, not in typeshed; stream mode keeps every header otherwise: memory would grow with the archive
                    if not info.isfile() or _hidden_path(info.name):
                        continue
                    member = PurePosixPath(info.name).as_posix().removeprefix("./")
                    ref = FileRef(location)
                    if info.size > MAX_FILE_BYTES:
                        ref = FileRef(location, error=_too_large(info.size))
                    elif with_data:
                        data = tar.extractfile(info)
                        assert data is not None  # a regular file (isfile() above) always has its data
                        ref = FileRef(location, data=data.read())
                    yield Item(f"{self.name}/{member}", member, ref)
        except StorageError:
            raise
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(f"{location}: not a readable tar archive: {exc}") from exc


class ArrayInput(Input):
    """Images already in memory as uint8 ``[N, H, W]`` (IDX, ``.npz`` or a named dataset)."""

    is_array = True

    def __init__(self, path: Path, name: str, images: np.ndarray, labels: np.ndarray | None,
                 reopen: dict | None = None) -> None:
        super().__init__(path, name)
        #: How the arrays were read beyond the path: {"dataset", "split", "data_dir"} or {"npz_images", "split"}.
        self.reopen = dict(reopen or {})
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise InputError(f"{path}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
        if labels is not None and labels.shape != (len(images),):
            raise InputError(f"{path}: {counted(len(labels), 'label')} for {counted(len(images), 'image')}")
        self.images = images
        self.labels = None if labels is None else labels.astype(np.int64)

    def items(self, with_data: bool = True) -> Iterator[Item]:
        labels = self.labels.tolist() if self.labels is not None else None
        for i in range(len(self.images)):
            yield Item(f"{self.name}[{i}]", str(i), i, None if labels is None else labels[i])

    def identity(self) -> dict:
        return {"path": str(self.path), "kind": "ArrayInput", "images": len(self.images)}

    def describe(self) -> dict:
        described = {**super().describe(), **self.reopen}
        if "dataset" in self.reopen:
            described["path"] = ""  # a dataset is found by name (and data_dir), not by a path
        return described


def open_input(path: Path | str) -> Input:
    """The ``Input`` for a folder, an archive, a manifest (``.csv``, ``.jsonl``) or an image file (array files go
    through ``ArrayInput``), or for an object URL (``s3://bucket/photos/``, ``gs://...``: ``objects``)."""
    if isinstance(path, str):
        if is_object_url(path):
            from tfclassify.common.inputs.objects import open_object_input  # its storage library only when used

            return open_object_input(path)
        path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    name = path.resolve().name or str(path)
    if path.is_dir():
        return DirectoryInput(path, name)
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return ZipInput(path, name)
    if lower.endswith(TAR_SUFFIXES):
        return TarInput(path, name)
    if lower.endswith(MANIFEST_SUFFIXES):
        from tfclassify.common.inputs.objects import ManifestInput

        return ManifestInput(path, name)
    return FileInput(path, name)


def is_array_file(path: Path) -> bool:
    """Whether ``path`` names an IDX or ``.npz`` file (read whole, as arrays)."""
    return path.name.lower().endswith(ARRAY_SUFFIXES)


def read_file_ref(ref: FileRef, open_files: dict[str, BinaryIO]) -> bytes:
    """The bytes of one file item (in a decode worker); ``open_files`` caches open zip archives."""
    if ref.error is not None:
        raise OSError(ref.error)
    if ref.data is not None:
        if ref.member is None:
            return ref.data
        # A zip object's member, fetched ahead: the span of the archive from its local header to its data's end.
        return zipindex.read_member(zipindex.SpanFile(ref.data, ref.member.header_offset), ref.member, MAX_FILE_BYTES)
    if is_object_url(ref.path):
        from tfclassify.common.inputs.objects import read_object_ref

        return read_object_ref(ref)
    if ref.member is None:
        size = os.path.getsize(ref.path)
        if size > MAX_FILE_BYTES:
            raise OSError(_too_large(size))
        with open(ref.path, "rb") as f:
            return f.read()
    fp = open_files.get(ref.path)
    if fp is None:
        fp = open_files[ref.path] = open(ref.path, "rb")
    return zipindex.read_member(fp, ref.member, MAX_FILE_BYTES)


_FORMATS_BY_SUFFIX = {".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",)}


def format_hint(ref: FileRef) -> tuple[str, ...] | None:
    """The image format the file's name suggests (tried first, which saves Pillow probing every format)."""
    name = ref.member.name if ref.member is not None else ref.path
    return _FORMATS_BY_SUFFIX.get(os.path.splitext(name)[1].lower())


def _too_large(size: int) -> str:
    return f"file of {size:,} bytes is larger than the {MAX_FILE_BYTES:,}-byte limit: not read"


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _hidden_path(member: str) -> bool:
    """Whether any part of ``member`` is hidden (string tests: this runs once per file of an archive)."""
    path = ("/" + member + "/").replace("/./", "/")
    return "/." in path or "/__MACOSX/" in path


def _size_of(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None
