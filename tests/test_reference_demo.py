"""configs/demo-reference.yaml end to end on the tiny models: `ids from-images` on a
folder of images made here, `synthface generate` in reference mode (Ray), resume
refusing a changed reference setting, and `synthface sample` in reference mode."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.generate import generate
from synthface.errors import RunStateError
from pipelines.config import load_factory_config
from synthface.generation.reference import reference_index
from synthface.shards.verify import verify_dataset
from test_identity_from_images import synthetic_images

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-reference.yaml"


@pytest.fixture(scope="module")
def demo(tiny_models, tmp_path_factory, ray_cluster):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("demo-reference")
    synthetic_images(root / "identities", people=4, per_person=3)
    bank = root / "bank.parquet"
    sets = ["--set", f"models_dir={tiny_models}", "--set", f"run.bank={bank}"]
    made = run_cli("ids", "from-images", root / "identities", "--config", DEMO, "--out", bank, *sets)
    assert made.returncode == 0, made.stderr
    out = root / "dataset"
    run = run_cli("generate", "--config", DEMO, "--out", out, "--ray-address", ray_cluster, *sets)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, bank, out, sets


def test_generate_in_reference_mode_records_the_reference(demo):
    root, bank, out, _ = demo
    assert verify_dataset(str(out)).ok
    cfg = load_factory_config(DEMO)
    rows = []
    for shard in sorted(out.glob("shard-??????.parquet")):
        rows += pq.read_table(shard).to_pylist()
    assert len(rows) == 4 * cfg.run.images_per_id
    names = [f"p{i}" for i in range(4)]
    for r in rows:
        # the image chosen from (run seed, id, index) only, among the identity's own images
        k = reference_index(cfg.seed, r["id"], r["index"], 3)
        assert r["reference_image"] == f"{names[r['id']]}/{k}.png"
        assert r["reference_strength"] == pytest.approx(0.5)
    accepted = 0
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    assert meta["reference"]["strength"] == 0.5 and meta["reference"]["image_embedding_weight"] == 0.5
                    assert meta["reference"]["image"].startswith(names[meta["id"]] + "/")
                    accepted += 1
    assert accepted > 0


def test_resume_refuses_a_changed_reference_setting(demo, tiny_models):
    root, bank, out, _ = demo
    cfg = load_factory_config(DEMO, [f"models_dir={tiny_models}", f"run.bank={bank}", "generation.reference.strength=0.75"])
    with pytest.raises(RunStateError, match="generation.reference.strength"):
        generate(cfg, str(out))


def test_sample_in_reference_mode(demo, cli):
    root, bank, _, sets = demo
    out = root / "sample"
    proc = cli("sample", "--bank", bank, "--ids", "0,3", "--per-id", "2", "--out", out, "--config", DEMO, *sets)
    assert proc.returncode == 0, proc.stderr
    assert "reference strength 0.5" in proc.stdout
    meta = json.loads((out / "sample.json").read_text())
    assert [m["reference"]["image"].split("/")[0] for m in meta["images"]] == ["p0", "p0", "p3", "p3"]
    assert meta["generator"]["reference"]["enabled"] is True


def test_reference_mode_needs_an_image_bank(demo, cli, tmp_path):
    from test_pipeline_support import random_bank

    _, _, _, sets = demo
    plain = random_bank(tmp_path / "plain.parquet", 4)
    proc = cli("sample", "--bank", plain, "--out", tmp_path / "s", "--config", DEMO, *sets)
    assert proc.returncode == 2 and "ids from-images" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_refuses_reference_images_changed_in_place(demo, tiny_models):
    """The bank lists its images by name; the run record keeps a hash of their names and
    sizes, so an image replaced at the same path (another size) is a different dataset,
    not a silent mix."""
    from PIL import Image

    root, bank, out, _ = demo
    cfg = load_factory_config(DEMO, [f"models_dir={tiny_models}", f"run.bank={bank}"])
    record = json.loads((out / "synthface-run.json").read_text())
    assert len(record["inputs"]["reference_images_sha256"]) == 64
    image = root / "identities" / "p0" / "0.png"
    kept = image.read_bytes()
    Image.new("RGB", Image.open(image).size, (200, 30, 30)).save(image)
    assert len(image.read_bytes()) != len(kept)
    try:
        with pytest.raises(RunStateError, match=r"different reference images \(the bank's image folder: names and sizes\)"):
            generate(cfg, str(out))
    finally:
        image.write_bytes(kept)
