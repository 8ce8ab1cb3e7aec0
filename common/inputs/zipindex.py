"""Stream a zip archive's members without holding its whole directory in memory.

``zipfile.ZipFile`` builds a ``ZipInfo`` object for every member when it opens
an archive: about 700 bytes each, 70 MB for 100,000 images. The scorer must
keep a flat memory profile whatever the archive size, so this module reads
the central directory record by record and yields compact ``ZipMember``
tuples, and reads one member's bytes from its offset. It handles Zip64, and
the stored, deflated and bzip2 methods (CRC-checked); anything else is
reported as unsupported for that member only.
"""

from __future__ import annotations

import bz2
import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # local file header
_MAX_COMMENT = 0xFFFF
_BLOCK = 1 << 20  # the central directory is read this much at a time
_ZIP64_LIMIT = 0xFFFFFFFF
STORED, DEFLATED, BZIP2 = 0, 8, 12


class ZipFormatError(ValueError):
    """The file is not a readable zip archive (or one member is not readable)."""


class ZipMember(NamedTuple):
    """One member of a zip archive, as its central directory describes it."""

    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def iter_members(fp: BinaryIO) -> Iterator[ZipMember]:
    """Yield the members of the zip archive open in ``fp``, in directory order."""
    count, cd_offset, shift = _central_directory_location(fp)
    fp.seek(cd_offset)
    buffer, pos = b"", 0
    for _ in range(count):
        if len(buffer) - pos < _CENTRAL.size:
            buffer, pos = buffer[pos:] + fp.read(_BLOCK), 0
        if len(buffer) - pos < _CENTRAL.size or buffer[pos : pos + 4] != b"PK\x01\x02":
            raise ZipFormatError("corrupt zip central directory")
        fields = _CENTRAL.unpack_from(buffer, pos)
        flags, method, crc = fields[5], fields[6], fields[9]
        compressed, size = fields[10], fields[11]
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        offset = fields[18]
        record_len = _CENTRAL.size + name_len + extra_len + comment_len
        if len(buffer) - pos < record_len:
            buffer, pos = buffer[pos:] + fp.read(max(_BLOCK, record_len)), 0
            if len(buffer) < record_len:
                raise ZipFormatError("corrupt zip central directory (truncated)")
        name_at = pos + _CENTRAL.size
        raw_name = buffer[name_at : name_at + name_len]
        if _ZIP64_LIMIT in (compressed, size, offset):
            extra = buffer[name_at + name_len : name_at + name_len + extra_len]
            size, compressed, offset = _zip64_values(extra, size, compressed, offset)
        pos += record_len
        # Bit 11: the name is UTF-8; otherwise it is code page 437 (the zip default).
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        yield ZipMember(name, method, flags, crc, compressed, size, offset + shift)


def read_member(fp: BinaryIO, member: ZipMember, max_size: int) -> bytes:
    """The uncompressed bytes of ``member``; ``ZipFormatError`` when they cannot be read.

    ``max_size`` bounds what is decompressed, so a zip bomb costs nothing.
    """
    if member.flags & 0x1:
        raise ZipFormatError("encrypted zip member")
    if member.size > max_size:
        raise ZipFormatError(f"file of {member.size:,} bytes is larger than the {max_size:,}-byte limit: not read")
    fp.seek(member.header_offset)
    header = fp.read(_LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
        raise ZipFormatError("bad local file header")
    fields = _LOCAL.unpack(header)
    fp.seek(fields[10] + fields[11], 1)  # the name and extra field lengths
    data = fp.read(member.compressed_size)
    if len(data) != member.compressed_size:
        raise ZipFormatError("archive truncated inside this member")
    try:
        if member.method == STORED:
            content = data
        elif member.method == DEFLATED:
            inflater = zlib.decompressobj(-15)
            content = inflater.decompress(data, member.size + 1)
        elif member.method == BZIP2:
            content = bz2.BZ2Decompressor().decompress(data, member.size + 1)
        else:
            raise ZipFormatError(f"unsupported zip compression method {member.method}")
    except (zlib.error, OSError, EOFError) as exc:
        raise ZipFormatError(f"corrupt compressed data: {exc}") from exc
    if len(content) != member.size or zlib.crc32(content) != member.crc:
        raise ZipFormatError("member data does not match its size or CRC (corrupt archive)")
    return content


#: Bytes beyond its name that a member's local header is read with, in one request, before its data (its extra
#: field: timestamps, Zip64 sizes); a longer one costs a second request.
LOCAL_EXTRA_ALLOWANCE = 256


def member_span(member: ZipMember) -> int:
    """How many bytes from ``member.header_offset`` likely hold its local header and data (one ranged read)."""
    return _LOCAL.size + len(member.name.encode("utf-8")) + LOCAL_EXTRA_ALLOWANCE + member.compressed_size


def member_extent(header: bytes, member: ZipMember) -> int:
    """How many bytes from ``member.header_offset`` hold its local header and data, given at least the first
    30 bytes there (``ZipFormatError`` when they are not a local header)."""
    if len(header) < _LOCAL.size or header[:4] != b"PK\x03\x04":
        raise ZipFormatError("bad local file header")
    fields = _LOCAL.unpack_from(header)
    return _LOCAL.size + fields[10] + fields[11] + member.compressed_size


class SpanFile(io.BytesIO):
    """The bytes of an archive from ``offset`` on, read as a file positioned in the whole archive (what
    ``read_member`` reads a member from when its bytes were fetched on their own)."""

    def __init__(self, data: bytes, offset: int) -> None:
        super().__init__(data)
        self._offset = offset

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            if pos < self._offset:
                raise ZipFormatError("read before the fetched span of the archive")
            pos -= self._offset
        return super().seek(pos, whence) + self._offset

    def tell(self) -> int:
        return super().tell() + self._offset


def _central_directory_location(fp: BinaryIO) -> tuple[int, int, int]:
    """(entries, offset of the central directory, shift of every offset), from the end records."""
    fp.seek(0, 2)
    file_size = fp.tell()
    tail_len = min(file_size, _EOCD.size + _MAX_COMMENT)
    fp.seek(file_size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ZipFormatError("not a zip file (no end of central directory record)")
    fields = _EOCD.unpack(tail[at : at + _EOCD.size])
    count, cd_size, cd_offset = fields[4], fields[5], fields[6]
    eocd_pos = file_size - tail_len + at
    locator_pos = eocd_pos - _EOCD64_LOCATOR.size
    if locator_pos >= 0:
        fp.seek(locator_pos)
        locator = fp.read(_EOCD64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            fp.seek(_EOCD64_LOCATOR.unpack(locator)[2])
            record = fp.read(_EOCD64.size)
            if record[:4] != b"PK\x06\x06":
                raise ZipFormatError("corrupt Zip64 end of central directory record")
            fields64 = _EOCD64.unpack(record)
            count, cd_size, cd_offset = fields64[7], fields64[8], fields64[9]
            eocd_pos = locator_pos - _EOCD64.size
    # Data prepended to the archive (self-extracting zips) shifts every offset.
    shift = eocd_pos - cd_size - cd_offset
    if shift < 0:
        raise ZipFormatError("corrupt zip end of central directory record")
    return count, cd_offset + shift, shift


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Replace the 0xFFFFFFFF placeholders with the Zip64 extra field's 64-bit values, in their fixed order."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        if tag == 0x0001:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if size == _ZIP64_LIMIT and values:
                size = values.pop(0)
            if compressed == _ZIP64_LIMIT and values:
                compressed = values.pop(0)
            if offset == _ZIP64_LIMIT and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return size, compressed, offset
