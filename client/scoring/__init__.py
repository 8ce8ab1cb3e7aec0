"""Score folders, archives and datasets against tfclassify servers.

``score_files`` / ``score_files_async`` yield one ``ImageResult`` per image;
``run_job`` is what ``tfclassify score`` runs (output file, resume, shards);
``merge_outputs`` combines shard outputs. See the README's "Score" section.
"""

from tfclassify.client.scoring.api import ImageResult, make_plan, score_files, score_files_async
from tfclassify.client.scoring.engine import ChunkResult, Scorer, ScoringOptions, auto_batch_size
from tfclassify.client.scoring.job import Interrupted, JobResult, run_job
from tfclassify.client.scoring.servers import RETRYABLE_CODES, RetryPolicy

__all__ = [
    "RETRYABLE_CODES",
    "ChunkResult",
    "ImageResult",
    "Interrupted",
    "JobResult",
    "RetryPolicy",
    "Scorer",
    "ScoringOptions",
    "auto_batch_size",
    "make_plan",
    "run_job",
    "score_files",
    "score_files_async",
]
