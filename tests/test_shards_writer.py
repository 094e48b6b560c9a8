"""Shard writer, manifest, verify and card, without models or Ray."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from synthface.errors import RunStateError
from synthface.shards.card import write_card
from pipelines.resume import check_or_start_run
from synthface.shards.manifest import write_dataset_manifest
from synthface.shards.storage import Output
from synthface.shards.verify import verify_dataset
from synthface.files import atomic_path
from synthface.shards.writer import ShardWriter, committed_shards, remove_interrupted_writes, sample_key, tar_bytes


def crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(112, 112, 3), dtype=np.uint8)


def write_shard(out: Output, index: int, ids: range, per_id: int = 3, reject_every: int = 0) -> dict:
    writer = ShardWriter(out, index, jpeg_quality=90)
    for i in ids:
        for k in range(per_id):
            accepted = not (reject_every and k % reject_every == reject_every - 1)
            writer.add_candidate(
                {"key": sample_key(i, k), "id": i, "index": k, "seed": i * 100 + k, "accepted": accepted,
                 "reason": None if accepted else "low_intra_sim", "sim_centre": 0.8 if accepted else 0.1,
                 "class_kept": True}
            )
            if accepted:
                writer.add_sample(i, k, crop(i * 100 + k), {"seed": i * 100 + k, "sim_centre": 0.8})
    return writer.commit({"id_start": ids.start, "id_stop": ids.stop, "reasons": {}})


def make_dataset(root, shards: int = 3, ids_per_shard: int = 2, per_id: int = 3) -> Output:
    out = Output(str(root))
    num_ids = shards * ids_per_shard
    record = {"config": {"seed": 1, "run": {"images_per_id": per_id}}, "config_hash": "abc",
              "bank": {"path": "bank.parquet", "sha256": "x", "num_ids": num_ids}}
    check_or_start_run(out, record, restart=False)
    for k in range(shards):
        write_shard(out, k, range(k * ids_per_shard, (k + 1) * ids_per_shard), per_id)
    write_dataset_manifest(out, record, committed_shards(out), shards, {}, {"origin": "test"})
    return out


def test_tar_is_deterministic_and_follows_webdataset_layout(tmp_path):
    a, b = Output(str(tmp_path / "a")), Output(str(tmp_path / "b"))
    write_shard(a, 7, range(10, 12))
    write_shard(b, 7, range(10, 12))
    tar_a = (tmp_path / "a" / "shard-000007.tar").read_bytes()
    assert tar_a == (tmp_path / "b" / "shard-000007.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(tar_a)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
        assert names[:3] == ["0000010_000.cls", "0000010_000.jpg", "0000010_000.json"]
        assert names == sorted(names)
        assert tar.extractfile("0000011_002.cls").read() == b"11"
        meta = json.loads(tar.extractfile("0000011_002.json").read())
        assert meta["id"] == 11 and meta["index"] == 2 and meta["seed"] == 1102
        assert Image.open(tar.extractfile("0000011_002.jpg")).size == (112, 112)


def test_stats_json_is_the_commit_marker_written_last(tmp_path, monkeypatch):
    out = Output(str(tmp_path))
    writes = []
    real = Output.write_bytes
    monkeypatch.setattr(Output, "write_bytes", lambda self, name, data: (writes.append(name), real(self, name, data)))
    stats = write_shard(out, 0, range(0, 2), reject_every=3)
    assert writes == ["shard-000000.tar", "shard-000000.parquet", "shard-000000.json"]
    assert stats["num_samples"] == 4 and stats["num_candidates"] == 6 and stats["labels"] == [0, 1]
    table = pq.read_table(tmp_path / "shard-000000.parquet")
    assert table.num_rows == 6 and table["accepted"].to_pylist().count(False) == 2
    assert committed_shards(out) == {0: stats}
    # a shard whose stats file is missing (crash before commit) is not committed
    (tmp_path / "shard-000000.json").unlink()
    assert committed_shards(out) == {}
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_write_leaves_no_commit_marker(tmp_path, monkeypatch):
    out = Output(str(tmp_path))
    real = Output.write_bytes

    def failing(self, name, data):
        if name.endswith(".parquet"):
            raise OSError(28, "No space left on device")
        return real(self, name, data)

    monkeypatch.setattr(Output, "write_bytes", failing)
    with pytest.raises(OSError):
        write_shard(out, 0, range(0, 2))
    assert committed_shards(out) == {}


def test_manifest_verify_and_card(tmp_path):
    out = make_dataset(tmp_path)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["num_images"] == 18 and dataset["num_classes"] == 6 and dataset["complete"]
    assert json.loads((tmp_path / "sizes.json").read_text()) == {f"shard-00000{k}.tar": 6 for k in range(3)}
    wids = json.loads((tmp_path / "wids-index.json").read_text())
    assert wids["__kind__"] == "wids-shard-index-v1" and [s["nsamples"] for s in wids["shardlist"]] == [6, 6, 6]
    report = verify_dataset(str(tmp_path))
    assert report.ok, report.problems
    assert (report.shards, report.samples, report.classes) == (3, 18, 6)
    write_card(out)
    card = (tmp_path / "README.md").read_text()
    assert "| images (accepted) | 18 |" in card and "card/identities.png" in card
    assert Image.open(tmp_path / "card" / "identities.png").size[1] == 6 * 112
    assert Image.open(tmp_path / "card" / "similarity.png").size[0] > 100


def _rewrite_tar(path, transform):
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    members = transform(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m, data in members:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def test_verify_catches_corruption(tmp_path):
    make_dataset(tmp_path)
    # truncated tar
    tar = tmp_path / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    report = verify_dataset(str(tmp_path))
    assert not report.ok and any("shard-000001.tar" in p for p in report.problems)
    # damaged JSON files are listed as problems too, beside the others, not one aborting error
    (tmp_path / "shard-000002.json").write_text("{trunc")
    (tmp_path / "sizes.json").write_text("[]")
    problems = "\n".join(verify_dataset(str(tmp_path)).problems)
    assert "shard-000002.json: not valid JSON" in problems
    assert "sizes.json: expected a JSON dict, got list" in problems
    assert "shard-000001.tar" in problems


def test_verify_and_card_catch_a_damaged_parquet(tmp_path, cli):
    make_dataset(tmp_path)
    parquet = tmp_path / "shard-000000.parquet"
    parquet.write_bytes(parquet.read_bytes()[:200])
    assert "shard-000000.parquet: unreadable parquet" in "\n".join(verify_dataset(str(tmp_path)).problems)
    card = cli("card", tmp_path)
    assert card.returncode == 2 and "shard-000000.parquet: unreadable" in card.stderr and "Traceback" not in card.stderr
    # a readable parquet that disagrees with the tar
    write_shard(Output(str(tmp_path)), 0, range(0, 2), reject_every=3)  # same ids, 4 of 6 accepted
    (tmp_path / "shard-000000.tar").write_bytes(ShardWriter(None, 0).tar_bytes())  # an empty tar
    problems = "\n".join(verify_dataset(str(tmp_path)).problems)
    assert "shard-000000.parquet: 4 accepted rows but the tar holds 0 samples" in problems


def test_verify_catches_duplicates_bad_images_labels_and_counts(tmp_path):
    make_dataset(tmp_path)
    # copy a sample of shard 0 into shard 2: a duplicate key and a count mismatch
    with tarfile.open(tmp_path / "shard-000000.tar") as t0:
        stolen = [(m, t0.extractfile(m).read()) for m in t0.getmembers() if m.name.startswith("0000000_000.")]
    _rewrite_tar(tmp_path / "shard-000002.tar", lambda ms: ms + stolen)

    # a wrong-size image and an out-of-range label in shard 1
    def damage(ms):
        out = []
        for m, data in ms:
            if m.name == "0000002_000.jpg":
                buf = io.BytesIO()
                Image.new("RGB", (64, 64)).save(buf, format="JPEG")
                data = buf.getvalue()
            if m.name == "0000003_001.cls":
                data = b"99"
            out.append((m, data))
        return out

    _rewrite_tar(tmp_path / "shard-000001.tar", damage)
    problems = "\n".join(verify_dataset(str(tmp_path)).problems)
    assert "0000000_000: duplicate key" in problems
    assert "shard-000002.tar: holds 7 samples but sizes.json says 6" in problems
    assert "0000002_000: jpg is 64x64" in problems
    assert "0000003_001: label 99 outside [0, 6)" in problems


def test_verify_catches_missing_and_uncommitted_shards(tmp_path, cli):
    make_dataset(tmp_path)
    (tmp_path / "shard-000001.json").unlink()
    (tmp_path / "shard-000002.tar").unlink()
    result = cli("verify", tmp_path)
    assert result.returncode == 1
    assert "shard-000001.tar: no shard-000001.json commit marker" in result.stderr
    assert "shard-000002.tar: listed in dataset.json but missing" in result.stderr
    assert cli("verify", tmp_path / "nothing").returncode == 1


def test_different_config_on_same_output_is_refused_unless_restart(tmp_path):
    make_dataset(tmp_path)
    other = {"config": {"seed": 2}, "config_hash": "other", "bank": {"path": "b", "sha256": "x", "num_ids": 6}}
    # the message names what changed
    with pytest.raises(RunStateError, match=r"different config \(run.images_per_id: 3 -> None, seed: 1 -> 2\).*--restart"):
        check_or_start_run(Output(str(tmp_path)), other, restart=False)
    assert (tmp_path / "shard-000000.tar").exists()
    # same config and bank, other models (say real weights instead of tiny random ones)
    same = json.loads((tmp_path / "synthface-run.json").read_text())
    assert check_or_start_run(Output(str(tmp_path)), same, restart=False) is True
    with pytest.raises(RunStateError, match="different model folder"):
        check_or_start_run(Output(str(tmp_path)), {**same, "models": {"origin": "download"}}, restart=False)
    assert check_or_start_run(Output(str(tmp_path)), other, restart=True) is False
    assert not list(tmp_path.glob("shard-*")) and not (tmp_path / "dataset.json").exists()


def test_full_image_is_stored_under_a_second_extension(tmp_path):
    out = Output(str(tmp_path))
    writer = ShardWriter(out, 0)
    full = np.random.default_rng(0).integers(0, 255, size=(64, 48, 3), dtype=np.uint8)
    writer.add_sample(3, 1, crop(1), {}, full_image=full)
    writer.commit({"id_start": 0, "id_stop": 4})
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert tar.getnames() == ["0000003_001.cls", "0000003_001.full.jpg", "0000003_001.jpg", "0000003_001.json"]
        assert Image.open(tar.extractfile("0000003_001.full.jpg")).size == (48, 64)
    import webdataset as wds

    (sample,) = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False))
    assert set(sample) >= {"__key__", "jpg", "full.jpg", "cls", "json"}


def test_an_output_that_cannot_be_written_is_one_clear_error(tmp_path, cli):
    from synthface.errors import OutputError

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    record = {"config": {"seed": 1}, "config_hash": "abc", "bank": {"path": "b", "sha256": "x", "num_ids": 1}}
    for out in (a_file, a_file / "ds"):
        with pytest.raises(OutputError, match=f"{out}"):
            check_or_start_run(Output(str(out)), record, restart=False)
    with pytest.raises(OutputError, match="cannot write .*shard-000000.tar"):
        write_shard(Output(str(a_file / "ds")), 0, range(0, 1))
    with pytest.raises(OutputError, match="nosuch"):
        Output("nosuch://bucket/run")
    result = cli("verify", "nosuch://bucket/run")
    assert result.returncode == 2 and "nosuch" in result.stderr and "Traceback" not in result.stderr


def test_a_different_config_replaces_an_earlier_run_that_committed_nothing(tmp_path):
    """A run that stopped at start-up (say, weights missing) left only its run record and maybe
    an uncommitted tar: the next run, even with other settings or models, just starts."""
    out = Output(str(tmp_path))
    first = {"config": {"seed": 1}, "config_hash": "a", "bank": {"path": "b", "sha256": "x", "num_ids": 2}, "models": {}}
    assert check_or_start_run(out, first, restart=False) is False
    (tmp_path / "shard-000000.tar").write_bytes(b"half")  # no .json: never committed
    second = {**first, "config": {"seed": 2}, "config_hash": "b", "models": {"origin": "download"}}
    assert check_or_start_run(out, second, restart=False) is False
    assert json.loads((tmp_path / "synthface-run.json").read_text())["config_hash"] == "b"
    assert not (tmp_path / "shard-000000.tar").exists()


def test_contact_sheet_reads_only_the_shards_it_shows(tmp_path, monkeypatch, cli):
    from synthface.shards.card import _contact_sheet_png

    out = make_dataset(tmp_path, shards=3, ids_per_shard=2)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    read = []
    real = Output.read_bytes
    monkeypatch.setattr(Output, "read_bytes", lambda self, name: (read.append(name), real(self, name))[1])
    sheet = Image.open(io.BytesIO(_contact_sheet_png(out, dataset, rows=2, cols=8)))
    assert read == ["shard-000000.tar"] and sheet.size[1] == 2 * 112  # ids 0 and 1, all in shard 0
    # a damaged tar is one message
    tar = tmp_path / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    card = cli("card", tmp_path)
    assert card.returncode == 2 and "shard-000000.tar: unreadable" in card.stderr and "Traceback" not in card.stderr


def _ustar_tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    """The hand-written writer tar_bytes replaced: tarfile in USTAR format, fixed header fields."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in sorted(samples):
            for ext in sorted(samples[key]):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(samples[key][ext]), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(samples[key][ext]))
    return buf.getvalue()


def test_tar_bytes_via_webdataset_are_byte_identical_to_a_fixed_ustar_tar():
    rng = np.random.default_rng(0)
    samples = {}
    for i in (9_999_999, 0, 42, 7):  # unsorted on purpose; sizes hit and miss the 512-byte blocks
        members = {"json": b'{"id":1}', "cls": str(i).encode(), "jpg": rng.bytes(int(rng.integers(1, 3000)))}
        if i % 2:
            members["full.jpg"] = rng.bytes(512 * (i % 5))
        samples[sample_key(i, i % 1000)] = members
    data = tar_bytes(samples)
    assert data == _ustar_tar(samples)
    assert tar_bytes({}) == _ustar_tar({})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        first = tar.getmembers()[0]
    assert (first.name, first.mtime, first.mode, first.uid, first.uname) == ("0000000_000.cls", 0, 0o644, 0, "")


def test_interrupted_writes_of_both_temp_name_styles_are_flagged_and_removed(tmp_path):
    out = make_dataset(tmp_path, shards=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    killed = atomic_path(tmp_path / "shard-000001.tar")  # a writer killed mid-write leaves its temp file
    leftover = killed.__enter__().name
    (tmp_path / "shard-000002.parquet.tmp-0badf00d").write_bytes(b"from an older version")
    (tmp_path / ".notes.tmp").write_bytes(b"not ours")
    problems = "\n".join(verify_dataset(str(tmp_path)).problems)
    assert f"{leftover}: stray file" in problems and "shard-000002.parquet.tmp-0badf00d: stray file" in problems
    assert sorted(remove_interrupted_writes(out)) == sorted([leftover, "shard-000002.parquet.tmp-0badf00d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + [".notes.tmp"])
    assert verify_dataset(str(tmp_path)).ok


def test_jpegs_get_fitted_huffman_tables_same_pixels_fewer_bytes():
    """encode_jpeg optimises the entropy coding only: decoding gives the pixels a plain
    encode at the same quality gives, from fewer bytes."""
    from synthface.shards.writer import encode_jpeg

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (112, 112, 3)).cumsum(axis=1) / 8 % 256, 0, 255).astype(np.uint8)
    plain = io.BytesIO()
    Image.fromarray(image).save(plain, format="JPEG", quality=95)
    ours = encode_jpeg(image, 95)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ours))), np.asarray(Image.open(plain)))
    assert len(ours) < len(plain.getvalue())
