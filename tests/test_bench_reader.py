"""`bench train --reader-only` (bench/train.py): the reader against bare decoding, and its face dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.train import read_jpegs, reader_bench, write_face_dataset
from eval.config import DataConfig
from eval.data import ShardStream, resolve_dataset
from eval.toydata import write_pattern_dataset
from eval.verification import load_bin
from synthface.errors import ConfigError


def test_reader_bench_reports_each_worker_count_against_bare_decoding(tmp_path):
    root = write_pattern_dataset(tmp_path / "ds", num_classes=4, images_per_class=6, shards=2)
    lines = []
    result = reader_bench(str(root), [0, 1], batch_size=4, batches=3, shuffle_buffer=8, echo=lines.append,
                          json_path=str(tmp_path / "r.json"), rounds=2)
    text = "\n".join(lines)
    assert f"dataset: {root}" in text and "bare decoding of the dataset's 24 JPEGs" in text
    assert "reader, in this process:" in text and "reader, 1 worker(s):" in text and "x bare simplejpeg decoding" in text
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["workers"] for r in saved["reader"]] == [0, 1]
    for r in saved["reader"]:
        assert r["images"] == 12 and r["per_cpu_s"] > 0 and len(r["per_cpu_s_rounds"]) == 2
        # each round's loader figure over bare decoding measured around it; medians of the rounds
        base = r["bare_per_cpu_s_rounds"]
        assert len(base) == 2 and min(base) > 0
        assert r["ratio_rounds"] == pytest.approx([v / b for v, b in zip(r["per_cpu_s_rounds"], base)])
        assert r["ratio_to_decode"] == pytest.approx(sum(r["ratio_rounds"]) / 2)
    assert saved["decode"]["simplejpeg"]["images"] >= 12 and result["fast_decode_difference"]["max"] >= 0


def test_reader_bench_refuses_data_and_faces_together(tmp_path):
    with pytest.raises(ConfigError, match="--data or --faces"):
        reader_bench(str(tmp_path), [1], 4, 1, 0, echo=lambda _: None, faces=True)
    with pytest.raises(ConfigError, match="--workers"):
        reader_bench(str(tmp_path), [], 4, 1, 0, echo=lambda _: None)
    with pytest.raises(ConfigError, match="--rounds"):
        reader_bench(str(tmp_path), [1], 4, 1, 0, echo=lambda _: None, rounds=0)


def test_face_dataset_holds_the_bin_crops_through_the_shard_writer(assets, tmp_path):
    bins = [assets / "verification" / "small_lfw.bin"]
    crops = load_bin(bins[0]).images
    root = write_face_dataset(str(tmp_path / "faces"), bins, images=50, shards=2, per_class=10)
    spec = resolve_dataset(root)
    assert (spec.num_images, spec.num_classes, len(spec.urls)) == (50, 5, 2)
    assert len(read_jpegs(spec)) == 50
    stream = iter(ShardStream(spec, DataConfig(batch_size=25, num_workers=0, shuffle_buffer=0, flip=False)))
    images, labels = next(stream)
    got = images.permute(0, 2, 3, 1).numpy().astype(int)
    assert labels.tolist() == [i // 10 for i in range(25)]
    # sample i is crop i % len(crops), mirrored on odd repeats; JPEG quality 95 keeps it close
    assert np.abs(got[0] - crops[0]).mean() < 3
    assert np.abs(got[len(crops)] - crops[0][:, ::-1]).mean() < 3
