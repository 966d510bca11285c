"""The exception tree (jobtape/errors.py): groups a caller can catch, and job control flow no ``except`` swallows."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jobtape
from jobtape import errors
from jobtape.audio import errors as audio_errors
from jobtape.audio.errors import MediaError
from jobtape.eventlog import store
from jobtape.http.errors import status_for
from jobtape.worker import context


@pytest.mark.parametrize(
    ("error", "group", "status"),
    [
        (errors.StoreUnavailable("down"), errors.StoreError, 503),
        (errors.StoreBusy(), errors.StoreError, 503),
        (errors.StoreFull(), errors.StoreError, 507),
        (errors.StoreAuthRejected("AUTH_JWT_INVALID"), errors.StoreError, 503),
        (errors.MalformedEvent(3, "job.nope", "unknown event type"), errors.StoreError, 500),
        (errors.ConcurrencyError("j", 2), errors.ConflictError, 409),
        (errors.IllegalTransition("j", "complete", "job.progress", "finished"), errors.ConflictError, 409),
        (errors.DuplicateIdempotencyKey("alice", "k"), errors.ConflictError, 409),
        (errors.ConstraintViolation("CHECK constraint failed: quota_exceeded"), errors.ConflictError, 409),
        (errors.JobNotFound("j"), errors.RequestError, 404),
        (errors.QuotaExceeded("alice", 2), errors.RequestError, 429),
        (errors.InvalidParams("sum", "Expected `int`, got `str` - at `$.a`"), errors.RequestError, 422),
        (errors.UnknownJobType("nope", ["sum"]), errors.RequestError, 422),
        (errors.InvalidTimeSpec("soon", "not a time"), errors.RequestError, 422),
        (audio_errors.SourceUrlRefused("ftp://x", "scheme", "only http(s)"), errors.RequestError, 422),
        (audio_errors.AssetNotFound("a"), errors.RequestError, 404),
        (audio_errors.AssetFileGone("a", removed=True), errors.RequestError, 410),
        (audio_errors.InvalidRecipe("endSec", "too late"), errors.RequestError, 422),
        (errors.InvalidSignature(), errors.RequestError, 403),
        (errors.JobFailed("no"), errors.JobError, 500),
        (MediaError("ffmpeg failed"), errors.JobError, 500),  # the audio package's JobFailed; raised in workers only
        (errors.BlobNotFound("a/b"), errors.StorageError, 404),
    ],
)
def test_each_error_is_caught_by_its_group_and_keeps_its_http_status(error: errors.JobtapeError, group: type, status: int) -> None:
    with pytest.raises(group):
        raise error
    assert status_for(error)[0] == status
    others = {errors.StoreError, errors.ConflictError, errors.RequestError, errors.JobError, errors.StorageError} - {group}
    assert not any(isinstance(error, other) for other in others)


def test_the_store_raises_the_trees_constraint_violation() -> None:
    assert store.ConstraintViolation is errors.ConstraintViolation
    assert errors.ConstraintViolation("UNIQUE constraint failed").detail == "UNIQUE constraint failed"


@pytest.mark.parametrize("interruption", [context.CancelRequested(), context.JobLost("taken"), context.TimedOut(5.0), context.Released()])
def test_a_jobs_control_flow_is_not_caught_by_except_exception_or_except_jobtape_error(interruption: BaseException) -> None:
    assert isinstance(interruption, errors.JobInterrupted)
    with pytest.raises(errors.JobInterrupted):
        try:
            raise interruption
        except errors.JobtapeError:
            pytest.fail("except JobtapeError caught a job's control flow")
        except Exception:
            pytest.fail("except Exception caught a job's control flow")


def test_a_bare_import_jobtape_reaches_the_tree_and_the_public_names() -> None:
    """``except jobtape.errors.RequestError:`` after ``import jobtape`` alone (nothing else loaded the submodule),
    and every name of ``jobtape.__all__``; the error names at the top are the tree's classes."""
    code = (
        "import jobtape\n"
        "assert jobtape.errors.RequestError.__module__ == 'jobtape.errors'\n"
        "assert jobtape.client.WaitTimedOut is jobtape.errors.WaitTimedOut\n"
        "for name in jobtape.__all__:\n"
        "    value = getattr(jobtape, name)\n"
        "    if isinstance(value, type) and issubclass(value, BaseException):\n"
        "        assert getattr(jobtape.errors, name) is value, name\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert {
        "JobtapeError",
        "StoreError",
        "ConflictError",
        "RequestError",
        "JobError",
        "StorageError",
        "JobFailed",
        "JobInterrupted",
        "RequestRejected",
        "ServerError",
        "ServerUnreachable",
        "WaitTimedOut",
    } <= set(jobtape.__all__)
