"""One scoring job, as ``tfclassify score`` runs it: plan -> scorer -> output file -> summary from the file."""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from tfclassify.client.inputs.plan import ScoringPlan
from tfclassify.client.quality.report import RowSummary, summarize_rows
from tfclassify.client.scoring.engine import Scorer, ScoringOptions
from tfclassify.client.scoring.output import (
    FORMAT,
    Output,
    OutputError,
    chunk_text,
    finished_record,
    open_writer,
    read_rows,
    summarize_chunk,
)
from tfclassify.client.scoring.progress import Progress
from tfclassify.common.inputs.labels import AUTO
from tfclassify.common.storage import retries as storage_retries
from tfclassify.common.text import counted
from tfclassify.common.version import package_version


class Interrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM) after ``rows`` of ``total`` images; the output is consistent."""

    def __init__(self, rows: int, total: int | None) -> None:
        # (total None: the listing had not ended)
        super().__init__(f"interrupted after {rows:,} of {counted(total, 'image')}" if total is not None
                         else f"interrupted after {counted(rows, 'image')}")
        self.rows, self.total = rows, total


@dataclass
class JobResult:
    """What a finished job did; ``summary`` is computed from the output file."""

    record: dict
    summary: RowSummary
    seconds: float  # scoring: from the first batch sent to the last row written
    images_this_run: int
    prepare_seconds: float = 0.0  # before that: connecting, model metadata, listing and checking the inputs
    #: ``--resume`` of a run that had already finished: nothing was scored or written, the summary is the output's.
    already_complete: bool = False

    @property
    def images_per_second(self) -> float:
        return self.images_this_run / self.seconds if self.seconds > 0 else 0.0


async def run_job(
    plan: ScoringPlan,
    servers: list[str],
    options: ScoringOptions,
    output: Output | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    progress_interval: float = 5.0,
    on_note: Callable[[str], None] | None = None,
    commit_seconds: float | None = None,
) -> JobResult:
    """Score ``plan`` into ``output`` and summarize the output file.

    Without ``output`` no rows are written (it costs ~2 us of CPU per image)
    and the summary is counted from the results as they come: the same
    numbers, nothing to resume. Raises ``Interrupted`` when cancelled,
    ``TfclassifyError`` when the servers fail beyond retries; either way the
    output holds a valid prefix that ``resume=True`` continues. ``resume=True`` on a finished output changes
    nothing and needs no server: the result summarizes the output as it is (``already_complete``). ``on_note``
    gets the scorer's one-line notes (labels taken from folders, files decoded here for ``decode="server"``)
    before anything is scored. ``output`` may be an object URL (``str``): its rows are committed as parts at least
    every ``commit_seconds`` (see ``object_output``).
    """
    started = time.monotonic()
    if output is not None and resume:
        # Before the survey, ``auto`` labels match whatever a finished run settled them to.
        done = finished_record(output, {**plan.identity(), **options.identity()}, any_labels=plan.labels_from == AUTO)
        if done is not None:
            return _already_complete(output, done, time.monotonic() - started)
    scorer = Scorer(servers, options)
    writer = open_writer(output, commit_seconds) if output is not None else None
    in_memory = RowSummary()
    try:
        survey = await scorer.start(plan)
        assert scorer.model is not None
        identity = {**plan.identity(), **options.identity()}
        record = {
            "format": FORMAT, "complete": False, "identity": identity,
            "model": {"name": scorer.model.name, "labels": list(scorer.model.labels),
                      "input": scorer.spec.describe() if scorer.spec is not None else None},
            "shard": [plan.shard, plan.num_shards], "survey": survey.to_dict(),
            "inputs": [i.describe() for i in plan.inputs],
            "tfclassify": package_version(), "started": _now(),
        }
        # --resume with nothing written yet starts the run: a retried Kubernetes Job pod runs the same command.
        if writer is not None and resume and writer.started():
            record = writer.resume(identity)
        elif writer is not None:
            writer.create(record, overwrite)
        if on_note is not None:  # once the output is known to be writable
            for note in scorer.notes:
                on_note(note)
        done_before = writer.rows if writer is not None else 0
        if survey.complete:
            _check_shard_size(output, done_before, survey.shard_sizes[plan.shard])
        # (a survey still listing beside the scoring gives the bar its total when it ends)
        meter = Progress(survey.shard_sizes[plan.shard] if survey.complete else None, done_before,
                         enabled=progress, interval=progress_interval)
        prepared = time.monotonic()
        labels, model = list(scorer.model.labels), scorer.model.name
        try:
            async for result in scorer.results(skip=done_before):
                if writer is not None:
                    writer.write_text(chunk_text(result, labels, model), len(result))
                else:
                    summarize_chunk(in_memory, result)
                listed = scorer.survey
                if meter.total is None and listed is not None and listed.complete:
                    meter.set_total(listed.shard_sizes[plan.shard])
                meter.update(len(result), len(result.skipped))
            survey = await scorer.final_survey()
        except asyncio.CancelledError:
            raise Interrupted(meter.done, meter.total) from None
        finally:
            meter.close()
        _check_shard_size(output, done_before, survey.shard_sizes[plan.shard])
        seconds = time.monotonic() - prepared
        record.update(
            survey=survey.to_dict(), finished=_now(), servers=servers, decoding=scorer.decoder_kind,
            batch_size=scorer.batch_size, max_request_bytes=options.max_request_bytes,
            retries=scorer.servers.retries, seconds_last_run=round(time.monotonic() - started, 3),
            # object-store requests tried again in this process (inputs and output), by kind
            storage_retries=storage_retries.counts(),
        )
        if writer is not None:
            writer.finish(record)
    finally:
        if writer is not None:
            writer.close()
        await scorer.close()
    summary = summarize_rows(read_rows(output)) if output is not None else in_memory
    return JobResult(record, summary, seconds, meter.done - done_before, prepared - started)


def _check_shard_size(output: Output | None, done_before: int, shard_size: int) -> None:
    """``OutputError`` when a resumed output holds more rows than its shard has images (the inputs changed)."""
    if done_before > shard_size:
        raise OutputError(f"{output} holds {counted(done_before, 'row')} but this shard has "
                          f"{counted(shard_size, 'image')}")


def _already_complete(output: Output, record: dict, seconds: float) -> JobResult:
    """The result of resuming the finished run of ``record``: its output summarized, nothing written."""
    summary = summarize_rows(read_rows(output))
    if summary.rows != record.get("rows"):
        raise OutputError(f"{output} holds {counted(summary.rows, 'row')} but its run record says {record.get('rows')}: "
                          "it was changed after the run; start again with --overwrite")
    return JobResult(record, summary, 0.0, 0, seconds, already_complete=True)


def resume_hint(argv: list[str]) -> str:
    """The command to continue an interrupted run: the same one with ``--resume``."""
    args = [a for a in argv if a not in ("--resume", "--overwrite")]
    return " ".join(["tfclassify", *(shlex.quote(a) for a in args), "--resume"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


