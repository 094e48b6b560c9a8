"""filter.yaw_target_std: which of a class's surplus accepted images it keeps."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from synthface.errors import ConfigError
from pipelines.config import FactoryConfig
from synthface.filtering.yaw_balance import keep_for_class


def test_off_keeps_the_first_by_index():
    accepted = [(0, 0.0), (2, 1.0), (3, 40.0), (5, -40.0)]
    assert keep_for_class(accepted, 2, None) == [0, 2]
    assert keep_for_class(accepted, 9, 20.0) == [0, 2, 3, 5]  # no choice to make


def test_spread_comes_closest_to_the_target():
    rng = np.random.default_rng(0)
    yaws = rng.normal(0, 15, 40)
    accepted = list(enumerate(yaws.tolist()))
    first = np.std(yaws[:10])
    for target in (3.0, 12.0):  # reachable with these yaws (-35 .. 22 deg)
        kept = keep_for_class(accepted, 10, target)
        assert len(kept) == 10 == len(set(kept)) and kept == sorted(kept)
        assert abs(np.std(yaws[kept]) - target) < abs(first - target)
        assert abs(np.std(yaws[kept]) - target) < 1.0
    # beyond reach: the most turned images on both sides
    kept = keep_for_class(accepted, 10, 60.0)
    assert int(np.argmin(yaws)) in kept and int(np.argmax(yaws)) in kept and np.std(yaws[kept]) > 17
    assert keep_for_class(accepted, 10, 12.0) == keep_for_class(list(accepted), 10, 12.0)  # deterministic


def test_images_without_a_yaw_come_last():
    accepted = [(0, None), (1, -30.0), (2, 0.0), (3, 30.0), (4, float("nan"))]
    assert keep_for_class(accepted, 3, 25.0) == [1, 2, 3]
    assert keep_for_class(accepted, 4, 25.0) == [0, 1, 2, 3]


def test_config_names_the_key():
    assert FactoryConfig.model_validate({"filter": {"yaw_target_std": 20}}).filter.yaw_target_std == 20
    with pytest.raises(Exception, match="yaw_target_std"):
        FactoryConfig.model_validate({"filter": {"yaw_target_std": 0}})


def test_shard_job_keeps_the_balanced_images(tmp_path):
    """Stand-in stages of test_pipeline_rounds with a yaw per image: a wider target keeps a wider spread."""
    import test_pipeline_rounds as rounds

    class YawAnalyzer(rounds.SeedAnalyzer):
        def analyze(self, images):
            out = rounds.SeedAnalyzer.analyze(self, images)
            for img, result in zip(images, out):
                seed = int.from_bytes(img[1].reshape(-1)[:8].tobytes(), "little")
                if result.ok:
                    result.head_pose = np.array([np.random.default_rng(seed + 1).normal(0, 20), 0.0, 0.0])
            return out

    def kept_yaw_std(target, name):
        out = tmp_path / name
        stages = rounds.stages()
        stages.analyzer = YawAnalyzer()
        from pipelines.planning import ShardJob
        from pipelines.shard_job import run_shard_job
        from synthface.shards.storage import Output

        run_shard_job(ShardJob(index=0, id_start=0, id_stop=1), rounds.embeddings(), stages,
                      rounds.settings(oversample=3.0, yaw_target_std=target), Output(str(out)))
        rows = [r for r in pq.read_table(out / "shard-000000.parquet").to_pylist() if r["id"] == 0]
        kept = [r["yaw"] for r in rows if r["accepted"]]
        assert len(kept) == 6 and sum(r["reason"] == "surplus" for r in rows) >= 6
        return float(np.std(kept))

    narrow, wide, first = kept_yaw_std(2.0, "narrow"), kept_yaw_std(40.0, "wide"), kept_yaw_std(None, "first")
    assert narrow < first < wide
    assert abs(narrow - 2.0) < abs(first - 2.0) and abs(wide - 40.0) < abs(first - 40.0)
