"""pipelines/overlap.py: two stages, the second on one background thread. Results in
order, the stages really overlap, the first error of either stage is raised as raised,
no thread outlives the call, and stage one never runs more than one item ahead."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from pipelines.overlap import THREAD_PREFIX, run_overlapped

pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the whole run


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


class Boom(Exception):
    pass


@pytest.mark.parametrize("overlap", [False, True])
def test_results_in_order_with_uneven_stage_times(overlap):
    rng = random.Random(0)
    delays = [(rng.uniform(0, 0.004), rng.uniform(0, 0.004)) for _ in range(30)]
    seen: list[int] = []

    def first(i):
        time.sleep(delays[i][0])
        return i * 10

    def second(i, out):
        time.sleep(delays[i][1])
        seen.append(i)
        return (i, out, threading.current_thread().name)

    run = run_overlapped(range(30), first, second, overlap=overlap)
    assert [(i, out) for i, out, _ in run.results] == [(i, i * 10) for i in range(30)]
    assert seen == list(range(30))
    names = {name for _, _, name in run.results}
    if overlap:
        assert len(names) == 1 and names.pop().startswith(THREAD_PREFIX)
    else:
        assert names == {threading.current_thread().name} and run.stage2_wait_s == 0.0
    assert stage_threads() == []


def test_stage_one_runs_while_stage_two_works():
    """Stage two of item k waits (bounded) for stage one of item k+1 to start: it can
    only see it start if the two run at the same time."""
    started = [threading.Event() for _ in range(6)]

    def first(i):
        started[i].set()
        return i

    def second(i, out):
        return i == 5 or started[i + 1].wait(timeout=10)

    assert run_overlapped(range(6), first, second, overlap=True).results == [True] * 6
    # without overlap the same check cannot pass (short timeout: it only has to fail)
    started = [threading.Event() for _ in range(6)]

    def second_serial(i, out):
        return i == 5 or started[i + 1].wait(timeout=0.05)

    assert run_overlapped(range(6), first, second_serial, overlap=False).results == [False] * 5 + [True]


@pytest.mark.parametrize("overlap", [False, True])
def test_stage_one_error_is_raised_and_the_thread_joined(overlap):
    error = Boom("generator broke at item 3")
    second_calls: list[int] = []

    def first(i):
        if i == 3:
            raise error
        return i

    def second(i, out):
        time.sleep(0.02)  # still busy with item 2 when item 3 fails
        second_calls.append(i)
        return i

    with pytest.raises(Boom) as info:
        run_overlapped(range(10), first, second, overlap=overlap)
    assert info.value is error
    assert second_calls == [0, 1, 2]  # the call in progress finished; nothing after the error
    assert stage_threads() == []


@pytest.mark.parametrize("overlap", [False, True])
def test_stage_two_error_is_raised_and_stage_one_stops_within_one_item(overlap):
    error = Boom("analysis broke at item 2")
    first_calls: list[int] = []

    def first(i):
        first_calls.append(i)
        time.sleep(0.01)
        return i

    def second(i, out):
        if i == 2:
            raise error
        return i

    with pytest.raises(Boom) as info:
        run_overlapped(range(10), first, second, overlap=overlap)
    assert info.value is error
    # with overlap, stage one may have started item 3 before item 2's error was known
    assert first_calls in (([0, 1, 2], [0, 1, 2, 3]) if overlap else ([0, 1, 2],))
    assert stage_threads() == []


def test_stage_two_error_while_stage_one_is_slow_does_not_hang():
    """Stage two fails at once while stage one is in a long call: the error comes out
    when that call returns, and stage one is not called again."""
    in_slow_call, release = threading.Event(), threading.Event()
    first_calls: list[int] = []

    def first(i):
        first_calls.append(i)
        if i == 1:
            in_slow_call.set()
            release.wait(timeout=10)
        return i

    def second(i, out):
        in_slow_call.wait(timeout=10)  # fail while stage one is inside item 1
        threading.Timer(0.2, release.set).start()
        raise Boom(f"item {i}")

    with pytest.raises(Boom, match="item 0"):
        run_overlapped(range(10), first, second, overlap=True)
    assert first_calls == [0, 1]
    assert stage_threads() == []


def test_empty_input():
    assert run_overlapped([], lambda i: i, lambda i, o: o, overlap=True).results == []
    assert stage_threads() == []


def test_overlap_is_an_execution_setting_off_by_default():
    """run.overlap changes no output, so a resume may flip it (not in the config hash)."""
    from pipelines.worker import job_settings
    from pipelines.config import FactoryConfig
    from synthface.config import hash_json
    from pipelines.resume import output_config

    off, on = FactoryConfig(), FactoryConfig.model_validate({"run": {"overlap": True}})
    assert off.run.overlap is False and job_settings(off).overlap is False and job_settings(on).overlap is True
    assert hash_json(output_config(off.model_dump(mode="json"))) == hash_json(output_config(on.model_dump(mode="json")))


@pytest.mark.timeout(300)
def test_real_tiny_stages_write_the_same_shard_with_overlap(tmp_path, tiny_models, one_torch_thread):
    """The production stages (torch generator on this thread, onnxruntime analysis and
    full-image JPEGs on the background one) through the worker's own code."""
    from pipelines.planning import ShardJob
    from pipelines.stages import build_stages
    from pipelines.worker import ShardWorker
    from synthface.shards.storage import Output
    from test_pipeline_support import tiny_config, write_bank

    bank = write_bank(tmp_path / "bank.parquet", np.random.default_rng(0).normal(size=(2, 8)))
    cfg = tiny_config(tiny_models, bank, write_full_image=True, images_per_id=3, batch_size=2)
    worker = ShardWorker(cfg, str(tmp_path), np.full((2, 512), 1 / np.sqrt(512), np.float32), build_stages)
    worker.ready()
    for overlap in (False, True):  # the same loaded stages, as a worker runs job after job
        worker.settings.overlap = overlap
        worker.output = Output(str(tmp_path / str(overlap)))
        stats = worker.run_job(ShardJob(index=0, id_start=0, id_stop=2))
        assert stats["num_candidates"] == 6 and ("analyze_wait_s" in stats["timings_s"]) is overlap
    for name in ("shard-000000.tar", "shard-000000.parquet"):
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes(), name
    assert stage_threads() == []
