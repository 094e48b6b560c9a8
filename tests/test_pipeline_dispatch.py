"""Dispatch policy without Ray: the job timeout, fatal errors, the final one-line summary."""

from __future__ import annotations

import errno
import pickle

import pytest

from pipelines.dispatch import MIN_DERIVED_TIMEOUT_S, TIMEOUT_FACTOR, _fatal_reason, job_timeout_s
from pipelines.generate import GenerateResult, ensure_complete
from synthface.errors import RunStateError
from synthface.errors import OutputError
from synthface.shards.storage import write_error


def test_job_timeout_is_configured_or_derived_from_measured_jobs():
    assert job_timeout_s(12.0, []) == 12.0
    assert job_timeout_s(12.0, [100.0]) == 12.0
    assert job_timeout_s(None, []) is None  # nothing measured yet: no limit
    assert job_timeout_s(None, [1.0, 2.0]) == MIN_DERIVED_TIMEOUT_S
    assert job_timeout_s(None, [100.0, 400.0]) == TIMEOUT_FACTOR * 400.0


@pytest.mark.parametrize(
    "code, reason",
    [(errno.ENOSPC, "no space left on the output"), (errno.EROFS, "the output is read-only"),
     (errno.EACCES, "no permission to write the output"), (errno.ENOENT, None)],
)
def test_which_write_errors_are_fatal_and_survive_pickling(code, reason):
    err = write_error("/out/shard-000001.tar", OSError(code, "boom"))
    again = pickle.loads(pickle.dumps(err))  # as Ray ships it from the worker
    assert isinstance(again, OutputError) and _fatal_reason(again) == reason


def test_a_run_with_failed_shards_ends_in_one_grouped_line():
    result = GenerateResult(out="/o", num_shards=16, skipped=0, done=3,
                            failed={k: "no space left on the output" for k in range(3, 16)})
    with pytest.raises(RunStateError) as err:
        ensure_complete(result)
    message = str(err.value)
    assert message.startswith("13 of 16 shards failed: no space left on the output (shard-000003, shard-000004,")
    assert message.count("no space left") == 1 and "\n" not in message
