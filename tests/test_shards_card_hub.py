"""The dataset card as a Hugging Face user meets it: YAML front matter the Hub reads,
the sections a dataset card needs, and `datasets.load_dataset(OUT)` on the folder as written."""

from __future__ import annotations

import json

import pytest
import yaml

from test_shards_writer import make_dataset
from synthface.shards.card import size_category, write_card


def test_card_front_matter_and_sections_follow_hub_conventions(tmp_path):
    write_card(make_dataset(tmp_path, shards=2))
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other" and meta["license_name"]
    assert meta["task_categories"] == ["image-classification"]
    assert {"synthetic", "face-recognition", "webdataset"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "shard-*.tar"}]}]
    for section in ("## Licence and terms", "## Intended use", "## Limitations", "## Privacy",
                    "## Generation settings", "## Citation"):
        assert section in text, section
    assert "OpenRAIL-M" in text and "non-commercial" in text
    assert "No gallery screen was used" in text  # make_dataset's config has no novelty gallery
    # the loading snippets name the folder itself and do not trigger webdataset's shardshuffle warning
    assert f"wds.WebDataset('{tmp_path}/shard-{{000000..000001}}.tar', shardshuffle=False)" in text
    assert f"load_dataset('{tmp_path}', split=\"train\")" in text


@pytest.mark.parametrize("n, bucket", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (2_500_000, "1M<n<10M")])
def test_size_category_buckets(n, bucket):
    assert size_category(n) == bucket


def test_load_dataset_reads_the_folder_as_written(tmp_path):
    datasets = pytest.importorskip("datasets")
    write_card(make_dataset(tmp_path, shards=2))
    ds = datasets.load_dataset(str(tmp_path), split="train")
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert ds.num_rows == dataset["num_images"] == 12
    row = ds[0]
    assert row["jpg"].size == (112, 112) and row["cls"] == int(row["__key__"][:7])
