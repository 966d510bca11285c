"""Counts and durations over many jobs' timelines (pure).

Percentiles use the nearest-rank method: p of n sorted values is the value at rank
``ceil(p / 100 * n)`` (so p95 of fewer than 20 values is the maximum). Durations are in
seconds. Spans still running are left out.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import msgspec

from jobtape.audit.timeline import JobTimeline

__all__ = ["DurationStats", "LogStats", "StatusCount", "compute", "percentile"]

#: The ``stage`` of :class:`DurationStats` rows that measure whole jobs (creation to terminal event).
TOTAL = "(total)"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of non-empty ascending values.

    Raises:
        ValueError: ``sorted_values`` is empty or ``p`` is outside (0, 100].
    """
    if not sorted_values or not 0 < p <= 100:
        raise ValueError("percentile needs values and 0 < p <= 100")
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


class StatusCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many jobs of ``job_type`` ended (or are) in ``status``."""

    job_type: str
    status: str
    jobs: int


class DurationStats(msgspec.Struct, frozen=True, kw_only=True):
    """Durations of one stage (or of whole jobs: ``stage == "(total)"``) of one job type, in seconds.

    Attributes:
        job_type: ``ingest``, ``preview``, ``save``.
        stage: a stage name, ``queued``, ``cancelling`` or ``(total)``.
        count: how many spans were measured.
        p50_s / p95_s / max_s: nearest-rank percentiles and the maximum, in seconds.
    """

    job_type: str
    stage: str
    count: int
    p50_s: float
    p95_s: float
    max_s: float


class LogStats(msgspec.Struct, frozen=True, kw_only=True):
    """Everything :func:`compute` found, sorted by job type then status / stage."""

    jobs: int
    statuses: list[StatusCount]
    durations: list[DurationStats]


def compute(timelines: Iterable[JobTimeline]) -> LogStats:
    """Count jobs per type and status, and summarise stage and job durations per job type.

    Args:
        timelines: one per job (see :func:`jobtape.audit.timeline.summarize`).
    """
    counts: Counter[tuple[str, str]] = Counter()
    spans: dict[tuple[str, str], list[float]] = defaultdict(list)
    first_seen: dict[tuple[str, str], int] = {}
    total = 0
    for timeline in timelines:
        total += 1
        counts[(timeline.job_type, timeline.status or "invalid")] += 1
        for span in timeline.stages:
            if span.duration_s is not None:
                key = (timeline.job_type, span.stage)
                first_seen.setdefault(key, len(first_seen))
                spans[key].append(span.duration_s)
        if timeline.total_s is not None:
            spans[(timeline.job_type, TOTAL)].append(timeline.total_s)
            first_seen.setdefault((timeline.job_type, TOTAL), 1_000_000)
    statuses = [StatusCount(job_type=t, status=s, jobs=n) for (t, s), n in sorted(counts.items())]
    durations = []
    for key in sorted(spans, key=lambda k: (k[0], first_seen[k])):
        values = sorted(spans[key])
        durations.append(
            DurationStats(
                job_type=key[0],
                stage=key[1],
                count=len(values),
                p50_s=percentile(values, 50),
                p95_s=percentile(values, 95),
                max_s=values[-1],
            )
        )
    return LogStats(jobs=total, statuses=statuses, durations=durations)
