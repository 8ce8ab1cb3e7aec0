"""Download of published dataset files, checksum-verified and written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tfclassify.common.datasets.catalog import DataFile

#: Environment variable that replaces the published base URLs (a local mirror).
MIRROR_ENV = "TFCLASSIFY_DATASET_MIRROR"
_TIMEOUT_S = 30.0


class DownloadError(OSError):
    """A file could not be fetched or did not match its published checksum."""


def source_url(file: DataFile) -> str:
    """The URL to fetch ``file`` from, honouring ``$TFCLASSIFY_DATASET_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + file.filename
    if not file.url:
        raise DownloadError(f"{file.filename} has no published download URL")
    return file.url


def download(file: DataFile, dest_dir: Path) -> Path:
    """Fetch ``file`` into ``dest_dir`` and return its path.

    The bytes go to a temporary file that is renamed into place only after
    the checksum matched, so an interrupted download never leaves a
    truncated file where a reader would take it for the real one.
    """
    url = source_url(file)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.filename}.", dir=dest_dir)
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
        _verify(file, url, md5.hexdigest(), sha256.hexdigest())
        final = dest_dir / file.filename
        os.replace(tmp_name, final)
        return final
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc


def _verify(file: DataFile, url: str, md5: str, sha256: str) -> None:
    if file.md5 and md5 != file.md5:
        raise DownloadError(f"{url}: md5 {md5} does not match the published {file.md5}")
    if file.sha256 and sha256 != file.sha256:
        raise DownloadError(f"{url}: sha256 {sha256} does not match the published {file.sha256}")
