"""The bank file: contract columns, byte-identical from (config, seed), read-back checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthface.errors import ConfigError, InputDataError, OutputError
from pipelines.config import load_factory_config
from synthface.identity.bank import read_bank, sample_bank, write_bank
from synthface.identity.config import IdentityConfig
from synthface.identity.stats import bank_stats

SMALL_PACKED = {"num_identities": 250, "sampler": "packed", "packed": {"steps": 15}}


def test_same_config_and_seed_give_a_byte_identical_file(tmp_path):
    cfg = IdentityConfig.model_validate(SMALL_PACKED)
    a = write_bank(sample_bank(cfg, 3)[0], tmp_path / "a.parquet")
    b = write_bank(sample_bank(cfg, 3)[0], tmp_path / "b.parquet")
    c = write_bank(sample_bank(cfg, 4)[0], tmp_path / "c.parquet")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_bank_contract_and_round_trip(tmp_path):
    cfg = IdentityConfig.model_validate(SMALL_PACKED)
    bank, report = sample_bank(cfg, 3)
    path = write_bank(bank, tmp_path / "bank.parquet")
    back = read_bank(path)
    assert back.ids.dtype == np.int64 and np.array_equal(back.ids, np.arange(250))
    assert back.embeddings.dtype == np.float32 and back.embeddings.shape == (250, 512)
    assert np.array_equal(back.embeddings, bank.embeddings)
    np.testing.assert_allclose(np.linalg.norm(back.embeddings, axis=1), 1.0, atol=1e-5)
    for column in ("id", "embedding", "sampler", "sampler_settings", "nn_cosine", "nn_id", "max_gallery_cosine"):
        assert column in back.table.column_names
    assert back.table.column("sampler")[0].as_py() == "packed"
    settings = json.loads(back.table.column("sampler_settings")[0].as_py())
    assert settings["packed"]["steps"] == 15
    nn = back.column("nn_cosine")
    sims = back.embeddings @ back.embeddings.T
    np.fill_diagonal(sims, -2)
    np.testing.assert_allclose(nn, sims.max(1), atol=1e-5)
    assert np.array_equal(back.column("nn_id"), sims.argmax(1))
    assert back.table.column("max_gallery_cosine").null_count == 250  # no gallery given
    assert back.metadata["seed"] == 3 and back.metadata["identity"]["num_identities"] == 250
    assert report.screen["resampled"] == 0
    stats = bank_stats(back)
    assert stats["num_identities"] == 250 and stats["nn_cosine"]["max"] == pytest.approx(nn.max())


def test_gallery_sampler_bank_records_gallery_similarity(tmp_path):
    gallery = np.random.default_rng(1).standard_normal((40, 512)).astype(np.float32)
    np.save(tmp_path / "gallery.npy", gallery)
    cfg = IdentityConfig.model_validate(
        {
            "num_identities": 120,
            "sampler": "gallery",
            "gallery": str(tmp_path / "gallery.npy"),
            "gallery_sampler": {"min_similarity": 0.25, "max_similarity": 0.4},
        }
    )
    bank, report = sample_bank(cfg, 0)
    g = bank.column("max_gallery_cosine")
    assert np.isfinite(g).all() and g.min() >= 0.25 - 1e-5
    anchors = bank.column("gallery_anchor")
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    cos = (bank.embeddings * unit[anchors]).sum(1)
    assert cos.min() >= 0.25 - 1e-5 and cos.max() <= 0.4 + 1e-5


def test_novelty_screen_in_a_bank(tmp_path):
    # a gallery made of some of the bank's own uniform draws: those must be redrawn
    from synthface.identity.samplers import uniform_vectors

    np.save(tmp_path / "real.npy", uniform_vectors(5, 200)[[3, 50, 77]])
    cfg = IdentityConfig.model_validate(
        {
            "num_identities": 200,
            "sampler": "uniform",
            "screen": {"novelty_gallery": str(tmp_path / "real.npy"), "max_gallery_similarity": 0.3},
        }
    )
    bank, report = sample_bank(cfg, 5)
    assert report.screen["rejected_novelty"] == 3 and report.screen["resampled"] == 3
    assert list(np.nonzero(bank.column("resampled"))[0]) == [3, 50, 77]
    assert bank.column("max_gallery_cosine").max() <= 0.3


def test_read_bank_rejects_bad_files(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        read_bank(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(InputDataError, match="not a readable Parquet"):
        read_bank(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"id": [0, 1]}), tmp_path / "cols.parquet")
    with pytest.raises(InputDataError, match="missing column"):
        read_bank(tmp_path / "cols.parquet")
    good = sample_bank(IdentityConfig(num_identities=5, sampler="uniform"), 0)[0].table
    pq.write_table(good.set_column(0, "id", pa.array([0, 1, 2, 4, 5])), tmp_path / "ids.parquet")
    with pytest.raises(InputDataError, match="0..N-1"):
        read_bank(tmp_path / "ids.parquet")
    flat = good.column("embedding").combine_chunks().flatten().to_numpy().copy().reshape(5, 512)
    for name, row, value, message in (("nan", 2, np.nan, r"NaN or inf \(ids \[2\]\)"), ("zero", 4, 0.0, r"not unit vectors \(ids \[4\]\)")):
        bad = flat.copy()
        bad[row] = value
        column = pa.FixedSizeListArray.from_arrays(pa.array(bad.reshape(-1)), 512)
        pq.write_table(good.set_column(1, "embedding", column), tmp_path / f"{name}.parquet")
        with pytest.raises(InputDataError, match=message):
            read_bank(tmp_path / f"{name}.parquet")


@pytest.mark.parametrize(
    "override, key",
    [
        ("identity.num_identities=0", "identity.num_identities"),
        ("identity.sampler=magic", "identity.sampler"),
        ("identity.packed.steps=-1", "identity.packed.steps"),
        ("identity.packed.bogus=1", "identity.packed.bogus"),
        ("identity.screen.max_pair_similarity=2", "identity.screen.max_pair_similarity"),
        ("identity.gallery_sampler.min_similarity=0.9", "identity.gallery_sampler"),
        ("identity.sampler=gallery", "identity"),
    ],
)
def test_bad_identity_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_factory_config(None, [override])


def test_unwritable_histogram_path_is_a_clear_error(tmp_path):
    from synthface.identity.stats import plot_histograms

    bank = sample_bank(IdentityConfig(num_identities=20, sampler="uniform"), 0)[0]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="cannot write the histogram"):
        plot_histograms(bank, tmp_path / "a-file" / "hist.png")
    assert plot_histograms(bank, tmp_path / "sub" / "hist.png").read_bytes()[:4] == b"\x89PNG"


def test_streaming_readers_match_the_full_reader(tmp_path):
    from synthface.identity.bank import iter_bank, read_bank_summary

    cfg = IdentityConfig(num_identities=700, sampler="packed", packed={"start": "code"})
    bank, _ = sample_bank(cfg, 2)
    path = write_bank(bank, tmp_path / "bank.parquet")
    full = read_bank(path)
    chunks = list(iter_bank(path, batch_rows=256))
    assert [len(c) for c in chunks] == [256, 256, 188]
    assert np.array_equal(np.concatenate([c.embeddings for c in chunks]), full.embeddings)
    assert np.array_equal(np.concatenate([c.ids for c in chunks]), np.arange(700))
    summary = read_bank_summary(path)
    assert summary.embeddings is None and "embedding" not in summary.table.column_names  # never read
    assert bank_stats(summary) == bank_stats(full)
    assert summary.metadata["code"]["family"] == "gold"


def test_a_bank_that_cannot_be_written_is_an_output_error_naming_it(tmp_path):
    """Every write failure is an OutputError (the output is at fault, not an input): the
    folder in the way of a bank, and the bank file itself."""
    from synthface.identity.bank import write_bank
    from synthface.local_dirs import ensure_dir

    bank = sample_bank(IdentityConfig(num_identities=20, sampler="uniform"), 0)[0]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match=r"identity bank .*a-file/bank.parquet: .*a-file exists and is not a folder"):
        write_bank(bank, tmp_path / "a-file" / "bank.parquet")
    with pytest.raises(OutputError, match="--out run: cannot create the folder"):
        ensure_dir(tmp_path / "a-file" / "deeper" / "run", "--out run")
    (tmp_path / "bank.parquet").mkdir()  # a folder where the file should go
    with pytest.raises(OutputError, match="cannot write identity bank"):
        write_bank(bank, tmp_path / "bank.parquet")
