"""Per-candidate controls without models: the config sections, the sampler, the pools,
bad input, and what a shard job records (stand-in generator, real sampler and writer)."""

from __future__ import annotations

import io
import os
import shutil
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from synthface.config import load_config
from synthface.errors import ConfigError, InputDataError
from pipelines.config import FactoryConfig
from synthface.generation.config import GenerationConfig
from synthface.generation.controls import FLAME_DIM, ControlSampler, control_sampler, pool_digests
from synthface.generation.pose_maps import render_normal_map, write_pose_pool


def pose_pool(folder, count=5, size=64):
    write_pose_pool(folder, count, size, seed=1)
    return folder


def flame_pool(path, rows=7, width=FLAME_DIM):
    np.save(path, np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32))
    return path


def cfg(**kw) -> GenerationConfig:
    return GenerationConfig(height=64, width=64, **kw)


def test_off_by_default_and_yaml_off_words():
    c = load_config(FactoryConfig, None, ["generation.expression.mode=off", "generation.pose.mode=off"]).generation
    assert c.expression.mode == "off" and c.pose.mode == "off"
    assert control_sampler(GenerationConfig(), 0) is None  # nothing to do: today's behaviour


@pytest.mark.parametrize(
    "override, key",
    [
        ("generation.expression.mode=smile", "generation.expression.mode"),
        ("generation.expression.mode=pool", "generation.expression"),
        ("generation.pose.mode=pool", "generation.pose"),
        ("generation.pose.scale=3", "generation.pose.scale"),
        ("generation.expression.jaw_std=-1", "generation.expression.jaw_std"),
        ("generation.pose.colour=1", "generation.pose.colour"),
    ],
)
def test_bad_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(FactoryConfig, None, [override])


def test_config_hash_covers_the_controls():
    from synthface.config import config_hash

    plain = load_config(FactoryConfig, None, [])
    controlled = load_config(FactoryConfig, None, ["generation.expression.mode=neutral"])
    assert config_hash(plain) != config_hash(controlled)


def test_controls_are_a_function_of_seed_id_and_index(tmp_path):
    c = cfg(expression={"mode": "gaussian"}, pose={"mode": "pool", "pool": str(pose_pool(tmp_path / "p"))})
    a, b = ControlSampler(c, 3), ControlSampler(c, 3)
    first = a.for_candidate(5, 2)
    a.for_candidate(9, 9)  # order of requests does not matter
    again = b.for_candidate(5, 2)
    assert np.array_equal(first.expression, again.expression) and first.pose_file == again.pose_file
    vectors = np.stack([a.for_candidate(i, k).expression for i in range(4) for k in range(4)])
    assert len({v.tobytes() for v in vectors}) == 16  # every candidate its own draw
    assert not np.array_equal(ControlSampler(c, 4).for_candidate(5, 2).expression, first.expression)  # run seed matters
    files = {a.for_candidate(i, k).pose_file for i in range(10) for k in range(4)}
    assert len(files) > 1 and files <= set(a.pose_pool.files)


def test_gaussian_groups_follow_their_scales_and_flame_ranges():
    s = ControlSampler(cfg(expression={"mode": "gaussian", "expression_std": 2.0, "eyelid_std": 0.5, "jaw_std": 0.3}), 0)
    v = np.stack([s.for_candidate(i, 0).expression for i in range(400)])
    assert v.shape == (400, FLAME_DIM) and v.dtype == np.float32
    assert 1.8 < v[:, :50].std() < 2.2
    assert v[:, 50:52].min() >= 0 and v[:, 50:52].max() <= 1  # eyelids in [0, 1]
    assert v[:, 52].min() >= 0 and np.abs(v[:, 53:55]).max() <= 0.2  # jaw opening >= 0, others +-0.2
    zero = ControlSampler(cfg(expression={"mode": "gaussian", "expression_std": 0, "eyelid_std": 0, "jaw_std": 0}), 0)
    assert not zero.for_candidate(1, 1).expression.any()


def test_neutral_and_pool_modes(tmp_path):
    assert not ControlSampler(cfg(expression={"mode": "neutral"}), 0).for_candidate(1, 2).expression.any()
    path = flame_pool(tmp_path / "flame.npy")
    s = ControlSampler(cfg(expression={"mode": "pool", "pool": str(path)}), 0)
    c = s.for_candidate(3, 1)
    assert np.array_equal(c.expression, np.load(path)[c.expression_row])
    assert c.record()["expression_row"] == c.expression_row and len(c.record()["expression"]) == FLAME_DIM
    assert s.describe()["expression"]["pool_rows"] == 7


def test_generate_kwargs_stack_the_batch(tmp_path):
    pool = pose_pool(tmp_path / "p")
    s = ControlSampler(cfg(expression={"mode": "neutral"}, pose={"mode": "pool", "pool": str(pool)}), 0)
    batch = [s.for_candidate(i, 0) for i in range(3)]
    kw = s.generate_kwargs(batch)
    assert kw["expression"].shape == (3, FLAME_DIM) and kw["pose"].shape == (3, 64, 64, 3) and kw["pose"].dtype == np.uint8
    assert np.array_equal(kw["pose"][1], np.asarray(Image.open(pool / batch[1].pose_file)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "absent", "is not a folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no .png/.jpg/.jpeg images"),
        (lambda d: _one(d, np.zeros((32, 32, 3), np.uint8)), r"bad\.png is 32x32; control images must match .* 64x64"),
        (lambda d: _one(d, np.zeros((64, 64), np.uint8)), r"bad\.png has mode L; control images must be 3-channel RGB"),
        (lambda d: _one(d, np.zeros((64, 64, 4), np.uint8)), r"bad\.png has mode RGBA"),
        (lambda d: _garbage(d), r"bad\.png is not a readable image"),
    ],
)
def test_bad_pose_pool_names_the_file(tmp_path, make, match):
    folder = make(tmp_path)
    with pytest.raises(InputDataError, match=r"generation\.pose\.pool: .*" + match):
        ControlSampler(cfg(pose={"mode": "pool", "pool": str(folder)}), 0)


def _one(d, array):
    folder = d / "pool"
    folder.mkdir()
    Image.fromarray(render_normal_map(64)).save(folder / "good.png")
    Image.fromarray(array).save(folder / "bad.png")
    return folder


def _garbage(d):
    folder = d / "pool"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize(
    "write, match",
    [
        (lambda p: flame_pool(p, width=50), r"shape \(7, 50\); expected \[M, 55\]"),
        (lambda p: flame_pool(p, rows=0), "holds no rows"),
        (lambda p: np.save(p, np.full((2, 55), np.nan)) or p, "finite floating-point"),
        (lambda p: p.write_bytes(b"junk") and p, "not a readable .npy"),
        (lambda p: p.parent / "absent.npy", "does not exist"),
    ],
)
def test_bad_flame_pool_names_the_file(tmp_path, write, match):
    path = write(tmp_path / "flame.npy")
    with pytest.raises(InputDataError, match=r"generation\.expression\.pool: .*" + match):
        ControlSampler(cfg(expression={"mode": "pool", "pool": str(path)}), 0)


def test_normal_map_render_is_a_unit_normal_field():
    m = render_normal_map(64, 0, 0, 0).astype(float) / 255 * 2 - 1
    inside = np.abs(m).sum(-1) > 0.05
    assert 0.3 < inside.mean() < 0.9  # a head in the middle, background around it
    assert np.allclose(np.linalg.norm(m[inside], axis=1), 1, atol=0.03)
    assert m[32, 32, 2] > 0.9  # the centre faces the camera
    right = render_normal_map(64, 40, 0, 0).astype(int)
    left = render_normal_map(64, -40, 0, 0).astype(int)
    assert np.abs(right - render_normal_map(64).astype(int)).mean() > 2  # the nose moved
    mirrored = left[:, ::-1].copy()
    mirrored[..., 0] = 255 - mirrored[..., 0]  # mirror: x component of the normal flips
    assert np.abs(mirrored - right).max() <= 1  # yaw -40 is the mirror image of yaw +40


# ------------------------------------------------------------------ shard job
class RecordingGenerator:
    """Stand-in generator: remembers the control arguments it was given."""

    def __init__(self):
        self.calls = []

    def generate(self, id_vectors, seeds, **controls):
        self.calls.append(controls)
        return np.stack([np.full((64, 64, 3), 100, np.uint8) for _ in seeds])

    def describe(self):
        return {"model": "stand-in", "steps": 1}


class OneFaceAnalyzer:
    embedding_dim = 8

    def analyze(self, images):
        from synthface.faces.analyzer import FaceResult

        emb = np.ones(8, np.float32) / np.sqrt(8)
        return [
            FaceResult(ok=True, det_score=0.9, num_faces=1, aligned=np.zeros((112, 112, 3), np.uint8),
                       bbox=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32), embedding=emb,
                       head_pose=(12.345, -3.0, 1.0))
            for _ in images
        ]


def run_job(tmp_path, controls, name):
    from pipelines.planning import ShardJob
    from pipelines.shard_job import JobSettings, Stages, run_shard_job
    from synthface.filtering import FilterConfig, IdentityFilter
    from synthface.shards.storage import Output

    gen = RecordingGenerator()
    stages = Stages(generator=gen, analyzer=OneFaceAnalyzer(), id_filter=IdentityFilter(FilterConfig(use_target=False, min_images=1)),
                    controls=controls)
    settings = JobSettings(run_seed=7, images_per_id=3, batch_size=2, jpeg_quality=90, write_full_image=False, inter_class="off")
    out = tmp_path / name
    stats = run_shard_job(ShardJob(index=0, id_start=0, id_stop=2), np.ones((2, 8), np.float32), stages, settings, Output(str(out)))
    rows = pq.read_table(out / "shard-000000.parquet").to_pylist()
    with tarfile.open(out / "shard-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    return gen, stats, rows, metas, out


def test_shard_job_passes_and_records_each_candidates_controls(tmp_path):
    c = cfg(expression={"mode": "gaussian"}, pose={"mode": "pool", "pool": str(pose_pool(tmp_path / "p"))})
    gen, stats, rows, metas, out = run_job(tmp_path, ControlSampler(c, 7), "a")
    assert [len(call["expression"]) for call in gen.calls] == [2, 2, 2] and gen.calls[0]["pose"].shape == (2, 64, 64, 3)
    sampler = ControlSampler(c, 7)
    for row in rows:
        want = sampler.for_candidate(row["id"], row["index"])
        assert np.allclose(row["expression"], want.expression, atol=1e-4) and row["pose_control"] == want.pose_file
        assert row["yaw"] == pytest.approx(12.35)
    meta = metas[0]
    assert meta["controls"]["pose_control"] in sampler.pose_pool.files and len(meta["controls"]["expression"]) == FLAME_DIM
    assert meta["head_pose"] == {"yaw": 12.35, "pitch": -3.0, "roll": 1.0}
    assert stats["controls"]["pose"]["pool_files"] == 5
    # the same config and seed write the same shard, byte for byte
    _, _, _, _, again = run_job(tmp_path, ControlSampler(c, 7), "b")
    assert (out / "shard-000000.tar").read_bytes() == (again / "shard-000000.tar").read_bytes()
    assert (out / "shard-000000.parquet").read_bytes() == (again / "shard-000000.parquet").read_bytes()


def test_shard_job_without_controls_passes_nothing_new(tmp_path):
    gen, stats, rows, metas, _ = run_job(tmp_path, None, "plain")
    assert gen.calls == [{}, {}, {}]  # the generator is called exactly as before
    assert all(r["expression"] is None and r["pose_control"] is None for r in rows)
    assert "controls" not in metas[0] and "controls" not in stats


def test_pool_digests_follow_the_pools_contents_not_their_place(tmp_path):
    assert pool_digests(cfg()) == {}
    pool = tmp_path / "a" / "pose"
    pool.mkdir(parents=True)
    (pool / "p0.png").write_bytes(b"x" * 10)
    (pool / "notes.txt").write_bytes(b"not a control image")
    flame = flame_pool(tmp_path / "a" / "flame.npy")
    settings = {"expression": {"mode": "pool", "pool": str(flame)}, "pose": {"mode": "pool", "pool": str(pool)}}
    first = pool_digests(cfg(**settings))
    assert set(first) == {"expression_pool_sha256", "pose_pool_sha256"}
    # the same files elsewhere: the same digests
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = {"expression": {"mode": "pool", "pool": str(tmp_path / "b" / "flame.npy")},
             "pose": {"mode": "pool", "pool": str(tmp_path / "b" / "pose")}}
    assert pool_digests(cfg(**moved)) == first
    # a file that is not a control image does not count
    (tmp_path / "b" / "pose" / "notes.txt").write_bytes(b"ignored: not an image")
    assert pool_digests(cfg(**moved)) == first
    # other bytes of the same size under the same name, a renamed image, other FLAME rows: new digests
    (tmp_path / "b" / "pose" / "p0.png").write_bytes(b"y" * 10)
    assert pool_digests(cfg(**moved))["pose_pool_sha256"] != first["pose_pool_sha256"]
    (pool / "p0.png").rename(pool / "p1.png")
    assert pool_digests(cfg(**settings))["pose_pool_sha256"] != first["pose_pool_sha256"]
    np.save(flame, np.zeros((7, FLAME_DIM), np.float32))
    assert pool_digests(cfg(**settings))["expression_pool_sha256"] != first["expression_pool_sha256"]
    # a pool gone since it was checked: one clear error, not a traceback
    (pool / "p1.png").chmod(0)
    try:
        if not os.access(pool / "p1.png", os.R_OK):  # (root reads anything)
            with pytest.raises(InputDataError, match="control pool: cannot read .*p1.png"):
                pool_digests(cfg(**settings))
    finally:
        (pool / "p1.png").chmod(0o644)
