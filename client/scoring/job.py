"""One scoring job, as ``tfclassify score`` runs it: plan -> scorer -> output file -> summary from the file."""

from __future__ import annotations

import asyncio
import shlex
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tfclassify.client.inputs.plan import ScoringPlan
from tfclassify.client.report import RowSummary, summarize_rows
from tfclassify.client.scoring.engine import Scorer, ScoringOptions
from tfclassify.client.scoring.output import FORMAT, OutputError, PredictionsWriter, chunk_rows, read_rows
from tfclassify.client.scoring.progress import Progress
from tfclassify.client.version import package_version


class Interrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM) after ``rows`` of ``total`` images; the output is consistent."""

    def __init__(self, rows: int, total: int) -> None:
        super().__init__(f"interrupted after {rows:,} of {total:,} images")
        self.rows, self.total = rows, total


@dataclass
class JobResult:
    """What a finished job did; ``summary`` is computed from the output file."""

    record: dict
    summary: RowSummary
    seconds: float
    images_this_run: int

    @property
    def images_per_second(self) -> float:
        return self.images_this_run / self.seconds if self.seconds > 0 else 0.0


async def run_job(
    plan: ScoringPlan,
    servers: list[str],
    options: ScoringOptions,
    output: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    progress_interval: float = 5.0,
) -> JobResult:
    """Score ``plan`` into ``output`` (a temporary file when None) and summarize the output file.

    Raises ``Interrupted`` when cancelled, ``TfclassifyError`` when the
    servers fail beyond retries; either way the output holds a valid prefix
    that ``resume=True`` continues.
    """
    if output is None:
        with tempfile.TemporaryDirectory(prefix="tfclassify-score-") as tmp:
            return await run_job(plan, servers, options, Path(tmp) / "predictions.jsonl", progress=progress,
                                 progress_interval=progress_interval)
    started = time.monotonic()
    scorer = Scorer(servers, options)
    writer = PredictionsWriter(output)
    try:
        survey = await scorer.start(plan)
        assert scorer.model is not None
        identity = {**plan.identity(), **options.identity()}
        if resume:
            record = writer.resume(identity)
        else:
            record = {
                "format": FORMAT, "complete": False, "identity": identity,
                "model": {"name": scorer.model.name, "labels": list(scorer.model.labels)},
                "shard": [plan.shard, plan.num_shards], "survey": survey.to_dict(),
                "tfclassify": package_version(), "started": _now(),
            }
            writer.create(record, overwrite)
        shard_size = survey.shard_sizes[plan.shard]
        if writer.rows > shard_size:
            raise OutputError(f"{output} holds {writer.rows} rows but this shard has {shard_size} images")
        done_before = writer.rows
        meter = Progress(shard_size, done_before, enabled=progress, interval=progress_interval)
        labels, model = list(scorer.model.labels), scorer.model.name
        try:
            async for result in scorer.results(skip=done_before):
                written = writer.write(chunk_rows(result, labels, model))
                meter.update(written, len(result.skipped))
        except asyncio.CancelledError:
            writer.close()
            raise Interrupted(writer.rows, shard_size) from None
        finally:
            meter.close()
        seconds = time.monotonic() - started
        record.update(
            finished=_now(), servers=servers, decoding=scorer.decoder_kind, batch_size=scorer.batch_size,
            retries=scorer.servers.retries, seconds_last_run=round(seconds, 3),
        )
        writer.finish(record)
    finally:
        writer.close()
        await scorer.close()
    return JobResult(record, summarize_rows(read_rows(output)), seconds, writer.rows - done_before)


def resume_hint(argv: list[str]) -> str:
    """The command to continue an interrupted run: the same one with ``--resume``."""
    args = [a for a in argv if a not in ("--resume", "--overwrite")]
    return " ".join(["tfclassify", *(shlex.quote(a) for a in args), "--resume"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


