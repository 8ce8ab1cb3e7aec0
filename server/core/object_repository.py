"""A model repository in a bucket (``--model-repo s3://bucket/models``), mirrored into a local cache folder that
the model manager then reads exactly as it reads a local repository.

Before each reconcile the mirror lists the bucket's prefix (streamed page by page), groups the keys by
``<model>/<version>/`` and takes a version into the cache only when it is whole:

- it has ``saved_model.pb``, ``variables/variables.index`` and every shard ``variables/variables.data-NNNNN-of-MMMMM``
  (all ``MMMMM`` of them);
- and its listing (keys, sizes, ETags) is the same as at the previous poll: an upload still in progress (a
  ``labels.txt`` or a shard arriving after the rest) is left for a later poll.

A whole version is downloaded into ``<cache>/<model>/.tmp-<version>-*`` (hidden: never loaded) and renamed into
place, so the manager sees every file of a version or no folder at all. Versions gone from the bucket are removed
from the cache (and so unloaded by the manager, after the version that replaces them serves, as for a local
folder). Keys with a part starting with ``.`` are skipped, as hidden folders are locally.

When the store cannot be listed or a download fails, the cache stays as it is: the versions already served keep
serving, the log says so once per change of state, the gauge ``tfclassify_model_repository_reachable`` is 0, and
``/readyz`` adds a line to its answer without making a serving server unready.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfclassify.common.repository import SAVED_MODEL_FILE
from tfclassify.common.storage.errors import MISSING_OBJECT, StorageError
from tfclassify.common.storage.syncing import CHANGED, download, list_objects
from tfclassify.common.storage.urls import ObjectURL, parse

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: The cached version's listing, kept beside its files (hidden: the loader reads none of it).
LISTING_FILE = ".tfclassify-listing.json"
VARIABLES_INDEX = "variables/variables.index"
_SHARD = re.compile(r"^variables/variables\.data-(\d{5})-of-(\d{5})$")
#: Work folders older than this are left-overs of a stopped process, and removed.
STALE_WORK_S = 3600.0

Listing = dict[str, tuple[int, str]]  # path inside the version folder -> (size, ETag)


def default_cache(url: str) -> Path:
    """Where ``url``'s versions are kept without ``--model-cache``: ``$XDG_CACHE_HOME/tfclassify/models/<hash>``
    (else ``~/.cache``, else the system's temporary folder), one folder per repository URL."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = Path.home() if "HOME" in os.environ else None
        base = str(home / ".cache") if home is not None and os.access(home, os.W_OK) else tempfile.gettempdir()
    return Path(base) / "tfclassify" / "models" / digest


def missing_files(listing: Listing) -> list[str]:
    """What keeps a version's listing from being a whole SavedModel (empty when it is whole)."""
    missing = [name for name in (SAVED_MODEL_FILE, VARIABLES_INDEX) if name not in listing]
    shards: dict[int, set[int]] = {}
    for name in listing:
        match = _SHARD.match(name)
        if match:
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not shards:
        missing.append("variables/variables.data-*")
    for total, present in shards.items():
        missing += [f"variables/variables.data-{i:05d}-of-{total:05d}" for i in range(total) if i not in present]
    return missing


@dataclass
class SyncResult:
    """What one poll of the bucket did."""

    fetched: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Versions seen but not taken yet: incomplete, or still changing.
    waiting: dict[str, str] = field(default_factory=dict)


class RepositoryMirror:
    """Mirrors the repository at ``url`` into ``cache`` (``sync`` blocks; ``refresh`` runs it off the event loop
    and keeps the reachability state, its log lines, its gauge and its note for ``/readyz``)."""

    def __init__(self, url: str, cache: Path, registry: CollectorRegistry | None = None) -> None:
        self.url = url
        self.root: ObjectURL = parse(url if url.endswith("/") else url + "/")
        self.cache = cache
        self.reachable = True
        self.error = ""
        self._unreachable_since = 0.0
        self._previous: dict[tuple[str, int], Listing] = {}
        self._waiting_before: dict[str, str] = {}
        self._waiting_logged: dict[str, str] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="repository-sync")
        self._gauge: Any = None
        self._last_sync: Any = None
        if registry is not None:
            from prometheus_client import Gauge

            self._gauge = Gauge("tfclassify_model_repository_reachable",
                                "1 while the model repository's bucket answers its polls, 0 while it does not "
                                "(the versions already served keep serving).", registry=registry)
            self._gauge.set(1)
            self._last_sync = Gauge("tfclassify_model_repository_last_sync_timestamp_seconds",
                                    "When the model repository's bucket was last listed without an error.",
                                    registry=registry)

    # -- the state, for the server -------------------------------------------------------------------------------
    def notes(self) -> list[str]:
        """Lines for ``/readyz`` (empty while the bucket answers)."""
        if self.reachable:
            return []
        for_s = time.monotonic() - self._unreachable_since
        return [f"model repository {self.url} unreachable for {for_s:.0f} s, serving the versions already "
                f"fetched ({self.error})"]

    async def refresh(self) -> SyncResult | None:
        """``sync`` on the mirror's own thread; on a storage error the cache is kept and the state says why."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._thread, self.sync)
        except StorageError as exc:
            self._set_unreachable(str(exc))
            return None
        except OSError as exc:  # the local cache: a full or read-only disk
            self._set_unreachable(f"cannot write the cache {self.cache}: {exc.strerror or exc}")
            return None
        if not self.reachable:
            log.info("model repository %s reachable again (after %.0f s)", self.url,
                     time.monotonic() - self._unreachable_since)
        self.reachable, self.error = True, ""
        if self._gauge is not None and self._last_sync is not None:
            self._gauge.set(1)
            self._last_sync.set_to_current_time()
        return result

    def _set_unreachable(self, error: str) -> None:
        if self.reachable:  # once per change of state, not at every poll (the error itself: /readyz)
            log.warning("model repository %s not reachable, keeping the versions already fetched (%s): %s",
                        self.url, ", ".join(self.cached_versions()) or "none", error)
        if self.reachable:
            self._unreachable_since = time.monotonic()
        self.reachable, self.error = False, error
        if self._gauge is not None:
            self._gauge.set(0)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def cached_versions(self) -> list[str]:
        """``model/version`` of every version in the cache."""
        if not self.cache.is_dir():
            return []
        return [f"{m.name}/{v.name}" for m in sorted(self.cache.iterdir()) if m.is_dir() and not m.name.startswith(".")
                for v in sorted(m.iterdir()) if v.name.isdigit()]

    # -- one poll ------------------------------------------------------------------------------------------------
    def sync(self) -> SyncResult:
        """List the bucket, fetch the whole new versions, remove the versions gone from it."""
        self.cache.mkdir(parents=True, exist_ok=True)
        listings = self._group(list_objects(self.root))
        result = SyncResult()
        for (model, version), listing in sorted(listings.items()):
            name = f"{model}/{version}"
            previous = self._previous.get((model, version))
            missing = missing_files(listing)
            cached = self._cached_listing(model, version)
            if cached == listing:
                continue
            if missing:
                result.waiting[name] = "missing " + ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            elif previous != listing:
                result.waiting[name] = "still changing (taken when its listing stays the same for one poll)"
            elif self._fetch(model, version, listing, replace=cached is not None):
                result.fetched.append(name)
                if cached is not None:
                    # Its files changed in the bucket: fetched again. A version already loaded is not reloaded
                    # (as for a local folder): the new files serve after a restart; a new version number is the way.
                    log.warning("model %s version %s changed in the bucket: fetched again (a loaded version is not "
                                "reloaded; upload a new version number instead)", model, version)
            else:
                result.waiting[name] = "still changing (an object changed or went while it was fetched)"
        self._previous = listings
        result.removed = self._remove_gone(listings)
        self._log_waiting(result.waiting)
        for name in result.fetched:
            log.info("model repository %s: fetched %s into %s", self.url, name, self.cache)
        return result

    def _group(self, objects: Iterable) -> dict[tuple[str, int], Listing]:
        prefix = self.root.key
        listings: dict[tuple[str, int], Listing] = {}
        for info in objects:
            if not info.key.startswith(prefix):
                continue
            parts = info.key[len(prefix):].split("/")
            if len(parts) < 3 or any(p.startswith(".") or p in ("", "..") for p in parts):
                continue
            model, version, inside = parts[0], parts[1], "/".join(parts[2:])
            if not version.isdigit():
                continue
            listings.setdefault((model, int(version)), {})[inside] = (info.size, info.etag)
        return listings

    def _version_dir(self, model: str, version: int) -> Path:
        return self.cache / model / str(version)

    def _cached_listing(self, model: str, version: int) -> Listing | None:
        path = self._version_dir(model, version) / LISTING_FILE
        if not path.parent.is_dir():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {k: (int(v[0]), str(v[1])) for k, v in data.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            return {}  # a folder put there by someone else: fetched again

    def _fetch(self, model: str, version: int, listing: Listing, replace: bool = False) -> bool:
        """Download a whole version into a hidden work folder, then rename it into place; False when one of its
        objects changed or went while it was read (tried again at the next poll). Other storage errors raise.
        ``replace``: the cache holds an older copy of the version, to be replaced."""
        model_dir = self.cache / model
        model_dir.mkdir(parents=True, exist_ok=True)
        work = model_dir / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for inside, (size, _) in sorted(listing.items()):
                dest = work / inside
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    download(self.root.with_key(f"{self.root.key}{model}/{version}/{inside}"), dest, size)
                except StorageError as exc:
                    if exc.kind in (CHANGED, MISSING_OBJECT):
                        return False
                    raise
            (work / LISTING_FILE).write_text(json.dumps({k: list(v) for k, v in listing.items()}), encoding="utf-8")
            target = self._version_dir(model, version)
            if self._cached_listing(model, version) == listing:
                return True  # another worker of this server (sharing the cache) fetched the same files first
            if replace and target.exists():  # an older copy: moved aside, then removed (the manager reads the new one)
                old = model_dir / f".old-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(work, target)  # fails when the folder is there (never replaces a folder unasked)
            except OSError:  # another worker of this server renamed its own copy first
                if not target.is_dir():
                    raise
            return True
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _remove_gone(self, listings: dict[tuple[str, int], Listing]) -> list[str]:
        """Remove the cached versions no longer in the bucket (and old work folders); their names."""
        removed = []
        now = time.time()
        for model_dir in sorted(self.cache.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for child in sorted(model_dir.iterdir()):
                if child.name.isdigit() and (model_dir.name, int(child.name)) not in listings:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(f"{model_dir.name}/{child.name}")
                    log.info("model repository %s: %s/%s is gone from the bucket, removed from the cache",
                             self.url, model_dir.name, child.name)
                elif child.name.startswith((".tmp-", ".old-")):
                    try:
                        if now - child.stat().st_mtime > STALE_WORK_S:
                            shutil.rmtree(child, ignore_errors=True)
                    except OSError:
                        pass
            try:
                model_dir.rmdir()  # only when empty (another worker's work folder may be in it)
            except OSError:
                pass
        return removed

    def _log_waiting(self, waiting: dict[str, str]) -> None:
        """Log a version that stays incomplete from one poll to the next (an upload in progress is not news),
        once for what it misses."""
        for name, why in waiting.items():
            if why.startswith("missing") and self._waiting_before.get(name) == why \
                    and self._waiting_logged.get(name) != why:
                log.warning("model repository %s: not taking %s yet: %s", self.url, name, why)
                self._waiting_logged[name] = why
        self._waiting_logged = {k: v for k, v in self._waiting_logged.items() if k in waiting}
        self._waiting_before = waiting


def is_bucket_repository(model_repo: object) -> bool:
    """Whether ``--model-repo`` names a bucket rather than a folder."""
    from tfclassify.common.storage.urls import is_object_url

    return is_object_url(model_repo)
