"""`synthface generate` with both controls on (tiny ControlNet + expression adapter, a
stand-in pose pool) on a local Ray: every sample records its controls, resume keeps the
shards and refuses a changed control, a bad pool fails before any write."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import test_pipeline_support as support
from pipelines.generate import generate
from synthface.errors import InputDataError, RunStateError
from pipelines.config import FactoryConfig
from synthface.generation.controls import ControlSampler
from synthface.generation.pose_maps import render_normal_map, write_pose_pool
from synthface.shards.verify import verify_dataset


def config(models: Path, bank: Path, pool: Path, **generation) -> FactoryConfig:
    data = support.tiny_config(models, bank)
    data["generation"].update(
        {"expression": {"mode": "gaussian"}, "pose": {"mode": "pool", "pool": str(pool), "scale": 0.8}, **generation}
    )
    return FactoryConfig.model_validate(data)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    bank = support.random_bank(root / "bank.parquet", 4)
    pool = root / "pool"
    write_pose_pool(pool, 6, 64, seed=2)
    return bank, pool, root


def test_generate_with_both_controls(ray_cluster, tiny_models, setup):
    bank, pool, root = setup
    support.ship_by_value()
    cfg = config(tiny_models, bank, pool)
    out = root / "ds"
    result = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert result.ok and result.done == 2
    assert verify_dataset(str(out)).ok
    sampler = ControlSampler(cfg.generation, cfg.seed)
    rows = pq.read_table(out / "shard-000001.parquet").to_pylist()
    assert len(rows) == 4
    for row in rows:  # each candidate's controls are the ones derived from (seed, id, index)
        want = sampler.for_candidate(row["id"], row["index"])
        assert row["pose_control"] == want.pose_file and np.allclose(row["expression"], want.expression, atol=1e-4)
    assert any(r["yaw"] is not None for r in rows)
    with tarfile.open(out / "shard-000000.tar") as t:
        meta = json.loads(t.extractfile(next(m for m in t.getmembers() if m.name.endswith(".json"))).read())
    assert meta["controls"]["pose_control"].endswith(".png") and len(meta["controls"]["expression"]) == 55
    assert meta["generator"]["pose"] == {"controlnet_scale": 0.8} and set(meta["head_pose"]) == {"yaw", "pitch", "roll"}
    stats = json.loads((out / "shard-000000.json").read_text())
    assert stats["controls"]["pose"]["pool_files"] == 6
    assert "Head pose" in (out / "README.md").read_text() and (out / "card" / "head_pose.png").is_file()

    # (same config, same shards byte for byte: test_generation_control_inputs.py, on the shard job)
    # resume keeps the shards; a changed control is a different dataset
    tars = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    assert generate(cfg, str(out), stages_factory=support.build_real_stages).skipped == 2
    with pytest.raises(RunStateError, match="different config"):
        generate(config(tiny_models, bank, pool, pose={"mode": "pool", "pool": str(pool), "scale": 0.5}), str(out))
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars
    # so is the same pool path holding other images (one re-rendered in place)
    first = sorted(pool.glob("*.png"))[0]
    kept = first.read_bytes()
    Image.fromarray(render_normal_map(64, 45.0, 0.0, 0.0)).save(first)
    try:
        with pytest.raises(RunStateError, match=r"different pose pool \(generation.pose.pool\) content"):
            generate(cfg, str(out), stages_factory=support.build_real_stages)
    finally:
        first.write_bytes(kept)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == tars


def test_bad_pool_fails_before_anything_is_written(tiny_models, setup, tmp_path):
    bank, _, _ = setup
    empty = tmp_path / "empty-pool"
    empty.mkdir()
    with pytest.raises(InputDataError, match=r"generation\.pose\.pool: .*empty-pool holds no"):
        generate(config(tiny_models, bank, empty), str(tmp_path / "ds"))
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())


def test_a_relative_pool_path_does_not_change_the_run_identity(ray_cluster, tiny_models, setup, monkeypatch):
    """Workers get the pool path made absolute (they may start in another folder); the shards
    they commit must still carry the driver's config hash, or the run disowns its own shards."""
    bank, pool, root = setup
    support.ship_by_value()
    monkeypatch.chdir(root)
    cfg = config(tiny_models, bank, Path(pool.name))  # "pool", relative to the driver's folder
    out = root / "ds-relative"
    result = generate(cfg, str(out), stages_factory=support.build_real_stages)
    assert result.ok and result.done == 2
    manifest = json.loads((out / "dataset.json").read_text())
    assert len(manifest["shards"]) == 2 and not manifest.get("missing_shards")
    assert generate(cfg, str(out), stages_factory=support.build_real_stages).skipped == 2
