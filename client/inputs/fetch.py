"""Object items' bytes fetched ahead of decoding, many GETs in flight: a small object costs a round trip whatever
its size, so the scorer keeps ``OBJECT_REQUESTS`` of them on the wire (on its event loop; obstore's own threads do
the I/O) while the decoding workers, which never touch the network, decode what has arrived. Memory stays bounded
by the scorer's window of chunks: at most ``in_flight + 2 x workers`` chunks exist at once."""

from __future__ import annotations

import asyncio

from tfclassify.common.inputs.sources import FileRef
from tfclassify.common.storage.urls import is_object_url

#: GET requests in flight at once over the whole run.
OBJECT_REQUESTS = 64


class ObjectFetcher:
    """Fetches the bytes of a chunk's object refs (``objects.fetch_ref``), at most ``requests`` at a time."""

    def __init__(self, requests: int = OBJECT_REQUESTS) -> None:
        self.requests = requests
        self._slots: asyncio.Semaphore | None = None
        #: Objects fetched, and those that could not be (each a skipped row with its reason).
        self.fetched = 0
        self.failed = 0

    async def fetch(self, refs: list) -> list:
        """``refs`` with the bytes of every object among them; other refs (files, zip members, array rows) as they
        are."""
        wanted = [i for i, ref in enumerate(refs) if _is_unfetched_object(ref)]
        if not wanted:
            return refs
        from tfclassify.common.inputs.objects import fetch_members, fetch_ref  # the storage library only now

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.requests)
        slots = self._slots
        objects = [i for i in wanted if refs[i].member is None]
        members: dict[str, list[int]] = {}  # zip members by archive: neighbours are fetched together
        for i in wanted:
            if refs[i].member is not None:
                members.setdefault(refs[i].path, []).append(i)

        async def one(ref: FileRef) -> FileRef:
            async with slots:
                return await fetch_ref(ref)

        async def archive(path: str, positions: list[int]) -> list[FileRef]:
            return await fetch_members(path, [refs[i] for i in positions], slots)

        fetched, *by_archive = await asyncio.gather(
            asyncio.gather(*(one(refs[i]) for i in objects)),
            *(archive(path, positions) for path, positions in members.items()))
        out = list(refs)
        for positions, results in [(objects, fetched), *zip(members.values(), by_archive)]:
            for i, ref in zip(positions, results):
                out[i] = ref
                if ref.error is not None:
                    self.failed += 1
                else:
                    self.fetched += 1
        return out


def _is_unfetched_object(ref: object) -> bool:
    return (isinstance(ref, FileRef) and ref.data is None and ref.error is None and "://" in ref.path
            and is_object_url(ref.path))
