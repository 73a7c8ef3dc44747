"""What an ingestion did: counts by outcome, failures with reasons, per-upload results."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from vizdex.indexer.progress import ProgressSnapshot, format_duration
from vizdex.search import JobFailure, JobState

# A report keeps its first failures (the job in the catalog keeps as many); counters stay exact.
MAX_REPORTED_FAILURES = 1000


@dataclass(frozen=True)
class UploadOutcome:
    """The result for one image a request sent (an upload or a URL), numbered by its position
    in the request (the API answers with these); ``name``: the file name, or the URL."""

    index: int
    name: str | None
    status: str  # "indexed", "duplicate" or "failed"
    image_id: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class IngestReport:
    job_id: int
    collection: str
    state: JobState = JobState.RUNNING
    total: int = 0
    indexed: int = 0  # new images embedded and committed
    moved: int = 0  # same content at a new path: path updated, not re-embedded
    updated: int = 0  # same content and path, new size/mtime recorded
    unchanged: int = 0  # same path, size and mtime: not read at all
    duplicates: int = 0  # content already in the collection from elsewhere
    failed: int = 0
    pruned: int = 0
    elapsed_s: float = 0.0
    failures: list[JobFailure] = field(default_factory=list)
    uploads: list[UploadOutcome] = field(default_factory=list)  # uploads and URLs, in order
    error: str | None = None

    @property
    def done(self) -> int:
        return self.indexed + self.moved + self.updated

    @property
    def skipped(self) -> int:
        return self.unchanged + self.duplicates

    def add_failure(self, failure: JobFailure) -> None:
        self.failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(failure)

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            total=self.total,
            indexed=self.done,
            skipped=self.skipped,
            failed=self.failed,
            elapsed_s=self.elapsed_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "collection": self.collection,
            "state": self.state.value,
            "total": self.total,
            "indexed": self.indexed,
            "moved": self.moved,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "pruned": self.pruned,
            "elapsed_s": round(self.elapsed_s, 3),
            "failures": [asdict(failure) for failure in self.failures],
            "uploads": [asdict(outcome) for outcome in self.uploads],
            "error": self.error,
        }

    def summary(self, *, per_code: int = 5) -> list[str]:
        """Lines for a person: the counts, then failures grouped by reason code."""
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        counts = [f"indexed {self.indexed:,}"]
        counts += [
            f"{label} {value:,}"
            for label, value in (
                ("moved", self.moved),
                ("updated", self.updated),
                ("unchanged", self.unchanged),
                ("duplicates", self.duplicates),
            )
            if value
        ]
        counts.append(f"failed {self.failed:,}")
        if self.pruned:
            counts.append(f"pruned {self.pruned:,}")
        lines = [
            f"job {self.job_id} {self.state.value}: {', '.join(counts)} "
            f"in {format_duration(self.elapsed_s)} ({rate:.1f} img/s)"
        ]
        if self.error:
            lines.append(f"error: {self.error}")
        by_code = Counter(failure.code for failure in self.failures)
        for code, number in sorted(by_code.items(), key=lambda pair: (-pair[1], pair[0])):
            lines.append(f"  {code} ({number:,}):")
            shown = [failure for failure in self.failures if failure.code == code][:per_code]
            lines.extend(f"    {failure.item}: {failure.message}" for failure in shown)
            if number > len(shown):
                more = number - len(shown)
                lines.append(f"    … and {more:,} more (vizdex jobs --id {self.job_id})")
        if self.failed > len(self.failures):
            lines.append(f"  (only the first {len(self.failures):,} failures are listed)")
        return lines
