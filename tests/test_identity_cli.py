"""`synthface ids sample / stats` and `bench ids`, run as a user would."""

from __future__ import annotations

import numpy as np

from synthface.identity.bank import read_bank


def test_sample_stats_plot_end_to_end(cli, tmp_path):
    config = tmp_path / "factory.yaml"
    config.write_text("seed: 11\nidentity:\n  num_identities: 300\n  packed:\n    steps: 20\ngeneration: {}\n")
    bank_path = tmp_path / "bank.parquet"
    proc = cli("ids", "sample", "--config", config, "--set", "identity.screen.max_pair_similarity=0.3", "--out", bank_path)
    assert proc.returncode == 0, proc.stderr
    assert "300 identities" in proc.stdout and "nearest neighbour" in proc.stdout
    bank = read_bank(bank_path)
    assert len(bank) == 300 and bank.metadata["seed"] == 11
    assert bank.metadata["identity"]["screen"]["max_pair_similarity"] == 0.3
    plot = tmp_path / "hist.png"
    proc = cli("ids", "stats", bank_path, "--plot", plot)
    assert proc.returncode == 0, proc.stderr
    assert "300 identities" in proc.stdout
    assert f"{np.nanmax(bank.column('nn_cosine')):.4f}" in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line_and_exit_2(cli, tmp_path):
    proc = cli("ids", "sample", "--set", "identity.packed.steps=-1", "--out", tmp_path / "b.parquet")
    assert proc.returncode == 2 and "'identity.packed.steps'" in proc.stderr and "Traceback" not in proc.stderr
    np.save(tmp_path / "bad.npy", np.zeros((4, 128), dtype=np.float32))
    proc = cli(
        "ids", "sample", "--set", "identity.sampler=gallery", "--set", f"identity.gallery={tmp_path / 'bad.npy'}",
        "--out", tmp_path / "b.parquet",
    )
    assert proc.returncode == 2 and "dimension 128, expected 512" in proc.stderr
    assert not (tmp_path / "b.parquet").exists()
    proc = cli("ids", "stats", tmp_path / "missing.parquet")
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_bench_ids_prints_the_table(cli):
    proc = cli("bench", "ids", "--sizes", "200,400", "--set", "identity.packed.steps=10")
    assert proc.returncode == 0, proc.stderr
    assert "vs uniform (baseline)" in proc.stdout
    assert "N^p" in proc.stdout and "peak GiB" in proc.stdout
    assert "p = " in proc.stdout
    # piped output keeps every figure whole (no rich ellipsis)
    rows = [line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("400 ")]
    assert [r.split("│")[2].strip() for r in rows] == ["uniform", "packed-optimised", "packed-code"]
    assert all("…" not in r and len(r.split("│")) == 14 for r in rows), rows
    # the code bank's exact separation is its guaranteed bound (1/16 for the Gold code)
    assert rows[2].split("│")[7].strip() == "0.0625"
